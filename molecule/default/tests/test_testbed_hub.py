"""The hub fixture is a bare Debian 12 VM: systemd as PID 1, sshd running."""

testinfra_hosts = ["hub.gateway.test"]


def test_systemd_is_pid_1_and_running(host):
    assert host.process.get(pid=1).comm == "systemd"
    state = host.run("systemctl is-system-running")
    assert state.stdout.strip() == "running", host.run("systemctl --failed --no-legend").stdout


def test_debian_12(host):
    assert host.system_info.distribution == "debian"
    assert host.system_info.release.startswith("12")


def test_sshd_runs_with_fresh_host_keys(host):
    assert host.service("ssh").is_running
    assert host.file("/etc/ssh/ssh_host_ed25519_key").exists


def test_trusts_the_testbed_ca(host):
    # prepare.yml's only change: the CA of the ACME server and Globus stand-in.
    ok = host.run("curl -fsS -o /dev/null https://acme.test:14000/dir")
    assert ok.rc == 0, ok.stderr
