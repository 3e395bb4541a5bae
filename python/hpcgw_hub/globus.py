"""Globus login with the gateway's policy on top of oauthenticator's.

What differs from the stock GlobusOAuthenticator, each for safety:

1. Usernames never merge two people. Stock oauthenticator drops everything
   after the ``@`` of the Globus username, so ``erin@uchicago.edu`` and
   ``erin@globusid.org`` both become ``erin``. Here the part before ``@`` is
   used only when ``identity_provider`` restricts logins to one provider (the
   domain is then the same for everyone); otherwise the whole Globus username
   is the hub username.
2. Only the scopes in use are asked for: identity (openid profile email),
   the groups scope when group rules are set, and Globus Transfer only when
   ``pass_tokens_to_notebooks`` hands its token to notebooks. (Stock asks for
   ``transfer.api.globus.org:all`` at every login.)
3. The hub keeps no Globus token it does not need. A login's tokens serve to
   read who the person is and their groups; then every one of them is revoked
   at Globus and dropped from the auth state (stock keeps ``token_response``,
   all tokens, in the auth state that admins read over the REST API), except,
   with ``pass_tokens_to_notebooks``, the tokens of
   ``notebook_token_resource_servers``, which are kept for the notebooks and
   revoked on logout.
4. Tokens of refused logins (no allowed group, other identity provider, an
   error on the way) are revoked at once (stock leaves them live).
5. Logout ends the person's sessions everywhere (`GatewayLogoutHandler`).

With ``manage_groups`` on, a person's hub groups are their Globus groups,
set at every login (JupyterHub creates a group the first time one of its
members logs in, and drops the person from the hub groups they are no longer
in). A Globus group's hub group is named by its UUID, which no one else can
take (Globus group names are not unique: anyone can make a group called
"gpu-users"), unless `hub_group_names` gives it a name. A spawner profile's
``groups`` names these hub groups.
"""

from __future__ import annotations

import base64
import contextvars
import pickle
import urllib.parse

from jupyterhub import orm
from oauthenticator.globus import GlobusLogoutHandler, GlobusOAuthenticator
from traitlets import Bool, Dict, List, Unicode, default

IDENTITY_SCOPES = ["openid", "profile", "email"]
GROUPS_SCOPE = "urn:globus:auth:scope:groups.api.globus.org:view_my_groups_and_memberships"
TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"
# What the hub keeps of a login's auth state when it keeps no token.
KEPT_STATE = ("client_id", "globus_user", "globus_groups")

# The token responses of the login being checked, per asyncio task.
_login_tokens: contextvars.ContextVar[list | None] = contextvars.ContextVar("hpcgw_login_tokens", default=None)


def end_sessions(db, user) -> int:
    """End every browser session of `user`, not only the one logging out.

    JupyterHub keeps a user's ``cookie_id`` across logouts, so a copied hub
    cookie stays valid: a new id makes every hub cookie of this user invalid.
    Tokens the hub issued by OAuth (each user server's and service's
    ``jupyterhub-user-*`` / service cookie holds one) and tokens bound to a
    browser session are deleted; tokens the user made by hand and their
    servers' own API tokens (client ``jupyterhub``, no session) are kept.
    Returns how many tokens were deleted.
    """
    orm_user = getattr(user, "orm_user", user)
    orm_user.cookie_id = orm.new_token()
    count = 0
    for token in list(orm_user.api_tokens):
        if token.client_id != "jupyterhub" or token.session_id:
            db.delete(token)
            count += 1
    db.commit()
    return count


class GatewayLogoutHandler(GlobusLogoutHandler):
    """Logout that ends the person's hub sessions everywhere (see `end_sessions`).

    Runs before JupyterHub's own logout (GlobusLogoutHandler.get), which then
    clears this browser's cookies and, with ``JupyterHub.shutdown_on_logout``,
    stops the person's servers.
    """

    async def handle_logout(self):
        await super().handle_logout()  # revokes the kept Globus tokens
        user = self.current_user
        if user is not None:
            count = end_sessions(self.db, user)
            self.log.info("Logout of %s: every hub session ended (%d tokens deleted)", user.name, count)


class GatewayGlobusOAuthenticator(GlobusOAuthenticator):
    """GlobusOAuthenticator with the gateway's username, scope and token policy."""

    logout_handler = GatewayLogoutHandler

    pass_tokens_to_notebooks = Bool(
        False,
        config=True,
        help="""Put the user's Globus tokens in GLOBUS_DATA of their notebook.

        Off by default: a notebook runs user code on a shared cluster account,
        so tokens are handed over only when the site needs them (e.g. Globus
        Transfer from notebooks), and then only those of
        `notebook_token_resource_servers`. Off, the hub asks Globus for no
        Transfer scope and keeps no token after login.
        """,
    )

    notebook_token_resource_servers = List(
        Unicode(),
        default_value=["transfer.api.globus.org"],
        config=True,
        help="Resource servers whose tokens go to notebooks when pass_tokens_to_notebooks is on.",
    )

    hub_group_names = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        config=True,
        help="""Hub group names of Globus groups (UUID -> name), with manage_groups.

        A Globus group not listed here becomes the hub group named by its
        UUID. Only Globus groups the person is in count: a name given here
        is never taken from Globus.
        """,
    )

    async def get_user_groups(self, auth_state: dict):
        """The hub groups of a login (manage_groups): one per Globus group
        the person is in, named by its UUID or by `hub_group_names`."""
        return {self.hub_group_names.get(uuid, uuid) for uuid in auth_state.get("globus_groups") or []}

    @default("scope")
    def _scope_default(self):
        scopes = list(IDENTITY_SCOPES)
        if self.allowed_globus_groups or self.admin_globus_groups or self.manage_groups:
            scopes.append(GROUPS_SCOPE)
        if self.pass_tokens_to_notebooks and "transfer.api.globus.org" in self.notebook_token_resource_servers:
            scopes.append(TRANSFER_SCOPE)
        return scopes

    @default("exclude_tokens")
    def _exclude_tokens_default(self):
        # The login's auth model sees every token; `stored_auth_state` keeps
        # only the notebooks' ones, and the rest is revoked.
        return []

    # -- what is kept ------------------------------------------------------
    @property
    def kept_resource_servers(self) -> set[str]:
        return set(self.notebook_token_resource_servers) if self.pass_tokens_to_notebooks else set()

    def stored_auth_state(self, state: dict | None) -> dict | None:
        """The auth state the hub stores: who the person is, their groups, and
        (pass-through on) the notebooks' tokens; no token_response."""
        if not state:
            return state
        kept = {key: state[key] for key in KEPT_STATE if key in state}
        # Always a `tokens` dict: GlobusLogoutHandler revokes what it holds.
        kept["tokens"] = {
            rs: tok for rs, tok in (state.get("tokens") or {}).items() if rs in self.kept_resource_servers
        }
        return kept

    # -- revocation ----------------------------------------------------------
    async def revoke_tokens(self, token_info: dict, keep: set[str] = frozenset(), why: str = "") -> int:
        """Revoke at Globus every token of a token response but those of `keep`
        (resource servers). Errors are logged, never raised: a refused login
        must stay a refusal, not become a 500. Returns how many were revoked."""
        count = 0
        for token in self.get_globus_tokens(token_info):
            if token.get("resource_server") in keep:
                continue
            for kind in ("access_token", "refresh_token"):
                value = token.get(kind)
                if not value:
                    continue
                try:
                    await self.httpfetch(
                        self.revocation_url,
                        method="POST",
                        headers=self.get_client_credential_headers(),
                        body=urllib.parse.urlencode({"token": value}),
                    )
                    count += 1
                except Exception as error:  # noqa: BLE001 (logged; the login's outcome stands)
                    self.log.error("Could not revoke a %s Globus %s (%s): %s",
                                   token.get("resource_server"), kind, why, error)
        return count

    async def get_token_info(self, handler, params):
        token_info = await super().get_token_info(handler, params)
        issued = _login_tokens.get()
        if issued is not None:
            issued.append(token_info)
        return token_info

    async def get_authenticated_user(self, handler, data):
        """JupyterHub's login check, then no token left behind: a refused
        login's tokens are all revoked, an accepted one's all but the kept."""
        issued: list = []
        reset = _login_tokens.set(issued)
        try:
            model = await super().get_authenticated_user(handler, data)
        except Exception:
            for token_info in issued:
                await self.revoke_tokens(token_info, why="refused login")
            raise
        finally:
            _login_tokens.reset(reset)
        keep = self.kept_resource_servers if model else set()
        for token_info in issued:
            revoked = await self.revoke_tokens(token_info, keep=keep,
                                               why="login done" if model else "refused login")
            self.log.info("Revoked %d Globus tokens of a %s login", revoked, "finished" if model else "refused")
        if model:
            model["auth_state"] = self.stored_auth_state(model.get("auth_state"))
        return model

    async def refresh_user(self, user, handler=None, **kwargs):
        """The login's facts stand until the session ends (cookie_max_age_days).

        Stock refresh re-reads userinfo with the kept auth token every
        auth_refresh_age seconds; the hub keeps no such token, so groups and
        admin status are read at login only."""
        return True

    def user_info_to_username(self, user_info):
        """The hub username for a Globus identity.

        With `identity_provider` set every allowed identity shares its domain,
        so the part before ``@`` is unique: ``alice@uchicago.edu`` -> ``alice``.
        Without it, the full Globus username is kept: ``erin@globusid.org``.
        """
        name = user_info.get(self.username_claim)
        if not name:
            raise ValueError(f"Globus userinfo has no {self.username_claim!r}")
        if self.identity_provider:
            return name.split("@", 1)[0]
        return name

    async def pre_spawn_start(self, user, spawner):
        """Pass Globus tokens to a notebook only when the site asks for it."""
        if self.globus_local_endpoint:
            spawner.environment["GLOBUS_LOCAL_ENDPOINT"] = self.globus_local_endpoint
        if not self.pass_tokens_to_notebooks:
            return
        state = await user.get_auth_state()
        if not state:
            return
        tokens = {
            server: token
            for server, token in state.get("tokens", {}).items()
            if server in self.notebook_token_resource_servers
        }
        data = {"client_id": state.get("client_id"), "tokens": tokens}
        spawner.environment["GLOBUS_DATA"] = base64.b64encode(pickle.dumps(data)).decode("ascii")
