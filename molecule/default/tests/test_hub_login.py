"""Globus login at the hub, end to end: a browser-like client goes through
nginx (https), JupyterHub, and the Globus Auth stand-in."""

from __future__ import annotations

import pytest
from hubclient import last_event_seq, standin_events

# Needs the hub up and its SSH to the cluster: with the tests that restart or cut them (conftest.py).
pytestmark = pytest.mark.xdist_group("hub")


def api_user(browser, testbed):
    reply = browser.get(f"https://{testbed.hub_name}/hub/api/user", timeout=20)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_admin_group_member_lands_home_as_admin(login, browser, testbed):
    page = login("alice@uchicago.edu")
    assert page.status_code == 200
    assert page.url == f"https://{testbed.hub_name}/hub/home"
    user = api_user(browser, testbed)
    assert (user["name"], user["admin"]) == ("alice", True)


def test_plain_member_is_not_admin(login, browser, testbed):
    assert login("bob@uchicago.edu").url == f"https://{testbed.hub_name}/hub/home"
    user = api_user(browser, testbed)
    assert (user["name"], user["admin"]) == ("bob", False)
    assert browser.get(f"https://{testbed.hub_name}/hub/admin", timeout=20).status_code == 403


@pytest.mark.parametrize(
    "identity, why",
    [
        ("carol@uchicago.edu", "in no allowed Globus group"),
        ("dave@globusid.org", "from another identity provider"),
        ("erin@globusid.org", "same name before @ as erin@uchicago.edu, other provider"),
    ],
)
def test_refused_identities_get_403(login, browser, testbed, identity, why):
    page = login(identity)
    assert page.status_code == 403, why
    assert browser.get(f"https://{testbed.hub_name}/hub/api/user", timeout=20).status_code == 403


def test_username_is_the_part_before_at_and_host_vars_admins_stay_admins(login, browser, testbed):
    login("erin@uchicago.edu")
    user = api_user(browser, testbed)
    # erin is an admin by jupyterhub_admin_users, though not in the admins' Globus group.
    assert (user["name"], user["admin"]) == ("erin", True)


def test_logout_revokes_the_users_tokens_at_globus(login, browser, testbed):
    since = last_event_seq(testbed)
    login("alice@uchicago.edu")
    # Other workers log other people in meanwhile: look at alice's events.
    issued = [e for e in standin_events(testbed, since)
              if e["event"] == "token_issued" and e["username"] == "alice@uchicago.edu"]
    assert issued
    after_login = last_event_seq(testbed)

    logout = browser.get(f"https://{testbed.hub_name}/hub/logout", timeout=20)
    assert logout.status_code == 200
    revoked = [e for e in standin_events(testbed, after_login) if e["event"] == "token_revoked"]
    assert {e["resource_server"] for e in revoked} >= {
        "auth.globus.org", "groups.api.globus.org", "transfer.api.globus.org"
    }
    assert all(e["username"] == "alice@uchicago.edu" for e in revoked)
    assert browser.get(f"https://{testbed.hub_name}/hub/api/user", timeout=20).status_code == 403
