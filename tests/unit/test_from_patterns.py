"""plugins/filter/from_patterns.py: sshd from= patterns (gateway_compute_from,
the tunnel keys' from=), checked and matched as OpenSSH does (auth-options.c,
match.c: addr_match_list and match_hostname with UseDNS no), and reachable
as hpcgateway.jupyterhub.from_* filters in a real ansible run."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("from_patterns", REPO / "plugins/filter/from_patterns.py")
from_patterns = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(from_patterns)
covers = from_patterns.from_covers
errors = from_patterns.from_pattern_errors
uncovered = from_patterns.from_uncovered


@pytest.mark.parametrize("address, patterns", [
    ("10.20.3.4", ["10.20.0.0/16"]),
    ("10.20.3.4", ["10.20.3.4"]),
    ("10.20.3.4", ["192.168.0.0/24", "10.20.3.0/24"]),
    ("10.20.3.4", ["10.20.*"]),
    ("10.20.3.4", ["10.20.3.?"]),
    ("10.20.3.4", ["*"]),
    ("10.20.3.4", ["10.0.0.0/8", "!10.30.0.0/16"]),
    ("fd00::17", ["fd00::/8"]),
    ("FD00::17", ["fd00::*"]),
    ("10.20.3.4", ["10.20.3.4/32"]),
    ("0.0.0.1", ["0.0.0.0/0"]),
])
def test_covered(address, patterns):
    assert covers(address, patterns)


@pytest.mark.parametrize("address, patterns", [
    ("10.21.3.4", ["10.20.0.0/16"]),
    ("10.20.3.40", ["10.20.3.4"]),  # an address is exact, not a prefix
    ("10.20.3.40", ["10.20.3.?"]),
    ("110.20.3.4", ["10.20.*"]),  # a wildcard covers the whole text
    ("10.20.3.4", ["10.0.0.0/8", "!10.20.0.0/16"]),  # a negation wins, whatever its place
    ("10.20.3.4", ["!10.20.0.0/16", "10.0.0.0/8"]),
    ("10.20.3.4", ["fd00::/8"]),  # another family
    ("fd00::17", ["0.0.0.0/0"]),
    ("10.20.3.4", ["node*.cluster.example"]),  # names need UseDNS yes: never assumed
    ("10.20.3.4", []),
    # sshd refuses a key with a bad network for every address: so does the check
    ("10.20.3.4", ["10.20.3.4", "10.0.0.0/33"]),
    ("10.20.3.4", ["10.20.3.4", "10.0.0.1/8"]),
])
def test_not_covered(address, patterns):
    assert not covers(address, patterns)


@pytest.mark.parametrize("patterns", [
    ["10.0.0.0/8"], ["10.20.3.4", "fd00::/8"], ["10.20.*", "!10.20.9.*"], ["node?.cluster.example"], ["*"],
    ["172.18.0.0/16", "192.168.77.0/24"],
])
def test_well_formed_lists(patterns):
    assert errors(patterns) == []


@pytest.mark.parametrize("patterns, why", [
    ([], "empty"),
    (["10.0.0.0/33"], "CIDR"),  # the length is out of range
    (["10.0.0.1/8"], "CIDR"),  # host bits set: sshd's "inconsistent mask length"
    (["fd00::1/8"], "CIDR"),
    (["10.0.0.0/x"], "CIDR"),
    (["10.0.*/8"], "wildcards"),
    (["10.0.0.300"], "IPv4"),
    (["10.0.0"], "IPv4"),
    (["10.0.0.0/8,0.0.0.0/0"], "commas"),  # one item smuggling a second pattern
    (['10.0.0.0/8" command="/bin/sh'], "quotes"),
    (["10.0.0.0 /8"], "blanks"),
    ([""], "non-empty"),
    (["!"], "bare"),
    ([7], "non-empty string"),
    (["!10.0.0.0/8"], "admits nobody"),
    ("10.0.0.0/8", "not a list"),
])
def test_malformed_lists(patterns, why):
    found = errors(patterns)
    assert found and why in " ".join(found)


def test_uncovered_lists_each_address_once_in_order():
    addresses = ["10.20.0.5", "192.168.1.9", "10.20.0.6", "192.168.1.9", "172.16.0.1"]
    assert uncovered(addresses, ["10.20.0.0/24"]) == ["192.168.1.9", "172.16.0.1"]
    assert uncovered(addresses, ["*"]) == []


def test_the_filters_work_by_their_collection_names(tmp_path):
    """What tasks/validate.yml calls, through ansible and the collection path."""
    expression = {
        "covers": "{{ '10.20.3.4' | hpcgateway.jupyterhub.from_covers(['10.20.0.0/16']) }}",
        "refused": "{{ '10.21.3.4' | hpcgateway.jupyterhub.from_covers(['10.20.0.0/16']) }}",
        "uncovered": "{{ ['10.20.3.4', '10.9.0.1'] | hpcgateway.jupyterhub.from_uncovered(['10.20.0.0/16']) }}",
        "errors": "{{ ['10.0.0.0/33'] | hpcgateway.jupyterhub.from_pattern_errors }}",
    }
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    done = subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "ansible"), "localhost", "-c", "local",
         "-e", "ansible_python_interpreter=" + sys.executable, "-m", "ansible.builtin.debug",
         "-a", json.dumps({"msg": expression})],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    assert result["covers"] is True and result["refused"] is False
    assert result["uncovered"] == ["10.9.0.1"]
    assert len(result["errors"]) == 1 and "10.0.0.0/33" in result["errors"][0]


def test_uncovered_nodes_names_each_node_with_its_missed_addresses():
    nodes = [{"name": "compute1", "addresses": ["172.18.0.3"]},
             {"name": "compute2", "addresses": ["10.77.0.4", "fd00::4"]},
             {"name": "compute3", "addresses": ["10.77.0.5"]}]
    assert from_patterns.from_uncovered_nodes(nodes, ["172.18.0.0/16", "10.77.0.5"]) == [
        "compute2 (10.77.0.4 fd00::4)"]
    assert from_patterns.from_uncovered_nodes(nodes, ["172.18.0.0/16", "10.77.0.0/24", "fd00::/8"]) == []
