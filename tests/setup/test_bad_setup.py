"""Bad setup gets a clear message, not a stack trace, and leftovers of an
interrupted run are cleaned up instead of being fatal.

These drive the real test bed scripts and playbooks against the local Docker
engine (make test runs them after `make images`, before molecule).
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TESTBED = REPO / "tests" / "testbed"
NAME = "setupcheck"  # a test bed of its own, next to molecule's and the demo's


def run(*argv, env=None):
    return subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def playbook(name, *extra):
    return run("ansible-playbook", str(TESTBED / name), "-e", f"testbed_name={NAME}", *extra)


def containers():
    out = run("docker", "ps", "-a", "--filter", f"name=hpcgw-{NAME}-", "--format", "{{.Names}} {{.State}}")
    return dict(line.split() for line in out.stdout.splitlines())


@pytest.fixture
def clean_testbed():
    yield
    playbook("down.yml", "-e", "testbed_keep_state=false")


def test_too_little_disk_is_named(tmp_path):
    result = run(str(TESTBED / "host-setup.sh"), env={"HPCGW_MIN_FREE_GB": "999999"})
    assert result.returncode == 1
    assert "GB free under" in result.stderr and "needs 999999 GB" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_docker_engine_is_named():
    result = run(str(TESTBED / "build-images.sh"), "hub", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert result.returncode == 1
    assert "no docker engine answers" in result.stderr


def test_unknown_image_is_named():
    result = run(str(TESTBED / "build-images.sh"), "frontend")
    assert result.returncode == 1
    assert "unknown image 'frontend'" in result.stderr


def test_taken_port_fails_before_any_container(clean_testbed):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = playbook("up.yml", "-e", f"testbed_publish_hub_https=127.0.0.1:{port}")
    assert result.returncode != 0
    assert f"Port 127.0.0.1:{port} is taken" in result.stdout
    assert containers() == {}


def test_leftovers_of_an_interrupted_run_are_replaced(clean_testbed):
    # An interrupted run: a stopped container and its network are left behind.
    run("docker", "network", "create", f"hpcgw-{NAME}")
    made = run("docker", "create", "--name", f"hpcgw-{NAME}-services", "--network", f"hpcgw-{NAME}", "hpcgw/services:latest")
    assert made.returncode == 0, made.stderr
    result = playbook("up.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert containers() == {f"hpcgw-{NAME}-{role}": "running"
                            for role in ("hub", "cluster", "compute1", "compute2", "services")}
    # A second run finds it all in place and changes nothing.
    again = playbook("up.yml")
    assert again.returncode == 0
    assert "changed=0" in again.stdout
