"""Globus login with the gateway's policy on top of oauthenticator's.

Three things differ from the stock GlobusOAuthenticator, each for safety:

1. Usernames never merge two people. Stock oauthenticator drops everything
   after the ``@`` of the Globus username, so ``erin@uchicago.edu`` and
   ``erin@globusid.org`` both become ``erin``. Here the part before ``@`` is
   used only when ``identity_provider`` restricts logins to one provider (the
   domain is then the same for everyone); otherwise the whole Globus username
   is the hub username.
2. Globus tokens stay on the hub. Stock oauthenticator pickles the whole auth
   state (every token of every resource server, refresh tokens included) into
   each notebook's ``GLOBUS_DATA``. Here nothing is passed unless
   ``pass_tokens_to_notebooks`` is on, and then only the tokens of
   ``notebook_token_resource_servers``.
3. Logout revokes every token. Stock oauthenticator revokes only the tokens it
   keeps in the auth state, and by default it keeps none of the auth and groups
   tokens. Here all tokens are kept (encrypted, JUPYTERHUB_CRYPT_KEY) so that
   logout can revoke them all.
"""

from __future__ import annotations

import base64
import pickle

from oauthenticator.globus import GlobusOAuthenticator
from traitlets import Bool, List, Unicode, default


class GatewayGlobusOAuthenticator(GlobusOAuthenticator):
    """GlobusOAuthenticator with the gateway's username and token policy."""

    pass_tokens_to_notebooks = Bool(
        False,
        config=True,
        help="""Put the user's Globus tokens in GLOBUS_DATA of their notebook.

        Off by default: a notebook runs user code on a shared cluster account,
        so tokens are handed over only when the site needs them (e.g. Globus
        Transfer from notebooks), and then only those of
        `notebook_token_resource_servers`.
        """,
    )

    notebook_token_resource_servers = List(
        Unicode(),
        default_value=["transfer.api.globus.org"],
        config=True,
        help="Resource servers whose tokens go to notebooks when pass_tokens_to_notebooks is on.",
    )

    @default("exclude_tokens")
    def _exclude_tokens_default(self):
        # Keep every token in the (encrypted) auth state so logout can revoke it.
        return []

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
