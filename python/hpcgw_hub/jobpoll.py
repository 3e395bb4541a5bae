"""One listing of all this hub's Slurm jobs, shared by every spawner.

Each server used to cost one `status` (an squeue over SSH) per poll: the
hub's Slurm traffic grew with its users. A JobPoller asks the gate's `list`
(one squeue for all of this hub's jobs) and hands the same answer to every
spawner that asks within `max_age` seconds; a spawner that asks while a
listing is under way waits for that one. So N servers polled every
`poll_interval` cost one squeue per interval, not N.

The rules of today's `status` hold (docs/spawning.md): a job missing from a
good listing is gone (Slurm no longer lists it, or it is not this hub's),
but only from a listing that began after the job was submitted (one begun
before knows nothing of it); a failed listing (SSH or Slurm error) is
unknown for every job, never gone, and is not kept for later callers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .gate import GateResult, ListedJob, parse_listing


@dataclass
class Listing:
    ok: bool
    started: float  # the event loop's clock when the gate call began
    jobs: dict[str, ListedJob] = field(default_factory=dict)
    error: str = ""


class JobPoller:
    """Single-flight, time-bounded sharing of the gate's `list <prefix>`."""

    def __init__(self, gate, prefix: str):
        self.gate = gate
        self.prefix = prefix
        self.last: Listing | None = None  # the newest good listing
        self.calls = 0  # gate calls made (for tests and the benchmark)
        self._inflight: asyncio.Future | None = None

    async def listing(self, max_age: float, newer_than: float = float("-inf")) -> Listing:
        """A listing begun at most `max_age` seconds ago and not before `newer_than`."""
        loop = asyncio.get_running_loop()
        while True:
            last = self.last
            if last is not None and last.started >= newer_than and loop.time() - last.started <= max_age:
                return last
            if self._inflight is None or self._inflight.get_loop() is not loop:
                self._inflight = loop.create_task(self._refresh())
            result = await asyncio.shield(self._inflight)
            if not result.ok or result.started >= newer_than:
                return result
            # begun before the caller's job was submitted: ask again

    async def _refresh(self) -> Listing:
        started = asyncio.get_running_loop().time()
        self.calls += 1
        try:
            result: GateResult = await self.gate.list_jobs(self.prefix)
        finally:
            self._inflight = None
        if not result.ok:
            return Listing(False, started, error=(result.stderr or f"exit {result.returncode}").strip())
        listing = Listing(True, started, parse_listing(result.stdout))
        if self.last is None or listing.started >= self.last.started:
            self.last = listing
        return listing
