"""Profiles by group on the real bed (issue 12).

The test site's profile `members` (host_vars/hub.gateway.test/spawner.yml)
is for the hub group "members" only: the Globus group gateway-members of the
stand-in, which the hub makes a hub group at login (globus_auth_manage_groups,
named by globus_auth_hub_groups). ivan is in it, olivia is not. The profile
asks for the node feature hpcgw-members (sbatch --constraint, built by the
gate from the cluster's gateway.json), which this module gives compute1.
"""

from __future__ import annotations

import re

import pytest
from conftest import slurm_jobs

from hpcgw_hub.spawner import user_id

# Spawns a notebook: with the other spawn tests, on the hub's worker (no hub
# restart meanwhile).
pytestmark = pytest.mark.xdist_group("hub")

FEATURE = "hpcgw-members"


def live_jobs_of(cluster_host, username: str) -> list[str]:
    name = f"hpcgw-hub-{user_id(username)}"
    return [job for job, (job_name, _, state) in slurm_jobs(cluster_host).items()
            if job_name == name and state in ("RUNNING", "PENDING", "CONFIGURING")]


def profiles_on_the_form(user) -> list[str]:
    form = user.browser.get(f"{user.hub}/hub/spawn", timeout=30)
    assert form.status_code == 200, form.text
    select = re.search(r'<select [^>]*name="profile">(.*?)</select>', form.text, re.S)
    assert select, form.text[-2000:]
    return re.findall(r'<option value="([^"]*)"', select.group(1))


@pytest.fixture(scope="module")
def members_feature(cluster_host):
    """compute1 offers the node feature the profile asks for (the site's
    slurm.conf would say Features=; the fixture's node has none)."""
    cluster_host.check_output(f"scontrol update NodeName=compute1 AvailableFeatures={FEATURE} ActiveFeatures={FEATURE}")
    shown = cluster_host.check_output("scontrol show node compute1")
    assert f"AvailableFeatures={FEATURE}" in shown, shown
    return FEATURE


def test_a_group_profile_is_invisible_and_refused_to_others(hub_user, cluster_host):
    olivia = hub_user("olivia@uchicago.edu")
    # Every profile but members (the queue ones are test_queue.py's, open to all).
    assert profiles_on_the_form(olivia) == ["compute", "short", "private", "queue-short", "queue-long"]
    reply = olivia.api("POST", "/users/olivia/server", json={"profile": "members"})
    assert reply.status_code == 400, reply.text
    assert "profile 'members' is not open to you" in reply.json()["message"]
    assert live_jobs_of(cluster_host, "olivia") == []
    assert olivia.server() is None


def test_a_member_gets_the_profile_and_its_slurm_settings(hub_user, cluster_host, members_feature):
    ivan = hub_user("ivan@uchicago.edu")
    # Hub group "members" came from the Globus group at login.
    assert "members" in ivan.api("GET", "/users/ivan").json()["groups"]
    assert profiles_on_the_form(ivan) == ["compute", "short", "private", "members", "queue-short", "queue-long"]
    reply = ivan.start(options={"profile": "members"})
    assert reply.status_code in (201, 202), reply.text
    try:
        [job] = live_jobs_of(cluster_host, "ivan")
        shown = cluster_host.check_output(f"scontrol show job {job}")
        assert re.search(rf"\bFeatures={FEATURE}\b", shown), shown
        assert re.search(r"\bPartition=compute\b", shown) and re.search(r"\bNodeList=compute1\b", shown), shown
    finally:
        ivan.stop()
