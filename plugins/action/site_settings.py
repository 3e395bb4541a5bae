# Copyright: HPC Gateway maintainers
# Apache-2.0 (see LICENSE)
"""Action plugin: the site-wide checks of site.yml's preflight (see the
module's documentation, plugins/modules/site_settings.py)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from ansible.plugins.action import ActionBase

# The collection's root: plugins/action/site_settings.py -> ../..
COLLECTION = Path(__file__).resolve().parents[2]
# Files Ansible's host_group_vars plugin reads in host_vars/ and group_vars/.
VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")


def declared_settings(roles_dir: Path) -> tuple[set[str], tuple[str, ...]]:
    """Every option of every role's meta/argument_specs.yml (all entry
    points), and the roles' prefixes (`<role>_`; `_common_` for the values
    the roles share, roles/_common)."""
    declared, prefixes = set(), []
    for role in sorted(p for p in roles_dir.iterdir() if (p / "meta" / "argument_specs.yml").is_file()):
        prefixes.append(role.name + "_")
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        for entry_point in specs.values():
            declared.update((entry_point or {}).get("options") or {})
    return declared, tuple(prefixes)


def vars_files(base: str, kind: str, name: str) -> list[Path]:
    """The files Ansible reads for host or group `name` in <base>/<kind>/."""
    root = Path(base) / kind
    found = []
    for suffix in VARS_SUFFIXES:
        candidate = root / (name + suffix)
        if candidate.is_file() and suffix:
            found.append(candidate)
        elif candidate.is_dir():
            found.extend(sorted(p for p in candidate.rglob("*") if p.is_file() and not p.name.startswith(".")
                                and p.suffix in VARS_SUFFIXES))
    return found


def shown(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset()

    def _load(self, path: Path) -> dict:
        data = self._loader.load_from_file(str(path))
        return data if isinstance(data, dict) else {}

    def _settings(self, base: str, kind: str, name: str) -> dict[str, tuple[object, Path]]:
        """variable -> (value, file) for one host or group in one folder."""
        settings = {}
        for path in vars_files(base, kind, name):
            for variable, value in self._load(path).items():
                settings[variable] = (value, path)
        return settings

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        hostvars = task_vars["hostvars"]
        groups = task_vars.get("groups", {})
        playbook_dir = os.path.realpath(task_vars.get("playbook_dir") or ".")
        declared, prefixes = declared_settings(COLLECTION / "roles")
        errors = []

        misspelt: dict[tuple[str, str], list[str]] = {}
        for host in groups.get("all", []):
            variables = hostvars[host]
            bases = [playbook_dir]
            inventory_dir = variables.get("inventory_dir")
            if inventory_dir and os.path.realpath(inventory_dir) != playbook_dir:
                bases.append(os.path.realpath(inventory_dir))
            # Where each variable of this host comes from, beside the playbook
            # and in the inventory: (kind, name) -> {base: settings}.
            places = {}
            for kind, names in (("host_vars", [host]), ("group_vars", ["all", *variables.get("group_names", [])])):
                for name in names:
                    places[kind, name] = {base: self._settings(base, kind, name) for base in bases}

            # 1. Every variable with a role's prefix is one a role declares.
            for variable in list(variables.keys()):
                if not variable.startswith(prefixes) or variable in declared:
                    continue
                files = [shown(path) for per_base in places.values() for settings in per_base.values()
                         for name, (_, path) in settings.items() if name == variable]
                where = ", ".join(dict.fromkeys(files)) or "the inventory or the command line"
                misspelt.setdefault((variable, where), []).append(host)

            # 2. No setting has two different values beside the playbook and in the inventory.
            if len(bases) == 2:
                for (kind, name), per_base in places.items():
                    beside, inventory = per_base[bases[0]], per_base[bases[1]]
                    for variable in sorted(set(beside) & set(inventory)):
                        if beside[variable][0] != inventory[variable][0]:
                            errors.append(
                                f"{variable} is set to two different values for {kind} {name}: in "
                                f"{shown(beside[variable][1])} (beside the playbook, which Ansible would use) and in "
                                f"{shown(inventory[variable][1])} (the inventory's). Keep each setting in one place.")

        for (variable, where), hosts in sorted(misspelt.items()):
            close = difflib.get_close_matches(variable, sorted(declared), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]}?" if close else ""
            errors.append(f"{variable} (set in {where}, for {', '.join(sorted(set(hosts)))}) is declared by no "
                          f"role of hpcgateway.jupyterhub, so it would be ignored.{hint}")

        # 3. A hand-set nginx_upstream_url still points at the proxy's port.
        errors.extend(self._upstream_errors(hostvars, groups.get("hub", [])))

        result["changed"] = False
        if errors:
            result["failed"] = True
            result["msg"] = "The site's settings are wrong:\n- " + "\n- ".join(dict.fromkeys(errors))
        else:
            result["msg"] = "The site's settings are consistent."
        return result

    @staticmethod
    def _upstream_errors(hostvars, hub_hosts) -> list[str]:
        # jupyterhub_proxy_port's default is the value the roles share (roles/_common).
        shared = yaml.safe_load((COLLECTION / "roles/_common/defaults/main.yml").read_text())
        errors = []
        for host in hub_hosts:
            variables = hostvars[host]
            if "nginx_upstream_url" not in variables.keys():
                continue  # the default follows jupyterhub_proxy_port
            url = str(variables["nginx_upstream_url"])
            proxy_port = variables.get("jupyterhub_proxy_port", shared["_common_jupyterhub_proxy_port"])
            try:
                port = urlsplit(url).port
            except ValueError:
                port = None
            if port is None:
                continue  # the nginx role's own check names the malformed URL
            if str(port) != str(proxy_port):
                errors.append(f"{host}: nginx_upstream_url ({url}) is port {port}, but the proxy listens on "
                              f"jupyterhub_proxy_port {proxy_port}. Remove nginx_upstream_url (its default "
                              f"follows jupyterhub_proxy_port) or make the two agree.")
        return errors
