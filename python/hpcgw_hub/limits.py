"""Limits the hub enforces, since Slurm sees all hub users as one account.

Settings (GatewaySpawner.limits, the spawner role's `spawner_limits`):

    {"period": "month" | "week" | "day",
     "per_user": {"servers": n, "core_hours": x, "gpu_hours": y},
     "per_group": {"<hub group>": {"servers": n, "core_hours": x, "gpu_hours": y}},
     "cache_seconds": s}

Every key is optional; a limit not given is no limit. Before a job is
submitted the spawner checks (`check_spawn`): the user's servers with a job
on the cluster (named servers count, the one starting does not), the same
for all members of each of the user's groups, and the core-/GPU-hours used
in the current period (calendar day, ISO week from Monday, or month; UTC):
Slurm's accounting through the gate (`usage`), read at most once per
`cache_seconds` for all spawns, plus the time running jobs have run since.
Over a limit: `LimitReached`, a 403 in words (which limit, the numbers,
when it resets); no job is submitted.
"""

from __future__ import annotations

import asyncio
import datetime
import time

from tornado import web

PERIODS = ("month", "week", "day")
LIMIT_KEYS = {"servers": int, "core_hours": float, "gpu_hours": float}
TOP_KEYS = ("period", "per_user", "per_group", "cache_seconds")


def _check_set(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping of servers, core_hours, gpu_hours")
    unknown = sorted(set(map(str, value)) - set(LIMIT_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(LIMIT_KEYS)})")
    for key, kind in LIMIT_KEYS.items():
        if key not in value:
            continue
        number = value[key]
        if isinstance(number, bool) or not isinstance(number, (int, float) if kind is float else int):
            raise ValueError(f"{where}.{key} must be a {'whole ' if kind is int else ''}number, not {number!r}")
        if number < 0:
            raise ValueError(f"{where}.{key} must not be negative (asked: {number})")
    return value


def check_limits(limits, where: str = "limits") -> dict:
    """`limits` itself, or ValueError naming the wrong key."""
    if limits is None:
        return {}
    if not isinstance(limits, dict):
        raise ValueError(f"{where} must be a mapping")
    unknown = sorted(set(map(str, limits)) - set(TOP_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(TOP_KEYS)})")
    if limits.get("period", "month") not in PERIODS:
        raise ValueError(f"{where}.period must be one of {', '.join(PERIODS)} (asked: {limits.get('period')!r})")
    _check_set(limits.get("per_user") or {}, f"{where}.per_user")
    groups = limits.get("per_group") or {}
    if not isinstance(groups, dict):
        raise ValueError(f"{where}.per_group must be a mapping of hub group names to limits")
    for name, value in groups.items():
        _check_set(value, f"{where}.per_group.{name}")
    seconds = limits.get("cache_seconds", 60)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 3600:
        raise ValueError(f"{where}.cache_seconds must be a number from 0 to 3600 (asked: {seconds!r})")
    return limits


def period_bounds(period: str, now: datetime.datetime) -> tuple[datetime.date, datetime.date]:
    """(first day, first day of the next period) of the period holding `now` (UTC days)."""
    today = now.astimezone(datetime.timezone.utc).date()
    if period == "day":
        return today, today + datetime.timedelta(days=1)
    if period == "week":
        monday = today - datetime.timedelta(days=today.weekday())
        return monday, monday + datetime.timedelta(days=7)
    first = today.replace(day=1)
    return first, (first + datetime.timedelta(days=32)).replace(day=1)


def hours(value: float) -> str:
    """Hours as a person reads them: 10.25, 1.00, 0.00111."""
    return f"{value:.2f}" if value >= 1 or value == 0 else f"{value:.3g}"


def over_budget(core_hours: float, gpu_hours: float, limit: dict) -> list[str]:
    """The budgets of `limit` that these hours reach, in words."""
    over = []
    for key, used, unit in (("core_hours", core_hours, "core-hours"), ("gpu_hours", gpu_hours, "GPU-hours")):
        if key in limit and used >= limit[key]:
            over.append(f"{hours(used)} of {limit[key]:g} {unit}")
    return over


class LimitReached(web.HTTPError):
    """A spawn refused by a limit: the user sees `message` (REST API, form, pending page)."""

    def __init__(self, message: str):
        super().__init__(403, "%s", message)
        self.jupyterhub_message = message


def check_spawn(limits: dict, user: str, groups: list[str], servers: dict[str, int],
                usage: dict[str, tuple[float, float]], resets: datetime.date, period: str) -> None:
    """Raise LimitReached when `user` (member of `groups`) may not start a server.

    servers: running servers of "user:<name>" and of "group:<name>" (the one
    starting not counted); usage: (core-hours, GPU-hours) of the same keys in
    the current period, which ends before `resets`."""
    when = f"{resets.isoformat()} 00:00 UTC"
    scopes = [("user:" + user, "You", limits.get("per_user") or {})]
    for group in groups:
        limit = (limits.get("per_group") or {}).get(group)
        if limit:
            scopes.append(("group:" + group, f"Your group {group}", limit))
    for key, who, limit in scopes:
        if "servers" in limit and servers.get(key, 0) >= limit["servers"]:
            raise LimitReached(
                f"Server limit reached: {who.lower() if who == 'You' else who} already run"
                f"{'' if who == 'You' else 's'} {servers.get(key, 0)} of the {limit['servers']} servers allowed. "
                "Stop a server to start another.")
        core, gpu = usage.get(key, (0.0, 0.0))
        for name, used, unit in (("core_hours", core, "core-hour"), ("gpu_hours", gpu, "GPU-hour")):
            if name in limit and used >= limit[name]:
                raise LimitReached(
                    f"{unit.capitalize()} budget used up: {who} used {hours(used)} of the {limit[name]:g} {unit}s "
                    f"allowed this {period}. The budget resets on {when}.")


class UsageCache:
    """One `usage` call through the gate serves every spawn for `seconds`."""

    def __init__(self):
        self._entries: dict = {}  # (gate, since, until) -> (monotonic time, jobs)
        self._lock = asyncio.Lock()

    async def jobs(self, gate, since: datetime.date, until: datetime.date, seconds: float):
        """(jobs, seconds since sacct answered); raises RuntimeError when the gate fails."""
        from .usage import parse  # noqa: PLC0415 (usage imports this module)

        key = (id(gate), since, until)
        async with self._lock:
            entry = self._entries.get(key)
            if entry is None or time.monotonic() - entry[0] > seconds:
                result = await gate.usage(since.isoformat(), until.isoformat())
                if not result.ok:
                    raise RuntimeError(result.stderr.strip() or "no answer")
                entry = (time.monotonic(), parse(result.stdout))
                self._entries = {key: entry}
        return entry[1], time.monotonic() - entry[0]


CACHE = UsageCache()
