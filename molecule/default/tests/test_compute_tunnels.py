"""Tunnels from the compute nodes (issue 11).

compute1 reaches the hub: its notebooks' tunnels arrive from its own
address. compute2 is only on the private network (no route to the hub): its
tunnels hop through the login node (gateway_tunnel_via_login: [compute2])
and arrive from the login node's address. The tunnel key is refused from
any other address, and through the login node it reaches the hub's sshd
and nothing else. What the hub sees is read on the hub (`ss`: the sshd
connection that holds the notebook's listener); what the key can do is
tried as `gateway` on the compute nodes, as a job (or a notebook that
escaped its container) would.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import requests
from conftest import hub_steady, job_node, slurm_jobs
from test_spawn import run_in_kernel

from hpcgw_hub.spawner import user_id

# Spawns, uses the tunnel key (beside test_hub_sshd.py's cap tests, not with
# them) and changes the hop line: one worker, in order (conftest.py).
pytestmark = pytest.mark.xdist_group("hub")

ROOT = "/home/gateway/hpcgw"
KEY = "/home/gateway/.ssh/hpcgw_tunnel_ed25519"
HUB = "hub.gateway.test"
LOGIN = "login.cluster.test"
STRICT = f"-F none -o BatchMode=yes -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -i {KEY}"
TO_HUB = f"timeout 20 ssh {STRICT} -o UserKnownHostsFile={ROOT}/etc/hub_known_hosts"
TO_LOGIN = f"timeout 20 ssh {STRICT} -o UserKnownHostsFile={ROOT}/etc/login_known_hosts"
# What a tunnel asks for: a listener on the hub's loopback.
LISTEN = f"-N -o ExitOnForwardFailure=yes -R 127.0.0.1:0:127.0.0.1:22 tunnelbot@{HUB}"


def gateway_run(host, command: str):
    """`command` (a shell line) as the gateway account on `host`."""
    return host.run("runuser -u gateway -- bash -c %s", command)


def the_job(cluster_host, username: str) -> str:
    name = f"hpcgw-hub-{user_id(username)}"
    ids = [job for job, (job_name, _, state) in slurm_jobs(cluster_host).items()
           if job_name == name and state == "RUNNING"]
    assert len(ids) == 1, ids
    return ids[0]


def local_ports_to_hub(host, testbed, process: str, pattern: str) -> set[int]:
    """Local ports of the established connections to the hub's sshd held by
    the gateway account's `process` whose command line matches `pattern`
    (read as gateway: root in a container without CAP_SYS_PTRACE sees no
    other account's sockets)."""
    pids = set(gateway_run(host, f"pgrep -u gateway -f {pattern!r}").stdout.split())
    assert pids, f"no {process} matching {pattern!r}"
    lines = gateway_run(host, "ss -Htnp state established '( dport = :22 )'").stdout.splitlines()
    hub = testbed.address("hub")
    return {int(line.split()[2].rsplit(":", 1)[1]) for line in lines
            if line.split()[3] == f"{hub}:22" and f'"{process}"' in line
            and set(re.findall(r"pid=(\d+)", line)) & pids}


def hub_peers(hub_host) -> set[str]:
    """The clients of the hub's sshd as the hub sees them (address:port)."""
    lines = hub_host.check_output("ss -Htn state established '( sport = :22 )'").splitlines()
    return {line.split()[3] for line in lines}


def spawn(hub_user, cluster_host, identity: str, options: dict) -> tuple[object, str, float]:
    user = hub_user(identity)
    started = time.monotonic()
    reply = user.start(options=options)
    seconds = time.monotonic() - started
    assert reply.status_code in (201, 202), reply.text
    return user, the_job(cluster_host, user.name), seconds


@pytest.mark.root_pass
def test_a_notebook_on_the_private_node_is_reached_through_the_login_node(
        hub_user, cluster_host, compute_host, hub_host, testbed, public_ca_bundle, testbed_dns):
    user, job, seconds = spawn(hub_user, cluster_host, "bench4@uchicago.edu", {"profile": "private"})
    try:
        assert job_node(cluster_host, job) == "compute2"
        # JupyterLab answers through nginx, and a kernel computes.
        token = user.token()
        # Another client than the hub session's (the notebook sets its own _xsrf cookie).
        client = requests.Session()
        client.trust_env = False
        client.verify = str(public_ca_bundle)
        lab = client.get(f"https://{testbed.hub_name}/user/{user.name}/lab",
                         headers={"Authorization": f"token {token}"}, timeout=30)
        assert lab.status_code == 200 and "JupyterLab" in lab.text
        assert run_in_kernel(testbed, public_ca_bundle, user.name, token, "6*7") == "42"
        # compute2's tunnel has the hop; on the login node hpcgw-hop relays it to the hub's
        # sshd, and the hub sees that connection come from the login node's address.
        assert "ProxyCommand=ssh" in compute_host("compute2").check_output(
            "ps -o args= -u gateway | grep -F 'tunnelbot@' | grep -v grep")
        relayed = local_ports_to_hub(cluster_host, testbed, "hpcgw-hop", f"bin/hpcgw-hop {HUB} 22")
        assert len(relayed) == 1
        assert f"{testbed.address('cluster')}:{relayed.pop()}" in hub_peers(hub_host)
        print(f"spawn through the login node: {seconds:.1f} s")
    finally:
        user.stop()


def test_a_notebook_on_compute1_tunnels_from_its_own_address(hub_user, cluster_host, compute_host, hub_host,
                                                             testbed):
    user, job, seconds = spawn(hub_user, cluster_host, "bench5@uchicago.edu", {"profile": "compute"})
    try:
        assert job_node(cluster_host, job) == "compute1"
        # This job's tunnel (its -R leads to its job folder) reaches the hub from compute1's address.
        ports = local_ports_to_hub(compute_host("compute1"), testbed, "ssh", f"hpcgw-{job}-.*tunnelbot@{HUB}")
        assert len(ports) == 1
        assert f"{testbed.address('compute1')}:{ports.pop()}" in hub_peers(hub_host)
        assert "ProxyCommand" not in compute_host("compute1").check_output(
            "ps -o args= -u gateway | grep -F 'tunnelbot@' | grep -v grep")
        print(f"spawn direct: {seconds:.1f} s")
    finally:
        user.stop()


def stolen_key(testbed, role: str) -> str:
    """The tunnel key and the hub's pins copied into another container (a theft), as root there."""
    for path, mode in ((KEY, "0600"), (f"{ROOT}/etc/hub_known_hosts", "0644"), (f"{ROOT}/etc/login_known_hosts", "0644")):
        content = subprocess.run(["docker", "exec", testbed.container("cluster"), "cat", path],
                                 check=True, capture_output=True).stdout
        subprocess.run(["docker", "exec", "-i", testbed.container(role), "sh", "-c",
                        f"umask 077; mkdir -p /tmp/stolen && cat > /tmp/stolen/{path.rsplit('/', 1)[1]} "
                        f"&& chmod {mode} /tmp/stolen/{path.rsplit('/', 1)[1]}"],
                       input=content, check=True)
    return ("timeout 20 ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes "
            "-i /tmp/stolen/hpcgw_tunnel_ed25519 ")


def test_the_tunnel_key_is_refused_from_outside_the_allowed_addresses(compute_host, testbed):
    """From the hub's own address (on the main network with compute1, outside
    gateway_compute_from; the services container has no ssh client)."""
    import testinfra

    # The same key from compute1 (an allowed address) gets its listener.
    allowed = gateway_run(compute_host("compute1"), f"{TO_HUB} {LISTEN} & pid=$!; sleep 4; kill $pid")
    assert "Allocated port" in allowed.stderr, allowed.stderr
    elsewhere = testinfra.get_host(f"docker://root@{testbed.container('hub')}")
    ssh = stolen_key(testbed, "hub")
    try:
        # To the hub directly: tunnelbot's from= leaves this address out.
        refused = elsewhere.run(ssh + f"-o UserKnownHostsFile=/tmp/stolen/hub_known_hosts {LISTEN}")
        assert refused.rc != 0 and "Permission denied" in refused.stderr, refused.stderr
        assert "Allocated port" not in refused.stderr
        # Through the login node: its hop line's from= leaves it out too.
        hop = elsewhere.run(ssh + f"-o UserKnownHostsFile=/tmp/stolen/login_known_hosts gateway@{LOGIN} </dev/null")
        assert hop.rc != 0 and "Permission denied" in hop.stderr, hop.stderr
        assert "SSH-2.0-" not in hop.stdout
    finally:
        elsewhere.run("rm -rf /tmp/stolen")


def test_through_the_login_node_the_key_reaches_only_the_hubs_sshd(compute_host, cluster_host):
    node = compute_host("compute2")
    hop = f"{TO_LOGIN} gateway@{LOGIN}"
    # Whatever command is asked for, the hop runs: the hub's sshd greets (no uid, no shell).
    for command in ("id", "cat /etc/hostname", "sh -c 'echo PWNED'"):
        ran = gateway_run(node, f"{hop} {command} </dev/null")
        assert ran.stdout.startswith("SSH-2.0-OpenSSH_9.2"), (command, ran.stdout, ran.stderr)
        assert "uid=" not in ran.stdout and "PWNED" not in ran.stdout and "login" not in ran.stdout
    # No terminal, no shell.
    shell = gateway_run(node, f"{TO_LOGIN} -tt gateway@{LOGIN} </dev/null")
    assert "PTY allocation request failed" in shell.stderr
    assert "$ " not in shell.stdout and "# " not in shell.stdout
    # No stdio forward, to any target: the login node's sshd or the hub's.
    for target in ("127.0.0.1:22", f"{HUB}:22", f"{HUB}:443"):
        forward = gateway_run(node, f"{TO_LOGIN} -W {target} gateway@{LOGIN} </dev/null")
        assert forward.rc != 0 and "SSH-2.0-" not in forward.stdout, (target, forward.stdout)
        assert "administratively prohibited" in forward.stderr or "forwarding failed" in forward.stderr
    # No local forward (-L): the channel is refused, nothing answers.
    local = gateway_run(node, f"{TO_LOGIN} -N -L 127.0.0.1:18997:{HUB}:22 gateway@{LOGIN} & pid=$!; sleep 3; "
                              "python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', 18997)); "
                              "s.settimeout(5); print('GOT', s.recv(64))\"; kill $pid")
    assert "GOT b''" in local.stdout and "SSH-2.0" not in local.stdout, (local.stdout, local.stderr)
    # No remote forward (-R), to a port or a Unix socket on the login node.
    remote = gateway_run(node, f"{TO_LOGIN} -N -o ExitOnForwardFailure=yes -R 127.0.0.1:0:127.0.0.1:22 gateway@{LOGIN}")
    assert remote.rc != 0 and "Allocated port" not in remote.stderr, remote.stderr
    unix = gateway_run(node, f"{TO_LOGIN} -N -o ExitOnForwardFailure=yes "
                             f"-R /home/gateway/hop-test.sock:127.0.0.1:22 gateway@{LOGIN}")
    assert unix.rc != 0
    assert not cluster_host.file("/home/gateway/hop-test.sock").exists


def key_lines(cluster_host) -> list[str]:
    """The gateway's lines of authorized_keys: those with a forced command
    (not the site's own keys, such as the gateway team's login in
    community-account mode, tests/testbed/prepare.yml)."""
    return [line for line in cluster_host.file("/home/gateway/.ssh/authorized_keys").content_string.splitlines()
            if 'command="' in line]


def test_the_hop_line_is_there_only_for_via_login_nodes(cluster_host, run_playbook, testbed):
    tunnel_key = " ".join(cluster_host.file(KEY + ".pub").content_string.split()[:2])
    lines = key_lines(cluster_host)
    hub_line = [line for line in lines if "/bin/hpcgw-gate" in line]
    hop_line = [line for line in lines if tunnel_key in line]
    assert len(hub_line) == 1 and len(hop_line) == 1 and len(lines) == 2, lines
    private = subprocess.run(["docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}",
                              f"hpcgw-{testbed.name}-private"], check=True, capture_output=True, text=True).stdout.strip()
    assert hop_line[0].startswith(
        f'restrict,from="{testbed.address("compute1")},{private}",command="{ROOT}/bin/hpcgw-hop {HUB} 22" ')
    # Without via-login nodes the line goes, the hub's stays; with them it comes back, once.
    with hub_steady():
        try:
            removed = run_playbook("molecule/default/playbooks/tunnel-hop.yml", "-e", '{"gateway_tunnel_via_login": []}')
            assert removed.returncode == 0, removed.output[-3000:]
            assert removed.recap("login.cluster.test")["changed"] == 1
            assert key_lines(cluster_host) == hub_line
        finally:
            restored = run_playbook("molecule/default/playbooks/tunnel-hop.yml")
        assert restored.returncode == 0, restored.output[-3000:]
        assert restored.recap("login.cluster.test")["changed"] == 1
        again = run_playbook("molecule/default/playbooks/tunnel-hop.yml")
        assert again.recap("login.cluster.test")["changed"] == 0
    assert key_lines(cluster_host) == lines
