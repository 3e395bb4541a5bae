"""Fixtures: `bed` for the job wrapper's tests (tests/unit/job_bed.py), and
the Globus Auth stand-in's (tests/globus_standin).

`standin` starts tests/globus_standin/globus_standin.py in a subprocess on
127.0.0.1 with an ephemeral port and a throw-away CA. Set GLOBUS_STANDIN_PYTHON
to run the server with another interpreter (e.g. Debian bookworm's python3
with python3-jwt/python3-cryptography) than the one running pytest.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from job_bed import Bed, Hub

STANDIN_DIR = Path(__file__).resolve().parents[1] / "globus_standin"
STANDIN_SCRIPT = STANDIN_DIR / "globus_standin.py"
IDENTITIES_FILE = STANDIN_DIR / "identities.json"

HUB_CALLBACK = "https://hub.example.test/hub/oauth_callback"
NATIVE_CALLBACK = "https://127.0.0.1/native-callback"


def _make_ca_and_server_cert(tmp: Path):
    """Throw-away CA plus a server certificate for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "globus-standin test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = tmp / "ca.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_pem = tmp / "cert.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = tmp / "key.pem"
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


class Standin:
    """Handle on a running stand-in: URLs, clients, identities, helpers."""

    def __init__(self, base_url, ca, clients, identities, log_path):
        self.base_url = base_url
        self.ca = str(ca)
        self.clients = clients
        self.identities = identities
        self.log_path = log_path
        self.groups = {g["name"]: g["id"] for g in identities["groups"]}
        self.users = {i["username"]: i for i in identities["identities"]}
        self.hub_callback = HUB_CALLBACK
        self.native_callback = NATIVE_CALLBACK

    def url(self, path):
        return urljoin(self.base_url + "/", path.lstrip("/"))

    def session(self):
        s = requests.Session()
        s.trust_env = False  # ignore REQUESTS_CA_BUNDLE & proxies from the env
        s.verify = self.ca
        return s

    def events(self, since=0):
        with self.session() as s:
            r = s.get(self.url("/_standin/events"), params={"since": since}, timeout=10)
            r.raise_for_status()
            return r.json()

    def last_seq(self):
        events = self.events()
        return events[-1]["seq"] if events else 0

    def load_form(self, authorize_url, session=None):
        """GET the authorize URL; return (response, form_token or None)."""
        s = session or self.session()
        r = s.get(authorize_url, allow_redirects=False, timeout=10)
        m = re.search(r'name="form_token" value="([^"]+)"', r.text)
        return r, (m.group(1) if m else None)

    def login(self, authorize_url, username):
        """Act as the user's browser: load the form, pick `username`, and
        return the query of the redirect back to the client as a dict."""
        assert urlsplit(authorize_url).netloc == urlsplit(self.base_url).netloc
        with self.session() as s:
            r, form_token = self.load_form(authorize_url, s)
            assert r.status_code == 200, r.text
            assert f'value="{username}"' in r.text
            r = s.post(self.url("/v2/oauth2/authorize"),
                       data={"form_token": form_token, "username": username},
                       allow_redirects=False, timeout=10)
            assert r.status_code == 302, r.text
            loc = urlsplit(r.headers["Location"])
            return {k: v[0] for k, v in parse_qs(loc.query).items()}, r.headers["Location"]


@pytest.fixture(scope="session")
def standin(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("globus-standin")
    ca, cert, key = _make_ca_and_server_cert(tmp)
    clients = {
        "hub": {"id": str(uuid.uuid4()), "secret": secrets.token_urlsafe(24),
                "redirect_uris": [HUB_CALLBACK], "name": "JupyterHub (test)"},
        "sdk": {"id": str(uuid.uuid4()), "secret": secrets.token_urlsafe(24),
                "redirect_uris": [], "name": "globus-sdk confidential app (test)"},
        "native": {"id": str(uuid.uuid4()), "secret": None,
                   "redirect_uris": [NATIVE_CALLBACK], "name": "native app (test)"},
    }
    clients_doc = {
        c["id"]: {k: v for k, v in {"secret": c["secret"], "redirect_uris": c["redirect_uris"],
                                    "name": c["name"]}.items() if v is not None}
        for c in clients.values()
    }
    clients_file = tmp / "clients.json"
    clients_file.write_text(json.dumps(clients_doc))
    ready = tmp / "ready.json"
    log_path = tmp / "standin.log"
    python = os.environ.get("GLOBUS_STANDIN_PYTHON", sys.executable)
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [python, str(STANDIN_SCRIPT), "--config", str(IDENTITIES_FILE),
         "--clients", str(clients_file), "--listen", "127.0.0.1:0",
         "--cert", str(cert), "--key", str(key), "--ready-file", str(ready)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("stand-in did not start:\n" + log_path.read_text())
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        handle = Standin(info["issuer"], ca, clients,
                         json.loads(IDENTITIES_FILE.read_text()), log_path)
        with handle.session() as s:
            assert s.get(handle.url("/_standin/health"), timeout=10).status_code == 200
        yield handle
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def standin_sdk_env(standin, monkeypatch):
    """Point globus-sdk (and `requests`) at the stand-in by environment only."""
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", standin.base_url + "/")
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_GROUPS", standin.base_url + "/")
    monkeypatch.setenv("GLOBUS_SDK_VERIFY_SSL", standin.ca)
    # the machine sets these to the system bundle; requests prefers them
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(var, standin.ca)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return standin


@pytest.fixture
def bed(tmp_path):
    """The job wrapper's bed (job_bed.Bed) with its hub stand-in serving."""
    hub = Hub(tmp_path)
    thread = threading.Thread(target=hub.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    bed = Bed(tmp_path, hub)
    yield bed
    bed.stop()
    hub.shutdown()
    hub.server_close()
