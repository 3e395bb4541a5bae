"""A user's own job log and storage (issue 12): the tail a failed start
shows (bounded, secrets redacted: plugins/module_utils/rules.py log_tail,
redact), the gate's read-only `log <user id> <job>` and its per-user log
folders, the storage cap the gate's submit checks, and the spawner's
messages for both. The real bed's side is molecule/default/tests/test_logs.py.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from cluster_scripts import load_script
import test_gateway_gate
import test_hub_lifecycle
from test_gateway_gate import UID, request, submit
from test_hub_lifecycle import Fail, ScriptedGate, run
from tornado import web

from hpcgw_hub.gate import GateResult
from hpcgw_hub.rules import LOG_LINE_CHARS, LOG_READ_BYTES, REDACTED, is_secret_env, log_tail, redact

# The fixtures of the gate's and the lifecycle's tests: a gateway folder with
# fake Slurm; a hub database and alice's spawner on a scripted gate.
slurm = test_gateway_gate.slurm
empty_hub_db, hub_db, new_spawner = test_hub_lifecycle.empty_hub_db, test_hub_lifecycle.hub_db, test_hub_lifecycle.new_spawner

OTHER = "u-0123456789abcdef0123"
JOB = Path(__file__).resolve().parents[2] / "roles" / "gateway" / "files" / "hpcgw-job"
HEX_TOKEN = "5f2b0c9e8d7a41f3b6c2e1d0a9f8e7d6"  # JupyterHub's API tokens: 32 hex digits
PORT_SECRET = "H0mDwPzefMq9sDiav4foVRxBmP_zPvR5kfQTnctxWMg"  # as the spawner makes it (token_urlsafe(32)); fixed: test ids stay stable


# -- redaction --------------------------------------------------------------------
@pytest.mark.parametrize("line", [
    f"Authorization: token {HEX_TOKEN}",
    "authorization: Bearer abcdefgh12345678",
    f'"Authorization": "token {HEX_TOKEN}"',
    "GET /user/alice/api/kernels?token=abcdefgh12345678&x=1",
    "JUPYTERHUB_API_TOKEN=abcdefgh12345678",
    "export HPCGW_PORT_SECRET='abcdefgh12345678'",
    "password: hunter2hunter2",
    "api_key=abcdefgh12345678",
    f"the token is {HEX_TOKEN}.",
    f"leaked {PORT_SECRET} here",
    f"X-Hpcgw-Port-Secret: {PORT_SECRET}",
], ids=repr)
def test_token_like_things_are_redacted_by_pattern(line):
    shown = redact(line)
    assert REDACTED in shown
    for secret in ("abcdefgh12345678", HEX_TOKEN, PORT_SECRET, "hunter2hunter2"):
        assert secret not in shown, shown


def test_values_are_redacted_by_value_and_url_quoted():
    value = "short/but+secret value"  # no pattern would catch this one
    shown = redact(f"a {value} b {quote(value, safe='')} c", values=[value])
    assert value not in shown and quote(value, safe="") not in shown
    assert shown == f"a {REDACTED} b {REDACTED} c"


def test_ordinary_log_lines_are_left_alone():
    lines = [
        "2026-11-30T19:41:41.348+0000 hpcgw-job: user u-2bd806c97f0e00af1a1f, job 1234 on compute1",
        "hpcgw-job: error: the notebook exited 1 before it listened",
        "notebook: [I 2026-11-30 19:41:42.100 ServerApp] Jupyter Server 2.14.2 is running at:",
        "the API token and the port secret are never logged",
        "hpcgw-job: job folder /tmp/hpcgw-1234-abcd1234 (0700, this container's only)",
    ]
    assert [redact(line, values=["alice"]) for line in lines] == lines  # "alice": shorter than a secret


@pytest.mark.parametrize(("name", "value", "secret"), [
    ("JUPYTERHUB_API_TOKEN", "abcdefgh", True),
    ("JUPYTERHUB_COOKIE_OPTIONS", "x" * 20, True),
    ("HPCGW_PORT_SECRET", PORT_SECRET, True),
    ("JUPYTERHUB_OAUTH_CLIENT_ID", "jupyterhub-user-alice", False),
    ("JUPYTERHUB_SOMETHING", HEX_TOKEN, True),  # shaped like a token
    ("JUPYTERHUB_USER", "alice", False),
    ("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api", False),
])
def test_which_environment_values_are_secrets(name, value, secret):
    assert is_secret_env(name, value) is secret


# -- the tail's bounds ---------------------------------------------------------------
def test_the_tail_keeps_the_last_lines():
    data = "".join(f"line {n}\n" for n in range(1000)).encode()
    assert log_tail(data, lines=5) == "\n".join(f"line {n}" for n in range(995, 1000))


def test_the_tail_keeps_at_most_its_bytes_of_whole_lines_from_the_end():
    data = "".join(f"{n:04d} " + "é" * 50 + "\n" for n in range(100)).encode()
    shown = log_tail(data, lines=100, size=1000)
    assert len(shown.encode()) <= 1000
    assert shown.splitlines()[-1].startswith("0099 ")
    assert all(line.endswith("é" * 50) for line in shown.splitlines())  # whole lines only


def test_a_huge_line_is_cut_and_the_total_still_bounded():
    shown = log_tail(b"x y " * 100000 + b"\n", lines=30, size=4096)
    assert len(shown) <= LOG_LINE_CHARS + len(" [...]")
    shown = log_tail(b"z " * 100000, lines=1, size=100)
    assert 0 < len(shown.encode()) <= 100


def test_the_tail_escapes_control_characters():
    shown = log_tail(b"a\x1b[31mred\x00\r\nnext\n")
    assert shown == "a\\x1b[31mred\\x00\nnext"


def test_no_lines_no_tail():
    assert log_tail(b"") == "" and log_tail(b"a\n", lines=0) == ""


# -- the gate: log <user id> <job> ------------------------------------------------------
def write_log(slurm, user: str, job: str, text: str, old: bool = False) -> Path:
    logs = slurm.root / "logs"
    path = logs / f"{user}.{job}.log" if old else logs / user / f"{job}.log"
    path.parent.mkdir(exist_ok=True, mode=0o700)
    path.write_text(text)
    return path


def test_log_shows_the_users_own_tail_redacted_and_runs_no_slurm(slurm):
    lines = [f"line {n}" for n in range(100)] + [f"Authorization: token {HEX_TOKEN}", "hpcgw-job: error: boom"]
    write_log(slurm, UID, "4242", "\n".join(lines) + "\n")
    done = slurm.gate(f"log {UID} 4242")
    assert done.returncode == 0, done.stderr
    shown = done.stdout.decode()
    assert shown.endswith("hpcgw-job: error: boom\n")
    assert HEX_TOKEN not in shown and f"Authorization: {REDACTED}" in shown
    assert len(shown.splitlines()) == 30 and "line 0\n" not in shown
    assert slurm.calls() == []


def test_log_reads_the_old_flat_layout_too(slurm):
    write_log(slurm, UID, "17", "from before the per-user folders\n", old=True)
    assert slurm.gate(f"log {UID} 17").stdout == b"from before the per-user folders\n"


def test_log_of_another_users_job_shows_nothing(slurm):
    write_log(slurm, UID, "4242", "alice's secret work\n")
    write_log(slurm, UID, "4243", "alice's old work\n", old=True)
    for job in ("4242", "4243"):
        done = slurm.gate(f"log {OTHER} {job}")
        assert done.returncode == 0 and done.stdout == b"", done


def test_log_reads_only_the_end_of_a_big_log(slurm):
    path = write_log(slurm, UID, "5", "")
    with path.open("wb") as out:
        out.write(b"FIRST LINE\n" + b"filler\n" * (LOG_READ_BYTES // 3) + b"last\n")
    shown = slurm.gate(f"log {UID} 5").stdout.decode()
    assert shown.endswith("last\n") and "FIRST LINE" not in shown


def test_log_never_follows_a_link(slurm, tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("not a log of this user\n")
    (slurm.root / "logs" / UID).mkdir(mode=0o700)
    (slurm.root / "logs" / UID / "1.log").symlink_to(target)
    (slurm.root / "logs" / OTHER).symlink_to(tmp_path)  # a folder that is a link
    (tmp_path / "2.log").write_text("via a linked folder\n")
    (slurm.root / "logs" / f"{UID}.3.log").symlink_to(target)  # old layout, a link
    for command in (f"log {UID} 1", f"log {OTHER} 2", f"log {UID} 3"):
        done = slurm.gate(command)
        assert done.returncode == 0 and done.stdout == b"", (command, done)


@pytest.mark.parametrize("command", [
    "log", "log ", f"log {UID}", f"log {UID} ", f" log {UID} 1", f"log {UID} 1 ", f"log {UID}  1",
    f"log {UID} 1\n", f"log {UID} 1;id", f"log {UID} 1 2", f"log {UID} -1", f"log {UID} x",
    "log u-2bd806c97f0e00af1a1 1", "log u-2bd806c97f0e00af1a1f0 1", "log U-2BD806C97F0E00AF1A1F 1",
    "log ../../etc/passwd 1", f"log {UID}/../{OTHER} 1", f"log {UID} ../1", "log * 1", f"LOG {UID} 1",
    f"log {UID} 1234567890123", "log u-2bd806c97f0e00af1a1f.1 1", f"log {UID} $(id)",
], ids=repr)
def test_log_takes_exactly_a_user_id_and_a_job_id(slurm, command):
    write_log(slurm, UID, "1", "x\n")
    done = slurm.gate(command)
    assert done.returncode == 126 and done.stdout == b"" and b"refused" in done.stderr, done
    assert slurm.calls() == []


# -- the gate's submit: per-user log folders, old logs moved in -----------------------
def test_submit_makes_the_users_log_folder_and_moves_their_old_logs_in(slurm):
    old = write_log(slurm, UID, "17", "old log of alice\n", old=True)
    others = write_log(slurm, OTHER, "18", "old log of someone else\n", old=True)
    taken = write_log(slurm, UID, "19", "the new one\n")
    clash = write_log(slurm, UID, "19", "an old one of the same job\n", old=True)
    slurm.answers("sbatch", out="20\n")
    assert submit(slurm, request()).returncode == 0
    folder = slurm.root / "logs" / UID
    assert folder.is_dir() and oct(folder.stat().st_mode & 0o777) == "0o700"
    assert (folder / "17.log").read_text() == "old log of alice\n" and not old.exists()
    assert others.read_text() == "old log of someone else\n"  # another user's: left where it is
    assert taken.read_text() == "the new one\n" and clash.read_text() == "an old one of the same job\n"
    [call] = slurm.calls()
    assert f"--output={slurm.root.resolve()}/logs/{UID}/%j.log" in call["argv"]


# -- the gate's submit: the storage cap --------------------------------------------
def fill(slurm, mib: int, sparse: bool = True) -> Path:
    folder = slurm.root / "users" / UID
    (folder / "work").mkdir(parents=True, exist_ok=True)
    (folder / "work" / "notes.txt").write_text("keep me\n")
    big = folder / "work" / "big.dat"
    with big.open("wb") as out:
        if sparse:
            out.truncate(mib * 1024 * 1024)
        else:
            out.write(b"\0" * (mib * 1024 * 1024))
    return folder


def test_a_user_over_the_cap_is_told_so_and_no_job_starts(slurm):
    slurm.settings(job_name_prefix="hpcgw-hub", profiles=json.loads((slurm.root / "etc" / "gateway.json")
                   .read_text())["profiles"], user_storage_cap_mb=10)
    folder = fill(slurm, 12)
    slurm.answers("sbatch", out="21\n")
    done = submit(slurm, request())
    assert done.returncode == 126 and done.stdout == b""
    message = done.stderr.decode()
    assert message.startswith("hpcgw-gate: refused: for the user: your files use 12.0 MiB of the 10.0 MiB"), message
    assert slurm.calls() == []
    assert (folder / "work" / "notes.txt").read_text() == "keep me\n"
    assert (folder / "work" / "big.dat").stat().st_size == 12 * 1024 * 1024


@pytest.mark.parametrize(("cap", "mib", "starts"), [(10, 9, True), (0, 50, True), (10, 11, False)])
def test_the_cap_counts_real_files_and_zero_is_no_cap(slurm, cap, mib, starts):
    profiles = json.loads((slurm.root / "etc" / "gateway.json").read_text())["profiles"]
    slurm.settings(job_name_prefix="hpcgw-hub", profiles=profiles, user_storage_cap_mb=cap)
    fill(slurm, mib, sparse=False)
    slurm.answers("sbatch", out="22\n")
    assert (submit(slurm, request()).returncode == 0) is starts


@pytest.mark.parametrize("cap", [-1, "10", 1.5, True])
def test_a_bad_cap_in_the_settings_refuses(slurm, cap):
    profiles = json.loads((slurm.root / "etc" / "gateway.json").read_text())["profiles"]
    slurm.settings(job_name_prefix="hpcgw-hub", profiles=profiles, user_storage_cap_mb=cap)
    done = submit(slurm, request())
    assert done.returncode == 126 and b"user_storage_cap_mb" in done.stderr and slurm.calls() == []


# -- the job wrapper: a file may not grow past the cap --------------------------------
def test_no_file_the_notebook_writes_grows_past_the_cap(tmp_path):
    job = load_script(JOB, "hpcgw_job_logs")
    assert job.file_size_limit({"user_storage_cap_mb": 0}) is None
    code = ("import sys\nf = open(sys.argv[1], 'wb')\n"
            "try:\n    f.write(b'x' * (3 * 1024 * 1024)); f.flush(); print('wrote')\n"
            "except OSError as e:\n    print(e.errno)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f")], capture_output=True, text=True,
                          preexec_fn=job.file_size_limit({"user_storage_cap_mb": 2}), check=False)
    assert done.stdout.strip() == "27", done  # EFBIG
    assert (tmp_path / "f").stat().st_size <= 2 * 1024 * 1024
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY or os.name != "posix"


# -- the hub: what the user sees ----------------------------------------------------------
class LoggingGate(ScriptedGate):
    """A gate whose job log holds this start's secrets (as a careless notebook might print them)."""

    async def log(self, user_id: str, job_id: str) -> GateResult:
        self.calls.append(("log", f"{user_id} {job_id}"))
        spawner = self.spawner
        text = (f"hpcgw-job: starting\nnotebook: my secret is {spawner.port_secret}\n"
                f"notebook: and {spawner.api_token} too\nnotebook: shh {spawner.environment['JUPYTERHUB_X_KEY']}\n"
                "hpcgw-job: error: the notebook exited 1 before it listened\n")
        return GateResult(0, text, "")


def test_a_failed_start_shows_its_logs_tail_without_secrets(new_spawner, hub_db):
    gate = LoggingGate(status=["PENDING n/a Resources", "GONE"])
    spawner = new_spawner(gate, environment={"JUPYTERHUB_X_KEY": "shortkey"})
    spawner.api_token = token = "aB3-not-shaped-like-hex"  # the hub gives every start one
    with pytest.raises(web.HTTPError) as failed:
        run(spawner.start())
    message = failed.value.jupyterhub_message
    assert "ended before the notebook started" in message
    assert message.endswith("hpcgw-job: error: the notebook exited 1 before it listened")
    assert ("log", f"{spawner.user_id} 77") in gate.calls
    for secret in (spawner.port_secret, token, "shortkey"):
        assert secret and secret not in message, message
    assert spawner.job_id == ""  # still forgotten once gone


def test_a_failed_start_without_a_log_says_what_it_said(new_spawner, hub_db):
    gate = ScriptedGate(status=["GONE"], log=[""])
    spawner = new_spawner(gate)
    with pytest.raises(web.HTTPError) as failed:
        run(spawner.start())
    assert failed.value.jupyterhub_message == (
        f"The notebook job ended before the notebook started (cluster log: /home/gateway/hpcgw/logs/"
        f"{spawner.user_id}/77.log).")


def test_the_gates_words_for_the_user_reach_the_user_and_no_job(new_spawner, hub_db):
    words = "your files use 12.0 GiB of the 10.0 GiB each user may keep; delete or move out at least 2.0 GiB"
    gate = ScriptedGate(submit=[Fail(f"hpcgw-gate: refused: for the user: {words}\n", 126)])
    spawner = new_spawner(gate)
    with pytest.raises(web.HTTPError) as failed:
        run(spawner.start())
    assert failed.value.status_code == 403
    assert failed.value.jupyterhub_message == f"The cluster did not start your notebook: {words}"
    assert gate.verbs() == ["submit"]


def test_other_gate_refusals_stay_generic(new_spawner, hub_db):
    gate = ScriptedGate(submit=[Fail("hpcgw-gate: refused: image 'x' is not an image of this cluster\n", 126)])
    with pytest.raises(web.HTTPError) as failed:
        run(new_spawner(gate).start())
    assert failed.value.status_code == 503 and "image" not in str(failed.value)


def test_the_hubs_gate_asks_only_for_a_user_id_and_a_job_id(monkeypatch):
    from hpcgw_hub.gate import Gate

    sent = []

    async def call(self, *command, stdin=None):
        sent.append(command)
        return GateResult(0, "tail\n", "")

    monkeypatch.setattr(Gate, "call", call)
    gate = Gate(host="login", user="gateway", key="/k", known_hosts="/kh")
    assert run(gate.log(UID, "42")).stdout == "tail\n"
    assert sent == [("log", UID, "42")]
    for user, job in ((UID, "4 2"), (UID, "x"), ("u-../../etc", "1"), (f"{UID};id", "1"), (UID.upper(), "1")):
        with pytest.raises(ValueError):
            run(gate.log(user, job))
    assert len(sent) == 1


def test_a_log_the_cluster_cannot_give_leaves_the_message_as_it_was(new_spawner, hub_db):
    gate = ScriptedGate(status=["GONE"], log=[Fail("ssh: connect to host login port 22: Connection refused", 255)])
    spawner = new_spawner(gate)
    with pytest.raises(web.HTTPError) as failed:
        run(spawner.start())
    assert failed.value.status_code == 500
    assert failed.value.jupyterhub_message.endswith(f"{spawner.user_id}/77.log).")
