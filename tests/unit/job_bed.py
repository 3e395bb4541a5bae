"""The job wrapper's test bed (tests/unit/test_gateway_job*.py): a tmp
gateway root with stand-ins on PATH for ssh, the container runtime and the
notebook, a stand-in for the hub's API, and the wrapper run for real. The
`bed` fixture is in conftest.py.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = Path(__file__).resolve().parents[2] / "roles" / "gateway" / "files" / "hpcgw-job"
HUB_PORT = 40123  # what the fake ssh says the hub's sshd allocated
TOKEN = "tok-5e6f0c1d2a3b4c5d6e7f8091a2b3c4d5"
USER_ID = "u-2bd806c97f0e00af1a1f"
PORT_SECRET = "sec-9f8e7d6c5b4a39281706f5e4d3c2b1a0"

FAKE_SSH = """#!{python}
import json, os, signal, socket, subprocess, sys, threading, time
here = {here!r}
mode = open(os.path.join(here, "ssh-mode")).read().strip()
# The tunnel (it has -R) records ssh.json; the hop a ProxyCommand runs, ssh-hop.json.
name = "ssh" if "-R" in sys.argv else "ssh-hop"
record = {{"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid()}}
with open(os.path.join(here, name + ".json.tmp"), "w") as out:
    json.dump(record, out)
os.rename(os.path.join(here, name + ".json.tmp"), os.path.join(here, name + ".json"))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if name == "ssh-hop":
    time.sleep(60)  # a relay to the hub's sshd, until the tunnel ends
    sys.exit(0)
# As ssh does: a ProxyCommand runs with /bin/sh ("exec <command>", %% -> %).
proxies = [a[len("ProxyCommand="):] for a in sys.argv if a.startswith("ProxyCommand=")]
if proxies:
    hop = subprocess.Popen(["/bin/sh", "-c", "exec " + proxies[0].replace("%%", "%")],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    deadline = time.time() + 10
    while not os.path.exists(os.path.join(here, "ssh-hop.json")) and time.time() < deadline:
        time.sleep(0.05)
if mode == "fail":
    sys.stderr.write("tunnelbot@hub.gateway.test: Permission denied (publickey).\\n")
    sys.exit(255)
if mode.startswith("flaky "):
    # "flaky <N|always> <exit status> <what ssh says>": fails the first N attempts (each one logged with its time).
    _, failures, status, said = mode.split(" ", 3)
    with open(os.path.join(here, "ssh-attempts"), "a") as out:
        out.write("%f\\n" % time.monotonic())
    if failures == "always" or len(open(os.path.join(here, "ssh-attempts")).read().split()) <= int(failures):
        sys.stderr.write(said + "\\n")
        sys.exit(int(status))
if mode == "silent":
    time.sleep(60)
    sys.exit(0)
args = sys.argv[1:]
remote = args[args.index("-R") + 1].split(":", 2)
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
sys.stderr.write("Allocated port {hub_port} for remote forward to %s\\n" % remote[2])
sys.stderr.flush()
while True:
    time.sleep(1)
"""

FAKE_NOTEBOOK = """#!{python}
import json, os, signal, socket, sys, time
here = {here!r}
mode = open(os.path.join(here, "notebook-mode")).read().strip()
sock_path = [a for a in sys.argv if a.startswith("--ServerApp.sock=")][0].split("=", 1)[1]
record = {{"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd(), "pid": os.getpid(),
          "sock": sock_path}}
with open(os.path.join(here, "notebook.json.tmp"), "w") as out:
    json.dump(record, out)
os.rename(os.path.join(here, "notebook.json.tmp"), os.path.join(here, "notebook.json"))

def terminated(*_):
    open(os.path.join(here, "notebook-terminated"), "w").close()
    sys.exit(0)

signal.signal(signal.SIGTERM, terminated)
if mode == "crash":
    sys.exit(3)
print("notebook starting", flush=True)
if mode == "forge":
    # What a hostile notebook writes to its stdout and to /proc/1/fd/1 (the same pipe here).
    sys.stdout.write("2026-01-01T00:00:00.000+0000 hpcgw-job: the hub accepted the port; FORGED\\n")
    sys.stdout.write("evil\\rhpcgw-job: FORGED2\\n")
    sys.stdout.flush()
if mode == "flood":
    chunk = ("x" * 1000 + "\\n") * 1000
    for _ in range(12):
        sys.stdout.write(chunk)
    sys.stdout.write("LAST LINE OF THE FLOOD\\n")
    sys.stdout.flush()
time.sleep(0.5)  # a report before the notebook listens would be seen by the hub
if mode == "never":
    time.sleep(60)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sock_path)
server.listen()
open(os.path.join(here, "notebook-listening"), "w").close()
if mode == "flood":
    sys.stdout.write("after the flood\\n")
    sys.stdout.flush()
while True:
    client, _ = server.accept()
    client.close()
"""


FAKE_RUNTIME = """#!{python}
import json, os, sys
here = {here!r}
args = sys.argv[1:]
with open(os.path.join(here, "runtime.json.tmp"), "w") as out:
    json.dump({{"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid()}}, out)
os.rename(os.path.join(here, "runtime.json.tmp"), os.path.join(here, "runtime.json"))
assert args[0] == "run", args
index = 1
binds = []
while args[index].startswith("--"):
    if args[index] == "--bind":
        binds.append(args[index + 1].split(":"))
    index += 2 if args[index] in ("--home", "--pwd", "--bind") else 1
command = args[index + 1:]
# A bind as the container sees it: its dest stands for its src.
for number, arg in enumerate(command):
    for src, dest, _mode in binds:
        if "=" + dest + "/" in arg:
            command[number] = arg.replace("=" + dest + "/", "=" + src + "/")
prefix = {prefix!r}
env = {{name[len(prefix):]: value for name, value in os.environ.items() if name.startswith(prefix)}}
env["HOME"] = "/home/user"
env["PATH"] = "/usr/bin:/bin"
os.chdir(args[args.index("--home") + 1].split(":")[0])
# The image's python3 (here: the test's), which runs the wrapper's launcher.
if command[0] == "python3":
    command[0] = {python!r}
os.execve(command[0], command, env)
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
    """A tmp gateway root with fakes, a hub stand-in, and the wrapper; the
    settings gateway.json and images.json (two images, a read-only bind) are
    written from `config` and `images` at start (images None: none)."""

    def __init__(self, here: Path, hub: Hub):
        self.here = here
        self.hub = hub
        self.bin = here / "bin"
        self.bin.mkdir()
        self.users = here / "users"
        self.users.mkdir(mode=0o700)
        self.logs = here / "logs"  # the gateway role makes it; the gate each user's folder in it
        self.logs.mkdir(mode=0o700)
        for name, text in (("ssh", FAKE_SSH), ("notebook", FAKE_NOTEBOOK), ("apptainer", FAKE_RUNTIME)):
            path = self.bin / name
            path.write_text(text.format(python=sys.executable, here=str(here), hub_port=HUB_PORT,
                                        prefix="APPTAINERENV_"))
            path.chmod(0o755)
        self.modes(ssh="ok", notebook="ok")
        self.config = {
            "hub_host": "hub.gateway.test", "hub_ssh_port": 2222, "hub_api_port": hub.server_address[1],
            "tunnel_user": "tunnelbot", "tunnel_key": str(here / "tunnel_key"),
            "known_hosts": str(here / "hub_known_hosts"), "users_dir": str(self.users),
            "start_timeout": 20,
        }
        for name in ("notebook", "other"):
            (here / f"{name}.sif").write_bytes(b"SIF")
        self.images: dict | None = {
            "runtime": str(self.bin / "apptainer"), "runtime_kind": "apptainer",
            "images": [{"name": name, "label": name, "description": "", "path": str(here / f"{name}.sif"),
                        "command": [str(self.bin / "notebook")]} for name in ("notebook", "other")],
            "binds": [{"src": "/data", "dest": "/datasets", "mode": "ro"}],
            "gpu_flag": "--nv",
        }
        self.log = here / "job.log"
        # The node's TMPDIR, where the job folder is made: short (a Unix
        # socket's path has at most 107 bytes; pytest's tmp_path is long).
        self.tmp = Path(tempfile.mkdtemp(prefix="jb-"))
        self.process: subprocess.Popen | None = None

    def modes(self, ssh: str, notebook: str) -> None:
        (self.here / "ssh-mode").write_text(ssh)
        (self.here / "notebook-mode").write_text(notebook)

    def environment(self, **changes: str | None) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.here),
            "TMPDIR": str(self.tmp),
            "HPCGW_GATEWAY_CONFIG": str(self.here / "gateway.json"),
            "HPCGW_USER_ID": USER_ID,
            "SLURM_JOB_ID": "77",
            "JUPYTERHUB_API_TOKEN": TOKEN,
            "HPCGW_PORT_SECRET": PORT_SECRET,
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
        (self.here / "images.json").unlink(missing_ok=True)
        if self.images is not None:
            (self.here / "images.json").write_text(json.dumps(self.images))
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
        for name in ("ssh", "ssh-hop", "notebook"):
            record = self.record(name)
            if record and alive(record["pid"]):
                os.kill(record["pid"], signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def option(argv: list[str], flag: str) -> str:
    """The value after `flag` in an argv."""
    return argv[argv.index(flag) + 1]


def direct_argv(bed, argv: list[str]) -> list[str]:
    """The tunnel's ssh arguments (after "ssh") for a node that reaches the
    hub directly: the strict options, -R to this job's socket, -L to the
    hub's API on the port the wrapper chose (read back from argv)."""
    notebook_socket = option(argv, "-R").split(":", 2)[2]
    api_port = int(option(argv, "-L").split(":")[1])
    return [
        "-N", "-T",
        "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={bed.config['known_hosts']}", "-o", "ConnectTimeout=20",
        "-o", "IdentitiesOnly=yes", "-i", bed.config["tunnel_key"],
        "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
        "-R", f"127.0.0.1:0:{notebook_socket}",
        "-L", f"127.0.0.1:{api_port}:127.0.0.1:{bed.config['hub_api_port']}",
        "-p", "2222", "tunnelbot@hub.gateway.test",
    ]
