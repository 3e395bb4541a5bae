"""Community-account mode (gateway_mode: account): site.yml reaches the login
node over ssh as the gateway account and becomes no one there.

The proof of "no become" is in three parts: the account has no sudo (its own
`sudo -n true` fails, over the same ssh login Ansible uses); the inventory's
become program for the login node is the test bed's trap (prepare.yml), which
records every attempt, and an ad-hoc become shows it is wired; and after the
converge (and test_site_converge's second run and --check) the record is
empty. Skipped unless the scenario's inventory puts the login node in account
mode (molecule/default/gateway_mode/account.yml).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
from conftest import REPO

pytestmark = pytest.mark.account_mode_only

ROOT = "/home/gateway/hpcgw"
HOME = "/home/gateway"
BECOME_RECORD = "/var/log/hpcgw-become-attempts"
TRAP = "/usr/local/sbin/hpcgw-become-trap"


def ssh_as_the_account(testbed, command: str) -> subprocess.CompletedProcess:
    """A command over the gateway team's own ssh login (the one Ansible uses)."""
    config = testbed.state_dir / "ssh" / "config_login.cluster.test"
    return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "login.cluster.test", command],
                          capture_output=True, text=True, timeout=60)


def inventory_host(request) -> dict:
    done = subprocess.run(["ansible-inventory", "-i", request.config.option.ansible_inventory,
                           "--host", "login.cluster.test"], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def test_ansible_logs_in_as_the_account_over_ssh(request, testbed):
    settings = inventory_host(request)
    assert settings["gateway_mode"] == "account"
    assert settings["ansible_connection"] in ("ssh", "ansible.builtin.ssh")
    assert settings["ansible_user"] == "gateway"
    who = ssh_as_the_account(testbed, "id -un")
    assert (who.returncode, who.stdout.strip()) == (0, "gateway"), who.stderr


def test_the_account_has_no_sudo(testbed, cluster_host):
    attempt = ssh_as_the_account(testbed, "sudo -n true")
    assert attempt.returncode != 0
    assert "password is required" in attempt.stderr or "not allowed" in attempt.stderr, attempt.stderr
    rules = cluster_host.run("sudo -l -U gateway")
    assert "is not allowed to run sudo" in rules.stdout, rules.stdout
    assert "sudo" not in cluster_host.check_output("id -nG gateway").split()


def test_the_become_trap_is_wired_and_the_converge_never_became_anyone(request, cluster_host):
    # Nothing in the record: no task of the converge (nor of the second run and
    # --check of test_site_converge, when they ran before) tried to become.
    record = cluster_host.file(BECOME_RECORD)
    assert record.exists and record.user == "gateway"
    assert record.content_string == "", record.content_string
    # The inventory's become program is the trap, and a become reaches it.
    assert inventory_host(request)["ansible_become_exe"] == TRAP
    try:
        probe = subprocess.run(["ansible", "-i", request.config.option.ansible_inventory, "login.cluster.test",
                                "-b", "-m", "ansible.builtin.command", "-a", "id -un"],
                               capture_output=True, text=True, timeout=120, cwd=REPO)
        assert probe.returncode != 0, probe.stdout
        # The trap's line: the account's uid, and sudo's arguments for root.
        attempt = cluster_host.file(BECOME_RECORD).content_string
        assert " uid=1000 " in attempt and "-u root" in attempt and "BECOME-SUCCESS" in attempt, attempt
    finally:
        cluster_host.run(f": > {BECOME_RECORD}")


def test_every_path_of_the_gateway_is_the_accounts(cluster_host):
    foreign = cluster_host.check_output(f"find {ROOT} {HOME}/.ssh ! -user gateway -print")
    assert foreign == "", foreign
    for path in (ROOT, f"{ROOT}/bin", f"{ROOT}/etc", f"{ROOT}/images", f"{ROOT}/bin/hpcgw-gate", f"{ROOT}/bin/hpcgw_rules.py",
                 f"{ROOT}/etc/gateway.json", f"{ROOT}/etc/images.json", f"{ROOT}/images/notebook.sif",
                 f"{HOME}/.ssh/authorized_keys"):
        item = cluster_host.file(path)
        assert item.exists and item.user == "gateway", path


def test_the_hubs_forced_command_is_in_the_accounts_own_authorized_keys(cluster_host):
    lines = cluster_host.file(f"{HOME}/.ssh/authorized_keys").content_string.splitlines()
    gate = [line for line in lines if f'command="{ROOT}/bin/hpcgw-gate"' in line]
    assert len(gate) == 1 and gate[0].startswith("restrict,from=")


def test_nothing_outside_the_accounts_home_was_changed(cluster_host):
    # The account can write only its home, the temporary folders and what the
    # site gave it (/srv/datasets, /srv/notebook-base here); of the latter
    # nothing may be newer than the container (docker writes /etc/hostname
    # when it makes it). Root's files are out of reach without become (the
    # trap test above).
    pruned = " -o ".join(f"-path {path}" for path in
                         ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", HOME, BECOME_RECORD))
    changed = cluster_host.check_output(
        f"find / -xdev \\( {pruned} \\) -prune -o -user gateway -newer /etc/hostname -print")
    assert changed == "", changed


def copy_inventory(request, tmp_path: pathlib.Path, **cluster_vars) -> pathlib.Path:
    """This scenario's inventory, with the login node's gateway_mode.yml extended by cluster_vars."""
    inventory = tmp_path / "inventory"
    shutil.copytree(request.config.option.ansible_inventory, inventory, symlinks=False)
    mode_file = inventory / "host_vars" / "login.cluster.test" / "gateway_mode.yml"
    mode_file.write_text(mode_file.read_text() + "".join(f"{key}: {json.dumps(value)}\n"
                                                         for key, value in cluster_vars.items()))
    return inventory


def assert_nothing_changed(done: subprocess.CompletedProcess) -> None:
    """Every host of the run's recap has changed=0 (the preflight stopped it)."""
    counts = re.findall(r"changed=(\d+)", done.stdout.rsplit("PLAY RECAP", 1)[-1])
    assert counts and set(counts) == {"0"}, done.stdout[-3000:]


def said(done: subprocess.CompletedProcess) -> str:
    """All a run printed: a failed task's message is on stderr ("[ERROR]:
    Task failed: ...", ansible-core 2.19) and, with the yaml callback
    format molecule sets, not repeated on stdout."""
    return done.stdout + done.stderr


def run_site(inventory: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(["ansible-playbook", "-i", str(inventory), str(REPO / "site.yml"), *args],
                          capture_output=True, text=True, timeout=900, cwd=REPO, env=env)


def test_account_mode_refuses_a_connection_as_another_user(request, tmp_path, testbed):
    # As root through docker, not as the account: stopped in the preflight.
    inventory = copy_inventory(request, tmp_path, ansible_connection="community.docker.docker",
                               ansible_host=f"hpcgw-{testbed.name}-cluster", ansible_user="root")
    done = run_site(inventory)
    assert done.returncode != 0
    assert "gateway_mode is account, so Ansible must log in" in said(done)
    assert 'it runs as "root"' in said(done)
    assert_nothing_changed(done)


# These two change the login node for a moment: in order with the converges.
@pytest.mark.xdist_group("playbooks")
def test_a_definition_image_without_subordinate_ids_is_refused_naming_the_sources(request, cluster_host):
    cluster_host.check_output("cp -p /etc/subuid /etc/subuid.hpcgw-test && sed -i '/^gateway:/d' /etc/subuid")
    try:
        done = run_site(pathlib.Path(request.config.option.ansible_inventory))
    finally:
        cluster_host.check_output("mv -f /etc/subuid.hpcgw-test /etc/subuid")
    assert done.returncode != 0
    assert "apptainer_images_list[0] (notebook) is built from a definition" in said(done)
    assert "apptainer_images_list[0].definition" in said(done)
    assert "no range in /etc/subuid" in said(done) and "allows only the image sources url, file, pull" in said(done)
    assert_nothing_changed(done)


@pytest.mark.xdist_group("playbooks")
def test_a_path_left_by_root_mode_is_named_before_any_change(request, cluster_host):
    settings = f"{ROOT}/etc/gateway.json"
    cluster_host.check_output(f"chown root:root {settings}")
    try:
        done = run_site(pathlib.Path(request.config.option.ansible_inventory))
    finally:
        cluster_host.check_output(f"chown gateway:gateway {settings}")
    assert done.returncode != 0
    assert f"gateway does not own {settings}" in said(done)
    assert f"chown -R gateway: {ROOT}" in said(done)
    assert_nothing_changed(done)
