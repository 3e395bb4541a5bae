"""roles/apptainer_images, run for real with ansible-playbook on localhost
(connection local, no become, nothing changed): the `validate` entry point
(argument spec, then tasks/validate.yml and the runtime's detection, with
fake `apptainer`/`singularity` programs that print a version), and the
templates rendered the way the role renders them (notebook.def.j2 with the
hub's jupyterhub_version, images.json.j2).

All cases in one ansible-playbook run (tests/unit/role_cases.py): each
records the message it failed with, or "passed" and what the role renders.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from role_cases import ANSIBLE_PLAYBOOK, run_cases

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "apptainer_images"
HUB_VERSION = "5.4.1"  # the hub's jupyterhub_version in the test inventory (not the role's default)
SHA = "sha256:" + "ab" * 32
DOCKER = "docker://registry.test:5000/hpcgw/busybox@" + SHA
ORAS = "oras://registry.example.org/site/ml-image@" + SHA

GOOD_IMAGE = {"name": "notebook", "label": "JupyterLab", "description": "", "definition": "notebook.def.j2"}

# name -> (variables of the play, fragment the failure message must contain; None: passes)
CASES: dict[str, tuple[dict, str | None]] = {
    "defaults": ({}, None),
    "all_sources": ({"apptainer_images_list": [
        GOOD_IMAGE,
        {"name": "r-4.4", "label": "R", "description": "R 4.4", "url": "https://example.org/r.sif", "checksum": SHA,
         "command": ["/opt/r/bin/jupyterhub-singleuser", "--debug"]},
        {"name": "site_ml", "label": "ML", "description": "", "file": "files/ml.sif"},
    ], "apptainer_images_binds": [{"src": "/data/sets", "dest": "/datasets", "mode": "ro"}, {"src": "/scratch"}]}, None),
    "pull_sources": ({"apptainer_images_list": [
        GOOD_IMAGE,
        {"name": "bb", "label": "BB", "description": "", "pull": DOCKER},
        {"name": "ml", "label": "ML", "description": "", "pull": ORAS},
        {"name": "lh", "label": "LH", "description": "", "pull": "docker://localhost/a/b_c__d--e.f@" + SHA},
        {"name": "port", "label": "P", "description": "", "pull": "oras://registry:5000/a@" + SHA},
    ]}, None),
    "pull_tag": ({"apptainer_images_list": [
        GOOD_IMAGE, {"name": "bb", "label": "BB", "description": "", "pull": "docker://registry.test:5000/hpcgw/busybox:v1"}]},
        "apptainer_images_list[1].pull (bb) must be docker://<registry host>[:port]/<repository>@sha256:<64 hex> or"
        " oras://<registry host>[:port]/<repository>@sha256:<64 hex>, pinned by the manifest's digest (lower case)"
        " and without a tag: it names a tag, which the registry can move"),
    "pull_tag_and_digest": ({"apptainer_images_list": [
        {"name": "bb", "label": "BB", "description": "", "pull": "docker://registry.test/hpcgw/busybox:v1@" + SHA}]},
        "apptainer_images_list[0].pull (bb) must be docker://"),
    "pull_no_host": ({"apptainer_images_list": [
        {"name": "bb", "label": "BB", "description": "", "pull": "docker://library/busybox@" + SHA}]},
        "apptainer_images_list[0].pull (bb) must be docker://"),
    "pull_upper_hex": ({"apptainer_images_list": [
        {"name": "bb", "label": "BB", "description": "", "pull": DOCKER.upper().replace("DOCKER:", "docker:")}]},
        "apptainer_images_list[0].pull (bb) must be"),
    "pull_short_digest": ({"apptainer_images_list": [
        {"name": "bb", "label": "BB", "description": "", "pull": DOCKER[:-1]}]},
        "apptainer_images_list[0].pull (bb) must be"),
    "pull_https": ({"apptainer_images_list": [
        {"name": "bb", "label": "BB", "description": "", "pull": "https://registry.test/hpcgw/busybox@" + SHA}]},
        "apptainer_images_list[0].pull (bb) must be"),
    "pull_library": ({"apptainer_images_list": [
        {"name": "bb", "label": "BB", "description": "", "pull": "library://registry.test/a/b@" + SHA}]},
        "apptainer_images_list[0].pull (bb) must be"),
    "pull_and_url": ({"apptainer_images_list": [
        {"name": "bb", "label": "BB", "description": "", "pull": DOCKER, "url": "https://example.org/c.sif",
         "checksum": SHA}]},
        "apptainer_images_list[0] (bb) must have exactly one source, a non-empty definition, url, file or pull;"
        " it has url, pull"),
    "pull_with_checksum": ({"apptainer_images_list": [
        {"name": "bb", "label": "BB", "description": "", "pull": DOCKER, "checksum": SHA}]},
        "apptainer_images_list[0].checksum is only for a url image"),
    "pull_environment": ({"apptainer_images_pull_environment": {"SSL_CERT_FILE": "/etc/site-ca.pem"},
                          "apptainer_images_list": [GOOD_IMAGE]}, None),
    "base_and_ca": ({"apptainer_images_base_image": "/srv/base/debian.sif",
                     "apptainer_images_ca_bundle": "/etc/ssl/certs/site-ca.pem"}, None),
    "empty_list": ({"apptainer_images_list": []}, "apptainer_images_list must name at least one image"),
    "bad_name": ({"apptainer_images_list": [GOOD_IMAGE, {**GOOD_IMAGE, "name": "Bad/Name"}]},
                 "apptainer_images_list[1].name must be a safe id"),
    "duplicate": ({"apptainer_images_list": [GOOD_IMAGE, GOOD_IMAGE]},
                  "apptainer_images_list names an image twice: notebook"),
    "two_sources": ({"apptainer_images_list": [{**GOOD_IMAGE, "file": "x.sif"}]},
                    "apptainer_images_list[0] (notebook) must have exactly one source"),
    "no_source": ({"apptainer_images_list": [{"name": "a", "label": "A", "description": ""}]},
                  "must have exactly one source, a non-empty definition, url, file or pull; it has none"),
    "bad_checksum": ({"apptainer_images_list": [
        GOOD_IMAGE, GOOD_IMAGE | {"name": "b"},
        {"name": "c", "label": "C", "description": "", "url": "https://example.org/c.sif", "checksum": "sha256:abc"},
    ]}, "apptainer_images_list[2].checksum must be sha256:<64 hex>"),
    "missing_checksum": ({"apptainer_images_list": [
        {"name": "c", "label": "C", "description": "", "url": "https://example.org/c.sif"}]},
        "apptainer_images_list[0].checksum must be sha256:<64 hex>"),
    "checksum_without_url": ({"apptainer_images_list": [GOOD_IMAGE | {"checksum": SHA}]},
                             "apptainer_images_list[0].checksum is only for a url image"),
    "no_label": ({"apptainer_images_list": [GOOD_IMAGE | {"label": " "}]},
                 "apptainer_images_list[0] (notebook) needs a label"),
    "unknown_field": ({"apptainer_images_list": [GOOD_IMAGE | {"labl": "x"}]}, "labl"),
    "bad_command": ({"apptainer_images_list": [GOOD_IMAGE | {"command": ["jupyterhub-singleuser", ""]}]},
                    "apptainer_images_list[0].command must be a non-empty list"),
    "bind_comma": ({"apptainer_images_binds": [{"src": "/data"}, {"src": "/a,b", "dest": "/x"}]},
                   "apptainer_images_binds[1] must be {src, dest, mode}"),
    "bind_colon": ({"apptainer_images_binds": [{"src": "/data", "dest": "/d:rw"}]},
                   "apptainer_images_binds[0] must be {src, dest, mode}"),
    "bind_relative": ({"apptainer_images_binds": [{"src": "data"}]}, "apptainer_images_binds[0] must be"),
    "bind_dotdot": ({"apptainer_images_binds": [{"src": "/data/../etc"}]}, "apptainer_images_binds[0] must be"),
    "bind_mode": ({"apptainer_images_binds": [{"src": "/data", "mode": "rwx"}]}, "mode"),
    "bind_home": ({"apptainer_images_binds": [{"src": "/data", "dest": "/home/user/data"}]},
                  "apptainer_images_binds[0].dest must not be /home, /home/user or below"),
    "bind_home_by_default": ({"apptainer_images_binds": [{"src": "/data"}, {"src": "/home/user"}]},
                             "apptainer_images_binds[1].dest must not be"),
    "bind_above_gateway_root": ({"apptainer_images_binds": [{"src": "/data"}, {"src": "/srv", "dest": "/h"}]},
                                "apptainer_images_binds[1].src (/srv) would show /srv/hpcgw to every"),
    "bind_in_gateway_root": ({"apptainer_images_binds": [{"src": "/srv/hpcgw/keys", "dest": "/k"}]},
                             "apptainer_images_binds[0].src (/srv/hpcgw/keys) would show /srv/hpcgw to"),
    "bind_in_gateway_home": ({"apptainer_images_user": "root", "apptainer_images_gateway_root": "/srv/gw",
                              "apptainer_images_binds": [{"src": "/root/.ssh", "dest": "/k"}]},
                             "would show /root to every notebook"),
    "bind_beside_gateway_root": ({"apptainer_images_binds": [{"src": "/srv/hpcgw-data", "dest": "/d"}]}, None),
    "wrong_hub_version": ({"apptainer_images_notebook_packages": {"jupyterhub": "5.5.4", "jupyterlab": "4.6.6"}},
                          f"must equal the hub's jupyterhub_version ({HUB_VERSION})"),
    "version_range": ({"apptainer_images_notebook_packages": {"jupyterhub": HUB_VERSION, "jupyterlab": ">=4"}},
                      "exact versions"),
    "bad_gpu_flag": ({"apptainer_images_gpu_flag": "--nv --rocm"}, "apptainer_images_gpu_flag must be"),
    "bad_base_image": ({"apptainer_images_base_image": "base.sif"}, "apptainer_images_base_image"),
    "bad_command_choice": ({"apptainer_images_command": "docker"}, "apptainer_images_command must be auto"),
    "runtime_missing": ({"apptainer_images_command": "singularity"},
                        'apptainer_images_command is "singularity" but singularity is installed on'),
    "apptainer_too_old": ({"apptainer_images_command": "{{ fakes }}/old/apptainer"},
                          "is a apptainer 1.0.3; the gateway needs Apptainer >= 1.1 or SingularityCE >= 3.9"),
    "singularity_too_old": ({"apptainer_images_command": "{{ fakes }}/sce-old/singularity"},
                            "is a singularity 3.8.4"),
    "singularity_ok": ({"apptainer_images_command": "{{ fakes }}/sce/singularity"}, None),
    # Community-account mode: the account (nobody: no subordinate ids here) cannot
    # build with --fakeroot, so a definition image is refused; fetched ones pass.
    "bad_mode": ({"apptainer_images_mode": "sudo"}, "apptainer_images_mode"),
    "account_definition_without_subids": (
        {"apptainer_images_mode": "account", "apptainer_images_user": "nobody",
         "apptainer_images_list": [{"name": "site", "label": "Site", "description": "", "url": "https://example.org/s.sif",
                                    "checksum": SHA}, GOOD_IMAGE]},
        "apptainer_images_list[1] (notebook) is built from a definition (apptainer_images_list[1].definition), "
        "which in account mode"),
    "account_definition_names_the_sources": (
        {"apptainer_images_mode": "account", "apptainer_images_user": "nobody"},
        "has no range in /etc/subuid and /etc/subgid, so this login node allows only the image sources url, file, pull"),
    "account_fetched_images_only": (
        {"apptainer_images_mode": "account", "apptainer_images_user": "nobody",
         "apptainer_images_list": [{"name": "site", "label": "Site", "description": "", "url": "https://example.org/s.sif",
                                    "checksum": SHA}, {"name": "ml", "label": "ML", "description": "", "file": "ml.sif"}]},
        None),
    "root_mode_definition_needs_no_check": ({"apptainer_images_mode": "root", "apptainer_images_user": "nobody"}, None),
    "not_a_runtime": ({"apptainer_images_command": "{{ fakes }}/junk/apptainer"},
                      "not a runtime whose version it could read"),
}

FAKES = {
    "ok/apptainer": "echo 'apptainer version 1.4.5'",
    "old/apptainer": "echo 'apptainer version 1.0.3'",
    "sce/singularity": "echo 'singularity-ce version 4.1.2-noble'",
    "sce-old/singularity": "echo 'singularity-ce version 3.8.4'",
    "junk/apptainer": "echo 'hello'",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if not ANSIBLE_PLAYBOOK.exists() or not shutil.which("python3", path="/usr/bin"):
        pytest.skip("needs ansible-playbook beside pytest and /usr/bin/python3")
    here = tmp_path_factory.mktemp("apptainer-images")
    fakes = here / "fakes"
    for path, body in FAKES.items():
        program = fakes / path
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text(f"#!/bin/sh\n{body}\n")
        program.chmod(0o755)
    templates = ROLE / "templates"
    outcomes = run_cases(
        here, str(ROLE), {name: variables for name, (variables, _) in CASES.items()}, group="cluster",
        inventory={"hub": {"hosts": {"hubvm": {"jupyterhub_version": HUB_VERSION}}},
                   "cluster": {"vars": {"fakes": str(fakes), "gateway_root": "/srv/hpcgw"}}},
        # What the role renders from these settings, the way it renders it.
        record={"def": "{{ lookup('ansible.builtin.template', '%s', template_vars={'__apptainer_images_item': {'name': 'notebook'}}) }}" % (templates / "notebook.def.j2"),
                "images.json": "{{ lookup('ansible.builtin.template', '%s') }}" % (templates / "images.json.j2"),
                "published": "{{ apptainer_images_published | to_json }}"},
        # apptainer (1.4.5) is on PATH for `auto`; singularity is not.
        env={"PATH": f"{fakes / 'ok'}:{Path(sys.executable).parent}:/usr/bin:/bin"})
    out = here / "out"
    out.mkdir()
    for case, outcome in outcomes.items():
        for kind, text in outcome.items():
            (out / f"{case}.{kind}").write_text(text)
    return out


@pytest.mark.parametrize("case", CASES)
def test_validate(results, case):
    expected = CASES[case][1]
    result = " ".join((results / f"{case}.result").read_text().split())
    if expected is None:
        assert result == "passed"
    else:
        assert expected in result, result


def test_the_definition_has_the_hubs_jupyterhub_and_debootstraps_without_a_base(results):
    definition = (results / "defaults.def").read_text()
    assert "Bootstrap: debootstrap\nOSVersion: trixie\nMirrorURL: http://deb.debian.org/debian\n" in definition
    assert f"jupyterhub=={HUB_VERSION} \\" in definition
    assert "jupyterlab==4.6.6" in definition
    assert "python3-venv" in definition
    assert "%files" not in definition and "PIP_CERT" not in definition
    assert 'exec "$@"' in definition
    assert f"org.hpcgateway.jupyterhub {HUB_VERSION}" in definition


def test_the_definition_from_a_base_image_with_the_sites_ca(results):
    definition = (results / "base_and_ca.def").read_text()
    assert "Bootstrap: localimage\nFrom: /srv/base/debian.sif\n" in definition
    assert "debootstrap" not in definition
    assert "%files\n    /etc/ssl/certs/site-ca.pem /etc/hpcgw/pip-ca.pem\n" in definition
    assert "export PIP_CERT=/etc/hpcgw/pip-ca.pem\n    /opt/notebook/bin/pip install" in definition


def test_images_json_and_the_published_list(results):
    images = json.loads((results / "all_sources.images.json").read_text())
    assert images == {
        "runtime": str(results.parent / "fakes" / "ok" / "apptainer"),
        "runtime_kind": "apptainer",
        "images": [
            {"name": "notebook", "label": "JupyterLab", "description": "", "path": "/srv/hpcgw/images/notebook.sif",
             "command": ["jupyterhub-singleuser"]},
            {"name": "r-4.4", "label": "R", "description": "R 4.4", "path": "/srv/hpcgw/images/r-4.4.sif",
             "command": ["/opt/r/bin/jupyterhub-singleuser", "--debug"]},
            {"name": "site_ml", "label": "ML", "description": "", "path": "/srv/hpcgw/images/site_ml.sif",
             "command": ["jupyterhub-singleuser"]},
        ],
        "binds": [{"src": "/data/sets", "dest": "/datasets", "mode": "ro"},
                  {"src": "/scratch", "dest": "/scratch", "mode": "ro"}],
        "gpu_flag": "--nv",
    }
    assert json.loads((results / "all_sources.published").read_text()) == [
        {"name": "notebook", "label": "JupyterLab", "description": ""},
        {"name": "r-4.4", "label": "R", "description": "R 4.4"},
        {"name": "site_ml", "label": "ML", "description": ""},
    ]
    pulled = json.loads((results / "pull_sources.images.json").read_text())["images"]
    assert [(image["name"], image["path"]) for image in pulled[1:3]] == [
        ("bb", "/srv/hpcgw/images/bb.sif"), ("ml", "/srv/hpcgw/images/ml.sif")]
    singularity = json.loads((results / "singularity_ok.images.json").read_text())
    assert singularity["runtime_kind"] == "singularity"
    assert singularity["runtime"].endswith("/sce/singularity")


def test_images_json_is_what_the_job_wrapper_accepts(results):
    from test_gateway_job_images import job

    for case in ("defaults", "all_sources", "singularity_ok"):
        images = job.read_images(results / f"{case}.images.json")
        assert images["images"][0]["name"] == "notebook"
