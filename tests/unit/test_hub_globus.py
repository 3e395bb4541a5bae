"""hpcgw_hub.globus: the gateway's Globus login policy, against the stand-in."""

from __future__ import annotations

import asyncio
import base64
import pickle

import pytest
from test_globus_standin import (
    AUTH_RS,
    GROUPS_RS,
    GROUPS_SCOPE,
    TRANSFER_RS,
    TRANSFER_SCOPE,
    confidential,
    hub_login,
    make_authenticator,
    spawn_environment,
)
from tornado import web

from hpcgw_hub.globus import GatewayGlobusOAuthenticator


def gateway(standin, **overrides):
    return make_authenticator(standin, cls=GatewayGlobusOAuthenticator, **overrides)


@pytest.mark.parametrize(
    "username, expected",
    [
        ("alice@uchicago.edu", ("alice", True)),
        ("bob@uchicago.edu", ("bob", False)),
        ("carol@uchicago.edu", None),  # in no allowed group
        ("dave@globusid.org", 403),  # allowed group, other identity provider
        ("erin@uchicago.edu", ("erin", False)),
    ],
)
def test_login_policy_with_one_identity_provider(standin, username, expected):
    async def run():
        authenticator = gateway(standin)
        if expected == 403:
            with pytest.raises(web.HTTPError) as refused:
                await hub_login(standin, authenticator, username)
            assert refused.value.status_code == 403
            return None
        return await hub_login(standin, authenticator, username)

    model = asyncio.run(run())
    if expected in (None, 403):
        assert model is None
    else:
        assert (model["name"], model["admin"]) == expected


def test_usernames_never_merge_without_an_identity_provider(standin):
    async def run():
        authenticator = gateway(standin, identity_provider="")
        return [
            (await hub_login(standin, authenticator, name))["name"]
            for name in ("erin@uchicago.edu", "erin@globusid.org")
        ]

    assert asyncio.run(run()) == ["erin@uchicago.edu", "erin@globusid.org"]


def issued_and_revoked(standin, since, username):
    events = [e for e in standin.events(since) if e.get("username") == username]
    issued = [e for e in events if e["event"] == "token_issued"]
    revoked = [e for e in events if e["event"] == "token_revoked"]
    return issued, revoked


@pytest.mark.parametrize(
    "overrides, scopes",
    [
        ({}, ["openid", "profile", "email", GROUPS_SCOPE]),
        ({"allowed_globus_groups": set(), "admin_globus_groups": set(), "allowed_users": {"bob"}},
         ["openid", "profile", "email"]),
        ({"pass_tokens_to_notebooks": True}, ["openid", "profile", "email", GROUPS_SCOPE, TRANSFER_SCOPE]),
    ],
)
def test_login_asks_only_for_the_scopes_in_use(standin, overrides, scopes):
    """No transfer scope unless notebooks get the token; groups only with group rules."""
    authenticator = gateway(standin, **overrides)
    assert authenticator.scope == scopes
    since = standin.last_seq()
    assert asyncio.run(hub_login(standin, authenticator, "bob@uchicago.edu"))["name"] == "bob"
    issued, _ = issued_and_revoked(standin, since, "bob@uchicago.edu")
    # what Globus was asked for (the stand-in records each grant's scopes)
    assert [sorted(e["scopes"]) for e in issued] == [sorted(scopes)]


@pytest.mark.parametrize(
    "username, why",
    [("carol@uchicago.edu", "in no allowed group"), ("dave@globusid.org", "other identity provider: 403")],
)
def test_a_refused_logins_tokens_are_all_revoked(standin_sdk_env, username, why):
    standin = standin_sdk_env
    hub_id = standin.clients["hub"]["id"]
    since = standin.last_seq()

    async def run():
        try:
            return await hub_login(standin, gateway(standin), username)
        except web.HTTPError as error:
            return error.status_code

    assert asyncio.run(run()) in (None, 403), why
    issued, revoked = issued_and_revoked(standin, since, username)
    assert issued and set(issued[0]["resource_servers"]) == {AUTH_RS, GROUPS_RS}
    assert {(e["resource_server"], e["by_client"]) for e in revoked} == {(AUTH_RS, hub_id), (GROUPS_RS, hub_id)}, why


def test_the_hub_keeps_no_globus_token_by_default(standin_sdk_env):
    """An accepted login: the tokens served to read identity and groups, then
    every one is revoked, and the stored auth state holds none (admins with
    admin:auth_state would read it over the REST API)."""
    standin = standin_sdk_env
    since = standin.last_seq()
    model = asyncio.run(hub_login(standin, gateway(standin), "alice@uchicago.edu"))
    state = model["auth_state"]
    assert set(state) == {"client_id", "globus_user", "globus_groups", "tokens"}
    assert state["tokens"] == {}
    assert state["globus_user"]["preferred_username"] == "alice@uchicago.edu"
    assert standin.groups["gateway-admins"] in state["globus_groups"]
    assert "access_token" not in repr(state)
    issued, revoked = issued_and_revoked(standin, since, "alice@uchicago.edu")
    assert {e["resource_server"] for e in revoked} == set(issued[0]["resource_servers"]) == {AUTH_RS, GROUPS_RS}
    assert all(e["token_kind"] == "access" for e in revoked)


def test_pass_through_keeps_only_the_notebooks_tokens_and_logout_revokes_them(standin_sdk_env):
    standin = standin_sdk_env
    introspect = confidential(standin, "hub")
    authenticator = gateway(standin, pass_tokens_to_notebooks=True)
    since = standin.last_seq()

    async def login_then_logout():
        model = await hub_login(standin, authenticator, "alice@uchicago.edu")
        transfer = model["auth_state"]["tokens"][TRANSFER_RS]["access_token"]
        active_before = introspect.oauth2_token_introspect(transfer)["active"]
        # What GlobusLogoutHandler.clear_tokens does on logout.
        await authenticator.revoke_service_tokens(model["auth_state"]["tokens"])
        return model, transfer, active_before

    model, transfer, active_before = asyncio.run(login_then_logout())
    assert set(model["auth_state"]["tokens"]) == {TRANSFER_RS}
    assert "token_response" not in model["auth_state"]
    assert active_before is True
    assert introspect.oauth2_token_introspect(transfer)["active"] is False
    _, revoked = issued_and_revoked(standin, since, "alice@uchicago.edu")
    assert sorted(e["resource_server"] for e in revoked) == sorted([AUTH_RS, GROUPS_RS, TRANSFER_RS])


def test_refresh_keeps_the_logins_facts(standin):
    # Stock refresh re-reads userinfo with the auth token the hub no longer keeps.
    assert asyncio.run(gateway(standin, enable_auth_state=True).refresh_user(user=None)) is True


def gateway_spawn_environment(standin, **overrides):
    return spawn_environment(standin, cls=GatewayGlobusOAuthenticator, **overrides)


def test_notebooks_get_no_globus_tokens_by_default(standin):
    assert "GLOBUS_DATA" not in gateway_spawn_environment(standin)


def test_notebooks_get_only_the_tokens_asked_for(standin):
    environment = gateway_spawn_environment(standin, pass_tokens_to_notebooks=True)
    data = pickle.loads(base64.b64decode(environment["GLOBUS_DATA"]))
    assert set(data) == {"client_id", "tokens"}  # no token_response, no id_token
    assert set(data["tokens"]) == {TRANSFER_RS}


def test_logout_ends_every_session_of_the_user():
    """A copied hub cookie names the user's cookie_id: logout gives a new one,
    and deletes the OAuth tokens behind server cookies and the session tokens;
    the server's own API token (client jupyterhub, no session) stays."""
    from jupyterhub import orm

    from hpcgw_hub.globus import end_sessions

    db = orm.new_session_factory("sqlite:///:memory:")()
    alice, bob = orm.User(name="alice"), orm.User(name="bob")
    db.add_all([alice, bob, orm.OAuthClient(identifier="jupyterhub"),
                orm.OAuthClient(identifier="jupyterhub-user-alice")])
    db.commit()
    server_token = orm.APIToken.new(user=alice, note="server")
    orm.APIToken.new(user=alice, client_id="jupyterhub-user-alice", session_id="browser-1")
    orm.APIToken.new(user=alice, client_id="jupyterhub-user-alice", session_id="browser-2")
    orm.APIToken.new(user=alice, session_id="browser-2")
    bobs = orm.APIToken.new(user=bob, session_id="browser-3")
    old_cookie_id, bobs_cookie_id = alice.cookie_id, bob.cookie_id

    assert end_sessions(db, alice) == 3
    assert alice.cookie_id != old_cookie_id and len(alice.cookie_id) >= 32
    assert db.query(orm.User).filter_by(cookie_id=old_cookie_id).first() is None
    assert [t.note for t in alice.api_tokens] == ["server"]
    assert orm.APIToken.find(db, server_token) is not None
    assert orm.APIToken.find(db, bobs) is not None and bob.cookie_id == bobs_cookie_id


def test_logout_is_the_gateways():
    from hpcgw_hub.globus import GatewayLogoutHandler

    handlers = dict(GatewayGlobusOAuthenticator().get_handlers(None))
    assert handlers["/logout"] is GatewayLogoutHandler


# -- Globus groups become hub groups (manage_groups) ----------------------------
def test_globus_groups_become_hub_groups_named_by_uuid_or_by_the_sites_name(standin):
    """With manage_groups, a login carries the person's Globus groups as hub
    groups (JupyterHub makes and syncs them): named by UUID, or by
    hub_group_names; a person in no group gets none."""
    users, admins = standin.groups["gateway-users"], standin.groups["gateway-admins"]
    authenticator = gateway(standin, manage_groups=True, hub_group_names={admins: "gateway-admins"},
                            allowed_users={"carol"})
    alice = asyncio.run(hub_login(standin, authenticator, "alice@uchicago.edu"))
    bob = asyncio.run(hub_login(standin, authenticator, "bob@uchicago.edu"))
    carol = asyncio.run(hub_login(standin, authenticator, "carol@uchicago.edu"))
    assert alice["groups"] == sorted([users, "gateway-admins"])
    assert bob["groups"] == [users]
    assert carol["groups"] == []
    # Without manage_groups (the default) the login sets no hub groups.
    assert "groups" not in asyncio.run(hub_login(standin, gateway(standin), "bob@uchicago.edu"))
