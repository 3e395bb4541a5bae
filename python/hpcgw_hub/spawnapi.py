"""REST spawns: options are checked before JupyterHub stores or uses them.

``POST /hub/api/users/{name}/server`` hands its JSON body to ``User.spawn``,
which stores it as the server's ``user_options`` (the form's remembered
choice) and only then assigns it to the spawner. A body that is not an object
(``[]``, ``"x"``, ``1``) fails that assignment (a TraitError: a 500) after the
server's record was made, leaving a "ready" ghost server with a proxy route
to the hub's own address that outlives a DELETE; options the spawner refuses
were stored all the same. This handler refuses both with a 400 before
JupyterHub does anything: the body must be an object, and the spawner's
``check_user_options`` (GatewaySpawner: the admin's profiles) must accept it.
Importing this module puts it in place of JupyterHub's handler.
"""

from __future__ import annotations

from jupyterhub import apihandlers
from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.scopes import needs_scope
from tornado import web


class CheckedUserServerAPIHandler(UserServerAPIHandler):
    """JupyterHub's start-a-server API with the options checked first."""

    @needs_scope("servers")
    async def post(self, user_name, server_name=""):
        options = self.get_json_body()  # None for an empty body: the stored options apply
        if options is not None:
            if not isinstance(options, dict):
                raise web.HTTPError(400, "Spawn options refused: the body must be a JSON object")
            user = self.find_user(user_name)
            if user is not None and (not server_name or self.allow_named_servers):
                spawner = user.get_spawner(server_name, replace_failed=True)
                check = getattr(spawner, "check_user_options", None)
                if check is not None and not spawner.pending:
                    check(options)  # raises a 400 naming the bad option
        return await super().post(user_name, server_name)


def install() -> None:
    """Put the checked handler on JupyterHub's routes of UserServerAPIHandler."""
    apihandlers.default_handlers[:] = [
        (route, CheckedUserServerAPIHandler if handler is UserServerAPIHandler else handler)
        for route, handler in apihandlers.default_handlers
    ]


install()
