"""The settings files a site edits, and the ones the test bed and the demo
use: each sets only variables a role declares (a misspelt name would
otherwise be ignored without a word), on a host of the group that runs that
role. That a run reads them (the top-level host_vars/ and an inventory's own)
is tests/unit/test_site_run.py's: it runs site.yml."""

from __future__ import annotations

import pathlib

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())
# Which group of hosts runs each role (site.yml).
GROUP_OF_ROLE = {"jupyterhub": "hub", "globus_auth": "hub", "nginx": "hub", "spawner": "hub", "tunnelbot": "hub",
                 "gateway": "cluster", "apptainer_images": "cluster",
                 # The values the roles share: a site sets the owning role's variable, never these.
                 "_common": "no host"}
# Inventories and the host_vars folder each one reads.
INVENTORIES = {
    "example": (REPO / "inventories/example/hosts.yml", REPO / "host_vars"),
    "demo": (REPO / "inventories/demo/hosts.yml", REPO / "inventories/demo/host_vars"),
    "molecule": (REPO / "molecule/default/inventory/hosts.yml", REPO / "molecule/default/inventory/host_vars"),
}
# Variables of the test bed's inventories, not of a role (the registry's digests: tests/testbed/registry.yml).
TESTBED_VARIABLES = {"testbed_name", "testbed_state_dir", "testbed_registry_digests"}


def role_options() -> dict[str, str]:
    """variable -> its role, from each role's meta/argument_specs.yml."""
    options = {}
    for role in ROLES:
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        options.update(dict.fromkeys(specs["main"]["options"], role.name))
    return options


def hosts_of(inventory: pathlib.Path) -> dict[str, str]:
    """host -> its group (hub, cluster, ...)."""
    groups = yaml.safe_load(inventory.read_text())["all"]["children"]
    return {host: group for group, body in groups.items() for host in (body.get("hosts") or {})}


def settings_files(folder: pathlib.Path):
    for path in sorted(folder.rglob("*")):
        if path.suffix in (".yml", ".yaml"):
            yield path


def test_the_roles_are_all_placed():
    assert set(GROUP_OF_ROLE) == {role.name for role in ROLES}


@pytest.mark.parametrize("name", INVENTORIES)
def test_each_setting_is_a_role_variable_on_a_host_of_its_role(name):
    inventory, host_vars = INVENTORIES[name]
    options, hosts = role_options(), hosts_of(inventory)
    files = list(settings_files(host_vars))
    assert files, f"no settings in {host_vars}"
    wrong = []
    for path in files:
        host = path.relative_to(host_vars).parts[0].removesuffix(".yml")
        if host not in hosts:
            wrong.append(f"{path.relative_to(REPO)}: {host} is not a host of {inventory.relative_to(REPO)}")
            continue
        for variable in yaml.safe_load(path.read_text()) or {}:
            if variable.startswith("ansible_") or (name != "example" and variable in TESTBED_VARIABLES):
                continue
            role = options.get(variable)
            if role is None:
                wrong.append(f"{path.relative_to(REPO)}: {variable} is no role's variable")
            elif GROUP_OF_ROLE[role] != hosts[host]:
                wrong.append(f"{path.relative_to(REPO)}: {variable} is the {role} role's, which runs on "
                             f"{GROUP_OF_ROLE[role]}, but {host} is in {hosts[host]}")
    assert not wrong, "\n".join(wrong)

