"""The hub's key runs nothing but the gate's commands: it starts only
notebooks the cluster's own settings allow, and sees or cancels only this
hub's jobs; a notebook's token cannot set spawner attributes (the upstream
batchspawner hole)."""

import json
import time

import pytest

# Needs the hub up and its SSH to the cluster: with the tests that restart or cut them (conftest.py).
pytestmark = pytest.mark.xdist_group("hub")

testinfra_hosts = ["hub.gateway.test"]

SSH = (
    "runuser -u jupyterhub -- timeout 20 ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=yes "
    "-o UserKnownHostsFile=/etc/jupyterhub/cluster_known_hosts -o IdentitiesOnly=yes "
    "-i /var/lib/jupyterhub/.ssh/hpcgw_gateway_ed25519 -o ControlPath=none gateway@login.cluster.test "
)


@pytest.mark.parametrize(
    "command",
    ["id", "sbatch --wrap id", "submit; id", "status 1;id", "status $(id)", "cancel 1 2", "list ../x", "scancel -u gateway"],
)
def test_the_hub_key_runs_only_the_gate(host, command):
    result = host.run(SSH + "%s", command)
    assert result.rc == 126, (result.stdout, result.stderr)
    assert "uid=" not in result.stdout


def test_the_hub_key_gets_no_shell_forwarding_or_sftp(host):
    assert host.run(SSH.replace("gateway@", "-tt gateway@")).rc != 0
    forward = host.run(SSH.replace("gateway@", "-N -o ExitOnForwardFailure=yes -L 127.0.0.1:18998:127.0.0.1:22 gateway@"))
    assert forward.rc != 0


def test_batchspawners_attribute_handler_is_not_served(host):
    reply = host.run("curl -s -o /dev/null -w '%{http_code}' -X POST -d '{\"batch_cancel_cmd\": \"id\"}' "
                     "http://127.0.0.1:8081/hub/api/batchspawner")
    assert reply.stdout == "404"


def test_the_port_callback_refuses_tokens_and_bodies_that_are_not_a_servers(host):
    # No token at all; then a bad body: both refused before anything is looked up.
    anonymous = host.check_output("curl -s -o /dev/null -w '%{http_code}' -X POST -d '{\"port\": 40000}' "
                                  "http://127.0.0.1:8081/hub/api/hpcgw/port")
    assert anonymous == "403"


# -- a stolen hub key against the real gate (issue 15) --------------------------
# What the hub's key can send is what anyone holding it can send: these run
# over ssh with the hub's own key, as in test_the_hub_key_runs_only_the_gate.
AUTHORIZED_KEYS = "/home/gateway/.ssh/authorized_keys"
HOSTILE = (
    "#!/bin/bash\n#SBATCH --job-name=hpcgw-hub-u-00000000000000000bad\n"
    f"#SBATCH --output={AUTHORIZED_KEYS}\n#SBATCH --open-mode=append\n"
    "echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostileHostileHostileHostileHostileHostile1 attacker'\n"
    f"echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostileHostileHostileHostileHostileHostile2' >> {AUTHORIZED_KEYS}\n"
    "touch /home/gateway/pwned\n"
)
REQUEST = {"user_id": "u-00000000000000000bad", "profile": "short", "image": "notebook", "minutes": 1, "cpus": 1,
           "memory_mb": 64, "gpus": 0, "env": {}}


def gateway_jobs(cluster_host) -> str:
    return cluster_host.check_output("squeue -h -u gateway -o '%%i %%j'")


def send(host, command, stdin):
    return host.run("printf '%%s' %s | " + SSH + "%s", stdin, command)


@pytest.mark.parametrize(
    "body",
    [
        HOSTILE,
        json.dumps({**REQUEST, "output": AUTHORIZED_KEYS}),
        json.dumps({**REQUEST, "user_id": "../../.ssh/authorized_keys"}),
        json.dumps({**REQUEST, "env": {"JUPYTERHUB_USER": "x\n#SBATCH --output=" + AUTHORIZED_KEYS}}),
        json.dumps({**REQUEST, "env": {"BASH_ENV": "/home/gateway/.ssh/x"}}),
        json.dumps({**REQUEST, "profile": "compute", "minutes": 100000}),
    ],
    ids=["batch-script", "output-key", "user-id-path", "env-newline", "env-name", "over-limit"],
)
def test_a_stolen_hub_key_cannot_submit_a_hostile_job(host, cluster_host, body):
    before = cluster_host.file(AUTHORIZED_KEYS).content_string
    jobs = gateway_jobs(cluster_host)
    result = send(host, "submit", body)
    assert result.rc == 126, (result.stdout, result.stderr)
    assert "refused" in result.stderr and result.stdout == ""
    time.sleep(2)  # a job, had one started, would have written by now
    assert gateway_jobs(cluster_host) == jobs
    assert cluster_host.file(AUTHORIZED_KEYS).content_string == before
    assert not cluster_host.file("/home/gateway/pwned").exists


@pytest.fixture
def site_job(cluster_host):
    """A job of the gateway account that the hub did not start (an image build, a site's own job)."""
    job_id = cluster_host.check_output(
        "runuser -u gateway -- sbatch --parsable --job-name=site-image-build --partition=short --time=5 "
        "--output=/dev/null --wrap 'sleep 300'")
    yield job_id
    cluster_host.run("scancel %s", job_id)


def test_a_stolen_hub_key_cannot_cancel_the_accounts_other_jobs(host, cluster_host, site_job):
    result = host.run(SSH + "%s", f"cancel {site_job}")
    assert (result.rc, result.stdout) == (0, "")
    time.sleep(2)
    assert cluster_host.check_output("squeue -h -j %s -o %%T", site_job) in {"PENDING", "CONFIGURING", "RUNNING"}


def test_a_stolen_hub_key_learns_nothing_of_the_accounts_other_jobs(host, site_job):
    foreign = host.run(SSH + "%s", f"status {site_job}")
    absent = host.run(SSH + "%s", "status 999999999")
    assert (foreign.rc, foreign.stdout, foreign.stderr) == (absent.rc, absent.stdout, absent.stderr) == (0, "GONE\n", "")
    listed = host.run(SSH + "%s", "list hpcgw-hub")
    assert listed.rc == 0 and site_job not in listed.stdout
    assert host.run(SSH + "%s", "list site").stdout == ""
