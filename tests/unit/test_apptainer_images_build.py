"""roles/apptainer_images, the `main` entry point run for real with
ansible-playbook on localhost, in a temporary gateway_root, with a fake
`apptainer` whose `build` writes the definition it was given into the
output file (or fails, or plants a symlink, when the definition says so) and
counts its builds. It proves the image lifecycle:

- a def-file image is built once, and not again while its definition is
  the same (a second run changes nothing);
- check mode builds nothing and reports the build that would run;
- a failed build keeps the old image and its recorded definition, leaves no
  build files, and the next run builds again;
- a build that is a symlink is refused (root never follows it);
- a url image whose checksum does not match keeps the old image.

Needs root (the role makes root-owned files); privilege dropping to the
gateway account (become_user) is not exercised here (ansible_become: false).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "apptainer_images"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

FAKE_APPTAINER = """#!{python}
import os, sys
here = {here!r}
if sys.argv[1:] == ["--version"]:
    print("apptainer version 1.4.5")
    sys.exit(0)
assert sys.argv[1:4] == ["build", "--fakeroot", "--force"], sys.argv
out, definition = sys.argv[4], sys.argv[5]
text = open(definition).read()
with open(os.path.join(here, "builds.log"), "a") as log:
    log.write(definition + "\\n")
if "flavor FAIL" in text:
    sys.stderr.write("FATAL:   While performing build: conveyor failed to get: no such image\\n")
    sys.exit(255)
if "flavor LINK" in text:
    os.symlink(os.path.join(here, "secret"), out)
    sys.exit(0)
with open(out, "w") as sif:
    sif.write("SIF " + text)
"""


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Site:
    def __init__(self, here: Path):
        self.here = here
        self.root = here / "hpcgw"
        (self.root / "etc").mkdir(parents=True)
        self.images = self.root / "images"
        runtime = here / "bin" / "apptainer"
        runtime.parent.mkdir()
        runtime.write_text(FAKE_APPTAINER.format(python=sys.executable, here=str(here)))
        runtime.chmod(0o755)
        (here / "secret").write_text("not an image\n")
        (here / "nb.def.j2").write_text("Bootstrap: scratch\n# flavor {{ flavor }}\n")
        (here / "ansible.cfg").write_text("[defaults]\nstdout_callback = default\n")
        inventory = {"all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "ansible_become": False},
            "children": {"hub": {"hosts": {"hubvm": {"jupyterhub_version": "5.5.4"}}},
                         "cluster": {"hosts": {"login": {}}}}}}
        (here / "inventory.yml").write_text(yaml.safe_dump(inventory))
        self.remote = here / "remote.sif"

    def builds(self) -> int:
        log = self.here / "builds.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def run(self, flavor: str, remote: bytes = b"R1", checksum: bytes = b"R1", check: bool = False):
        self.remote.write_bytes(remote)
        play = [{
            "name": "The role", "hosts": "login", "gather_facts": False,
            "vars": {
                "apptainer_images_gateway_root": str(self.root),
                "apptainer_images_user": "root",
                "apptainer_images_command": str(self.here / "bin" / "apptainer"),
                "flavor": flavor,
                "apptainer_images_list": [
                    {"name": "remote", "label": "R", "description": "", "url": f"file://{self.remote}",
                     "checksum": sha256(checksum)},
                    {"name": "nb", "label": "NB", "description": "", "definition": str(self.here / "nb.def.j2")},
                ],
            },
            "roles": [{"role": str(ROLE)}],
        }]
        (self.here / "site.yml").write_text(yaml.safe_dump(play))
        argv = [str(ANSIBLE_PLAYBOOK), "-i", str(self.here / "inventory.yml"), str(self.here / "site.yml")]
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(self.here), "LANG": "C.UTF-8",
               "ANSIBLE_CONFIG": str(self.here / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_LOCAL_TEMP": str(self.here / "tmp"), "ANSIBLE_REMOTE_TEMP": str(self.here / "tmp")}
        result = subprocess.run(argv + (["--check"] if check else []), env=env, cwd=self.here,
                                capture_output=True, text=True, timeout=600)
        return result.returncode, " ".join((result.stdout + result.stderr).split())

    def changed(self, output: str) -> int:
        return int(output.rsplit("login : ok=", 1)[1].split("changed=", 1)[1].split()[0])

    def sif(self, name: str = "nb") -> str:
        return (self.images / f"{name}.sif").read_text()

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.images.iterdir() if p.name.startswith(".") and p.name != ".build") + sorted(
            p.name for p in (self.images / ".build").iterdir())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if os.geteuid() != 0 or not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("needs root (root-owned files) and ansible-playbook beside pytest")
    return Site(tmp_path_factory.mktemp("apptainer-build"))


def test_the_image_lifecycle(site):
    # First run: the url image is downloaded, the def image built once.
    rc, out = site.run("v1")
    assert rc == 0, out
    assert site.builds() == 1
    assert site.sif() == "SIF Bootstrap: scratch\n# flavor v1\n"
    assert (site.images / "nb.def").read_text() == "Bootstrap: scratch\n# flavor v1\n"
    assert (site.images / "remote.sif").read_bytes() == b"R1"
    for path in (site.images / "nb.sif", site.images / "nb.def", site.images / "remote.sif",
                 site.root / "etc" / "images.json"):
        assert path.stat().st_mode & 0o777 == 0o644 and path.stat().st_uid == 0, path
    assert site.images.stat().st_mode & 0o777 == 0o755
    assert (site.images / ".build").stat().st_mode & 0o777 == 0o700
    images = json.loads((site.root / "etc" / "images.json").read_text())
    assert [image["path"] for image in images["images"]] == [str(site.images / "remote.sif"), str(site.images / "nb.sif")]
    assert site.leftovers() == []

    # Same definition: nothing is built, nothing changes.
    rc, out = site.run("v1")
    assert rc == 0, out
    assert site.builds() == 1
    assert site.changed(out) == 0, out

    # Check mode with a new definition: a change is reported, nothing is built or written.
    rc, out = site.run("v2", check=True)
    assert rc == 0, out
    assert site.builds() == 1
    assert site.changed(out) >= 1
    assert "flavor v1" in site.sif() and "flavor v1" in (site.images / "nb.def").read_text()

    # A failed build: the old image and its definition stay, no build files are left.
    rc, out = site.run("FAIL")
    assert rc != 0
    assert "Building apptainer_images_list[1] (nb)" in out and "the old image (if any) is kept" in out
    assert "conveyor failed" in out
    assert site.builds() == 2
    assert "flavor v1" in site.sif() and "flavor v1" in (site.images / "nb.def").read_text()
    assert site.leftovers() == []

    # A build that is a symlink is refused; what it points to is untouched.
    rc, out = site.run("LINK")
    assert rc != 0
    assert "is not a plain file with one link" in out
    assert (site.here / "secret").read_text() == "not an image\n"
    assert "flavor v1" in site.sif()
    assert site.leftovers() == []

    # The url image's checksum does not match what the URL serves: the old one stays.
    rc, out = site.run("v1", remote=b"R3", checksum=b"R2")
    assert rc != 0
    assert "apptainer_images_list[0] (remote)" in out and "apptainer_images_list[0].checksum" in out
    assert "did not match" in out
    assert (site.images / "remote.sif").read_bytes() == b"R1"

    # The failed definition is still different from the recorded one: the next run builds it.
    rc, out = site.run("v2")
    assert rc == 0, out
    assert site.builds() == 4  # v1, FAIL, LINK, v2 (the checksum run failed before the build)
    assert site.sif() == "SIF Bootstrap: scratch\n# flavor v2\n"
    assert (site.images / "nb.def").read_text() == "Bootstrap: scratch\n# flavor v2\n"
    assert site.leftovers() == []
