"""JupyterHub and its proxy run in a tight systemd sandbox: systemd's own
exposure score is 2.0 or better for both, and the sandbox's parts that
matter hold in the running processes."""

import re

import pytest

testinfra_hosts = ["hub.gateway.test"]

UNITS = ["jupyterhub.service", "jupyterhub-proxy.service"]


def exposure(host, unit):
    out = host.check_output("systemd-analyze security --no-pager %s", unit)
    return float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out).group(1))


@pytest.mark.parametrize("unit", UNITS)
def test_exposure_score_is_2_or_better(host, unit):
    assert exposure(host, unit) <= 2.0


@pytest.mark.parametrize("unit", UNITS)
def test_sandbox_settings(host, unit):
    names = ["ProtectProc", "ProcSubset", "SystemCallArchitectures", "RestrictAddressFamilies", "IPAddressDeny",
             "RemoveIPC", "DevicePolicy", "PrivateDevices", "CapabilityBoundingSet", "UMask", "LockPersonality",
             "RestrictNamespaces", "SystemCallFilter", "PrivateMounts"]
    out = host.check_output("systemctl show %s --property=%s", unit, ",".join(names))
    properties = dict(line.split("=", 1) for line in out.splitlines())
    assert properties["ProtectProc"] == "invisible"
    assert properties["ProcSubset"] == "pid"
    assert properties["SystemCallArchitectures"] == "native"
    assert set(properties["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert properties["IPAddressDeny"] in ("0.0.0.0/0 ::/0", "::/0 0.0.0.0/0")
    assert properties["RemoveIPC"] == "yes"
    assert properties["DevicePolicy"] == "closed" and properties["PrivateDevices"] == "yes"
    assert properties["CapabilityBoundingSet"] == ""
    assert properties["UMask"] == "0077"
    assert properties["LockPersonality"] == "yes"
    assert properties["RestrictNamespaces"] == "yes"
    assert properties["PrivateMounts"] == "yes"
    # An allow list without mount, reboot, swap, module loading, ptrace, raw I/O, setuid.
    allowed = properties["SystemCallFilter"].split()
    for syscall in ("mount", "reboot", "swapon", "init_module", "ptrace", "ioperm", "setuid", "setrlimit", "chroot"):
        assert syscall not in allowed, syscall
    for syscall in ("socket", "connect", "execve", "clone", "openat"):
        assert syscall in allowed, syscall


@pytest.mark.parametrize("unit", UNITS)
def test_the_services_see_no_other_processes(host, unit):
    """ProtectProc=invisible and ProcSubset=pid, as the running service has
    them: its /proc is mounted hidepid=invisible (other users' processes are
    not there at all) and subset=pid (no kernel files)."""
    pid = host.check_output("systemctl show --property=MainPID --value %s", unit)
    proc = [line.split() for line in host.file(f"/proc/{pid}/mountinfo").content_string.splitlines()
            if line.split()[4] == "/proc"]
    options = set(proc[-1][-1].split(","))  # the last /proc mount is the one it sees
    assert {"hidepid=invisible", "subset=pid"} <= options, options


def test_the_proxy_may_use_loopback_only(host):
    deny = host.check_output("systemctl show jupyterhub-proxy.service --property=IPAddressDeny --value")
    allow = host.check_output("systemctl show jupyterhub-proxy.service --property=IPAddressAllow --value")
    assert set(deny.split()) == {"0.0.0.0/0", "::/0"}
    assert set(allow.split()) == {"127.0.0.0/8", "::1/128"}
