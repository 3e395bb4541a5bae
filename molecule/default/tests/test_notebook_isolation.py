"""Two hub users on one shared `gateway` account: the container keeps them apart.

Both notebooks run at once as Slurm jobs of `gateway`, each in its Apptainer
image (`--containall --cleanenv`, the user's folder as HOME). Everything below
is looked at from inside A's kernel, over the public wss:// URL, as a user
would; what A must not see is first read on the hosts as root, so that each
check compares against the real thing. The site's datasets folder is bound
read-only (apptainer_images_binds in the test inventory).
"""

from __future__ import annotations

import ast
import json
import time
import uuid

import pytest
from conftest import HubUser, browser_session, globus_login, job_node, slurm_jobs
from test_spawn import job_of, run_in_kernel

from hpcgw_hub.spawner import user_id

# Spawns on the cluster: with the other spawn tests, on one worker (conftest.py).
pytestmark = pytest.mark.xdist_group("hub")

GATEWAY_ROOT = "/home/gateway/hpcgw"

# Run in A's kernel: what the notebook can see of the machine, as JSON.
LOOK_AROUND = r"""
import errno, json, os, pathlib
def listable(p):
    try:
        return sorted(os.listdir(p))
    except OSError as e:
        return type(e).__name__
def written(p):
    try:
        pathlib.Path(p).write_text('x')
        return 'written'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
procs = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        procs.append(pathlib.Path(f'/proc/{pid}/cmdline').read_bytes().replace(b'\0', b' ').decode())
    except OSError:
        pass
json.dumps({
    'home': os.environ.get('HOME'), 'cwd': os.getcwd(), 'procs': procs,
    'environ': dict(os.environ),
    'peer_folder': listable(PEER_FOLDER), 'users_root': listable(USERS_ROOT),
    'gateway_ssh': listable('/home/gateway/.ssh'), 'tunnel_key': listable(TUNNEL_KEY_DIR),
    'home_gateway': listable('/home/gateway'),
    'dataset': pathlib.Path('/datasets/README.txt').read_text(), 'dataset_host_path': listable('/srv/datasets'),
    'dataset_write': written('/datasets/written-by-a-notebook'),
    'jupyterhub': __import__('jupyterhub').__version__,
    'image': pathlib.Path('/etc/hpcgw-test-image').read_text().strip()
             if pathlib.Path('/etc/hpcgw-test-image').exists() else None,
})
"""


def look_around(testbed, ca, user, token, peer_id):
    code = (f"PEER_FOLDER = {GATEWAY_ROOT + '/users/' + peer_id!r}\n"
            f"USERS_ROOT = {GATEWAY_ROOT + '/users'!r}\n"
            f"TUNNEL_KEY_DIR = {GATEWAY_ROOT + '/keys'!r}\n" + LOOK_AROUND)
    # The kernel's result is the repr() of the JSON string.
    return json.loads(ast.literal_eval(run_in_kernel(testbed, ca, user, token, code)))


def job_script(cluster_host, job: str) -> str:
    return cluster_host.check_output(f"scontrol write batch_script {job} -")


def exported(script: str, name: str) -> str:
    import shlex

    for line in script.splitlines():
        if line.startswith(f"export {name}="):
            return shlex.split(line.split("=", 1)[1])[0]
    raise AssertionError(f"{name} not in the batch script")


def hub_secrets(hub_host) -> list[str]:
    out = hub_host.check_output("cat /etc/jupyterhub/secrets/*.env")
    return [line.split("=", 1)[1] for line in out.splitlines() if "=" in line and len(line.split("=", 1)[1]) >= 16]


@pytest.fixture
def own_browser(testbed, public_ca_bundle):
    """A hub user in a browser of their own (two users at once need two)."""
    sessions = []

    def make(identity: str) -> HubUser:
        browser = browser_session(public_ca_bundle)
        sessions.append(browser)
        assert globus_login(browser, testbed, identity).status_code == 200
        return HubUser(browser, testbed, identity.split("@")[0])

    yield make
    for browser in sessions:
        browser.close()


@pytest.fixture
def two_notebooks(own_browser):
    frank, grace = own_browser("frank@uchicago.edu"), own_browser("grace@uchicago.edu")
    try:
        for user in (frank, grace):
            reply = user.start(options={"image": "notebook"})
            assert reply.status_code in (201, 202), reply.text
        yield frank, grace
    finally:
        for user in (frank, grace):
            user.stop()


@pytest.fixture
def two_notebooks_on_one_node(two_notebooks, cluster_host):
    """The attacks below need both jobs on one node: the same loopback."""
    nodes = {job_node(cluster_host, job_of(cluster_host, user)) for user in ("frank", "grace")}
    assert nodes == {"compute1"}, nodes
    return two_notebooks


def test_a_notebook_sees_nothing_of_anothers_or_of_the_gateway(two_notebooks, testbed, public_ca_bundle,
                                                                 cluster_host, job_host, hub_host):
    frank, grace = two_notebooks
    frank_job, grace_job = job_of(cluster_host, "frank"), job_of(cluster_host, "grace")
    assert slurm_jobs(cluster_host)[frank_job][1:] == ("gateway", "RUNNING")
    assert slurm_jobs(cluster_host)[grace_job][1:] == ("gateway", "RUNNING")
    # Both on one compute node (their profile's partition has one): what
    # frank's kernel sees of the node is where grace's notebook runs.
    assert job_node(cluster_host, frank_job) == job_node(cluster_host, grace_job) == "compute1"
    node = job_host(frank_job)
    grace_id = user_id("grace")
    # What there is to hide, read as root on the hosts.
    assert cluster_host.file(f"{GATEWAY_ROOT}/users/{grace_id}").is_directory
    assert cluster_host.file("/home/gateway/.ssh").is_directory
    grace_token = exported(job_script(cluster_host, grace_job), "JUPYTERHUB_API_TOKEN")
    # Frank's own port secret (issue 15): his job has it, his container must not.
    frank_port_secret = exported(job_script(cluster_host, frank_job), "HPCGW_PORT_SECRET")
    # Two notebook servers run on the node, both as gateway.
    servers = node.check_output("pgrep -u gateway -f jupyterhub-singleuser").split()
    assert len(servers) >= 2, servers

    seen = look_around(testbed, public_ca_bundle, "frank", frank.token(), grace_id)

    assert seen["home"] == seen["cwd"] == "/home/user"
    # Frank's kernel sees its own server (and itself), not Grace's.
    assert sum("jupyterhub-singleuser" in cmd for cmd in seen["procs"]) == 1, seen["procs"]
    assert not any(grace_id in cmd for cmd in seen["procs"]), seen["procs"]
    assert not any("ssh" in cmd.split(" ")[0] for cmd in seen["procs"]), seen["procs"]
    assert seen["peer_folder"] == seen["users_root"] == "FileNotFoundError"
    assert seen["gateway_ssh"] == seen["tunnel_key"] == "FileNotFoundError"
    # The site's datasets (apptainer_images_binds): readable at their dest,
    # read-only although gateway may write the folder on the host.
    assert seen["dataset"] == node.file("/srv/datasets/README.txt").content_string
    assert seen["dataset_write"] == "EROFS"
    assert seen["dataset_host_path"] == "FileNotFoundError"
    assert node.run("runuser -u gateway -- test -w /srv/datasets").rc == 0
    assert not node.file("/srv/datasets/written-by-a-notebook").exists
    values = set(seen["environ"].values())
    assert grace_token not in values
    assert not any(frank_port_secret in value for value in values)
    for secret in hub_secrets(hub_host):
        assert not any(secret in value for value in values)
    # Its own token is there (the notebook needs it); the job's Slurm variables
    # are passed on purpose (docs/spawning.md); the wrapper's own and ssh's are not.
    assert "JUPYTERHUB_API_TOKEN" in seen["environ"]
    leaked = sorted(name for name in seen["environ"] if name.startswith(("HPCGW_", "SSH_")))
    assert not leaked, leaked


def test_a_file_written_in_a_notebook_is_there_after_stop_and_start(hub_user, testbed, public_ca_bundle):
    frank = hub_user("frank@uchicago.edu")
    words = uuid.uuid4().hex
    try:
        assert frank.start().status_code in (201, 202)
        write = f"open('kept.txt', 'w').write({words!r})"
        assert run_in_kernel(testbed, public_ca_bundle, "frank", frank.token(), write) == str(len(words))
        frank.stop()
        assert frank.start().status_code in (201, 202)
        read = "open('/home/user/kept.txt').read()"
        assert run_in_kernel(testbed, public_ca_bundle, "frank", frank.token(), read) == repr(words)
    finally:
        frank.stop()


@pytest.mark.parametrize("image, marker", [("notebook", None), ("notebook-marked", "notebook-marked")])
def test_the_notebook_runs_in_the_image_asked_for(hub_user, testbed, public_ca_bundle, hub_host, image, marker):
    grace = hub_user("grace@uchicago.edu")
    hubs = hub_host.check_output("/opt/jupyterhub/bin/python -c 'import jupyterhub; print(jupyterhub.__version__)'")
    try:
        assert grace.start(options={"image": image}).status_code in (201, 202)
        seen = look_around(testbed, public_ca_bundle, "grace", grace.token(), user_id("frank"))
        assert seen["image"] == marker
        # The default image definition installs the hub's JupyterHub.
        assert seen["jupyterhub"] == hubs
    finally:
        grace.stop()


# --- Two notebooks on one compute node, attacked from one kernel (issue 15) ---
# The test profiles' partitions have one node (compute1): frank's and grace's
# jobs share it, its network namespace (loopback, /proc/net) and the gateway
# uid (two_notebooks_on_one_node checks it). Frank attacks.

# Run in frank's kernel: for SECONDS, every listener on the node's loopback
# (TCP from /proc/net/tcp*, which is the node's: shared netns) and every Unix
# socket of /proc/net/unix gets a ZMQ SUB subscribed to everything (a
# kernel's IOPub needs no key) and an HTTP GET of grace's notebook API.
SNIFF = r"""
import json, os, socket, time, zmq
def tcp_listeners():
    found = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, port = local.split(':')
            if state == '0A' and host in ('0100007F', '00000000000000000000000001000000'):
                found.add(int(port, 16))
    return found
def unix_paths():
    paths = set()
    for line in open('/proc/net/unix').read().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7].startswith('/'):
            paths.add(fields[7])
    return paths
def http_get(connect, target):
    try:
        with connect() as s:
            s.settimeout(2)
            s.sendall(f'GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n'.encode())
            return s.recv(4096).decode('latin-1')
    except OSError as e:
        return type(e).__name__
def tcp(port):
    return lambda: socket.create_connection(('127.0.0.1', port), timeout=2)
def unix(path):
    def connect():
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        s.connect(path)
        return s
    return connect
ctx = zmq.Context()
poller = zmq.Poller()
subscribed, answers, messages = set(), {}, []
deadline = time.monotonic() + SECONDS
while time.monotonic() < deadline:
    endpoints = {f'tcp://127.0.0.1:{p}': tcp(p) for p in tcp_listeners() - {OWN_API_PORT}}
    endpoints.update({f'ipc://{p}': unix(p) for p in unix_paths()})
    for endpoint, connect in endpoints.items():
        if endpoint in subscribed:
            continue
        subscribed.add(endpoint)
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b'')
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(endpoint)
        poller.register(sub, zmq.POLLIN)
        answers[endpoint] = http_get(connect, PEER_API)[:200]
    for sock, _ in poller.poll(200):
        messages.append(b' '.join(sock.recv_multipart()).decode('utf-8', 'replace')[:2000])
json.dumps({'endpoints': sorted(subscribed), 'answers': answers, 'messages': messages})
"""


def tunnel_line(cluster_host, user: str, job: str) -> str:
    """The wrapper's 'tunnel up' line of a user's job: the hub port and what it leads to."""
    log = f"{GATEWAY_ROOT}/logs/{user_id(user)}/{job}.log"
    for _ in range(40):
        for line in cluster_host.check_output(f"cat {log}").splitlines():
            if "hpcgw-job: tunnel up: hub 127.0.0.1:" in line:
                return line.split("tunnel up: hub 127.0.0.1:", 1)[1]
        time.sleep(0.5)
    raise AssertionError(f"no 'tunnel up' line in {log}")


def test_a_kernel_cannot_read_or_reach_another_users_kernel_or_server(two_notebooks_on_one_node, testbed,
                                                                     public_ca_bundle, cluster_host):
    import concurrent.futures

    frank, grace = two_notebooks_on_one_node
    frank_token, grace_token = frank.token(), grace.token()
    marker = uuid.uuid4().hex
    own_api_port = int(tunnel_line(cluster_host, "frank", job_of(cluster_host, "frank")).split(", 127.0.0.1:")[1]
                       .split(" ")[0])
    code = f"SECONDS = 25\nOWN_API_PORT = {own_api_port}\nPEER_API = '/user/grace/api'\n" + SNIFF
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sniffing = pool.submit(run_in_kernel, testbed, public_ca_bundle, "frank", frank_token, code)
        time.sleep(6)
        # Grace works meanwhile: a kernel of hers runs code and prints the marker.
        printed = run_in_kernel(testbed, public_ca_bundle, "grace", grace_token,
                                f"import time\nfor _ in range(40):\n    print('{marker}', flush=True)\n"
                                "    time.sleep(0.25)\n'done'")
        assert printed == "'done'"
        seen = json.loads(ast.literal_eval(sniffing.result(timeout=120)))
    assert seen["endpoints"], "the probe found no listener at all (its own kernel's at least)"
    # Nothing grace's kernel sent (her code, her output) reached frank.
    assert not [m for m in seen["messages"] if marker in m], [m[:300] for m in seen["messages"] if marker in m]
    # No listener frank can reach answers as grace's notebook server.
    reached = {e: a for e, a in seen["answers"].items() if a.startswith("HTTP/") and " 200 " in a.split("\r\n")[0]}
    assert not reached, reached


def test_a_kernel_cannot_take_or_reach_the_listener_of_anothers_tunnel(two_notebooks_on_one_node, testbed,
                                                                      public_ca_bundle, cluster_host):
    frank, grace = two_notebooks_on_one_node
    frank_token, grace_token = frank.token(), grace.token()
    # Where grace's tunnel leads on the node (read as root from her job's log).
    target = tunnel_line(cluster_host, "grace", job_of(cluster_host, "grace")).split(" -> ", 1)[1].split(",")[0]
    attack = r"""
import json, os, socket
def attempt(family, address, action):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        if action == 'bind':
            if family == socket.AF_UNIX:
                os.makedirs(os.path.dirname(address), exist_ok=True)
            s.bind(address)
            s.listen()
            STOLEN.append(s)
            return 'bound'
        s.connect(address)
        s.close()
        return 'connected'
    except OSError as e:
        s.close()
        return type(e).__name__
STOLEN = []
if TARGET.startswith('/'):
    family, address = socket.AF_UNIX, TARGET
else:
    family, address = socket.AF_INET, (TARGET.split(':')[0], int(TARGET.split(':')[1]))
json.dumps({'connect': attempt(family, address, 'connect'), 'bind': attempt(family, address, 'bind')})
"""
    seen = json.loads(ast.literal_eval(run_in_kernel(testbed, public_ca_bundle, "frank", frank_token,
                                                    f"TARGET = {target!r}\n" + attack)))
    # Frank cannot reach what grace's tunnel leads to. (Binding the same path
    # in his own container's /tmp, if he does, is his own folder, not hers.)
    assert seen["connect"] != "connected", (target, seen)
    assert seen["bind"] != "bound" or target.startswith("/"), (target, seen)
    # And the hub still sends /user/grace/ to grace's own server.
    me = run_in_kernel(testbed, public_ca_bundle, "grace", grace_token, "import os; os.environ['JUPYTERHUB_USER']")
    assert me == "'grace'"


PORT_REPORT_CONFIG = r'''
# Written by the isolation test: runs when the notebook server starts and
# reports another server's port with this server's own API token.
import json, os, threading, time, urllib.error, urllib.request

def report():
    url = os.environ["JUPYTERHUB_API_URL"] + "/hpcgw/port"
    body = json.dumps({"port": PEER_PORT}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"], "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with opener.open(request, timeout=5) as reply:
                status = reply.status
        except urllib.error.HTTPError as error:
            status = error.code
        except OSError:
            time.sleep(0.05)
            continue
        with open(os.path.expanduser("~/port-report-attempt.json"), "w") as out:
            json.dump({"status": status}, out)
        return

threading.Thread(target=report, daemon=True).start()
'''


def test_code_in_the_container_cannot_report_the_port(own_browser, testbed, public_ca_bundle, cluster_host):
    frank, grace = own_browser("frank@uchicago.edu"), own_browser("grace@uchicago.edu")
    frank_folder = f"{GATEWAY_ROOT}/users/{user_id('frank')}"
    try:
        for user in (frank, grace):
            assert user.start(options={"image": "notebook"}).status_code in (201, 202)
        grace_port = int(tunnel_line(cluster_host, "grace", job_of(cluster_host, "grace")).split(" ", 1)[0])
        # Frank's own config (his folder: he may write it) reports grace's port
        # at his server's next start, before his wrapper can.
        config = PORT_REPORT_CONFIG.replace("PEER_PORT", str(grace_port))
        write = (f"import os; os.makedirs('/home/user/.jupyter', exist_ok=True); "
                 f"open('/home/user/.jupyter/jupyter_server_config.py', 'w').write({config!r})")
        assert run_in_kernel(testbed, public_ca_bundle, "frank", frank.token(), write) == str(len(config))
        frank.stop()
        frank.start(options={"image": "notebook"})
        attempt = cluster_host.run(f"cat {frank_folder}/port-report-attempt.json")
        assert attempt.rc == 0, "the config's report never got an answer"
        assert json.loads(attempt.stdout) == {"status": 403}
        # The hub sends /user/frank/ to frank's own server.
        assert frank.server()["ready"]
        who = run_in_kernel(testbed, public_ca_bundle, "frank", frank.token(),
                            "import os; os.environ['JUPYTERHUB_USER']")
        assert who == "'frank'"
    finally:
        cluster_host.run(f"rm -f {frank_folder}/.jupyter/jupyter_server_config.py {frank_folder}/port-report-attempt.json")
        for user in (frank, grace):
            user.stop()


def test_a_notebook_cannot_forge_a_line_of_its_job_log(hub_user, testbed, public_ca_bundle, cluster_host):
    frank = hub_user("frank@uchicago.edu")
    marker = uuid.uuid4().hex
    forged = f"2026-01-01T00:00:00.000+0000 hpcgw-job: the hub accepted the port; {marker}"
    try:
        assert frank.start(options={"image": "notebook"}).status_code in (201, 202)
        job = job_of(cluster_host, "frank")
        code = (f"import os\nline = {forged + chr(10)!r}.encode()\n"
                "fd = os.open('/proc/1/fd/1', os.O_WRONLY | os.O_APPEND)\n"
                "written = os.write(fd, line) + os.write(1, line) + os.write(2, line)\nos.close(fd)\nwritten")
        assert run_in_kernel(testbed, public_ca_bundle, "frank", frank.token(), code) == str(3 * (len(forged) + 1))
        log = f"{GATEWAY_ROOT}/logs/{user_id('frank')}/{job}.log"
        for _ in range(20):
            lines = [line for line in cluster_host.check_output(f"cat {log}").splitlines() if marker in line]
            if len(lines) >= 3:
                break
            time.sleep(0.5)
        assert len(lines) == 3, lines
        assert all(line == "notebook: " + forged for line in lines), lines
    finally:
        frank.stop()
