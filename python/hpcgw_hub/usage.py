"""Core-hours and GPU-hours of this hub's notebook jobs, per hub user and per group.

The numbers come from Slurm's accounting (sacct) through the gate's read-only
`usage <since> <until>` command, which prints one line per job of this hub:

    <job id>|<user id>|<cpus>|<gpus>|<elapsed s>|<STATE>|user=<hub user> globus=<id>

(times already cut to the period by sacct --truncate). Jobs are matched to
hub users by their user id (`hpcgw_hub.spawner.user_id` of the name: every
job's Slurm name holds it), or, for a user no longer in the hub's database,
by the hub user its attribution names. Groups are the hub's groups (the
Globus groups the authenticator maps to them), from the hub's database.

`hpcgw-usage` (console script) prints the report on the hub VM, with the
hub's own configuration (its gate settings, database and limits):

    hpcgw-usage --since 2026-11-01 --until 2026-12-01 [--json]

Without --since/--until: the current period of the spawner's limits (or
this month). Users and groups at or over a limit are marked.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import urllib.parse
from dataclasses import dataclass, field

from .limits import check_limits, over_budget, period_bounds

RUNNING = "RUNNING"


@dataclass(frozen=True)
class Job:
    job_id: str
    user_id: str
    cpus: int
    gpus: int
    elapsed: int  # seconds, within the period
    state: str
    hub_user: str = ""  # from the job's attribution ("" when it has none)
    globus_id: str = ""

    @property
    def core_hours(self) -> float:
        return self.cpus * self.elapsed / 3600

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.elapsed / 3600


def parse(output: str) -> list[Job]:
    """The gate's `usage` lines as Jobs; lines of any other shape are skipped."""
    jobs = []
    for line in output.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 7:
            continue
        job_id, uid, cpus, gpus, elapsed, state, note = fields
        if not (job_id.isdigit() and cpus.isdigit() and gpus.isdigit() and elapsed.isdigit()):
            continue
        words = dict(word.split("=", 1) for word in note.split() if "=" in word)
        hub_user = urllib.parse.unquote(words.get("user", "-"))
        globus_id = words.get("globus", "-")
        jobs.append(Job(job_id, uid, int(cpus), int(gpus), int(elapsed), state,
                        "" if hub_user == "-" else hub_user, "" if globus_id == "-" else globus_id))
    return jobs


def encode_user(name: str) -> str:
    """A hub username as the gate's attribution takes it ([A-Za-z0-9%@._+~-]):
    plain for the usual names, percent-encoded otherwise; at most 128 characters."""
    return urllib.parse.quote(name, safe="@._+~-")[:128]


@dataclass
class Totals:
    jobs: int = 0
    running: int = 0
    core_hours: float = 0.0
    gpu_hours: float = 0.0
    over: list[str] = field(default_factory=list)  # the limits reached, in words

    def add(self, job: Job, extra_seconds: float = 0.0) -> None:
        self.jobs += 1
        seconds = job.elapsed + (extra_seconds if job.state == RUNNING else 0.0)
        self.core_hours += job.cpus * seconds / 3600
        self.gpu_hours += job.gpus * seconds / 3600
        if job.state == RUNNING:
            self.running += 1

    def as_dict(self) -> dict:
        return {"jobs": self.jobs, "running": self.running, "core_hours": round(self.core_hours, 4),
                "gpu_hours": round(self.gpu_hours, 4), "over": self.over}


def owner(job: Job, names_by_id: dict[str, str]) -> str:
    """The hub user a job belongs to: by its user id, else its attribution."""
    return names_by_id.get(job.user_id) or job.hub_user or job.user_id


def aggregate(jobs: list[Job], names_by_id: dict[str, str], groups_of: dict[str, list[str]],
              extra_seconds: float = 0.0) -> tuple[dict[str, Totals], dict[str, Totals]]:
    """(per user, per group) totals; a user's jobs count in each of their groups.
    `extra_seconds` is added to each running job (time since sacct answered)."""
    users: dict[str, Totals] = {}
    groups: dict[str, Totals] = {}
    for job in jobs:
        name = owner(job, names_by_id)
        users.setdefault(name, Totals()).add(job, extra_seconds)
        for group in groups_of.get(name, []):
            groups.setdefault(group, Totals()).add(job, extra_seconds)
    return users, groups


def mark_limits(users: dict[str, Totals], groups: dict[str, Totals], limits: dict) -> None:
    """Note in each total which budget of `limits` it has reached."""
    for totals in users.values():
        totals.over = over_budget(totals.core_hours, totals.gpu_hours, (limits or {}).get("per_user") or {})
    for name, totals in groups.items():
        totals.over = over_budget(totals.core_hours, totals.gpu_hours,
                                  ((limits or {}).get("per_group") or {}).get(name) or {})


def report(jobs: list[Job], names_by_id: dict[str, str], groups_of: dict[str, list[str]], limits: dict,
           since: datetime.date, until: datetime.date) -> dict:
    users, groups = aggregate(jobs, names_by_id, groups_of)
    mark_limits(users, groups, limits)
    return {
        "since": since.isoformat(), "until": until.isoformat(),
        "total": {"jobs": len(jobs), "core_hours": round(sum(j.core_hours for j in jobs), 4),
                  "gpu_hours": round(sum(j.gpu_hours for j in jobs), 4)},
        "users": {name: totals.as_dict() for name, totals in sorted(users.items())},
        "groups": {name: totals.as_dict() for name, totals in sorted(groups.items())},
    }


def as_text(data: dict) -> str:
    lines = [f"Notebook jobs from {data['since']} to {data['until']} (not included): "
             f"{data['total']['jobs']} jobs, {data['total']['core_hours']:.2f} core-hours, "
             f"{data['total']['gpu_hours']:.2f} GPU-hours"]
    for kind in ("users", "groups"):
        lines.append("")
        lines.append(f"{kind[:-1]:<32} {'jobs':>6} {'running':>7} {'core-h':>10} {'GPU-h':>10}  limits")
        for name, totals in data[kind].items():
            lines.append(f"{name:<32} {totals['jobs']:>6} {totals['running']:>7} {totals['core_hours']:>10.2f} "
                         f"{totals['gpu_hours']:>10.2f}  {'; '.join(totals['over']) or '-'}")
    return "\n".join(lines)


# -- the hub's own settings and database -------------------------------------
def hub_config(path: str):
    """The hub's configuration, loaded as JupyterHub loads it (conf.d included)."""
    import os  # noqa: PLC0415

    from traitlets.config.loader import PyFileConfigLoader  # noqa: PLC0415

    folder, name = os.path.split(os.path.abspath(path))
    return PyFileConfigLoader(name, path=folder).load_config()


def hub_users(db_url: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(user id -> hub username, hub username -> its groups) from the hub's database."""
    from jupyterhub import orm  # noqa: PLC0415
    from sqlalchemy import create_engine  # noqa: PLC0415
    from sqlalchemy.orm import Session  # noqa: PLC0415

    from .spawner import user_id  # noqa: PLC0415

    with Session(create_engine(db_url)) as session:
        users = session.query(orm.User).all()
        return ({user_id(user.name): user.name for user in users},
                {user.name: sorted(group.name for group in user.groups) for user in users})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hpcgw-usage", description=__doc__.splitlines()[0])
    parser.add_argument("--since", type=datetime.date.fromisoformat, help="first day (YYYY-MM-DD)")
    parser.add_argument("--until", type=datetime.date.fromisoformat, help="the day after the last (YYYY-MM-DD)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--config", default="/etc/jupyterhub/jupyterhub_config.py", help="the hub's config file")
    args = parser.parse_args(argv)
    config = hub_config(args.config)
    spawner = config.GatewaySpawner
    limits = check_limits(dict(spawner.get("limits") or {}))
    since, until = period_bounds(limits.get("period", "month"), datetime.datetime.now(datetime.timezone.utc))
    since, until = args.since or since, args.until or until
    if since >= until:
        parser.error("--until must be after --since")

    from .gate import Gate  # noqa: PLC0415

    gate = Gate(host=spawner.cluster_host, user=spawner.get("gateway_user", "gateway"), key=spawner.ssh_key,
                known_hosts=spawner.known_hosts, port=int(spawner.get("cluster_ssh_port", 22)),
                timeout=120, reuse_connection=False)
    result = asyncio.run(gate.usage(since.isoformat(), until.isoformat()))
    if not result.ok:
        sys.stderr.write(f"hpcgw-usage: the cluster's accounting did not answer: {result.stderr.strip()}\n")
        return 1
    names_by_id, groups_of = hub_users(config.JupyterHub.db_url)
    data = report(parse(result.stdout), names_by_id, groups_of, limits, since, until)
    print(json.dumps(data, indent=2) if args.json else as_text(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
