"""hpcgw-hop (roles/gateway/files/hpcgw-hop), the forced command of the
tunnel key's line on the login node: it relays the session's stdin and
stdout to the hub's sshd (here: a local TCP server standing in for it),
byte for byte in both directions, to the target of its own command line
only, and says on stderr why it cannot."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import threading

import pytest

HOP = pathlib.Path(__file__).resolve().parents[2] / "roles" / "gateway" / "files" / "hpcgw-hop"


@pytest.fixture
def sshd():
    """A stand-in for the hub's sshd: greets, then echoes what it gets, reversed, until EOF."""
    server = socket.create_server(("127.0.0.1", 0))
    seen = {}

    def serve():
        client, peer = server.accept()
        seen["peer"] = peer
        client.sendall(b"SSH-2.0-OpenSSH_standin\r\n")
        received = b""
        while chunk := client.recv(65536):
            received += chunk
        seen["received"] = received
        client.sendall(received[::-1])
        client.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    server.close()


def run_hop(*args, data=b"", env=None):
    return subprocess.run([sys.executable, "-I", str(HOP), *args], input=data, capture_output=True, timeout=30,
                          env=env)


def test_relays_both_ways_byte_for_byte(sshd):
    port, seen = sshd
    payload = os.urandom(300_000)  # binary, more than one read
    done = run_hop("127.0.0.1", str(port), data=payload)
    assert done.returncode == 0, done.stderr
    assert seen["received"] == payload
    assert done.stdout == b"SSH-2.0-OpenSSH_standin\r\n" + payload[::-1]


def test_the_client_cannot_choose_the_target(sshd):
    """sshd hands a client's command to a forced command only in SSH_ORIGINAL_COMMAND: ignored."""
    port, seen = sshd
    env = dict(os.environ, SSH_ORIGINAL_COMMAND="hpcgw-hop 127.0.0.1 22")
    done = run_hop("127.0.0.1", str(port), data=b"x", env=env)
    assert done.returncode == 0
    assert seen["received"] == b"x"


@pytest.mark.parametrize("args", [(), ("127.0.0.1",), ("127.0.0.1", "22", "extra"), ("127.0.0.1", "0"),
                                  ("127.0.0.1", "65536"), ("127.0.0.1", "ssh"), ("-oProxyCommand=x", "22"),
                                  ("hub host", "22")])
def test_bad_command_lines_connect_nowhere(args):
    done = run_hop(*args)
    assert done.returncode == 1
    assert b"usage: hpcgw-hop" in done.stderr
    assert done.stdout == b""


def test_an_unreachable_hub_is_named_on_stderr():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        done = run_hop("127.0.0.1", str(port))
    assert done.returncode == 1
    assert f"cannot reach the hub's sshd at 127.0.0.1 port {port}".encode() in done.stderr
