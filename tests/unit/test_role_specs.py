"""Every role documents exactly the variables it has: the options of
meta/argument_specs.yml (entry points `main` and `validate`) are the keys
of defaults/main.yml, each with a description, and each prefixed with the
role's name."""

import pathlib

import pytest
import yaml

ROLES = sorted(p for p in (pathlib.Path(__file__).parents[2] / "roles").iterdir() if p.is_dir())


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_match_defaults(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    assert set(specs) >= {"main", "validate"}
    for entry_point in ("main", "validate"):
        options = specs[entry_point]["options"]
        assert set(options) == set(defaults), entry_point
        assert all(option.get("description") for option in options.values())
    assert all(name.startswith(role.name + "_") for name in defaults)
