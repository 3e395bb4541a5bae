"""A site's settings, read the way a run reads them: `ansible-playbook
site.yml -i inventories/example` (README, "Using it for a site") in a site
laid out as the repo is, whose settings are in the top-level host_vars/ and
in the inventory's own host_vars/. The preflight's first play (on the
controller, before any host is reached) refuses a misspelt setting, a
setting given two different values in the two places, and a hand-set
nginx_upstream_url that no longer matches jupyterhub_proxy_port: each
message names a value that only one of the two places sets, so it proves
the run read that place. The hosts are 127.0.0.1 port 1: were the preflight
to let a bad site through, the run would stop at the first connection."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = pathlib.Path(sys.executable).parent / "ansible-playbook"
HUB, LOGIN = "jupyter.example.edu", "login1.cluster.example.edu"


def make_site(root: pathlib.Path) -> pathlib.Path:
    """The repo's layout for a site: site.yml (a link, as in the repo), the
    example's top-level host_vars/, and inventories/example/ with hosts that
    refuse connections."""
    site = root / "site"
    (site / "inventories/example").mkdir(parents=True)
    (site / "site.yml").symlink_to(REPO / "site.yml")
    shutil.copytree(REPO / "host_vars", site / "host_vars")
    hosts = yaml.safe_load((REPO / "inventories/example/hosts.yml").read_text())
    hosts["all"]["vars"] = {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_connection": "ssh"}
    (site / "inventories/example/hosts.yml").write_text(yaml.safe_dump(hosts))
    return site


def add(path: pathlib.Path, settings: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = yaml.safe_load(path.read_text()) if path.exists() else {}
    path.write_text(yaml.safe_dump({**(old or {}), **settings}))


def run_site(site: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "site.yml", "-i", "inventories/example"],
                          cwd=site, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bad_site(tmp_path_factory):
    """One run of a site with three mistakes (one run keeps the lane fast)."""
    site = make_site(tmp_path_factory.mktemp("bad"))
    # Only the top-level host_vars/ has these two.
    add(site / f"host_vars/{HUB}/jupyterhub.yml", {"jupyterhub_idle_culler_timout": 60, "jupyterhub_proxy_port": 8100})
    # Only the inventory's own host_vars/ has these; nginx_tls_mode is also in
    # the top-level host_vars/ (letsencrypt).
    add(site / f"inventories/example/host_vars/{HUB}.yml",
        {"nginx_tls_mode": "provided", "nginx_upstream_url": "http://127.0.0.1:8000"})
    add(site / "inventories/example/group_vars/cluster.yml",
        {"gateway_rooot": "/srv/gateway", "_common_jupyterhub_hub_prot": 8082})
    run = run_site(site)
    return run.returncode, run.stdout + run.stderr


def test_the_site_playbook_is_one_file_of_plays():
    """Plays imported from playbooks/ would not see the top-level host_vars/."""
    assert (REPO / "site.yml").resolve() == REPO / "playbooks/site.yml"
    plays = yaml.safe_load((REPO / "playbooks/site.yml").read_text())
    assert plays and all("hosts" in play for play in plays)


def test_a_misspelt_setting_in_the_top_level_host_vars_is_refused_with_the_closest_name(bad_site):
    rc, out = bad_site
    assert rc != 0
    assert (f"jupyterhub_idle_culler_timout (set in host_vars/{HUB}/jupyterhub.yml, for {HUB}) is declared "
            "by no role of hpcgateway.jupyterhub, so it would be ignored. Did you mean "
            "jupyterhub_idle_culler_timeout?") in out


def test_a_misspelt_setting_in_the_inventorys_group_vars_is_refused(bad_site):
    _, out = bad_site
    assert (f"gateway_rooot (set in inventories/example/group_vars/cluster.yml, for {LOGIN}) is declared by no "
            "role") in out
    assert "Did you mean gateway_root?" in out


def test_a_misspelt_shared_value_is_refused_like_a_roles_setting(bad_site):
    """_common_ is a declared prefix too (roles/_common, the values the roles share)."""
    _, out = bad_site
    assert (f"_common_jupyterhub_hub_prot (set in inventories/example/group_vars/cluster.yml, for {LOGIN}) is "
            "declared by no role") in out
    assert "Did you mean _common_jupyterhub_hub_port?" in out


def test_a_setting_with_two_values_in_the_two_places_is_refused(bad_site):
    _, out = bad_site
    assert (f"nginx_tls_mode is set to two different values for host_vars {HUB}: in "
            f"host_vars/{HUB}/nginx.yml (beside the playbook, which Ansible would use) and in "
            f"inventories/example/host_vars/{HUB}.yml (the inventory's)") in out


def test_a_hand_set_upstream_on_another_port_than_the_proxys_is_refused(bad_site):
    _, out = bad_site
    assert (f"{HUB}: nginx_upstream_url (http://127.0.0.1:8000) is port 8000, but the proxy listens on "
            "jupyterhub_proxy_port 8100") in out


def test_the_bad_site_stops_before_any_host_is_reached(bad_site):
    _, out = bad_site
    assert "The site's settings are wrong" in out
    assert "PLAY [Check the hosts' operating systems]" not in out
    assert HUB + " " not in out.split("PLAY RECAP", 1)[-1]


def test_the_example_site_passes_the_check_and_goes_on_to_its_hosts(tmp_path):
    """The control: the example's settings (with the internal __ names and
    the roles' run-time facts absent) pass; the run stops at the hosts."""
    site = make_site(tmp_path)
    run = run_site(site)
    out = run.stdout + run.stderr
    assert "The site's settings are wrong" not in out
    assert "TASK [Check the site's settings as a whole]" in out
    assert "PLAY [Check the hosts' operating systems]" in out
    assert run.returncode != 0  # port 1 refuses the connection
