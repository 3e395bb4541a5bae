"""Check a JupyterHub config file before it replaces the live one.

Usage: python -m hpcgw_hub.checkconfig FILE

Loads FILE the way JupyterHub does (traitlets' PyFileConfigLoader: the file
runs with ``c = get_config()`` and ``load_subconfig``) and exits non-zero with
the error when it does not load: syntax errors, failing imports, exceptions.
Used as the ``validate`` command of the roles' config templates, so a broken
fragment never reaches /etc/jupyterhub and never stops the hub.
"""

from __future__ import annotations

import os
import sys

from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader


def check(path: str) -> None:
    loader = PyFileConfigLoader(os.path.basename(path), path=os.path.dirname(os.path.abspath(path)))
    loader.load_config()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hpcgw_hub.checkconfig FILE", file=sys.stderr)
        return 2
    try:
        check(args[0])
    except ConfigFileNotFound:
        print(f"{args[0]}: no such config file", file=sys.stderr)
        return 1
    except Exception as error:  # report any failure of the config code itself
        print(f"{args[0]}: does not load: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
