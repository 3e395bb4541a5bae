"""The cluster fixture is a working HPC site of a real cluster's shape: a login
node (slurmctld, sshd; no slurmd) and two compute nodes (slurmd), one of them
only on a private network with no route to the hub; /home shared by all
three as NFS would, one munge key. Slurm runs jobs for `gateway` on the
compute nodes, and Apptainer builds (--fakeroot) on the login node images
that the compute nodes run.

Everything is looked at as root through `docker exec` (conftest's
cluster_host and compute_host), not through Ansible's connection."""

import textwrap
import uuid

import pytest

SCRATCH_DEF = textwrap.dedent(
    """\
    Bootstrap: scratch

    %files
        /bin/busybox /bin/busybox
        /bin/busybox /bin/sh

    %post
        /bin/busybox --install -s /bin
        printf 'PRETTY_NAME="hpcgw test bed image"\\nID=hpcgw-testbed\\n' > /etc/os-release
    """
)

NODES = ("compute1", "compute2")
# Which partition runs on which node (tests/testbed/testbed.yml).
PARTITIONS = {"compute": "compute1", "short": "compute1", "private": "compute2"}


def as_gateway(host, command, *args):
    return host.run("runuser -u gateway -- " + command, *args)


def reaches(host, address: str, port: int) -> bool:
    """Whether a TCP connection from `host` to address:port opens within 5 s."""
    return host.run("timeout 5 bash -c %s", f"exec 3<>/dev/tcp/{address}/{port}").rc == 0


def test_the_compute_nodes_are_up_and_the_login_node_is_no_slurm_node(cluster_host):
    lines = cluster_host.check_output("sinfo --noheader --Node --format='%%N %%T'").splitlines()
    states = dict(line.split() for line in lines)
    assert sorted(states) == list(NODES)
    # Up: not down, drained, failing or unreachable ("*" suffix) in any form.
    bad = ("down", "drain", "fail", "inval", "unk", "not_responding", "power")
    assert not [s for s in states.values() if s.endswith("*") or s.startswith(bad)], states
    assert cluster_host.run("scontrol show node login").rc != 0


def test_partitions_map_to_their_nodes(cluster_host):
    lines = cluster_host.check_output("sinfo --noheader --format='%%R %%N'").splitlines()
    # test_queue.py makes the partition busy at run time (scontrol create).
    assert {name: nodes for name, nodes in map(str.split, lines) if name != "busy"} == PARTITIONS


def test_daemons_by_role(cluster_host, compute_host):
    assert cluster_host.run("pgrep -x slurmctld").rc == 0
    assert cluster_host.run("pgrep -x sshd").rc == 0
    assert cluster_host.run("pgrep -x slurmd").rc == 1
    for node in NODES:
        assert compute_host(node).run("pgrep -x slurmd").rc == 0
        assert compute_host(node).run("pgrep -x slurmctld").rc == 1


@pytest.mark.parametrize("partition", sorted(PARTITIONS))
def test_a_job_runs_as_gateway_on_its_partitions_compute_node(cluster_host, partition):
    out = "/home/gateway/testbed-fixture-%j.out"
    job = as_gateway(cluster_host, "sbatch --parsable --wait --partition=%s --output=%s --wrap %s",
                     partition, out, "id -un; hostname")
    assert job.rc == 0, job.stderr
    job_id = job.stdout.strip()
    assert job_id.isdigit()
    # Written on the compute node, read on the login node: the shared /home.
    result = cluster_host.file(out.replace("%j", job_id))
    try:
        assert result.user == "gateway"
        assert result.content_string.split() == ["gateway", PARTITIONS[partition]]
    finally:
        cluster_host.run("rm -f %s", out.replace("%j", job_id))


def test_home_is_one_file_system_on_all_nodes(cluster_host, compute_host):
    words = uuid.uuid4().hex
    path = f"/home/gateway/testbed-shared-{words}"
    writer = compute_host("compute2")
    assert as_gateway(writer, "sh -c %s", f"echo {words} > {path}").rc == 0
    try:
        for host in (cluster_host, compute_host("compute1")):
            seen = host.file(path)
            assert seen.content_string.strip() == words
            assert seen.user == "gateway"
        ids = {host.check_output("id gateway") for host in (cluster_host, *map(compute_host, NODES))}
        assert len(ids) == 1, ids
    finally:
        writer.run("rm -f %s", path)


def test_one_munge_key_a_credential_made_on_a_compute_node_is_good_on_the_login_node(cluster_host, compute_host):
    keys = {host.check_output("sha256sum /etc/munge/munge.key").split()[0]
            for host in (cluster_host, *map(compute_host, NODES))}
    assert len(keys) == 1
    credential = compute_host("compute2").check_output("munge -n")
    assert cluster_host.run("printf '%%s' %s | unmunge", credential).rc == 0


def test_only_compute2_has_no_route_to_the_hub(testbed, cluster_host, compute_host):
    hub, services = testbed.address("hub"), testbed.address("services")
    private_login = testbed.address("cluster", network="private")
    # The same probes succeed from compute1 and the login node: the hub's sshd answers.
    assert reaches(compute_host("compute1"), hub, 22)
    assert reaches(cluster_host, hub, 22)
    compute2 = compute_host("compute2")
    assert not reaches(compute2, hub, 22)
    assert not reaches(compute2, services, 14000)
    assert not reaches(compute2, testbed.address("cluster"), 22)  # the login node's main address
    assert compute2.run("getent hosts %s", testbed.hub_name).rc != 0
    # Only the login node, on the private network (as login and by its public name).
    assert reaches(compute2, private_login, 22)
    for name in ("login", "login.cluster.test"):
        assert compute2.check_output("getent hosts %s", name).split()[0] == private_login


def test_gateway_builds_an_apptainer_image_on_the_login_node_that_a_compute_node_runs(cluster_host, compute_host):
    workdir = "/home/gateway/testbed-fixture-image"
    assert as_gateway(cluster_host, "mkdir -p %s", workdir).rc == 0
    write = cluster_host.run(
        "runuser -u gateway -- sh -c %s",
        f"cat > {workdir}/scratch.def <<'EOF'\n{SCRATCH_DEF}EOF",
    )
    assert write.rc == 0, write.stderr
    build = as_gateway(
        cluster_host, "apptainer build --force --fakeroot %s %s", f"{workdir}/scratch.sif", f"{workdir}/scratch.def"
    )
    assert build.rc == 0, build.stderr
    for host in (cluster_host, compute_host("compute1")):
        run = host.run("cd /tmp && runuser -u gateway -- apptainer exec --containall --cleanenv %s cat /etc/os-release",
                       f"{workdir}/scratch.sif")
        assert run.rc == 0, run.stderr
        assert "ID=hpcgw-testbed" in run.stdout
        # The node itself is Debian: the answer above came from inside the image.
        assert "ID=debian" in host.file("/etc/os-release").content_string


def test_sshd_listens_on_the_login_node(cluster_host):
    assert cluster_host.socket("tcp://0.0.0.0:22").is_listening
