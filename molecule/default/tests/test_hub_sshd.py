"""The hub's sshd, the door tunnels come in by (open to the compute networks):
only strong algorithms, only the host keys the cluster pins, and bounds on
what one tunnel key can hold (connections, listeners, sessions).

Every attempt runs on the cluster, as `gateway` with the real tunnel key and
the pinned host keys where it logs in: as a job, or someone who stole the key,
would.
"""

import re
import shlex

import pytest

# Holds many of the tunnel account's connections for a few seconds: in order
# with the tests that spawn notebooks (conftest.py), which need one each.
pytestmark = pytest.mark.xdist_group("hub")


@pytest.fixture
def host(cluster_host):
    """The login node, as root through docker (conftest.cluster_host): the
    same view in root and in community-account mode."""
    return cluster_host


HUB = "hub.gateway.test"
ROOT = "/home/gateway/hpcgw"
KNOWN_HOSTS = f"{ROOT}/etc/hub_known_hosts"
SSH = (
    "runuser -u gateway -- timeout 20 ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=yes "
    f"-o UserKnownHostsFile={KNOWN_HOSTS} -o IdentitiesOnly=yes "
    "-i /home/gateway/.ssh/hpcgw_tunnel_ed25519 "
)
# The test bed's tunnelbot_max_connections and the role's tunnelbot_max_open_files
# (molecule/default/inventory/host_vars/hub.gateway.test/tunnelbot.yml, roles/tunnelbot/defaults).
MAX_CONNECTIONS = 16
# The burst of handshakes sshd admits from one address (tunnelbot_tunnel_burst,
# by default tunnelbot_max_connections; MaxStartups starts 10 above it).
PER_SOURCE = MAX_CONNECTIONS
MAX_OPEN_FILES = 64


# --- Algorithms and host keys -------------------------------------------------

@pytest.mark.parametrize(
    "options, refusal",
    [
        ("-o KexAlgorithms=ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521", "no matching key exchange method"),
        ("-o KexAlgorithms=diffie-hellman-group14-sha1,diffie-hellman-group14-sha256", "no matching key exchange method"),
        # A MAC is chosen only beside a cipher without its own (not AEAD): CTR.
        ("-o Ciphers=aes128-ctr -o MACs=hmac-sha1,hmac-sha1-etm@openssh.com", "no matching MAC"),
        ("-o Ciphers=aes128-ctr -o MACs=umac-64-etm@openssh.com,hmac-sha2-256", "no matching MAC"),
        ("-o HostKeyAlgorithms=ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521", "no matching host key type"),
    ],
    ids=["nist-kex", "group14-kex", "sha1-mac", "umac64-and-mac-then-encrypt", "ecdsa-hostkey"],
)
def test_weak_algorithms_are_refused(host, options, refusal):
    # The refusal names what did not match: the client could offer it, the hub does not.
    result = host.run(SSH + f"{options} -N tunnelbot@{HUB}")
    assert result.rc == 255, result.stderr
    assert refusal in result.stderr, result.stderr


def test_a_modern_client_negotiates_strong_algorithms(host, hub_host):
    """The tunnel's own client (defaults: OpenSSH on the cluster) gets in, and
    what it negotiates is in the hub's lists; an admin's or Ansible's client
    is the same kind."""
    result = host.run(SSH + f"-v -N -o ExitOnForwardFailure=yes -R 127.0.0.1:0:127.0.0.1:22 tunnelbot@{HUB} & "
                      "pid=$!; sleep 3; kill $pid")
    assert "Allocated port" in result.stderr, result.stderr
    kex = re.search(r"kex: algorithm: (\S+)", result.stderr).group(1)
    cipher = re.search(r"kex: server->client cipher: (\S+) MAC: (\S+)", result.stderr)
    effective = dict(line.split(" ", 1) for line in hub_host.check_output("sshd -T").splitlines() if " " in line)
    assert kex in effective["kexalgorithms"].split(",")
    assert cipher.group(1) in effective["ciphers"].split(",")


def test_sshd_offers_only_ed25519_and_rsa_host_keys(host):
    scanned = host.check_output(f"ssh-keyscan -T 10 -t ed25519,ecdsa,rsa {HUB} 2>/dev/null")
    types = sorted(line.split()[1] for line in scanned.splitlines() if line and not line.startswith("#"))
    assert types == ["ssh-ed25519", "ssh-rsa"]


def test_the_cluster_pins_exactly_the_offered_host_keys(host):
    """etc/hub_known_hosts holds one line per host key the hub offers, no
    ECDSA line, and these keys are the ones sshd presents."""
    scanned = host.check_output(f"ssh-keyscan -T 10 -t ed25519,ecdsa,rsa {HUB} 2>/dev/null")
    offered = {tuple(line.split()[1:3]) for line in scanned.splitlines() if line and not line.startswith("#")}
    pinned = host.file(KNOWN_HOSTS).content_string
    pins = {tuple(line.split()[1:3]) for line in pinned.splitlines() if line and not line.startswith("#")}
    assert pins == offered
    assert "ecdsa" not in pinned


def test_rsa_host_key_is_3072_bits_or_more(hub_host):
    bits = hub_host.check_output("ssh-keygen -l -f /etc/ssh/ssh_host_rsa_key.pub").split()[0]
    assert int(bits) >= 3072


# --- What one tunnel key can hold --------------------------------------------

def test_tunnel_connection_opens_no_session(host):
    """MaxSessions 0: not even the forced /bin/false runs; a tunnel is `ssh -N`."""
    result = host.run(SSH + f"tunnelbot@{HUB} true")
    assert result.rc == 255  # ssh's own failure, not the command's exit code
    assert "channel 0: open failed" in result.stderr, result.stderr


def test_listeners_per_connection_are_bounded(host):
    """One connection asks for 100 hub-side listeners: the account's open-file
    cap (pam_limits) grants fewer than tunnelbot_max_open_files."""
    forwards = " ".join(f"-R 127.0.0.1:0:127.0.0.1:{20000 + i}" for i in range(100))
    result = host.run(SSH + f"-N -o ExitOnForwardFailure=no {forwards} tunnelbot@{HUB} & pid=$!; sleep 8; kill $pid")
    granted = result.stderr.count("Allocated port")
    assert 1 <= granted < MAX_OPEN_FILES, f"{granted} listeners granted"
    assert "remote port forwarding failed" in result.stderr


def test_connections_per_key_are_bounded(host, hub_host):
    """20 connections with the tunnel key, one after another (so that sshd's
    per-source limit on connections not yet logged in does not count): no
    more than tunnelbot_max_connections stay up, and the hub's log names
    the refusals."""
    since = hub_host.check_output("date +%s")
    ssh = SSH.replace("timeout 20", "timeout 90")
    script = (
        "cd $(mktemp -d) && for i in $(seq 20); do "
        f"{ssh} -N -o ExitOnForwardFailure=yes -R 127.0.0.1:0:127.0.0.1:22 tunnelbot@{HUB} 2>log.$i & "
        "sleep 0.4; done; "
        # Until each one is up or refused (slow on a loaded machine).
        "for t in $(seq 60); do [ $(grep -l -e 'Allocated port' -e 'closed' -e 'failed' log.* | wc -l) -ge 20 ] && break; "
        "sleep 1; done; grep -l 'Allocated port' log.* | wc -l; "
        f"pkill -u gateway -f 'tunnelbot@{HUB}'; cd /"
    )
    granted = int(host.check_output(f"bash -c {shlex.quote(script)}").split()[-1])
    assert 1 <= granted <= MAX_CONNECTIONS, f"{granted} connections granted"
    refusals = hub_host.check_output("journalctl -t hpcgw-tunnelbot --no-pager --since @%s", since)
    assert "tunnelbot_max_connections" in refusals


def test_unauthenticated_connections_per_source_are_bounded(host):
    """PerSourceMaxStartups: 26 TCP connections from the login node that never
    log in; sshd greets at most 16 (the burst) of them at once, the rest are closed."""
    probe = f"""
import socket, time
held, greeted = [], 0
for _ in range({PER_SOURCE + 10}):
    s = socket.create_connection(("{HUB}", 22), timeout=5)
    held.append(s)
    time.sleep(0.05)
for s in held:
    try:
        greeted += s.recv(64).startswith(b"SSH-")
    except OSError:
        pass
print(greeted)
"""
    greeted = int(host.check_output(f"timeout 60 python3 -c {shlex.quote(probe)}").strip())
    assert 1 <= greeted <= PER_SOURCE, f"{greeted} unauthenticated connections greeted"


def test_a_job_tunnel_keeps_room_for_the_hubs_connections(host, hub_host):
    """A job's connection (one -R, one -L) under the caps: the hub opens 30
    connections at once through its listener, and all reach the notebook's
    side (a web server on the login node's loopback)."""
    host.run_expect([0], "runuser -u gateway -- sh -c 'cd /tmp && (timeout 40 python3 -m http.server -b 127.0.0.1 18777 "
                    ">/dev/null 2>&1 &)'")
    tunnel = host.run(
        SSH + f"-N -o ExitOnForwardFailure=yes -R 127.0.0.1:0:127.0.0.1:18777 -L 127.0.0.1:18998:127.0.0.1:8081 "
        f"tunnelbot@{HUB} 2>/tmp/hpcgw-room.log & sleep 3; grep -o 'Allocated port [0-9]*' /tmp/hpcgw-room.log"
    )
    port = int(tunnel.stdout.split()[-1])
    probe = f"""
import socket
held = [socket.create_connection(("127.0.0.1", {port}), timeout=10) for _ in range(30)]
for s in held:
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
print(sum(s.recv(12).startswith(b"HTTP/1.0 200") for s in held))
"""
    try:
        answered = hub_host.check_output(f"timeout 30 python3 -c {shlex.quote(probe)}").strip()
    finally:
        host.run("pkill -u gateway -f 'tunnelbot@hub.gateway.test'; pkill -u gateway -f 'http.server -b 127.0.0.1 18777'")
    assert answered == "30"


def test_sshd_limits_in_the_effective_configuration(hub_host):
    effective = hub_host.check_output("sshd -T -C user=tunnelbot,host=cluster,addr=10.0.0.1").lower().splitlines()
    for setting in ("maxsessions 0", "clientaliveinterval 15", "clientalivecountmax 3", f"maxstartups {PER_SOURCE + 10}:30:{2 * (PER_SOURCE + 10)}",
                    f"persourcemaxstartups {PER_SOURCE}", "persourcenetblocksize 32:128", "usepam yes"):
        assert setting in effective, setting
