"""Globus login at the hub, end to end: a browser-like client goes through
nginx (https), JupyterHub, and the Globus Auth stand-in."""

from __future__ import annotations

import json

import pytest
import requests
from hubclient import HubUser, browser_session, globus_login, last_event_seq, standin_events

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


def test_a_login_leaves_no_live_globus_token(login, browser, testbed):
    """The hub reads who the person is and their groups, then revokes every
    token it got (notebooks get none by default); nothing is left to revoke
    at logout, and nothing for an admin to read."""
    since = last_event_seq(testbed)
    login("alice@uchicago.edu")
    # Other workers log other people in meanwhile: look at alice's events.
    events = [e for e in standin_events(testbed, since) if e.get("username") == "alice@uchicago.edu"]
    issued = [e for e in events if e["event"] == "token_issued"]
    revoked = [e for e in events if e["event"] == "token_revoked"]
    assert len(issued) == 1
    assert {e["resource_server"] for e in revoked} == set(issued[0]["resource_servers"])
    assert all(e["reason"] == "revoked by client" for e in revoked)

    after_login = last_event_seq(testbed)
    logout = browser.get(f"https://{testbed.hub_name}/hub/logout", timeout=20)
    assert logout.status_code == 200
    assert browser.get(f"https://{testbed.hub_name}/hub/api/user", timeout=20).status_code == 403
    assert not [e for e in standin_events(testbed, after_login)
                if e["event"] == "token_issued" and e.get("username") == "alice@uchicago.edu"]


def test_login_asks_globus_only_for_identity_and_groups(login, testbed):
    """No transfer.api.globus.org scope: notebooks get no Globus token here."""
    since = last_event_seq(testbed)
    login("bob@uchicago.edu")
    issued = [e for e in standin_events(testbed, since)
              if e["event"] == "token_issued" and e.get("username") == "bob@uchicago.edu"]
    assert len(issued) == 1
    assert sorted(issued[0].get("scopes", ["(not recorded)"])) == sorted(
        ["openid", "profile", "email", "urn:globus:auth:scope:groups.api.globus.org:view_my_groups_and_memberships"])
    assert set(issued[0]["resource_servers"]) == {"auth.globus.org", "groups.api.globus.org"}


@pytest.mark.parametrize("identity", ["carol@uchicago.edu", "dave@globusid.org"])
def test_a_refused_logins_tokens_are_revoked(login, testbed, identity):
    since = last_event_seq(testbed)
    assert login(identity).status_code == 403
    events = [e for e in standin_events(testbed, since) if e.get("username") == identity]
    issued = [e for e in events if e["event"] == "token_issued"]
    revoked = {e["resource_server"] for e in events if e["event"] == "token_revoked"}
    assert len(issued) == 1 and revoked == set(issued[0]["resource_servers"])


def test_an_admin_reads_no_globus_token_of_anyone(login, browser, testbed, public_ca_bundle):
    """JupyterHub's admin role has admin:auth_state (JupyterHub 5.5 refuses to
    redefine it): an admin's GET /hub/api/users/<name> returned the person's
    live Globus tokens. The hub now keeps none (pass-through off), so an
    admin, their page, their tokens, read only identity and group ids."""
    with browser_session(public_ca_bundle) as other:
        assert globus_login(other, testbed, "bob@uchicago.edu").status_code == 200
    login("alice@uchicago.edu")
    alice = HubUser(browser, testbed, "alice")
    assert browser.get(f"{testbed.hub_url}/hub/admin", timeout=20).status_code == 200
    own = alice.api("POST", "/users/alice/tokens", json={"expires_in": 600})
    assert own.status_code == 201
    with_token = requests.Session()
    with_token.trust_env = False
    with_token.verify = str(public_ca_bundle)
    for reply in (alice.api("GET", "/users/bob"),
                  with_token.get(f"{testbed.hub_url}/hub/api/users/bob",
                                 headers={"Authorization": f"token {own.json()['token']}"}, timeout=20)):
        assert reply.status_code == 200, reply.text
        state = reply.json().get("auth_state")
        assert state is not None, "the admin reads auth_state (JupyterHub's admin role)"
        assert set(state) <= {"client_id", "globus_user", "globus_groups", "tokens"}
        assert state["tokens"] == {}
        assert "token" not in json.dumps(state["globus_user"]).lower()
        assert state["globus_user"]["preferred_username"] == "bob@uchicago.edu"


def test_every_hub_cookie_is_secure(login, browser, testbed):
    """_xsrf included: JupyterHub sets it from xsrf_cookie_kwargs only."""
    login("bob@uchicago.edu")
    assert browser.get(f"{testbed.hub_url}/hub/home", timeout=20).status_code == 200
    names = {cookie.name: cookie.secure for cookie in browser.cookies}
    assert "_xsrf" in names and "jupyterhub-hub-login" in names
    assert all(names.values()), names


def copy_of(browser, public_ca_bundle):
    thief = requests.Session()
    thief.trust_env = False
    thief.verify = str(public_ca_bundle)
    for cookie in browser.cookies:
        thief.cookies.set_cookie(cookie)
    return thief


def test_logout_ends_a_copied_session_and_every_other(browser, testbed, public_ca_bundle):
    """JupyterHub keeps the user's cookie id across logouts: a hub cookie
    copied before logout stayed valid. Logout here ends every session of the
    person: the copy, and another browser's own login, are logged out.
    (judy: no other test may log in as her while this one runs.)"""
    assert globus_login(browser, testbed, "judy@uchicago.edu").status_code == 200
    thief = copy_of(browser, public_ca_bundle)
    with browser_session(public_ca_bundle) as laptop:
        assert globus_login(laptop, testbed, "judy@uchicago.edu").status_code == 200
        for session in (thief, laptop):
            assert session.get(f"{testbed.hub_url}/hub/api/user", timeout=20).json()["name"] == "judy"

        assert browser.get(f"{testbed.hub_url}/hub/logout", timeout=20).status_code == 200
        for session in (thief, laptop):
            home = session.get(f"{testbed.hub_url}/hub/home", allow_redirects=False, timeout=20)
            assert home.status_code == 302 and "/hub/login" in home.headers["Location"]
            assert session.get(f"{testbed.hub_url}/hub/api/user", timeout=20).status_code == 403
