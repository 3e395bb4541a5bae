"""JupyterHub and its proxy run as hardened, separate services on loopback,
with secrets made once and readable by root only."""

import json

import pytest
from conftest import hub_steady

# Restarts the hub or cuts its SSH to the cluster: one xdist worker, in order (conftest.py).
pytestmark = pytest.mark.xdist_group("hub")

testinfra_hosts = ["hub.gateway.test"]


def unit_properties(host, unit, *names):
    out = host.check_output("systemctl show %s --property=%s", unit, ",".join(names))
    return dict(line.split("=", 1) for line in out.splitlines())


def test_hub_runs_as_an_unprivileged_system_user(host):
    hub = host.process.get(comm="jupyterhub")
    assert hub.user == "jupyterhub"
    account = host.user("jupyterhub")
    assert account.shell == "/usr/sbin/nologin"
    assert account.uid < 1000


def test_hub_unit_is_hardened(host):
    properties = unit_properties(
        host, "jupyterhub.service", "NoNewPrivileges", "ProtectSystem", "ProtectHome",
        "PrivateTmp", "ReadWritePaths", "CapabilityBoundingSet", "User",
    )
    assert properties["NoNewPrivileges"] == "yes"
    assert properties["ProtectSystem"] == "strict"
    assert properties["ProtectHome"] == "yes"
    assert properties["PrivateTmp"] == "yes"
    assert properties["ReadWritePaths"] == "/var/lib/jupyterhub"
    assert properties["CapabilityBoundingSet"] == ""
    assert properties["User"] == "jupyterhub"


def test_hub_cannot_write_outside_its_state(host):
    # The mounts as the running hub sees them (its own mount namespace).
    pid = host.check_output("systemctl show --property=MainPID --value jupyterhub")
    mounts = {}
    for line in host.file(f"/proc/{pid}/mountinfo").content_string.splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")
    assert "ro" in mounts["/"]  # ProtectSystem=strict: the whole tree read-only...
    assert "rw" in mounts["/var/lib/jupyterhub"]  # ...but its state
    assert "ro" in mounts["/home"] and "ro" in mounts["/root"]  # ProtectHome
    assert "/tmp" in mounts  # PrivateTmp: a /tmp of its own


def test_proxy_is_its_own_unit_without_a_fixed_user(host):
    properties = unit_properties(host, "jupyterhub-proxy.service", "DynamicUser", "NoNewPrivileges", "ProtectSystem")
    assert properties == {"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict"}
    assert host.service("jupyterhub-proxy").is_enabled


def test_everything_listens_on_loopback_only(host):
    # The proxy's port is the test site's jupyterhub_proxy_port (8010, not the default).
    for port in (8010, 8001, 8081):
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_secrets_are_root_only(host):
    for name in ("cookie-secret.env", "crypt-key.env", "proxy-token.env", "globus-auth.env"):
        secret = host.file(f"/etc/jupyterhub/secrets/{name}")
        assert (secret.user, secret.group, secret.mode) == ("root", "root", 0o600), name
    assert host.file("/etc/jupyterhub/secrets").mode == 0o700


def test_config_is_readable_by_the_hub_not_by_others_and_holds_no_secret(host):
    config = host.file("/etc/jupyterhub/jupyterhub_config.py")
    assert (config.user, config.group, config.mode) == ("root", "jupyterhub", 0o640)
    secret = host.check_output("sed -n 's/^OAUTH_CLIENT_SECRET=//p' /etc/jupyterhub/secrets/globus-auth.env")
    assert len(secret) > 20
    listing = host.check_output("grep -rlF -- %s /etc/jupyterhub /etc/systemd/system || true", secret)
    assert listing.split() == ["/etc/jupyterhub/secrets/globus-auth.env"]


def proxy_routes(host):
    token = host.check_output("sed -n 's/^CONFIGPROXY_AUTH_TOKEN=//p' /etc/jupyterhub/secrets/proxy-token.env")
    out = host.check_output("curl -fsS -H %s http://127.0.0.1:8001/api/routes", f"Authorization: token {token}")
    return json.loads(out)


@pytest.mark.restarts_hub
def test_hub_restart_keeps_the_proxy_and_its_routes(host):
    proxy_pid = host.check_output("systemctl show --property=MainPID --value jupyterhub-proxy")
    host.run_expect([0], "curl -fsS -o /dev/null -X POST -H %s -d %s http://127.0.0.1:8001/api/routes/probe-route",
                    "Authorization: token " + host.check_output(
                        "sed -n 's/^CONFIGPROXY_AUTH_TOKEN=//p' /etc/jupyterhub/secrets/proxy-token.env"),
                    '{"target": "http://127.0.0.1:9"}')
    try:
        with hub_steady():
            host.run_expect([0], "systemctl restart jupyterhub")
            host.run_expect([0], "sh -c 'for i in $(seq 60); do curl -fsS -o /dev/null "
                                 "http://127.0.0.1:8081/hub/api/ && exit 0; sleep 0.5; done; exit 1'")
        assert host.check_output("systemctl show --property=MainPID --value jupyterhub-proxy") == proxy_pid
        routes = proxy_routes(host)
        assert "/probe-route" in routes and "/" in routes
    finally:
        token = host.check_output("sed -n 's/^CONFIGPROXY_AUTH_TOKEN=//p' /etc/jupyterhub/secrets/proxy-token.env")
        host.run("curl -fsS -X DELETE -H %s http://127.0.0.1:8001/api/routes/probe-route", f"Authorization: token {token}")
