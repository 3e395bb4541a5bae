"""A wrong or missing setting fails site.yml before any change, with a
message naming the variable; the hosts are left as they were."""

import json

import pytest

# No xdist group: every run stops in the preflight, before any change, so it
# may run beside anything (conftest.py).

# compute1's address alone (compute2 on the private network is then missed), read as the inventory does.
COMPUTE1_ADDRESS = ("{{ (lookup('ansible.builtin.pipe', 'docker inspect hpcgw-' ~ testbed_name ~ '-compute1') | from_json)[0]"
                    "['NetworkSettings']['Networks']['hpcgw-' ~ testbed_name]['IPAddress'] }}")

# Each role's settings are checked before any change: one case per role at
# least, and the cases that need the real site (Globus judging the secret,
# an installed hub, the cluster's nodes). The other wrong values of the hub
# roles are tests/unit/test_role_validate_settings.py's (no host needed).
CASES = [
    pytest.param(["-e", "globus_auth_client_secret=not-the-secret"], "refused the client credentials", id="wrong-globus-secret"),
    pytest.param(["-e", "nginx_server_name=https://hub"], "nginx_server_name", id="invalid-hostname"),
    pytest.param(["-e", "jupyterhub_version=5.5.3"], "jupyterhub_allow_upgrade", id="unplanned-upgrade"),
    pytest.param(["-e", "jupyterhub_cookie_max_age_days=30"], "jupyterhub_cookie_max_age_days", id="cookie-age-too-long"),
    # The compute nodes' addresses (issue 11): the message names the Slurm nodes and their addresses.
    pytest.param(["-e", '{"gateway_compute_from": []}'],
                 ("gateway_compute_from is empty", "as login.cluster.test resolves it: compute1 ", ", compute2 "),
                 id="compute-from-empty"),
    pytest.param(["-e", '{"gateway_compute_from": ["10.0.0.0/33"]}'], "'10.0.0.0/33': not a CIDR network",
                 id="compute-from-malformed"),
    pytest.param(["-e", json.dumps({"gateway_compute_from": [COMPUTE1_ADDRESS]})],
                 "does not cover compute2 (", id="compute-from-misses-a-node"),
    pytest.param(["-e", '{"gateway_tunnel_via_login": ["compute2 && id"]}'], "gateway_tunnel_via_login must list",
                 id="via-login-not-a-pattern"),
]


@pytest.mark.parametrize("extra, named", CASES)
def test_bad_setting_fails_before_any_change(run_playbook, extra, named):
    run = run_playbook("site.yml", *extra)
    assert run.returncode != 0
    for text in named if isinstance(named, tuple) else (named,):
        assert text in run.output, run.output[-3000:]
    assert "Traceback" not in run.output
    for host in ("hub.gateway.test", "login.cluster.test"):
        assert run.recap(host)["changed"] == 0, run.output[-3000:]


# The site-wide checks run on the controller, before any host is reached
# (hpcgateway.jupyterhub.site_settings): the hosts are not even in the recap.
SITE_CASES = [
    pytest.param(["-e", "jupyterhub_idle_culler_timout=60"], "Did you mean jupyterhub_idle_culler_timeout?",
                 id="misspelt-setting"),
    # The test site's jupyterhub_proxy_port is 8010 (inventory host_vars).
    pytest.param(["-e", "nginx_upstream_url=http://127.0.0.1:8000"],
                 "is port 8000, but the proxy listens on jupyterhub_proxy_port 8010", id="upstream-off-the-proxy-port"),
]


@pytest.mark.parametrize("extra, named", SITE_CASES)
def test_bad_site_setting_fails_before_any_host_is_reached(run_playbook, extra, named):
    run = run_playbook("site.yml", *extra)
    assert run.returncode != 0
    assert named in run.output, run.output[-3000:]
    assert run.recap_hosts() == {"localhost"}, run.output[-3000:]


# A role applied on its own (no site.yml, so no preflight) still checks its
# settings before it changes anything: main runs validate.yml when this run
# has not validated these settings on the host (roles/_common/vars/main.yml),
# and the gateway role checks what the hub's play would have published.
ALONE_CASES = [
    pytest.param("jupyterhub", "hub", ["-e", '{"jupyterhub_cookie_max_age_days": 30}'],
                 "jupyterhub_cookie_max_age_days", id="jupyterhub-cookie-age"),
    pytest.param("gateway", "cluster", ["-e", '{"gateway_compute_from": []}'], "gateway_compute_from is empty",
                 id="gateway-compute-from"),
    # Good settings of its own, but no hub play ran: the hub's key, address,
    # host keys and profiles are missing (the preflight's run would let them be empty).
    pytest.param("gateway", "cluster", [], "gateway_hub_public_key must be one OpenSSH public key line",
                 id="gateway-without-the-hub"),
]


@pytest.mark.parametrize("role, group, extra, named", ALONE_CASES)
def test_a_role_applied_alone_checks_its_settings_before_any_change(run_playbook, tmp_path, role, group, extra, named):
    playbook = tmp_path / "alone.yml"
    playbook.write_text(
        f"- name: The {role} role alone\n"
        f"  hosts: {group}\n"
        "  become: \"{{ inventory_hostname in groups['hub'] or (gateway_mode | default('root')) == 'root' }}\"\n"
        "  roles:\n"
        f"    - role: hpcgateway.jupyterhub.{role}\n"
    )
    run = run_playbook(playbook, *extra, timeout=300)
    assert run.returncode != 0
    assert named in run.output, run.output[-3000:]
    for host in run.recap_hosts():
        assert run.recap(host)["changed"] == 0, run.output[-3000:]
