"""Shared fixtures for the molecule verify step (pytest-testinfra).

Host tests get testinfra's `host` fixture through the molecule inventory.
Tests that act as the outside world (a browser, an ACME client, a Globus
client) run here on the controller and reach the test bed's containers by
their public names; `testbed_dns` maps those names to container addresses
inside this process only (no /etc/hosts change), so every client still
verifies TLS by name exactly as it would on the internet.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
from dataclasses import dataclass

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Testbed:
    name: str
    state_dir: pathlib.Path
    hub_name: str = "hub.gateway.test"
    acme_name: str = "acme.test"
    globus_name: str = "auth.globus.test"
    globus_port: int = 8443
    globus_client_id: str = "6f3cde2a-58b1-4c7e-9c3b-0b8f7f1e2a41"

    @property
    def ca_cert(self) -> pathlib.Path:
        """The test bed CA: it signed the ACME server's and Globus stand-in's TLS certs."""
        return self.state_dir / "ca" / "ca.crt"

    @property
    def globus_client_secret(self) -> str:
        return (self.state_dir / "globus" / "client_secret").read_text().strip()

    @property
    def globus_url(self) -> str:
        return f"https://{self.globus_name}:{self.globus_port}/"

    def container(self, role: str) -> str:
        return f"hpcgw-{self.name}-{role}"

    def address(self, role: str) -> str:
        out = subprocess.run(
            ["docker", "inspect", self.container(role)],
            check=True, capture_output=True, text=True,
        ).stdout
        networks = json.loads(out)[0]["NetworkSettings"]["Networks"]
        return networks[f"hpcgw-{self.name}"]["IPAddress"]


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    # HPCGW_TESTBED picks another test bed (tests/testbed/dev-inventory).
    name = os.environ.get("HPCGW_TESTBED", "molecule")
    return Testbed(name=name, state_dir=REPO / ".testbed" / name)


@pytest.fixture(scope="session")
def testbed_dns(testbed: Testbed):
    """Resolve the test bed's public names to its containers, in this process."""
    addresses = {
        testbed.hub_name: testbed.address("hub"),
        testbed.acme_name: testbed.address("services"),
        testbed.globus_name: testbed.address("services"),
    }
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real_getaddrinfo(addresses.get(host, host), *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield addresses


@pytest.fixture
def trust_testbed_ca(testbed: Testbed, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Make `requests`-based clients trust only the test bed CA.

    The build machines export REQUESTS_CA_BUNDLE and friends, which requests
    prefers over a session's own `verify`: point them all at the test bed CA.
    """
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(var, str(testbed.ca_cert))
    return testbed.ca_cert


@pytest.fixture(scope="session")
def hub_host(request):
    """testinfra's view of the hub, for tests that are not parametrized by host."""
    import testinfra

    return testinfra.get_host(
        "ansible://hub.gateway.test", ansible_inventory=request.config.option.ansible_inventory
    )


@pytest.fixture(scope="session")
def public_ca_bundle(testbed: Testbed, testbed_dns, tmp_path_factory) -> pathlib.Path:
    """What a browser trusts here: pebble's issuing root of this run (it signs
    the hub's certificate) and the test bed CA (the Globus stand-in's)."""
    import requests

    session = requests.Session()
    session.trust_env = False
    session.verify = str(testbed.ca_cert)
    root = session.get(f"https://{testbed.acme_name}:15000/roots/0", timeout=10)
    root.raise_for_status()
    bundle = tmp_path_factory.mktemp("ca") / "public-roots.pem"
    bundle.write_text(root.text.strip() + "\n" + testbed.ca_cert.read_text())
    return bundle


@pytest.fixture
def browser(public_ca_bundle):
    """A fresh browser: keeps cookies, trusts only the public roots above."""
    import requests

    with requests.Session() as session:
        session.trust_env = False
        session.verify = str(public_ca_bundle)
        yield session


def globus_login(browser, testbed: Testbed, username: str):
    """Log in at the hub as a person would: the hub sends the browser to Globus
    (the stand-in), the person picks their identity, Globus sends the browser
    back to the hub's callback. Returns the hub's last response."""
    import re
    from urllib.parse import urljoin

    start = browser.get(f"https://{testbed.hub_name}/hub/oauth_login", allow_redirects=False, timeout=20)
    assert start.status_code == 302, start.text
    authorize = start.headers["Location"]
    assert authorize.startswith(testbed.globus_url + "v2/oauth2/authorize?")
    form = browser.get(authorize, timeout=20)
    assert form.status_code == 200, form.text
    form_token = re.search(r'name="form_token" value="([^"]+)"', form.text).group(1)
    back = browser.post(
        urljoin(authorize, "/v2/oauth2/authorize"),
        data={"form_token": form_token, "username": username},
        allow_redirects=False,
        timeout=20,
    )
    assert back.status_code == 302, back.text
    assert back.headers["Location"].startswith(f"https://{testbed.hub_name}/hub/oauth_callback?")
    return browser.get(back.headers["Location"], timeout=30)


@pytest.fixture
def login(browser, testbed):
    return lambda username: globus_login(browser, testbed, username)


def standin_events(testbed: Testbed, since: int = 0) -> list[dict]:
    """The stand-in's record of tokens issued and revoked (its test hook)."""
    import requests

    session = requests.Session()
    session.trust_env = False
    session.verify = str(testbed.ca_cert)
    reply = session.get(f"{testbed.globus_url}_standin/events", params={"since": since}, timeout=10)
    reply.raise_for_status()
    return reply.json()


def last_event_seq(testbed: Testbed) -> int:
    events = standin_events(testbed)
    return events[-1]["seq"] if events else 0


@dataclass
class PlaybookRun:
    returncode: int
    output: str

    def recap(self, host: str) -> dict[str, int]:
        """The PLAY RECAP counters of one host (last recap in the output)."""
        plain = re.sub(r"\x1b\[[0-9;]*m", "", self.output)
        lines = [line for line in plain.splitlines() if line.startswith(host + " ")]
        assert lines, f"no recap for {host}:\n{self.output[-3000:]}"
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", lines[-1])}


@pytest.fixture(scope="session")
def run_playbook(request):
    """Run a playbook (a path in the repo, or absolute) against this scenario's inventory."""

    def run(playbook: str | pathlib.Path, *args: str, timeout: int = 900) -> PlaybookRun:
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        done = subprocess.run(
            ["ansible-playbook", "-i", request.config.option.ansible_inventory, str(REPO / playbook), *args],
            capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
        )
        return PlaybookRun(done.returncode, done.stdout + done.stderr)

    return run
