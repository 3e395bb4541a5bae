"""The hub's side of the gate: fixed commands to the cluster over one SSH connection.

Every call is `ssh ... gateway@login <verb> [<digits or prefix>]`; the key is
accepted on the cluster only with the forced command `hpcgw-gate`, which
allows exactly `submit` (a JSON request on stdin, from which the gate builds
the job itself), `status`, `cancel` and `list`, the last three for this hub's
jobs only (docs/spawning.md).
Nothing here goes through a shell: argv lists only.

One SSH master per hub process carries all calls (ControlMaster): a call then
costs a round trip, not a new SSH handshake. The master is started on its own,
detached from every pipe, so a call's output never waits on it.
At most `max_sessions` calls run at once (the rest wait their turn): each is
one session on the master, and sshd refuses sessions past its MaxSessions
(10 by default), so many spawns at once must not open more.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"[0-9]+")
PREFIX = re.compile(r"[A-Za-z0-9-]{1,64}")
USER_ID = re.compile(r"u-[0-9a-f]{20}")
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass
class GateResult:
    returncode: int | None  # None: no answer in time
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class Gate:
    host: str
    user: str
    key: str
    known_hosts: str
    port: int = 22
    control_path: str = "/run/jupyterhub/ssh-%C"
    timeout: float = 20.0
    connect_timeout: int = 10
    reuse_connection: bool = True
    max_sessions: int = 8
    _master_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _sessions: asyncio.Semaphore | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, not {self.max_sessions}")
        self._sessions = asyncio.Semaphore(self.max_sessions)

    def ssh_argv(self) -> list[str]:
        return [
            "ssh", "-F", "none",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", f"IdentityFile={self.key}",
            "-o", f"ConnectTimeout={self.connect_timeout}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
            "-o", f"ControlPath={self.control_path}",
            "-p", str(self.port),
            "-l", self.user,
        ]

    async def _master_alive(self) -> bool:
        check = await asyncio.create_subprocess_exec(
            *self.ssh_argv(), "-O", "check", self.host,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        return await check.wait() == 0

    async def ensure_master(self) -> None:
        """Start the shared connection if it is not up (one at a time)."""
        if not self.reuse_connection:
            return
        async with self._master_lock:
            if await self._master_alive():
                return
            master = await asyncio.create_subprocess_exec(
                *self.ssh_argv(), "-o", "ControlMaster=yes", "-o", "ControlPersist=600", "-N", "-f", self.host,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await asyncio.wait_for(master.wait(), self.timeout)
            except asyncio.TimeoutError:
                master.kill()
                await master.wait()
                log.warning("SSH to %s@%s: no connection within %ss", self.user, self.host, self.timeout)

    async def call(self, *command: str, stdin: str | None = None) -> GateResult:
        """Run one gate command; never raises for SSH or Slurm trouble."""
        await self.ensure_master()
        async with self._sessions:
            return await self._session(command, stdin)

    async def _session(self, command: tuple[str, ...], stdin: str | None) -> GateResult:
        # ControlMaster=no: use the master when it is up, else connect directly.
        mux = ["-o", "ControlMaster=no"] if self.reuse_connection else ["-o", "ControlPath=none"]
        proc = await asyncio.create_subprocess_exec(
            *self.ssh_argv(), *mux, self.host, " ".join(command),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), self.timeout
            )
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return GateResult(None, "", f"no answer from {self.host} within {self.timeout}s")
        return GateResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    async def submit(self, request: str) -> GateResult:
        """`request`: the JSON submit request (GatewaySpawner.submit_request)."""
        return await self.call("submit", stdin=request)

    async def status(self, job_id: str) -> GateResult:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        return await self.call("status", job_id)

    async def cancel(self, job_id: str) -> GateResult:
        if not JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        return await self.call("cancel", job_id)

    async def log(self, user_id: str, job_id: str) -> GateResult:
        """The redacted, bounded tail of one user's log of one job (read-only)."""
        if not USER_ID.fullmatch(user_id) or not JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a user id and job id: {user_id!r} {job_id!r}")
        return await self.call("log", user_id, job_id)

    async def list_jobs(self, prefix: str) -> GateResult:
        """Lines "<id> <name> <STATE> <node> <start> <reason>" of this hub's jobs
        (see `parse_listing`)."""
        if not PREFIX.fullmatch(prefix):
            raise ValueError(f"not a job name prefix: {prefix!r}")
        return await self.call("list", prefix)

    async def usage(self, since: str, until: str) -> GateResult:
        """sacct of this hub's jobs from day `since` to day `until` (YYYY-MM-DD; hpcgw_hub.usage)."""
        if not (DAY.fullmatch(since) and DAY.fullmatch(until)):
            raise ValueError(f"not a period of YYYY-MM-DD days: {since!r} {until!r}")
        return await self.call("usage", since, until)


@dataclass(frozen=True)
class ListedJob:
    """One line of the gate's `list`: a job of this hub that Slurm lists."""

    job_id: str
    name: str
    state: str
    node: str = "n/a"
    start: str = "N/A"  # Slurm's start time: estimated for a pending job (squeue --start), N/A when unknown
    reason: str = "None"


def parse_listing(text: str) -> dict[str, ListedJob]:
    """{job id: ListedJob} of `list` output. Older gates print only
    "<id> <name> <STATE>": the rest is then left at its default."""
    jobs = {}
    for line in text.splitlines():
        fields = line.split(" ", 5)
        if len(fields) < 3 or not JOB_ID.fullmatch(fields[0]):
            continue
        jobs[fields[0]] = ListedJob(*fields)
    return jobs
