"""Profiles by group (issue 12): a profile with `groups` is seen and used only
by members of one of those hub groups. The form shows a user only the
profiles they may use; the form or the REST API asking for another is a 400
in words, before anything is stored or submitted; a user with no usable
profile is told so. The gate's side (the profile's Slurm words in sbatch's
argv) is in test_gateway_gate.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from unittest.mock import Mock, PropertyMock

import pytest
from test_hub_spawner import PROFILES, form_of, options_in, rest_spawn, spawner_for
from tornado import web

from hpcgw_hub.options import JobRequest, OptionsError, usable, validate

MEMBERS = {**PROFILES[1], "name": "members", "label": "Members' GPUs", "groups": ["gpu-users", "staff"],
           "account": "proj1", "constraint": "a100"}
RESTRICTED = [PROFILES[0], MEMBERS, {**PROFILES[0], "name": "staff", "label": "Staff", "groups": ["staff"]}]


def spawner_in(username: str, groups: list[str], profiles=None):
    spawner = spawner_for(username)
    spawner.profiles = RESTRICTED if profiles is None else profiles
    spawner.user.groups = [SimpleNamespace(name=name) for name in groups]
    return spawner


def test_usable_profiles_are_those_of_the_users_groups():
    names = lambda groups: [p["name"] for p in usable(RESTRICTED, groups)]  # noqa: E731
    assert names([]) == ["compute"]
    assert names(["gpu-users"]) == ["compute", "members"]
    assert names(["staff", "other"]) == ["compute", "members", "staff"]


def test_the_form_shows_only_the_profiles_the_user_may_use():
    outsider = form_of(spawner_in("olivia", ["179945b4-0890-4657-92d5-e3aaf4b7586f"]))
    member = form_of(spawner_in("ivan", ["gpu-users"]))
    assert [value for value, _, _ in options_in(outsider, "profile")] == ["compute"]
    assert "members" not in outsider and "Members&#39; GPUs" not in outsider and "cuda" not in outsider
    assert [value for value, _, _ in options_in(member, "profile")] == ["compute", "members"]


def test_a_remembered_profile_no_longer_open_falls_back_to_the_first_open_one():
    spawner = spawner_in("ivan", [])
    spawner.user_options = {"profile": "members", "image": "cuda"}
    assert options_in(form_of(spawner), "profile") == [("compute", True, False)]


def test_a_user_with_no_usable_profile_is_told_so_and_submits_nothing():
    spawner = spawner_in("carol", [], profiles=[MEMBERS])
    html = form_of(spawner)
    assert 'id="hpcgw-no-profile"' in html and "No notebook profile is open to you" in html
    assert "<select" not in html
    spawner.submit_batch_script = Mock(side_effect=AssertionError("submitted"))
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(spawner.start())
    assert refused.value.status_code == 400
    assert "no notebook profile is open to you" in refused.value.jupyterhub_message
    with pytest.raises(web.HTTPError, match="no notebook profile is open to you"):
        spawner.run_options_from_form({})


@pytest.mark.parametrize("options", [{"profile": "members"}, {"profile": "staff", "cpus": 1}])
def test_the_form_and_rest_asking_for_a_profile_not_open_are_a_400_in_words(options):
    spawner = spawner_in("olivia", ["gpu-users"] if options["profile"] == "staff" else [])
    name = options["profile"]
    for check in (lambda: spawner.run_options_from_form({k: [str(v)] for k, v in options.items()}),
                  lambda: spawner.check_user_options(options)):
        with pytest.raises(web.HTTPError) as refused:
            check()
        assert refused.value.status_code == 400
        message = refused.value.log_message % refused.value.args
        assert message.startswith(f"Spawn options refused: profile '{name}' is not open to you")
        assert "choose one of compute" in message
    # A start with those options (stored before, or by an old hub) submits nothing.
    spawner.user_options = options
    spawner.submit_batch_script = Mock(side_effect=AssertionError("submitted"))
    with pytest.raises(web.HTTPError, match="is not open to you"):
        asyncio.run(spawner.start())


def test_a_rest_spawn_of_a_profile_not_open_never_reaches_jupyterhub(monkeypatch):
    import test_hub_spawner

    monkeypatch.setattr(test_hub_spawner, "spawner_for", lambda name: spawner_in(name, []))
    error, reached = rest_spawn(b'{"profile": "members"}', monkeypatch)
    assert error is not None and error.status_code == 400 and reached == []
    assert "profile 'members' is not open to you" in error.log_message % error.args
    error, reached = rest_spawn(b'{"profile": "compute"}', monkeypatch)
    assert error is None and len(reached) == 1


def test_a_member_gets_the_profile_and_the_default_is_the_first_open_one():
    member = spawner_in("ivan", ["staff"])
    member.user_options = {"profile": "members", "image": "cuda"}
    assert member.job_request() == JobRequest(profile="members", partition="gpu", image="cuda", minutes=30, cpus=1,
                                              memory_mb=1024, gpus=1)
    only_members = spawner_in("ivan", ["gpu-users"], profiles=[MEMBERS, PROFILES[0]])
    outsider = spawner_in("olivia", [], profiles=[MEMBERS, PROFILES[0]])
    assert only_members.job_request().profile == "members"
    assert outsider.job_request().profile == "compute"  # the first profile is not theirs: the first that is


def test_without_groups_in_any_profile_nothing_changes():
    # No profile names groups: the user's groups are not even looked up.
    spawner = spawner_for("bob")
    type(spawner.user).groups = PropertyMock(side_effect=AssertionError("looked up"))
    assert spawner.user_groups() is None
    assert spawner.job_request() == validate({}, PROFILES)
    with pytest.raises(OptionsError, match=r"profile must be one of compute, gpu \(asked: 'nosuch'\)"):
        validate({"profile": "nosuch"}, RESTRICTED[:1] + [PROFILES[1]], groups=None)


def test_an_unknown_profile_is_refused_as_before_when_groups_apply():
    with pytest.raises(OptionsError, match=r"profile must be one of compute \(asked: 'nosuch'\)"):
        validate({"profile": "nosuch"}, RESTRICTED, groups=[])
