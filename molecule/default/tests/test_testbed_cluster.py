"""The cluster fixture is a working HPC site: Slurm runs jobs for `gateway`,
and Apptainer builds (--fakeroot) and runs images as `gateway`."""

import textwrap

testinfra_hosts = ["login.cluster.test"]

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


def as_gateway(host, command, *args):
    return host.run("runuser -u gateway -- " + command, *args)


def test_slurm_node_is_up(host):
    states = host.check_output("sinfo --noheader --format=%T").split()
    # Up: not down, drained, failing or unreachable ("*" suffix) in any form.
    bad = ("down", "drain", "fail", "inval", "unk", "not_responding", "power")
    assert states and not [s for s in states if s.endswith("*") or s.startswith(bad)]


def test_sbatch_job_runs_as_gateway(host):
    out = "/home/gateway/testbed-fixture-%j.out"
    job = as_gateway(host, "sbatch --parsable --wait --output=%s --wrap %s", out, "id -un; hostname")
    assert job.rc == 0, job.stderr
    job_id = job.stdout.strip()
    assert job_id.isdigit()
    result = host.file(out.replace("%j", job_id))
    assert result.user == "gateway"
    assert result.content_string.split() == ["gateway", "cluster"]


def test_gateway_builds_and_runs_an_apptainer_image(host):
    workdir = "/home/gateway/testbed-fixture-image"
    assert as_gateway(host, "mkdir -p %s", workdir).rc == 0
    write = host.run(
        "runuser -u gateway -- sh -c %s",
        f"cat > {workdir}/scratch.def <<'EOF'\n{SCRATCH_DEF}EOF",
    )
    assert write.rc == 0, write.stderr
    build = as_gateway(
        host, "apptainer build --force --fakeroot %s %s", f"{workdir}/scratch.sif", f"{workdir}/scratch.def"
    )
    assert build.rc == 0, build.stderr
    run = as_gateway(host, "apptainer exec --containall --cleanenv %s cat /etc/os-release", f"{workdir}/scratch.sif")
    assert run.rc == 0, run.stderr
    assert "ID=hpcgw-testbed" in run.stdout
    # The node itself is Debian: the answer above came from inside the image.
    assert "ID=debian" in host.file("/etc/os-release").content_string


def test_sshd_listens(host):
    assert host.socket("tcp://0.0.0.0:22").is_listening
