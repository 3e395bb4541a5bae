"""A spawner for a hub whose cluster side is not configured yet."""

from jupyterhub.spawner import Spawner
from tornado import web


class NotConfiguredSpawner(Spawner):
    """Refuses every spawn with a message a user and an admin understand."""

    async def start(self):
        raise web.HTTPError(
            503,
            "Notebook servers cannot start yet: this hub's cluster connection is "
            "not configured (the gateway's spawner role has not run). Please "
            "contact the hub's administrators.",
        )

    async def poll(self):
        return 0

    async def stop(self, now=False):
        return None
