"""The port callback: how a notebook job tells the hub where to reach it.

The job wrapper on the cluster opens the tunnel, starts the notebook, and
only once it listens posts ``{"port": N}`` (N: the hub-side end of its
tunnel) to ``/hub/api/hpcgw/port`` with the server's own API token and, in
the ``X-Hpcgw-Port-Secret`` header, the secret the spawner made for this
start (``HPCGW_PORT_SECRET`` of the job). The API token is inside the
notebook's container (the server needs it); the secret never is: a report
without it is refused, so code in the notebook (a user's
``jupyter_server_config.py``) cannot make the hub route elsewhere.

This replaces batchspawner's ``/hub/api/batchspawner`` handler, which sets
ANY spawner attribute from the request body: with only its own API token, a
notebook could set ``batch_cancel_cmd`` and have the hub run a command of its
choosing. Importing this module removes that handler.
"""

from __future__ import annotations

import hmac
import json

from jupyterhub import apihandlers
from jupyterhub.apihandlers import APIHandler
from tornado import web

ROUTE = r"/api/hpcgw/port"
SECRET_HEADER = "X-Hpcgw-Port-Secret"


def remove_batchspawner_handler() -> None:
    """Drop batchspawner's handler from JupyterHub's API (registered on import)."""
    import batchspawner  # noqa: F401  (make sure its registration has happened)

    apihandlers.default_handlers[:] = [
        (route, handler)
        for route, handler in apihandlers.default_handlers
        if not route.startswith("/api/batchspawner")
    ]


def parse_port(body: bytes) -> int:
    """The port of a callback body that is exactly {"port": <int 1..65535>}."""
    try:
        data = json.loads(body or b"")
    except ValueError:
        raise web.HTTPError(400, "the body must be JSON") from None
    if not isinstance(data, dict) or set(data) != {"port"}:
        raise web.HTTPError(400, 'the body must be exactly {"port": <number>}')
    port = data["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise web.HTTPError(400, "port must be a whole number from 1 to 65535")
    return port


def reporting_spawner(spawners, token: str, secret: str):
    """The spawner whose job may report a port with this API token and port
    secret; a 403 otherwise. The token names the starting server (it is
    also inside its container); the secret proves the job wrapper sent it."""
    spawner = next(
        (
            s
            for s in spawners
            if getattr(s, "api_token", None) and hmac.compare_digest(s.api_token, token)
        ),
        None,
    )
    if spawner is None or not hasattr(spawner, "notebook_port_reported"):
        raise web.HTTPError(403, "only a starting server's own token may report its port")
    if not spawner.port_secret_matches(secret):
        raise web.HTTPError(403, "only the job wrapper may report the port")
    return spawner


class PortCallbackHandler(APIHandler):
    """POST {"port": N}: the notebook of the caller's own starting server is at N."""

    @web.authenticated
    async def post(self):
        port = parse_port(self.request.body)
        token = self.get_auth_token() or ""
        user = self.current_user
        spawners = getattr(user, "spawners", {}) if user is not None else {}
        try:
            spawner = reporting_spawner(spawners.values(), token, self.request.headers.get(SECRET_HEADER, ""))
        except web.HTTPError:
            self.log.warning("Port report for %s refused: no starting server's token and secret", user.name)
            raise
        if not spawner.notebook_port_reported(port):
            raise web.HTTPError(409, "this server is not waiting for its port")
        self.set_status(200)
        self.finish(json.dumps({"port": port}))


remove_batchspawner_handler()
