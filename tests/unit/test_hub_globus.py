"""hpcgw_hub.globus: the gateway's Globus login policy, against the stand-in."""

from __future__ import annotations

import asyncio
import base64
import pickle

import pytest
from test_globus_standin import (
    AUTH_RS,
    GROUPS_RS,
    TRANSFER_RS,
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


def test_logout_revokes_every_token(standin_sdk_env):
    standin = standin_sdk_env
    introspect = confidential(standin, "hub")

    async def run():
        authenticator = gateway(standin)
        model = await hub_login(standin, authenticator, "alice@uchicago.edu")
        # What GlobusLogoutHandler.clear_tokens does on logout.
        await authenticator.revoke_service_tokens(model["auth_state"]["tokens"])
        return model

    model = asyncio.run(run())
    tokens = model["auth_state"]["tokens"]
    assert set(tokens) == {AUTH_RS, GROUPS_RS, TRANSFER_RS}
    for token in tokens.values():
        assert introspect.oauth2_token_introspect(token["access_token"])["active"] is False


def gateway_spawn_environment(standin, **overrides):
    return spawn_environment(standin, cls=GatewayGlobusOAuthenticator, **overrides)


def test_notebooks_get_no_globus_tokens_by_default(standin):
    assert "GLOBUS_DATA" not in gateway_spawn_environment(standin)


def test_notebooks_get_only_the_tokens_asked_for(standin):
    environment = gateway_spawn_environment(standin, pass_tokens_to_notebooks=True)
    data = pickle.loads(base64.b64decode(environment["GLOBUS_DATA"]))
    assert set(data) == {"client_id", "tokens"}  # no token_response, no id_token
    assert set(data["tokens"]) == {TRANSFER_RS}
