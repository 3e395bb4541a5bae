"""The spawner role's validate entry point names the exact wrong field of
spawner_profiles and spawner_images (ansible-playbook on localhost, no changes)."""

from __future__ import annotations

import pytest
from role_cases import ANSIBLE_PLAYBOOK, run_cases, words

PROFILE = {"name": "compute", "label": "CPU", "partition": "compute", "default_minutes": 60, "max_minutes": 480,
           "default_cpus": 1, "max_cpus": 4, "default_memory_mb": 2048, "max_memory_mb": 8192, "images": ["notebook"]}
GOOD = {
    "spawner_cluster_host": "login",
    "spawner_cluster_host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBase64"],
    "spawner_images": [{"name": "notebook", "label": "Notebook", "description": "JupyterLab"},
                       {"name": "cuda", "label": "CUDA"}],
    # The gpu profile has every optional field (groups and the Slurm words).
    "spawner_profiles": [PROFILE, {**PROFILE, "name": "gpu", "partition": "gpu", "max_gpus": 2, "default_gpus": 1,
                                   "images": ["cuda", "notebook"], "groups": ["gpu-users"], "account": "proj1",
                                   "qos": "gpu", "reservation": "course", "constraint": "a100&ib",
                                   "gpu_type": "a100"}],
}
PROFILE_CASES = [
    ({"max_minutes": "480"}, "spawner_profiles[1].max_minutes must be a whole number of at least 1"),
    ({"max_minutes": 0}, "spawner_profiles[1].max_minutes must be a whole number of at least 1"),
    ({"default_minutes": 481}, "spawner_profiles[1].default_minutes must be a whole number from 1 to max_minutes"),
    ({"max_cpus": True}, "spawner_profiles[1].max_cpus must be a whole number"),
    ({"default_gpus": 3}, "spawner_profiles[1].default_gpus must be a whole number from 0 to max_gpus (2)"),
    ({"name": "compute"}, 'spawner_profiles[1].name "compute" is used by two profiles'),
    ({"name": "a b"}, "spawner_profiles[1].name must be a word"),
    ({"partition": "gpu;id"}, "spawner_profiles[1].partition must be a Slurm partition name"),
    ({"label": ""}, "spawner_profiles[1].label must be a non-empty string"),
    ({"images": []}, "spawner_profiles[1].images must be a non-empty list"),
    ({"images": ["notebook", "nosuch"]}, 'spawner_profiles[1].images[1] is "nosuch", not an image the cluster offers'),
    ({"max_minutes": None}, "spawner_profiles[1].max_minutes must be a whole number of at least 1 (got null)"),
    ({"gpu": 1}, "spawner_profiles.gpu. Supported parameters include"),  # the argument spec's wording
    ({"constraint": "a100 && rm -rf"}, "spawner_profiles[1].constraint must be a Slurm constraint"),
    ({"groups": []}, "spawner_profiles[1].groups must be a non-empty list of hub group names"),
]
IMAGE_CASES = [
    ([{"name": "../x", "label": "X"}], "spawner_images[0].name must be an image name"),
    # The cluster's rule (apptainer_images, the job wrapper): lower case.
    ([{"name": "Notebook", "label": "X"}], "spawner_images[0].name must be an image name"),
    ([{"name": "notebook"}], "spawner_images[0].label must be a non-empty string"),
    ([{"name": "notebook", "label": "A"}, {"name": "notebook", "label": "B"}],
     'spawner_images[1].name "notebook" is listed twice'),
]


def _profiles(change: dict) -> list:
    return [GOOD["spawner_profiles"][0], {**GOOD["spawner_profiles"][1], **change}]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("needs ansible-playbook beside pytest")
    cases = {"good": GOOD}
    cases |= {f"profile-{i}": {**GOOD, "spawner_profiles": _profiles(change)}
              for i, (change, _) in enumerate(PROFILE_CASES)}
    cases |= {f"images-{i}": {**GOOD, "spawner_images": images, "spawner_profiles": [PROFILE]}
              for i, (images, _) in enumerate(IMAGE_CASES)}
    return run_cases(tmp_path_factory.mktemp("spawner"), "spawner", cases,
                     inventory={"cluster": {"hosts": {"login": {}}}})


def test_good_profiles_pass(results):
    assert results["good"]["result"] == "passed"


@pytest.mark.parametrize("case", range(len(PROFILE_CASES)))
def test_a_wrong_profile_field_is_named(results, case):
    message = PROFILE_CASES[case][1]
    assert message in words(results[f"profile-{case}"]["result"])


@pytest.mark.parametrize("case", range(len(IMAGE_CASES)))
def test_a_wrong_image_field_is_named(results, case):
    message = IMAGE_CASES[case][1]
    assert message in words(results[f"images-{case}"]["result"])
