"""The tunnelbot role's validate entry point: the hub's sshd admits the
burst of tunnels the site allows (tunnelbot_tunnel_burst) in all and from one
address, and the account's connection cap holds them; a setting that would
make sshd drop a burst's tunnels ("past MaxStartups") is refused, naming it
(ansible-playbook on localhost, no changes)."""

from __future__ import annotations

import pytest
from role_cases import ANSIBLE_PLAYBOOK, run_cases, words

GOOD = {
    "tunnelbot_public_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM2tYSSTVhDNgTSp8ymH2MbF6m6ICBvq2fBEKEiPbgo0"],
    "tunnelbot_allowed_from": ["10.20.0.0/16"],
    "tunnelbot_hub_api_port": 8081,
}
# The sshd settings each good case makes ("<MaxStartups> <PerSourceMaxStartups>").
GOOD_CASES = {
    "default": ({}, "110:30:220 100"),  # the burst defaults to the connection cap (100)
    "cap": ({"tunnelbot_max_connections": 16}, "26:30:52 16"),
    "explicit": ({"tunnelbot_tunnel_burst": 20, "tunnelbot_sshd_max_startups": "20",
                  "tunnelbot_sshd_per_source_max_startups": 30}, "20 30"),
}
BAD_CASES = {
    "over-cap": {"tunnelbot_tunnel_burst": 101},  # more than can log in (tunnelbot_max_connections 100)
    "max-startups": {"tunnelbot_tunnel_burst": 20, "tunnelbot_sshd_max_startups": "10:30:60"},  # Debian's kind: drops the 11th
    "per-source": {"tunnelbot_tunnel_burst": 20, "tunnelbot_sshd_per_source_max_startups": 10},  # a login node's hop
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("needs ansible-playbook beside pytest")
    cases = {name: {**GOOD, **settings} for name, (settings, _) in GOOD_CASES.items()}
    cases |= {name: {**GOOD, **settings} for name, settings in BAD_CASES.items()}
    return run_cases(tmp_path_factory.mktemp("tunnelbot"), "hpcgateway.jupyterhub.tunnelbot", cases,
                     inventory={"cluster": {}},
                     record={"sshd": "{{ tunnelbot_sshd_max_startups }} {{ tunnelbot_sshd_per_source_max_startups }}"},
                     # The role's record of what it validated (roles/_common/vars/main.yml) needs the whole site.
                     extra_vars={"__common_settings_digest": "test"})


@pytest.mark.parametrize("case", GOOD_CASES)
def test_sshd_admits_the_burst_by_default(results, case):
    assert results[case] == {"result": "passed", "sshd": GOOD_CASES[case][1]}


@pytest.mark.parametrize("case", BAD_CASES)
def test_a_burst_sshd_would_drop_is_refused(results, case):
    result = words(results[case]["result"])
    assert "tunnelbot_tunnel_burst (" in result and "past MaxStartups" in result, result
