"""Each role's meta/main.yml claims only the platforms a test runs it on:
the test bed's images (tests/testbed/build-images.sh) are Debian bookworm
for the hub and Debian trixie for the cluster, and site.yml runs the hub
roles on group hub and the cluster roles on group cluster."""

import pathlib
import re

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
GROUP_OF_ROLE = {"jupyterhub": "hub", "globus_auth": "hub", "nginx": "hub", "spawner": "hub", "tunnelbot": "hub",
                 "gateway": "cluster", "apptainer_images": "cluster"}
# _common (values only) comes with every role: on the hub and on the cluster.
BOTH_GROUPS = {"_common"}


def suites_of_the_testbed() -> dict[str, str]:
    script = (REPO / "tests/testbed/build-images.sh").read_text()
    declared = re.search(r"declare -A suite_of=\((.*?)\)", script).group(1)
    return dict(re.findall(r"\[(\w+)\]=(\w+)", declared))


@pytest.mark.parametrize("role", sorted(GROUP_OF_ROLE))
def test_a_role_claims_only_the_platform_its_test_bed_host_runs(role):
    meta = yaml.safe_load((REPO / "roles" / role / "meta/main.yml").read_text())
    platforms = meta["galaxy_info"]["platforms"]
    assert platforms == [{"name": "Debian", "versions": [suites_of_the_testbed()[GROUP_OF_ROLE[role]]]}]


def test_the_common_role_claims_both_hosts_platforms():
    meta = yaml.safe_load((REPO / "roles/_common/meta/main.yml").read_text())
    suites = suites_of_the_testbed()
    assert meta["galaxy_info"]["platforms"] == [{"name": "Debian", "versions": sorted({suites["hub"], suites["cluster"]})}]


def test_the_roles_are_all_placed():
    assert set(GROUP_OF_ROLE) | BOTH_GROUPS == {p.name for p in (REPO / "roles").iterdir() if p.is_dir()}
