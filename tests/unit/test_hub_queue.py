# ruff: noqa: F811  (the fixtures imported from test_hub_lifecycle are arguments here)
"""Busy queues and a hub that scales (issue 12, branch queue), against a
scripted gate with a real JupyterHub User and ORM (test_hub_lifecycle.py's
fixtures): a job may wait within its profile's max_pending_minutes, JupyterHub's
start_timeout does not cut that short, the user is told why at the limit and
sees Slurm's reason and estimated start meanwhile; one listing per poll
interval serves every spawner; gate calls are bounded.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.user import User
from jupyterhub.utils import format_exception
from test_hub_lifecycle import (  # noqa: F401  (fixtures)
    PORT,
    PROFILES,
    Fail,
    Report,
    ScriptedGate,
    empty_hub_db,
    hub_db,
    new_spawner,
    run,
    sleeps,
)
from tornado import web

from hpcgw_hub.gate import Gate, GateResult, ListedJob, parse_listing
from hpcgw_hub.jobpoll import Listing
from hpcgw_hub.spawner import GatewaySpawner

QUEUED = [{**PROFILES[0], "max_pending_minutes": 10}]


class Clock:
    """The spawner's clock (GatewaySpawner._clock), moved by hand: each
    reading is `step` seconds after the one before."""

    def __init__(self, step: float):
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def pending_then(n: int, then, reason: str = "Resources") -> list:
    return [f"PENDING n/a {reason}"] * n + [then]


# -- the queue limit ---------------------------------------------------------------
def test_a_pending_job_waits_within_its_profiles_limit(new_spawner, hub_db, monkeypatch):
    """Ten minutes allowed: 9.5 minutes in the queue (far past start_timeout,
    300 s) is no failure, and nothing is cancelled."""
    gate = ScriptedGate(status=pending_then(19, Report()))
    spawner = new_spawner(gate, profiles=QUEUED)
    monkeypatch.setattr(spawner, "_clock", Clock(30))  # each check: 30 s later
    assert run(spawner.start()) == ("127.0.0.1", PORT)
    assert "cancel" not in gate.verbs()


def test_past_the_limit_the_job_is_cancelled_and_the_user_told_why(new_spawner, hub_db, monkeypatch):
    profiles = [{**PROFILES[0], "max_pending_minutes": 2}]
    gate = ScriptedGate(status=pending_then(50, Report(), reason="Priority"))
    spawner = new_spawner(gate, profiles=profiles)
    monkeypatch.setattr(spawner, "_clock", Clock(30))
    with pytest.raises(web.HTTPError) as cancelled:
        run(spawner.start())
    message = cancelled.value.jupyterhub_message
    assert ("waited 2.5 minutes in the queue of partition compute (reason Priority); "
            "the limit of profile compute is 2 minutes") in message
    assert gate.verbs()[-1] == "cancel" and gate.calls[-1] == ("cancel", "77")
    assert spawner.job_id == "77"  # JupyterHub's stop() then waits until Slurm no longer lists it
    # What the pending page and the progress API show: "Spawn failed: <this>", not "Spawn failed: ".
    assert format_exception(cancelled.value)[0] == message


def test_without_max_pending_minutes_the_limit_is_start_timeout(new_spawner, hub_db, monkeypatch):
    gate = ScriptedGate(status=pending_then(50, Report()))
    spawner = new_spawner(gate, start_timeout=300)
    monkeypatch.setattr(spawner, "_clock", Clock(61))
    with pytest.raises(web.HTTPError, match="the limit of profile compute is 5 minutes"):
        run(spawner.start())
    assert "cancel" in gate.verbs()


def test_a_notebook_that_does_not_start_once_running_is_told_in_words(new_spawner, hub_db, monkeypatch):
    gate = ScriptedGate(status=["RUNNING c1 None"])
    spawner = new_spawner(gate, start_timeout=120, profiles=QUEUED)
    monkeypatch.setattr(spawner, "_clock", Clock(50))
    with pytest.raises(web.HTTPError) as failed:
        run(spawner.start())
    assert "did not start within 2 minutes of its job starting" in format_exception(failed.value)[0]
    assert gate.verbs()[-1] == "cancel"


@pytest.mark.parametrize("minutes, configured, expected", [(10, 300, 600 + 300 + 20 + 60), (None, 300, 300 + 300 + 20 + 60),
                                                          (1, 30, 60 + 30 + 20 + 60)])
def test_start_timeout_is_set_per_spawn_from_the_profile(new_spawner, hub_db, minutes, configured, expected):
    profile = {**PROFILES[0], **({"max_pending_minutes": minutes} if minutes else {})}
    spawner = new_spawner(ScriptedGate(), profiles=[profile], start_timeout=configured)
    spawner.run_pre_spawn_hook()
    assert spawner.start_timeout == expected
    spawner.run_pre_spawn_hook()  # a second spawn of the same spawner: the same, not growing
    assert spawner.start_timeout == expected and spawner.startup_timeout == configured


def test_jupyterhubs_start_timeout_does_not_cut_a_wait_the_profile_allows(hub_db, monkeypatch):
    """The real User.spawn: start_timeout configured at 1 s (JupyterHub reads
    it when it calls start()), a job pending for 2 s that the profile allows.
    Before: User.spawn cancelled the start at 1 s with a bare TimeoutError
    ("Spawn failed: ")."""
    db, _ = hub_db
    gate = ScriptedGate(status=["PENDING n/a Resources"])
    monkeypatch.setattr(GatewaySpawner, "gate", property(lambda self: gate))

    async def no_http_check(self, spawner):  # the notebook is not real here
        spawner._start_pending = False
        return spawner

    monkeypatch.setattr(User, "_wait_up", no_http_check)
    db.add(orm.OAuthClient(identifier="jupyterhub"))  # the hub's own client, which JupyterHub makes at start
    db.commit()
    orm_user = db.query(orm.User).filter_by(name="alice").one()
    user = User(orm_user, {"hub": Hub(), "spawner_class": GatewaySpawner, "statsd": _NoStats(), "db": db,
                           "authenticator": None, "internal_ssl": False})
    user.spawners[""] = user._new_spawner("", spawner_class=GatewaySpawner, cluster_host="login",
                                          gateway_root="/home/gateway/hpcgw", profiles=QUEUED, start_timeout=1,
                                          startup_poll_interval=0.05, pending_poll_interval=0.05, poll_interval=0,
                                          server_token_scopes=["users:activity!user"])
    gate.spawner = user.spawners[""]

    async def spawn():
        async def report_later():
            await asyncio.sleep(2)
            gate.spawner.notebook_port_reported(PORT)
        reporter = asyncio.ensure_future(report_later())
        await user.spawn()
        await reporter

    run(spawn(), timeout=20)
    assert user.spawners[""].server.port == PORT
    assert "cancel" not in gate.verbs()


class _NoStats:
    def incr(self, *args, **kwargs):
        pass


# -- the pending page's words ------------------------------------------------------
def test_progress_shows_the_reason_the_estimated_start_and_the_limit(new_spawner, hub_db, monkeypatch):
    gate = ScriptedGate(status=["PENDING n/a Resources"])
    gate.start = "2026-11-30T21:07:00"
    spawner = new_spawner(gate, profiles=QUEUED)
    monkeypatch.setattr(spawner, "_clock", Clock(60))
    events = []

    async def watch():
        task = asyncio.ensure_future(spawner.start())
        progress = spawner.progress()
        while len(events) < 3:
            await asyncio.sleep(0.05)
            if spawner.state_ispending():
                events.append((await anext(progress))["message"])
        task.cancel()

    run(watch())
    assert events[-1].startswith("Waiting in the Slurm queue of partition compute (Resources): "
                                 "Slurm's estimated start: 2026-11-30T21:07:00; waited ")
    assert events[-1].endswith(" of at most 10 minutes...")


# -- one listing for every spawner -------------------------------------------------
class ListingGate(ScriptedGate):
    """Lists every job id in `jobs` as RUNNING; counts its calls."""

    def __init__(self, jobs, delay=0.02):
        super().__init__()
        self.jobs, self.delay = jobs, delay

    async def list_jobs(self, prefix):
        self.calls.append(("list", prefix))
        await asyncio.sleep(self.delay)  # a round trip: the others ask meanwhile
        return GateResult(0, "".join(f"{job} hpcgw-u-{job:0>20} RUNNING c1 N/A None\n" for job in self.jobs), "")


def spawners_for(new_spawner, hub_db, gate, count, **traits):
    """`count` servers of alice (named servers), each with its own running job."""
    first = new_spawner(gate, **traits)
    spawners = [first]
    for n in range(1, count):
        spawners.append(first.user._new_spawner(f"s{n}", spawner_class=GatewaySpawner, cluster_host="login",
                                                gateway_root="/home/gateway/hpcgw", profiles=PROFILES, **traits))
    for n, spawner in enumerate(spawners):
        spawner.job_id = str(100 + n)
    return spawners


def test_one_listing_per_poll_interval_for_all_servers(new_spawner, hub_db):
    gate = ListingGate([str(100 + n) for n in range(20)])
    spawners = spawners_for(new_spawner, hub_db, gate, 20, poll_interval=30)

    async def two_rounds():
        first = await asyncio.gather(*(spawner.poll() for spawner in spawners))
        second = await asyncio.gather(*(spawner.poll() for spawner in spawners))
        return first + second

    assert run(two_rounds()) == [None] * 40  # every server still running
    assert gate.verbs() == ["list"]  # one squeue for 20 servers, twice polled within the interval
    assert all(spawner.state_isrunning() for spawner in spawners)


def test_a_new_listing_once_the_interval_passed(new_spawner, hub_db):
    gate = ListingGate(["100", "101"], delay=0)
    spawners = spawners_for(new_spawner, hub_db, gate, 2, poll_interval=1)

    async def rounds():
        for _ in range(2):
            await asyncio.gather(*(spawner.query_job_status(max_age=0.05) for spawner in spawners))
            await asyncio.sleep(0.1)

    run(rounds())
    assert gate.verbs() == ["list", "list"]


def test_a_job_missing_from_a_good_listing_is_gone_and_only_that_one(new_spawner, hub_db):
    gate = ListingGate(["100"], delay=0)
    kept, gone = spawners_for(new_spawner, hub_db, gate, 2, poll_interval=30)

    async def both():
        return await asyncio.gather(kept.poll(), gone.poll())

    assert run(both()) == [None, 1]
    assert kept.job_id == "100" and gone.job_id == ""
    assert gate.verbs() == ["list"]


def test_a_failed_listing_is_unknown_for_every_job_never_gone(new_spawner, hub_db, sleeps):
    gate = ScriptedGate(status=[Fail()])
    spawners = spawners_for(new_spawner, hub_db, gate, 3, poll_interval=30, status_retries=0)

    async def poll_all():
        return await asyncio.gather(*(spawner.poll() for spawner in spawners))

    assert run(poll_all()) == [None] * 3
    assert [spawner.job_id for spawner in spawners] == ["100", "101", "102"]
    assert gate.verbs() == ["list"]  # the failed listing is shared by those who asked meanwhile...
    run(poll_all())
    assert gate.verbs() == ["list", "list"]  # ...but not kept: the next poll asks again


def test_a_listing_begun_before_the_submit_does_not_make_the_job_gone(new_spawner, hub_db):
    """A listing made for other servers just before this job was submitted
    does not know it: taking it for "gone" would fail a good start."""
    gate = ScriptedGate(status=[Report()])
    spawner = new_spawner(gate, startup_poll_interval=30)

    async def start_after_an_old_listing():
        # Another server's poll listed the hub's jobs a moment ago (this job not yet submitted).
        spawner.poller.last = Listing(True, asyncio.get_running_loop().time(), {})
        return await spawner.start()

    assert run(start_after_an_old_listing()) == ("127.0.0.1", PORT)
    assert gate.verbs() == ["submit", "list"]


def test_the_spawners_of_one_hub_share_one_poller(new_spawner, hub_db):
    gate = ListingGate(["100", "101"])
    one, two = spawners_for(new_spawner, hub_db, gate, 2)
    assert one.poller is two.poller and one.poller.prefix == "hpcgw"


# -- the listing's lines ------------------------------------------------------------
def test_parse_listing_reads_state_node_start_and_reason():
    jobs = parse_listing(
        "11 hpcgw-u-00000000000000000001 PENDING n/a 2026-11-30T21:07:00 ReqNodeNotAvail, UnavailableNodes:c1\n"
        "12 hpcgw-u-00000000000000000002 RUNNING c1 2026-11-30T20:00:00 None\n"
        "13 hpcgw-u-00000000000000000003 RUNNING\n"  # an older gate: three fields
        "garbage\n"
        "x1 hpcgw-u-00000000000000000004 RUNNING c1 N/A None\n"
    )
    assert jobs == {
        "11": ListedJob("11", "hpcgw-u-00000000000000000001", "PENDING", "n/a", "2026-11-30T21:07:00",
                        "ReqNodeNotAvail, UnavailableNodes:c1"),
        "12": ListedJob("12", "hpcgw-u-00000000000000000002", "RUNNING", "c1", "2026-11-30T20:00:00", "None"),
        "13": ListedJob("13", "hpcgw-u-00000000000000000003", "RUNNING"),
    }


# -- bounded gate calls ---------------------------------------------------------------
class _Process:
    """A stand-in ssh process that records how many run at once."""

    running = 0
    most = 0

    def __init__(self):
        self.returncode = None

    async def communicate(self, data=None):
        _Process.running += 1
        _Process.most = max(_Process.most, _Process.running)
        await asyncio.sleep(0.02)
        _Process.running -= 1
        self.returncode = 0
        return b"RUNNING c1 None\n", b""

    def kill(self):
        pass

    async def wait(self):
        return 0


@pytest.mark.parametrize("sessions", [3, 8])
def test_gate_calls_at_once_never_pass_max_sessions(monkeypatch, sessions):
    async def fake_exec(*argv, **kwargs):
        return _Process()

    monkeypatch.setattr(asyncio, "create_subprocess_exec", fake_exec)
    _Process.running = _Process.most = 0
    gate = Gate(host="login", user="gateway", key="/k", known_hosts="/kh", reuse_connection=False,
                max_sessions=sessions)

    async def burst():
        return await asyncio.gather(*(gate.status(str(n)) for n in range(40)))

    results = run(burst())
    assert all(result.ok for result in results)
    assert _Process.most == sessions


def test_the_spawners_gate_has_the_configured_bound(new_spawner, hub_db, monkeypatch):
    monkeypatch.setattr(GatewaySpawner, "_gates", {})
    spawner = GatewaySpawner(cluster_host="login", max_concurrent_commands=5, ssh_key="/k", known_hosts="/kh")
    assert spawner.gate.max_sessions == 5
    assert GatewaySpawner.max_concurrent_commands.default_value == 8  # below sshd's MaxSessions (10)


def test_rules_take_max_pending_minutes():
    from hpcgw_hub.rules import profile_errors

    good = [{**PROFILES[0], "max_pending_minutes": 30}]
    assert profile_errors(good) == []
    for bad in (0, -1, 10081, "30", True, 1.5):
        errors = profile_errors([{**PROFILES[0], "max_pending_minutes": bad}])
        assert errors == [f"profiles[0].max_pending_minutes must be a whole number from 1 to 10080 "
                          f"(got {json.dumps(bad)})."]
