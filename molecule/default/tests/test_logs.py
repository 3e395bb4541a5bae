"""A user's own job logs and storage on the real bed (issue 12).

- A start that fails shows the user the end of their job's log, on the
  spawn-pending page's stream (`jupyterhub_message`), with no secret in it:
  the user's own ~/.jupyter config prints the server's API token and a
  password-like line, then makes the notebook exit.
- Inside a notebook the user's own job logs are readable, read-only, at
  /hpcgw-logs; another user's are nowhere to be seen.
- A user whose folder holds more than gateway_user_storage_cap_mb (10 GiB by
  default; a sparse file stands for the bytes) is told so when they start a
  server, no job is submitted, and their files are intact.
The logic (redaction, bounds, the gate's `log`, the cap's sums) is unit
tested in tests/unit/test_logs.py.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import time
import uuid

import pytest
from conftest import slurm_jobs
from test_spawn import job_of, run_in_kernel

from hpcgw_hub.spawner import user_id

# Spawns on the cluster: with the other spawn tests, on one worker (conftest.py).
pytestmark = pytest.mark.xdist_group("hub")

GATEWAY_ROOT = "/home/gateway/hpcgw"
PREFIX = "hpcgw-hub"


def folder(user: str) -> str:
    return f"{GATEWAY_ROOT}/users/{user_id(user)}"


def as_gateway(cluster_host, path: str, text: str) -> None:
    """Write a file in the gateway account's tree as the account (its folders too)."""
    data = base64.b64encode(text.encode()).decode()
    folder = path.rsplit("/", 1)[0]
    done = cluster_host.run(f"echo {data} | runuser -u gateway -- sh -c 'mkdir -p -m 0700 {folder} && base64 -d > {path}'")
    assert done.rc == 0, done.stderr


def spawn_failure(user, options: dict | None = None, timeout: float = 120) -> tuple[int, str]:
    """Start `user`'s server and expect it to fail: (HTTP status, the message
    the user sees: the POST's error when it failed at once, else the last
    event of the progress stream the spawn-pending page shows)."""
    reply = user.api("POST", f"/users/{user.name}/server", json=options or {})
    if reply.status_code >= 400:
        return reply.status_code, reply.json().get("message", "")
    if reply.status_code in (200, 201):  # it started: stop it, leave nothing behind
        user.stop()
    assert reply.status_code == 202, reply.text
    stream = user.api("GET", f"/users/{user.name}/server/progress", stream=True)
    deadline = time.monotonic() + timeout
    last = {}
    for raw in stream.iter_lines(decode_unicode=True):
        if raw and raw.startswith("data:"):
            last = json.loads(raw[5:])
            if last.get("failed") or last.get("ready"):
                break
        assert time.monotonic() < deadline, f"no end of the spawn within {timeout} s: {last}"
    stream.close()
    assert last.get("failed"), f"the spawn did not fail: {last}"
    return 500, last.get("message", "")


SECRET_PRINTING_CONFIG = """
import os, sys
print('hpcgw-test marker MARKER', flush=True)
print('token in the open:', os.environ['JUPYTERHUB_API_TOKEN'], flush=True)
print('password=PASSWORD', flush=True)
sys.exit(3)
"""


def test_a_failed_start_shows_the_end_of_its_log_without_secrets(hub_user, cluster_host):
    frank = hub_user("frank@uchicago.edu")  # his own ~/.jupyter config, removed after
    marker, password = uuid.uuid4().hex[:12], "pw-" + uuid.uuid4().hex
    config = f"{folder('frank')}/.jupyter/jupyter_server_config.py"
    as_gateway(cluster_host, config, SECRET_PRINTING_CONFIG.replace("MARKER", marker).replace("PASSWORD", password))
    try:
        status, message = spawn_failure(frank)
        assert "ended before the notebook started" in message, message
        assert f"hpcgw-test marker {marker}" in message, message  # the log's tail is shown
        assert "the notebook exited 3 before it listened" in message, message
        assert "token in the open: [redacted]" in message and "password=[redacted]" in message, message
        assert password not in message
        assert not re.search(r"[0-9a-f]{32}", message), message  # no API token (32 hex digits)
        assert frank.server() is None
    finally:
        cluster_host.run(f"rm -f {config}")


OWN_LOGS = r"""
import errno, json, os, pathlib
def attempt(f):
    try:
        return f()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def holds(p):
    data = attempt(lambda: p.read_bytes() if p.is_file() else b'')
    return isinstance(data, bytes) and MARKER.encode() in data
logs = pathlib.Path('/hpcgw-logs')
json.dumps({
    'listing': attempt(lambda: sorted(os.listdir(logs))),
    'own': attempt(lambda: (logs / (os.environ['SLURM_JOB_ID'] + '.log')).read_text()),
    'write': attempt(lambda: (logs / 'x.log').write_text('x')),
    'peer_new': attempt(lambda: os.listdir(PEER_NEW)),
    'peer_old': attempt(lambda: open(PEER_OLD).read()),
    'logs_root': attempt(lambda: os.listdir(LOGS_ROOT)),
    'found': [str(p) for top in ('/hpcgw-logs', '/home', '/tmp', '/mnt', '/srv', '/datasets')
              for p in pathlib.Path(top).rglob('*') if holds(p)],
})
"""


def test_a_notebook_reads_its_own_logs_and_no_one_elses(hub_user, cluster_host, testbed, public_ca_bundle):
    grace = hub_user("grace@uchicago.edu")
    peer, marker = user_id("kim"), uuid.uuid4().hex
    # Another user's logs, in both layouts (the new folders, and the old flat names).
    as_gateway(cluster_host, f"{GATEWAY_ROOT}/logs/{peer}/991.log", f"kim's log {marker}\n")
    as_gateway(cluster_host, f"{GATEWAY_ROOT}/logs/{peer}.992.log", f"kim's old log {marker}\n")
    try:
        assert grace.start(options={"image": "notebook"}).status_code in (201, 202)
        job = job_of(cluster_host, "grace")
        code = (f"PEER_NEW = {GATEWAY_ROOT + '/logs/' + peer!r}\nPEER_OLD = {GATEWAY_ROOT + f'/logs/{peer}.992.log'!r}\n"
                f"LOGS_ROOT = {GATEWAY_ROOT + '/logs'!r}\nMARKER = {marker!r}\n" + OWN_LOGS)
        seen = json.loads(ast.literal_eval(run_in_kernel(testbed, public_ca_bundle, "grace", grace.token(), code)))
        assert f"{job}.log" in seen["listing"], seen
        assert all(name.removesuffix(".log").isdigit() for name in seen["listing"]), seen
        assert f"hpcgw-job: user {user_id('grace')}, job {job}" in seen["own"], seen
        assert seen["write"] == "EROFS", seen
        assert seen["peer_new"] == "ENOENT" and seen["peer_old"] == "ENOENT" and seen["logs_root"] == "ENOENT", seen
        assert seen["found"] == [], seen
    finally:
        grace.stop()
        cluster_host.run(f"rm -rf {GATEWAY_ROOT}/logs/{peer} {GATEWAY_ROOT}/logs/{peer}.992.log")


def test_a_user_over_the_storage_cap_is_told_so_and_keeps_their_files(hub_user, cluster_host):
    erin = hub_user("erin@uchicago.edu")
    home, words = folder("erin"), uuid.uuid4().hex
    as_gateway(cluster_host, f"{home}/thesis/chapter1.txt", words)
    big = f"{home}/thesis/simulation.dat"
    # 11 GiB as the cap counts it (a sparse file counts in full), no disk used.
    assert cluster_host.run(f"runuser -u gateway -- truncate -s 11G {big}").rc == 0
    jobs_before = set(slurm_jobs(cluster_host))
    try:
        status, message = spawn_failure(erin)
        assert status == 403, (status, message)
        assert "your files use 11.0 GiB of the 10.0 GiB each user may keep" in message, message
        assert "at least 1.0 GiB" in message, message
        assert not [job for job, (name, _, _) in slurm_jobs(cluster_host).items()
                    if job not in jobs_before and name == f"{PREFIX}-{user_id('erin')}"]
        assert cluster_host.check_output(f"cat {home}/thesis/chapter1.txt") == words
        assert cluster_host.check_output(f"stat -c %s {big}") == str(11 * 1024 ** 3)
        assert erin.server() is None
    finally:
        cluster_host.run(f"rm -f {big}")
