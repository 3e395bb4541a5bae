"""hpcgw-gate (roles/gateway/files/hpcgw-gate), the forced command of the
hub's key: it runs exactly the allowed Slurm commands with exact argv and
refuses everything else with exit 126 without running anything.

Slurm's commands are fakes on PATH that record their argv and stdin and
answer what a test tells them to (files <name>.out / .err / .rc).
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

GATE = Path(__file__).resolve().parents[2] / "roles" / "gateway" / "files" / "hpcgw-gate"

FAKE = """#!{python}
import json, os, sys
here = {here!r}
name = os.path.basename(sys.argv[0])
stdin = sys.stdin.buffer.read().decode("utf-8", "replace")
with open(os.path.join(here, "calls.jsonl"), "a") as calls:
    calls.write(json.dumps({{"argv": [name] + sys.argv[1:], "stdin": stdin}}) + "\\n")
def answer(suffix, default=""):
    path = os.path.join(here, name + suffix)
    return open(path).read() if os.path.exists(path) else default
sys.stdout.write(answer(".out"))
sys.stderr.write(answer(".err"))
sys.exit(int(answer(".rc", "0")))
"""


class Slurm:
    """The fake Slurm commands (and traps: id, sh, bash) in a tmp folder."""

    def __init__(self, here: Path):
        self.here = here
        self.bin = here / "bin"
        self.bin.mkdir()
        for name in ("sbatch", "squeue", "scancel", "id", "sh", "bash"):
            path = self.bin / name
            path.write_text(FAKE.format(python=sys.executable, here=str(here)))
            path.chmod(0o755)

    def answers(self, name: str, out: str = "", err: str = "", rc: int = 0) -> None:
        (self.here / f"{name}.out").write_text(out)
        (self.here / f"{name}.err").write_text(err)
        (self.here / f"{name}.rc").write_text(str(rc))

    def calls(self) -> list[dict]:
        path = self.here / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def gate(self, command: str | None, stdin: bytes = b"") -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.here)}
        if command is not None:
            env["SSH_ORIGINAL_COMMAND"] = command
        return subprocess.run(
            [sys.executable, "-I", str(GATE)], input=stdin, env=env,
            capture_output=True, timeout=30, check=False,
        )


@pytest.fixture
def slurm(tmp_path: Path) -> Slurm:
    return Slurm(tmp_path)


SCRIPT = b"#!/bin/bash\n#SBATCH --job-name=hpcgw-t-u-2bd806c97f0e00af1a1f\nexec /x/bin/hpcgw-job\n"


def test_submit_passes_the_script_to_sbatch_parsable(slurm):
    slurm.answers("sbatch", out="4242\n")
    done = slurm.gate("submit", SCRIPT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"4242\n"
    assert slurm.calls() == [{"argv": ["sbatch", "--parsable"], "stdin": SCRIPT.decode()}]


def test_submit_prints_only_the_id_of_a_federated_answer(slurm):
    slurm.answers("sbatch", out="4243;cluster\n")
    done = slurm.gate("submit", SCRIPT)
    assert (done.returncode, done.stdout) == (0, b"4243\n")


def test_submit_reports_sbatch_errors(slurm):
    message = "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
    slurm.answers("sbatch", err=message, rc=1)
    done = slurm.gate("submit", SCRIPT)
    assert done.returncode == 1
    assert done.stdout == b""
    assert message.encode() in done.stderr


@pytest.mark.parametrize("script", [b"", b" \n", b"#" * (64 * 1024 + 1)], ids=["empty", "blank", "over-64KiB"])
def test_submit_refuses_empty_or_oversized_scripts(slurm, script):
    done = slurm.gate("submit", script)
    assert done.returncode == 126
    assert slurm.calls() == []


def test_submit_accepts_exactly_64KiB(slurm):
    slurm.answers("sbatch", out="7\n")
    script = b"#!/bin/sh\n" + b"#" * (64 * 1024 - 11) + b"\n"
    assert len(script) == 64 * 1024
    assert slurm.gate("submit", script).returncode == 0
    assert slurm.calls()[0]["stdin"] == script.decode()


@pytest.mark.parametrize(
    ("squeue_out", "printed"),
    [
        ("RUNNING cluster None\n", "RUNNING cluster None"),
        ("PENDING n/a Resources\n", "PENDING n/a Resources"),
        ("PENDING n/a ReqNodeNotAvail, UnavailableNodes:c[1-2]\n",
         "PENDING n/a ReqNodeNotAvail, UnavailableNodes:c[1-2]"),
        ("PENDING\n", "PENDING n/a None"),
        ("CONFIGURING c17\n", "CONFIGURING c17 None"),
        ("", "GONE"),
    ],
    ids=["running", "pending", "reason-with-spaces", "state-only", "no-reason", "empty-answer"],
)
def test_status_runs_squeue_with_exact_argv(slurm, squeue_out, printed):
    slurm.answers("squeue", out=squeue_out)
    done = slurm.gate("status 123")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == printed + "\n"
    assert slurm.calls() == [{"argv": ["squeue", "-h", "-j", "123", "-o", "%T %B %r"], "stdin": ""}]


def test_status_maps_invalid_job_id_to_gone(slurm):
    slurm.answers("squeue", err="slurm_load_jobs error: Invalid job id specified\n", rc=1)
    done = slurm.gate("status 99")
    assert (done.returncode, done.stdout) == (0, b"GONE\n")


def test_status_other_slurm_errors_are_not_gone(slurm):
    message = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
    slurm.answers("squeue", err=message, rc=1)
    done = slurm.gate("status 99")
    assert done.returncode not in (0, 126)
    assert done.stdout == b""
    assert message.encode() in done.stderr


def test_cancel_runs_scancel(slurm):
    done = slurm.gate("cancel 55")
    assert (done.returncode, done.stdout) == (0, b"")
    assert slurm.calls() == [{"argv": ["scancel", "55"], "stdin": ""}]


def test_cancel_of_a_job_slurm_forgot_succeeds(slurm):
    slurm.answers("scancel", err="scancel: error: Kill job error on job id 55: Invalid job id specified\n", rc=1)
    assert slurm.gate("cancel 55").returncode == 0


def test_cancel_reports_other_errors(slurm):
    slurm.answers("scancel", err="scancel: error: Kill job error on job id 55: Access/permission denied\n", rc=1)
    done = slurm.gate("cancel 55")
    assert done.returncode == 1
    assert b"Access/permission denied" in done.stderr


def test_list_filters_this_accounts_jobs_by_name_prefix(slurm):
    slurm.answers("squeue", out=(
        "11 hpcgw-t-u-2bd806c97f0e00af1a1f RUNNING\n"
        "12 something-else PENDING\n"
        "13 hpcgw-t-u-0000000000000000ffff PENDING\n"
        "14 hpcgw-other-u-2bd806c97f0e00af1a1f RUNNING\n"
    ))
    done = slurm.gate("list hpcgw-t-")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        "11 hpcgw-t-u-2bd806c97f0e00af1a1f RUNNING",
        "13 hpcgw-t-u-0000000000000000ffff PENDING",
    ]
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert slurm.calls() == [{"argv": ["squeue", "-h", "-u", user, "-o", "%i %j %T"], "stdin": ""}]


def test_list_reports_slurm_errors(slurm):
    slurm.answers("squeue", err="squeue: error: Invalid user: x\n", rc=1)
    assert slurm.gate("list hpcgw").returncode == 1


@pytest.mark.parametrize(
    "command",
    [
        None, "", " ", "id", "sbatch", "sbatch; id", "sbatch --parsable", "submit; id", "submit ",
        " submit", "submit\n", "status", "status ", "status x", "status 1;id", "status 1 ; id",
        "status $(id)", "status `id`", "status 1 2", "status -1", "status 1\n", "status  1",
        "status \u0661", "cancel", "cancel 1&&id", "cancel -u gateway", "list", "list ../x",
        "list a b", "list a;id", "list " + "a" * 65, "squeue -h", "scancel 1", "STATUS 1", "unknown verb",
    ],
    ids=repr,
)
def test_everything_else_is_refused_and_runs_nothing(slurm, command):
    slurm.answers("squeue", out="RUNNING cluster None\n")
    slurm.answers("sbatch", out="1\n")
    done = slurm.gate(command, SCRIPT)
    assert done.returncode == 126
    assert done.stdout == b""
    assert b"refused" in done.stderr
    assert slurm.calls() == []
