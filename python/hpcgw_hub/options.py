"""Spawn options: what a user may ask for, checked against what the admin allows.

One function, `validate`, serves the spawn form and the REST API alike: the
JSON body of ``POST /hub/api/users/{name}/server`` becomes ``user_options``
unchanged, so nothing a user sends reaches the batch script unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass


class OptionsError(ValueError):
    """A spawn option outside what the admin allows; the message is for the user."""


@dataclass(frozen=True)
class JobRequest:
    partition: str
    minutes: int
    cpus: int
    memory_mb: int
    gpus: int


FIELDS = ("partition", "minutes", "cpus", "memory_mb", "gpus")


def _whole_number(name: str, value, low: int, high: int) -> int:
    # bool is an int in Python; a JSON true is not a number of CPUs.
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionsError(f"{name} must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise OptionsError(f"{name} must be between {low} and {high} (asked: {value})")
    return value


def validate(user_options: dict, partitions: dict, defaults: dict) -> JobRequest:
    """Return the job to submit, or raise OptionsError naming the bad option.

    `partitions` maps each allowed partition to its limits:
    ``{"max_minutes": int, "max_cpus": int, "max_memory_mb": int, "max_gpus": int}``;
    `defaults` gives each field's value when the user does not choose it.
    """
    if not isinstance(user_options, dict):
        raise OptionsError("spawn options must be a JSON object")
    unknown = sorted(set(user_options) - set(FIELDS))
    if unknown:
        raise OptionsError(f"unknown spawn option(s): {', '.join(map(str, unknown))}")
    chosen = {**defaults, **user_options}
    partition = chosen.get("partition")
    if not isinstance(partition, str) or partition not in partitions:
        raise OptionsError(f"partition must be one of {', '.join(sorted(partitions))} (asked: {partition!r})")
    limits = partitions[partition]
    return JobRequest(
        partition=partition,
        minutes=_whole_number("minutes", chosen.get("minutes"), 1, limits["max_minutes"]),
        cpus=_whole_number("cpus", chosen.get("cpus"), 1, limits["max_cpus"]),
        memory_mb=_whole_number("memory_mb", chosen.get("memory_mb"), 1, limits["max_memory_mb"]),
        gpus=_whole_number("gpus", chosen.get("gpus", 0), 0, limits.get("max_gpus", 0)),
    )


def from_form(formdata: dict) -> dict:
    """The spawn form's fields (lists of strings) as user_options (checked later)."""
    options: dict = {}
    for name in FIELDS:
        values = formdata.get(name)
        if not values or values[0] == "":
            continue
        value = values[0]
        if name == "partition":
            options[name] = value
        else:
            try:
                options[name] = int(value)
            except ValueError:
                raise OptionsError(f"{name} must be a whole number, not {value!r}") from None
    return options
