"""The collection tarball is what its users need, and works installed: built
with `ansible-galaxy collection build`, installed into a scratch path
(`--no-deps`: its dependencies come with the ansible package, and Galaxy is
not reachable here), then used from another folder with none of the repo's
settings: `ansible-playbook hpcgateway.jupyterhub.site --syntax-check`, a
real run of the site playbook whose preflight refuses a misspelt setting
of the site's inventory (the action plugin and the roles' specs found in
the installed path), and `ansible-doc` for every module and role."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())
MODULES = sorted(p.stem for p in (REPO / "plugins/modules").glob("*.py"))
# Repo-only paths: the tests and their bed, the repo's own site and settings.
NOT_SHIPPED = ("tests/", "molecule/", "benchmarks/", "Makefile", "ansible.cfg", "site.yml", "host_vars/",
               "inventories/", ".testbed/", ".collections/", ".venv/", "requirements-test.txt", "pytest.ini")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collection")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp / "dist"), str(REPO)],
                   check=True, capture_output=True, timeout=300, env=env)
    tarball = next((tmp / "dist").glob("hpcgateway-jupyterhub-*.tar.gz"))
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "--force", "-p", str(tmp / "collections"),
                    str(tarball)], check=True, capture_output=True, timeout=300, env=env)
    # Another folder: a site's own inventory, no ansible.cfg, hosts that refuse connections.
    site = tmp / "elsewhere"
    (site / "host_vars").mkdir(parents=True)
    (site / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_host": "127.0.0.1", "ansible_port": 1},
        "children": {"hub": {"hosts": {"hub.site.test": None}}, "cluster": {"hosts": {"login.site.test": None}}}}}))
    (site / "host_vars/hub.site.test.yml").write_text("jupyterhub_idle_culler_timout: 60\n")
    env.update(ANSIBLE_COLLECTIONS_PATH=str(tmp / "collections"), ANSIBLE_NOCOLOR="1")
    return tarball, tmp / "collections/ansible_collections/hpcgateway/jupyterhub", site, env


def run(command, site, env):
    done = subprocess.run(command, cwd=site, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def runs(installed):
    _, _, site, env = installed
    commands = {
        "syntax": [str(BIN / "ansible-playbook"), "hpcgateway.jupyterhub.site", "-i", "hosts.yml", "--syntax-check"],
        "site": [str(BIN / "ansible-playbook"), "hpcgateway.jupyterhub.site", "-i", "hosts.yml"],
        "modules": [str(BIN / "ansible-doc"), "--json", *(f"hpcgateway.jupyterhub.{m}" for m in MODULES)],
        "roles": [str(BIN / "ansible-doc"), "--json", "-t", "role", *(f"hpcgateway.jupyterhub.{r}" for r in ROLES)],
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {name: pool.submit(run, command, site, env) for name, command in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def test_the_tarball_holds_only_what_users_need(installed):
    tarball = installed[0]
    with tarfile.open(tarball) as tar:
        names = [member.name for member in tar.getmembers()]
    shipped = [name for name in names if name.startswith(NOT_SHIPPED) or name in {p.rstrip("/") for p in NOT_SHIPPED}]
    assert not shipped
    assert not [name for name in names if "__pycache__" in name or "_cache" in name or name.endswith(".pyc")]
    for needed in ("playbooks/site.yml", "python/pyproject.toml", "python/hpcgw_hub/spawner.py", "docs/trust-model.md",
                   "changelogs/changelog.yaml", "plugins/action/site_settings.py", "README.md", "LICENSE",
                   "plugins/module_utils/rules.py", "plugins/filter/rules.py", "plugins/test/rules.py",
                   "python/hpcgw_hub/rules.py",
                   *(f"roles/{role}/meta/argument_specs.yml" for role in ROLES)):
        assert needed in names, needed


def test_the_hub_package_is_where_the_jupyterhub_role_copies_it_from(installed):
    collection = installed[1]
    # roles/jupyterhub/vars/main.yml: __jupyterhub_package_src is {{ role_path }}/../../python.
    role_vars = (collection / "roles/jupyterhub/vars/main.yml").read_text()
    assert '__jupyterhub_package_src: "{{ role_path }}/../../python"' in role_vars
    source = collection / "roles/jupyterhub/../../python"
    assert (source / "pyproject.toml").is_file()
    # Every module and the package data (py.typed, templates/), no cache.
    def files(package):
        return sorted(str(p.relative_to(package)) for p in package.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts)

    assert files(source / "hpcgw_hub") == files(REPO / "python/hpcgw_hub")
    assert {"py.typed", "templates/form.html.j2"} <= set(files(source / "hpcgw_hub"))
    # The rules the hub and the roles share: one file, which the hub package links to.
    assert (source / "hpcgw_hub/rules.py").read_text() == (collection / "plugins/module_utils/rules.py").read_text()


def test_the_site_playbook_is_found_by_its_collection_name(installed, runs):
    rc, out = runs["syntax"]
    assert rc == 0, out
    assert f"playbook: {installed[1]}/playbooks/site.yml" in out  # the installed copy, not the repo


def test_the_installed_site_playbook_runs_its_preflight(runs):
    rc, out = runs["site"]
    assert rc != 0
    assert ("jupyterhub_idle_culler_timout (set in host_vars/hub.site.test.yml, for hub.site.test) is declared by "
            "no role of hpcgateway.jupyterhub, so it would be ignored. Did you mean "
            "jupyterhub_idle_culler_timeout?") in out, out


def test_every_module_and_role_has_its_documentation(runs):
    for kind, names in (("modules", MODULES), ("roles", ROLES)):
        rc, out = runs[kind]
        assert rc == 0, out
        docs = json.loads(out)
        assert sorted(docs) == sorted(f"hpcgateway.jupyterhub.{name}" for name in names), kind
