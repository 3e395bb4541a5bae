"""plugins/module_utils/rules.py: the gateway's rules, defined once.

The hub package reaches the same file (python/hpcgw_hub/rules.py is a link
to it); the roles reach it through the filter and test plugins
(hpcgateway.jupyterhub.profile_errors, image_errors, ssh_host_keys,
known_hosts_lines, known_hosts_name, ssh_key_id; the tests ssh_public_key,
known_hosts_line, image_name), run here in a real ansible-playbook. The
cluster's stdlib scripts (hpcgw-job, hpcgw-gate) keep their own copies:
these tests prove the copies are the rule."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from cluster_scripts import load_script

from hpcgw_hub import rules

REPO = pathlib.Path(__file__).resolve().parents[2]
RULES = REPO / "plugins/module_utils/rules.py"
ANSIBLE = shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) or shutil.which("ansible-playbook")

PROFILE = {"name": "compute", "label": "CPU", "partition": "compute", "default_minutes": 60, "max_minutes": 480,
           "default_cpus": 1, "max_cpus": 4, "default_memory_mb": 2048, "max_memory_mb": 8192,
           "images": ["notebook"]}
GPU = {**PROFILE, "name": "gpu", "partition": "gpu", "default_gpus": 1, "max_gpus": 2, "images": ["cuda", "notebook"]}
IMAGES = [{"name": "notebook", "label": "Notebook", "description": "JupyterLab"}, {"name": "cuda", "label": "CUDA"}]
ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIG4Vtr1nUJ1Dbzgx5bhd3hXOq4G+BdNNNa6zZ0lKm0vX"
SK_ED25519 = "AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIEX2bGU9b1Yv0YQ4sU1vbWVrZXkAAAAEc3NoOg=="


def test_the_hub_package_carries_the_one_file():
    link = REPO / "python/hpcgw_hub/rules.py"
    assert link.is_symlink()
    assert link.resolve() == RULES
    assert pathlib.Path(rules.__file__).resolve() == RULES


# -- the profile rules ----------------------------------------------------------
def test_good_profiles_and_images_pass():
    assert rules.profile_errors([PROFILE, GPU], IMAGES) == []
    assert rules.profile_errors([PROFILE, GPU]) == []
    assert rules.image_errors(IMAGES) == []
    # Left out with the catalogue known: the profile offers all of it.
    assert rules.profile_errors([{k: v for k, v in PROFILE.items() if k != "images"}], IMAGES) == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "a b"}, "profiles[1].name must be a word of letters, digits, '_', '.', '-' (got \"a b\")."),
        ({"name": "gpu\n"}, "profiles[1].name must be a word"),
        ({"name": "compute"}, 'profiles[1].name "compute" is used by two profiles.'),
        ({"label": ""}, "profiles[1].label must be a non-empty string."),
        ({"partition": "gpu;id"}, "profiles[1].partition must be a Slurm partition name (got \"gpu;id\")."),
        ({"max_minutes": "480"}, "profiles[1].max_minutes must be a whole number of at least 1 (got \"480\")."),
        ({"max_minutes": None}, "profiles[1].max_minutes must be a whole number of at least 1 (got null)."),
        ({"max_cpus": True}, "profiles[1].max_cpus must be a whole number of at least 1 (got true)."),
        ({"max_gpus": -1, "default_gpus": 0}, "profiles[1].max_gpus must be a whole number of at least 0 (got -1)."),
        ({"default_minutes": 481}, "profiles[1].default_minutes must be a whole number from 1 to max_minutes (480) "
                                   "(got 481)."),
        ({"default_cpus": 0}, "profiles[1].default_cpus must be a whole number from 1 to max_cpus (4) (got 0)."),
        ({"default_gpus": 3}, "profiles[1].default_gpus must be a whole number from 0 to max_gpus (2) (got 3)."),
        ({"images": []}, "profiles[1].images must be a non-empty list of names from images (or left out"),
        ({"images": "notebook"}, "profiles[1].images must be a non-empty list"),
        ({"images": ["Notebook"]}, "profiles[1].images[0] must be an image name [a-z0-9][a-z0-9_.-]{0,63}"),
        ({"images": ["notebook", "nosuch"]}, 'profiles[1].images[1] is "nosuch", not an image the cluster offers '
                                             '(images: ["notebook", "cuda"]).'),
    ],
)
def test_a_wrong_profile_field_is_named(change, message):
    errors = rules.profile_errors([PROFILE, {**GPU, **change}], IMAGES)
    assert any(message in error for error in errors), errors


ACCESS = {"groups": ["gpu-users", "179945b4-0890-4657-92d5-e3aaf4b7586f"], "account": "proj-1", "qos": "gpu.high",
          "reservation": "course_2026", "constraint": "[rack1|rack2]&a100,ib*2", "gpu_type": "a100"}


def test_groups_and_slurm_words_are_optional_and_checked():
    assert rules.profile_errors([PROFILE, {**GPU, **ACCESS}], IMAGES) == []


@pytest.mark.parametrize("change, message", [
    ({"groups": []}, "profiles[1].groups must be a non-empty list of hub group names (or left out: everyone)"),
    ({"groups": "gpu-users"}, "profiles[1].groups must be a non-empty list of hub group names"),
    ({"groups": ["gpu users"]}, "profiles[1].groups[0] must be a hub group name"),
    ({"groups": ["ok", 7]}, "profiles[1].groups[1] must be a hub group name"),
    ({"groups": ["ok", "ok"]}, 'profiles[1].groups[1] "ok" is listed twice.'),
    ({"account": "proj;id"}, 'profiles[1].account must be a Slurm account name [A-Za-z0-9][A-Za-z0-9_.-]* '
                             '(got "proj;id").'),
    ({"account": ""}, "profiles[1].account must be a Slurm account name"),
    ({"qos": "--uid=0"}, "profiles[1].qos must be a Slurm qos name"),
    ({"qos": 3}, "profiles[1].qos must be a Slurm qos name"),
    ({"reservation": "r 1"}, "profiles[1].reservation must be a Slurm reservation name"),
    ({"gpu_type": "a100:2"}, "profiles[1].gpu_type must be a Slurm gpu type name"),
    ({"constraint": "a100 ib"}, "profiles[1].constraint must be a Slurm constraint"),
    ({"constraint": "a100;id"}, "profiles[1].constraint must be a Slurm constraint"),
    ({"constraint": "$(id)"}, "profiles[1].constraint must be a Slurm constraint"),
    ({"constraint": "&a100"}, "profiles[1].constraint must be a Slurm constraint"),
    ({"constraint": "a\n"}, "profiles[1].constraint must be a Slurm constraint"),
    ({"max_gpus": 0, "default_gpus": 0, "gpu_type": "a100"}, "profiles[1].gpu_type needs max_gpus of at least 1"),
])
def test_a_wrong_group_or_slurm_word_is_named(change, message):
    errors = rules.profile_errors([PROFILE, {**GPU, **ACCESS, **change}], IMAGES)
    assert any(error.startswith(message) for error in errors), errors


def test_without_a_catalogue_a_profile_must_name_its_images():
    bare = {k: v for k, v in PROFILE.items() if k != "images"}
    assert rules.profile_errors([bare]) == ["profiles[0].images must be a non-empty list of names from images."]
    # A limit other than the GPUs' cannot be left out (the hub would guess it).
    assert rules.profile_errors([{k: v for k, v in PROFILE.items() if k != "max_cpus"}]) == [
        "profiles[0].max_cpus must be a whole number of at least 1 (got null)."]


@pytest.mark.parametrize("profiles, message", [
    ([], "spawner_profiles must be a non-empty list of profiles (the first is the default)."),
    ("compute", "spawner_profiles must be a non-empty list"),
    ([PROFILE, "gpu"], "spawner_profiles[1] must be a mapping"),
])
def test_the_profiles_variable_is_named(profiles, message):
    assert rules.profile_errors(profiles, IMAGES, "spawner_profiles")[0].startswith(message)


@pytest.mark.parametrize("images, message", [
    ([], "spawner_images must be a non-empty list"),
    ([{"name": "../x", "label": "X"}], "spawner_images[0].name must be an image name"),
    ([{"name": "Notebook", "label": "X"}], "spawner_images[0].name must be an image name"),
    ([{"name": "n" * 65, "label": "X"}], "spawner_images[0].name must be an image name"),
    ([{"name": "notebook"}], "spawner_images[0].label must be a non-empty string."),
    ([{"name": "notebook", "label": "A", "description": 3}], "spawner_images[0].description must be a string."),
    ([{"name": "notebook", "label": "A"}, {"name": "notebook", "label": "B"}],
     'spawner_images[1].name "notebook" is listed twice.'),
    (["notebook"], "spawner_images[0] must be a mapping"),
])
def test_a_wrong_image_field_is_named(images, message):
    errors = rules.image_errors(images, "spawner_images")
    assert any(error.startswith(message) for error in errors), errors


# -- the image-name rule ----------------------------------------------------------
@pytest.mark.parametrize("name, ok", [
    ("notebook", True), ("py3.12_cuda-x", True), ("0", True), ("n" * 64, True),
    ("n" * 65, False), ("Notebook", False), ("-x", False), (".x", False), ("a/b", False), ("a b", False),
    ("notebook\n", False), ("", False),
])
def test_the_image_name_rule(name, ok):
    assert (rules.IMAGE_NAME.fullmatch(name) is not None) is ok


def test_the_cluster_scripts_import_the_one_rule_file():
    # The gate and the wrapper import hpcgw_rules from beside them: in the
    # role, a link to module_utils/rules.py; on the cluster, its copy.
    beside = REPO / "roles/gateway/files/hpcgw_rules.py"
    assert beside.is_symlink() and beside.resolve() == (REPO / "plugins/module_utils/rules.py").resolve()
    job = load_script(REPO / "roles/gateway/files/hpcgw-job", "hpcgw_job_rules")
    gate = load_script(REPO / "roles/gateway/files/hpcgw-gate", "hpcgw_gate_rules")
    assert job.IMAGE_NAME.pattern == rules.IMAGE_NAME_PATTERN
    assert gate.profile_errors.__module__ == "hpcgw_rules"
    assert gate.RESOURCES == rules.RESOURCES
    # And no other copy of a rule's pattern anywhere in the shipped code.
    for pattern in (rules.IMAGE_NAME_PATTERN, rules.NAME_PATTERN):
        holders = [path for path in (*REPO.glob("roles/*/files/*"), *REPO.glob("roles/*/*/*.yml"),
                                     *REPO.glob("python/hpcgw_hub/*.py"), *REPO.glob("plugins/*/*.py"))
                   if not path.is_symlink() and path.is_file() and path.name != "rules.py"
                   and pattern in path.read_text(errors="replace")]
        assert holders == [], (pattern, holders)


GATE_CASES = [
    [PROFILE], [PROFILE, GPU], [], "compute", [PROFILE, "gpu"],
    *([PROFILE, {**GPU, **change}] for change in (
        {"name": "a b"}, {"name": "compute"}, {"name": "gpu\n"}, {"label": ""}, {"label": 3},
        {"partition": "gpu;id"}, {"partition": None}, {"max_minutes": "480"}, {"max_minutes": None},
        {"max_minutes": 0, "default_minutes": 0}, {"max_cpus": True}, {"default_minutes": 481}, {"default_cpus": 0},
        {"default_gpus": 3}, {"max_gpus": -1, "default_gpus": 0}, {"images": []}, {"images": "cuda"},
        {"images": ["Cuda"]}, {"images": ["cuda", 3]}, {"images": ["x" * 65]})),
    [{k: v for k, v in PROFILE.items() if k != "max_cpus"}],
    [{k: v for k, v in PROFILE.items() if k != "default_memory_mb"}],
    [{k: v for k, v in PROFILE.items() if k != "images"}],
    [{k: v for k, v in GPU.items() if k not in ("default_gpus", "max_gpus")}],
]


@pytest.mark.parametrize("profiles", GATE_CASES, ids=repr)
def test_the_gates_profile_check_is_the_rule(profiles):
    gate = load_script(REPO / "roles/gateway/files/hpcgw-gate", "hpcgw_gate_rules")
    try:
        gate.check_profiles(profiles)
        refused = False
    except gate.Refused:
        refused = True
    assert refused == bool(rules.profile_errors(profiles))


# -- SSH public keys and known_hosts lines --------------------------------------------
@pytest.mark.parametrize("line", [
    f"ssh-ed25519 {ED25519}", f"ssh-ed25519 {ED25519} hub@jupyterhub", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ==",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNh", "ecdsa-sha2-nistp384 AAAAE2VjZHNh", "ecdsa-sha2-nistp521 AAAAE2VjZHNh",
    f"sk-ssh-ed25519@openssh.com {SK_ED25519}", f"sk-ssh-ed25519@openssh.com {SK_ED25519} yubikey",
    "sk-ecdsa-sha2-nistp256@openssh.com AAAAInNrLWVjZHNh",
])
def test_a_public_key_line_of_each_type_is_taken(line):
    assert rules.is_ssh_public_key(line)
    assert rules.is_known_hosts_line(f"[hub.example]:2222 {line}")
    assert rules.ssh_key_id(f'restrict,command="/x/bin/hpcgw-gate" {line}') == " ".join(line.split()[:2])


@pytest.mark.parametrize("line", [
    "", f"ssh-dss {ED25519}", f"ssh-ed25519 {ED25519}\nssh-ed25519 {ED25519}", f"ssh-ed25519 {ED25519}\n",
    f"ssh-ed25519 {ED25519} a\rssh-ed25519 {ED25519}",
    f'command="/bin/sh" ssh-ed25519 {ED25519}', f"ssh-ed25519  {ED25519}", "ssh-ed25519 AAAA=B", "ssh-ed25519",
    f"sk-ssh-ed25519 {ED25519}", f"hub ssh-ed25519 {ED25519}", None, 3,
])
def test_anything_else_is_not_a_public_key(line):
    assert not rules.is_ssh_public_key(line)


@pytest.mark.parametrize("line", [f"ssh-ed25519 {ED25519}", f"#hub ssh-ed25519 {ED25519}",
                                  f"hub ssh-ed25519 {ED25519}\nevil ssh-ed25519 {ED25519}", f"hub ssh-dss {ED25519}"])
def test_a_known_hosts_line_needs_a_host_and_one_line(line):
    assert not rules.is_known_hosts_line(line)


def test_host_keys_and_known_hosts_lines_from_facts():
    facts = {"ssh_host_key_rsa_public": "AAAArsa", "ssh_host_key_rsa_public_keytype": "ssh-rsa",
             "ssh_host_key_ed25519_public": "AAAAed", "ssh_host_key_ed25519_public_keytype": "ssh-ed25519",
             "ssh_host_key_ecdsa_public": "AAAAec", "ssh_host_key_ecdsa_public_keytype": "ecdsa-sha2-nistp256",
             "ssh_host_key_dsa_public": "AAAAdsa", "ssh_host_key_dsa_public_keytype": "ssh-dss"}
    keys = rules.ssh_host_keys(facts)
    assert keys == ["ssh-ed25519 AAAAed", "ecdsa-sha2-nistp256 AAAAec", "ssh-rsa AAAArsa"]
    assert rules.ssh_host_keys({}) == [] and rules.ssh_host_keys(None) == []
    assert rules.known_hosts_lines(keys[:1], "hub.example") == ["hub.example ssh-ed25519 AAAAed"]
    assert rules.known_hosts_lines(keys[:1], "hub.example", "2222") == ["[hub.example]:2222 ssh-ed25519 AAAAed"]
    assert rules.known_hosts_name("10.0.0.5", 22) == "10.0.0.5"


def test_no_role_keeps_its_own_copy_of_a_rule():
    """The roles call the plugins: no key-type list, name pattern or fact
    extraction of their own (what this change removed)."""
    for path in [*(REPO / "roles").glob("*/tasks/*.yml"), *(REPO / "roles").glob("*/vars/*.yml")]:
        text = path.read_text()
        for copy in ("ssh-ed25519|", "ecdsa-sha2-nistp(", "A-Za-z0-9][A-Za-z0-9_.-]", "a-z0-9][a-z0-9_.-]",
                     "ssh_host_key_ed25519_public", "']:' ~"):
            assert copy not in text, f"{path.relative_to(REPO)} keeps a copy of a rule: {copy}"


# -- the plugins in a real ansible-playbook -------------------------------------------
PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        content: "{{ result | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      vars:
        result:
          profiles: "{{ profiles | hpcgateway.jupyterhub.profile_errors(images, 'spawner_profiles', 'spawner_images') }}"
          images: "{{ images | hpcgateway.jupyterhub.image_errors('spawner_images') }}"
          host_keys: "{{ facts | hpcgateway.jupyterhub.ssh_host_keys }}"
          lines: "{{ facts | hpcgateway.jupyterhub.ssh_host_keys | hpcgateway.jupyterhub.known_hosts_lines('hub', 2222) }}"
          name: "{{ 'hub' | hpcgateway.jupyterhub.known_hosts_name(22) }}"
          key_id: "{{ authorized | hpcgateway.jupyterhub.ssh_key_id }}"
          keys: "{{ keys | select('hpcgateway.jupyterhub.ssh_public_key') | list }}"
          known: "{{ keys | map('regex_replace', '^', 'hub ') | select('hpcgateway.jupyterhub.known_hosts_line') | list }}"
          image_names: "{{ ['notebook', 'Notebook'] | select('hpcgateway.jupyterhub.image_name') | list }}"
"""


@pytest.mark.skipif(ANSIBLE is None, reason="ansible-playbook not installed")
def test_the_plugins_in_an_ansible_run(tmp_path):
    keys = [f"sk-ssh-ed25519@openssh.com {SK_ED25519} key", f"ssh-ed25519 {ED25519}", "ssh-dss AAAA"]
    settings = {"profiles": [PROFILE, {**GPU, "images": ["nosuch"]}], "images": IMAGES + [{"name": "X"}],
                "facts": {"ssh_host_key_ed25519_public": "AAAAed", "ssh_host_key_ed25519_public_keytype": "ssh-ed25519"},
                "authorized": f'restrict,command="/g/bin/hpcgw-gate" ssh-ed25519 {ED25519} hub', "keys": keys,
                "out": str(tmp_path / "result.json")}
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps(settings))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0",
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    done = subprocess.run([ANSIBLE, "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
                           "-e", "@" + str(tmp_path / "vars.json")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result == {
        "profiles": ['spawner_profiles[1].images[0] is "nosuch", not an image the cluster offers '
                     '(spawner_images: ["notebook", "cuda", "X"]).'],
        "images": ["spawner_images[2].name must be an image name [a-z0-9][a-z0-9_.-]{0,63} (got \"X\").",
                   "spawner_images[2].label must be a non-empty string."],
        "host_keys": ["ssh-ed25519 AAAAed"], "lines": ["[hub]:2222 ssh-ed25519 AAAAed"], "name": "hub",
        "key_id": f"ssh-ed25519 {ED25519}", "keys": keys[:2], "known": ["hub " + key for key in keys[:2]],
        "image_names": ["notebook"],
    }


# -- one SSH key rule in the three roles that take keys (sk- keys included) -----------
ROLE_PLAY = """
- hosts: hub
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: "{{ role }}"
        tasks_from: validate
"""
SK_KEYS = [f"sk-ssh-ed25519@openssh.com {SK_ED25519} yubikey", "sk-ecdsa-sha2-nistp256@openssh.com AAAAInNrLWVjZHNh"]
# role: (its key check's task, the variable it names, settings holding the keys).
KEY_CHECKS = {
    "tunnelbot": ("Check tunnelbot_public_keys are SSH public keys", "tunnelbot_public_keys",
                  lambda keys: {"tunnelbot_public_keys": keys, "tunnelbot_allowed_from": ["10.0.0.0/8"]}),
    "spawner": ("Check the pinned host keys of the login node", "spawner_cluster_host_keys",
                lambda keys: {"spawner_cluster_host": "login", "spawner_cluster_host_keys": keys}),
    "gateway": ("Check gateway_hub_public_key is one ssh public key line", "gateway_hub_public_key",
                lambda keys: {"gateway_hub_public_key": keys[0]}),
    "gateway-known-hosts": ("Check gateway_hub_host_keys", "gateway_hub_host_keys",
                            lambda keys: {"gateway_hub_host_keys": ["hub.example " + key for key in keys]}),
}


def run_role_validate(tmp_path, role: str, settings: dict) -> str:
    (tmp_path / "play.yml").write_text(ROLE_PLAY)
    (tmp_path / "hosts.ini").write_text("[hub]\nlocalhost ansible_connection=local\n[cluster]\nlogin\n")
    (tmp_path / "vars.json").write_text(json.dumps({"role": role, **settings}))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    done = subprocess.run([ANSIBLE, "-i", str(tmp_path / "hosts.ini"), str(tmp_path / "play.yml"),
                           "-e", "@" + str(tmp_path / "vars.json")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    return done.stdout


def key_task_result(out: str, role: str, task: str) -> str:
    """The first word after the task's banner: ok, fatal, ..."""
    after = out.split(f"TASK [{role} : {task}]", 1)
    assert len(after) == 2, out
    return after[1].split("*\n", 1)[1].lstrip().split(":", 1)[0]


@pytest.mark.skipif(ANSIBLE is None, reason="ansible-playbook not installed")
@pytest.mark.parametrize("check", sorted(KEY_CHECKS))
@pytest.mark.parametrize("keys, taken", [(SK_KEYS, True), ([f"ssh-dss {ED25519}"], False)], ids=["sk-keys", "dss"])
def test_every_role_takes_the_same_keys(tmp_path, check, keys, taken):
    task, variable, settings = KEY_CHECKS[check]
    role = check.split("-")[0]
    out = run_role_validate(tmp_path, role, settings(keys))
    result = key_task_result(out, role, task)
    if taken:
        assert result == "ok", out
    else:
        assert result in ("fatal", "[ERROR]"), out
        assert variable in out.split(f"TASK [{role} : {task}]", 1)[1].split("TASK [", 1)[0]
