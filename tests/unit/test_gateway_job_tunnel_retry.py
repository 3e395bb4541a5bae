"""hpcgw-job opens the tunnel again when ssh ends before the hub's sshd
allocated the port for a reason a retry can fix (the hub's sshd dropped the
connection past MaxStartups, refused it, did not answer), with exponential
backoff and jitter, never after start_timeout; and not at all when a retry
cannot fix it (host key mismatch, key refused). A fake ssh (tests/unit/
job_bed.py, mode "flaky <N|always> <status> <what ssh says>") fails its first
N attempts and records the time of each.
"""

from __future__ import annotations

import os
import random
import re
import runpy
import signal
import time

import pytest
from job_bed import HUB_PORT, JOB

DROPPED = "kex_exchange_identification: read: Connection reset by peer"
REFUSED = "ssh: connect to host hub.gateway.test port 2222: Connection refused"
TIMED_OUT = "ssh: connect to host hub.gateway.test port 2222: Connection timed out"
CLOSED = "Connection closed by 10.0.0.2 port 2222"


def attempts(bed) -> list[float]:
    path = bed.here / "ssh-attempts"
    return [float(t) for t in path.read_text().split()] if path.exists() else []


def test_a_tunnel_that_fails_before_it_is_up_is_opened_again(bed):
    said = DROPPED  # the hub's sshd past MaxStartups
    bed.modes(ssh=f"flaky 3 255 {said}", notebook="ok")
    bed.start()
    report = bed.reported()
    assert report["body"] == f'{{"port": {HUB_PORT}}}'
    times = attempts(bed)
    assert len(times) == 4
    # Exponential backoff with jitter: each wait in [half, all] of 0.5, 1, 2 s.
    waits = [b - a for a, b in zip(times, times[1:], strict=False)]
    for wait, ceiling in zip(waits, (0.5, 1, 2), strict=True):
        assert ceiling / 2 <= wait <= ceiling + 1.0, waits
    log = bed.log_text()
    # Each attempt is logged: its number, what ssh said, the wait before the next.
    for number in (1, 2, 3, 4):
        assert f"opening the tunnel (attempt {number}," in log
    assert len(re.findall(r"attempt \d in \d+\.\d s", log)) == 3
    assert log.count(f"hpcgw-job: ssh: {said}") == 3
    assert "tunnel up: hub 127.0.0.1:%d" % HUB_PORT in log


@pytest.mark.parametrize("said", [REFUSED, TIMED_OUT, CLOSED], ids=["refused", "timeout", "closed"])
def test_other_errors_before_the_tunnel_is_up_are_retried(bed, said):
    bed.modes(ssh=f"flaky 1 255 {said}", notebook="ok")
    bed.start()
    bed.reported()
    assert len(attempts(bed)) == 2
    assert "opening the tunnel (attempt 2," in bed.log_text()


def test_the_retries_give_up_at_the_start_timeout(bed):
    bed.modes(ssh=f"flaky always 255 {DROPPED}", notebook="ok")
    bed.config["start_timeout"] = 4
    started = time.monotonic()
    assert bed.run() == 1
    took = time.monotonic() - started
    times = attempts(bed)
    # 0, ~0.5, ~1.5, ~3.5 s: several attempts, none after the deadline.
    assert 3 <= len(times) <= 5, times
    assert times[-1] - times[0] < 4
    assert took < 4 + 3, took
    log = bed.log_text()
    assert "no time left for another attempt within start_timeout (4 s)" in log
    assert "the hub accepted the port" not in log


@pytest.mark.parametrize("said", [
    "Host key verification failed.",
    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
    "tunnelbot@hub.gateway.test: Permission denied (publickey).",
    "Error: remote port forwarding failed for listen port 0",
], ids=["host-key", "host-key-changed", "key-refused", "listener-refused"])
def test_errors_a_retry_cannot_fix_end_the_job_at_once(bed, said):
    bed.modes(ssh=f"flaky always 255 {said}", notebook="ok")
    assert bed.run() == 1
    assert len(attempts(bed)) == 1
    log = bed.log_text()
    assert "a retry cannot fix this" in log
    assert "attempt 2" not in log


def test_a_tunnel_that_came_up_and_ended_is_not_opened_again(bed):
    """Once the port is reported, the tunnel's end ends the job (as before):
    the hub holds the old port; a new tunnel would have another."""
    bed.start()
    bed.reported()
    os.kill(bed.record("ssh")["pid"], signal.SIGKILL)
    assert bed.process.wait(timeout=30) == 1
    assert "opening the tunnel (attempt 2" not in bed.log_text()


def test_the_backoff_doubles_up_to_its_cap_with_jitter():
    wrapper = runpy.run_path(str(JOB), run_name="hpcgw_job")
    delay = wrapper["retry_delay"]
    rng = random.Random(12)
    for attempt, ceiling in ((1, 0.5), (2, 1), (3, 2), (4, 4), (7, 20), (30, 20)):
        drawn = [delay(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in drawn)
        # Jitter: the jobs of one burst do not come back at the same moment.
        assert max(drawn) - min(drawn) > ceiling / 4
