"""The globus_auth role's validate entry point checks globus_auth_hub_groups
(Globus group UUID -> hub group name) before any change, naming it
(ansible-playbook on localhost, no changes, no Globus call)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[2]
PLAYBOOK = """
- hosts: hub
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: globus_auth
        tasks_from: validate
"""
UUID = "5d0f2a8e-6b43-4c1e-9a57-3e2b8c7d9f10"
GOOD = {"globus_auth_client_id": "6f3cde2a-58b1-4c7e-9c3b-0b8f7f1e2a41", "globus_auth_client_secret": "s",
        "globus_auth_allowed_groups": [UUID], "globus_auth_check_credentials": False,
        "globus_auth_manage_groups": True}
ANSIBLE = shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) or shutil.which("ansible-playbook")
pytestmark = pytest.mark.skipif(ANSIBLE is None, reason="ansible-playbook not installed")


def run_validate(tmp_path, settings: dict) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "hosts.ini").write_text("[hub]\nlocalhost ansible_connection=local\n")
    (tmp_path / "vars.json").write_text(json.dumps(settings))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    return subprocess.run([ANSIBLE, "-i", str(tmp_path / "hosts.ini"), str(tmp_path / "play.yml"),
                           "-e", "@" + str(tmp_path / "vars.json")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("hub_groups, ok", [
    ({UUID: "members"}, True),
    ({"members": "members"}, False),          # a key that is no Globus group UUID
    ({UUID: "gpu users"}, False),              # a name a profile's `groups` cannot hold
    ({UUID: "a", "179945b4-0890-4657-92d5-e3aaf4b7586f": "a"}, False),  # two Globus groups, one hub group
])
def test_hub_group_names_are_checked_before_any_change(tmp_path, hub_groups, ok):
    result = run_validate(tmp_path, {**GOOD, "globus_auth_hub_groups": hub_groups})
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode != 0
        assert "globus_auth_hub_groups maps Globus group UUIDs to distinct hub group names" in result.stdout, \
            result.stdout
