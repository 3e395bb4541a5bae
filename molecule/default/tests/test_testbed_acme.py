"""The ACME fixture is real: pebble issues a certificate for the hub's name
only after its validation authority fetched the HTTP-01 answer from the hub."""

from __future__ import annotations

import datetime
import time

import josepy
import pytest
import requests
from acme import challenges, client, crypto_util, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

WEBROOT = "/run/hpcgw-acme-fixture"


@pytest.fixture
def hub_http01(hub_host):
    """A plain HTTP server on the hub's port 80 serving WEBROOT (until nginx exists)."""
    hub = hub_host
    hub.run_expect([0], "mkdir -p %s/.well-known/acme-challenge", WEBROOT)
    hub.run_expect(
        [0],
        "systemd-run --unit=hpcgw-acme-fixture --collect python3 -m http.server 80 --directory %s",
        WEBROOT,
    )
    for _ in range(50):
        if hub.socket("tcp://0.0.0.0:80").is_listening:
            break
        time.sleep(0.1)
    yield hub
    hub.run("systemctl stop hpcgw-acme-fixture")
    hub.run("rm -rf %s", WEBROOT)


def test_pebble_issues_a_certificate_through_http01(testbed, testbed_dns, trust_testbed_ca, hub_http01):
    directory_url = f"https://{testbed.acme_name}:14000/dir"
    account_key = josepy.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    net = client.ClientNetwork(account_key, user_agent="hpcgw-testbed", verify_ssl=str(trust_testbed_ca))
    acme = client.ClientV2(client.ClientV2.get_directory(directory_url, net), net=net)
    acme.net.account = acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))

    cert_key = ec.generate_private_key(ec.SECP256R1())
    csr = crypto_util.make_csr(
        cert_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        [testbed.hub_name],
    )
    order = acme.new_order(csr)
    for authz in order.authorizations:
        http01 = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = http01.response_and_validation(account_key)
        answer = f"{WEBROOT}{http01.chall.path}"
        hub_http01.run_expect([0], "printf '%%s' %s > %s", validation, answer)
        acme.answer_challenge(http01, response)
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=60)
    order = acme.poll_and_finalize(order, deadline)

    leaf, intermediate = x509.load_pem_x509_certificates(order.fullchain_pem.encode())[:2]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [testbed.hub_name]
    # Issued by pebble's CA of this run (its root changes at every start).
    root_pem = requests.get(f"https://{testbed.acme_name}:15000/roots/0", timeout=10).text
    root = x509.load_pem_x509_certificate(root_pem.encode())
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    # ...after pebble's validation authority really fetched the answer from the hub.
    log = hub_http01.run("journalctl -u hpcgw-acme-fixture --no-pager -o cat").stdout
    assert "/.well-known/acme-challenge/" in log
