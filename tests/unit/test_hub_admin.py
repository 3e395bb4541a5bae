"""The hub's admin helpers: the site's jupyterhub_config applied over the
roles' fragments (hpcgw_hub.siteconfig, through the real
jupyterhub_config.py template), and a Slurm job name mapped back to its hub
user (hpcgw_hub.whois, against a hub database made by JupyterHub's ORM)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import jinja2
import pytest
import sqlalchemy
import sqlalchemy.orm
import yaml
from ansible.plugins.filter.core import FilterModule as AnsibleCoreFilters
from jupyterhub import orm
from traitlets.config.loader import PyFileConfigLoader

from hpcgw_hub import whois
from hpcgw_hub.spawner import GatewaySpawner, user_id

REPO = pathlib.Path(__file__).resolve().parents[2]


def render_hub_config(folder: pathlib.Path, site_config: dict) -> None:
    """jupyterhub_config.py from the role's template (the role's defaults,
    with the site's jupyterhub_config), and the spawner role's fragment as
    far as start_timeout goes: GatewaySpawner.start_timeout = 300."""
    defaults = yaml.safe_load((REPO / "roles/jupyterhub/defaults/main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(AnsibleCoreFilters().filters())  # to_json, bool, ... as the role's run has them
    template = env.from_string((REPO / "roles/jupyterhub/templates/jupyterhub_config.py.j2").read_text())
    values = {**defaults, "ansible_managed": "test", "jupyterhub_public_url": "https://hub.test/",
              "jupyterhub_config_dir": str(folder), "jupyterhub_config": site_config}
    (folder / "conf.d").mkdir()
    (folder / "jupyterhub_config.py").write_text(template.render(values))
    spawner_fragment = (REPO / "roles/spawner/templates/spawner.py.j2").read_text()
    assert "s = c.GatewaySpawner" in spawner_fragment and "s.start_timeout = {{ spawner_start_timeout" in spawner_fragment
    (folder / "conf.d/30-spawner.py").write_text(
        "c = get_config()  # noqa: F821\n"
        "c.JupyterHub.spawner_class = 'hpcgw_hub.spawner.GatewaySpawner'\n"
        "s = c.GatewaySpawner\ns.start_timeout = 300\n")


@pytest.mark.parametrize("section", ["Spawner", "GatewaySpawner"])
def test_the_sites_hub_config_wins_over_the_roles_fragments(tmp_path, section):
    render_hub_config(tmp_path, {section: {"start_timeout": 420}, "JupyterHub": {"redirect_to_server": True}})
    config = PyFileConfigLoader("jupyterhub_config.py", path=str(tmp_path)).load_config()
    assert GatewaySpawner(config=config).start_timeout == 420
    assert config.JupyterHub.redirect_to_server is True


def test_without_site_config_the_roles_fragment_holds(tmp_path):
    render_hub_config(tmp_path, {})
    config = PyFileConfigLoader("jupyterhub_config.py", path=str(tmp_path)).load_config()
    assert GatewaySpawner(config=config).start_timeout == 300


def test_the_raw_site_config_comes_after_the_data(tmp_path):
    render_hub_config(tmp_path, {"Spawner": {"start_timeout": 420}})
    (tmp_path / "conf.d/99-site.py").write_text("c = get_config()  # noqa: F821\nc.GatewaySpawner.start_timeout = 500\n")
    config = PyFileConfigLoader("jupyterhub_config.py", path=str(tmp_path)).load_config()
    assert GatewaySpawner(config=config).start_timeout == 500


@pytest.fixture(scope="module")
def hub_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("hub") / "jupyterhub.sqlite"
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    orm.Base.metadata.create_all(engine)  # JupyterHub's own schema
    with sqlalchemy.orm.Session(engine) as session:
        session.add_all(orm.User(name=name) for name in ("alice", "bob", "erin"))
        session.commit()
    engine.dispose()
    return str(path)


def test_a_job_name_maps_back_to_its_hub_user(hub_db):
    job = f"hpcgw-hub-{user_id('bob')}"
    assert whois.whois(job, hub_db) == ["bob"]
    assert whois.whois(f"/srv/gw/logs/{user_id('erin')}.1234.log", hub_db) == ["erin"]
    assert whois.whois(f"hpcgw-hub-{user_id('mallory')}", hub_db) == []
    with pytest.raises(ValueError):
        whois.whois("hpcgw-hub-u-123", hub_db)


def test_whois_computes_the_spawners_user_id():
    for name in ("alice", "Bob@example.org", "ünï"):
        assert whois.user_id(name) == user_id(name)


def test_the_whois_command(hub_db, capsys):
    assert whois.main([f"hpcgw-hub-{user_id('alice')}", hub_db]) == 0
    assert capsys.readouterr().out == "alice\n"
    assert whois.main([f"hpcgw-hub-{user_id('nobody')}", hub_db]) == 1
    assert whois.main(["hpcgw-hub-u-12", hub_db]) == 2
    # ...and it runs as a module with nothing but the standard library.
    run = subprocess.run([sys.executable, "-S", "-m", "hpcgw_hub.whois", f"x-{user_id('erin')}", hub_db],
                         capture_output=True, text=True, cwd=REPO / "python")
    assert (run.returncode, run.stdout) == (0, "erin\n")
