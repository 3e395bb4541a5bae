"""Every role documents exactly the variables it has: the options of
meta/argument_specs.yml (entry points `main` and, for a role with
tasks/validate.yml, `validate`) are the keys of defaults/main.yml, each with
a description, and each prefixed with the role's name. A variable whose
default is one of the shared values (roles/_common, `{{ _common_* }}`)
documents that value as its default, so the docs cannot drift from it."""

import pathlib

import pytest
import yaml

ROLES = sorted(p for p in (pathlib.Path(__file__).parents[2] / "roles").iterdir() if p.is_dir())
SHARED = yaml.safe_load((pathlib.Path(__file__).parents[2] / "roles/_common/defaults/main.yml").read_text())


def entry_points(role):
    return ["main", "validate"] if (role / "tasks" / "validate.yml").is_file() else ["main"]


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_match_defaults(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    assert set(specs) >= set(entry_points(role))
    for entry_point in entry_points(role):
        options = specs[entry_point]["options"]
        assert set(options) == set(defaults), entry_point
        assert all(option.get("description") for option in options.values())
    assert all(name.startswith(role.name + "_") for name in defaults)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_a_shared_default_is_documented_as_its_value(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    shared = {name: value.removeprefix("{{ ").removesuffix(" }}") for name, value in defaults.items()
              if isinstance(value, str) and value.startswith("{{ _common_") and value.count("{{") == 1}
    wrong = {name: (options[name].get("default"), SHARED[common]) for name, common in shared.items()
             if options[name].get("default") != SHARED[common]}
    assert not wrong, wrong


def test_every_role_but_common_has_the_shared_values():
    """Each role depends on _common, so _common_* is in scope wherever it runs."""
    for role in ROLES:
        if role.name == "_common":
            continue
        meta = yaml.safe_load((role / "meta" / "main.yml").read_text())
        assert {"role": "_common"} in meta["dependencies"], role.name
