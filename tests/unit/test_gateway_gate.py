"""hpcgw-gate (roles/gateway/files/hpcgw-gate), the forced command of the
hub's key: it runs exactly the allowed Slurm commands with exact argv and
refuses everything else with exit 126 without running anything. `submit`
takes a JSON request, never a batch script: the gate builds the job itself
from the cluster's own settings (etc/gateway.json, etc/images.json), and
status, cancel and list see only this hub's jobs.

The gate runs from a copy in a tmp gateway folder (<root>/bin/hpcgw-gate,
beside <root>/etc); Slurm's commands are fakes on PATH that record their
argv, stdin and environment and answer what a test tells them to.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_scripts import load_script

from hpcgw_hub.options import OptionsError
from hpcgw_hub.options import validate as hub_validate
from test_hub_spawner import PROFILES as HUB_PROFILES

GATE = Path(__file__).resolve().parents[2] / "roles" / "gateway" / "files" / "hpcgw-gate"
ACCOUNT = pwd.getpwuid(os.geteuid()).pw_name
PREFIX = "hpcgw-hub"
UID = "u-2bd806c97f0e00af1a1f"
OURS = f"{PREFIX}-{UID}"

FAKE = """#!{python}
import json, os, sys
here = {here!r}
name = os.path.basename(sys.argv[0])
argv = [name] + sys.argv[1:]
stdin = sys.stdin.buffer.read().decode("utf-8", "replace")
with open(os.path.join(here, "calls.jsonl"), "a") as calls:
    calls.write(json.dumps({{"argv": argv, "stdin": stdin}}) + "\\n")
with open(os.path.join(here, "env.jsonl"), "a") as envs:
    envs.write(json.dumps(dict(os.environ)) + "\\n")
answers = json.load(open(os.path.join(here, "answers.json"))) if os.path.exists(os.path.join(here, "answers.json")) else {{}}
for when, out, err, rc in answers.get(name, []):
    if when is None or when in argv:
        sys.stdout.write(out)
        sys.stderr.write(err)
        sys.exit(rc)
"""

# The hub's test profiles, the gpu one also offering an image the cluster no longer has.
PROFILES = [HUB_PROFILES[0], {**HUB_PROFILES[1], "images": [*HUB_PROFILES[1]["images"], "retired"]}]
IMAGES = ["notebook", "datascience", "cuda"]  # "retired" is offered by a profile but no longer on the cluster


class Slurm:
    """A gateway folder with the gate and its settings, and fake Slurm
    commands (and traps: id, sh, bash) in a tmp folder."""

    def __init__(self, here: Path):
        self.here = here
        self.root = here / "gw"
        (self.root / "bin").mkdir(parents=True)
        (self.root / "etc").mkdir()
        (self.root / "logs").mkdir(mode=0o700)  # as the gateway role makes it
        shutil.copy(GATE, self.root / "bin" / "hpcgw-gate")
        # The rules it imports from beside it, as the gateway role installs them.
        shutil.copy(GATE.parent / "hpcgw_rules.py", self.root / "bin" / "hpcgw_rules.py")
        self.settings(job_name_prefix=PREFIX, profiles=PROFILES)
        (self.root / "etc" / "images.json").write_text(json.dumps(
            {"runtime": "/usr/bin/apptainer", "runtime_kind": "apptainer",
             "images": [{"name": name, "path": f"/x/{name}.sif"} for name in IMAGES]}))
        self.bin = here / "bin"
        self.bin.mkdir()
        for name in ("sbatch", "squeue", "scancel", "id", "sh", "bash"):
            path = self.bin / name
            path.write_text(FAKE.format(python=sys.executable, here=str(here)))
            path.chmod(0o755)
        self._answers: dict = {}

    def settings(self, **config) -> None:
        base = {"hub_host": "hub", "hub_ssh_port": 22, "hub_api_port": 8081, "tunnel_user": "tunnelbot",
                "tunnel_key": "/k", "known_hosts": "/kh", "users_dir": f"{self.root}/users", "start_timeout": 120}
        (self.root / "etc" / "gateway.json").write_text(json.dumps({**base, **config}))

    def answers(self, name: str, out: str = "", err: str = "", rc: int = 0, when: str | None = None) -> None:
        """What `name` answers; with `when`, only when that word is in its argv (checked first)."""
        entries = [e for e in self._answers.get(name, []) if e[0] != when]
        entry = [when, out, err, rc]
        self._answers[name] = [entry, *entries] if when is not None else [*entries, entry]
        (self.here / "answers.json").write_text(json.dumps(self._answers))

    def calls(self) -> list[dict]:
        path = self.here / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def envs(self) -> list[dict]:
        path = self.here / "env.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def gate(self, command: str | None, stdin: bytes = b"", **env) -> subprocess.CompletedProcess:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.here), **env}
        if command is not None:
            env["SSH_ORIGINAL_COMMAND"] = command
        return subprocess.run(
            [sys.executable, "-I", str(self.root / "bin" / "hpcgw-gate")], input=stdin, env=env,
            capture_output=True, timeout=30, check=False,
        )


@pytest.fixture
def slurm(tmp_path: Path) -> Slurm:
    return Slurm(tmp_path)


def request(**change) -> dict:
    body = {"user_id": UID, "profile": "compute", "image": "notebook", "minutes": 60, "cpus": 1,
            "memory_mb": 1024, "gpus": 0,
            "env": {"JUPYTERHUB_API_TOKEN": "t0k3n", "JUPYTERHUB_USER": "alice",
                    "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/", "HPCGW_PORT_SECRET": "s3cr3t"}}
    body.update(change)
    return body


def submit(slurm: Slurm, body, **env) -> subprocess.CompletedProcess:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return slurm.gate("submit", raw, **env)


# -- submit: the gate builds the job -------------------------------------------
def test_submit_builds_the_job_from_the_checked_request(slurm, tmp_path):
    slurm.answers("sbatch", out="4242\n")
    done = submit(slurm, request())
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"4242\n"
    [call] = slurm.calls()
    root = str(slurm.root.resolve())
    assert call["argv"] == [
        "sbatch", "--parsable", f"--job-name={OURS}", "--partition=compute", "--time=60", "--cpus-per-task=1",
        "--mem=1024M", f"--output={root}/logs/{UID}/%j.log", f"--chdir={root}", "--comment=user=- globus=-",
    ]
    script = call["stdin"]
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and lines[-1] == f"exec {root}/bin/hpcgw-job"
    assert not [line for line in lines if line.startswith("#SBATCH")]
    # Run the exports in a real shell: each value arrives verbatim.
    exports = "\n".join(line for line in lines if line.startswith("export "))
    shown = subprocess.run(["/bin/bash", "-c", exports + "\nenv"], capture_output=True, text=True, check=True,
                           cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}).stdout.splitlines()
    assert {"JUPYTERHUB_API_TOKEN=t0k3n", "JUPYTERHUB_USER=alice", "JUPYTERHUB_SERVICE_PREFIX=/user/alice/",
            "HPCGW_PORT_SECRET=s3cr3t", f"HPCGW_USER_ID={UID}", "HPCGW_IMAGE=notebook", "HPCGW_GPUS=0"} <= set(shown)
    # Secrets go on stdin, never in argv (visible to every user of the login node).
    assert "t0k3n" not in " ".join(call["argv"]) and "s3cr3t" not in " ".join(call["argv"])


def test_submit_asks_for_gpus_of_a_gpu_profile(slurm):
    slurm.answers("sbatch", out="4243;cluster\n")
    done = submit(slurm, request(profile="gpu", image="cuda", minutes=60, memory_mb=2048, gpus=2))
    assert (done.returncode, done.stdout) == (0, b"4243\n"), done.stderr
    [call] = slurm.calls()
    assert "--partition=gpu" in call["argv"] and call["argv"][-1] == "--gres=gpu:2"
    assert "export HPCGW_GPUS=2" in call["stdin"] and "export HPCGW_IMAGE=cuda" in call["stdin"]


def test_sbatch_gets_the_accounts_basics_not_what_an_ssh_client_sent(slurm):
    slurm.answers("sbatch", out="7\n")
    done = submit(slurm, request(), LC_ALL="x", SBATCH_OUTPUT="/home/gateway/.ssh/authorized_keys",
                  SBATCH_EXPORT="NONE", SLURM_CONF="/etc/slurm/slurm.conf", USER="gateway", LANG="C.UTF-8",
                  BASH_ENV="/tmp/x")
    assert done.returncode == 0, done.stderr
    submit(slurm, request(), LANG="C;$(id)")
    with_locale, odd_locale = slurm.envs()
    assert not {"SBATCH_OUTPUT", "SBATCH_EXPORT", "LC_ALL", "SSH_ORIGINAL_COMMAND", "BASH_ENV"} & set(with_locale)
    assert with_locale["SLURM_CONF"] == "/etc/slurm/slurm.conf" and with_locale["USER"] == "gateway"
    assert with_locale["LANG"] == "C.UTF-8" and "LANG" not in odd_locale


def test_submit_reports_sbatch_errors(slurm):
    message = "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
    slurm.answers("sbatch", err=message, rc=1)
    done = submit(slurm, request())
    assert done.returncode == 1
    assert done.stdout == b""
    assert message.encode() in done.stderr


HOSTILE_SCRIPT = (b"#!/bin/bash\n#SBATCH --output=/home/gateway/.ssh/authorized_keys\n"
                  b"echo 'ssh-ed25519 AAAA attacker'\n")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (HOSTILE_SCRIPT, b"not a JSON object"),
        (b"", b"not a JSON object"),
        (b"[]", b"not a JSON object"),
        (b"\xff\xfe{}", b"not a JSON object"),
        (b"{" + b" " * (64 * 1024) + b"}", b"larger than"),
        (json.dumps(request()).encode()[:-1] + b', "user_id": "u-0000000000000000ffff"}', b"twice"),
        (json.dumps(request(minutes=float("nan"))).encode(), b"NaN"),
    ],
    ids=["batch-script", "empty", "list", "not-utf8", "over-64KiB", "duplicate-key", "nan"],
)
def test_submit_refuses_what_is_not_one_request(slurm, body, why):
    slurm.answers("sbatch", out="1\n")
    done = submit(slurm, body)
    assert done.returncode == 126, done.stderr
    assert why in done.stderr
    assert slurm.calls() == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        # The file and folder a job writes: only the gate chooses them.
        ({"output": "/home/gateway/.ssh/authorized_keys"}, "unknown: 'output'"),
        ({"chdir": "/home/gateway/.ssh"}, "unknown: 'chdir'"),
        ({"script": "id"}, "unknown: 'script'"),
        ({"partition": "debug"}, "unknown: 'partition'"),
        ({"user_id": "../../.ssh/authorized_keys"}, "user_id must be u- and 20 hex digits"),
        ({"user_id": UID + "\n#SBATCH --output=/x"}, "user_id must be u- and 20 hex digits"),
        ({"user_id": UID.upper()}, "user_id must be u- and 20 hex digits"),
        ({"user_id": 7}, "user_id must be u- and 20 hex digits"),
        ({"profile": "debug"}, "profile must be one of compute, gpu (asked: 'debug')"),
        ({"profile": "compute --output=/x"}, "profile must be one of compute, gpu"),
        ({"image": "cuda"}, "image 'cuda' is not offered with profile compute"),
        ({"image": "../../bin/sh"}, "is not offered with profile compute"),
        ({"profile": "gpu", "image": "retired", "minutes": 30, "memory_mb": 1024, "gpus": 1},
         "image 'retired' is not an image of this cluster"),
        ({"minutes": 481}, "minutes must be between 1 and 480 (asked: 481)"),
        ({"minutes": "60 --output=/x"}, "minutes must be a whole number"),
        ({"cpus": 3}, "cpus must be between 1 and 2 (asked: 3)"),
        ({"cpus": True}, "cpus must be a whole number, not True"),
        ({"memory_mb": 10**9}, "memory_mb must be between 1 and 4096"),
        ({"memory_mb": 0}, "memory_mb must be between 1 and 4096"),
        ({"gpus": 1}, "gpus must be between 0 and 0 (asked: 1)"),
        ({"minutes": 1.5}, "minutes must be a whole number, not 1.5"),
    ],
    ids=repr,
)
def test_submit_refuses_requests_outside_the_clusters_settings(slurm, change, why):
    slurm.answers("sbatch", out="1\n")
    body = request(**change)
    if "output" in change or "chdir" in change or "script" in change or "partition" in change:
        body = {**request(), **change}
    done = submit(slurm, body)
    assert done.returncode == 126, done.stderr
    assert why in done.stderr.decode()
    assert slurm.calls() == []


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"LD_PRELOAD": "/tmp/x.so"}, "not 'LD_PRELOAD'"),
        ({"PATH": "/tmp"}, "not 'PATH'"),
        ({"HPCGW_USER_ID": "u-0000000000000000ffff"}, "not 'HPCGW_USER_ID'"),
        ({"HPCGW_GATEWAY_CONFIG": "/tmp/evil.json"}, "not 'HPCGW_GATEWAY_CONFIG'"),
        ({"BASH_ENV": "/tmp/x"}, "not 'BASH_ENV'"),
        ({"JUPYTERHUB_X; id": "1"}, "not 'JUPYTERHUB_X; id'"),
        ({"jupyterhub_user": "x"}, "not 'jupyterhub_user'"),
        ({"JUPYTERHUB_USER": "alice\n#SBATCH --output=/x"}, "JUPYTERHUB_USER holds a control character"),
        ({"JUPYTERHUB_USER": "alice\x00"}, "holds a control character"),
        ({"JUPYTERHUB_USER": "alice\x1b[2J"}, "holds a control character"),
        ({"JUPYTERHUB_USER": "alice\x85"}, "holds a control character"),
        ({"HPCGW_PORT_SECRET": "s\r"}, "HPCGW_PORT_SECRET holds a control character"),
        ({"JUPYTERHUB_USER": "a" * 4097}, "longer than 4096"),
        ({"JUPYTERHUB_USER": 1}, "JUPYTERHUB_USER must be a string"),
        ({f"JUPYTERHUB_X{i}": "1" for i in range(65)}, "more than 64 variables"),
        ([["JUPYTERHUB_USER", "x"]], "env must be a JSON object"),
    ],
    ids=repr,
)
def test_submit_refuses_bad_environment_names_and_values(slurm, env, why):
    slurm.answers("sbatch", out="1\n")
    body = request()
    body["env"] = {**body["env"], **env} if isinstance(env, dict) else env
    done = submit(slurm, body)
    assert done.returncode == 126, done.stderr
    assert why in done.stderr.decode()
    assert slurm.calls() == []


def test_every_value_is_shell_quoted_in_the_script(slurm, tmp_path):
    hostile = "x'; touch pwned; echo '$(touch pwned2)`touch pwned3` #SBATCH --uid=0 \u00e9"
    slurm.answers("sbatch", out="9\n")
    body = request()
    body["env"]["JUPYTERHUB_USER"] = hostile
    assert submit(slurm, body).returncode == 0
    script = slurm.calls()[0]["stdin"]
    run = tmp_path / "run"
    run.mkdir()
    exports = "\n".join(line for line in script.splitlines() if line.startswith("export "))
    shown = subprocess.run(["/bin/bash", "-c", exports + '\nprintf "%s" "$JUPYTERHUB_USER"'],
                           capture_output=True, text=True, check=True, cwd=run).stdout
    assert shown == hostile
    assert not list(run.iterdir())


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ({"profiles": PROFILES}, "job_name_prefix"),
        ({"job_name_prefix": "a b", "profiles": PROFILES}, "job_name_prefix"),
        ({"job_name_prefix": PREFIX}, "profiles must be a non-empty list"),
        ({"job_name_prefix": PREFIX, "profiles": [{**PROFILES[0], "partition": "x --output=/y"}]},
         "profiles[0].partition"),
    ],
    ids=["no-prefix", "bad-prefix", "no-profiles", "bad-partition"],
)
def test_submit_refuses_everything_when_the_settings_are_wrong(slurm, config, why):
    slurm.settings(**config)
    done = submit(slurm, request())
    assert done.returncode == 126
    assert why in done.stderr.decode()
    assert slurm.calls() == []


def test_submit_refuses_everything_without_images_json(slurm):
    (slurm.root / "etc" / "images.json").unlink()
    done = submit(slurm, request())
    assert done.returncode == 126 and b"no image settings" in done.stderr
    assert slurm.calls() == []


# -- the profile rule: the gate's copy agrees with hpcgw_hub.options ------------
def load_gate():
    return load_script(GATE, "hpcgw_gate")


AGREEMENT_CASES = [
    {}, {"profile": "gpu"}, {"profile": "gpu", "image": "notebook", "minutes": 60, "cpus": 1, "memory_mb": 2048,
                             "gpus": 0},
    {"profile": "debug"}, {"profile": ["gpu"]}, {"profile": None}, {"image": "cuda"}, {"image": 3},
    {"image": "../../etc/passwd"}, {"minutes": 480}, {"minutes": 481}, {"minutes": 0}, {"minutes": 1.0},
    {"minutes": "60"}, {"cpus": True}, {"cpus": None}, {"cpus": 2}, {"cpus": 3}, {"memory_mb": -1},
    {"memory_mb": 4096}, {"gpus": 1}, {"profile": "gpu", "gpus": 2}, {"profile": "gpu", "gpus": 3},
    {"partition": "gpu"}, {"req_options": "--uid=0"}, ["profile"], "compute", None,
]


@pytest.mark.parametrize("options", AGREEMENT_CASES, ids=repr)
def test_the_gates_profile_rule_is_the_hubs(options):
    gate = load_gate()
    try:
        hub = ("ok", hub_validate(options, PROFILES).__dict__)
    except OptionsError as error:
        hub = ("refused", str(error))
    try:
        ours = ("ok", gate.validate(options, PROFILES))
    except gate.Refused as error:
        ours = ("refused", str(error))
    assert ours == hub


# -- status, cancel, list: this hub's jobs only ---------------------------------
def squeue_argv(job_id: str, fmt: str = "%T %B %j") -> list[str]:
    return ["squeue", "-h", "-j", job_id, "-u", ACCOUNT, "-o", fmt]


@pytest.mark.parametrize(
    ("squeue_out", "printed"),
    [
        (f"RUNNING cluster {OURS}\n", "RUNNING cluster None"),
        (f"CONFIGURING c17 {OURS}\n", "CONFIGURING c17 None"),
        (f"COMPLETING c17 {OURS}\n", "COMPLETING c17 None"),
        ("", "GONE"),
    ],
    ids=["running", "configuring", "completing", "empty-answer"],
)
def test_status_of_this_hubs_job(slurm, squeue_out, printed):
    slurm.answers("squeue", out=squeue_out)
    done = slurm.gate("status 123")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == printed + "\n"
    assert slurm.calls() == [{"argv": squeue_argv("123"), "stdin": ""}]


def test_status_of_a_pending_job_gives_its_reason(slurm):
    slurm.answers("squeue", out=f"PENDING n/a {OURS}\n")
    slurm.answers("squeue", out="ReqNodeNotAvail, UnavailableNodes:c[1-2]\n", when="%r")
    done = slurm.gate("status 123")
    assert done.stdout.decode() == "PENDING n/a ReqNodeNotAvail, UnavailableNodes:c[1-2]\n"
    assert [call["argv"] for call in slurm.calls()] == [squeue_argv("123"), squeue_argv("123", "%r")]


FOREIGN = [
    "RUNNING c1 image-build",                       # the gateway account's own job (an image build)
    f"RUNNING c1 hpcgw-other-{UID}",                # another hub's job
    f"RUNNING c1 {PREFIX}-site",                    # this prefix, not a hub job name
    f"RUNNING c1 {OURS}x",
    f"RUNNING c1 {OURS} trailing",
    f"RUNNING c1 x{OURS}",
    f"RUNNING c1 {OURS}\nRUNNING c1 {OURS}",        # two answers for one id
]


@pytest.mark.parametrize("line", FOREIGN, ids=repr)
def test_status_of_a_job_not_this_hubs_reveals_nothing(slurm, line):
    slurm.answers("squeue", out=line + "\n")
    done = slurm.gate("status 77")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"GONE\n", b"")
    assert [call["argv"] for call in slurm.calls()] == [squeue_argv("77")]


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


def test_cancel_of_this_hubs_job_runs_scancel(slurm):
    slurm.answers("squeue", out=f"RUNNING c1 {OURS}\n")
    done = slurm.gate("cancel 55")
    assert (done.returncode, done.stdout) == (0, b"")
    assert slurm.calls() == [{"argv": squeue_argv("55"), "stdin": ""}, {"argv": ["scancel", "55"], "stdin": ""}]


@pytest.mark.parametrize("line", FOREIGN, ids=repr)
def test_cancel_of_a_job_not_this_hubs_touches_nothing(slurm, line):
    slurm.answers("squeue", out=line + "\n")
    done = slurm.gate("cancel 55")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert [call["argv"][0] for call in slurm.calls()] == ["squeue"]


def test_cancel_of_a_job_slurm_forgot_succeeds(slurm):
    slurm.answers("squeue", err="slurm_load_jobs error: Invalid job id specified\n", rc=1)
    assert slurm.gate("cancel 55").returncode == 0
    assert [call["argv"][0] for call in slurm.calls()] == ["squeue"]


def test_cancel_of_a_job_ending_meanwhile_succeeds(slurm):
    slurm.answers("squeue", out=f"RUNNING c1 {OURS}\n")
    slurm.answers("scancel", err="scancel: error: Kill job error on job id 55: Invalid job id specified\n", rc=1)
    assert slurm.gate("cancel 55").returncode == 0


def test_cancel_reports_other_errors(slurm):
    slurm.answers("squeue", out=f"RUNNING c1 {OURS}\n")
    slurm.answers("scancel", err="scancel: error: Kill job error on job id 55: Access/permission denied\n", rc=1)
    done = slurm.gate("cancel 55")
    assert done.returncode == 1
    assert b"Access/permission denied" in done.stderr


def test_cancel_when_squeue_fails_is_an_error_and_cancels_nothing(slurm):
    slurm.answers("squeue", err="slurm_load_jobs error: Unable to contact slurm controller\n", rc=1)
    done = slurm.gate("cancel 55")
    assert done.returncode == 1
    assert [call["argv"][0] for call in slurm.calls()] == ["squeue"]


LIST_ARGV = ["squeue", "-h", "-u", ACCOUNT, "-o", "%i|%T|%B|%S|%r|%j"]


def test_list_shows_only_this_hubs_jobs(slurm):
    other = "u-0000000000000000ffff"
    slurm.answers("squeue", out=(
        f"11|RUNNING|c1|2026-11-30T20:00:00|None|{OURS}\n"
        "12|PENDING|n/a|N/A|Priority|something-else\n"
        f"13|PENDING||2026-11-30T21:07:00|ReqNodeNotAvail, UnavailableNodes:c[1-2]|{PREFIX}-{other}\n"
        f"14|RUNNING|c1|N/A|None|hpcgw-other-{UID}\n"
        f"15|RUNNING|c1|N/A|None|{PREFIX}-image-build\n"
        f"16|COMPLETING|c2|N/A||{OURS}\n"
        f"17|RUNNING|c1|N/A|None|{OURS} trailing\n"      # a name with a space: not this hub's
        f"18|RUNNING|c1|N/A|None|{OURS}|x\n"            # a name with '|': not this hub's
        f"19|PENDING|n/a|N/A\x1b[2J|Pri\x1bority|{OURS}\n"  # no control characters, one word a field
    ))
    done = slurm.gate(f"list {PREFIX}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        f"11 {OURS} RUNNING c1 2026-11-30T20:00:00 None",
        f"13 {PREFIX}-{other} PENDING n/a 2026-11-30T21:07:00 ReqNodeNotAvail, UnavailableNodes:c[1-2]",
        f"16 {OURS} COMPLETING c2 N/A None",
        f"19 {OURS} PENDING n/a N/A Priority",
    ]
    assert slurm.calls() == [{"argv": LIST_ARGV, "stdin": ""}]
    # Another prefix sees nothing of this hub's, nor of the other hub's jobs.
    assert slurm.gate("list hpcgw-other").stdout == b""


def test_list_lines_are_what_the_hub_parses(slurm):
    """The gate's `list` and the hub's parse_listing agree (one contract)."""
    from hpcgw_hub.gate import ListedJob, parse_listing

    slurm.answers("squeue", out=f"21|PENDING|n/a|2026-11-30T21:07:00|Resources|{OURS}\n")
    jobs = parse_listing(slurm.gate(f"list {PREFIX}").stdout.decode())
    assert jobs == {"21": ListedJob("21", OURS, "PENDING", "n/a", "2026-11-30T21:07:00", "Resources")}


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
    slurm.answers("squeue", out=f"RUNNING cluster {OURS}\n")
    slurm.answers("sbatch", out="1\n")
    done = slurm.gate(command, json.dumps(request()).encode())
    assert done.returncode == 126
    assert done.stdout == b""
    assert b"refused" in done.stderr
    assert slurm.calls() == []
