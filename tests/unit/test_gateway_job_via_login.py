"""hpcgw-job on a compute node with no route to the hub (gateway.json's
via_login, gateway_tunnel_via_login): its tunnel's ssh goes through the
login node with a ProxyCommand, with the same strict options; every other
node connects directly, exactly as before. The bed's fake ssh runs the
ProxyCommand through /bin/sh as ssh does, so the test sees the words the
hop's ssh really gets."""

from __future__ import annotations

import signal
import socket

import pytest
from job_bed import alive, direct_argv

LOGIN = "login.cluster.test"


@pytest.fixture
def via_login(bed):
    bed.config["via_login"] = {
        "nodes": ["compute2", "gpu-[0-9]*"], "host": LOGIN, "port": 2022, "user": "gateway",
        "known_hosts": str(bed.here / "login_known_hosts"),
    }
    return bed


@pytest.mark.parametrize("node", ["compute2", "gpu-17"])
def test_a_via_login_node_tunnels_through_the_login_node(via_login, node):
    bed = via_login
    # A key path a shell would split, expand or cut: the ProxyCommand quotes it.
    bed.config["tunnel_key"] = str(bed.here / "key dir $HOME 'q' \"d\" 50%" / "tunnel_key")
    wrapper = bed.start(SLURMD_NODENAME=node)
    bed.reported()
    argv = bed.record("ssh")["argv"][1:]
    proxy = [a for a in argv if a.startswith("ProxyCommand=")]
    assert len(proxy) == 1
    # Otherwise the tunnel's own command is the direct one, with the ProxyCommand beside the key.
    without = argv[:argv.index(proxy[0]) - 1] + argv[argv.index(proxy[0]) + 1:]
    assert without == direct_argv(bed, argv)
    assert argv[argv.index(proxy[0]) - 3:argv.index(proxy[0]) - 1] == ["-i", bed.config["tunnel_key"]]

    # What the hop's ssh received, through /bin/sh: the strict options, the
    # login node's own pins, this key only, the account at the login node.
    hop = bed.wait_for(lambda: bed.record("ssh-hop"))
    assert hop["argv"][1:] == [
        "-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={bed.here / 'login_known_hosts'}", "-o", "IdentitiesOnly=yes",
        "-i", bed.config["tunnel_key"], "-p", "2022", f"gateway@{LOGIN}",
    ]
    assert "-W" not in hop["argv"]  # the login node's forced command chooses the target
    assert "StrictHostKeyChecking=no" not in proxy[0] and "accept-new" not in proxy[0]
    assert "via_login" in bed.log_text() and node in bed.log_text()

    # scancel stops the hop with the tunnel.
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 0
    assert not alive(hop["pid"])


@pytest.mark.parametrize("env", [{"SLURMD_NODENAME": "compute1"}, {"SLURMD_NODENAME": "compute22"},
                                 {"SLURMD_NODENAME": "gpu17"}])
def test_other_nodes_connect_to_the_hub_directly(via_login, env):
    bed = via_login
    bed.start(**env)
    bed.reported()
    argv = bed.record("ssh")["argv"][1:]
    assert argv == direct_argv(bed, argv)
    assert bed.record("ssh-hop") is None


def test_without_via_login_settings_every_node_connects_directly(bed):
    bed.start(SLURMD_NODENAME="compute2")
    bed.reported()
    argv = bed.record("ssh")["argv"][1:]
    assert argv == direct_argv(bed, argv)


def test_the_host_name_stands_in_for_slurms_node_name(via_login):
    bed = via_login
    bed.config["via_login"]["nodes"] = [socket.gethostname()]
    bed.start(SLURMD_NODENAME=None)
    bed.reported()
    assert any(a.startswith("ProxyCommand=") for a in bed.record("ssh")["argv"])


@pytest.mark.parametrize("change, named", [
    ({"nodes": "compute2"}, "via_login.nodes"),
    ({"nodes": ["compute2; rm -rf /"]}, "via_login.nodes"),
    ({"host": "login node"}, "via_login.host"),
    ({"host": ""}, "via_login.host"),
    ({"port": 0}, "via_login.port"),
    ({"known_hosts": "/etc/x y"}, "via_login.known_hosts"),
])
def test_bad_via_login_settings_start_nothing(via_login, change, named):
    bed = via_login
    bed.config["via_login"].update(change)
    assert bed.run(SLURMD_NODENAME="compute2") != 0
    assert named in bed.log_text()
    assert bed.record("ssh") is None and bed.record("notebook") is None
