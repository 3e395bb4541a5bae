"""tunnelbot can do nothing but the two forwards a notebook job needs.

Every attempt runs on a compute node (compute1) as `gateway`, with the real
tunnel key and the hub's pinned host key, against the hub's sshd: as a job
(or a notebook that escaped its container) would.
"""

import pytest
from conftest import hub_steady

# With the hub tests: test_hub_sshd.py fills the tunnel key's caps
# (connections, unauthenticated starts per source) on purpose, and a probe
# here meanwhile waits out its 20 s (seen: test_gets_no_terminal, Terminated).
pytestmark = pytest.mark.xdist_group("hub")


@pytest.fixture
def host(compute_host):
    """compute1, as root through docker (conftest.compute_host), where
    tunnels start: the same view whichever way Ansible reaches the cluster."""
    return compute_host("compute1")


HUB = "hub.gateway.test"
ROOT = "/home/gateway/hpcgw"
SSH = (
    "runuser -u gateway -- timeout 20 ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=yes "
    f"-o UserKnownHostsFile={ROOT}/etc/hub_known_hosts -o IdentitiesOnly=yes "
    "-i /home/gateway/.ssh/hpcgw_tunnel_ed25519 "
)


def test_runs_no_command(host):
    result = host.run(SSH + f"tunnelbot@{HUB} id")
    assert result.rc != 0
    assert "uid=" not in result.stdout


def test_gets_no_terminal(host):
    result = host.run(SSH + f"-tt tunnelbot@{HUB}")
    # No session channel for a pty to go in (MaxSessions 0), and no pty either (PermitTTY no).
    assert "channel 0: open failed" in result.stderr or "PTY allocation request failed" in result.stderr
    assert result.rc != 0
    assert "$" not in result.stdout and "#" not in result.stdout


def test_gets_no_sftp(host):
    result = host.run(
        "runuser -u gateway -- timeout 20 sftp -b - -o BatchMode=yes -o StrictHostKeyChecking=yes "
        f"-o UserKnownHostsFile={ROOT}/etc/hub_known_hosts -o IdentitiesOnly=yes "
        f"-i /home/gateway/.ssh/hpcgw_tunnel_ed25519 tunnelbot@{HUB} <<< 'ls /'"
    )
    assert result.rc != 0


def test_listens_only_on_the_hubs_loopback(host):
    allowed = host.run(SSH + f"-N -o ExitOnForwardFailure=yes -R 127.0.0.1:0:127.0.0.1:22 tunnelbot@{HUB} & "
                       "pid=$!; sleep 3; kill $pid")
    assert "Allocated port" in allowed.stderr
    for spec in ("0.0.0.0:0:127.0.0.1:22", "*:0:127.0.0.1:22"):
        refused = host.run(SSH + f"-N -o ExitOnForwardFailure=yes -R {spec} tunnelbot@{HUB}")
        assert refused.rc != 0 and "remote port forwarding failed" in refused.stderr


@pytest.mark.parametrize(
    "target, reachable",
    [("127.0.0.1:8081", True), ("127.0.0.1:22", False), ("127.0.0.1:8001", False), (f"{HUB}:443", False)],
)
def test_opens_only_the_hub_api(host, target, reachable):
    probe = (
        SSH + f"-N -o ExitOnForwardFailure=yes -L 127.0.0.1:18999:{target} tunnelbot@{HUB} & pid=$!; sleep 2; "
        "curl -s -m 5 -o /dev/null -w '%{http_code}' http://127.0.0.1:18999/hub/api/; kill $pid"
    )
    # The hub API answers unless another worker is restarting the hub.
    with hub_steady():
        code = host.run(probe).stdout.strip()
    if reachable:
        assert code == "200"
    else:
        assert code == "000"


def test_other_keys_are_refused(host):
    host.run_expect([0], "runuser -u gateway -- sh -c 'rm -f /tmp/other && ssh-keygen -q -t ed25519 -N \"\" -f /tmp/other'")
    result = host.run(
        "runuser -u gateway -- timeout 20 ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=yes "
        f"-o UserKnownHostsFile={ROOT}/etc/hub_known_hosts -o IdentitiesOnly=yes -i /tmp/other "
        f"-N -o ExitOnForwardFailure=yes -R 127.0.0.1:0:127.0.0.1:22 tunnelbot@{HUB}"
    )
    host.run("rm -f /tmp/other /tmp/other.pub")
    assert result.rc != 0 and "Permission denied" in result.stderr


def test_sshd_applies_the_limits_to_tunnelbot(hub_host):
    effective = hub_host.check_output("sshd -T -C user=tunnelbot,host=cluster,addr=10.0.0.1").lower().splitlines()
    for setting in ("forcecommand /bin/false", "permittty no", "x11forwarding no", "allowagentforwarding no",
                    "allowstreamlocalforwarding no", "permittunnel no", "permitlisten 127.0.0.1:*",
                    "permitopen 127.0.0.1:8081", "authenticationmethods publickey"):
        assert setting in effective, setting
    key_line = hub_host.file("/etc/ssh/authorized_keys/tunnelbot").content_string
    for option in ("restrict", "port-forwarding", 'command="/bin/false"', 'from="',
                   'permitlisten="127.0.0.1:*"', 'permitopen="127.0.0.1:8081"'):
        assert option in key_line, option
    account = hub_host.user("tunnelbot")
    assert account.shell == "/usr/sbin/nologin"
    assert hub_host.check_output("getent shadow tunnelbot | cut -d: -f2") == "*"
