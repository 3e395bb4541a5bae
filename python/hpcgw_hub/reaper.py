"""Cancel this hub's orphaned notebook jobs when the hub starts.

A job is this hub's when its Slurm name starts with the hub's
`job_name_prefix`; it is an orphan when no server the hub knows (running,
pending or stopped, with its spawner state) holds its job id. That happens
when the hub died between submitting a job and saving it, or a server's
record was removed while its job ran on.

Runs as a JupyterHub-managed service (role scopes: list:users, read:servers,
admin:server_state) once, shortly after the hub starts, then idles: the hub
restarts services that exit.

python -m hpcgw_hub.reaper --prefix P --cluster-host H --gateway-user U --ssh-key K --known-hosts F [--port N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import urllib.request

from .gate import Gate

log = logging.getLogger("hpcgw-reaper")


def known_job_ids(users: list[dict]) -> set[str]:
    ids = set()
    for user in users:
        for server in (user.get("servers") or {}).values():
            job_id = ((server or {}).get("state") or {}).get("job_id")
            if job_id:
                ids.add(str(job_id))
    return ids


def orphans(listing: str, prefix: str, known: set[str]) -> list[str]:
    """Job ids of `list` output lines (<id> <name> <STATE>) that are ours and unknown."""
    found = []
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].startswith(prefix + "-") and fields[0] not in known:
            found.append(fields[0])
    return found


def hub_users(api_url: str, token: str) -> list[dict]:
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/users?include_stopped_servers=1",
        headers={"Authorization": f"token {token}", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as reply:  # noqa: S310 (the hub's own API URL)
        return json.load(reply)


async def _users_or_none(api_url: str, token: str, attempts: int = 60) -> list[dict] | None:
    for _ in range(attempts):
        try:
            return hub_users(api_url, token)
        except OSError as error:
            log.info("Waiting for the hub API: %s", error)
            await asyncio.sleep(1)
    return None


async def reap_once(gate: Gate, api_url: str, token: str, prefix: str, grace: float = 10.0) -> list[str]:
    """List the cluster's jobs FIRST, then ask the hub which it knows, and ask
    again after `grace` seconds: a job submitted while the reaper looks is
    saved by its spawner right after sbatch answers, so only a job still
    unknown after the grace is an orphan (never a server that is starting)."""
    listing = await gate.list_jobs(prefix)
    if not listing.ok:
        log.error("Cannot list the cluster's jobs: %s", listing.stderr.strip())
        return []
    users = await _users_or_none(api_url, token)  # waits while the hub starts
    if users is None:
        log.error("The hub API did not answer; no orphans cancelled")
        return []
    candidates = orphans(listing.stdout, prefix, known_job_ids(users))
    if not candidates:
        log.info("Orphan check done: 0 cancelled")
        return []
    await asyncio.sleep(grace)
    users = await _users_or_none(api_url, token, attempts=10)
    if users is None:
        log.error("The hub API did not answer; no orphans cancelled")
        return []
    known = known_job_ids(users)
    cancelled = []
    for job_id in (job for job in candidates if job not in known):
        result = await gate.cancel(job_id)
        log.warning("Orphaned job %s: %s", job_id, "cancelled" if result.ok else result.stderr.strip())
        if result.ok:
            cancelled.append(job_id)
    log.info("Orphan check done: %d cancelled", len(cancelled))
    return cancelled


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--cluster-host", required=True)
    parser.add_argument("--port", type=int, default=22)
    parser.add_argument("--gateway-user", required=True)
    parser.add_argument("--ssh-key", required=True)
    parser.add_argument("--known-hosts", required=True)
    parser.add_argument("--control-path", default="/run/jupyterhub/ssh-%C")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s hpcgw-reaper] %(message)s")
    gate = Gate(host=args.cluster_host, user=args.gateway_user, key=args.ssh_key, known_hosts=args.known_hosts,
                port=args.port, control_path=args.control_path)

    async def run():
        await reap_once(gate, os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"], args.prefix)
        await asyncio.Event().wait()  # idle: the hub would restart an exited service

    asyncio.run(run())


if __name__ == "__main__":
    main()
