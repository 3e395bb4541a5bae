"""A fresh clone deploys with exactly the README's steps ("Using it for a
site"): a clone of the committed HEAD, a venv from requirements.txt alone,
then `ansible-playbook site.yml -i inventories/example --syntax-check`,
with none of the Makefile's environment (no ANSIBLE_* variables, not the
test venv on PATH). The one liberty: `pip install` runs as `uv pip install`
into the same venv (same pins, seconds instead of a minute, uv's cache)."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
UV = shutil.which("uv", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("uv")
# What deploying needs, and nothing of the test toolchain.
CONTROLLER_PACKAGES = {"ansible", "globus-sdk"}


def readme_steps() -> list[str]:
    section = REPO.joinpath("README.md").read_text().split("## Using it for a site", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's 'Using it for a site' has no sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_controller_requirements_are_only_what_deploying_needs():
    names = {re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0].lower()
             for line in REPO.joinpath("requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith(("#", "-"))}
    assert names == CONTROLLER_PACKAGES


@pytest.mark.skipif(UV is None, reason="uv is installed by make venv")
def test_a_fresh_clone_runs_the_readmes_steps(tmp_path):
    steps = readme_steps()
    assert steps[-1] == "ansible-playbook site.yml -i inventories/example --syntax-check"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True, timeout=120)
    assert subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout == \
        subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    script = "\n".join(["set -eux", *steps]).replace(
        ".venv/bin/pip install", f"{UV} pip install --quiet --python .venv/bin/python")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ANSIBLE_", "VIRTUAL_ENV", "HPCGW_", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not pathlib.Path(p, "ansible-playbook").exists())
    run = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "playbook: site.yml" in out
    # ...with the clone's own ansible, and the clone as the collection.
    assert f"{clone}/.venv/bin/" in subprocess.run(
        ["bash", "-c", ". .venv/bin/activate && command -v ansible-playbook"], cwd=clone, env=env,
        capture_output=True, text=True).stdout
