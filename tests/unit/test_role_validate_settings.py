"""The hub roles' validate entry points (globus_auth, nginx, jupyterhub) name
the wrong variable, run for real with ansible-playbook on localhost
(connection local, nothing changed).

The settings that need no host to be judged are checked here, all in one
ansible-playbook run (one inventory host per case, as
test_apptainer_images_role.py does). The molecule scenario's
test_bad_settings.py keeps, for each role, cases that need the real site
(Globus refusing the secret, an installed hub, the cluster's nodes) and one
that proves site.yml stops before any change.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

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


def playbook(out: Path) -> list:
    return [{
        "name": "Every case",
        "hosts": "cases",
        "gather_facts": False,
        "tasks": [{
            "name": "Case",
            "block": [
                {"name": "Validate", "ansible.builtin.include_role": {
                    "name": "{{ case_role }}", "tasks_from": "validate"}},
                {"name": "Passed", "ansible.builtin.set_fact": {"case_result": "passed"}},
            ],
            "rescue": [{"name": "Record the failure", "ansible.builtin.set_fact": {
                "case_result": "{{ ansible_failed_result.results | default([]) | selectattr('failed', 'defined')"
                               " | selectattr('failed') | map(attribute='msg') | join(' // ')"
                               " or ansible_failed_result.msg | default(ansible_failed_result) }}"}}],
        }],
    }, {
        "name": "Write every case's outcome",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [{"name": "Write them", "ansible.builtin.copy": {
            "content": "{{ dict(groups['cases'] | zip(groups['cases'] | map('extract', hostvars, 'case_result')))"
                       " | to_json }}",
            "dest": f"{out}/all.json", "mode": "0600"}}],
    }]


def host(case: str) -> str:
    """A case's inventory host: a DNS name (the hub's URL defaults to it)."""
    return case.replace("_", "-") + ".test"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if not ANSIBLE_PLAYBOOK.exists() or not shutil.which("python3", path="/usr/bin"):
        pytest.skip("needs ansible-playbook beside pytest")
    here = tmp_path_factory.mktemp("hub-roles")
    hosts = {host(name): {"case_role": f"hpcgateway.jupyterhub.{role}", **GOOD, **settings}
             for name, (role, settings, _) in CASES.items()}
    inventory = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                         "children": {"hub": {"children": {"cases": {"hosts": hosts}}},
                                      "cluster": {"hosts": {"login": {}}},
                                      "ungrouped": {"hosts": {"localhost": {}}}}}}
    (here / "ansible.cfg").write_text("[defaults]\nstdout_callback = default\nforks = 8\n")
    (here / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (here / "site.yml").write_text(yaml.safe_dump(playbook(here)))
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(here), "LANG": "C.UTF-8",
        "ANSIBLE_LOCAL_TEMP": str(here / "tmp"), "ANSIBLE_REMOTE_TEMP": str(here / "tmp"),
        "ANSIBLE_CONFIG": str(here / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(ROOT / ".collections")),
    }
    run = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(here / "inventory.yml"), str(here / "site.yml")],
                         env=env, cwd=here, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    return json.loads((here / "all.json").read_text())


@pytest.mark.parametrize("case", CASES)
def test_validate(results, case):
    expected = CASES[case][2]
    result = " ".join(str(results[host(case)]).split())
    if expected is None:
        assert result == "passed"
    else:
        assert expected in result, result
