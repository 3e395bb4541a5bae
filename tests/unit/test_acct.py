"""Attribution, usage and the hub's limits (issue 12, branch acct).

The gate's side runs the real hpcgw-gate with fake Slurm commands
(test_gateway_gate.Slurm, plus a fake sacct); the hub's side runs the real
spawner on a real JupyterHub database with a scripted gate
(test_hub_lifecycle), whose `usage` answers are fake sacct lines.
"""

# The hub fixtures come from test_hub_lifecycle (pytest finds them by name).
# ruff: noqa: F811
from __future__ import annotations

import datetime
import json
import sys

import pytest
from jupyterhub import orm
from test_gateway_gate import FAKE, OURS, PREFIX, UID, Slurm, request, submit
from test_hub_lifecycle import ScriptedGate, empty_hub_db, hub_db, new_spawner, run  # noqa: F401 (fixtures)

from hpcgw_hub import limits as hub_limits
from hpcgw_hub.gate import GateResult
from hpcgw_hub.limits import LimitReached, check_limits, check_spawn, period_bounds
from hpcgw_hub.spawner import user_id
from hpcgw_hub.usage import aggregate, as_text, encode_user, parse, report

SUB = "0f9e8d7c-6b5a-4321-8fed-cba987654321"


@pytest.fixture
def slurm(tmp_path) -> Slurm:
    bed = Slurm(tmp_path)
    sacct = bed.bin / "sacct"
    sacct.write_text(FAKE.format(python=sys.executable, here=str(tmp_path)))
    sacct.chmod(0o755)
    return bed


# -- the gate: attribution ------------------------------------------------------
def test_submit_puts_the_hub_user_and_globus_id_in_the_comment(slurm):
    slurm.answers("sbatch", out="4242\n")
    done = submit(slurm, request(hub_user="erin@globusid.org", globus_id=SUB))
    assert done.returncode == 0, done.stderr
    [call] = slurm.calls()
    assert f"--comment=user=erin@globusid.org globus={SUB}" in call["argv"]
    assert not [arg for arg in call["argv"] if arg.startswith("--wckey")]


def test_submit_without_attribution_still_marks_the_job(slurm):
    slurm.answers("sbatch", out="7\n")
    assert submit(slurm, request()).returncode == 0
    assert "--comment=user=- globus=-" in slurm.calls()[0]["argv"]


def test_the_cluster_chooses_the_attribution_field(slurm):
    slurm.settings(job_name_prefix=PREFIX, profiles=json.loads((slurm.root / "etc" / "gateway.json").read_text())
                   ["profiles"], attribution_field="wckey")
    slurm.answers("sbatch", out="7\n")
    assert submit(slurm, request(hub_user="alice", globus_id=SUB)).returncode == 0
    argv = slurm.calls()[0]["argv"]
    assert f"--wckey=user=alice globus={SUB}" in argv and not [a for a in argv if a.startswith("--comment")]


@pytest.mark.parametrize("change", [
    {"hub_user": "alice|bob"},              # would split sacct's parsable output
    {"hub_user": "alice\nbob"},             # would end its line
    {"hub_user": "alice bob"},              # would forge a second word
    {"hub_user": "alice\x1b[2J"},           # control characters
    {"hub_user": "a" * 129},                # over-long
    {"hub_user": "alice globus=" + SUB},
    {"hub_user": ["alice"]},
    {"globus_id": SUB.upper()},
    {"globus_id": SUB + "|x"},
    {"globus_id": "not-a-uuid"},
    {"globus_id": 7},
])
def test_submit_refuses_attribution_that_could_break_sacct(slurm, change):
    slurm.answers("sbatch", out="7\n")
    done = submit(slurm, request(**{"hub_user": "alice", "globus_id": SUB, **change}))
    assert done.returncode == 126, done.stdout
    assert b"refused" in done.stderr
    assert slurm.calls() == []


# -- the gate: usage ------------------------------------------------------------
SACCT = "\n".join([
    f"101|{OURS}|2|cpu=2,mem=1G,node=1,billing=2|3600|COMPLETED|user=alice globus={SUB}",
    f"102|{PREFIX}-u-00000000000000000001|1|cpu=1,mem=1G,node=1,gres/gpu=2|1800|RUNNING|user=bob globus=-",
    f"103|{PREFIX}-u-00000000000000000002|4|cpu=4,gres/gpu:a100=1,gres/gpu=1|900|CANCELLED by 1000|forged|x",
    "104|someone-else|8|cpu=8|99999|COMPLETED|user=alice globus=-",      # not this hub's job name
    f"105|{PREFIX}-u-XYZ|8|cpu=8|99999|COMPLETED|user=alice globus=-",   # not a user id
    "",
])


def test_usage_runs_sacct_over_this_hubs_jobs_only(slurm):
    slurm.answers("sacct", out=SACCT)
    done = slurm.gate("usage 2026-11-01 2026-12-01")
    assert done.returncode == 0, done.stderr
    [call] = slurm.calls()
    assert call["argv"][:7] == ["sacct", "--noheader", "--parsable2", "--allocations", "--truncate", "--user",
                                call["argv"][6]]
    assert call["argv"][7:] == ["--starttime", "2026-11-01T00:00:00", "--endtime", "2026-12-01T00:00:00",
                                "--format", "JobIDRaw,JobName,AllocCPUS,AllocTRES,ElapsedRaw,State,Comment"]
    assert done.stdout.decode().splitlines() == [
        f"101|{UID}|2|0|3600|COMPLETED|user=alice globus={SUB}",
        "102|u-00000000000000000001|1|2|1800|RUNNING|user=bob globus=-",
        "103|u-00000000000000000002|4|1|900|CANCELLED|-",
    ]


@pytest.mark.parametrize("command", [
    "usage 2026-11-01", "usage 2026-11-01 2026-12-01 ", " usage 2026-11-01 2026-12-01",
    "usage 2026-11-01 2026-12-01; id", "usage 2026-11-01  2026-12-01", "usage 2026-13-01 2026-12-01",
    "usage 2026-12-01 2026-11-01", "usage 2026-11-01 2026-11-01", "usage 2020-01-01 2026-01-01",
    "usage 2026-11-01 2026-12-01 --user root",
])
def test_usage_refuses_anything_but_an_exact_period(slurm, command):
    slurm.answers("sacct", out=SACCT)
    done = slurm.gate(command)
    assert done.returncode == 126
    assert slurm.calls() == []


# -- the hub: usage report -------------------------------------------------------
def gate_lines(*jobs) -> str:
    return "".join(f"{job_id}|{user_id(name)}|{cpus}|{gpus}|{seconds}|{state}|user={encode_user(name)} globus=-\n"
                   for job_id, name, cpus, gpus, seconds, state in jobs)


def test_the_report_adds_core_and_gpu_hours_per_user_and_group():
    out = gate_lines((1, "alice", 2, 0, 3600, "COMPLETED"), (2, "alice", 1, 1, 1800, "RUNNING"),
                     (3, "bob", 4, 2, 900, "CANCELLED"), (4, "gone user", 1, 0, 7200, "COMPLETED"))
    out += "junk line\n5|u-1|x|0|1|COMPLETED|-\n"
    jobs = parse(out)
    assert [job.job_id for job in jobs] == ["1", "2", "3", "4"]
    names = {user_id("alice"): "alice", user_id("bob"): "bob"}
    data = report(jobs, names, {"alice": ["physics"], "bob": ["physics", "chem"]},
                  {"per_user": {"core_hours": 2.5}, "per_group": {"chem": {"gpu_hours": 0.5}}},
                  datetime.date(2026, 11, 1), datetime.date(2026, 12, 1))
    assert data["users"]["alice"] == {"jobs": 2, "running": 1, "core_hours": 2.5, "gpu_hours": 0.5,
                                      "over": ["2.50 of 2.5 core-hours"]}
    assert data["users"]["bob"]["core_hours"] == 1.0 and data["users"]["bob"]["gpu_hours"] == 0.5
    # A user no longer in the hub's database: named by the job's attribution.
    assert data["users"]["gone user"]["core_hours"] == 2.0
    assert data["groups"]["physics"]["core_hours"] == 3.5 and data["groups"]["physics"]["over"] == []
    assert data["groups"]["chem"]["over"] == ["0.5 of 0.5 GPU-hours"]
    assert data["total"] == {"jobs": 4, "core_hours": 5.5, "gpu_hours": 1.0}
    assert "2.50 of 2.5 core-hours" in as_text(data)


def test_running_jobs_count_the_time_since_sacct_answered():
    jobs = parse(gate_lines((1, "alice", 2, 1, 3600, "RUNNING"), (2, "alice", 2, 0, 3600, "COMPLETED")))
    users, _ = aggregate(jobs, {user_id("alice"): "alice"}, {}, extra_seconds=1800)
    assert users["alice"].core_hours == pytest.approx(2 * 1.5 + 2)
    assert users["alice"].gpu_hours == pytest.approx(1.5)


# -- the hub: limits --------------------------------------------------------------
@pytest.mark.parametrize("limits, words", [
    ({"period": "year"}, "limits.period must be one of month, week, day"),
    ({"per_user": {"servers": 1.5}}, "limits.per_user.servers must be a whole number"),
    ({"per_user": {"servers": True}}, "limits.per_user.servers must be a whole number"),
    ({"per_user": {"core_hours": -1}}, "limits.per_user.core_hours must not be negative"),
    ({"per_user": {"cores": 1}}, "limits.per_user: unknown key(s) cores"),
    ({"per_group": {"physics": {"gpu_hours": "10"}}}, "limits.per_group.physics.gpu_hours must be a number"),
    ({"per_group": ["physics"]}, "limits.per_group must be a mapping"),
    ({"budget": 1}, "limits: unknown key(s) budget"),
    ({"cache_seconds": 7200}, "limits.cache_seconds must be a number from 0 to 3600"),
])
def test_wrong_limits_are_named(limits, words):
    with pytest.raises(ValueError, match=None) as error:
        check_limits(limits)
    assert words in str(error.value)


def test_periods_and_when_they_reset():
    now = datetime.datetime(2026, 11, 30, 19, 0, tzinfo=datetime.timezone.utc)  # a Monday
    assert period_bounds("month", now) == (datetime.date(2026, 11, 1), datetime.date(2026, 12, 1))
    assert period_bounds("week", now) == (datetime.date(2026, 11, 30), datetime.date(2026, 12, 7))
    assert period_bounds("day", now) == (datetime.date(2026, 11, 30), datetime.date(2026, 12, 1))
    dec = datetime.datetime(2026, 12, 31, 23, 59, tzinfo=datetime.timezone.utc)
    assert period_bounds("month", dec) == (datetime.date(2026, 12, 1), datetime.date(2027, 1, 1))


def test_limit_messages_say_which_limit_the_numbers_and_the_reset():
    limits = {"per_user": {"servers": 2, "core_hours": 10}, "per_group": {"physics": {"gpu_hours": 4}}}
    resets = datetime.date(2026, 12, 1)
    with pytest.raises(LimitReached) as reached:
        check_spawn(limits, "alice", [], {"user:alice": 2}, {}, resets, "month")
    assert reached.value.status_code == 403
    assert reached.value.jupyterhub_message == ("Server limit reached: you already run 2 of the 2 servers allowed. "
                                                "Stop a server to start another.")
    with pytest.raises(LimitReached) as reached:
        check_spawn(limits, "alice", [], {"user:alice": 1}, {"user:alice": (10.25, 0)}, resets, "month")
    assert reached.value.jupyterhub_message == ("Core-hour budget used up: You used 10.25 of the 10 core-hours "
                                                "allowed this month. The budget resets on 2026-12-01 00:00 UTC.")
    with pytest.raises(LimitReached) as reached:
        check_spawn(limits, "alice", ["physics"], {}, {"group:physics": (0, 4.0)}, resets, "month")
    assert "Your group physics used 4.00 of the 4 GPU-hours allowed this month" in reached.value.jupyterhub_message
    check_spawn(limits, "alice", ["physics"], {"user:alice": 1}, {"user:alice": (9.9, 0), "group:physics": (0, 3.9)},
                resets, "month")  # under every limit: no exception


# -- the hub: the spawner enforces them before any submit -------------------------
class UsageGate(ScriptedGate):
    def __init__(self, usage: str = "", **kwargs):
        super().__init__(**kwargs)
        self.usage_output = usage

    async def usage(self, since: str, until: str) -> GateResult:
        self.calls.append(("usage", f"{since} {until}"))
        return GateResult(0, self.usage_output, "")


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(hub_limits, "CACHE", hub_limits.UsageCache())


def add_server(db, name: str, server: str, job_id: str | None):
    orm_user = db.query(orm.User).filter_by(name=name).one_or_none() or orm.User(name=name)
    db.add(orm_user)
    db.add(orm.Spawner(user=orm_user, name=server, state={"job_id": job_id} if job_id else {}))
    db.commit()
    return orm_user


def test_a_user_at_the_server_limit_gets_a_403_and_no_job(new_spawner, hub_db):
    db, _ = hub_db
    add_server(db, "alice", "first", "55")
    add_server(db, "alice", "stopped", None)  # a stopped named server does not count
    gate = UsageGate()
    spawner = new_spawner(gate, limits={"per_user": {"servers": 1}})
    with pytest.raises(LimitReached) as reached:
        run(spawner.start())
    assert "you already run 1 of the 1 servers allowed" in reached.value.jupyterhub_message
    assert gate.verbs() == []  # no submit, and no sacct needed for a server limit


def test_a_group_at_its_server_limit_stops_its_members(new_spawner, hub_db):
    db, _ = hub_db
    bob = add_server(db, "bob", "", "56")
    alice = db.query(orm.User).filter_by(name="alice").one()
    db.add(orm.Group(name="physics", users=[alice, bob]))
    db.commit()
    gate = UsageGate()
    spawner = new_spawner(gate, limits={"per_user": {"servers": 3}, "per_group": {"physics": {"servers": 1}}})
    with pytest.raises(LimitReached) as reached:
        run(spawner.start())
    assert "Your group physics already runs 1 of the 1 servers allowed" in reached.value.jupyterhub_message
    assert gate.verbs() == []


def test_a_user_over_budget_gets_a_403_and_no_job(new_spawner, hub_db):
    gate = UsageGate(usage=gate_lines((9, "alice", 2, 0, 1800, "COMPLETED"), (10, "bob", 8, 0, 36000, "COMPLETED")))
    spawner = new_spawner(gate, limits={"period": "week", "per_user": {"core_hours": 1}})
    with pytest.raises(LimitReached) as reached:
        run(spawner.start())
    assert "You used 1.00 of the 1 core-hours allowed this week" in reached.value.jupyterhub_message
    since, until = period_bounds("week", datetime.datetime.now(datetime.timezone.utc))
    assert gate.calls == [("usage", f"{since} {until}")]


def test_under_every_limit_the_job_is_submitted_with_its_attribution(new_spawner, hub_db):
    from test_hub_lifecycle import Report

    gate = UsageGate(usage=gate_lines((9, "alice", 2, 0, 1700, "COMPLETED")), status=[Report()])
    requests = []
    real_submit = gate.submit

    async def submit_recorded(body):
        requests.append(json.loads(body))
        return await real_submit(body)

    gate.submit = submit_recorded
    spawner = new_spawner(gate, limits={"per_user": {"core_hours": 1, "servers": 1}})
    run(spawner.start())
    assert gate.verbs()[:2] == ["usage", "submit"]
    assert requests[0]["hub_user"] == "alice" and requests[0]["globus_id"] == ""


def test_one_sacct_serves_every_spawn_within_cache_seconds(new_spawner, hub_db):
    gate = UsageGate(usage=gate_lines((9, "alice", 2, 0, 7200, "COMPLETED")))
    for _ in range(3):
        spawner = new_spawner(gate, limits={"per_user": {"core_hours": 1}, "cache_seconds": 60})
        with pytest.raises(LimitReached):
            run(spawner.start())
    assert gate.verbs() == ["usage"]


def test_the_globus_identity_comes_from_auth_state(new_spawner, hub_db):
    gate = UsageGate()
    spawner = new_spawner(gate)

    async def state():  # as oauthenticator keeps it: the Globus userinfo
        return {"globus_user": {"sub": SUB, "preferred_username": "alice@uchicago.edu"}, "globus_groups": []}

    spawner.user.get_auth_state = state
    assert run(spawner.attribution()) == {"hub_user": "alice", "globus_id": SUB}

    async def bad_state():
        return {"globus_user": {"sub": "x|y"}}

    spawner.user.get_auth_state = bad_state
    assert run(spawner.attribution())["globus_id"] == ""
    assert encode_user("a b|c\nd") == "a%20b%7Cc%0Ad"


def test_hpcgw_usage_reads_the_hubs_config_and_database(tmp_path, monkeypatch, capsys, empty_hub_db):
    """The console script: the hub's config file (conf.d fragment included),
    its database's users and groups, one `usage` call for the period."""
    import shutil

    from hpcgw_hub import usage as usage_module
    from hpcgw_hub.gate import Gate

    db_path = tmp_path / "jupyterhub.sqlite"
    shutil.copy(empty_hub_db, db_path)
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    with Session(create_engine(f"sqlite:///{db_path}")) as db:
        alice = db.query(orm.User).filter_by(name="alice").one()
        db.add(orm.Group(name="physics", users=[alice]))
        db.commit()
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "50-spawner.py").write_text(
        "c = get_config()\n"
        "c.GatewaySpawner.cluster_host = 'login'\nc.GatewaySpawner.ssh_key = '/k'\n"
        "c.GatewaySpawner.known_hosts = '/kh'\n"
        "c.GatewaySpawner.limits = {'per_group': {'physics': {'core_hours': 1}}}\n")
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(f"c = get_config()\nc.JupyterHub.db_url = 'sqlite:///{db_path}'\n"
                      f"load_subconfig({str(tmp_path / 'conf.d' / '50-spawner.py')!r})\n")
    calls = []

    async def fake_usage(self, since, until):
        calls.append((self.host, self.key, since, until))
        return GateResult(0, gate_lines((1, "alice", 2, 0, 3600, "COMPLETED"), (2, "zed", 1, 1, 3600, "RUNNING")), "")

    monkeypatch.setattr(Gate, "usage", fake_usage)
    assert usage_module.main(["--config", str(config), "--since", "2026-11-01", "--until", "2026-12-01",
                              "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert calls == [("login", "/k", "2026-11-01", "2026-12-01")]
    assert data["users"]["alice"]["core_hours"] == 2.0
    assert data["users"]["zed"] == {"jobs": 1, "running": 1, "core_hours": 1.0, "gpu_hours": 1.0, "over": []}
    assert data["groups"] == {"physics": {"jobs": 1, "running": 0, "core_hours": 2.0, "gpu_hours": 0.0,
                                          "over": ["2.00 of 1 core-hours"]}}
    assert usage_module.main(["--config", str(config), "--since", "2026-11-01", "--until", "2026-12-01"]) == 0
    assert "physics" in capsys.readouterr().out


# -- the spawner role checks spawner_limits before any change ----------------------
@pytest.mark.parametrize("limits, good", [
    ({"period": "week", "per_user": {"servers": 2, "core_hours": 10.5, "gpu_hours": 0},
      "per_group": {"physics": {"servers": 4}}, "cache_seconds": 30}, True),
    ({"period": "year"}, False),
    ({"per_user": {"servers": 1.5}}, False),
    ({"per_group": {"physics": {"core_hours": -1}}}, False),
    ({"per_group": {"physics": {"cores": 1}}}, False),
    ({"per_group": ["physics"]}, False),
])
def test_the_role_names_wrong_spawner_limits(tmp_path, limits, good):
    from role_cases import run_cases, words
    from test_role_spawner_validate import GOOD

    result = words(run_cases(tmp_path, "spawner", {"case": {**GOOD, "spawner_limits": limits}},
                             inventory={"cluster": {"hosts": {"login": {}}}})["case"]["result"])
    if good:
        assert result == "passed"
    else:
        assert "spawner_limits" in result, result
