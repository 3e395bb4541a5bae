"""Run a role's tasks file for many cases in ONE ansible-playbook run.

A unit test of a role's checks (its `validate` entry point) gives each case
its settings; each case is an inventory host (connection local, nothing
changed) whose host variables are those settings, so one run checks them all
(a run per case costs about 3 s of CPU each; a play per case, 3 CPU-seconds
a play). Each case records "passed" or the message it failed with, and,
when it passed, what `record` asks for (Jinja expressions); the controller
writes every case's outcome once, at the end.

    outcomes = run_cases(tmp, "hpcgateway.jupyterhub.nginx", {"bad-name": {...}})
    outcomes["bad-name"]["result"]   # "passed" or the failure's message
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

# A loop's failure: the failed items' messages; else the task's message.
FAILURE = ("{{ ansible_failed_result.results | default([]) | selectattr('failed', 'defined')"
           " | selectattr('failed') | map(attribute='msg') | join(' // ')"
           " or ansible_failed_result.msg | default(ansible_failed_result) }}")


def host_name(case: str) -> str:
    """A case's inventory host: a DNS-like name (a hub's URL defaults to it)."""
    return re.sub(r"[^a-z0-9-]+", "-", case.lower()).strip("-") + ".test"


def run_cases(workdir: Path, role: str, cases: dict[str, dict], *, tasks_from: str = "validate",
              group: str = "hub", inventory: dict | None = None, record: dict[str, str] | None = None,
              extra_vars: dict | None = None, env: dict | None = None) -> dict[str, dict]:
    """{case: {"result": "passed" | message, **record}} of `role`'s `tasks_from`
    run once per case, all in one ansible-playbook run.

    The cases are the hosts of group `cases`, a child of `group` (hub or
    cluster); `inventory` adds to the other groups ({"cluster": {"hosts":
    {"login": {}}}}); `extra_vars` go to every case with the precedence of -e.
    """
    hosts = {host_name(case): settings for case, settings in cases.items()}
    assert len(hosts) == len(cases), "two cases make the same host name"
    groups = {name: dict(value) for name, value in (inventory or {}).items()}
    groups.setdefault(group, {}).setdefault("children", {})["cases"] = {"hosts": hosts}
    groups.setdefault("ungrouped", {}).setdefault("hosts", {})["localhost"] = {}
    (workdir / "inventory.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "children": groups}}))
    out = workdir / "outcomes.json"
    playbook = [{
        "name": "Every case",
        "hosts": "cases",
        "gather_facts": False,
        "tasks": [{
            "name": "Case",
            "block": [
                {"name": "Run the role's tasks", "ansible.builtin.include_role": {
                    "name": role, "tasks_from": tasks_from, "public": True}},
                {"name": "Record", "ansible.builtin.set_fact": {
                    "case_outcome": {"result": "passed", **(record or {})}}},
            ],
            "rescue": [{"name": "Record the failure", "ansible.builtin.set_fact": {
                "case_outcome": {"result": FAILURE}}}],
        }],
    }, {
        "name": "Write every case's outcome",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [{"name": "Write them", "ansible.builtin.copy": {
            "content": "{{ dict(groups['cases'] | zip(groups['cases'] | map('extract', hostvars, 'case_outcome')))"
                       " | to_json }}",
            "dest": str(out), "mode": "0600"}}],
    }]
    (workdir / "cases.yml").write_text(yaml.safe_dump(playbook))
    (workdir / "ansible.cfg").write_text("[defaults]\nstdout_callback = default\nforks = 8\n")
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(workdir / "inventory.yml"), str(workdir / "cases.yml")]
    if extra_vars:
        (workdir / "extra.json").write_text(json.dumps(extra_vars))
        argv += ["-e", "@" + str(workdir / "extra.json")]
    run_env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"), "ANSIBLE_REMOTE_TEMP": str(workdir / "tmp"),
        "ANSIBLE_CONFIG": str(workdir / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "false", "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(ROOT / ".collections")),
        **(env or {}),
    }
    run = subprocess.run(argv, env=run_env, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    outcomes = json.loads(out.read_text())
    return {case: outcomes[host_name(case)] for case in cases}


def words(text) -> str:
    """A message with its whitespace made single spaces (folded YAML, wrapped lines)."""
    return " ".join(str(text).split())
