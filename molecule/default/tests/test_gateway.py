"""The gateway role on the cluster's login node (docs/spawning.md): the layout
of gateway_root, the tunnel key, the hub's key limited to the gate, the
notebook environment, and the gate driving the site's real Slurm as the
gateway account."""

import json
import time

import pytest

# Its tests submit real jobs named hpcgw-verify-* and list them by that prefix:
# one xdist worker, in order, so one test never sees another's job (conftest.py).
pytestmark = pytest.mark.xdist_group("gateway")

testinfra_hosts = ["login.cluster.test"]

ROOT = "/home/gateway/hpcgw"
GATE = f"{ROOT}/bin/hpcgw-gate"
JOB = f"{ROOT}/bin/hpcgw-job"
TUNNEL_KEY = "/home/gateway/.ssh/hpcgw_tunnel_ed25519"
HUB = "hub.gateway.test"


def as_gateway(host, command, *args):
    return host.run("runuser -u gateway -- " + command, *args)


def gate(host, command, stdin=""):
    """The gate as the hub's key runs it: as gateway, SSH_ORIGINAL_COMMAND set."""
    return host.run(
        "printf '%%s' %s | runuser -u gateway -- env -i PATH=/usr/local/bin:/usr/bin:/bin "
        "SSH_ORIGINAL_COMMAND=%s %s",
        stdin, command, GATE,
    )


def wait_gone(host, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = gate(host, f"status {job_id}")
        assert status.rc == 0, status.stderr
        if status.stdout.strip() == "GONE":
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still known to Slurm: {status.stdout}")


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
def test_owners_and_modes(host, path, owner, mode):
    item = host.file(path)
    assert item.exists
    assert (item.user, item.group, item.mode) == (owner, owner, mode)


def test_a_listed_users_folder_is_made_before_the_first_notebook(host):
    # gateway_user_folders: [ivan] (molecule's host_vars); the name is the hub's.
    from hpcgw_hub.spawner import user_id

    folder = host.file(f"{ROOT}/users/{user_id('ivan')}")
    assert folder.is_directory
    assert (folder.user, folder.group, folder.mode) == ("gateway", "gateway", 0o700)


@pytest.mark.parametrize("path", [GATE, JOB, f"{ROOT}/bin", f"{ROOT}/etc/gateway.json", f"{ROOT}/etc/hub_known_hosts",
                                  f"{ROOT}/etc/images.json", f"{ROOT}/images", f"{ROOT}/images/notebook.sif"])
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
    assert settings == {
        "hub_host": HUB, "hub_ssh_port": 22, "hub_api_port": 8081,
        "tunnel_user": "tunnelbot", "tunnel_key": TUNNEL_KEY,
        "known_hosts": f"{ROOT}/etc/hub_known_hosts", "users_dir": f"{ROOT}/users",
        "start_timeout": 120,
    }


def test_the_pinned_host_keys_are_the_hubs(host, hub_host):
    pinned = host.file(f"{ROOT}/etc/hub_known_hosts").content_string.splitlines()
    for kind in ("ed25519", "ecdsa", "rsa"):
        key_type, key = hub_host.file(f"/etc/ssh/ssh_host_{kind}_key.pub").content_string.split()[:2]
        assert f"{HUB} {key_type} {key}" in pinned


def test_the_tunnel_verifies_the_real_hub_with_the_pinned_keys(host):
    # Host keys are checked before authentication: whatever tunnelbot allows,
    # ssh must say the hub is known and matches.
    result = as_gateway(
        host,
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


def test_the_gate_submits_reports_lists_and_cancels_a_real_job(host):
    script = "#!/bin/sh\n#SBATCH --job-name=hpcgw-verify-gate\n#SBATCH --output=/dev/null\nexec sleep 300\n"
    submitted = gate(host, "submit", script)
    assert submitted.rc == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert job_id.isdigit()
    try:
        status = gate(host, f"status {job_id}")
        assert status.rc == 0, status.stderr
        state, node, reason = status.stdout.strip().split(" ", 2)
        assert state in {"PENDING", "CONFIGURING", "RUNNING"}
        assert node and reason
        listed = gate(host, "list hpcgw-verify")
        assert listed.rc == 0, listed.stderr
        assert [line.rsplit(" ", 1)[0] for line in listed.stdout.splitlines()] == [f"{job_id} hpcgw-verify-gate"]
        # The job runs as the gateway account.
        assert host.check_output("squeue -h -j %s -o %%u", job_id) == "gateway"
    finally:
        cancelled = gate(host, f"cancel {job_id}")
    assert (cancelled.rc, cancelled.stdout) == (0, "")
    wait_gone(host, job_id)
    assert gate(host, f"cancel {job_id}").rc == 0  # cancelling a gone job is not an error


def test_the_wrapper_in_a_real_job_refuses_a_bad_user_id(host):
    log = f"{ROOT}/logs/u-bad.%j.log"
    script = (f"#!/bin/bash\n#SBATCH --job-name=hpcgw-verify-wrapper\n#SBATCH --output={log}\n"
              f"#SBATCH --chdir={ROOT}\nexport HPCGW_USER_ID=../../etc\nexec {JOB}\n")
    submitted = gate(host, "submit", script)
    assert submitted.rc == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    wait_gone(host, job_id)
    path = log.replace("%j", job_id)
    try:
        content = host.file(path).content_string
        assert "HPCGW_USER_ID must match" in content
        assert host.file(path).user == "gateway"
    finally:
        host.run("rm -f %s", path)
