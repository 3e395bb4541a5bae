"""The hub's key runs nothing but the gate's commands, and a notebook's token
cannot set spawner attributes (the upstream batchspawner hole)."""

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
