"""Images pulled from a registry (`pull: docker://...@sha256:...` and
`oras://...`), with the real Apptainer of the cluster and the test bed's
real registry (docker-registry at registry.test:5000, TLS by the test bed
CA, which the cluster trusts system-wide).

tests/testbed/registry.yml (run by prepare.yml) pushed two versions of a
busybox OCI image (hpcgw/busybox:v1, :v2) and of a tiny SIF
(hpcgw/tiny-sif:v1, :v2), each with /etc/hpcgw-image saying which, and kept
their digests in <state>/registry/digests.json. The site's converge pulled
v1 of both (the test inventory); the lifecycle tests run the role alone
(playbooks/images-lifecycle.yml) in a scratch gateway root, as
test_apptainer_images.py does, so the site's images are not touched; they
share that root, so they run on one xdist worker (group "registry"). The
last one pushes the converged notebook image and pulls it back by digest.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

SITE_ROOT = "/home/gateway/hpcgw"
ROOT = "/srv/hpcgw-registry-lifecycle"
PLAYBOOK = "molecule/default/playbooks/images-lifecycle.yml"
REGISTRY = "registry.test:5000"
ZERO = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def digests(testbed) -> dict[str, str]:
    return json.loads((testbed.state_dir / "registry" / "digests.json").read_text())


def oci(digests, version: str) -> str:
    return f"docker://{REGISTRY}/hpcgw/busybox@{digests[f'hpcgw/busybox:{version}']}"


def sif(digests, version: str) -> str:
    return f"oras://{REGISTRY}/hpcgw/tiny-sif@{digests[f'hpcgw/tiny-sif:{version}']}"


def says(cluster_host, path: str) -> str:
    """What the image at `path` says it is (its /etc/hpcgw-image), run as gateway."""
    run = cluster_host.run(
        f"cd /tmp && runuser -u gateway -- apptainer exec --containall {path} /bin/busybox cat /etc/hpcgw-image")
    assert run.rc == 0, run.stderr
    return run.stdout.strip()


# --- the site's converge -----------------------------------------------------

@pytest.mark.parametrize("name, reference, marker", [
    ("registry-oci", oci, "busybox v1"),
    ("registry-sif", sif, "tiny-sif v1"),
], ids=["docker", "oras"])
@pytest.mark.root_pass
def test_the_sites_registry_images_are_pulled_listed_and_run(cluster_host, gateway_mode, digests, name, reference,
                                                            marker):
    images = json.loads(cluster_host.check_output(f"cat {SITE_ROOT}/etc/images.json"))
    assert {"name": name, "path": f"{SITE_ROOT}/images/{name}.sif"}.items() <= next(
        image for image in images["images"] if image["name"] == name).items()
    # Root's in the root mode (the account cannot change them), the
    # account's in community-account mode.
    owner = "root" if gateway_mode == "root" else "gateway"
    for path in (f"{SITE_ROOT}/images/{name}.sif", f"{SITE_ROOT}/images/{name}.pull"):
        installed = cluster_host.file(path)
        assert (installed.is_file, installed.user, installed.group, installed.mode) == (True, owner, owner, 0o644)
        if gateway_mode == "root":
            assert cluster_host.run(f"runuser -u gateway -- test -w {path}").rc == 1
    assert cluster_host.file(f"{SITE_ROOT}/images/{name}.pull").content_string == reference(digests, "v1") + "\n"
    assert says(cluster_host, f"{SITE_ROOT}/images/{name}.sif") == marker


# --- the role alone, in a scratch gateway root ---------------------------------

@pytest.fixture(scope="module")
def scratch(cluster_host, gateway_mode):
    # Root's, or in community-account mode the account's (as the gateway role leaves it).
    owner = "-o gateway -g gateway " if gateway_mode == "account" else ""
    cluster_host.check_output(f"rm -rf {ROOT} && install -d {owner}-m 0755 {ROOT} {ROOT}/etc")
    yield ROOT
    cluster_host.run(f"rm -rf {ROOT}")


def settings(tmp_path, oci_ref: str, sif_ref: str, environment: dict | None = None) -> str:
    path = tmp_path / f"registry-{abs(hash((oci_ref, sif_ref, json.dumps(environment))))}.json"
    path.write_text(json.dumps({
        "apptainer_images_gateway_root": ROOT,
        "apptainer_images_pull_environment": environment or {},
        "apptainer_images_list": [
            {"name": "oci", "label": "OCI", "description": "docker://", "pull": oci_ref},
            {"name": "sif", "label": "SIF", "description": "oras://", "pull": sif_ref},
        ],
    }))
    return f"@{path}"


def state(cluster_host) -> dict[str, tuple[str, ...]]:
    """inode, mtime and sha256 of each installed image and record."""
    names = " ".join(f"{ROOT}/images/{name}" for name in ("oci.sif", "oci.pull", "sif.sif", "sif.pull"))
    stats = cluster_host.check_output(f"stat -c '%n %i %Y' {names}").splitlines()
    sums = dict(reversed(line.split()) for line in cluster_host.check_output(f"sha256sum {names}").splitlines())
    return {line.split()[0].rsplit("/", 1)[1]: (*line.split()[1:], sums[line.split()[0]]) for line in stats}


def leftovers(cluster_host) -> str:
    """Files a pull left in images/ or its .build/ (none after success or failure)."""
    return cluster_host.check_output(
        f"ls -A {ROOT}/images/.build; ls -A {ROOT}/images | grep '^\\.' | grep -vx '\\.build' || true")


@pytest.mark.xdist_group("registry")
def test_pulled_once_then_nothing_until_the_digest_changes(run_playbook, cluster_host, digests, scratch, tmp_path):
    start = time.monotonic()
    first = run_playbook(PLAYBOOK, "-e", settings(tmp_path, oci(digests, "v1"), sif(digests, "v1")))
    pulled_in = time.monotonic() - start
    assert first.returncode == 0, first.output[-3000:]
    assert first.recap("login.cluster.test")["changed"] > 0
    assert says(cluster_host, f"{ROOT}/images/oci.sif") == "busybox v1"
    assert says(cluster_host, f"{ROOT}/images/sif.sif") == "tiny-sif v1"
    images = json.loads(cluster_host.check_output(f"cat {ROOT}/etc/images.json"))
    assert [(image["name"], image["path"]) for image in images["images"]] == [
        ("oci", f"{ROOT}/images/oci.sif"), ("sif", f"{ROOT}/images/sif.sif")]
    assert cluster_host.file(f"{ROOT}/images/sif.pull").content_string == sif(digests, "v1") + "\n"
    assert leftovers(cluster_host) == ""
    before = state(cluster_host)

    start = time.monotonic()
    again = run_playbook(PLAYBOOK, "-e", settings(tmp_path, oci(digests, "v1"), sif(digests, "v1")))
    again_in = time.monotonic() - start
    assert again.returncode == 0, again.output[-3000:]
    assert again.recap("login.cluster.test")["changed"] == 0, again.output[-3000:]
    checked = run_playbook(PLAYBOOK, "--check", "-e", settings(tmp_path, oci(digests, "v1"), sif(digests, "v1")))
    assert checked.returncode == 0, checked.output[-3000:]
    assert checked.recap("login.cluster.test")["changed"] == 0, checked.output[-3000:]
    assert state(cluster_host) == before

    # A new digest for the OCI image: it alone is pulled again.
    newer = run_playbook(PLAYBOOK, "-e", settings(tmp_path, oci(digests, "v2"), sif(digests, "v1")))
    assert newer.returncode == 0, newer.output[-3000:]
    assert says(cluster_host, f"{ROOT}/images/oci.sif") == "busybox v2"
    after = state(cluster_host)
    assert after["oci.sif"] != before["oci.sif"] and after["oci.pull"] != before["oci.pull"]
    assert after["sif.sif"] == before["sif.sif"] and after["sif.pull"] == before["sif.pull"]
    assert cluster_host.file(f"{ROOT}/images/oci.pull").content_string == oci(digests, "v2") + "\n"

    # Check mode with a new SIF digest: the pull is reported, nothing is pulled.
    dry = run_playbook(PLAYBOOK, "--check", "-e", settings(tmp_path, oci(digests, "v2"), sif(digests, "v2")))
    assert dry.returncode == 0, dry.output[-3000:]
    assert dry.recap("login.cluster.test")["changed"] > 0
    assert state(cluster_host) == after

    newest = run_playbook(PLAYBOOK, "-e", settings(tmp_path, oci(digests, "v2"), sif(digests, "v2")))
    assert newest.returncode == 0, newest.output[-3000:]
    assert says(cluster_host, f"{ROOT}/images/sif.sif") == "tiny-sif v2"
    assert state(cluster_host)["oci.sif"] == after["oci.sif"]
    print(f"registry pulls: first run {pulled_in:.1f} s, unchanged run {again_in:.1f} s")


def tampered(cluster_host, testbed, kind: str) -> str:
    """A new image pushed to the registry, whose only layer is then changed in
    the registry's storage (as a compromised registry or mirror would serve
    it): returns the reference that pins the manifest, which still names the
    original layer's digest. New content on every call: no cache has it."""
    stamp = f"{kind} {time.time_ns()}"
    repository = f"hpcgw/tampered-{kind}"
    if kind == "oci":
        digest = json.loads(cluster_host.check_output(
            f"python3 /var/tmp/hpcgw-registry-push.py image {REGISTRY} {repository} latest bin/busybox=/bin/busybox "
            f"'etc/hpcgw-image:{stamp}' >/dev/null && python3 /var/tmp/hpcgw-registry-push.py digests {REGISTRY} "
            f"{repository}:latest"))[f"{repository}:latest"]
    else:
        work = "/var/tmp/hpcgw-registry-tampered"
        cluster_host.check_output(
            f"rm -rf {work} && install -d -o gateway {work} && cd {work} && runuser -u gateway -- sh -c "
            f"'mkdir -p tiny/bin tiny/etc && cp /bin/busybox tiny/bin/ && echo \"{stamp}\" > tiny/etc/hpcgw-image "
            f"&& apptainer -s build tiny.sif tiny/ && apptainer -s push tiny.sif oras://{REGISTRY}/{repository}:latest'"
            f" && rm -rf {work}")
        digest = json.loads(cluster_host.check_output(
            f"python3 /var/tmp/hpcgw-registry-push.py digests {REGISTRY} {repository}:latest"))[f"{repository}:latest"]
    manifest = json.loads(cluster_host.check_output(
        f"curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "
        f"https://{REGISTRY}/v2/{repository}/manifests/{digest}"))
    layer = manifest["layers"][0]["digest"].split(":")[1]
    blob = f"/var/lib/docker-registry/docker/registry/v2/blobs/sha256/{layer[:2]}/{layer}/data"
    subprocess.run(["docker", "exec", testbed.container("services"), "sh", "-c",
                    f"printf X | dd of={blob} bs=1 seek=$(($(stat -c %s {blob}) / 2)) conv=notrunc 2>/dev/null"
                    f" && test $(sha256sum {blob} | cut -c1-64) != {layer}"], check=True)
    return f"{'docker' if kind == 'oci' else 'oras'}://{REGISTRY}/{repository}@{digest}"


@pytest.mark.xdist_group("registry")
@pytest.mark.parametrize("case", ["digest the registry lacks", "oras:// of an OCI image",
                                  "tampered OCI layer", "tampered SIF"])
def test_a_wrong_digest_fails_clearly_and_keeps_the_old_image(run_playbook, cluster_host, testbed, digests, scratch,
                                                              tmp_path, case):
    # v1 of both in place (the previous case leaves them so: no run then).
    records = cluster_host.run(f"cat {ROOT}/images/oci.pull {ROOT}/images/sif.pull")
    if records.rc != 0 or records.stdout != f"{oci(digests, 'v1')}\n{sif(digests, 'v1')}\n":
        good = run_playbook(PLAYBOOK, "-e", settings(tmp_path, oci(digests, "v1"), sif(digests, "v1")))
        assert good.returncode == 0, good.output[-3000:]
    kept = state(cluster_host)
    assert says(cluster_host, f"{ROOT}/images/oci.sif") == "busybox v1"

    if case == "digest the registry lacks":
        wrong, index, name = settings(tmp_path, f"docker://{REGISTRY}/hpcgw/busybox@{ZERO}", sif(digests, "v1"),
                                      {"APPTAINER_DOCKER_USERNAME": "site",
                                       "APPTAINER_DOCKER_PASSWORD": "hunter2-not-shown"}), 0, "oci"
    elif case == "oras:// of an OCI image":  # a digest the registry has, of an OCI image, not of a SIF
        wrong, index, name = settings(
            tmp_path, oci(digests, "v1"),
            f"oras://{REGISTRY}/hpcgw/busybox@{digests['hpcgw/busybox:v2']}"), 1, "sif"
    elif case == "tampered OCI layer":
        wrong, index, name = settings(tmp_path, tampered(cluster_host, testbed, "oci"), sif(digests, "v1")), 0, "oci"
    else:
        wrong, index, name = settings(tmp_path, oci(digests, "v1"), tampered(cluster_host, testbed, "sif")), 1, "sif"
    failed = run_playbook(PLAYBOOK, "-v", "-e", wrong)
    assert failed.returncode != 0
    assert f"Pulling apptainer_images_list[{index}] ({name}) from" in failed.output, failed.output[-3000:]
    assert f"apptainer_images_list[{index}].pull" in failed.output
    assert "The old image (if any) and its record are kept" in failed.output
    assert "Traceback" not in failed.output
    assert "hunter2" not in failed.output
    if case.startswith("tampered"):  # the runtime's own check, reported by the role
        assert "error verifying sha256 checksum" in failed.output, failed.output[-3000:]
    assert state(cluster_host) == kept
    assert leftovers(cluster_host) == ""


@pytest.mark.xdist_group("registry")
def test_the_sites_notebook_image_can_come_from_the_registry(run_playbook, cluster_host, digests, scratch, tmp_path):
    """The converged notebook image, pushed with `apptainer push` as a site
    would publish it, pulled back by digest: the same file, and its Jupyter
    server runs."""
    reference = f"{REGISTRY}/hpcgw/notebook:verify"
    cluster_host.check_output(
        f"cd /tmp && runuser -u gateway -- apptainer -s push {SITE_ROOT}/images/notebook.sif oras://{reference}")
    digest = json.loads(cluster_host.check_output(
        f"python3 /var/tmp/hpcgw-registry-push.py digests {REGISTRY} hpcgw/notebook:verify"))["hpcgw/notebook:verify"]
    pulled = run_playbook(PLAYBOOK, "-e", settings(tmp_path, oci(digests, "v1"),
                                                   f"oras://{REGISTRY}/hpcgw/notebook@{digest}"))
    assert pulled.returncode == 0, pulled.output[-3000:]
    assert cluster_host.run(f"cmp {SITE_ROOT}/images/notebook.sif {ROOT}/images/sif.sif").rc == 0
    run = cluster_host.run(f"cd /tmp && runuser -u gateway -- apptainer exec --containall {ROOT}/images/sif.sif "
                           "jupyterhub-singleuser --version")
    assert run.rc == 0, run.stderr
    assert run.stdout.strip().split(".")[0] == "5"
