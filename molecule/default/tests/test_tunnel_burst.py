"""A burst of tunnels gets in (issue 12): the hub's sshd admits as many
handshakes at once as the site lets notebooks start together
(tunnelbot_tunnel_burst), in all and from one address, so that no tunnel of
a burst is dropped "past MaxStartups" (Debian's 10:30:100 dropped one of 12).

The burst is made on the real bed: connections that stay in their handshake
(they read sshd's greeting and say nothing, as a tunnel on a busy node does
for a while) from the login node and from compute1, and, at the same time,
real tunnels as `gateway` with the tunnel key from the login node (the
address every via-login tunnel comes from). All are greeted and every tunnel
comes up. With the old limits (MaxStartups 10:30:60, PerSourceMaxStartups
10) sshd drops the login node's connections past 10.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

# Holds tunnel connections of the account: in order with the tests that
# spawn notebooks and with test_hub_sshd (conftest.py).
pytestmark = pytest.mark.xdist_group("hub")

HUB = "hub.gateway.test"
ROOT = "/home/gateway/hpcgw"
TUNNELS = 10  # real tunnels of the burst, from the login node
SPARE = 2  # handshakes left free in all, for whatever else logs in meanwhile

HOLD = """
# hpcgw-burst-holder
import socket, sys, time
held = []
for _ in range({count}):
    s = socket.create_connection(("{hub}", 22), timeout=10)
    s.settimeout(10)
    held.append(s)
greeted = 0
for s in held:
    try:
        greeted += s.recv(64).startswith(b"SSH-")
    except OSError:
        pass
print(greeted, flush=True)
time.sleep({hold})
"""

TUNNEL = (
    "runuser -u gateway -- timeout 30 ssh -F none -N -o BatchMode=yes -o StrictHostKeyChecking=yes "
    f"-o UserKnownHostsFile={ROOT}/etc/hub_known_hosts -o IdentitiesOnly=yes "
    "-i /home/gateway/.ssh/hpcgw_tunnel_ed25519 -o ExitOnForwardFailure=yes "
    f"-R 127.0.0.1:0:127.0.0.1:22 tunnelbot@{HUB}"
)


# The test bed's burst: tunnelbot_tunnel_burst defaults to tunnelbot_max_connections
# (16, molecule/default/inventory/host_vars/hub.gateway.test/tunnelbot.yml), and
# MaxStartups then starts at the burst plus 10.
BURST = 16
MAX_STARTUPS_START = BURST + 10


def test_a_burst_of_tunnels_all_come_up(cluster_host, compute_host):
    login_held = BURST - TUNNELS  # the login node's handshakes: its share of the burst, all of it
    other_held = MAX_STARTUPS_START - BURST - SPARE  # compute1's, so that the burst fills MaxStartups too
    assert login_held + other_held + TUNNELS >= 20
    hold = 40  # seconds the handshakes stay open at most (ended as soon as the tunnels are counted)
    other = compute_host(1)
    holders = []
    try:
        # Connections that stay in their handshake, then the tunnels at once.
        for host, count, name in ((other, other_held, "compute1"), (cluster_host, login_held, "login")):
            script = HOLD.format(count=count, hub=HUB, hold=hold)
            host.run(f"cd /tmp && (timeout {hold + 10} python3 -c {shlex.quote(script)} "
                     f">/tmp/hpcgw-burst-{name}.out 2>&1 &)")
            holders.append((host, name, count))
        for host, name, _count in holders:
            host.run_expect([0], f"timeout 10 sh -c 'until [ -s /tmp/hpcgw-burst-{name}.out ]; do sleep 0.1; done'")
        burst = (
            "cd $(mktemp -d) && "
            f"for i in $(seq {TUNNELS}); do {TUNNEL} 2>log.$i & done; "
            f"for t in $(seq 250); do [ $(grep -l -e 'Allocated port' -e 'closed' -e 'reset' -e 'denied' log.* "
            f"2>/dev/null | wc -l) -ge {TUNNELS} ] && break; sleep 0.1; done; "
            "for f in log.*; do echo \"$f: $(tr '\\n' ' ' < $f)\"; done; "
            f"pkill -u gateway -f 'tunnelbot@{HUB}'; cd /"
        )
        out = cluster_host.check_output(f"bash -c {shlex.quote(burst)}")
        greeted = {name: int(host.check_output(f"head -1 /tmp/hpcgw-burst-{name}.out").strip() or 0)
                   for host, name, _count in holders}
    finally:
        for host, name, _count in holders:
            host.run(f"pkill -f 'hpcgw-burst-holde[r]'; rm -f /tmp/hpcgw-burst-{name}.out")
    up = re.findall(r"Allocated port \d+", out)
    assert len(up) == TUNNELS, f"{len(up)} of {TUNNELS} tunnels came up:\n{out}"
    assert greeted == {name: count for _host, name, count in holders}, json.dumps(greeted)
