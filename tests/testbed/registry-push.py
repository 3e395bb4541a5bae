#!/usr/bin/env python3
"""The test bed's registry client (tests/testbed/registry.yml), standard library only.

  registry-push.py image HOST:PORT REPO TAG ROOTFS_FILE...   push an OCI image, print its digest
  registry-push.py digests HOST:PORT REPO:TAG...             print {"REPO:TAG": digest or null}

`image` makes a one-layer OCI image (linux, this machine's architecture)
from files given as `path-in-image=source` (a file, copied with mode 0755)
or `path-in-image@target` (a symbolic link) or `path-in-image:text` (a file
holding `text`), and pushes it with the distribution API (blob uploads, then
the manifest under TAG). The layer is made deterministically (sorted, owner
0, mtime 0, gzip without a time stamp), so the same files always give the
same digest and a second push changes nothing. It prints
`<digest> pushed|present`.

`digests` prints, as JSON, the digest of the manifest each REPO:TAG names
(any manifest type: an OCI image or an ORAS artifact such as `apptainer
push` makes), null for a tag the registry does not have.

TLS is verified against the system's CAs (the test bed CA, which
prepare.yml installs): the registry is reached by its public name.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = ", ".join([
    OCI_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def request(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    return urllib.request.urlopen(req, timeout=30)


def manifest_digest(base: str, repo: str, tag: str) -> str | None:
    try:
        with request("HEAD", f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}) as answer:
            return answer.headers["Docker-Content-Digest"]
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def layer(entries: list[str]) -> bytes:
    """A deterministic tar of the entries (see the module's help)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        made = set()
        for entry in sorted(entries):
            for sep in ("=", "@", ":"):
                if sep in entry:
                    path, value = entry.split(sep, 1)
                    break
            else:
                raise SystemExit(f"registry-push: bad entry {entry!r}")
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in made:
                    made.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            if sep == "@":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, value, 0o777
                tar.addfile(info)
                continue
            content = open(value, "rb").read() if sep == "=" else (value + "\n").encode()
            info.size, info.mode = len(content), 0o755 if sep == "=" else 0o644
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def push_blob(base: str, repo: str, blob: bytes) -> str:
    digest = sha256(blob)
    try:
        request("HEAD", f"{base}/v2/{repo}/blobs/{digest}").close()
        return digest
    except urllib.error.HTTPError as error:
        if error.code != 404:
            raise
    with request("POST", f"{base}/v2/{repo}/blobs/uploads/", data=b"") as answer:
        location = urllib.parse.urljoin(base, answer.headers["Location"])
    joiner = "&" if "?" in location else "?"
    request("PUT", f"{location}{joiner}digest={urllib.parse.quote(digest)}", data=blob,
            headers={"Content-Type": "application/octet-stream"}).close()
    return digest


def push_image(base: str, repo: str, tag: str, entries: list[str]) -> str:
    tar = layer(entries)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as stream:
        stream.write(tar)
    compressed = gz.getvalue()
    config = json.dumps({
        "architecture": ARCH, "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": push_blob(base, repo, config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": push_blob(base, repo, compressed), "size": len(compressed)}],
    }, sort_keys=True).encode()
    digest = sha256(manifest)
    if manifest_digest(base, repo, tag) == digest:
        return f"{digest} present"
    request("PUT", f"{base}/v2/{repo}/manifests/{tag}", data=manifest,
            headers={"Content-Type": OCI_MANIFEST}).close()
    return f"{digest} pushed"


def main(argv: list[str]) -> int:
    if len(argv) >= 5 and argv[1] == "image":
        print(push_image(f"https://{argv[2]}", argv[3], argv[4], argv[5:]))
        return 0
    if len(argv) >= 4 and argv[1] == "digests":
        print(json.dumps({ref: manifest_digest(f"https://{argv[2]}", *ref.rsplit(":", 1)) for ref in argv[3:]}))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
