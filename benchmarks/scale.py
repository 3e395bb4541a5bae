#!/usr/bin/env python3
"""Slurm load and concurrent spawns on a running test bed (issue 12, "Scale").

Measures, through the public https URL as an admin of the hub (the bed's
`erin`), for the spawner the bed's hub runs (whatever its branch: per-server
status polls or one shared squeue) and, unless --no-peer, for upstream
batchspawner's own SlurmSpawner as a peer on the same bed (see PEER below):

  rpc     slurmctld's RPCs per minute from `sdiag` (reset with `sdiag -r` as
          root on the login node, read after --window seconds) while 1, 10,
          50 (--servers) notebook servers run: in all, by message type, and
          by user (the hub's are the gateway account's);
  spawns  N (--spawns) servers started at once: failures, p50, p95 and max
          of the spawn latency (POST until ready), then all stopped at once:
          p50, p95 of the stop latency (DELETE until the hub reports none).

The bed is lent for the run and given back as it was: the compute
partitions' OverSubscribe is raised at runtime (`scontrol update`: a node of
the bed has 2 CPUs x 8 jobs) and the hub's tunnel connection cap
(tunnelbot_max_connections, 16 in the test bed) with it, both put back at
the end; the users made (scale-NN) are deleted.

Usage (after `make demo`, or any converged bed; keep runs short on a shared machine):
    python benchmarks/scale.py --testbed tunnel --servers 1,3 --spawns 3 --window 30
    python benchmarks/scale.py --testbed demo            # 1,10,50 servers, 20 and 50 spawns
Writes benchmarks/results/scale-<date>.json and .svg (the plot), prints a table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "testbed"))
sys.path.insert(0, str(REPO / "benchmarks"))

from hubclient import HubUser, Testbed, browser_session, globus_login, public_names, public_roots  # noqa: E402
from plot import write_svg  # noqa: E402

ADMIN = "erin"  # an admin of the test bed's hub (jupyterhub_admin_users)
USER_PREFIX = "scale-"
SDIAG_LINE = re.compile(r"^\s+(\S+)\s+\(\s*(\d+)\)\s+count:(\d+)")
TUNNEL_CAP_SCRIPT = "/usr/local/sbin/hpcgw-tunnelbot-connections"
TUNNEL_CAP_LINE = re.compile(r'if \[ "\$held" -ge (\d+) \]')


def docker(testbed: Testbed, role: str, *argv: str, check: bool = True) -> str:
    return subprocess.run(["docker", "exec", testbed.container(role), *argv], check=check,
                          capture_output=True, text=True).stdout


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (share in 0..1) of values, None if none."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, min(len(ordered) - 1, int(-(-share * len(ordered) // 1)) - 1))], 2)


def latency_summary(values: list[float], failures: list[str]) -> dict:
    return {"n": len(values) + len(failures), "failures": len(failures), "why": failures[:10],
            "p50": percentile(values, 0.5), "p95": percentile(values, 0.95),
            "max": round(max(values), 2) if values else None,
            "mean": round(statistics.fmean(values), 2) if values else None,
            "all": [round(v, 2) for v in sorted(values)]}


def parse_sdiag(text: str) -> dict:
    """sdiag's RPC counts: {"by_type": {name: n}, "by_user": {name: n}}."""
    sections = {"by_type": {}, "by_user": {}}
    current = None
    for line in text.splitlines():
        if line.startswith("Remote Procedure Call statistics by message type"):
            current = "by_type"
        elif line.startswith("Remote Procedure Call statistics by user"):
            current = "by_user"
        elif line and not line[0].isspace():
            current = None
        elif current:
            match = SDIAG_LINE.match(line)
            if match:
                sections[current][match.group(1)] = int(match.group(3))
    return sections


class Admin:
    """The hub's REST API as the admin (session cookie + XSRF, through nginx)."""

    def __init__(self, user: HubUser):
        self.user = user

    def api(self, method: str, path: str, **kwargs):
        return self.user.api(method, path, **kwargs)

    def server(self, name: str) -> dict | None:
        reply = self.api("GET", f"/users/{quote(name, safe='')}")
        reply.raise_for_status()
        return reply.json()["servers"].get("")

    def make_users(self, names: list[str]) -> None:
        existing = {u["name"] for u in self.api("GET", "/users", params={"limit": 1000}).json()}
        new = [n for n in names if n not in existing]
        if new:
            reply = self.api("POST", "/users", json={"usernames": new})
            if reply.status_code != 201:
                raise SystemExit(f"cannot make users: {reply.status_code} {reply.text[:300]}")

    def delete_users(self, names: list[str]) -> None:
        for name in names:
            self.api("DELETE", f"/users/{quote(name, safe='')}")

    def spawn(self, name: str, options: dict, timeout: float) -> tuple[float | None, str]:
        """Seconds from POST to ready, or (None, why)."""
        started = time.monotonic()
        try:
            reply = self.api("POST", f"/users/{quote(name, safe='')}/server", json=options)
            if reply.status_code >= 400:
                return None, f"POST {reply.status_code}: {reply.text[:200]}"
            while time.monotonic() - started < timeout:
                server = self.server(name)
                if server is None:
                    return None, "the server went away while starting"
                if server.get("ready"):
                    return time.monotonic() - started, ""
                time.sleep(1)
            return None, f"not ready in {timeout} s"
        except Exception as error:  # noqa: BLE001 (a benchmark counts any failure)
            return None, f"{type(error).__name__}: {error}"

    def stop(self, name: str, timeout: float = 120) -> tuple[float | None, str]:
        started = time.monotonic()
        try:
            reply = self.api("DELETE", f"/users/{quote(name, safe='')}/server")
            if reply.status_code not in (202, 204):
                return None, f"DELETE {reply.status_code}: {reply.text[:200]}"
            while time.monotonic() - started < timeout:
                if self.server(name) is None:
                    return time.monotonic() - started, ""
                time.sleep(0.5)
            return None, f"not stopped in {timeout} s"
        except Exception as error:  # noqa: BLE001
            return None, f"{type(error).__name__}: {error}"


def at_once(function, names: list[str], *args) -> tuple[list[float], list[str]]:
    values, failures = [], []
    if not names:
        return values, failures
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        for seconds, why in pool.map(lambda name: function(name, *args), names):
            if seconds is None:
                failures.append(why)
            else:
                values.append(seconds)
    return values, failures


def rpc_per_minute(testbed: Testbed, window: float) -> dict:
    docker(testbed, "cluster", "sdiag", "-r")
    started = time.monotonic()
    time.sleep(window)
    counts = parse_sdiag(docker(testbed, "cluster", "sdiag"))
    minutes = (time.monotonic() - started) / 60
    return {
        "window_s": round(minutes * 60, 1),
        "total_per_min": round(sum(counts["by_type"].values()) / minutes, 1),
        "by_type_per_min": {k: round(v / minutes, 1) for k, v in sorted(counts["by_type"].items())},
        "by_user_per_min": {k: round(v / minutes, 1) for k, v in sorted(counts["by_user"].items())},
    }


def measure(admin: Admin, testbed: Testbed, args, options: dict) -> dict:
    result = {"rpc": {}, "spawns": {}}
    names = [f"{USER_PREFIX}{i:02d}" for i in range(1, max(max(args.servers), max(args.spawns)) + 1)]
    admin.make_users(names)
    running: list[str] = []
    try:
        # The RPC load against running servers: start up to each level, settle, count.
        for level in sorted(args.servers):
            more = names[len(running):level]
            values, failures = at_once(admin.spawn, more, options, args.timeout)
            running += more
            time.sleep(args.settle)
            up = sum(1 for name in running if (admin.server(name) or {}).get("ready"))
            result["rpc"][str(level)] = {**rpc_per_minute(testbed, args.window), "running": up,
                                         "spawn": latency_summary(values, failures),
                                         "load_1min": round(os.getloadavg()[0], 2)}
            print(f"  {level} servers ({up} ready): {result['rpc'][str(level)]['total_per_min']} RPC/min", flush=True)
        values, failures = at_once(admin.stop, running)
        result["stop_after_rpc"] = latency_summary(values, failures)
        running = []
        for count in sorted(args.spawns):
            batch = names[:count]
            load = os.getloadavg()[0]
            values, failures = at_once(admin.spawn, batch, options, args.timeout)
            running = batch
            spawn = latency_summary(values, failures)
            values, failures = at_once(admin.stop, batch)
            running = []
            result["spawns"][str(count)] = {"spawn": spawn, "stop": latency_summary(values, failures),
                                            "load_1min_before": round(load, 2)}
            print(f"  {count} at once: {spawn['failures']} failed, p50 {spawn['p50']} s, p95 {spawn['p95']} s",
                  flush=True)
            time.sleep(args.settle)
    finally:
        at_once(admin.stop, [name for name in running if admin.server(name) is not None])
    return result


class BedLoan:
    """Raises the bed's job slots and tunnel cap for the run; puts them back."""

    def __init__(self, testbed: Testbed, jobs_per_core: int, tunnels: int):
        self.testbed, self.jobs_per_core, self.tunnels = testbed, jobs_per_core, tunnels
        self.partitions: dict[str, str] = {}
        self.cap: str | None = None

    def __enter__(self):
        for line in docker(self.testbed, "cluster", "scontrol", "-o", "show", "partition").splitlines():
            name = re.search(r"PartitionName=(\S+)", line).group(1)
            self.partitions[name] = re.search(r"OverSubscribe=(\S+)", line).group(1)
            docker(self.testbed, "cluster", "scontrol", "update", f"PartitionName={name}",
                   f"OverSubscribe=FORCE:{self.jobs_per_core}")
        script = docker(self.testbed, "hub", "cat", TUNNEL_CAP_SCRIPT, check=False)
        match = TUNNEL_CAP_LINE.search(script)
        if match and int(match.group(1)) < self.tunnels:
            self.cap = match.group(1)
            self._set_cap(self.cap, str(self.tunnels))
        return self

    def _set_cap(self, old: str, new: str) -> None:
        docker(self.testbed, "hub", "sed", "-i", f's/-ge {old} \\]/-ge {new} ]/', TUNNEL_CAP_SCRIPT)

    def __exit__(self, *_):
        for name, value in self.partitions.items():
            docker(self.testbed, "cluster", "scontrol", "update", f"PartitionName={name}",
                   f"OverSubscribe={value}", check=False)
        if self.cap is not None:
            self._set_cap(str(self.tunnels), self.cap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testbed", default="demo", help="test bed name: hpcgw-<name>-* containers (default demo)")
    parser.add_argument("--servers", default="1,10,50", help="running servers at which to count RPCs (default 1,10,50)")
    parser.add_argument("--spawns", default="20,50", help="servers started at once (default 20,50)")
    parser.add_argument("--window", type=float, default=60, help="seconds of each sdiag count (default 60)")
    parser.add_argument("--settle", type=float, default=5, help="seconds after starting servers before counting")
    parser.add_argument("--timeout", type=float, default=330, help="seconds a spawn may take (the hub's is 300)")
    parser.add_argument("--profile", default="", help="spawner profile (default: the hub's default profile)")
    parser.add_argument("--no-peer", action="store_true", help="skip upstream batchspawner's SlurmSpawner")
    parser.add_argument("--only-peer", action="store_true", help="measure only the peer")
    args = parser.parse_args()
    args.servers = [int(n) for n in args.servers.split(",") if n]
    args.spawns = [int(n) for n in args.spawns.split(",") if n]
    most = max(max(args.servers), max(args.spawns))

    testbed = Testbed.discover(args.testbed, REPO / ".testbed" / args.testbed)
    options = {"profile": args.profile} if args.profile else {}
    results, started = {}, time.monotonic()
    with public_names(testbed), tempfile.NamedTemporaryFile("w", suffix=".pem") as roots:
        roots.write(public_roots(testbed))
        roots.flush()
        browser = browser_session(pathlib.Path(roots.name))
        if globus_login(browser, testbed, f"{ADMIN}@uchicago.edu").status_code != 200:
            raise SystemExit(f"{ADMIN}@uchicago.edu could not log in")
        admin = Admin(HubUser(browser, testbed, ADMIN))
        names = [f"{USER_PREFIX}{i:02d}" for i in range(1, most + 1)]
        try:
            with BedLoan(testbed, jobs_per_core=max(8, -(-most // 2) + 4), tunnels=most + 4):
                if not args.only_peer:
                    print("this bed's spawner:", flush=True)
                    results["gateway"] = measure(admin, testbed, args, options)
                if not args.no_peer:
                    import peer  # noqa: PLC0415 (only with the peer)

                    with peer.installed(testbed, admin.user):
                        print("upstream batchspawner SlurmSpawner (peer):", flush=True)
                        results["batchspawner"] = measure(admin, testbed, args, peer.options(args.profile))
        finally:
            admin.delete_users(names)

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = REPO / "benchmarks" / "results" / f"scale-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    document = {"testbed": args.testbed, "commit": head.stdout.strip(), "servers": args.servers,
                "spawns": args.spawns, "window_s": args.window, "cpus": os.cpu_count(),
                "seconds": round(time.monotonic() - started), "results": results}
    out.write_text(json.dumps(document, indent=2))
    write_svg(document, out.with_suffix(".svg"))
    print(f"{'spawner':<14} {'measure':<22} figures")
    for spawner, measured in results.items():
        for level, rpc in measured["rpc"].items():
            print(f"{spawner:<14} {'RPC/min, ' + level + ' servers':<22} {rpc['total_per_min']} "
                  f"(gateway user {rpc['by_user_per_min'].get('gateway', 0)}; {rpc['running']} ready)")
        for count, spawn in measured["spawns"].items():
            s, t = spawn["spawn"], spawn["stop"]
            print(f"{spawner:<14} {count + ' at once':<22} spawn: {s['failures']}/{s['n']} failed, p50 {s['p50']} s, "
                  f"p95 {s['p95']} s; stop: p50 {t['p50']} s, p95 {t['p95']} s")
    print(f"written: {out.relative_to(REPO)} and {out.with_suffix('.svg').name} ({document['seconds']} s)")


if __name__ == "__main__":
    main()
