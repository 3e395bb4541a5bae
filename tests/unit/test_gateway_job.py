"""hpcgw-job (roles/gateway/files/hpcgw-job), the job wrapper, run for real
with stand-ins on PATH: a fake `ssh` that forwards -L to a local HTTP server
standing in for the hub API and prints the "Allocated port" line for -R; a
fake container runtime (`apptainer`, named in the bed's images.json) that
does what `run --cleanenv --home` does and runs the wrapper's launcher; a
fake notebook that listens on its --ServerApp.sock after a short delay. Each records
its argv, environment and pid in the test's folder.

No timing asserts: tests wait for events (with generous deadlines) and check
their order through markers.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from job_bed import HUB_PORT, PORT_SECRET, TOKEN, USER_ID, alive, direct_argv, option


def test_reports_the_hub_port_once_the_notebook_listens_then_stops_on_sigterm(bed):
    wrapper = bed.start()
    report = bed.reported()

    # The port the hub's sshd allocated, reported only after the notebook listened.
    assert report["path"] == "/hub/api/hpcgw/port"
    assert json.loads(report["body"]) == {"port": HUB_PORT}
    assert report["notebook_listening"] is True
    assert report["headers"]["Authorization"] == f"token {TOKEN}"
    assert report["headers"]["X-Hpcgw-Port-Secret"] == PORT_SECRET

    # One ssh, exactly the contract's options; the notebook on its socket, the API on loopback.
    ssh = bed.record("ssh")
    argv = ssh["argv"]
    notebook_socket = option(argv, "-R").split(":", 2)[2]
    api_port = int(option(argv, "-L").split(":")[1])
    assert argv[1:] == direct_argv(bed, argv)
    job_dir = os.path.dirname(notebook_socket)
    assert os.path.dirname(job_dir) == str(bed.tmp) and os.path.basename(notebook_socket) == "notebook.sock"

    user_dir = bed.users / USER_ID
    notebook = bed.record("notebook")
    # (the fake runtime maps the bind's dest /hpcgw-job back to the job folder)
    assert notebook["argv"] == [str(bed.bin / "notebook"), f"--ServerApp.sock={notebook_socket}",
                                "--ServerApp.sock_mode=0600", "--KernelManager.transport=ipc"]
    assert notebook["cwd"] == str(user_dir)
    env = notebook["env"]
    assert env["HOME"] == "/home/user"
    assert env["JUPYTERHUB_API_URL"] == f"http://127.0.0.1:{api_port}/hub/api"
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:8888/user/alice/"
    assert env["JUPYTER_RUNTIME_DIR"] == "/tmp/jupyter-runtime"
    assert env["JUPYTERHUB_ACTIVITY_URL"] == f"http://127.0.0.1:{api_port}/hub/api/users/alice/activity"
    assert env["JUPYTERHUB_API_TOKEN"] == TOKEN
    assert env["JUPYTERHUB_USER"] == "alice"
    assert env["JUPYTERHUB_CLIENT_ID"] == "jupyterhub-user-alice"
    assert env["SLURM_JOB_ID"] == "77"
    assert not {"SECRET_OF_THE_GATEWAY", "HPCGW_USER_ID", "HPCGW_GATEWAY_CONFIG", "http_proxy"} & set(env)
    assert user_dir.stat().st_mode & 0o777 == 0o700
    assert os.stat(job_dir).st_mode & 0o777 == 0o700

    # The token goes in the header only: not to ssh, not in any argv, not in the log.
    assert TOKEN not in json.dumps(ssh)
    assert TOKEN not in " ".join(notebook["argv"])

    # scancel: SIGTERM to the wrapper stops both.
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 0
    assert (bed.here / "notebook-terminated").exists()
    assert not alive(ssh["pid"])
    assert not alive(notebook["pid"])
    log = bed.log_text()
    assert TOKEN not in log
    assert PORT_SECRET not in log
    assert "SIGTERM" in log
    assert "Allocated port 40123" in log
    # The job folder (and the socket in it) is gone with the job.
    assert not os.path.exists(job_dir)


def test_sigint_stops_both_too(bed):
    wrapper = bed.start()
    bed.reported()
    wrapper.send_signal(signal.SIGINT)
    assert wrapper.wait(timeout=30) == 0
    assert not alive(bed.record("ssh")["pid"])
    assert not alive(bed.record("notebook")["pid"])


def test_when_the_tunnel_dies_the_notebook_is_stopped(bed):
    wrapper = bed.start()
    bed.reported()
    os.kill(bed.record("ssh")["pid"], signal.SIGKILL)
    assert wrapper.wait(timeout=30) != 0
    assert (bed.here / "notebook-terminated").exists()
    assert not alive(bed.record("notebook")["pid"])
    assert "tunnel" in bed.log_text()


def test_when_the_notebook_ends_the_tunnel_is_closed(bed):
    wrapper = bed.start()
    bed.reported()
    os.kill(bed.record("notebook")["pid"], signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 0
    assert not alive(bed.record("ssh")["pid"])


def test_a_refused_report_stops_everything(bed):
    bed.hub.status = 403
    assert bed.run() != 0
    assert len(bed.hub.requests) == 1
    assert not alive(bed.record("ssh")["pid"])
    assert not alive(bed.record("notebook")["pid"])
    assert "403" in bed.log_text()
    assert "not a starting server" in bed.log_text()


def test_a_notebook_that_fails_to_start_ends_the_job(bed):
    bed.modes(ssh="ok", notebook="crash")
    assert bed.run() != 0
    assert bed.hub.requests == []
    assert not alive(bed.record("ssh")["pid"])
    assert "exited 3" in bed.log_text()


def test_a_notebook_that_never_listens_times_out(bed):
    bed.modes(ssh="ok", notebook="never")
    bed.config["start_timeout"] = 1
    assert bed.run() != 0
    assert bed.hub.requests == []
    assert not alive(bed.record("notebook")["pid"])
    assert "did not listen" in bed.log_text()


def stopped_or_never_started(record):
    return record is None or not alive(record["pid"])


def test_a_failed_tunnel_ends_the_job_and_the_notebook_started_beside_it(bed):
    bed.modes(ssh="fail", notebook="ok")
    assert bed.run() != 0
    assert stopped_or_never_started(bed.record("notebook"))
    assert "Permission denied (publickey)" in bed.log_text()


def test_no_allocated_port_times_out(bed):
    bed.modes(ssh="silent", notebook="ok")
    bed.config["start_timeout"] = 1
    assert bed.run() != 0
    assert stopped_or_never_started(bed.record("notebook"))
    assert not alive(bed.record("ssh")["pid"])
    assert "allocated no port" in bed.log_text()


@pytest.mark.parametrize(
    "user_id",
    [None, "", "alice", "u-2bd806c97f0e00af1a1", "u-2bd806c97f0e00af1a1f0", "u-2BD806C97F0E00AF1A1F",
     "u-2bd806c97f0e00af1a1g", "../u-2bd806c97f0e00af1a1f", "u-2bd806c97f0e00af1a1f/..", "u-2bd806c97f0e00af1a1f\n"],
    ids=repr,
)
def test_bad_user_ids_are_refused_before_anything_runs(bed, user_id):
    assert bed.run(HPCGW_USER_ID=user_id) != 0
    assert "HPCGW_USER_ID" in bed.log_text()
    assert bed.record("ssh") is None
    assert list(bed.users.iterdir()) == []


@pytest.mark.parametrize("missing", ["JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER", "JUPYTERHUB_SERVICE_PREFIX"])
def test_missing_hub_environment_is_named(bed, missing):
    assert bed.run(**{missing: None}) != 0
    assert missing in bed.log_text()
    assert bed.record("ssh") is None


def test_bad_settings_are_named(bed):
    bed.config["users_dir"] = ""
    bed.config["hub_api_port"] = "8081"
    assert bed.run() != 0
    assert "users_dir must be a non-empty string" in bed.log_text()
    assert "hub_api_port" in bed.log_text()
    assert bed.record("ssh") is None


def test_without_images_nothing_starts(bed):
    """All hub users share the gateway account: a notebook outside a
    container could read every user's folder and the tunnel key."""
    bed.images = None
    assert bed.run() != 0
    assert f"no image settings {bed.here / 'images.json'}: notebooks run only in a container" in bed.log_text()
    assert bed.record("ssh") is None
    assert bed.record("notebook") is None
    assert list(bed.users.iterdir()) == []
