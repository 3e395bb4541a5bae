"""hpcgw_hub.gate.Gate against a fake `ssh` on PATH (as job_bed.py does for
the job wrapper): the argv it runs, stdin, exit codes, timeouts, and the
one shared SSH master (started once, one at a time, never waited on for
ever). The fake records every run in calls.jsonl and answers from
script.json; `-O check` succeeds once a master has come up."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from hpcgw_hub.gate import Gate, GateResult

FAKE_SSH = """#!{python}
import json, os, sys, time
here = {here!r}
argv = sys.argv
if "-O" in argv:
    kind = "check"
elif "ControlMaster=yes" in argv:
    kind = "master"
else:
    kind = "call"
stdin = "" if kind != "call" else sys.stdin.read()
with open(os.path.join(here, "calls.jsonl"), "a") as out:
    out.write(json.dumps({{"kind": kind, "argv": argv, "stdin": stdin, "pid": os.getpid()}}) + "\\n")
script = json.load(open(os.path.join(here, "script.json")))
master_up = os.path.join(here, "master-up")
if kind == "check":
    sys.exit(0 if os.path.exists(master_up) else 255)
if kind == "master":
    time.sleep(script.get("master_seconds", 0))
    if script.get("master", "up") == "up":
        open(master_up, "w").close()
        sys.exit(0)
    sys.stderr.write("ssh: connect to host login port 22: Connection refused\\n")
    sys.exit(255)
verb = argv[-1].split(" ")[0]
answer = script.get("answers", {{}}).get(verb, {{}})
time.sleep(answer.get("sleep", 0))
sys.stdout.buffer.write(answer.get("out", "").encode("latin-1") if answer.get("raw") else answer.get("out", "").encode())
sys.stderr.write(answer.get("err", ""))
sys.exit(answer.get("rc", 0))
"""


class FakeSsh:
    def __init__(self, here: Path):
        self.here = here
        self.script({})
        ssh = here / "ssh"
        ssh.write_text(FAKE_SSH.format(python=sys.executable, here=str(here)))
        ssh.chmod(ssh.stat().st_mode | stat.S_IEXEC)

    def script(self, script: dict) -> None:
        (self.here / "script.json").write_text(json.dumps(script))

    def calls(self) -> list[dict]:
        path = self.here / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def kinds(self) -> list[str]:
        return [call["kind"] for call in self.calls()]


@pytest.fixture
def ssh(tmp_path, monkeypatch):
    fake = FakeSsh(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return fake


def gate(**settings) -> Gate:
    return Gate(**{"host": "login", "user": "gateway", "key": "/etc/jupyterhub/ssh/id_gateway",
                   "known_hosts": "/etc/jupyterhub/ssh/known_hosts", "port": 2222,
                   "control_path": "/run/jupyterhub/ssh-%C", "timeout": 5, **settings})


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_a_call_is_one_fixed_command_with_the_host_key_pinned(ssh):
    ssh.script({"answers": {"status": {"out": "RUNNING c1 None\n"}}})
    result = run(gate().status("77"))
    assert result == GateResult(0, "RUNNING c1 None\n", "") and result.ok
    [call] = [c for c in ssh.calls() if c["kind"] == "call"]
    argv = call["argv"][1:]
    # The remote command is one argument, the last; the gate's forced command reads it (no shell here).
    assert argv[-2:] == ["login", "status 77"]
    options = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/etc/jupyterhub/ssh/known_hosts",
                   "GlobalKnownHostsFile=/dev/null", "IdentitiesOnly=yes", "IdentityFile=/etc/jupyterhub/ssh/id_gateway",
                   "ControlPath=/run/jupyterhub/ssh-%C", "ControlMaster=no", "ConnectTimeout=10"):
        assert option in options
    assert argv[:2] == ["-F", "none"]  # no ssh_config of the hub's user or the system
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "gateway"
    assert call["stdin"] == ""  # nothing on stdin but a submit's request


def test_submit_sends_the_request_on_stdin(ssh):
    ssh.script({"answers": {"submit": {"out": "31\n"}}})
    request = json.dumps({"user_id": "u-0", "profile": "compute"})
    assert run(gate().submit(request)).stdout == "31\n"
    [call] = [c for c in ssh.calls() if c["kind"] == "call"]
    assert call["argv"][-1] == "submit" and call["stdin"] == request


@pytest.mark.parametrize("rc, err", [(1, "hpcgw-gate: refused: not a job of this hub\n"),
                                     (255, "ssh: connect to host login port 2222: Connection refused\n"),
                                     (2, "")])
def test_a_failed_command_is_a_result_not_an_exception(ssh, rc, err):
    ssh.script({"answers": {"cancel": {"rc": rc, "err": err}}})
    result = run(gate().cancel("77"))
    assert result == GateResult(rc, "", err) and not result.ok


def test_a_command_without_an_answer_in_time_is_killed(ssh):
    ssh.script({"answers": {"status": {"sleep": 60, "out": "RUNNING"}}})
    result = run(gate(timeout=0.5).status("77"))
    assert result.returncode is None and not result.ok
    assert result.stderr == "no answer from login within 0.5s"
    [call] = [c for c in ssh.calls() if c["kind"] == "call"]
    with pytest.raises(ProcessLookupError):
        os.kill(call["pid"], 0)  # killed and reaped, not left behind


def test_output_that_is_not_utf8_is_replaced_not_raised(ssh):
    ssh.script({"answers": {"list": {"out": "1 hpcgw-\xff RUNNING\n", "raw": True}}})
    assert run(gate().list_jobs("hpcgw")).stdout == "1 hpcgw-\ufffd RUNNING\n"


def test_one_master_is_started_then_reused(ssh):
    ssh.script({"answers": {"status": {"out": "GONE\n"}}})
    shared = gate()
    run(shared.status("77"))
    run(shared.status("78"))
    assert ssh.kinds() == ["check", "master", "call", "check", "call"]
    master = next(c for c in ssh.calls() if c["kind"] == "master")["argv"]
    assert {"ControlMaster=yes", "ControlPersist=600", "-N", "-f"} <= set(master)
    assert master[-1] == "login"  # a master runs no command


def test_concurrent_calls_start_one_master(ssh):
    ssh.script({"master_seconds": 0.5, "answers": {"status": {"out": "RUNNING\n"}}})
    shared = gate()

    async def many():
        return await asyncio.gather(*(shared.status(str(n)) for n in range(5)))

    assert all(result.ok for result in run(many()))
    assert ssh.kinds().count("master") == 1
    assert ssh.kinds().count("call") == 5


def test_a_master_that_does_not_come_up_is_killed_and_the_call_goes_direct(ssh, caplog):
    ssh.script({"master": "hang", "master_seconds": 60, "answers": {"status": {"out": "PENDING\n"}}})
    caplog.set_level(logging.WARNING)
    result = run(gate(timeout=0.5).status("77"))
    assert result.ok and result.stdout == "PENDING\n"
    assert "SSH to gateway@login: no connection within 0.5s" in caplog.text
    master = next(c for c in ssh.calls() if c["kind"] == "master")
    with pytest.raises(ProcessLookupError):
        os.kill(master["pid"], 0)


def test_a_master_that_fails_leaves_the_call_to_connect_itself(ssh):
    ssh.script({"master": "fail", "answers": {"status": {"out": "RUNNING\n"}}})
    shared = gate()
    assert run(shared.status("77")).ok
    assert run(shared.status("77")).ok
    assert ssh.kinds() == ["check", "master", "call", "check", "master", "call"]  # tried again each time


def test_without_connection_reuse_every_call_connects_itself(ssh):
    ssh.script({"answers": {"status": {"out": "RUNNING\n"}}})
    run(gate(reuse_connection=False).status("77"))
    [call] = ssh.calls()
    assert call["kind"] == "call"
    assert "ControlPath=none" in call["argv"] and "ControlMaster=no" not in call["argv"]


@pytest.mark.parametrize("job_id", ["", "77; id", "-1", "1 2", "77\n", "abc", "$(id)"])
def test_a_job_id_that_is_not_digits_never_reaches_ssh(ssh, job_id):
    for verb in (gate().status, gate().cancel):
        with pytest.raises(ValueError, match="not a Slurm job id"):
            run(verb(job_id))
    assert ssh.calls() == []


@pytest.mark.parametrize("prefix", ["", "a b", "x" * 65, "hpcgw;id", "hpcgw\n", "../x"])
def test_a_bad_prefix_never_reaches_ssh(ssh, prefix):
    with pytest.raises(ValueError, match="not a job name prefix"):
        run(gate().list_jobs(prefix))
    assert ssh.calls() == []


def test_list_asks_for_this_hubs_prefix(ssh):
    ssh.script({"answers": {"list": {"out": "31 hpcgw-hub-u-1 RUNNING\n"}}})
    assert run(gate().list_jobs("hpcgw-hub")).stdout == "31 hpcgw-hub-u-1 RUNNING\n"
    assert ssh.calls()[-1]["argv"][-1] == "list hpcgw-hub"


def test_the_reaper_cancels_nothing_when_the_cluster_cannot_list(ssh, caplog):
    from hpcgw_hub.reaper import reap_once

    ssh.script({"answers": {"list": {"rc": 255, "err": "Connection refused\n"}}})
    assert run(reap_once(gate(), "http://127.0.0.1:1/hub/api", "t", "hpcgw-hub", grace=0)) == []
    assert "Cannot list the cluster's jobs: Connection refused" in caplog.text
    assert "cancel" not in [c["argv"][-1].split()[0] for c in ssh.calls() if c["kind"] == "call"]
