"""Which hub user a Slurm job (or a user folder, or a job log) belongs to.

Usage, on the hub:  sudo /opt/jupyterhub/bin/python -m hpcgw_hub.whois NAME [DB]

NAME holds a user id, `u-` + the first 20 hex digits of sha256(hub user
name): a Slurm job name (hpcgw-<hub>-u-<20 hex>), a user folder
(<gateway_root>/users/u-...) or a job log (<gateway_root>/logs/u-.../<job
id>.log, or the older <gateway_root>/logs/u-....<job id>.log). The id is a hash, so this looks the name up among the hub's users
(DB: the hub's database, /var/lib/jupyterhub/jupyterhub.sqlite by default)
and prints it; it exits 1 when no user of the hub has that id.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import sys

DEFAULT_DB = "/var/lib/jupyterhub/jupyterhub.sqlite"
USER_ID = re.compile(r"u-[0-9a-f]{20}")


def user_id(username: str) -> str:
    """hpcgw_hub.spawner.user_id (not imported: this stays a light command)."""
    return "u-" + hashlib.sha256(username.encode()).hexdigest()[:20]


def whois(name: str, db: str = DEFAULT_DB) -> list[str]:
    """The hub users whose id is the one in `name`."""
    found = USER_ID.search(name)
    if not found:
        raise ValueError(f"{name!r} holds no user id (u- and 20 hex digits)")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        users = [row[0] for row in connection.execute("SELECT name FROM users")]
    return [user for user in users if user_id(user) == found.group(0)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        users = whois(*args)
    except (ValueError, sqlite3.Error) as error:
        print(f"whois: {error}", file=sys.stderr)
        return 2
    for user in users:
        print(user)
    return 0 if users else 1


if __name__ == "__main__":
    sys.exit(main())
