"""Spawn options: what a user may ask for, checked against the admin's profiles.

One function, `validate`, serves the spawn form and the REST API alike: the
JSON body of ``POST /hub/api/users/{name}/server`` becomes ``user_options``
unchanged, and the form's fields become the same options (`from_form`), so
nothing a user sends reaches the batch script unchecked.

A profile (role variable ``spawner_profiles``, one dict each) is::

    {"name": "compute", "label": "CPU notebook", "partition": "compute",
     "default_minutes": 60, "max_minutes": 480, "default_cpus": 1, "max_cpus": 4,
     "default_memory_mb": 2048, "max_memory_mb": 8192,
     "default_gpus": 0, "max_gpus": 0,          # both optional: no GPUs
     "images": ["notebook", "datascience"]}     # the first is the default

A user may ask for any whole number from 1 (GPUs: 0) up to the profile's
maximum; what they do not choose is the profile's default, and a missing
profile is the first one.

A profile with ``"groups": [...]`` (hub group names) is seen and used only by
members of one of them (`usable`); with the user's groups given, `validate`
refuses the others, and a missing profile is the first one the user may use.
Its Slurm words (account, qos, reservation, constraint, gpu_type) never pass
through the hub: the gate reads them from the cluster's own copy of the
profiles.
"""

from __future__ import annotations

from dataclasses import dataclass

from .rules import RESOURCES, profile_errors


class OptionsError(ValueError):
    """A spawn option outside what the admin allows; the message is for the user."""


@dataclass(frozen=True)
class JobRequest:
    profile: str
    partition: str
    image: str
    minutes: int
    cpus: int
    memory_mb: int
    gpus: int


FIELDS = ("profile", "image", "minutes", "cpus", "memory_mb", "gpus")
# The numeric options (RESOURCES: each with the least a user may ask for) come
# with the profile rules from hpcgw_hub.rules.


def _whole_number(name: str, value, low: int, high: int) -> int:
    # bool is an int in Python; a JSON true is not a number of CPUs.
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionsError(f"{name} must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise OptionsError(f"{name} must be between {low} and {high} (asked: {value})")
    return value


def limits(profile: dict, field: str) -> tuple[int, int, int]:
    """(least, default, most) a user may ask for of `field` in `profile`."""
    least = RESOURCES[field]
    return least, profile.get(f"default_{field}", least), profile.get(f"max_{field}", least)


def check_profiles(profiles: list, images: list | None = None) -> None:
    """Raise ValueError naming each wrong field of the admin's profiles.

    The rules are hpcgw_hub.rules.profile_errors, the very code the spawner
    role checks spawner_profiles with before the hub is configured; this
    guards a hand-written config. With `images` (the catalogue, a list of
    {name, label, description}), every image a profile offers must be in it.
    """
    errors = profile_errors(profiles, images)
    if errors:
        raise ValueError(" ".join(errors))


def may_use(profile: dict, groups) -> bool:
    """True if a member of hub groups `groups` may see and use `profile`."""
    return "groups" not in profile or bool(set(profile["groups"]) & set(groups))


def usable(profiles: list, groups) -> list:
    """The profiles a member of hub groups `groups` may see and use, in order."""
    return [profile for profile in profiles if may_use(profile, groups)]


NO_PROFILE = ("no notebook profile is open to you: each is for members of certain groups. "
              "Ask the gateway's administrators to add you to a group, then log in again.")


def validate(user_options: dict, profiles: list, groups=None) -> JobRequest:
    """Return the job to submit, or raise OptionsError naming the bad option.

    `profiles` are the admin's profiles (see the module's help); the first one
    is the default. With `groups` (the user's hub group names), only the
    profiles they may use (`usable`) count, the first of them the default.
    """
    if not isinstance(user_options, dict):
        raise OptionsError("spawn options must be a JSON object")
    unknown = sorted(set(map(str, user_options)) - set(FIELDS))
    if unknown:
        raise OptionsError(
            f"unknown spawn option(s): {', '.join(unknown)} (allowed: {', '.join(FIELDS)})")
    if groups is not None:
        allowed = usable(profiles, groups)
        if not allowed:
            raise OptionsError(NO_PROFILE)
        name = user_options.get("profile", allowed[0]["name"])
        hidden = {profile["name"] for profile in profiles} - {profile["name"] for profile in allowed}
        if isinstance(name, str) and name in hidden:
            raise OptionsError(f"profile {name!r} is not open to you (it is for members of certain groups); "
                               f"choose one of {', '.join(profile['name'] for profile in allowed)}")
        profiles = allowed
    by_name = {profile["name"]: profile for profile in profiles}
    name = user_options.get("profile", profiles[0]["name"])
    if not isinstance(name, str) or name not in by_name:
        raise OptionsError(f"profile must be one of {', '.join(by_name)} (asked: {name!r})")
    profile = by_name[name]
    offered = profile["images"]
    image = user_options.get("image", offered[0])
    if not isinstance(image, str) or image not in offered:
        raise OptionsError(
            f"image {image!r} is not offered with profile {name}; choose one of {', '.join(offered)}")
    numbers = {}
    for field in RESOURCES:
        least, default, most = limits(profile, field)
        numbers[field] = _whole_number(field, user_options.get(field, default), least, most)
    return JobRequest(profile=name, partition=profile["partition"], image=image, **numbers)


def remembered(user_options, profiles: list) -> dict:
    """The form's prefill: the user's last choice where it is still allowed,
    the profile's defaults elsewhere (and the first profile if theirs is gone)."""
    last = user_options if isinstance(user_options, dict) else {}
    by_name = {profile["name"]: profile for profile in profiles}
    profile = by_name.get(last.get("profile")) if isinstance(last.get("profile"), str) else None
    if profile is None:
        profile, last = profiles[0], {}
    image = last.get("image")
    chosen = {"profile": profile["name"], "image": image if image in profile["images"] else profile["images"][0]}
    for field in RESOURCES:
        least, default, most = limits(profile, field)
        value = last.get(field)
        ok = isinstance(value, int) and not isinstance(value, bool) and least <= value <= most
        chosen[field] = value if ok else default
    return chosen


def from_form(formdata: dict) -> dict:
    """The spawn form's fields (lists of strings) as user_options, typed.

    Fields left empty are left out (the profile's default applies); fields
    the form does not have are kept, so that `validate` refuses them by name.
    """
    options: dict = {}
    for name, values in formdata.items():
        if name == "_xsrf" or not isinstance(values, list) or not values:
            continue
        value = values[0]
        value = value.strip() if isinstance(value, str) else value
        if value == "":
            continue
        if name in RESOURCES:
            try:
                options[name] = int(value, 10)
            except (TypeError, ValueError):
                raise OptionsError(f"{name} must be a whole number, not {value!r}") from None
        else:
            options[name] = value
    return options
