"""Role READMEs cannot drift from meta/argument_specs.yml: each README's
variable table is exactly what `make docs` (tests/docs/role_readmes.py,
aar-doc) writes from the spec, for every role with an argument spec."""

import importlib.util
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location("role_readmes", ROOT / "tests" / "docs" / "role_readmes.py")
role_readmes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(role_readmes)

ROLES = role_readmes.roles(ROOT)


def _copy(tmp_path, roles):
    """The collection's galaxy.yml and these roles, in a folder of their own."""
    shutil.copy(ROOT / "galaxy.yml", tmp_path)
    for role in roles:
        shutil.copytree(role, tmp_path / "roles" / role.name)
    return tmp_path


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    copy = _copy(tmp_path_factory.mktemp("collection"), ROLES)
    return copy, role_readmes.generate(copy)


def test_every_role_is_covered():
    assert {role.name for role in ROLES} == {p.name for p in (ROOT / "roles").iterdir() if p.is_dir()}


def test_the_tables_render_without_problems(regenerated):
    assert regenerated[1] == []


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_readme_table_is_up_to_date(role, regenerated):
    fresh = (regenerated[0] / "roles" / role.name / "README.md").read_text()
    assert (role / "README.md").read_text() == fresh, f"roles/{role.name}/README.md is stale: run `make docs`"


def test_a_changed_description_changes_the_table(tmp_path):
    copy = _copy(tmp_path, [ROOT / "roles" / "gateway"])
    spec = copy / "roles" / "gateway" / "meta" / "argument_specs.yml"
    text = spec.read_text()
    old = "Hub user names whose folders"
    assert old in text
    spec.write_text(text.replace(old, "Names of hub users whose folders"))
    assert role_readmes.generate(copy) == []
    readme = (copy / "roles" / "gateway" / "README.md").read_text()
    assert "| `gateway_user_folders` | list of str | `[]` | Names of hub users whose folders" in readme
    assert readme != (ROOT / "roles" / "gateway" / "README.md").read_text()


def test_a_readme_without_a_table_gets_one_and_keeps_its_text(tmp_path):
    copy = _copy(tmp_path, [ROOT / "roles" / "tunnelbot"])
    readme = copy / "roles" / "tunnelbot" / "README.md"
    readme.write_text("# tunnelbot\n\nProse that stays.\n")
    assert role_readmes.generate(copy) == []
    text = readme.read_text()
    assert text.startswith("# tunnelbot\n\nProse that stays.\n\n## Variables\n\n<!-- BEGIN_ANSIBLE_DOCS -->\n")
    assert "| `tunnelbot_max_connections` | int | `100` |" in text


def test_a_bare_angle_bracket_is_refused(tmp_path):
    # Outside a code span a Markdown viewer would drop <root> as an HTML tag.
    copy = _copy(tmp_path, [ROOT / "roles" / "gateway"])
    spec = copy / "roles" / "gateway" / "meta" / "argument_specs.yml"
    spec.write_text(spec.read_text().replace("folders under C(<root>/users)", "folders under <root>/users"))
    assert [p.split(":")[0] for p in role_readmes.generate(copy)] == ["gateway/README.md"]
