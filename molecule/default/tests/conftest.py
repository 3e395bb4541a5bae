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
