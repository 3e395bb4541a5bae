"""hpcgw-job (roles/gateway/files/hpcgw-job), the job wrapper, run for real
with stand-ins on PATH: a fake `ssh` that forwards -L to a local HTTP server
standing in for the hub API and prints the "Allocated port" line for -R; a
fake notebook that listens on its --port after a short delay. Each records
its argv, environment and pid in the test's folder.

No timing asserts: tests wait for events (with generous deadlines) and check
their order through markers.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

JOB = Path(__file__).resolve().parents[2] / "roles" / "gateway" / "files" / "hpcgw-job"
HUB_PORT = 40123  # what the fake ssh says the hub's sshd allocated
TOKEN = "tok-5e6f0c1d2a3b4c5d6e7f8091a2b3c4d5"
USER_ID = "u-2bd806c97f0e00af1a1f"

FAKE_SSH = """#!{python}
import json, os, signal, socket, sys, threading, time
here = {here!r}
mode = open(os.path.join(here, "ssh-mode")).read().strip()
record = {{"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid()}}
with open(os.path.join(here, "ssh.json.tmp"), "w") as out:
    json.dump(record, out)
os.rename(os.path.join(here, "ssh.json.tmp"), os.path.join(here, "ssh.json"))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if mode == "fail":
    sys.stderr.write("tunnelbot@hub.gateway.test: Permission denied (publickey).\\n")
    sys.exit(255)
if mode == "silent":
    time.sleep(60)
    sys.exit(0)
args = sys.argv[1:]
remote = args[args.index("-R") + 1].split(":")
local = args[args.index("-L") + 1].split(":")
listener = socket.create_server((local[0], int(local[1])))

def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass

def forward():
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection((local[2], int(local[3])))
        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

threading.Thread(target=forward, daemon=True).start()
sys.stderr.write("Allocated port {hub_port} for remote forward to %s:%s\\n" % (remote[2], remote[3]))
sys.stderr.flush()
while True:
    time.sleep(1)
"""

FAKE_NOTEBOOK = """#!{python}
import json, os, signal, socket, sys, time
here = {here!r}
mode = open(os.path.join(here, "notebook-mode")).read().strip()
port = int([a for a in sys.argv if a.startswith("--port=")][0].split("=", 1)[1])
record = {{"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd(), "pid": os.getpid()}}
with open(os.path.join(here, "notebook.json.tmp"), "w") as out:
    json.dump(record, out)
os.rename(os.path.join(here, "notebook.json.tmp"), os.path.join(here, "notebook.json"))

def terminated(*_):
    open(os.path.join(here, "notebook-terminated"), "w").close()
    sys.exit(0)

signal.signal(signal.SIGTERM, terminated)
if mode == "crash":
    sys.exit(3)
time.sleep(0.5)  # a report before the notebook listens would be seen by the hub
if mode == "never":
    time.sleep(60)
server = socket.create_server(("127.0.0.1", port))
open(os.path.join(here, "notebook-listening"), "w").close()
while True:
    client, _ = server.accept()
    client.close()
"""


class Hub(http.server.ThreadingHTTPServer):
    """Stands in for the hub's API: records each request, answers `status`."""

    daemon_threads = True

    def __init__(self, here: Path):
        self.here = here
        self.requests: list[dict] = []
        self.status = 200
        super().__init__(("127.0.0.1", 0), HubHandler)


class HubHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append({
            "path": self.path,
            "headers": dict(self.headers),
            "body": body.decode(),
            "notebook_listening": (self.server.here / "notebook-listening").exists(),
        })
        answer = json.dumps({"message": "ok" if self.server.status == 200 else "not a starting server"}).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_):
        pass


class Bed:
    """A tmp gateway root with fakes, a hub stand-in, and the wrapper."""

    def __init__(self, here: Path, hub: Hub):
        self.here = here
        self.hub = hub
        self.bin = here / "bin"
        self.bin.mkdir()
        self.users = here / "users"
        self.users.mkdir(mode=0o700)
        for name, text in (("ssh", FAKE_SSH), ("notebook", FAKE_NOTEBOOK)):
            path = self.bin / name
            path.write_text(text.format(python=sys.executable, here=str(here), hub_port=HUB_PORT))
            path.chmod(0o755)
        self.modes(ssh="ok", notebook="ok")
        self.config = {
            "hub_host": "hub.gateway.test", "hub_ssh_port": 2222, "hub_api_port": hub.server_address[1],
            "tunnel_user": "tunnelbot", "tunnel_key": str(here / "tunnel_key"),
            "known_hosts": str(here / "hub_known_hosts"), "users_dir": str(self.users),
            "notebook": {"command": [str(self.bin / "notebook")]}, "start_timeout": 20,
        }
        self.log = here / "job.log"
        self.process: subprocess.Popen | None = None

    def modes(self, ssh: str, notebook: str) -> None:
        (self.here / "ssh-mode").write_text(ssh)
        (self.here / "notebook-mode").write_text(notebook)

    def environment(self, **changes: str | None) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.here),
            "HPCGW_GATEWAY_CONFIG": str(self.here / "gateway.json"),
            "HPCGW_USER_ID": USER_ID,
            "SLURM_JOB_ID": "77",
            "JUPYTERHUB_API_TOKEN": TOKEN,
            "JUPYTERHUB_USER": "alice",
            "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice",
            "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
            "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
            "JUPYTERHUB_ACTIVITY_URL": "http://127.0.0.1:8081/hub/api/users/alice/activity",
            # The port report must never go through a proxy.
            "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
            "SECRET_OF_THE_GATEWAY": "not for notebooks",
        }
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def start(self, **env_changes: str | None) -> subprocess.Popen:
        (self.here / "gateway.json").write_text(json.dumps(self.config))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-I", str(JOB)], env=self.environment(**env_changes),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        return self.process

    def run(self, **env_changes: str | None) -> int:
        return self.start(**env_changes).wait(timeout=60)

    def wait_for(self, what, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = what()
            if value:
                return value
            if self.process is not None and self.process.poll() is not None:
                value = what()
                if value:
                    return value
                raise AssertionError(f"the wrapper exited {self.process.returncode}:\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out; log:\n{self.log_text()}")

    def reported(self) -> dict:
        return self.wait_for(lambda: self.hub.requests[0] if self.hub.requests else None)

    def record(self, name: str) -> dict | None:
        path = self.here / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for name in ("ssh", "notebook"):
            record = self.record(name)
            if record and alive(record["pid"]):
                os.kill(record["pid"], signal.SIGKILL)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture
def bed(tmp_path):
    hub = Hub(tmp_path)
    thread = threading.Thread(target=hub.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    bed = Bed(tmp_path, hub)
    yield bed
    bed.stop()
    hub.shutdown()
    hub.server_close()


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_reports_the_hub_port_once_the_notebook_listens_then_stops_on_sigterm(bed):
    wrapper = bed.start()
    report = bed.reported()

    # The port the hub's sshd allocated, reported only after the notebook listened.
    assert report["path"] == "/hub/api/hpcgw/port"
    assert json.loads(report["body"]) == {"port": HUB_PORT}
    assert report["notebook_listening"] is True
    assert report["headers"]["Authorization"] == f"token {TOKEN}"

    # One ssh, exactly the contract's options; the notebook and the API on loopback.
    ssh = bed.record("ssh")
    argv = ssh["argv"]
    notebook_port = int(option(argv, "-R").split(":")[3])
    api_port = int(option(argv, "-L").split(":")[1])
    assert argv[1:] == [
        "-N", "-T",
        "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={bed.config['known_hosts']}", "-o", "IdentitiesOnly=yes",
        "-i", bed.config["tunnel_key"], "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
        "-R", f"127.0.0.1:0:127.0.0.1:{notebook_port}",
        "-L", f"127.0.0.1:{api_port}:127.0.0.1:{bed.config['hub_api_port']}",
        "-p", "2222", "tunnelbot@hub.gateway.test",
    ]
    assert notebook_port != api_port

    user_dir = bed.users / USER_ID
    notebook = bed.record("notebook")
    assert notebook["argv"] == [str(bed.bin / "notebook"), "--ip=127.0.0.1", f"--port={notebook_port}"]
    assert notebook["cwd"] == str(user_dir)
    env = notebook["env"]
    assert env["HOME"] == str(user_dir)
    assert env["JUPYTERHUB_API_URL"] == f"http://127.0.0.1:{api_port}/hub/api"
    assert env["JUPYTERHUB_SERVICE_URL"] == f"http://127.0.0.1:{notebook_port}/user/alice/"
    assert env["JUPYTERHUB_ACTIVITY_URL"] == f"http://127.0.0.1:{api_port}/hub/api/users/alice/activity"
    assert env["JUPYTERHUB_API_TOKEN"] == TOKEN
    assert env["JUPYTERHUB_USER"] == "alice"
    assert env["JUPYTERHUB_CLIENT_ID"] == "jupyterhub-user-alice"
    assert env["SLURM_JOB_ID"] == "77"
    assert not {"SECRET_OF_THE_GATEWAY", "HPCGW_USER_ID", "HPCGW_GATEWAY_CONFIG", "http_proxy"} & set(env)
    assert user_dir.stat().st_mode & 0o777 == 0o700

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
    assert "SIGTERM" in log
    assert "Allocated port 40123" in log


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
    bed.config["notebook"] = {"command": "jupyterhub-singleuser"}
    bed.config["hub_api_port"] = "8081"
    assert bed.run() != 0
    assert "notebook.command" in bed.log_text()
    assert "hub_api_port" in bed.log_text()
    assert bed.record("ssh") is None
