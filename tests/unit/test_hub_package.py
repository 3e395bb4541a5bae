"""python/pyproject.toml: what the hub package declares is what it has."""

from __future__ import annotations

import ast
import fnmatch
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import yaml
from jupyterhub.auth import Authenticator
from jupyterhub.spawner import Spawner

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / "python"
PROJECT = tomllib.loads((PYTHON / "pyproject.toml").read_text())
PACKAGE = PYTHON / "hpcgw_hub"


def load(target: str):
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)


def test_entry_points_name_the_hub_classes():
    points = PROJECT["project"]["entry-points"]
    assert points["jupyterhub.spawners"]["hpcgw-gateway"] == "hpcgw_hub.spawner:GatewaySpawner"
    for group, base in (("jupyterhub.spawners", Spawner), ("jupyterhub.authenticators", Authenticator)):
        for name, target in points[group].items():
            assert issubclass(load(target), base), (group, name)
    assert callable(load(PROJECT["project"]["scripts"]["hpcgw-reaper"]))


def test_every_third_party_import_is_a_dependency():
    declared = {dep.split(">")[0].split("<")[0].split("=")[0].strip().lower() for dep in
                PROJECT["project"]["dependencies"]}
    imported = set()
    for source in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "hpcgw_hub"}
    assert third_party == declared


def test_the_version_is_in_one_place():
    assert PROJECT["project"]["dynamic"] == ["version"] and "version" not in PROJECT["project"]
    assert PROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hpcgw_hub.__version__"}
    assert import_module("hpcgw_hub").__version__


def test_every_data_file_is_package_data_and_copied_to_the_hub():
    """A file in the package that is neither a module nor package data would be
    missing on the hub (the role copies what pyproject.toml ships)."""
    data = PROJECT["tool"]["setuptools"]["package-data"]["hpcgw_hub"]
    files = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    others = [f for f in files if not fnmatch.fnmatch(f, "*.py") or "/" in f]
    assert "py.typed" in others and "templates/form.html.j2" in others
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in data) for f in others), others
    role_vars = yaml.safe_load((REPO / "roles/jupyterhub/vars/main.yml").read_text())
    assert role_vars["__jupyterhub_package_globs"] == ["hpcgw_hub/*.py"] + [f"hpcgw_hub/{p}" for p in data]
