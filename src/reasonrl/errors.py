"""Errors shared across packages, kept in a module with no imports so that any package can raise them
without importing the package that catches them (``config`` validates with the recipes' own parameter
models, and the recipes raise ``ConfigError``)."""


class ConfigError(ValueError):
    """A configuration problem; the message names the field and the fix."""
