#!/usr/bin/env python3
"""Spawn and stop latency of notebook servers on a running test bed.

Measures, through the public https URL (nginx, the proxy, the hub, the gate,
Slurm, the job wrapper and the tunnel, all real):
  - spawn: POST /hub/api/users/{u}/server until the server is ready;
    10 in a row for one user, then 5 users at once;
  - stop: DELETE until the hub reports the server gone (the spawner first
    waits for Slurm to confirm the job is gone).
Once per --profile given (default: the hub's default profile), with this
project's spawner settings; then, unless --no-stock, with stock batchspawner's
(a new SSH connection per command, 1 s between stop checks), switched by a
conf.d fragment on the hub and a hub restart. On the test bed, profile
`compute` runs on compute1 (tunnel straight to the hub) and `private` on
compute2 (no route to the hub: the tunnel goes through the login node).

Usage (after `make demo`, or any converged test bed):
    .venv/bin/python benchmarks/spawn_latency.py [--testbed demo] [--rounds 10] [--users 5]
        [--profile compute --profile private] [--no-stock]
Prints a table and writes benchmarks/results/<date>.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "testbed"))

from hubclient import HubUser, Testbed, browser_session, globus_login, public_names, public_roots  # noqa: E402

STOCK = "c.GatewaySpawner.reuse_ssh_connection = False\nc.GatewaySpawner.stop_poll_interval = 1.0\n"
QUIET_LOAD = 0.75 * (os.cpu_count() or 1)  # below three quarters of the cores busy
STOCK_FRAGMENT = "/etc/jupyterhub/conf.d/90-benchmark-stock-settings.py"


def hub_exec(testbed: Testbed, *argv: str) -> None:
    subprocess.run(["docker", "exec", testbed.container("hub"), *argv], check=True, capture_output=True)


def restart_hub(testbed: Testbed, user: HubUser) -> None:
    hub_exec(testbed, "systemctl", "restart", "jupyterhub")
    for _ in range(240):
        try:
            if user.api("GET", "/").status_code == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit("the hub did not come back")


def timed_spawn(user: HubUser, options: dict) -> float:
    start = time.monotonic()
    reply = user.start(options=options, timeout=300)
    if reply.status_code >= 400:
        raise SystemExit(f"spawn of {user.name} refused: {reply.status_code} {reply.text}")
    return time.monotonic() - start


def timed_stop(user: HubUser) -> float:
    start = time.monotonic()
    user.stop(timeout=120)
    return time.monotonic() - start


def summary(values: list[float]) -> dict:
    return {"n": len(values), "min": round(min(values), 2), "median": round(statistics.median(values), 2),
            "max": round(max(values), 2), "all": [round(v, 2) for v in values]}


def measure(users: list[HubUser], rounds: int, options: dict) -> dict:
    # The load average says whether the figures are comparable: on this kind
    # of 2-core machine a notebook's start doubles beside a molecule run.
    load_before = os.getloadavg()[0]
    spawns, stops = [], []
    pause = random.Random(rounds)
    for _ in range(rounds):
        spawns.append(timed_spawn(users[0], options))
        stops.append(timed_stop(users[0]))
        # Slurm 24.11 starts a batch job on the 1-s tick of slurmctld's
        # background loop (or when another job's epilog completes): a random
        # pause keeps the rounds from locking onto that tick's phase.
        time.sleep(pause.uniform(0, 1))
    with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
        together = list(pool.map(lambda user: timed_spawn(user, options), users))
    with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
        together_stops = list(pool.map(timed_stop, users))
    return {"spawn_in_a_row": summary(spawns), "stop_in_a_row": summary(stops),
            "spawn_at_once": summary(together), "stop_at_once": summary(together_stops),
            "load_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testbed", default="demo", help="test bed name: hpcgw-<name>-* containers (default demo)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--users", type=int, default=5, choices=range(1, 6), help="1 to 5 (bench1..bench5)")
    parser.add_argument("--profile", action="append", default=[],
                        help="a spawner profile to measure (repeatable; default: the hub's default profile)")
    parser.add_argument("--no-stock", action="store_true", help="skip the run with stock batchspawner's settings")
    args = parser.parse_args()

    testbed = Testbed.discover(args.testbed, REPO / ".testbed" / args.testbed)
    with public_names(testbed), tempfile.NamedTemporaryFile("w", suffix=".pem") as roots:
        roots.write(public_roots(testbed))
        roots.flush()
        users = []
        for i in range(1, args.users + 1):  # the stand-in's identities bench1..bench5
            browser = browser_session(pathlib.Path(roots.name))
            if globus_login(browser, testbed, f"bench{i}@uchicago.edu").status_code != 200:
                raise SystemExit(f"bench{i}@uchicago.edu could not log in")
            users.append(HubUser(browser, testbed, f"bench{i}"))

        results = {}
        try:
            for profile in args.profile or [""]:
                options = {"profile": profile} if profile else {}
                results["gateway" + (f" {profile}" if profile else "")] = measure(users, args.rounds, options)
            if not args.no_stock:
                hub_exec(testbed, "sh", "-c", f"printf '%s' '{STOCK}' > {STOCK_FRAGMENT}")
                restart_hub(testbed, users[0])
                results["stock-batchspawner-settings"] = measure(users, args.rounds, {})
        finally:
            if not args.no_stock:
                hub_exec(testbed, "rm", "-f", STOCK_FRAGMENT)
                restart_hub(testbed, users[0])

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = REPO / "benchmarks" / "results" / f"{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"testbed": args.testbed, "rounds": args.rounds, "users": args.users,
                               "results": results}, indent=2))
    print(f"{'settings':<30} {'measure':<16} {'min':>6} {'median':>7} {'max':>6}  (seconds)")
    for settings, measures in results.items():
        for name, s in measures.items():
            if name != "load_1min":
                print(f"{settings:<30} {name:<16} {s['min']:>6} {s['median']:>7} {s['max']:>6}")
        load = measures["load_1min"]
        print(f"{settings:<30} load average (1 min) {load['before']} before, {load['after']} after")
    if next(iter(results.values()))["load_1min"]["before"] > QUIET_LOAD:
        print(f"warning: the machine was busy before the run (1-min load above {QUIET_LOAD:.1f} on {os.cpu_count()} cores);"
              " these figures are not comparable with a quiet machine's")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
