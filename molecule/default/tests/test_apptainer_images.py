"""The image lifecycle with the real Apptainer of the cluster, as `gateway`.

The apptainer_images role runs alone (playbooks/images-lifecycle.yml) in a
scratch gateway root, with three small images: one built from a def-file
template (from a busybox folder, in about a second), one downloaded with
its sha256 (a file:// URL on the cluster; no registry here), and one copied
from a file on the controller. Two versions of the downloaded SIF (two
builds of one folder differ in their SIF header) stand for a site's new
release. The site's own images are not touched, so this runs beside the
other tests.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import REPO

ROOT = "/srv/hpcgw-lifecycle"
SOURCES = "/srv/hpcgw-lifecycle-sources"
PLAYBOOK = "molecule/default/playbooks/images-lifecycle.yml"
# The controller's copies of the downloadable SIFs, for the `file` source.
LOCAL_SIF = {version: REPO / ".testbed" / f"lifecycle-local-{version}.sif" for version in ("v1", "v2")}


@pytest.fixture(scope="module")
def sources(cluster_host, testbed, gateway_mode) -> dict[str, str]:
    """A busybox folder to build from, and two versions of a SIF to download
    (download-v1.sif, download-v2.sif); returns {version: sha256}. The scratch
    gateway root is root's, or in community-account mode the account's (as
    the gateway role would leave it)."""
    owner = "-o gateway -g gateway " if gateway_mode == "account" else ""
    script = f"""set -e
rm -rf {ROOT} {SOURCES}
install -d {owner}-m 0755 {ROOT} {ROOT}/etc
install -d -o gateway -m 0755 {SOURCES} {SOURCES}/tiny/bin {SOURCES}/tiny/etc
cp /bin/busybox {SOURCES}/tiny/bin/busybox && ln -s busybox {SOURCES}/tiny/bin/sh
echo 'ID=lifecycle' > {SOURCES}/tiny/etc/os-release
chown -R gateway: {SOURCES}
cd {SOURCES}
for version in v1 v2; do
  runuser -u gateway -- apptainer build --force download-$version.sif tiny/ >/dev/null 2>&1
  echo $version $(sha256sum download-$version.sif | cut -d' ' -f1)
done
"""
    checksums = dict(line.split() for line in cluster_host.check_output("bash -c %s", script).splitlines())
    assert checksums["v1"] != checksums["v2"]
    for version, local in LOCAL_SIF.items():
        subprocess.run(["docker", "cp", f"{testbed.container('cluster')}:{SOURCES}/download-{version}.sif", str(local)],
                       check=True, capture_output=True)
    yield checksums
    for local in LOCAL_SIF.values():
        local.unlink(missing_ok=True)
    cluster_host.run(f"rm -rf {ROOT} {SOURCES}")


def settings(tmp_path, marker: str, checksum: str, version: str = "v1"):
    """The lifecycle's image list: the downloaded and copied images are `version`."""
    path = tmp_path / f"images-{marker}-{version}-{checksum[:8]}.json"
    path.write_text(json.dumps({
        "apptainer_images_gateway_root": ROOT,
        "lifecycle_sandbox": f"{SOURCES}/tiny",
        "lifecycle_marker": marker,
        "apptainer_images_list": [
            {"name": "tiny", "label": "Tiny", "description": "busybox",
             "definition": str(REPO / "molecule/default/templates/lifecycle-tiny.def.j2")},
            {"name": "fetched", "label": "Fetched", "description": "downloaded",
             "url": f"file://{SOURCES}/download-{version}.sif", "checksum": f"sha256:{checksum}"},
            {"name": "copied", "label": "Copied", "description": "from the controller",
             "file": str(LOCAL_SIF[version])},
        ],
    }))
    return f"@{path}"


def state(cluster_host) -> dict:
    """inode and mtime of each installed image (a rebuild installs a new file)."""
    out = cluster_host.check_output(
        f"stat -c '%n %i %Y' {ROOT}/images/tiny.sif {ROOT}/images/fetched.sif {ROOT}/images/copied.sif")
    return {line.split()[0].rsplit("/", 1)[1]: tuple(line.split()[1:]) for line in out.splitlines()}


def marker(cluster_host) -> str:
    run = cluster_host.run(f"cd /tmp && runuser -u gateway -- apptainer exec --containall {ROOT}/images/tiny.sif /bin/busybox cat /marker")
    assert run.rc == 0, run.stderr
    return run.stdout.strip()


def sha256(cluster_host, name: str) -> str:
    return cluster_host.check_output(f"sha256sum {ROOT}/images/{name}").split()[0]


def test_a_changed_source_rebuilds_or_refetches_an_unchanged_one_does_not(run_playbook, cluster_host, sources,
                                                                          tmp_path):
    first = run_playbook(PLAYBOOK, "-e", settings(tmp_path, "one", sources["v1"]))
    assert first.returncode == 0, first.output[-3000:]
    assert first.recap("login.cluster.test")["changed"] > 0
    assert marker(cluster_host) == "one"
    before = state(cluster_host)
    images = json.loads(cluster_host.check_output(f"cat {ROOT}/etc/images.json"))
    assert [image["name"] for image in images["images"]] == ["tiny", "fetched", "copied"]
    assert sha256(cluster_host, "fetched.sif") == sha256(cluster_host, "copied.sif") == sources["v1"]

    again = run_playbook(PLAYBOOK, "-e", settings(tmp_path, "one", sources["v1"]))
    assert again.returncode == 0, again.output[-3000:]
    assert again.recap("login.cluster.test")["changed"] == 0, again.output[-3000:]
    assert state(cluster_host) == before

    # The definition changes; the other two sources do not.
    changed = run_playbook(PLAYBOOK, "-e", settings(tmp_path, "two", sources["v1"]))
    assert changed.returncode == 0, changed.output[-3000:]
    assert marker(cluster_host) == "two"
    after = state(cluster_host)
    assert after["tiny.sif"] != before["tiny.sif"]
    assert after["fetched.sif"] == before["fetched.sif"]
    assert after["copied.sif"] == before["copied.sif"]

    # A new release: the url (with its checksum) and the controller's file
    # change; the definition does not.
    released = run_playbook(PLAYBOOK, "-e", settings(tmp_path, "two", sources["v2"], version="v2"))
    assert released.returncode == 0, released.output[-3000:]
    assert released.recap("login.cluster.test")["changed"] >= 2, released.output[-3000:]
    final = state(cluster_host)
    assert final["tiny.sif"] == after["tiny.sif"]
    assert final["fetched.sif"] != after["fetched.sif"]
    assert final["copied.sif"] != after["copied.sif"]
    assert sha256(cluster_host, "fetched.sif") == sha256(cluster_host, "copied.sif") == sources["v2"]


def test_a_wrong_checksum_fails_clearly_and_keeps_the_old_image(run_playbook, cluster_host, sources, tmp_path):
    good = run_playbook(PLAYBOOK, "-e", settings(tmp_path, "one", sources["v1"]))
    assert good.returncode == 0, good.output[-3000:]
    kept = sha256(cluster_host, "fetched.sif")
    assert kept == sources["v1"]

    # v1's url with a checksum no file has.
    wrong = run_playbook(PLAYBOOK, "-e", settings(tmp_path, "one", "0" * 64))
    assert wrong.returncode != 0
    assert "apptainer_images_list[1] (fetched)" in wrong.output, wrong.output[-3000:]
    assert "checksum" in wrong.output
    assert "Traceback" not in wrong.output
    assert sha256(cluster_host, "fetched.sif") == kept
    assert cluster_host.check_output(f"ls -A {ROOT}/images | grep -c '^\\.fetched' || true") == "0"

