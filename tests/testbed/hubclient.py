"""A client of a running test bed, as the outside world sees it.

Used by the molecule verify tests (molecule/default/tests/conftest.py) and by
the benchmarks: the test bed's public names resolved to its containers inside
this process only (TLS is still verified by name), a browser-like login
through the Globus Auth stand-in, and the hub's REST API driven as a user.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import quote, urljoin

import requests

REPO = pathlib.Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Testbed:
    name: str
    state_dir: pathlib.Path
    hub_name: str = "hub.gateway.test"
    acme_name: str = "acme.test"
    globus_name: str = "auth.globus.test"
    globus_port: int = 8443
    globus_client_id: str = "6f3cde2a-58b1-4c7e-9c3b-0b8f7f1e2a41"
    # The hub's https port, and whether the hub and the Globus stand-in are
    # reached on ports published on 127.0.0.1 (the demo) rather than at the
    # containers' addresses (the molecule and dev beds).
    hub_port: int = 443
    published: bool = False

    @classmethod
    def discover(cls, name: str, state_dir: pathlib.Path) -> Testbed:
        """The test bed `name` as a browser on this machine reaches it: the
        demo publishes the hub's 443 and the stand-in's 8443 on 127.0.0.1, and
        its hub sends browsers to those ports."""
        def published_port(role: str, port: int) -> int | None:
            out = subprocess.run(["docker", "port", f"hpcgw-{name}-{role}", f"{port}/tcp"],
                                 capture_output=True, text=True).stdout
            found = re.search(r"127\.0\.0\.1:(\d+)", out)
            return int(found.group(1)) if found else None

        hub_port = published_port("hub", 443)
        if hub_port is None:
            return cls(name=name, state_dir=state_dir)
        return cls(name=name, state_dir=state_dir, hub_port=hub_port,
                   globus_port=published_port("services", 8443) or 8443, published=True)

    @property
    def hub_url(self) -> str:
        return f"https://{self.hub_name}" + ("" if self.hub_port == 443 else f":{self.hub_port}")

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

    def address(self, role: str, network: str = "") -> str:
        """A container's address on the main network, or on hpcgw-<name>-<network>
        (network="private": the compute nodes' own)."""
        out = subprocess.run(
            ["docker", "inspect", self.container(role)],
            check=True, capture_output=True, text=True,
        ).stdout
        networks = json.loads(out)[0]["NetworkSettings"]["Networks"]
        return networks[f"hpcgw-{self.name}" + (f"-{network}" if network else "")]["IPAddress"]


@contextlib.contextmanager
def public_names(testbed: Testbed):
    """Resolve the test bed's public names to its containers, in this process."""
    addresses = {
        testbed.hub_name: "127.0.0.1" if testbed.published else testbed.address("hub"),
        testbed.acme_name: testbed.address("services"),
        testbed.globus_name: "127.0.0.1" if testbed.published else testbed.address("services"),
    }
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real_getaddrinfo(addresses.get(host, host), *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        yield addresses
    finally:
        socket.getaddrinfo = real_getaddrinfo


def public_roots(testbed: Testbed) -> str:
    """What a browser trusts here (PEM): pebble's issuing root of this run (it
    signs the hub's certificate) and the test bed CA (the Globus stand-in's)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(testbed.ca_cert)
    root = session.get(f"https://{testbed.acme_name}:15000/roots/0", timeout=10)
    root.raise_for_status()
    return root.text.strip() + "\n" + testbed.ca_cert.read_text()


def browser_session(ca_bundle: pathlib.Path) -> requests.Session:
    """A fresh browser: keeps cookies, trusts only `ca_bundle`."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_bundle)
    return session


def globus_login(browser, testbed: Testbed, username: str):
    """Log in at the hub as a person would: the hub sends the browser to Globus
    (the stand-in), the person picks their identity, Globus sends the browser
    back to the hub's callback. Returns the hub's last response."""
    start = browser.get(f"{testbed.hub_url}/hub/oauth_login", allow_redirects=False, timeout=20)
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
    assert back.headers["Location"].startswith(f"{testbed.hub_url}/hub/oauth_callback?")
    return browser.get(back.headers["Location"], timeout=30)



def standin_events(testbed: Testbed, since: int = 0) -> list[dict]:
    """The stand-in's record of tokens issued and revoked (its test hook)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(testbed.ca_cert)
    reply = session.get(f"{testbed.globus_url}_standin/events", params={"since": since}, timeout=10)
    reply.raise_for_status()
    return reply.json()


def last_event_seq(testbed: Testbed) -> int:
    events = standin_events(testbed)
    return events[-1]["seq"] if events else 0



class HubUser:
    """A logged-in hub user driving the hub's REST API as the web UI does
    (session cookie + XSRF header), through nginx."""

    def __init__(self, browser, testbed: Testbed, name: str):
        self.browser, self.testbed, self.name = browser, testbed, name
        self.hub = testbed.hub_url

    def _xsrf(self) -> dict:
        if not self.browser.cookies.get("_xsrf"):
            self.browser.get(f"{self.hub}/hub/home", timeout=20)
        return {"X-XSRFToken": self.browser.cookies.get("_xsrf")}

    def api(self, method: str, path: str, **kwargs):
        return self.browser.request(method, f"{self.hub}/hub/api{path}", headers=self._xsrf(), timeout=60, **kwargs)

    def server(self, user: str | None = None) -> dict | None:
        reply = self.api("GET", f"/users/{quote(user or self.name, safe='')}")
        reply.raise_for_status()
        return reply.json()["servers"].get("")

    def start(self, user: str | None = None, options: dict | None = None, timeout: float = 180):
        """POST the server, wait until it is ready; returns the POST's reply."""
        reply = self.api("POST", f"/users/{quote(user or self.name, safe='')}/server", json=options or {})
        if reply.status_code >= 400:
            return reply
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.server(user)
            if server and server.get("ready"):
                return reply
            assert server is not None, "the server went away while starting"
            time.sleep(0.5)
        raise AssertionError(f"server of {user or self.name} not ready in {timeout}s")

    def stop(self, user: str | None = None, timeout: float = 60):
        reply = self.api("DELETE", f"/users/{quote(user or self.name, safe='')}/server")
        assert reply.status_code in (202, 204), reply.text
        deadline = time.monotonic() + timeout
        while self.server(user) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert self.server(user) is None

    def token(self) -> str:
        reply = self.api("POST", f"/users/{self.name}/tokens", json={"note": "verify tests", "expires_in": 3600})
        assert reply.status_code == 201, reply.text
        return reply.json()["token"]
