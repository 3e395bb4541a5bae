"""`molecule test` from the repo root needs nothing from the Makefile
(README): molecule.yml's dependency step builds the test bed's images when
they are missing, and its provisioner env gives every step the collection
(the committed .collections link) and the test beds' state folder. Here
molecule runs from the root with none of the Makefile's environment (no
ANSIBLE_*, HPCGW_* variables) and its own scratch ephemeral folder (a
`make test` may be running the scenario beside it): the syntax check of the
converge playbook finds the collection's roles. The whole scenario, its
dependency step included, runs the same way in `make test` (Makefile:
molecule), so that run proves the rest."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
MOLECULE = pathlib.Path(sys.executable).parent / "molecule"


def molecule(step: str, ephemeral: pathlib.Path) -> tuple[int, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "HPCGW_", "MOLECULE_"))}
    env.update(MOLECULE_EPHEMERAL_DIRECTORY=str(ephemeral), NO_COLOR="1", ANSIBLE_NOCOLOR="1")
    done = subprocess.run([str(MOLECULE), step], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def test_the_scenario_gives_itself_what_it_needs():
    scenario = yaml.safe_load((REPO / "molecule/default/molecule.yml").read_text())
    env = scenario["provisioner"]["env"]
    assert env["ANSIBLE_COLLECTIONS_PATH"] == "${MOLECULE_PROJECT_DIRECTORY}/.collections"
    assert env["HPCGW_TESTBED_DIR"] == "${MOLECULE_PROJECT_DIRECTORY}/.testbed"
    assert (REPO / ".collections/ansible_collections/hpcgateway/jupyterhub").resolve() == REPO
    assert scenario["dependency"] == {"name": "shell",
                                      "command": "${MOLECULE_PROJECT_DIRECTORY}/tests/testbed/build-images.sh"}
    assert scenario["scenario"]["test_sequence"][0] == "dependency"


def test_molecule_runs_from_the_root_without_the_makefiles_environment(tmp_path):
    rc, out = molecule("syntax", tmp_path / "ephemeral")
    assert rc == 0, out
    assert f"playbook: {REPO}/site.yml" in out


def test_the_scenario_converges_in_account_mode_and_switches_to_root_mode():
    """The scenario's login node is in community-account mode (the variables
    of molecule/default/gateway_mode/account.yml); its side effect converges
    the root mode (root.yml, through dev-inventory) and verify runs again."""
    scenario = REPO / "molecule" / "default"
    active = yaml.safe_load((scenario / "inventory/host_vars/login.cluster.test/gateway_mode.yml").read_text())
    assert active == yaml.safe_load((scenario / "gateway_mode/account.yml").read_text())
    assert yaml.safe_load((scenario / "gateway_mode/root.yml").read_text())["gateway_mode"] == "root"
    config = yaml.safe_load((scenario / "molecule.yml").read_text())
    assert config["provisioner"]["playbooks"]["side_effect"] == "playbooks/root-mode.yml"
    sequence = config["scenario"]["test_sequence"]
    assert sequence[sequence.index("converge"):] == ["converge", "verify", "side_effect", "verify", "destroy"]
