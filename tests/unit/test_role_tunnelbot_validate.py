"""The tunnelbot role's validate entry point: the hub's sshd admits the
burst of tunnels the site allows (tunnelbot_tunnel_burst) in all and from one
address, and the account's connection cap holds them; a setting that would
make sshd drop a burst's tunnels ("past MaxStartups") is refused, naming it
(ansible-playbook on localhost, no changes)."""

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
        name: hpcgateway.jupyterhub.tunnelbot
        tasks_from: validate
        public: true
    - ansible.builtin.debug:
        msg: "SSHD {{ tunnelbot_sshd_max_startups }} {{ tunnelbot_sshd_per_source_max_startups }}"
"""
GOOD = {
    "tunnelbot_public_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM2tYSSTVhDNgTSp8ymH2MbF6m6ICBvq2fBEKEiPbgo0"],
    "tunnelbot_allowed_from": ["10.20.0.0/16"],
    "tunnelbot_hub_api_port": 8081,
    "__common_settings_digest": "test",
}
ANSIBLE = shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) or shutil.which("ansible-playbook")
pytestmark = pytest.mark.skipif(ANSIBLE is None, reason="ansible-playbook not installed")


def run_validate(tmp_path, settings: dict) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "hosts.ini").write_text("[hub]\nlocalhost ansible_connection=local\n[cluster]\n")
    (tmp_path / "vars.json").write_text(json.dumps(settings))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0",
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    return subprocess.run([ANSIBLE, "-i", str(tmp_path / "hosts.ini"), str(tmp_path / "play.yml"),
                           "-e", "@" + str(tmp_path / "vars.json")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("settings, sshd", [
    ({}, "SSHD 110:30:220 100"),  # the burst defaults to the connection cap (100)
    ({"tunnelbot_max_connections": 16}, "SSHD 26:30:52 16"),
    ({"tunnelbot_tunnel_burst": 20, "tunnelbot_sshd_max_startups": "20", "tunnelbot_sshd_per_source_max_startups": 30},
     "SSHD 20 30"),
], ids=["default", "cap", "explicit"])
def test_sshd_admits_the_burst_by_default(tmp_path, settings, sshd):
    result = run_validate(tmp_path, {**GOOD, **settings})
    assert result.returncode == 0, result.stdout + result.stderr
    assert sshd in result.stdout


@pytest.mark.parametrize("settings", [
    {"tunnelbot_tunnel_burst": 101},  # more than can log in (tunnelbot_max_connections 100)
    {"tunnelbot_tunnel_burst": 20, "tunnelbot_sshd_max_startups": "10:30:60"},  # Debian's kind: drops the 11th
    {"tunnelbot_tunnel_burst": 20, "tunnelbot_sshd_per_source_max_startups": 10},  # a login node's hop: one address
], ids=["over-cap", "max-startups", "per-source"])
def test_a_burst_sshd_would_drop_is_refused(tmp_path, settings):
    result = run_validate(tmp_path, {**GOOD, **settings})
    assert result.returncode != 0
    assert "tunnelbot_tunnel_burst (" in result.stdout and "past MaxStartups" in result.stdout, result.stdout
    assert "SSHD" not in result.stdout
