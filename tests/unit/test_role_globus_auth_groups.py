"""The globus_auth role's validate entry point checks globus_auth_hub_groups
(Globus group UUID -> hub group name) before any change, naming it
(ansible-playbook on localhost, no changes, no Globus call)."""

from __future__ import annotations

import pytest
from role_cases import ANSIBLE_PLAYBOOK, run_cases, words

UUID = "5d0f2a8e-6b43-4c1e-9a57-3e2b8c7d9f10"
GOOD = {"globus_auth_client_id": "6f3cde2a-58b1-4c7e-9c3b-0b8f7f1e2a41", "globus_auth_client_secret": "s",
        "globus_auth_allowed_groups": [UUID], "globus_auth_check_credentials": False,
        "globus_auth_manage_groups": True}
# name -> (globus_auth_hub_groups, whether it passes)
CASES = {
    "right": ({UUID: "members"}, True),
    "key-not-a-uuid": ({"members": "members"}, False),
    "name-a-profile-cannot-hold": ({UUID: "gpu users"}, False),
    "two-globus-groups-one-hub-group": ({UUID: "a", "179945b4-0890-4657-92d5-e3aaf4b7586f": "a"}, False),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("needs ansible-playbook beside pytest")
    cases = {name: {**GOOD, "globus_auth_hub_groups": hub_groups} for name, (hub_groups, _) in CASES.items()}
    return run_cases(tmp_path_factory.mktemp("globus-groups"), "globus_auth", cases)


@pytest.mark.parametrize("case", CASES)
def test_hub_group_names_are_checked_before_any_change(results, case):
    result = words(results[case]["result"])
    if CASES[case][1]:
        assert result == "passed"
    else:
        assert "globus_auth_hub_groups maps Globus group UUIDs to distinct hub group names" in result, result
