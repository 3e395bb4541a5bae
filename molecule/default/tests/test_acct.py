"""Attribution, usage and the hub's limits on the real test bed (issue 12).

Slurm accounting runs on the login node (slurmdbd + MariaDB, the test bed's
image); every job carries its hub user and Globus identity id in its
comment; `hpcgw-usage` on the hub adds up what sacct says; the limits of the
test inventory (spawner_limits: per_group acct-one-server {servers: 1},
acct-no-budget {core_hours: 0.001}) refuse a spawn with a 403 in words, and
no job reaches Slurm. The two users are bench4 and bench5 of the Globus
stand-in (benchmarks/ only otherwise), put in those hub groups by an admin
(alice) and taken out again at the end.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import slurm_jobs
from hubclient import HubUser, browser_session, globus_login

from hpcgw_hub.spawner import user_id

# One worker, in order: the tests share two users' jobs and group memberships.
pytestmark = pytest.mark.xdist_group("acct")

PREFIX = "hpcgw-hub"
USERS = {"bench4": "acct-one-server", "bench5": "acct-no-budget"}


def identity_sub(testbed, username: str) -> str:
    from conftest import REPO

    identities = json.loads((REPO / "tests" / "globus_standin" / "identities.json").read_text())["identities"]
    return next(i["sub"] for i in identities if i["username"] == f"{username}@uchicago.edu")


def leave_groups(admin) -> None:
    for group in USERS.values():
        admin.api("DELETE", f"/groups/{group}/users", json={"users": list(USERS)})


@pytest.fixture(scope="module")
def sessions(testbed, public_ca_bundle, testbed_dns):
    """Logged-in hub users: alice (an admin) and the two test users."""
    opened, users = [], {}
    for name in ("alice", *USERS):
        browser = browser_session(public_ca_bundle).__enter__()
        opened.append(browser)
        assert globus_login(browser, testbed, f"{name}@uchicago.edu").status_code == 200
        users[name] = HubUser(browser, testbed, name)
    leave_groups(users["alice"])  # an interrupted earlier run may have left them in
    yield users
    leave_groups(users["alice"])
    for name in USERS:
        if users[name].server() is not None:
            users[name].stop()
    for browser in opened:
        browser.close()


def jobs_of(cluster_host, name: str) -> set[str]:
    """The live jobs (any state squeue lists) of one hub user: other workers' tests run jobs meanwhile."""
    return {job for job, (job_name, _, _) in slurm_jobs(cluster_host).items()
            if job_name == f"{PREFIX}-{user_id(name)}"}


def sacct(cluster_host, *args: str) -> list[list[str]]:
    out = cluster_host.check_output(
        "runuser -u gateway -- sacct --noheader --parsable2 --allocations" + " %s" * len(args), *args)
    return [line.split("|") for line in out.splitlines() if line]


def month_start() -> str:
    return time.strftime("%Y-%m-01", time.gmtime())


@pytest.fixture(scope="module")
def finished_jobs(sessions, cluster_host):
    """One job each of bench4 and bench5, run for a few seconds and ended: their ids."""
    jobs = {}
    for name in USERS:
        user = sessions[name]
        assert user.start().status_code in (201, 202)
        [job] = jobs_of(cluster_host, name)
        time.sleep(4)  # > 3.6 core-seconds: over acct-no-budget's 0.001 core-hours
        user.stop()
        jobs[name] = job
    # Slurm records the end in the database a moment after the job is gone.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = [row[0] for job in jobs.values() for row in sacct(cluster_host, "-j", job, "-o", "State")]
        if states and all(not state.startswith(("RUNNING", "PENDING")) for state in states):
            break
        time.sleep(1)
    return jobs


def test_sacct_shows_each_jobs_hub_user_and_globus_identity(finished_jobs, cluster_host, testbed):
    for name, job in finished_jobs.items():
        [[job_name, comment]] = sacct(cluster_host, "-j", job, "-o", "JobName,Comment")
        assert job_name == f"{PREFIX}-{user_id(name)}"
        assert comment == f"user={name} globus={identity_sub(testbed, name)}"


def test_the_usage_report_equals_what_sacct_says(finished_jobs, cluster_host, hub_host):
    report = json.loads(hub_host.check_output("hpcgw-usage --since %s --json", month_start()))
    for name in USERS:
        rows = sacct(cluster_host, "-u", "gateway", "--starttime", f"{month_start()}T00:00:00",
                     "--name", f"{PREFIX}-{user_id(name)}", "-o", "AllocCPUS,ElapsedRaw,State")
        assert rows, f"sacct knows no job of {name}"
        assert all(not state.startswith("RUNNING") for _, _, state in rows)
        core_hours = sum(int(cpus) * int(seconds) for cpus, seconds, _ in rows) / 3600
        assert core_hours > 0
        assert report["users"][name]["jobs"] == len(rows)
        assert report["users"][name]["core_hours"] == pytest.approx(core_hours, abs=1e-3)
        assert report["users"][name]["gpu_hours"] == 0


def assert_refused_without_job(user, cluster_host, words: list[str]) -> None:
    before = jobs_of(cluster_host, user.name)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    reply = user.start(timeout=30)
    assert reply.status_code in (403, 429), reply.text
    message = reply.json()["message"]
    for word in words:
        assert word in message, message
    assert jobs_of(cluster_host, user.name) == before == set()
    assert user.server() is None
    # Nothing reached Slurm at all (not even a job ended at once).
    assert sacct(cluster_host, "-u", "gateway", "--starttime", since, "--name", f"{PREFIX}-{user_id(user.name)}",
                 "-o", "JobID") == []


def test_a_group_at_its_server_limit_gets_a_403_in_words_and_no_job(sessions, finished_jobs, cluster_host):
    bench4, bench5, admin = sessions["bench4"], sessions["bench5"], sessions["alice"]
    admin.api("POST", "/groups/acct-one-server")  # 201, or 409 when it exists
    reply = admin.api("POST", "/groups/acct-one-server/users", json={"users": ["bench4"]})
    assert reply.status_code == 200, reply.text
    admin.api("DELETE", "/groups/acct-one-server/users", json={"users": ["bench5"]})
    assert bench4.start().status_code in (201, 202)
    try:
        assert admin.api("POST", "/groups/acct-one-server/users", json={"users": ["bench5"]}).status_code == 200
        assert_refused_without_job(bench5, cluster_host,
                                   ["Server limit reached", "acct-one-server", "1 of the 1 servers"])
    finally:
        admin.api("DELETE", "/groups/acct-one-server/users", json={"users": ["bench5"]})
        bench4.stop()


def test_a_user_over_budget_gets_a_403_in_words_and_no_job(sessions, finished_jobs, cluster_host):
    sessions["alice"].api("POST", "/groups/acct-no-budget")
    reply = sessions["alice"].api("POST", "/groups/acct-no-budget/users", json={"users": ["bench5"]})
    assert reply.status_code == 200, reply.text
    assert_refused_without_job(sessions["bench5"], cluster_host,
                               ["Core-hour budget used up", "acct-no-budget", "of the 0.001 core-hours",
                                "resets on", "-01 00:00 UTC"])
