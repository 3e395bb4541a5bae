"""Notebooks as Slurm jobs of the shared gateway account, end to end.

A user logged in through the Globus stand-in starts a server; the job runs as
`gateway` on a compute node of the cluster (compute1: the test profiles'
partitions), not on the login node; the hub reaches the notebook through the
tunnel the compute node opens; nginx serves it on the public https URL; a
kernel computes over wss.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import time
import uuid
from urllib.parse import quote

import pytest
import websocket
from conftest import hub_jobs, hub_steady, job_node, slurm_jobs

from hpcgw_hub.spawner import user_id

# Restarts the hub or cuts its SSH to the cluster: one xdist worker, in order (conftest.py).
pytestmark = pytest.mark.xdist_group("hub")

PREFIX = "hpcgw-hub"


def job_of(cluster_host, username: str) -> str | None:
    name = f"{PREFIX}-{user_id(username)}"
    ids = [job for job, (job_name, _, state) in slurm_jobs(cluster_host).items()
           if job_name == name and state in ("RUNNING", "PENDING")]
    assert len(ids) <= 1, ids
    return ids[0] if ids else None


def run_in_kernel(testbed, public_ca_bundle, user: str, token: str, code: str) -> str:
    """Start a kernel over REST, run `code` over the public wss:// URL, return its result."""
    import requests

    session = requests.Session()
    session.trust_env = False
    session.verify = str(public_ca_bundle)
    base = f"https://{testbed.hub_name}/user/{quote(user)}"
    headers = {"Authorization": f"token {token}"}
    kernel = session.post(f"{base}/api/kernels", headers=headers, json={"name": "python3"}, timeout=60)
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    ws = websocket.create_connection(
        f"wss://{testbed.hub_name}/user/{quote(user)}/api/kernels/{kernel_id}/channels",
        header=[f"Authorization: token {token}"], sslopt={"ca_certs": str(public_ca_bundle),
                                                          "cert_reqs": ssl.CERT_REQUIRED}, timeout=60,
    )
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": user, "session": uuid.uuid4().hex, "msg_type": "execute_request",
                       "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reply = json.loads(ws.recv())
            if reply.get("parent_header", {}).get("msg_id") == msg_id and reply["msg_type"] == "execute_result":
                return reply["content"]["data"]["text/plain"]
        raise AssertionError("no execute_result")
    finally:
        ws.close()
        session.delete(f"{base}/api/kernels/{kernel_id}", headers=headers, timeout=30)


def notebook_processes(host, job: str) -> dict[str, list[str]]:
    """What of a job runs on a node, as root sees it: its notebook server,
    its tunnel (ssh to tunnelbot) and its job folder in /tmp."""
    def lines(command: str) -> list[str]:
        return host.run(command).stdout.split()
    return {
        "notebook": lines("pgrep -u gateway -f jupyterhub-singleuser"),
        "tunnel": lines("pgrep -u gateway -f 'ssh -N -T .*tunnelbot@'"),
        "job_folder": lines(f"ls -d /tmp/hpcgw-{job}-*"),
    }


@pytest.mark.root_pass
def test_spawn_reach_compute_and_stop(hub_user, cluster_host, compute_host, testbed, public_ca_bundle, browser):
    bob = hub_user("bob@uchicago.edu")
    reply = bob.start()
    assert reply.status_code in (201, 202), reply.text
    job = job_of(cluster_host, "bob")
    assert job is not None
    _, owner, state = slurm_jobs(cluster_host)[job]
    assert (owner, state) == ("gateway", "RUNNING")
    # The job runs on the compute node of its partition, not on the login node.
    assert job_node(cluster_host, job) == "compute1"
    on_node = notebook_processes(compute_host("compute1"), job)
    assert all(len(found) >= 1 for found in on_node.values()), on_node
    assert notebook_processes(cluster_host, job) == {"notebook": [], "tunnel": [], "job_folder": []}

    token = bob.token()
    status = browser.get(f"https://{testbed.hub_name}/user/bob/api/status",
                         headers={"Authorization": f"token {token}"}, timeout=30)
    assert status.status_code == 200, status.text
    assert run_in_kernel(testbed, public_ca_bundle, "bob", token, "1+1") == "2"

    bob.stop()
    # One listing: the job may leave squeue between two.
    jobs = slurm_jobs(cluster_host)
    assert job not in jobs or jobs[job][2] not in ("RUNNING", "PENDING")
    # The wrapper ends the tunnel and removes the job folder on the node.
    for _ in range(40):
        left = notebook_processes(compute_host("compute1"), job)
        if not left["job_folder"]:
            break
        time.sleep(0.5)
    assert left["job_folder"] == [], left


@pytest.mark.restarts_hub
def test_hub_restart_keeps_running_servers(hub_user, cluster_host, hub_host, testbed, browser):
    erin = hub_user("erin@uchicago.edu")
    erin.start()
    job = job_of(cluster_host, "erin")
    token = erin.token()
    try:
        with hub_steady():
            hub_host.run_expect([0], "systemctl restart jupyterhub")
            hub_host.run_expect([0], "sh -c 'for i in $(seq 120); do curl -fsS -o /dev/null "
                                     "http://127.0.0.1:8081/hub/api/ && exit 0; sleep 0.5; done; exit 1'")
        status = browser.get(f"https://{testbed.hub_name}/user/erin/api/status",
                             headers={"Authorization": f"token {token}"}, timeout=30)
        assert status.status_code == 200, status.text
        assert job_of(cluster_host, "erin") == job
    finally:
        erin.stop()


def hub_ssh_to_cluster(testbed, action: str):
    """Drop (or let through) the hub's packets to the cluster's sshd, in the hub's
    own network namespace: the tunnel (cluster -> hub) is not touched."""
    pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", testbed.container("hub")],
                         check=True, capture_output=True, text=True).stdout.strip()
    rule = ["OUTPUT", "-p", "tcp", "-d", testbed.address("cluster"), "--dport", "22", "-j", "DROP"]
    subprocess.run(["nsenter", "-t", pid, "-n", "iptables", action, *rule], check=True)


def test_half_a_minute_without_ssh_to_the_cluster_drops_nothing(hub_user, cluster_host, testbed, browser):
    # The wiring: SSH really cut, the spawner's polls really failing. The
    # rule behind it (a status the gate could not get is never "gone", for
    # any number of polls) is proved in tests/unit/test_hub_lifecycle.py.
    alice = hub_user("alice@uchicago.edu")
    alice.start()
    job = job_of(cluster_host, "alice")
    token = alice.token()
    jobs_before = hub_jobs(cluster_host)
    hub_ssh_to_cluster(testbed, "-I")
    try:
        time.sleep(30)  # three polls (every 10 s here) fail meanwhile
        assert alice.server() is not None and alice.server()["ready"]
    finally:
        hub_ssh_to_cluster(testbed, "-D")
    time.sleep(15)  # a poll or two with SSH back
    assert alice.server() is not None
    status = browser.get(f"https://{testbed.hub_name}/user/alice/api/status",
                         headers={"Authorization": f"token {token}"}, timeout=30)
    assert status.status_code == 200
    assert job_of(cluster_host, "alice") == job
    assert hub_jobs(cluster_host) == jobs_before  # no orphan, no duplicate
    alice.stop()


def test_a_job_cancelled_on_the_cluster_is_stopped_within_one_poll(hub_user, cluster_host):
    bob = hub_user("bob@uchicago.edu")
    bob.start()
    job = job_of(cluster_host, "bob")
    cluster_host.run_expect([0], "runuser -u gateway -- scancel %s", job)
    cancelled = time.monotonic()
    while bob.server() is not None:
        assert time.monotonic() - cancelled < 10 * 1.2 + 8, "hub still shows the server after one poll interval"
        time.sleep(0.5)


@pytest.mark.parametrize(
    "options",
    [
        {"partition": "gpu"},
        {"partition": "short", "minutes": 61},
        {"profile": "short", "minutes": 61},
        {"profile": "nosuch"},
        {"image": "nosuch"},
        {"cpus": 99},
        {"memory_mb": 10**7},
        {"gpus": 1},
        {"req_options": "--uid=0"},
        {"batch_submit_cmd": "touch /tmp/pwned"},
        {"cpus": "1; id"},
    ],
)
def test_rest_options_outside_the_limits_get_400_and_no_job(hub_user, cluster_host, options):
    bob = hub_user("bob@uchicago.edu")
    jobs_before = hub_jobs(cluster_host)
    reply = bob.start(options=options)
    assert reply.status_code == 400, reply.text
    assert hub_jobs(cluster_host) == jobs_before
    assert bob.server() is None


def test_a_username_full_of_shell_metacharacters_does_no_harm(hub_user, cluster_host, compute_host, hub_host):
    # A Globus identity whose username is every shell metacharacter (JupyterHub
    # itself refuses "/"); it logs in and starts its own server.
    hostile = hub_user("x';touch pwned-q;'$(touch pwned-d)`touch pwned-b`\"&&id|tee pwned-p;<>*?~!{}[]\\@uchicago.edu")
    assert hostile.name.startswith("x';touch")
    assert hostile.start().status_code in (201, 202)
    assert hostile.server()["ready"]
    job = job_of(cluster_host, hostile.name)
    assert job is not None
    node = compute_host(job_node(cluster_host, job))
    hostile.stop()
    # /home is its own file system on the cluster (shared by its nodes).
    for host in (cluster_host, node, hub_host):
        assert host.check_output("find / /home -xdev -name 'pwned-*' 2>/dev/null || true") == ""


def test_the_port_callback_takes_only_a_starting_servers_own_token(hub_user, testbed, browser):
    bob = hub_user("bob@uchicago.edu")
    token = bob.token()  # bob's own API token: not a server's
    url = f"https://{testbed.hub_name}/hub/api/hpcgw/port"
    headers = {"Authorization": f"token {token}"}
    assert browser.post(url, headers=headers, json={"port": 40000}, timeout=20).status_code == 403
    for body in ({"port": 40000, "batch_cancel_cmd": "id"}, {"port": "40000"}, {"cmd": "id"}, [40000]):
        assert browser.post(url, headers=headers, json=body, timeout=20).status_code == 400
    assert bob.server() is None


def proxy_routes(hub_host) -> dict:
    token = hub_host.check_output("sed -n 's/^CONFIGPROXY_AUTH_TOKEN=//p' /etc/jupyterhub/secrets/proxy-token.env")
    return json.loads(hub_host.check_output(
        "curl -fsS -H %s http://127.0.0.1:8001/api/routes", f"Authorization: token {token}"))


def the_form(user) -> str:
    reply = user.browser.get(f"{user.hub}/hub/spawn/{quote(user.name)}", timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.text


@pytest.mark.parametrize("body", [[], "x", 1, [{"cpus": 1}]])
def test_a_rest_spawn_whose_body_is_no_object_is_a_400_that_leaves_nothing(hub_user, cluster_host, hub_host, body):
    """JupyterHub answered 500 and left a 'ready' ghost server routed to the
    hub's own address, which outlived a DELETE."""
    bob = hub_user("bob@uchicago.edu")
    jobs_before = hub_jobs(cluster_host)
    reply = bob.api("POST", "/users/bob/server", json=body)
    assert reply.status_code == 400, reply.text
    assert "JSON object" in reply.json()["message"]
    assert bob.server() is None
    assert not [route for route in proxy_routes(hub_host) if route.startswith("/user/bob")]
    assert hub_jobs(cluster_host) == jobs_before


def test_refused_rest_options_are_not_remembered(hub_user, cluster_host):
    """JupyterHub stored a REST spawn's options before the spawner refused
    them; the form then offered the refused choice. Only good ones are kept."""
    bob = hub_user("bob@uchicago.edu")
    assert bob.start(options={"profile": "compute", "minutes": 45}).status_code in (201, 202)
    bob.stop()
    assert bob.start(options={"profile": "short", "minutes": 61}).status_code == 400
    html = the_form(bob)
    assert re.search(r'<option value="compute"[^>]* selected', html), "the form forgot the last good choice"
    minutes = re.search(r'<input [^>]*name="minutes"[^>]*>', html).group(0)
    assert 'value="45"' in minutes, minutes


def test_logout_ends_a_copied_notebook_session(browser, testbed, public_ca_bundle, hub_host, cluster_host):
    """A copy of judy's cookies, taken while her notebook runs, reaches neither
    the hub nor her notebook once she has logged out (her server is stopped,
    its OAuth tokens deleted). (judy: no other test logs in as her.)"""
    import requests

    from hubclient import HubUser, globus_login

    assert globus_login(browser, testbed, "judy@uchicago.edu").status_code == 200
    judy = HubUser(browser, testbed, "judy")
    if judy.server() is not None:  # left by an earlier, failed run
        judy.stop()
    assert judy.start().status_code in (201, 202)
    # the browser visits the notebook: OAuth with the hub, jupyterhub-user-judy cookie
    lab = browser.get(f"{testbed.hub_url}/user/judy/lab", timeout=60)
    assert lab.status_code == 200 and lab.url.startswith(f"{testbed.hub_url}/user/judy/"), lab.url
    assert browser.cookies.get("jupyterhub-user-judy")
    # every cookie is Secure, the notebook server's own _xsrf (path /user/judy/) too
    assert {(c.name, c.path) for c in browser.cookies} >= {("_xsrf", "/hub/"), ("_xsrf", "/user/judy/")}
    assert [(c.name, c.path) for c in browser.cookies if not c.secure] == []
    assert browser.get(f"{testbed.hub_url}/user/judy/api/status", timeout=30).status_code == 200
    thief = requests.Session()
    thief.trust_env = False
    thief.verify = str(public_ca_bundle)
    for cookie in browser.cookies:
        thief.cookies.set_cookie(cookie)
    assert thief.get(f"{testbed.hub_url}/user/judy/api/status", timeout=30).status_code == 200

    assert browser.get(f"{testbed.hub_url}/hub/logout", timeout=60).status_code == 200
    home = thief.get(f"{testbed.hub_url}/hub/home", allow_redirects=False, timeout=20)
    assert home.status_code == 302 and "/hub/login" in home.headers["Location"]
    status = thief.get(f"{testbed.hub_url}/user/judy/api/status", allow_redirects=False, timeout=30)
    # the hub answers for the stopped server: a redirect to log in, or an error; never the notebook
    assert status.status_code in (302, 403, 404, 424, 503), status.text
    assert not [route for route in proxy_routes(hub_host) if route.startswith("/user/judy")]
    assert job_of(cluster_host, "judy") is None
