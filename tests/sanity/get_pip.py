"""Stand-in for pypa's get-pip.py, which ansible-test fetches from
ci-files.testing.ansible.com to put pip into the empty virtual environments
of its sanity tests. That host is not reachable from every build machine
(PyPI is): tests/sanity/run --prime saves this file as ansible-test's cached
bootstrap script beside a pip wheel from PyPI, and pip runs from that wheel
(pip supports running from its wheel) with get-pip.py's arguments."""

import pathlib
import sys

# Saved as get_pip_<version with _>.py, the name ansible-test looks for.
HERE = pathlib.Path(__file__).resolve()
WHEEL = HERE.parent / f"pip-{HERE.stem.removeprefix('get_pip_').replace('_', '.')}-py3-none-any.whl"
sys.path.insert(0, str(WHEEL))

from pip._internal.cli.main import main  # noqa: E402  (from the wheel above)

# get-pip.py's own options go; the rest go to pip install, with pip==<version>
# taken from the wheel rather than downloaded again.
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", *(str(WHEEL) if arg.startswith("pip==") else arg for arg in args)]))
