"""The hub roles' validate entry points (globus_auth, nginx, jupyterhub) name
the wrong variable, run for real with ansible-playbook on localhost
(connection local, nothing changed).

The settings that need no host to be judged are checked here, all in one
ansible-playbook run (tests/unit/role_cases.py). The molecule scenario's
test_bad_settings.py keeps, for each role, cases that need the real site
(Globus refusing the secret, an installed hub, the cluster's nodes) and one
that proves site.yml stops before any change.
"""

from __future__ import annotations

import pytest
from role_cases import ANSIBLE_PLAYBOOK, run_cases, words

# Good settings of the hub's roles (the test site's, without the test bed).
GOOD = {
    "globus_auth_client_id": "6f3cde2a-58b1-4c7e-9c3b-0b8f7f1e2a41",
    "globus_auth_client_secret": "a-secret",
    "globus_auth_identity_provider": "uchicago.edu",
    "globus_auth_allowed_groups": ["179945b4-0890-4657-92d5-e3aaf4b7586f"],
    "globus_auth_admin_groups": ["87b28e74-1993-480b-b9fe-b9eabd433886"],
    # Asking Globus is test_bad_settings.py's wrong-globus-secret (the real stand-in).
    "globus_auth_check_credentials": False,
    "nginx_server_name": "hub.gateway.test",
    "nginx_tls_mode": "letsencrypt",
    "nginx_letsencrypt_email": "jupyterhub-admin@gateway.test",
}

# name -> (role, settings over GOOD, fragment the failure must contain; None: passes)
CASES: dict[str, tuple[str, dict, str | None]] = {
    "globus_good": ("globus_auth", {}, None),
    "missing_globus_secret": ("globus_auth", {"globus_auth_client_secret": ""}, "globus_auth_client_secret"),
    "globus_id_not_a_uuid": ("globus_auth", {"globus_auth_client_id": "hub-client"}, "globus_auth_client_id"),
    "group_not_a_uuid": ("globus_auth", {"globus_auth_allowed_groups": ["admins"]}, "globus_auth_allowed_groups"),
    "admin_group_not_a_uuid": ("globus_auth", {"globus_auth_admin_groups": ["x"]}, "globus_auth_admin_groups"),
    "nginx_good": ("nginx", {}, None),
    "letsencrypt_without_email": ("nginx", {"nginx_letsencrypt_email": ""}, "nginx_letsencrypt_email"),
    "invalid_hostname": ("nginx", {"nginx_server_name": "https://hub"}, "nginx_server_name"),
    "jupyterhub_good": ("jupyterhub", {}, None),
    "culler_interval": ("jupyterhub", {"jupyterhub_idle_culler_interval": 7200}, "jupyterhub_idle_culler_interval"),
    "cookie_age_zero": ("jupyterhub", {"jupyterhub_cookie_max_age_days": 0}, "jupyterhub_cookie_max_age_days"),
    "cookie_age_too_long": ("jupyterhub", {"jupyterhub_cookie_max_age_days": 30}, "jupyterhub_cookie_max_age_days"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("needs ansible-playbook beside pytest")
    cases = {name: {"case_role": f"hpcgateway.jupyterhub.{role}", **GOOD, **settings}
             for name, (role, settings, _) in CASES.items()}
    return run_cases(tmp_path_factory.mktemp("hub-roles"), "{{ case_role }}", cases,
                     inventory={"cluster": {"hosts": {"login": {}}}})


@pytest.mark.parametrize("case", CASES)
def test_validate(results, case):
    expected = CASES[case][2]
    result = words(results[case]["result"])
    if expected is None:
        assert result == "passed"
    else:
        assert expected in result, result
