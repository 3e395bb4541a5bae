"""The Globus Auth stand-in, driven by the unmodified clients the hub uses:
globus-sdk 4.9 and oauthenticator 17.4's GlobusOAuthenticator."""

from __future__ import annotations

import asyncio
import base64
import pickle
from unittest.mock import Mock
from urllib.parse import parse_qs, urlsplit

import globus_sdk
import jwt
import pytest
from oauthenticator.globus import GlobusOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler, _serialize_state
from tornado import web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine, url_concat
from traitlets.config import Config

AUTH_RS = "auth.globus.org"
GROUPS_RS = "groups.api.globus.org"
TRANSFER_RS = "transfer.api.globus.org"
GROUPS_SCOPE = "urn:globus:auth:scope:groups.api.globus.org:view_my_groups_and_memberships"
TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"
# the stand-in fixture registers these redirect URIs (tests/unit/conftest.py)
HUB_CALLBACK = "https://hub.example.test/hub/oauth_callback"
NATIVE_CALLBACK = "https://127.0.0.1/native-callback"
USER_SCOPES = ["openid", "profile", "email", GROUPS_SCOPE, TRANSFER_SCOPE]


def confidential(standin, which="sdk"):
    c = standin.clients[which]
    return globus_sdk.ConfidentialAppAuthClient(c["id"], c["secret"])


def sdk_login(standin, ac, username, *, refresh=True, scopes=USER_SCOPES):
    ac.oauth2_start_flow("https://app.example.test/callback", scopes,
                         state="st-" + username, refresh_tokens=refresh)
    query, _ = standin.login(ac.oauth2_get_authorize_url(), username)
    assert query["state"] == "st-" + username
    return query["code"]


def groups_client(token):
    return globus_sdk.GroupsClient(authorizer=globus_sdk.AccessTokenAuthorizer(token))


def auth_client(token):
    return globus_sdk.AuthClient(authorizer=globus_sdk.AccessTokenAuthorizer(token))


# --------------------------------------------------------------------------
# discovery


def test_discovery_and_jwk(standin_sdk_env):
    standin = standin_sdk_env
    assert (standin.hub_callback, standin.native_callback) == (HUB_CALLBACK, NATIVE_CALLBACK)
    ac = confidential(standin)
    oidc = ac.get_openid_configuration()
    assert oidc["issuer"] == standin.base_url
    assert oidc["token_endpoint"] == standin.url("/v2/oauth2/token")
    assert oidc["id_token_signing_alg_values_supported"] == ["RS512"]
    jwk = ac.get_jwk(oidc)
    assert jwk["keys"][0]["kty"] == "RSA" and jwk["keys"][0]["kid"]
    assert ac.get_jwk(oidc, as_pem=True).key_size >= 2048


# --------------------------------------------------------------------------
# 1. client credentials, introspect, revoke


def test_client_credentials_introspect_revoke(standin_sdk_env):
    standin = standin_sdk_env
    ac = confidential(standin)
    tokens = ac.oauth2_client_credentials_tokens([TRANSFER_SCOPE, GROUPS_SCOPE])
    assert set(tokens.by_resource_server) == {TRANSFER_RS, GROUPS_RS}
    assert tokens["other_tokens"] and "refresh_token" not in tokens.data
    token = tokens.by_resource_server[TRANSFER_RS]["access_token"]

    bad = globus_sdk.ConfidentialAppAuthClient(standin.clients["sdk"]["id"], "wrong-secret")
    with pytest.raises(globus_sdk.AuthAPIError) as err:
        bad.oauth2_client_credentials_tokens(TRANSFER_SCOPE)
    assert err.value.http_status == 401
    assert err.value.raw_json["error"] == "invalid_client"

    info = ac.oauth2_token_introspect(token, include="identity_set")
    assert info["active"] is True
    assert info["client_id"] == standin.clients["sdk"]["id"]
    assert info["sub"] == standin.clients["sdk"]["id"]
    assert info["username"].endswith("@clients.auth.globus.org")
    assert info["scope"] == TRANSFER_SCOPE
    assert info["iss"] == standin.base_url and TRANSFER_RS in info["aud"]
    assert info["identity_set"] == [info["sub"]]
    assert info["exp"] > info["iat"]

    # another client does not get to see it
    assert confidential(standin, "hub").oauth2_token_introspect(token)["active"] is False

    since = standin.last_seq()
    assert ac.oauth2_revoke_token(token)["active"] is False
    assert ac.oauth2_token_introspect(token)["active"] is False
    revoked = [e for e in standin.events(since) if e["event"] == "token_revoked"]
    assert [(e["resource_server"], e["token_kind"]) for e in revoked] == [(TRANSFER_RS, "access")]
    # the other token of the same response is untouched
    other = tokens.by_resource_server[GROUPS_RS]["access_token"]
    assert ac.oauth2_token_introspect(other)["active"] is True
    # revoking garbage is not an error (RFC 7009)
    assert ac.oauth2_revoke_token("no-such-token")["active"] is False


def test_client_auth_in_body_and_bad_grants(standin):
    sdk = standin.clients["sdk"]
    with standin.session() as s:
        url = standin.url("/v2/oauth2/token")
        r = s.post(url, data={"grant_type": "client_credentials", "scope": "openid profile",
                              "client_id": sdk["id"], "client_secret": sdk["secret"]})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["resource_server"] == AUTH_RS and doc["other_tokens"] == []
        assert "id_token" in doc
        r = s.post(url, data={"grant_type": "client_credentials", "scope": "openid",
                              "client_id": sdk["id"], "client_secret": "nope"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        r = s.post(url, data={"grant_type": "password", "client_id": sdk["id"],
                              "client_secret": sdk["secret"]})
        assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
        r = s.post(url, data={"grant_type": "client_credentials", "scope": "bogus:scope"},
                   auth=(sdk["id"], sdk["secret"]))
        assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
        # a public client has no secret to prove, so no client_credentials
        r = s.post(url, data={"grant_type": "client_credentials", "scope": "openid",
                              "client_id": standin.clients["native"]["id"]})
        assert r.status_code == 401


# --------------------------------------------------------------------------
# 2. authorization code flows


def test_authorization_code_flow_confidential(standin_sdk_env):
    standin = standin_sdk_env
    ac = confidential(standin)
    code = sdk_login(standin, ac, "alice@uchicago.edu")
    tokens = ac.oauth2_exchange_code_for_tokens(code)
    assert set(tokens.by_resource_server) == {AUTH_RS, GROUPS_RS, TRANSFER_RS}
    assert tokens["resource_server"] == AUTH_RS
    assert tokens.by_scopes[GROUPS_SCOPE]["resource_server"] == GROUPS_RS

    claims = tokens.decode_id_token()  # signature checked with /jwk.json
    alice = standin.users["alice@uchicago.edu"]
    assert claims["iss"] == standin.base_url
    assert claims["aud"] == standin.clients["sdk"]["id"]
    assert claims["sub"] == alice["sub"]
    assert claims["preferred_username"] == "alice@uchicago.edu"
    assert claims["email"] == "alice@uchicago.edu"
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "RS512"

    auth_tok = tokens.by_resource_server[AUTH_RS]
    info = auth_client(auth_tok["access_token"]).userinfo()
    assert info["sub"] == alice["sub"]
    assert info["identity_provider_display_name"] == "University of Chicago"
    assert info["organization"] == "University of Chicago"

    # refresh: a new access token for the same resource server
    groups_tok = tokens.by_resource_server[GROUPS_RS]
    assert groups_tok["refresh_token"]
    refreshed = ac.oauth2_refresh_token(groups_tok["refresh_token"])
    new = refreshed.by_resource_server[GROUPS_RS]["access_token"]
    assert new != groups_tok["access_token"]
    ids = {g["id"] for g in groups_client(new).get_my_groups()}
    assert ids == {standin.groups["gateway-admins"], standin.groups["gateway-users"]}

    # a code is single-use; replaying it also revokes what it gave
    with pytest.raises(globus_sdk.AuthAPIError) as err:
        ac.oauth2_exchange_code_for_tokens(code)
    assert err.value.http_status == 400
    assert err.value.raw_json["error"] == "invalid_grant"
    assert ac.oauth2_token_introspect(auth_tok["access_token"])["active"] is False
    with pytest.raises(globus_sdk.AuthAPIError):
        ac.oauth2_refresh_token(groups_tok["refresh_token"])


def test_no_refresh_tokens_unless_offline(standin_sdk_env):
    standin = standin_sdk_env
    ac = confidential(standin)
    tokens = ac.oauth2_exchange_code_for_tokens(
        sdk_login(standin, ac, "bob@uchicago.edu", refresh=False))
    assert all(t["refresh_token"] is None for t in tokens.by_resource_server.values())


def test_native_app_pkce_flow(standin_sdk_env):
    standin = standin_sdk_env
    nc = globus_sdk.NativeAppAuthClient(standin.clients["native"]["id"])
    nc.oauth2_start_flow(requested_scopes=USER_SCOPES, redirect_uri=NATIVE_CALLBACK,
                         refresh_tokens=True)
    url = nc.oauth2_get_authorize_url()
    assert "code_challenge=" in url and "code_challenge_method=S256" in url
    query, location = standin.login(url, "bob@uchicago.edu")
    assert location.startswith(NATIVE_CALLBACK + "?")
    tokens = nc.oauth2_exchange_code_for_tokens(query["code"])
    assert tokens.decode_id_token()["preferred_username"] == "bob@uchicago.edu"
    refreshed = nc.oauth2_refresh_token(tokens.by_resource_server[AUTH_RS]["refresh_token"])
    assert refreshed.by_resource_server[AUTH_RS]["access_token"]
    # public client revokes with its client_id only
    nc.oauth2_revoke_token(tokens.by_resource_server[TRANSFER_RS]["access_token"])

    # wrong code_verifier: log in under one verifier, exchange under another
    nc.oauth2_start_flow(requested_scopes=USER_SCOPES, redirect_uri=NATIVE_CALLBACK,
                         verifier="a" * 43)
    query, _ = standin.login(nc.oauth2_get_authorize_url(), "bob@uchicago.edu")
    nc.oauth2_start_flow(requested_scopes=USER_SCOPES, redirect_uri=NATIVE_CALLBACK,
                         verifier="b" * 43)
    with pytest.raises(globus_sdk.AuthAPIError) as err:
        nc.oauth2_exchange_code_for_tokens(query["code"])
    assert err.value.http_status == 400
    assert "code_verifier" in err.value.raw_json["error_description"]


def test_authorize_refuses_bad_requests(standin):
    hub = standin.clients["hub"]
    base = standin.url("/v2/oauth2/authorize")
    params = {"client_id": hub["id"], "redirect_uri": HUB_CALLBACK, "scope": "openid",
              "response_type": "code", "state": "s"}
    with standin.session() as s:
        # unknown client / unregistered redirect: an error page, never a redirect
        for bad in ({"client_id": "nope"}, {"redirect_uri": "https://evil.example/cb"}):
            r = s.get(url_concat(base, {**params, **bad}), allow_redirects=False)
            assert r.status_code == 400 and "Location" not in r.headers
        # other errors go back to the (registered) client
        r = s.get(url_concat(base, {**params, "response_type": "token"}), allow_redirects=False)
        assert r.status_code == 302
        q = parse_qs(urlsplit(r.headers["Location"]).query)
        assert q["error"] == ["unsupported_response_type"] and q["state"] == ["s"]
        # a public client must use PKCE
        native = {"client_id": standin.clients["native"]["id"], "redirect_uri": NATIVE_CALLBACK}
        r = s.get(url_concat(base, {**params, **native}), allow_redirects=False)
        assert r.status_code == 302 and "error=invalid_request" in r.headers["Location"]
        # the form POST needs the token of a loaded form, once
        r = s.post(base, data={"form_token": "forged", "username": "alice@uchicago.edu"},
                   allow_redirects=False)
        assert r.status_code == 400 and "Location" not in r.headers
        r, form_token = standin.load_form(url_concat(base, params), s)
        assert form_token
        r = s.post(base, data={"form_token": form_token, "username": "mallory@evil"},
                   allow_redirects=False)
        assert r.status_code == 400
        r = s.post(base, data={"form_token": form_token, "deny": "1"}, allow_redirects=False)
        assert r.status_code == 302 and "error=access_denied" in r.headers["Location"]
        r = s.post(base, data={"form_token": form_token, "username": "alice@uchicago.edu"},
                   allow_redirects=False)
        assert r.status_code == 400


# --------------------------------------------------------------------------
# 3. groups


def test_groups_my_groups(standin_sdk_env):
    standin = standin_sdk_env
    ac = confidential(standin)
    alice = ac.oauth2_exchange_code_for_tokens(sdk_login(standin, ac, "alice@uchicago.edu"))
    carol = ac.oauth2_exchange_code_for_tokens(sdk_login(standin, ac, "carol@uchicago.edu"))

    groups = list(groups_client(alice.by_resource_server[GROUPS_RS]["access_token"])
                  .get_my_groups())
    # alice is in gateway-admins and gateway-users (identities.json), not in gateway-members.
    assert {g["id"] for g in groups} == {standin.groups["gateway-admins"], standin.groups["gateway-users"]}
    membership = groups[0]["my_memberships"][0]
    assert membership["identity_id"] == standin.users["alice@uchicago.edu"]["sub"]
    assert membership["status"] == "active" and membership["role"] == "member"

    assert list(groups_client(carol.by_resource_server[GROUPS_RS]["access_token"])
                .get_my_groups()) == []

    # tokens are bound to their resource server
    with pytest.raises(globus_sdk.GlobusAPIError) as err:
        groups_client(alice.by_resource_server[AUTH_RS]["access_token"]).get_my_groups()
    assert err.value.http_status == 401
    with pytest.raises(globus_sdk.AuthAPIError) as err:
        auth_client(alice.by_resource_server[GROUPS_RS]["access_token"]).userinfo()
    assert err.value.http_status == 401

    # and dead once revoked
    tok = alice.by_resource_server[GROUPS_RS]["access_token"]
    ac.oauth2_revoke_token(alice.by_resource_server[GROUPS_RS]["refresh_token"])
    with pytest.raises(globus_sdk.GlobusAPIError) as err:
        groups_client(tok).get_my_groups()
    assert err.value.http_status == 401


# --------------------------------------------------------------------------
# 4. GlobusOAuthenticator (oauthenticator 17.4) as JupyterHub drives it


def make_authenticator(standin, cls=GlobusOAuthenticator, **overrides):
    hub = standin.clients["hub"]
    c = Config()
    a = c[cls.__name__]
    a.client_id = hub["id"]
    a.client_secret = hub["secret"]
    a.oauth_callback_url = HUB_CALLBACK
    a.authorize_url = standin.url("/v2/oauth2/authorize")
    a.token_url = standin.url("/v2/oauth2/token")
    a.userdata_url = standin.url("/v2/oauth2/userinfo")
    a.revocation_url = standin.url("/v2/oauth2/token/revoke")
    a.globus_groups_url = standin.url("/v2/groups/my_groups")
    a.http_request_kwargs = {"ca_certs": standin.ca}
    a.allowed_globus_groups = {standin.groups["gateway-users"]}
    a.admin_globus_groups = {standin.groups["gateway-admins"]}
    a.identity_provider = "uchicago.edu"
    for key, value in overrides.items():
        setattr(a, key, value)
    return cls(config=c)


async def hub_login(standin, authenticator, username):
    """What OAuthLoginHandler.get + the browser + OAuthCallbackHandler do."""
    verifier, challenge = OAuthLoginHandler._generate_pkce_params(None)
    state = _serialize_state({"state_id": "sid"})
    url = url_concat(authenticator.authorize_url, {
        "response_type": "code",
        "redirect_uri": authenticator.get_callback_url(None),
        "client_id": authenticator.client_id,
        **authenticator.extra_authorize_params,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
        "scope": " ".join(authenticator.scope),
    })
    query, location = standin.login(url, username)
    assert location.startswith(HUB_CALLBACK + "?") and query["state"] == state
    handler = Mock(spec=web.RequestHandler)
    handler.get_argument = Mock(return_value=query["code"])
    callback = urlsplit(location)
    handler.request = HTTPServerRequest(
        start_line=RequestStartLine("GET", f"{callback.path}?{callback.query}", "HTTP/1.1"),
        headers=HTTPHeaders({"Host": callback.netloc}),
    )
    handler.hub = Mock(server=Mock(base_url="/hub/"), base_url="/hub/")
    handler.get_state_cookie = Mock(return_value=_serialize_state(
        {"state_id": "sid", "next_url": None, "code_verifier": verifier}))
    return await authenticator.get_authenticated_user(handler, None)


@pytest.mark.parametrize(
    "username, expected",
    [
        ("alice@uchicago.edu", ("alice", True)),
        ("bob@uchicago.edu", ("bob", False)),
        ("carol@uchicago.edu", None),  # in no allowed group
        ("dave@globusid.org", 403),  # allowed group, wrong identity provider
        ("erin@uchicago.edu", ("erin", False)),
        ("erin@globusid.org", 403),
    ],
)
def test_globus_oauthenticator_login(standin, username, expected):
    async def run():
        authenticator = make_authenticator(standin)
        if expected == 403:
            with pytest.raises(web.HTTPError) as err:
                await hub_login(standin, authenticator, username)
            assert err.value.status_code == 403
            return
        model = await hub_login(standin, authenticator, username)
        if expected is None:
            assert model is None
            return
        assert (model["name"], model["admin"]) == expected
        state = model["auth_state"]
        assert state["globus_user"]["sub"] == standin.users[username]["sub"]
        assert standin.groups["gateway-users"] in state["globus_groups"]
        # default exclude_tokens keeps only the transfer token in `tokens`
        assert set(state["tokens"]) == {TRANSFER_RS}

    asyncio.run(run())


def test_globus_oauthenticator_username_collision_without_identity_provider(standin):
    """The hazard the hub config must avoid: with identity_provider unset,
    erin@uchicago.edu and erin@globusid.org are both hub user "erin"."""

    async def run():
        authenticator = make_authenticator(standin, identity_provider="")
        a = await hub_login(standin, authenticator, "erin@uchicago.edu")
        b = await hub_login(standin, authenticator, "erin@globusid.org")
        assert a["name"] == b["name"] == "erin"
        assert a["auth_state"]["globus_user"]["sub"] != b["auth_state"]["globus_user"]["sub"]
        # and dave from the other provider gets in through the group
        d = await hub_login(standin, authenticator, "dave@globusid.org")
        assert d["name"] == "dave"

    asyncio.run(run())


def test_globus_oauthenticator_logout_revocation(standin_sdk_env):
    standin = standin_sdk_env
    hub_id = standin.clients["hub"]["id"]
    introspect = confidential(standin, "hub")

    async def run(**overrides):
        authenticator = make_authenticator(standin, **overrides)
        model = await hub_login(standin, authenticator, "alice@uchicago.edu")
        since = standin.last_seq()
        # what GlobusLogoutHandler.clear_tokens calls with revoke_tokens_on_logout
        await authenticator.revoke_service_tokens(model["auth_state"]["tokens"])
        return model, [e for e in standin.events(since) if e["event"] == "token_revoked"]

    # defaults: auth + groups tokens are excluded from auth_state["tokens"],
    # so logout revokes only the transfer token
    model, revoked = asyncio.run(run())
    assert [(e["resource_server"], e["token_kind"], e["by_client"]) for e in revoked] == [
        (TRANSFER_RS, "access", hub_id)]
    response = model["auth_state"]["token_response"]
    assert introspect.oauth2_token_introspect(response["access_token"])["active"] is True
    transfer = model["auth_state"]["tokens"][TRANSFER_RS]["access_token"]
    assert introspect.oauth2_token_introspect(transfer)["active"] is False

    # keep every token (and ask for refresh tokens): logout revokes them all
    model, revoked = asyncio.run(run(exclude_tokens=[],
                                     extra_authorize_params={"access_type": "offline"}))
    assert {(e["resource_server"], e["token_kind"]) for e in revoked} == {
        (rs, kind) for rs in (AUTH_RS, GROUPS_RS, TRANSFER_RS) for kind in ("access", "refresh")}
    for tok in model["auth_state"]["tokens"].values():
        assert introspect.oauth2_token_introspect(tok["access_token"])["active"] is False


def spawn_environment(standin, cls=GlobusOAuthenticator, **overrides):
    """What the authenticator's pre_spawn_start puts in bob's server environment."""

    async def run():
        authenticator = make_authenticator(standin, cls=cls, **overrides)
        model = await hub_login(standin, authenticator, "bob@uchicago.edu")
        user = Mock()

        async def get_auth_state():
            return model["auth_state"]

        user.get_auth_state = get_auth_state
        spawner = Mock(environment={})
        await authenticator.pre_spawn_start(user, spawner)
        return spawner.environment

    return asyncio.run(run())


def test_globus_data_carries_whole_token_response(standin):
    """exclude_tokens does not keep tokens out of GLOBUS_DATA: pre_spawn_start
    pickles the whole auth_state, and token_response holds every token."""
    data = pickle.loads(base64.b64decode(spawn_environment(standin)["GLOBUS_DATA"]))
    assert set(data["tokens"]) == {TRANSFER_RS}
    other = {t["resource_server"] for t in data["token_response"]["other_tokens"]}
    assert GROUPS_RS in other and data["token_response"]["resource_server"] == AUTH_RS
