"""hpcgw-gate: a profile's Slurm words (account, qos, reservation, constraint,
gpu_type) become sbatch options built from the cluster's OWN gateway.json,
never from the request (issue 12, profiles by group). Same fake Slurm as
test_gateway_gate.py: sbatch records its argv."""

from __future__ import annotations

import pytest
from test_gateway_gate import OURS, PROFILES, UID, request, submit
from test_gateway_gate import slurm as slurm  # noqa: F401 (the fixture)

WORDS = {"account": "proj1", "qos": "gpu-high", "reservation": "course_2026", "constraint": "[rack1|rack2]&a100",
         "gpu_type": "a100", "groups": ["gpu-users"]}


def argv_of(slurm, profiles, body) -> list[str]:
    slurm.settings(job_name_prefix="hpcgw-hub", profiles=profiles)
    slurm.answers("sbatch", out="99\n")
    done = submit(slurm, body)
    assert done.returncode == 0, done.stderr
    [call] = slurm.calls()
    return call["argv"]


def test_the_profiles_slurm_words_become_sbatch_options(slurm):
    profiles = [PROFILES[0], {**PROFILES[1], **WORDS}]
    argv = argv_of(slurm, profiles, request(profile="gpu", image="cuda", memory_mb=2048, gpus=2))
    root = str(slurm.root.resolve())
    assert argv == [
        "sbatch", "--parsable", f"--job-name={OURS}", "--partition=gpu", "--time=60", "--cpus-per-task=1",
        "--mem=2048M", f"--output={root}/logs/{UID}/%j.log", f"--chdir={root}", "--comment=user=- globus=-",
        "--account=proj1", "--qos=gpu-high", "--reservation=course_2026", "--constraint=[rack1|rack2]&a100",
        "--gres=gpu:a100:2",
    ]


def test_a_gpu_type_with_no_gpus_asked_adds_no_gres(slurm):
    argv = argv_of(slurm, [PROFILES[0], {**PROFILES[1], "gpu_type": "a100"}],
                   request(profile="gpu", image="cuda", memory_mb=2048, gpus=0))
    assert not [word for word in argv if word.startswith("--gres")]


def test_a_profile_without_slurm_words_adds_none(slurm):
    argv = argv_of(slurm, [PROFILES[0], {**PROFILES[1], **WORDS}], request())
    assert not [word for word in argv if word.split("=")[0] in
                ("--account", "--qos", "--reservation", "--constraint", "--gres")]


@pytest.mark.parametrize("field", ["account", "qos", "reservation", "constraint", "gpu_type", "groups"])
def test_the_request_cannot_carry_a_slurm_word(slurm, field):
    """Only the cluster's settings choose them: a request naming one is refused."""
    slurm.settings(job_name_prefix="hpcgw-hub", profiles=[PROFILES[0], {**PROFILES[1], **WORDS}])
    done = submit(slurm, request(**{field: "root"}))
    assert done.returncode == 126 and b"unknown: '" + field.encode() in done.stderr
    assert slurm.calls() == []


@pytest.mark.parametrize("change, why", [
    ({"account": "proj1 --uid=0"}, b"gateway.json: profiles[1].account must be a Slurm account name"),
    ({"constraint": "a100;id"}, b"gateway.json: profiles[1].constraint must be a Slurm constraint"),
    ({"gpu_type": "a100:8"}, b"gateway.json: profiles[1].gpu_type must be a Slurm gpu type name"),
])
def test_a_wrong_slurm_word_in_the_settings_refuses_everything(slurm, change, why):
    slurm.settings(job_name_prefix="hpcgw-hub", profiles=[PROFILES[0], {**PROFILES[1], **change}])
    done = submit(slurm, request())
    assert done.returncode == 126 and why in done.stderr, done.stderr
    assert slurm.calls() == []
