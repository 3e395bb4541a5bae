"""The port report (issue 15): only the job wrapper, outside the container,
may tell the hub where a notebook is. The server's own API token is inside
the container, so the report must also carry this start's secret
(HPCGW_PORT_SECRET of the job), which the wrapper keeps outside.
"""

from __future__ import annotations

import asyncio
import json
from unittest.mock import AsyncMock

import pytest
from batchspawner import JobStatus
from test_hub_spawner import spawner_for
from tornado import web

from hpcgw_hub.callback import reporting_spawner


def exported(request: str, name: str) -> str:
    """A variable of the job's environment in the gate's submit request."""
    env = json.loads(request)["env"]
    assert name in env, f"{name} not in the submit request's env"
    return env[name]


async def start_and_capture(spawner):
    """Start the spawner (submit and status stubbed); return the task and the submit request."""
    scripts = []

    async def submit():
        scripts.append(spawner.submit_request(spawner.job_request()))
        spawner.job_id = "42"
        return "42"

    spawner.submit_batch_script = submit
    spawner.query_job_status = AsyncMock(return_value=JobStatus.RUNNING)
    spawner.save_state = lambda: None  # no hub database here (test_hub_lifecycle.py has one)
    spawner.startup_poll_interval = 0.05
    task = asyncio.ensure_future(spawner.start())
    while not scripts:
        if task.done():  # start() failed before it submitted: say why
            task.result()
            raise AssertionError("start() ended without submitting")
        await asyncio.sleep(0.01)
    return task, scripts[0]


def refusal(spawners, token, secret) -> int:
    with pytest.raises(web.HTTPError) as refused:
        reporting_spawner(spawners, token, secret)
    return refused.value.status_code


def test_the_servers_own_token_alone_cannot_report_the_port():
    async def scenario():
        alice, bob = spawner_for("alice"), spawner_for("bob")
        alice.api_token, bob.api_token = "alice-token", "bob-token"
        task, script = await start_and_capture(alice)
        secret = exported(script, "HPCGW_PORT_SECRET")
        assert len(secret) >= 32
        # What code in alice's container has: her token, not the secret.
        assert refusal([alice], "alice-token", "") == 403
        assert refusal([alice], "alice-token", secret[:-1] + ("x" if secret[-1] != "x" else "y")) == 403
        # Bob's token with alice's secret: still not alice's report.
        assert refusal([bob], "bob-token", secret) == 403
        assert not task.done()
        # The wrapper's report: token and secret.
        assert reporting_spawner([bob, alice], "alice-token", secret) is alice
        assert alice.notebook_port_reported(40123)
        assert await asyncio.wait_for(task, 5) == (alice.ip, 40123)

    asyncio.run(scenario())


def test_every_start_has_a_new_secret_and_an_old_one_is_refused():
    async def scenario():
        alice = spawner_for("alice")
        alice.api_token = "alice-token"
        first_task, first = await start_and_capture(alice)
        first_task.cancel()
        second_task, second = await start_and_capture(alice)
        first_secret, second_secret = exported(first, "HPCGW_PORT_SECRET"), exported(second, "HPCGW_PORT_SECRET")
        assert first_secret != second_secret
        assert refusal([alice], "alice-token", first_secret) == 403
        assert reporting_spawner([alice], "alice-token", second_secret) is alice
        second_task.cancel()

    asyncio.run(scenario())


def test_the_secret_cannot_be_set_through_the_spawners_environment():
    alice = spawner_for("alice", {"HPCGW_PORT_SECRET": "chosen-by-the-admin-config"})
    alice.port_secret = "made-by-the-hub"
    request = alice.submit_request(alice.job_request())
    assert exported(request, "HPCGW_PORT_SECRET") == "made-by-the-hub"
