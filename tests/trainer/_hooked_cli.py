"""Run the `reasonrl` CLI with test hooks on: ``python _hooked_cli.py '<json hooks>' train ...``.

The explicit switch for subprocess tests (``reasonrl._testing``): hooks are never read from the environment."""

import json
import sys

from reasonrl import _testing

if __name__ == "__main__":
    _testing.enable(**json.loads(sys.argv[1]))
    from reasonrl.cli.main import main

    sys.exit(main(sys.argv[2:]))
