"""The Python API for notebooks and scripts (docs/python_api.md): ``config_from``, ``train``, ``evaluate``.

Thin on purpose: a config goes through the same validation as the CLI's (``config.load_config``), training
is the CLI's ``Trainer``, and a reward function object joins the scorer exactly like a ``reward.functions``
import path would (``rewards/user.py``: same signatures, same per-sample errors), so nothing here can drift
from what ``reasonrl train`` does.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, Callable, Mapping

from reasonrl.config import Config, ConfigError

__all__ = ["config_from", "train", "evaluate", "reward_function"]


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(dict(v) if isinstance(v, Mapping) else v)
    return base


def config_from(source: str | Path | Mapping[str, Any] | Config | None = None, overrides: list[str] | None = None,
                **sections: Mapping[str, Any]) -> Config:
    """A validated ``Config`` from defaults, a YAML path, a dict or a ``Config``; then ``sections``
    (``trainer={"steps": 5}``) merged field by field, then CLI-style ``overrides`` (``"optim.lr=1e-4"``).
    Errors are the CLI's ``ConfigError`` messages."""
    import yaml

    from reasonrl.config import dump_config, load_config

    if source is None or isinstance(source, (str, Path)):
        base = load_config(source) if source is not None else None
        data = yaml.safe_load(dump_config(base)) if base is not None else {}
    elif isinstance(source, Config):
        data = source.model_dump(mode="json")
    elif isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    else:
        raise ConfigError(f"config_from got a {type(source).__name__}; pass None, a YAML path, a dict of sections "
                          f"or a Config")
    for name, value in sections.items():
        if not isinstance(value, Mapping):
            raise ConfigError(f"config_from({name}=...) must be a dict of that section's fields, got "
                              f"{type(value).__name__}; e.g. config_from(trainer={{'steps': 5}})")
    _merge(data, sections)
    # load_config is the one validator: hand it the merged mapping as a temporary YAML file
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "config.yaml"
        p.write_text(yaml.safe_dump(data, sort_keys=False))
        try:
            return load_config(p, overrides)
        except ConfigError as e:
            raise ConfigError(str(e).replace(str(p), "config_from(...)")) from None


def reward_function(fn: Any, name: str | None = None, weight: float = 1.0):
    """``fn`` checked as a reward function and wrapped as the scorer's ``UserFn``: either
    ``fn(prompt, response, answer, meta) -> float`` or, decorated with ``reasonrl.rewards.batch_reward``,
    ``fn(tasks, responses) -> list[float]``. Return values are checked on every call (``rewards/user.py``)."""
    from reasonrl.rewards.user import USER_FN_SIGNATURE, RewardFunctionError, UserFn

    label = name or getattr(fn, "__qualname__", None) or type(fn).__name__
    label = f"python:{label}"

    def bad(msg: str) -> RewardFunctionError:
        return RewardFunctionError(f"{msg}; expected {USER_FN_SIGNATURE}")

    if not callable(fn):
        raise bad(f"reward_fn {label!r} is a {type(fn).__name__}, not callable")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise bad(f"cannot read the signature of reward_fn {label!r}") from e
    batch = bool(getattr(fn, "reasonrl_batch", False))
    try:
        sig.bind([], []) if batch else sig.bind("prompt", "response", "answer", {})
    except TypeError as e:
        want = "(tasks, responses)" if batch else "four positional arguments (prompt, response, answer, meta)"
        raise bad(f"reward_fn {label!r} has signature {sig} but must accept {want} ({e})") from e
    return UserFn(label, float(weight), fn)


def _as_config(cfg: Any) -> Config:
    return cfg if isinstance(cfg, Config) else config_from(cfg)


def train(cfg: Config | Mapping[str, Any] | str | Path, reward_fn: Callable | None = None, *,
          reward_weight: float = 1.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run training as ``reasonrl train`` would; returns the run summary (``pass@1_before``,
    ``pass@1_after``, the paired test, throughput, ...). ``reward_fn`` is added to the configured reward
    with ``reward_weight``; ``log`` receives the progress lines (``lambda s: None`` silences them)."""
    from reasonrl.trainer.loop import Trainer

    cfg = _as_config(cfg)
    user = reward_function(reward_fn, weight=reward_weight) if reward_fn is not None else None
    trainer = Trainer(cfg, log=log)
    if user is not None:
        scorers = {id(s): s for s in (trainer.scorer, trainer.run_parts.scorer)}
        for s in scorers.values():
            if any(u.path == user.path for u in s.user_fns):
                raise ValueError(f"a reward function named {user.path!r} is already configured; rename it")
            s.user_fns.append(user)
    return trainer.run()


def evaluate(cfg_or_model_path: Config | Mapping[str, Any] | str | Path, *, log: Callable[[str], None] = print,
             **sections: Mapping[str, Any]) -> dict[str, float]:
    """Held-out evaluation as ``reasonrl eval``: of a config (``Config``, dict or YAML path) or of a model
    directory (a run's ``final/``, any HF causal-LM dir) with default settings; ``sections`` as in
    ``config_from``. Returns pass@1, pass@k and the other eval metrics."""
    from reasonrl.trainer.loop import Trainer

    src = cfg_or_model_path
    if isinstance(src, (str, Path)) and Path(src).is_dir():
        sections = _merge({"model": {"path": str(src)}}, sections)
        src = None
    base = src if src is None or not isinstance(src, Config) else src.model_dump(mode="json")
    cfg = config_from(base, ["trainer.steps=0", "trainer.tensorboard=false"], **sections)
    return Trainer(cfg, log=log).evaluate()
