"""hpcgw_hub: spawn options, the batch script, the port callback, orphan reaping."""

from __future__ import annotations

import shlex
import subprocess
from unittest.mock import Mock

import pytest
from jupyterhub import apihandlers
from tornado import web

from hpcgw_hub.callback import parse_port
from hpcgw_hub.options import OptionsError, from_form, validate
from hpcgw_hub.reaper import known_job_ids, orphans
from hpcgw_hub.spawner import GatewaySpawner, user_id

PARTITIONS = {
    "compute": {"max_minutes": 480, "max_cpus": 2, "max_memory_mb": 4096, "max_gpus": 0},
    "gpu": {"max_minutes": 60, "max_cpus": 1, "max_memory_mb": 2048, "max_gpus": 2},
}
DEFAULTS = {"partition": "compute", "minutes": 60, "cpus": 1, "memory_mb": 1024, "gpus": 0}


def test_defaults_make_a_valid_request():
    request = validate({}, PARTITIONS, DEFAULTS)
    assert (request.partition, request.minutes, request.cpus, request.memory_mb, request.gpus) == (
        "compute", 60, 1, 1024, 0)


@pytest.mark.parametrize(
    "options, named",
    [
        ({"partition": "debug"}, "partition"),
        ({"partition": "compute; id"}, "partition"),
        ({"minutes": 481}, "minutes"),
        ({"minutes": 0}, "minutes"),
        ({"cpus": 3}, "cpus"),
        ({"cpus": "2"}, "cpus"),
        ({"cpus": True}, "cpus"),
        ({"memory_mb": 10**9}, "memory_mb"),
        ({"gpus": 1}, "gpus"),
        ({"partition": "gpu", "gpus": 3}, "gpus"),
        ({"req_options": "--uid=0"}, "unknown spawn option"),
        ({"batch_cancel_cmd": "id"}, "unknown spawn option"),
    ],
)
def test_options_outside_the_limits_are_refused(options, named):
    with pytest.raises(OptionsError) as refused:
        validate(options, PARTITIONS, DEFAULTS)
    assert named in str(refused.value)


def test_form_fields_become_numbers_and_bad_numbers_are_named():
    assert from_form({"partition": ["gpu"], "cpus": ["1"], "gpus": ["2"], "minutes": [""]}) == {
        "partition": "gpu", "cpus": 1, "gpus": 2}
    with pytest.raises(OptionsError, match="cpus"):
        from_form({"cpus": ["two"]})


@pytest.mark.parametrize(
    "body, status",
    [
        (b'{"port": 40123}', 200),
        (b'{"port": "40123"}', 400),
        (b'{"port": 0}', 400),
        (b'{"port": 70000}', 400),
        (b'{"port": true}', 400),
        (b'{"port": 40123, "batch_cancel_cmd": "id"}', 400),
        (b'{"ip": "10.0.0.1"}', 400),
        (b"[40123]", 400),
        (b"port=40123", 400),
        (b"", 400),
    ],
)
def test_port_callback_accepts_only_a_port(body, status):
    if status == 200:
        assert parse_port(body) == 40123
    else:
        with pytest.raises(web.HTTPError) as refused:
            parse_port(body)
        assert refused.value.status_code == 400


def test_batchspawner_attribute_setting_handler_is_gone():
    assert not [route for route, _ in apihandlers.default_handlers if "batchspawner" in route]


def test_user_ids_are_stable_safe_and_distinct():
    assert user_id("alice") == user_id("alice")
    assert user_id("erin@uchicago.edu") != user_id("erin@globusid.org")
    assert all(c in "u-0123456789abcdef" for c in user_id("$(rm -rf ~);`id`"))


def spawner_for(username: str, environment: dict | None = None) -> GatewaySpawner:
    spawner = GatewaySpawner(
        user=Mock(name="user"), gateway_root="/home/gateway/hpcgw", cluster_host="login",
        partitions=PARTITIONS, default_options=DEFAULTS, job_name_prefix="hpcgw-hub",
    )
    spawner.user.name = username
    spawner.environment = environment or {}
    spawner.get_env = lambda: {"JUPYTERHUB_USER": username, "JUPYTERHUB_API_TOKEN": "t0k3n", "PATH": "/evil"}
    return spawner


def test_batch_script_quotes_every_value_for_a_hostile_username(tmp_path):
    hostile = "x'; touch pwned; echo '$(touch pwned2)`touch pwned3` #SBATCH --uid=0"
    spawner = spawner_for(hostile, {"EXTRA": "a b;c", "bad-name": "x"})
    script = spawner.batch_script_for(validate({}, PARTITIONS, DEFAULTS))
    lines = script.splitlines()
    # Slurm directives come only from the admin's names and checked numbers.
    assert [line for line in lines if line.startswith("#SBATCH")] == [
        f"#SBATCH --job-name=hpcgw-hub-{user_id(hostile)}",
        "#SBATCH --partition=compute",
        "#SBATCH --time=60",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=1024M",
        f"#SBATCH --output=/home/gateway/hpcgw/logs/{user_id(hostile)}.%j.log",
        "#SBATCH --chdir=/home/gateway/hpcgw",
    ]
    assert "PATH=" not in script and "bad-name" not in script
    # Run the script's exports in a real shell: every value arrives verbatim, nothing runs.
    exports = "\n".join(line for line in lines if line.startswith("export "))
    shown = subprocess.run(
        ["bash", "-c", exports + '\nprintf "%s\\0" "$JUPYTERHUB_USER" "$EXTRA" "$HPCGW_USER_ID"'],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout.split("\0")[:3]
    assert shown == [hostile, "a b;c", user_id(hostile)]
    assert not list(tmp_path.iterdir())
    assert lines[-1] == "exec " + shlex.quote("/home/gateway/hpcgw/bin/hpcgw-job")


def test_control_characters_are_refused():
    spawner = spawner_for("bob\n#SBATCH --uid=0")
    with pytest.raises(web.HTTPError) as refused:
        spawner.batch_script_for(validate({}, PARTITIONS, DEFAULTS))
    assert refused.value.status_code == 400


def test_reaper_cancels_only_this_hubs_unknown_jobs():
    users = [
        {"servers": {"": {"state": {"job_id": "101"}}}},
        {"servers": {"": {"state": {}}, "other": None}},
        {"servers": {}},
    ]
    listing = "101 hpcgw-hub-u-aaaa RUNNING\n102 hpcgw-hub-u-bbbb PENDING\n103 other-job RUNNING\n104 hpcgw-hubx-u-c RUNNING\n"
    assert orphans(listing, "hpcgw-hub", known_job_ids(users)) == ["102"]


def test_reaper_spares_a_job_its_spawner_saves_while_the_reaper_looks(monkeypatch):
    """The hub restarts while bob's server starts: the reaper sees job 102 on the
    cluster before bob's spawner has saved it. Only 103, still unknown after the
    grace, is cancelled (measured on the test bed: this race cancelled a spawn)."""
    import asyncio
    from types import SimpleNamespace

    from hpcgw_hub import reaper

    answers = iter([
        [],                                                   # before 102 is saved
        [{"servers": {"": {"state": {"job_id": "102"}}}}],    # after the grace
    ])
    monkeypatch.setattr(reaper, "hub_users", lambda url, token: next(answers))
    cancelled = []

    class FakeGate:
        async def list_jobs(self, prefix):
            return SimpleNamespace(ok=True, stdout="102 hpcgw-hub-u-b RUNNING\n103 hpcgw-hub-u-c RUNNING\n", stderr="")

        async def cancel(self, job_id):
            cancelled.append(job_id)
            return SimpleNamespace(ok=True, stdout="", stderr="")

    done = asyncio.run(reaper.reap_once(FakeGate(), "http://hub/api", "t", "hpcgw-hub", grace=0))
    assert done == cancelled == ["103"]


def test_the_placeholder_spawner_refuses_in_words():
    import asyncio

    from hpcgw_hub.placeholder import NotConfiguredSpawner

    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(NotConfiguredSpawner(user=Mock(name="user")).start())
    assert refused.value.status_code == 503
    assert "cluster connection is not configured" in refused.value.log_message


def test_spawners_share_one_gate_per_connection_setting():
    a, b = spawner_for("alice"), spawner_for("bob")
    assert a.gate is b.gate
    b.command_timeout = 5
    assert a.gate is not b.gate and b.gate.timeout == 5
