"""Shared fixtures for the molecule verify step (pytest-testinfra).

Host tests get testinfra's `host` fixture through the molecule inventory.
Tests that act as the outside world (a browser, an ACME client, a Globus
client) run here on the controller and reach the test bed's containers by
their public names; `testbed_dns` maps those names to container addresses
inside this process only (no /etc/hosts change), so every client still
verifies TLS by name exactly as it would on the internet.

Verify runs on three pytest-xdist workers (`--dist loadgroup`, molecule.yml):
  - group "playbooks": tests that run site.yml or a role and assert what it
    changed (second converge, --check, nginx rollback, forced renewal), in
    order on one worker: nothing else changes files meanwhile;
  - group "hub": tests that restart the hub or cut its SSH to the cluster,
    and the tests that need both up (spawn, login, gate), in order on one
    worker;
  - group "gateway": the gateway role's tests, which submit and list their
    own Slurm jobs by one name prefix;
  - group "registry": the registry images' tests, which run the
    apptainer_images role with changed digests, one after another;
  - the rest (read-only checks of the hosts, and bad settings, which stop
    in the preflight before any change) wherever a worker is free.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "testbed"))

from hubclient import (  # noqa: E402  (the test bed client, shared with benchmarks/)
    HubUser,
    Testbed,
    browser_session,
    globus_login,
    public_names,
    public_roots,
)


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    # HPCGW_TESTBED picks another test bed (tests/testbed/dev-inventory).
    name = os.environ.get("HPCGW_TESTBED", "molecule")
    return Testbed(name=name, state_dir=REPO / ".testbed" / name)


@pytest.fixture(scope="session")
def testbed_dns(testbed: Testbed):
    """Resolve the test bed's public names to its containers, in this process."""
    with public_names(testbed) as addresses:
        yield addresses


@pytest.fixture
def trust_testbed_ca(testbed: Testbed, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Make `requests`-based clients trust only the test bed CA.

    The build machines export REQUESTS_CA_BUNDLE and friends, which requests
    prefers over a session's own `verify`: point them all at the test bed CA.
    """
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(var, str(testbed.ca_cert))
    return testbed.ca_cert


@pytest.fixture(scope="session")
def hub_host(request):
    """testinfra's view of the hub, for tests that are not parametrized by host."""
    import testinfra

    return testinfra.get_host(
        "ansible://hub.gateway.test", ansible_inventory=request.config.option.ansible_inventory
    )


@pytest.fixture(scope="session")
def public_ca_bundle(testbed: Testbed, testbed_dns, tmp_path_factory) -> pathlib.Path:
    """What a browser trusts here: pebble's root of this run and the test bed CA."""
    bundle = tmp_path_factory.mktemp("ca") / "public-roots.pem"
    bundle.write_text(public_roots(testbed))
    return bundle


@pytest.fixture
def browser(public_ca_bundle):
    """A fresh browser: keeps cookies, trusts only the public roots above."""
    with browser_session(public_ca_bundle) as session:
        yield session


@pytest.fixture
def login(browser, testbed):
    return lambda username: globus_login(browser, testbed, username)


@dataclass
class PlaybookRun:
    returncode: int
    output: str

    def recap(self, host: str) -> dict[str, int]:
        """The PLAY RECAP counters of one host (last recap in the output)."""
        plain = re.sub(r"\x1b\[[0-9;]*m", "", self.output)
        lines = [line for line in plain.splitlines() if line.startswith(host + " ")]
        assert lines, f"no recap for {host}:\n{self.output[-3000:]}"
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", lines[-1])}

    def recap_hosts(self) -> set[str]:
        """The hosts of the last PLAY RECAP (its `<host> : ok=...` lines only:
        stderr, appended after it, may name hosts in an error message)."""
        plain = re.sub(r"\x1b\[[0-9;]*m", "", self.output).rsplit("PLAY RECAP", 1)[-1]
        return set(re.findall(r"^(\S+)\s+:\s+ok=\d+", plain, flags=re.M))


@pytest.fixture(scope="session")
def run_playbook(request):
    """Run a playbook (a path in the repo, or absolute) against this scenario's inventory."""

    def run(playbook: str | pathlib.Path, *args: str, timeout: int = 900) -> PlaybookRun:
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        done = subprocess.run(
            ["ansible-playbook", "-i", request.config.option.ansible_inventory, str(REPO / playbook), *args],
            capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
        )
        return PlaybookRun(done.returncode, done.stdout + done.stderr)

    return run


@pytest.fixture
def hub_user(login, browser, testbed):
    def make(identity: str) -> HubUser:
        assert login(identity).status_code == 200
        return HubUser(browser, testbed, identity.split("@")[0])

    return make


@pytest.fixture(scope="session")
def cluster_host(testbed: Testbed):
    """The login node as root sees it (an HPC admin's inspection), through
    `docker exec`: whatever connection Ansible uses (root or the gateway
    account), tests read the real thing."""
    import testinfra

    return testinfra.get_host(f"docker://root@{testbed.container('cluster')}")


@pytest.fixture(scope="session")
def compute_host(testbed: Testbed):
    """A compute node as root sees it: `compute_host("compute1")` or
    `compute_host(1)`. Compute nodes are not in the inventory (a site's
    Ansible reaches only its login nodes); the Slurm node name is the
    container's (hpcgw-<bed>-<node>)."""
    import testinfra

    hosts = {}

    def get(node: str | int):
        name = f"compute{node}" if isinstance(node, int) else node
        assert re.fullmatch(r"compute[0-9]+", name), f"not a compute node: {name!r}"
        if name not in hosts:
            hosts[name] = testinfra.get_host(f"docker://root@{testbed.container(name)}")
        return hosts[name]

    return get


def job_node(cluster_host, job: str) -> str:
    """The Slurm node a running job is on (squeue %N)."""
    return cluster_host.check_output("squeue -h -j %s -o %%N", job)


@pytest.fixture
def job_host(cluster_host, compute_host):
    """The compute node a running job is on, as root sees it: where its
    notebook, its tunnel and its job folder in /tmp are."""
    return lambda job: compute_host(job_node(cluster_host, job))


def inventory_gateway_mode(inventory: str | None) -> str:
    """The login node's gateway_mode in the scenario's inventory (root when unset)."""
    if not inventory:
        return "root"
    done = subprocess.run(["ansible-inventory", "-i", inventory, "--host", "login.cluster.test"],
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout).get("gateway_mode", "root")


_MODES: dict[str | None, str] = {}


@pytest.fixture(scope="session")
def gateway_mode(request) -> str:
    """root or account: how this scenario's site.yml runs on the login node."""
    inventory = request.config.option.ansible_inventory
    return _MODES.setdefault(inventory, inventory_gateway_mode(inventory))


def root_pass_inventory() -> pathlib.Path | None:
    """The root-mode inventory the scenario's side effect converged with
    (molecule/default/playbooks/root-mode.yml leaves its path in the state
    folder's root-pass mark; down.yml removes it), or None."""
    mark = REPO / ".testbed" / os.environ.get("HPCGW_TESTBED", "molecule") / "root-pass"
    if not mark.is_file():
        return None
    inventory = pathlib.Path(mark.read_text().strip())
    assert inventory.is_dir(), f"{mark} names {inventory}, which is gone: remove the mark or run root-mode.yml again"
    return inventory


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "root_mode_only(reason): holds only in gateway_mode root; skipped in account mode "
                   "(the reason goes to docs/trust-model.md)")
    config.addinivalue_line("markers", "account_mode_only: tests of gateway_mode account; skipped in root mode")
    config.addinivalue_line(
        "markers", "root_pass: run again after the side effect switched the site to the root mode "
                   "(the verify after molecule's side_effect runs only these and the root_mode_only tests)")
    config.addinivalue_line("markers", "restarts_hub: restarts the hub (hub_steady): first in its xdist group")
    config.addinivalue_line("markers", "converges_site: runs site.yml on the whole site (hub_steady): last in its group")
    config.addinivalue_line("markers", "queue_wait_begins: starts a long queue wait: after the restarts of its group")
    config.addinivalue_line("markers", "queue_wait_ends: checks that long wait: at the end of its group")
    # The verify after the side effect: the site is in the root mode now, and
    # every test that runs a playbook or asks the inventory uses its copy.
    inventory = root_pass_inventory()
    if inventory is not None:
        config.option.ansible_inventory = str(inventory)
        # Its own JUnit report: the first verify's stays for its timings.
        xmlpath = getattr(config.option, "xmlpath", None)
        if xmlpath and xmlpath.endswith(".xml"):
            config.option.xmlpath = xmlpath[:-4] + "-root.xml"


def pytest_collection_modifyitems(config, items):
    # Within its xdist group (a worker runs a group in this order): the tests
    # that restart the hub first, test_site_converge's runs last. Both take
    # the hub_steady lock; in collection order the hub's worker waited about
    # 4 minutes for the converges (test_hub_restart_keeps_the_proxy_and_its_routes:
    # 246 s, of which 20 s its own).
    # test_queue.py's long queue wait begins after the restarts (a restart
    # would end it) and is checked last, so that it overlaps the group's tests.
    items.sort(key=lambda item: 0 if item.get_closest_marker("restarts_hub")
               else 1 if item.get_closest_marker("queue_wait_begins")
               else 4 if item.get_closest_marker("converges_site")
               else 3 if item.get_closest_marker("queue_wait_ends") else 2)
    if root_pass_inventory() is None:
        return
    keep = [item for item in items
            if item.get_closest_marker("root_pass") or item.get_closest_marker("root_mode_only")]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


def pytest_runtest_setup(item):
    root_only = item.get_closest_marker("root_mode_only")
    account_only = item.get_closest_marker("account_mode_only")
    if not (root_only or account_only):
        return
    inventory = item.config.option.ansible_inventory
    mode = _MODES.setdefault(inventory, inventory_gateway_mode(inventory))
    if root_only and mode != "root":
        pytest.skip(f"root mode only: {root_only.kwargs.get('reason', '')}")
    if account_only and mode != "account":
        pytest.skip("community-account mode only (gateway_mode: account)")


def slurm_jobs(cluster_host) -> dict[str, tuple[str, str, str]]:
    """The cluster's jobs: id -> (name, user, state)."""
    out = cluster_host.check_output("squeue -h -o '%i %j %u %T'")
    return {fields[0]: tuple(fields[1:4]) for fields in (line.split() for line in out.splitlines())}


def hub_jobs(cluster_host, prefix: str = "hpcgw-hub-") -> set[str]:
    """The hub's live jobs (RUNNING or PENDING) by id. Other workers' tests
    submit and end jobs of their own meanwhile (test_gateway's hpcgw-verify-*):
    a test compares only these."""
    return {job for job, (name, _, state) in slurm_jobs(cluster_host).items()
            if name.startswith(prefix) and state in ("RUNNING", "PENDING")}


@contextlib.contextmanager
def worker_lock(name: str):
    """A lock across xdist workers (and beds of one checkout): .testbed/<name>.lock."""
    lock = REPO / ".testbed" / f"{name}.lock"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def hub_steady():
    """Held by a test while it restarts the hub, and by test_site_converge
    while its second converge and check run (a restart meanwhile makes the
    hub's start task report a change)."""
    return worker_lock("hub-steady")

