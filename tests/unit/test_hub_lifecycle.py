"""GatewaySpawner's lifecycle against a scripted gate (start, poll, stop).

In the style of batchspawner's tests/test_spawners.py: a real JupyterHub
User and ORM (a sqlite file), the spawner made by User._new_spawner as the
hub makes it, and the cluster replaced by a fake gate whose every verb
answers from a script. Each rule of docs/spawning.md's lifecycle has a test
here that fails when the rule is broken; molecule keeps the wiring (the real
gate, Slurm, SSH) and the slow cases (iptables, a node's slurmd down).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from dataclasses import dataclass

import pytest
from batchspawner import JobStatus
from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.user import User
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from tornado import web

from hpcgw_hub.gate import GateResult
from hpcgw_hub.spawner import GatewaySpawner

PROFILES = [{"name": "compute", "label": "CPU notebook", "partition": "compute", "default_minutes": 60,
             "max_minutes": 480, "default_cpus": 1, "max_cpus": 2, "default_memory_mb": 1024,
             "max_memory_mb": 4096, "images": ["notebook"]}]
PORT = 40123


# -- the scripted gate ---------------------------------------------------------
@dataclass
class Fail:
    """A gate call that did not get an answer: SSH down (255), no answer in time (None)..."""

    stderr: str = "ssh: connect to host login port 22: Connection refused"
    returncode: int | None = 255


@dataclass
class Report:
    """A status answer after which the job's wrapper reports the notebook's port."""

    status: str = f"RUNNING c1 {PORT}"
    port: int = PORT


class ScriptedGate:
    """The cluster as the spawner sees it: each verb answers from its own list
    (a str: exit 0 with that output; Fail; Report), the last answer repeated.
    Every call is recorded in `calls` as (verb, argument)."""

    def __init__(self, submit=("77",), status=("RUNNING c1 None",), cancel=("",), log=("",)):
        self.script = {"submit": list(submit), "status": list(status), "cancel": list(cancel), "log": list(log)}
        self.calls: list[tuple[str, str]] = []
        self.spawner: GatewaySpawner | None = None
        self.start = "N/A"  # Slurm's estimated start of a pending job

    def _answer(self, verb: str) -> GateResult:
        answers = self.script[verb]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Fail):
            return GateResult(answer.returncode, "", answer.stderr)
        if isinstance(answer, Report):
            # The wrapper's callback arrives while the spawner waits (hpcgw_hub.callback).
            asyncio.get_running_loop().call_soon(self.spawner.notebook_port_reported, answer.port)
            answer = answer.status
        return GateResult(0, answer + "\n", "")

    async def submit(self, request: str) -> GateResult:
        self.calls.append(("submit", json.loads(request)["user_id"]))
        return self._answer("submit")

    async def status(self, job_id: str) -> GateResult:
        self.calls.append(("status", job_id))
        return self._answer("status")

    async def list_jobs(self, prefix: str) -> GateResult:
        """The shared listing of this hub's jobs: the next scripted status of
        the spawner's job, as the gate's `list` prints it (GONE: not listed)."""
        self.calls.append(("list", prefix))
        answer = self._answer("status")
        if not answer.ok:
            return answer
        status = answer.stdout.strip()
        if status == "GONE":
            return GateResult(0, "", "")
        state, node, reason = (status.split(" ", 2) + ["n/a", "None"])[:3]
        start = self.start if state == "PENDING" else "2026-11-30T10:00:00"
        name = f"hpcgw-{self.spawner.user_id}"
        return GateResult(0, f"{self.spawner.job_id} {name} {state} {node} {start} {reason}\n", "")

    async def cancel(self, job_id: str) -> GateResult:
        self.calls.append(("cancel", job_id))
        return self._answer("cancel")

    async def log(self, user_id: str, job_id: str) -> GateResult:
        self.calls.append(("log", job_id))
        return self._answer("log")

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.calls if verb != "log"]


# -- a hub: ORM, user, spawner -------------------------------------------------
@pytest.fixture(scope="module")
def empty_hub_db(tmp_path_factory):
    """A hub database made once by JupyterHub (tables, alembic stamp), with alice."""
    path = tmp_path_factory.mktemp("hub") / "jupyterhub.sqlite"
    logging.getLogger("alembic").setLevel(logging.WARNING)
    db = orm.new_session_factory(f"sqlite:///{path}")()
    db.add(orm.User(name="alice"))
    db.commit()
    db.close()
    return path


@pytest.fixture
def hub_db(empty_hub_db, tmp_path):
    """Each test's own copy of the hub's database: a session, and a factory of new ones."""
    path = tmp_path / "jupyterhub.sqlite"
    shutil.copy(empty_hub_db, path)
    engine = create_engine(f"sqlite:///{path}")
    factory = sessionmaker(bind=engine)
    db = factory()
    yield db, factory
    db.close()
    engine.dispose()


@pytest.fixture
def sleeps(monkeypatch):
    """asyncio.sleep recorded and made instant (the retries' and stop's waits)."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay, result=None):
        slept.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return slept


@pytest.fixture
def new_spawner(hub_db, monkeypatch):
    """make(gate, **traits): the spawner the hub would make for alice, on `gate`."""
    db, _ = hub_db

    def make(gate: ScriptedGate, **traits) -> GatewaySpawner:
        monkeypatch.setattr(GatewaySpawner, "gate", property(lambda self: gate))
        orm_user = db.query(orm.User).filter_by(name="alice").one()
        user = User(orm_user, {"hub": Hub()})
        traits = {"cluster_host": "login", "gateway_root": "/home/gateway/hpcgw", "profiles": PROFILES,
                  "startup_poll_interval": 0.01, "pending_poll_interval": 0.01, "status_retry_delay": 0.5,
                  "poll_interval": 0, **traits}  # poll_interval 0: each poll() sees a fresh listing
        spawner = user._new_spawner("", spawner_class=GatewaySpawner, **traits)
        gate.spawner = spawner
        return spawner

    return make


def run(coroutine, timeout: float = 10):
    """Run one spawner call as the hub's event loop would, never for ever."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def saved_state(factory) -> dict:
    """alice's spawner state as a fresh connection to the database reads it."""
    session = factory()
    try:
        return session.query(orm.Spawner).one().state or {}
    finally:
        session.close()


# -- start ---------------------------------------------------------------------
def test_start_poll_stop(new_spawner, hub_db, sleeps):
    gate = ScriptedGate(status=["PENDING n/a Resources", "RUNNING c1 None", Report(), "RUNNING c1 None", "GONE"])
    spawner = new_spawner(gate)
    assert run(spawner.poll()) == 0  # no job: not running
    assert run(spawner.start()) == ("127.0.0.1", PORT)
    assert spawner.job_id == "77" and spawner.get_state() == {"job_id": "77", "job_status": f"RUNNING c1 {PORT}"}
    assert run(spawner.poll()) is None
    run(spawner.stop())
    assert gate.verbs() == ["submit", "list", "list", "list", "list", "cancel", "list"]
    assert run(spawner.poll()) == 1
    assert spawner.get_state() == {}


def test_start_saves_the_job_id_before_the_notebook_is_up(new_spawner, hub_db, caplog):
    """A hub restarted while a job waits in the queue must find the job (and the
    reaper, which cancels only jobs the hub does not know, must spare it)."""
    _, factory = hub_db
    seen = []

    class Watching(ScriptedGate):
        async def list_jobs(self, prefix):
            seen.append(saved_state(factory).get("job_id"))
            return await super().list_jobs(prefix)

    gate = Watching(status=["PENDING n/a Priority", Report()])
    spawner = new_spawner(gate)
    caplog.set_level(logging.WARNING)
    run(spawner.start())
    assert seen == ["77", "77"]  # in the database at the first status check, while the job waits
    assert "Spawner.db is deprecated" not in caplog.text


def test_a_job_vanishing_while_starting_fails_the_start_and_forgets_it(new_spawner, hub_db):
    gate = ScriptedGate(status=["PENDING n/a Resources", "GONE"])
    spawner = new_spawner(gate)
    with pytest.raises(web.HTTPError) as failed:
        run(spawner.start())
    assert failed.value.status_code == 500
    assert "ended before the notebook started" in failed.value.log_message
    assert "/home/gateway/hpcgw/logs/u-" in failed.value.log_message and "/77.log" in failed.value.log_message
    assert spawner.job_id == ""  # gone: nothing to stop
    assert run(spawner.poll()) == 0
    assert gate.verbs() == ["submit", "list", "list"]


def test_a_job_ending_while_starting_fails_the_start_and_keeps_its_id(new_spawner, hub_db):
    """JupyterHub stops a server whose start failed (User.stop: poll(), then
    stop() while poll() says it runs): the id must stay for that stop to wait."""
    gate = ScriptedGate(status=["PENDING n/a Resources", "COMPLETING c1 None", "GONE"])
    spawner = new_spawner(gate)
    with pytest.raises(web.HTTPError, match="ended before the notebook started"):
        run(spawner.start())
    assert spawner.job_id == "77"
    assert run(spawner.poll()) == 1


def test_an_unknown_status_while_starting_is_not_a_failure(new_spawner, hub_db, sleeps):
    """SSH trouble while the job starts: the start waits on (JupyterHub's
    start_timeout bounds it), it does not fail nor forget the job."""
    gate = ScriptedGate(status=[Fail(), Fail(), Fail(), Fail(returncode=None), "PENDING n/a None", Report()])
    spawner = new_spawner(gate, status_retries=1)
    assert run(spawner.start()) == ("127.0.0.1", PORT)
    assert gate.verbs() == ["submit"] + ["list"] * 6


@pytest.mark.parametrize("answer", ["", "Submitted batch job 77", "77 78", "sbatch: error: x"])
def test_a_submit_without_a_job_id_is_a_503_and_no_job(new_spawner, hub_db, answer):
    spawner = new_spawner(ScriptedGate(submit=[answer]))
    with pytest.raises(web.HTTPError) as refused:
        run(spawner.start())
    assert refused.value.status_code == 503
    assert spawner.job_id == "" and saved_state(hub_db[1]) == {}


def test_a_submit_the_gate_refuses_is_a_503(new_spawner, hub_db):
    spawner = new_spawner(ScriptedGate(submit=[Fail("hpcgw-gate: refused: cpus", returncode=1)]))
    with pytest.raises(web.HTTPError) as refused:
        run(spawner.start())
    assert refused.value.status_code == 503 and spawner.job_id == ""


def test_a_federated_job_id_is_taken_without_its_cluster(new_spawner, hub_db):
    gate = ScriptedGate(submit=["78;cluster2"], status=[Report()])
    spawner = new_spawner(gate)
    run(spawner.start())
    assert spawner.job_id == "78" and gate.calls[1] == ("list", "hpcgw")


def test_each_start_has_a_fresh_port_secret_and_only_it_is_accepted(new_spawner, hub_db):
    spawner = new_spawner(ScriptedGate(status=[Report()]))
    assert not spawner.port_secret_matches("")  # before any start: nothing matches
    run(spawner.start())
    first = spawner.port_secret
    assert spawner.port_secret_matches(first) and not spawner.port_secret_matches(first + "x")
    run(spawner.start())
    assert spawner.port_secret != first and not spawner.port_secret_matches(first)


def test_a_port_report_counts_only_while_the_start_waits(new_spawner, hub_db):
    spawner = new_spawner(ScriptedGate(status=[Report()]))
    assert spawner.notebook_port_reported(1234) is False  # no start waiting
    run(spawner.start())
    assert spawner.notebook_port_reported(1234) is False  # already reported
    assert spawner.port == PORT


# -- poll and the status check: unknown is not gone ----------------------------
@pytest.mark.parametrize("answer, expected", [
    ("RUNNING c1 None", JobStatus.RUNNING),
    ("PENDING n/a Priority", JobStatus.PENDING),
    ("CONFIGURING c1 None", JobStatus.PENDING),
    ("GONE", JobStatus.NOTFOUND),
    ("COMPLETING c1 None", JobStatus.UNKNOWN),
    ("STOPPED c1 None", JobStatus.UNKNOWN),
    (Fail(), JobStatus.UNKNOWN),
    (Fail("hpcgw-gate: squeue failed", returncode=1), JobStatus.UNKNOWN),
    (Fail("no answer from login within 20s", returncode=None), JobStatus.UNKNOWN),
])
def test_status_answers(new_spawner, hub_db, sleeps, answer, expected):
    spawner = new_spawner(ScriptedGate(status=[answer]))
    spawner.job_id = "77"
    assert run(spawner.query_job_status()) == expected


def test_an_unanswered_status_is_unknown_never_gone(new_spawner, hub_db, sleeps):
    """upstream batchspawner#315: an SSH or Slurm error taken for "the job is
    gone" loses a running notebook. Unknown: the server stays, and so its id."""
    gate = ScriptedGate(status=[Fail()])
    spawner = new_spawner(gate)
    spawner.load_state({"job_id": "77", "job_status": "RUNNING c1 None"})
    for _ in range(3):
        assert run(spawner.poll()) is None
    assert spawner.job_id == "77" and spawner.job_status == "UNKNOWN"
    gate.script["status"] = ["GONE"]
    assert run(spawner.poll()) == 1
    assert spawner.get_state() == {}


def test_a_failed_status_check_is_retried_with_a_doubling_delay(new_spawner, hub_db, sleeps):
    gate = ScriptedGate(status=[Fail(), Fail(), "RUNNING c1 None"])
    spawner = new_spawner(gate, status_retries=2, status_retry_delay=0.5)
    spawner.job_id = "77"
    assert run(spawner.query_job_status()) == JobStatus.RUNNING
    assert gate.verbs() == ["list"] * 3
    assert sleeps == [0.5, 1.0]


def test_retries_end_after_status_retries(new_spawner, hub_db, sleeps, caplog):
    gate = ScriptedGate(status=[Fail()])
    spawner = new_spawner(gate, status_retries=3, status_retry_delay=0.25)
    spawner.job_id = "77"
    assert run(spawner.query_job_status()) == JobStatus.UNKNOWN
    assert gate.verbs() == ["list"] * 4
    assert sleeps == [0.25, 0.5, 1.0]  # no sleep after the last try
    assert caplog.text.count("Status of job 77 unknown") == 4


def test_poll_keeps_a_pending_or_running_server(new_spawner, hub_db):
    gate = ScriptedGate(status=["PENDING n/a Resources", "RUNNING c1 None"])
    spawner = new_spawner(gate)
    spawner.job_id = "77"
    assert run(spawner.poll()) is None and spawner.state_ispending()
    assert run(spawner.poll()) is None and spawner.state_isrunning()


def test_a_restarted_hub_finds_the_job_in_the_database(new_spawner, hub_db):
    """The early save at work: a spawner made from the database after a
    restart polls (and so can stop) the job of a start that was cut short."""
    _, factory = hub_db
    gate = ScriptedGate(status=["PENDING n/a Resources"])
    first = new_spawner(gate)

    async def cut_short():
        task = asyncio.ensure_future(first.start())
        while "list" not in gate.verbs():
            await asyncio.sleep(0.001)
        task.cancel()  # the hub process dies while the job waits

    run(cut_short())
    after_restart = new_spawner(gate)
    after_restart.load_state(saved_state(factory))
    assert after_restart.job_id == "77"
    assert run(after_restart.poll()) is None


# -- stop: cancel, then wait until Slurm no longer lists the job ----------------
def test_stop_cancels_and_waits_until_the_job_is_gone(new_spawner, hub_db, sleeps):
    gate = ScriptedGate(status=["RUNNING c1 None", "COMPLETING c1 None", "COMPLETING c1 None", "GONE"])
    spawner = new_spawner(gate, stop_poll_interval=0.25)
    spawner.job_id = "77"
    run(spawner.stop())
    assert gate.calls == [("cancel", "77")] + [("list", "hpcgw")] * 4
    assert sleeps == [0.25, 0.5, 1.0]  # the interval doubles


def test_stop_waits_through_an_unknown_status(new_spawner, hub_db, sleeps):
    """SSH down during the stop: unknown is not gone, the stop goes on waiting."""
    gate = ScriptedGate(status=[Fail(), Fail(), Fail(), "GONE"])
    spawner = new_spawner(gate, status_retries=0)
    spawner.job_id = "77"
    run(spawner.stop())
    assert gate.verbs() == ["cancel"] + ["list"] * 4


def test_stop_polls_at_most_every_five_seconds(new_spawner, hub_db, sleeps):
    gate = ScriptedGate(status=["COMPLETING c1 None"] * 8 + ["GONE"])
    spawner = new_spawner(gate, stop_poll_interval=1)
    spawner.job_id = "77"
    run(spawner.stop())
    assert sleeps == [1, 2, 4, 5, 5, 5, 5, 5]


def test_stop_gives_up_after_stop_timeout_and_says_so(new_spawner, hub_db, caplog):
    gate = ScriptedGate(status=["COMPLETING c1 None"])
    spawner = new_spawner(gate, stop_timeout=0.2, stop_poll_interval=0.02)
    spawner.job_id = "77"
    run(spawner.stop())
    assert gate.verbs().count("list") >= 2
    assert "Job 77 of alice: Slurm did not confirm it is gone" in caplog.text


def test_stop_now_cancels_without_waiting(new_spawner, hub_db):
    gate = ScriptedGate(status=["RUNNING c1 None"])
    spawner = new_spawner(gate)
    spawner.job_id = "77"
    run(spawner.stop(now=True))
    assert gate.verbs() == ["cancel"]


def test_a_failed_cancel_is_retried_three_times(new_spawner, hub_db, sleeps):
    gate = ScriptedGate(cancel=[Fail()], status=["GONE"])
    spawner = new_spawner(gate)
    spawner.job_id = "77"
    run(spawner.stop())
    assert gate.verbs() == ["cancel"] * 3 + ["list"]
    gate.calls.clear()
    gate.script["cancel"] = [Fail(), ""]
    spawner.job_id = "77"
    run(spawner.stop())
    assert gate.verbs() == ["cancel", "cancel", "list"]


def test_stop_without_a_job_calls_nothing(new_spawner, hub_db):
    gate = ScriptedGate()
    run(new_spawner(gate).stop())
    assert gate.calls == []


# -- state and progress --------------------------------------------------------
def test_state_survives_a_reload(new_spawner, hub_db):
    spawner = new_spawner(ScriptedGate(status=[Report()]))
    run(spawner.start())
    state = spawner.get_state()
    reloaded = new_spawner(ScriptedGate())
    reloaded.clear_state()
    assert reloaded.get_state() == {}
    reloaded.load_state(state)
    assert reloaded.job_id == "77"


def test_progress_tells_where_the_job_is(new_spawner, hub_db, sleeps):
    spawner = new_spawner(ScriptedGate())

    async def messages():
        out = []
        progress = spawner.progress()
        for job_id, status in [("77", ""), ("77", "PENDING n/a (Priority)"), ("77", "PENDING n/a"),
                               ("77", "RUNNING c7 None"), ("77", "RUNNING"), ("77", "COMPLETING c7 None")]:
            spawner.job_id, spawner.job_status = job_id, status
            event = await anext(progress)
            out.append(event["message"] if event else None)
        return out

    assert run(messages()) == [
        "Job 77 submitted...",
        "Waiting in the Slurm queue (Priority): no estimated start yet...",
        "Waiting in the Slurm queue (pending): no estimated start yet...",
        "Job 77 running on c7: starting the notebook...",
        "Job 77 running on a node: starting the notebook...",
        "Job 77 is ending on the cluster...",
    ]
