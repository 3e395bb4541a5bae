"""The gateway role on the cluster's login node (docs/spawning.md): the layout
of gateway_root, the tunnel key, the hub's key limited to the gate, the
users' folders, and the gate driving the site's real Slurm as the gateway
account."""

import json
import time

import pytest

# Its tests submit real jobs named hpcgw-verify-* and list them by that prefix:
# one xdist worker, in order, so one test never sees another's job (conftest.py).
pytestmark = [pytest.mark.xdist_group("gateway"), pytest.mark.root_pass]  # and in the root mode (conftest)


@pytest.fixture
def host(cluster_host):
    """The login node, as root through docker (conftest.cluster_host): the
    same view in root and in community-account mode."""
    return cluster_host


ROOT = "/home/gateway/hpcgw"
GATE = f"{ROOT}/bin/hpcgw-gate"
JOB = f"{ROOT}/bin/hpcgw-job"
TUNNEL_KEY = "/home/gateway/.ssh/hpcgw_tunnel_ed25519"
HUB = "hub.gateway.test"


def as_gateway(host, command, *args):
    return host.run("runuser -u gateway -- " + command, *args)


def gate(host, command, stdin="", gate=GATE):
    """The gate as the hub's key runs it: as gateway, SSH_ORIGINAL_COMMAND set."""
    return host.run(
        "printf '%%s' %s | runuser -u gateway -- env -i PATH=/usr/local/bin:/usr/bin:/bin "
        "SSH_ORIGINAL_COMMAND=%s %s",
        stdin, command, gate,
    )


def wait_gone(host, job_id, timeout=60, gate_path=GATE, squeue=False):
    """Until Slurm no longer lists the job (through a gate, or squeue for a job not a hub's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if squeue:
            listed = host.run("squeue -h -j %s -o %%T", job_id).stdout.strip()
        else:
            status = gate(host, f"status {job_id}", gate=gate_path)
            assert status.rc == 0, status.stderr
            listed = "" if status.stdout.strip() == "GONE" else status.stdout
        if not listed:
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still known to Slurm: {listed}")


@pytest.mark.parametrize(
    ("path", "owner", "mode"),
    [
        (ROOT, "root", 0o755),
        (f"{ROOT}/bin", "root", 0o755),
        (f"{ROOT}/etc", "root", 0o755),
        (f"{ROOT}/users", "gateway", 0o700),
        (f"{ROOT}/logs", "gateway", 0o700),
        (GATE, "root", 0o755),
        (JOB, "root", 0o755),
        (f"{ROOT}/etc/gateway.json", "root", 0o644),
        (f"{ROOT}/etc/hub_known_hosts", "root", 0o644),
        (TUNNEL_KEY, "gateway", 0o600),
        ("/home/gateway/.ssh", "gateway", 0o700),
    ],
    ids=lambda value: value if isinstance(value, str) else oct(value),
)
def test_owners_and_modes(host, gateway_mode, path, owner, mode):
    # In community-account mode the account owns what root owns in root mode.
    owner = "gateway" if gateway_mode == "account" else owner
    item = host.file(path)
    assert item.exists
    assert (item.user, item.group, item.mode) == (owner, owner, mode)


def test_a_listed_users_folder_is_made_before_the_first_notebook(host):
    # gateway_user_folders: [ivan] (molecule's host_vars); the name is the hub's.
    from hpcgw_hub.spawner import user_id

    folder = host.file(f"{ROOT}/users/{user_id('ivan')}")
    assert folder.is_directory
    assert (folder.user, folder.group, folder.mode) == ("gateway", "gateway", 0o700)


@pytest.mark.parametrize("path", [GATE, JOB, f"{ROOT}/bin/hpcgw-hop", f"{ROOT}/bin/hpcgw_rules.py", f"{ROOT}/bin",
                                  f"{ROOT}/etc/gateway.json",
                                  f"{ROOT}/etc/hub_known_hosts", f"{ROOT}/etc/login_known_hosts",
                                  f"{ROOT}/etc/images.json", f"{ROOT}/images", f"{ROOT}/images/notebook.sif"])
@pytest.mark.root_mode_only(reason="in account mode the account owns the gate, wrapper, settings and images: "
                                   "a notebook that escaped its container could change them (docs/trust-model.md)")
def test_what_root_wrote_is_not_writable_by_gateway(host, path):
    assert as_gateway(host, "test -r %s", path).rc == 0
    assert as_gateway(host, "test -w %s", path).rc == 1


def test_the_tunnel_key_is_an_ed25519_pair_of_gateway(host):
    public = host.file(TUNNEL_KEY + ".pub").content_string
    assert public.startswith("ssh-ed25519 ")
    derived = host.check_output("ssh-keygen -y -f %s", TUNNEL_KEY)
    assert derived.split()[:2] == public.split()[:2]


def test_the_wrapper_settings(host):
    settings = json.loads(host.file(f"{ROOT}/etc/gateway.json").content_string)
    profiles = settings.pop("profiles")
    assert settings == {
        "hub_host": HUB, "hub_ssh_port": 22, "hub_api_port": 8081,
        "tunnel_user": "tunnelbot", "tunnel_key": TUNNEL_KEY,
        "known_hosts": f"{ROOT}/etc/hub_known_hosts", "users_dir": f"{ROOT}/users",
        "start_timeout": 120, "job_name_prefix": "hpcgw-hub",
        # The per-user log folders and storage cap (test_logs.py), the Slurm field naming each job's person (test_acct.py).
        "logs_dir": f"{ROOT}/logs", "user_storage_cap_mb": 10240, "attribution_field": "comment",
        # compute2's tunnels hop through the login node (gateway_tunnel_via_login).
        "via_login": {"nodes": ["compute2"], "host": "login.cluster.test", "port": 22, "user": "gateway",
                      "known_hosts": f"{ROOT}/etc/login_known_hosts"},
    }
    # The gate's copy of the hub's profiles (molecule's host_vars of the hub).
    assert [(p["name"], p["partition"], p["max_minutes"], p["images"]) for p in profiles] == [
        ("compute", "compute", 480, ["notebook", "notebook-marked"]),
        ("short", "short", 60, ["notebook", "notebook-marked"]),
        ("private", "private", 60, ["notebook"]),
        ("members", "compute", 60, ["notebook"]),
        ("queue-short", "busy", 10, ["notebook"]),
        ("queue-long", "busy", 10, ["notebook"]),
    ]
    # Who may use it, and the Slurm words the gate sets (test_groups.py).
    assert (profiles[3]["groups"], profiles[3]["constraint"]) == (["members"], "hpcgw-members")


def test_the_pinned_host_keys_are_the_hubs(host, hub_host):
    # The host keys the hardened sshd offers: Ed25519 and RSA, no ECDSA (test_hub_sshd.py).
    pinned = host.file(f"{ROOT}/etc/hub_known_hosts").content_string.splitlines()
    for kind in ("ed25519", "rsa"):
        key_type, key = hub_host.file(f"/etc/ssh/ssh_host_{kind}_key.pub").content_string.split()[:2]
        assert f"{HUB} {key_type} {key}" in pinned
    assert not [line for line in pinned if "ecdsa" in line]


# Connects with the tunnel key: kept apart from test_hub_sshd.py's cap tests (group "hub").
@pytest.mark.xdist_group("hub")
def test_the_tunnel_verifies_the_real_hub_with_the_pinned_keys(compute_host):
    # From a compute node, where jobs open their tunnels (the pinned keys are
    # on the shared gateway_root). Host keys are checked before
    # authentication: whatever tunnelbot allows, ssh must say the hub is
    # known and matches.
    result = as_gateway(
        compute_host("compute1"),
        "timeout 20 ssh -v -F none -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s "
        "-o IdentitiesOnly=yes -i %s tunnelbot@%s true",
        f"{ROOT}/etc/hub_known_hosts", TUNNEL_KEY, HUB,
    )
    assert "is known and matches" in result.stderr, result.stderr
    assert "Host key verification failed" not in result.stderr


def test_the_hubs_key_may_run_only_the_gate_from_the_hub(host, testbed):
    authorized = host.file("/home/gateway/.ssh/authorized_keys")
    assert (authorized.user, authorized.mode) == ("gateway", 0o600)
    lines = [line for line in authorized.content_string.splitlines() if "hpcgw-gate" in line]
    assert len(lines) == 1, lines
    options, key_type, _key = lines[0].split()[:3]
    assert options == f'restrict,from="{testbed.address("hub")}",command="{GATE}"'
    assert key_type.startswith(("ssh-ed25519", "ecdsa-", "ssh-rsa"))


@pytest.mark.parametrize("command", ["id", "status 1;id", "status $(id)", "sbatch --wrap id", ""])
def test_the_gate_refuses_anything_else(host, command):
    result = gate(host, command)
    assert result.rc == 126
    assert "uid=" not in result.stdout
    assert "refused" in result.stderr


# On the shared /home: the jobs it submits run on a compute node.
VERIFY = "/home/hpcgw-verify"


@pytest.fixture
def verify_gate(host):
    """A copy of the installed gate in a gateway folder of its own: job name
    prefix hpcgw-verify (so the hub's tests never count its jobs), the real
    profiles and images, and a bin/hpcgw-job that only sleeps."""
    settings = json.loads(host.file(f"{ROOT}/etc/gateway.json").content_string)
    settings["job_name_prefix"] = "hpcgw-verify"
    host.run("rm -rf %s", VERIFY)
    host.check_output("install -d -m 0755 %s %s/bin %s/etc && install -d -o gateway -m 0700 %s/logs",
                      VERIFY, VERIFY, VERIFY, VERIFY)
    host.check_output("install -m 0755 %s %s/bin/hpcgw-gate && install -m 0644 %s/bin/hpcgw_rules.py %s/bin/"
                      " && install -m 0644 %s/etc/images.json %s/etc/", GATE, VERIFY, ROOT, VERIFY, ROOT, VERIFY)
    host.check_output("printf '%%s' %s > %s/etc/gateway.json", json.dumps(settings), VERIFY)
    host.check_output("printf '#!/bin/sh\\nexec sleep 300\\n' > %s/bin/hpcgw-job && chmod 0755 %s/bin/hpcgw-job",
                      VERIFY, VERIFY)
    yield f"{VERIFY}/bin/hpcgw-gate"
    host.run("rm -rf %s", VERIFY)


def request(**change):
    body = {"user_id": "u-000000000000000000e1", "profile": "short", "image": "notebook", "minutes": 2,
            "cpus": 1, "memory_mb": 64, "gpus": 0, "env": {"JUPYTERHUB_USER": "verify"}}
    return json.dumps({**body, **change})


def test_the_gate_submits_reports_lists_and_cancels_a_real_job(host, verify_gate):
    submitted = gate(host, "submit", request(), gate=verify_gate)
    assert submitted.rc == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert job_id.isdigit()
    try:
        status = gate(host, f"status {job_id}", gate=verify_gate)
        assert status.rc == 0, status.stderr
        state, node, reason = status.stdout.strip().split(" ", 2)
        assert state in {"PENDING", "CONFIGURING", "RUNNING"}
        assert node and reason
        listed = gate(host, "list hpcgw-verify", gate=verify_gate)
        assert listed.rc == 0, listed.stderr
        assert [" ".join(line.split(" ")[:2]) for line in listed.stdout.splitlines()] == [
            f"{job_id} hpcgw-verify-u-000000000000000000e1"]
        # The job runs as the gateway account, with what the gate chose.
        assert host.check_output("squeue -h -j %s -o '%%u %%P %%l %%C'", job_id).split() == ["gateway", "short", "2:00",
                                                                                             "1"]
        # Another hub's gate (the installed one, prefix hpcgw-hub) neither sees nor cancels it.
        assert gate(host, f"status {job_id}").stdout.strip() == "GONE"
        assert gate(host, f"cancel {job_id}").rc == 0
        assert host.check_output("squeue -h -j %s -o %%T", job_id) in {"PENDING", "CONFIGURING", "RUNNING"}
    finally:
        cancelled = gate(host, f"cancel {job_id}", gate=verify_gate)
    assert (cancelled.rc, cancelled.stdout) == (0, "")
    wait_gone(host, job_id, gate_path=verify_gate)
    assert gate(host, f"cancel {job_id}", gate=verify_gate).rc == 0  # cancelling a gone job is not an error


@pytest.mark.parametrize("user_id", ["../../etc", "u-bad", "u-000000000000000000E1"])
def test_the_gate_refuses_a_bad_user_id(host, verify_gate, user_id):
    before = host.check_output("squeue -h -u gateway -o %%i")
    refused = gate(host, "submit", request(user_id=user_id), gate=verify_gate)
    assert refused.rc == 126 and "user_id must be" in refused.stderr
    assert host.check_output("squeue -h -u gateway -o %%i") == before


def test_the_wrapper_in_a_real_job_refuses_a_bad_user_id(host):
    # Behind the gate, the wrapper checks again (a job the account submits itself).
    log = f"{ROOT}/logs/u-bad.%j.log"
    script = (f"#!/bin/bash\n#SBATCH --job-name=hpcgw-verify-wrapper\n#SBATCH --output={log}\n"
              f"#SBATCH --chdir={ROOT}\nexport HPCGW_USER_ID=../../etc\nexec {JOB}\n")
    submitted = host.run("printf '%%s' %s | runuser -u gateway -- sbatch --parsable", script)
    assert submitted.rc == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    wait_gone(host, job_id, squeue=True)
    path = log.replace("%j", job_id)
    try:
        content = host.file(path).content_string
        assert "HPCGW_USER_ID must match" in content
        assert host.file(path).user == "gateway"
    finally:
        host.run("rm -f %s", path)
