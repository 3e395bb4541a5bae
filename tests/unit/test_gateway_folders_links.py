"""roles/gateway's folder tasks run as root (gateway_mode root) on paths that
lie in folders the gateway account owns (its home, users/) or owned before
(a site leaving community-account mode). A link the account put there must
make the run fail, never make root chown or chmod the link's target (which
would give the account e.g. /etc). Runs tasks/folders.yml for real with
ansible-playbook on localhost (needs root: chown)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_link_planted_as_a_users_folder_is_refused_and_its_target_untouched(tmp_path):
    gateway_root = tmp_path / "hpcgw"
    users = gateway_root / "users"
    users.mkdir(parents=True)
    victim = tmp_path / "victim"  # stands for /etc: root's, 0755
    victim.mkdir(mode=0o755)
    os.chmod(victim, 0o755)
    link = users / ("u-" + hashlib.sha256(b"ivan").hexdigest()[:20])
    link.symlink_to(victim)
    playbook = [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {
            "gateway_mode": "root", "gateway_user": "nobody", "gateway_root": str(gateway_root),
            "gateway_user_folders": ["ivan"],
            "__gateway_getent": {"ansible_facts": {"getent_passwd": {
                "nobody": ["x", "65534", "65534", "", str(tmp_path / "home"), "/bin/sh"]}}},
        },
        "tasks": [{"name": "Folders", "ansible.builtin.include_tasks": str(ROOT / "roles/gateway/tasks/folders.yml")}],
    }]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(playbook))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_ROLES_PATH=str(ROOT / "roles"))
    # vars/main.yml of the role (the internals folders.yml uses) as extra vars.
    run = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-e", f"@{ROOT / 'roles/gateway/vars/main.yml'}",
                          "-e", f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml")],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    state = victim.stat()
    assert (state.st_uid, state.st_mode & 0o7777) == (0, 0o755), run.stdout[-3000:]
    assert run.returncode != 0 and "already exists as a link" in run.stdout, run.stdout[-3000:]
