"""NGINX in front of JupyterHub (role hpcgateway.jupyterhub.nginx), seen as
the internet sees it: every TLS client here trusts ONLY pebble's issuing root
of this run and checks the certificate for the hub's public name.

The role runs in Let's Encrypt mode against the test bed's pebble (see
molecule/default/inventory/host_vars/hub.gateway.test/nginx.yml), so the
certificate exists only if pebble's validation authority really fetched the
HTTP-01 answer from the hub's NGINX.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import pathlib
import re
import secrets
import socket
import ssl
import subprocess
import time

import pytest
from cryptography import x509

REPO = pathlib.Path(__file__).resolve().parents[3]
LIVE = "/etc/letsencrypt/live/jupyterhub"
ACME_WEBROOT = "/var/www/acme"
NGINX_FILES = ("/etc/nginx/sites-available/jupyterhub", "/etc/nginx/conf.d/hpcgateway.conf", "/etc/nginx/nginx.conf")
HSTS = "max-age=63072000"


# --- helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pebble_root(testbed, testbed_dns) -> str:
    """Pebble's issuing root of this run (it changes at every pebble start)."""
    ctx = ssl.create_default_context(cafile=str(testbed.ca_cert))  # pebble's own listener
    conn = http.client.HTTPSConnection(testbed.acme_name, 15000, context=ctx, timeout=10)
    conn.request("GET", "/roots/0")
    resp = conn.getresponse()
    assert resp.status == 200
    return resp.read().decode()


def pebble_only(root_pem: str) -> ssl.SSLContext:
    """A client that trusts pebble's root and nothing else, and checks the name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname, no system CAs
    ctx.load_verify_locations(cadata=root_pem)
    return ctx


def handshake(name: str, ctx: ssl.SSLContext) -> tuple[x509.Certificate, str, str]:
    """(served leaf certificate, TLS version, cipher) of a fresh connection to name:443."""
    with socket.create_connection((name, 443), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
            return x509.load_der_x509_certificate(der), tls.version(), tls.cipher()[0]


def get(name: str, path: str, ctx: ssl.SSLContext | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    """One GET, no redirects followed; HTTPS when ctx is given."""
    if ctx is None:
        conn = http.client.HTTPConnection(name, 80, timeout=10)
    else:
        conn = http.client.HTTPSConnection(name, 443, context=ctx, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp, resp.read()


def hub_file(hub_host, path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(hub_host.file(path).content)


def nginx_files_digest(hub_host) -> dict[str, str]:
    return {path: hub_host.file(path).sha256sum for path in NGINX_FILES}


def run_role(run_playbook, tmp_path: pathlib.Path, extra_vars: dict):
    """The role's validate entry point, then the role, on the hub (what
    the preflight and the hub play of playbooks/site.yml do), with -e overrides."""
    playbook = tmp_path / "nginx.yml"
    playbook.write_text(
        "- name: The nginx role alone\n"
        "  hosts: hub\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Validate\n"
        "      ansible.builtin.include_role: {name: hpcgateway.jupyterhub.nginx, tasks_from: validate}\n"
        "    - name: Converge\n"
        "      ansible.builtin.include_role: {name: hpcgateway.jupyterhub.nginx}\n"
    )
    return run_playbook(playbook, "-e", json.dumps(extra_vars), timeout=300)


# --- 1. a real certificate from pebble, through HTTP-01 served by NGINX ---------


def test_certificate_issued_by_pebble_through_http01(hub_host, testbed, testbed_dns, pebble_root):
    # The served chain verifies for the hub's name against pebble's root alone.
    leaf, _, _ = handshake(testbed.hub_name, pebble_only(pebble_root))
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [testbed.hub_name]
    # ...it is certbot's certificate...
    assert leaf.serial_number == hub_file(hub_host, f"{LIVE}/cert.pem").serial_number
    # ...and pebble's validation authority fetched the HTTP-01 answer from NGINX.
    access_log = hub_host.check_output("cat /var/log/nginx/access.log")
    validation = re.compile(
        rf'^{re.escape(testbed.address("services"))} \S+ \S+ \[[^]]+\] '
        r'"GET /\.well-known/acme-challenge/[A-Za-z0-9_-]+ HTTP/1\.[01]" 200 .*"LetsEncrypt-Pebble-VA',
        re.MULTILINE,
    )
    assert validation.search(access_log), access_log[-2000:]


# --- 2. TLS 1.2 and 1.3 only ---------------------------------------------------


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"])
def test_old_tls_versions_are_refused_by_the_server(testbed, testbed_dns, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # Let this client really offer the old version (OpenSSL 3 refuses it at
    # the default security level), so a refusal can only be the server's.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ctx.maximum_version = version
    with pytest.raises(ssl.SSLError) as refused:
        handshake(testbed.hub_name, ctx)
    # The server's protocol_version alert, not a local "no protocols available".
    assert "ALERT_PROTOCOL_VERSION" in str(refused.value), refused.value


@pytest.mark.parametrize(
    ("version", "name"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")], ids=["TLSv1.2", "TLSv1.3"]
)
def test_tls12_and_tls13_are_accepted(testbed, testbed_dns, pebble_root, version, name):
    ctx = pebble_only(pebble_root)
    ctx.minimum_version = ctx.maximum_version = version
    _, negotiated, cipher = handshake(testbed.hub_name, ctx)
    assert negotiated == name
    if version == ssl.TLSVersion.TLSv1_2:
        assert cipher.startswith("ECDHE-"), cipher  # forward secrecy only


# --- 3. HSTS, redirect, ACME over HTTP, no version -------------------------------


def test_https_responses_carry_hsts_and_no_version(testbed, testbed_dns, pebble_root):
    # Whatever the upstream answers (a 502 while JupyterHub is not up yet).
    resp, body = get(testbed.hub_name, "/hub/", pebble_only(pebble_root))
    assert resp.getheader("Strict-Transport-Security") == HSTS
    assert resp.getheader("Server") == "nginx"
    assert not re.search(rb"nginx/\d", body)


def test_plain_http_redirects_to_https_by_name(testbed, testbed_dns):
    resp, body = get(testbed.hub_name, "/anything?x=1")
    assert resp.status == 301
    assert resp.getheader("Location") == f"https://{testbed.hub_name}/anything?x=1"
    assert resp.getheader("Server") == "nginx"
    assert not re.search(rb"nginx/\d", body)


def test_acme_webroot_is_served_over_plain_http(hub_host, testbed, testbed_dns):
    token = secrets.token_urlsafe(16)
    answer = f"{ACME_WEBROOT}/.well-known/acme-challenge/{token}"
    hub_host.run_expect([0], "mkdir -p %s && printf %s %s > %s", os.path.dirname(answer), token, token, answer)
    try:
        resp, body = get(testbed.hub_name, f"/.well-known/acme-challenge/{token}")
        assert (resp.status, body) == (200, token.encode())
        missing, _ = get(testbed.hub_name, "/.well-known/acme-challenge/no-such-token")
        assert missing.status == 404  # served from the webroot, never redirected
    finally:
        hub_host.run("rm -f %s", answer)


# --- 4. renewal without a manual step --------------------------------------------


def test_certbot_timer_renews_with_the_sites_ca_bundle(hub_host):
    timer = hub_host.service("certbot.timer")
    assert timer.is_enabled and timer.is_running
    bundle = hub_host.ansible.get_variables().get("nginx_acme_ca_bundle", "")
    environment = hub_host.check_output("systemctl show certbot.service --property=Environment")
    if bundle:
        assert f"REQUESTS_CA_BUNDLE={bundle}" in environment
    else:
        assert "REQUESTS_CA_BUNDLE" not in environment


@pytest.mark.xdist_group("playbooks")
def test_forced_renewal_is_served_with_no_other_step(hub_host, testbed, testbed_dns, pebble_root):
    ctx = pebble_only(pebble_root)
    before, _, _ = handshake(testbed.hub_name, ctx)
    # What certbot.timer runs, forced: the saved renewal config and the deploy hook.
    hub_host.run_expect([0], "certbot renew --force-renewal --no-random-sleep-on-renew")
    renewed = hub_file(hub_host, f"{LIVE}/cert.pem")
    assert renewed.serial_number != before.serial_number
    deadline = time.monotonic() + 15  # the reload replaces workers gracefully
    while True:
        served, _, _ = handshake(testbed.hub_name, ctx)
        if served.serial_number == renewed.serial_number or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert served.serial_number == renewed.serial_number


# --- 5. a broken config is refused and rolled back -------------------------------


@pytest.mark.xdist_group("playbooks")
def test_broken_extra_config_fails_and_keeps_the_old_site(run_playbook, tmp_path, hub_host, testbed, testbed_dns, pebble_root):
    ctx = pebble_only(pebble_root)
    files_before = nginx_files_digest(hub_host)
    serving_before, _, _ = handshake(testbed.hub_name, ctx)

    run = run_role(run_playbook, tmp_path, {"nginx_extra_server_config": "hpcgw_not_a_directive on;"})

    out = run.output
    assert run.returncode != 0, out
    assert 'unknown directive "hpcgw_not_a_directive"' in out  # nginx's own message
    assert "previous one was put back" in out
    assert nginx_files_digest(hub_host) == files_before
    assert hub_host.check_output("find /etc/nginx -name '*~'") == ""  # no backups left behind
    hub_host.run_expect([0], "nginx -t")
    assert hub_host.service("nginx").is_running
    serving_after, _, _ = handshake(testbed.hub_name, ctx)
    assert serving_after.serial_number == serving_before.serial_number
    resp, _ = get(testbed.hub_name, "/hub/", ctx)
    assert resp.getheader("Strict-Transport-Security") == HSTS


# --- 6. bad input fails in validate.yml, before any change -----------------------


@pytest.mark.xdist_group("playbooks")
@pytest.mark.parametrize(
    ("extra_vars", "named"),
    [
        # (a missing email and a bad server name: test_bad_settings.py, through site.yml)
        (
            {"nginx_tls_mode": "provided", "nginx_tls_certificate_src": "/nonexistent/hub.crt",
             "nginx_tls_key_src": "/nonexistent/hub.key"},
            "nginx_tls_certificate_src",
        ),
        ({"nginx_tls_mode": "acme"}, "nginx_tls_mode"),  # the argument spec's choices
        ({"nginx_hub_client_max_body_size": "0"}, "nginx_hub_client_max_body_size"),  # 0 lifts the cap
    ],
    ids=["provided-unreadable-cert", "unknown-tls-mode", "uncapped-hub-bodies"],
)
def test_bad_input_fails_in_validation_naming_the_variable(run_playbook, tmp_path, hub_host, extra_vars, named):
    files_before = nginx_files_digest(hub_host)

    run = run_role(run_playbook, tmp_path, extra_vars)

    out = run.output
    assert run.returncode == 2, out
    assert named in out[out.index("[ERROR]"):], out  # the failure names the variable
    assert "TASK [Converge]" not in out  # it stopped in the validate entry point
    assert re.search(r"hub\.gateway\.test\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=1", out), out
    assert nginx_files_digest(hub_host) == files_before


# --- 7. the hub's edge (issue 15): only the hub's own name is served ------------
#
# A scanner on the bare address, a request for another name (Host or SNI),
# old TLS versions or weak groups on the catch-all, and the headers an
# attacker learns from: each of these tests fails on a hub whose site is the
# default server with Debian's defaults.


def closed_without_answer(send) -> int | None:
    """The HTTP status of send()'s answer, or None when NGINX closed the
    connection without one (return 444)."""
    try:
        resp = send()
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        return None
    return resp.status


def request_with_host(name: str, host: str, ctx: ssl.SSLContext | None, path: str = "/hub/health") -> int | None:
    """A GET to name (SNI name when ctx is given) whose Host header says host."""
    if ctx is None:
        conn = http.client.HTTPConnection(name, 80, timeout=10)
    else:
        conn = http.client.HTTPSConnection(name, 443, context=ctx, timeout=10)

    def send():
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        return conn.getresponse()

    try:
        return closed_without_answer(send)
    finally:
        conn.close()


def any_certificate(minimum=ssl.TLSVersion.TLSv1_2) -> ssl.SSLContext:
    """A client that would accept any certificate: what a scanner uses, so a
    refusal can only come from the server."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = minimum
    return ctx


def raw_handshake(address: str, sni: str | None, ctx: ssl.SSLContext) -> str:
    with socket.create_connection((address, 443), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            return tls.version()


@pytest.mark.parametrize("sni", [None, "evil.example"], ids=["no-SNI", "unknown-SNI"])
def test_handshakes_for_other_names_are_refused(testbed, testbed_dns, sni):
    hub_address = testbed_dns[testbed.hub_name]
    with pytest.raises(ssl.SSLError) as refused:
        raw_handshake(hub_address, sni, any_certificate())
    # NGINX's ssl_reject_handshake: no certificate is shown to a name it does not serve.
    assert "UNRECOGNIZED_NAME" in str(refused.value), refused.value
    # ...while the hub's own name still gets its handshake.
    assert raw_handshake(hub_address, testbed.hub_name, any_certificate()) in ("TLSv1.2", "TLSv1.3")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"])
@pytest.mark.parametrize("sni", [None, "evil.example"], ids=["no-SNI", "unknown-SNI"])
def test_old_tls_versions_are_refused_by_the_catch_all(testbed, testbed_dns, sni, version):
    ctx = any_certificate(minimum=version)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # really offer the old version
    ctx.maximum_version = version
    with pytest.raises(ssl.SSLError) as refused:
        raw_handshake(testbed_dns[testbed.hub_name], sni, ctx)
    assert "ALERT_PROTOCOL_VERSION" in str(refused.value), refused.value


@pytest.mark.xdist_group("playbooks")  # nginx -T must not meet the rollback test's broken config
def test_no_server_enables_tls_below_1_2(hub_host):
    # Every ssl_protocols line of the whole effective config, Debian's
    # nginx.conf (http level, which any server without its own inherits) too.
    effective = hub_host.check_output("nginx -T 2>/dev/null")
    lines = re.findall(r"^\s*ssl_protocols\s+([^;]*);", effective, re.MULTILINE)
    assert lines, effective[:2000]
    assert {" ".join(line.split()) for line in lines} == {"TLSv1.2 TLSv1.3"}, lines


def test_https_request_for_another_host_is_not_served(testbed, testbed_dns, pebble_root):
    # The hub's SNI and certificate, but Host: evil.example.
    status = request_with_host(testbed.hub_name, "evil.example", pebble_only(pebble_root))
    assert status in (None, 421), status
    # The hub's own Host on the same kind of connection is served (JupyterHub's health check).
    assert request_with_host(testbed.hub_name, testbed.hub_name, pebble_only(pebble_root)) == 200


@pytest.mark.parametrize("host", ["evil.example", "203.0.113.7"], ids=["other-name", "bare-address"])
def test_plain_http_for_another_host_gets_no_answer(testbed, testbed_dns, host):
    assert request_with_host(testbed.hub_name, host, None, "/anything") is None
    # The hub's own name still gets its redirect.
    assert request_with_host(testbed.hub_name, testbed.hub_name, None, "/anything") == 301


def openssl_handshake(address: str, sni: str, version: str, group: str) -> subprocess.CompletedProcess:
    """A handshake by OpenSSL's s_client offering one key exchange group only."""
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"{address}:443", "-servername", sni, f"-{version}",
         "-groups", group, "-brief"],
        input="", capture_output=True, text=True, timeout=30,
    )


def temp_key(done: subprocess.CompletedProcess) -> str:
    found = re.search(r"^(?:Server|Peer) Temp Key: (.*)$", done.stdout + done.stderr, re.MULTILINE)
    assert found, done.stdout + done.stderr
    return found.group(1)


@pytest.mark.parametrize("group", ["X448", "secp521r1", "ffdhe2048", "ffdhe4096"])
def test_tls13_handshakes_with_refused_groups_fail(testbed, testbed_dns, group):
    # A TLS 1.3 client offering only that group: the server has no group to pick.
    done = openssl_handshake(testbed_dns[testbed.hub_name], testbed.hub_name, "tls1_3", group)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "handshake failure" in done.stderr, done.stderr


@pytest.mark.parametrize("group", ["X448", "secp521r1"])
def test_tls12_never_uses_refused_groups_even_when_preferred(testbed, testbed_dns, group):
    # TLS 1.2 needs P-256 in the client's list for the hub's ECDSA P-256
    # certificate; the client prefers the refused group, the server must not take it.
    done = openssl_handshake(testbed_dns[testbed.hub_name], testbed.hub_name, "tls1_2", f"{group}:prime256v1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prime256v1" in temp_key(done)


@pytest.mark.parametrize(
    ("version", "groups", "shown"),
    [("tls1_3", "X25519", "X25519"), ("tls1_3", "prime256v1", "prime256v1"), ("tls1_3", "secp384r1", "secp384r1"),
     ("tls1_2", "X25519:prime256v1", "X25519"), ("tls1_2", "secp384r1:prime256v1", "secp384r1")],
)
def test_intermediate_groups_are_accepted(testbed, testbed_dns, version, groups, shown):
    done = openssl_handshake(testbed_dns[testbed.hub_name], testbed.hub_name, version, groups)
    assert done.returncode == 0, done.stdout + done.stderr
    assert shown in temp_key(done)


def test_certificate_lifespan_fits_mozillas_rule(testbed, testbed_dns, pebble_root):
    # Mozilla "intermediate": certificates live at most 398 days (the test
    # bed's pebble issues for 90 days, as Let's Encrypt does).
    leaf, _, _ = handshake(testbed.hub_name, pebble_only(pebble_root))
    lifespan = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifespan.days <= 398, lifespan


@pytest.mark.parametrize(
    "path",
    ["/hub/login", "/hub/no-such-page", "/hub/static/css/style.min.css", "/hub/", "/hub/api/", "/user/nobody/"],
    ids=["page", "404", "static", "redirect", "api-root", "user-redirect"],
)
def test_every_https_answer_has_nosniff_hsts_and_no_hub_version(testbed, testbed_dns, pebble_root, path):
    resp, _ = get(testbed.hub_name, path, pebble_only(pebble_root))
    assert resp.status != 502, "JupyterHub is not up"
    assert resp.getheader("X-Content-Type-Options") == "nosniff", (resp.status, resp.getheaders())
    assert resp.getheader("Strict-Transport-Security") == HSTS, (resp.status, resp.getheaders())
    assert resp.getheader("X-JupyterHub-Version") is None, resp.getheaders()


def test_plain_http_redirect_has_nosniff(testbed, testbed_dns):
    resp, _ = get(testbed.hub_name, "/hub/login")
    assert resp.status == 301
    assert resp.getheader("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize("path", ["/hub/api", "/hub/api/", "/hub/api/?x=1", "//hub//api/"])
def test_the_api_root_tells_no_version(testbed, testbed_dns, pebble_root, path):
    resp, body = get(testbed.hub_name, path, pebble_only(pebble_root))
    assert resp.status in (200, 404), (resp.status, body)
    assert b"version" not in body.lower(), body
    assert not re.search(rb"\d+\.\d+\.\d+", body), body


def post_body(name: str, path: str, size: int, ctx: ssl.SSLContext) -> int | None:
    conn = http.client.HTTPSConnection(name, 443, context=ctx, timeout=30)
    try:
        return closed_without_answer(lambda: (
            conn.request("POST", path, body=b"{" + b" " * (size - 2) + b"}",
                         headers={"Content-Type": "application/json"}),
            conn.getresponse())[1])
    finally:
        conn.close()


def test_oversized_hub_api_bodies_are_refused_by_nginx(testbed, testbed_dns, pebble_root):
    ctx = pebble_only(pebble_root)
    # 2 MiB to the hub's REST API: refused before JupyterHub reads any of it.
    assert post_body(testbed.hub_name, "/hub/api/users/nobody/server", 2 * 1024 * 1024, ctx) == 413
    # A small body reaches JupyterHub (which refuses the unauthenticated call itself).
    assert post_body(testbed.hub_name, "/hub/api/users/nobody/server", 16 * 1024, ctx) in (401, 403)


def test_notebook_uploads_keep_their_larger_limit(testbed, testbed_dns, pebble_root):
    # A 3 MiB body (a few upload chunks, a saved notebook) to /user/ passes
    # NGINX; the hub answers (no such server), NGINX does not refuse it.
    status = post_body(testbed.hub_name, "/user/nobody/api/contents/x.ipynb", 3 * 1024 * 1024, pebble_only(pebble_root))
    assert status not in (None, 413), status


@pytest.mark.xdist_group("hub")
def test_notebook_uploads_and_saves_pass_through_nginx(hub_user, browser, testbed):
    # What JupyterLab sends through NGINX: a 3 MiB file in 1 MiB chunks
    # (each request about 1.4 MiB of JSON: more than the hub's own cap) and
    # a 4 MiB notebook saved in one request.
    grace = hub_user("grace@uchicago.edu")
    reply = grace.start()
    assert reply.status_code in (201, 202), reply.text
    try:
        headers = {"Authorization": f"token {grace.token()}"}
        contents = f"{testbed.hub_url}/user/grace/api/contents"
        data = secrets.token_bytes(3 * 1024 * 1024)
        chunks = [data[i:i + 1024 * 1024] for i in range(0, len(data), 1024 * 1024)]
        for number, chunk in enumerate(chunks, start=1):
            body = {"type": "file", "format": "base64", "name": "upload.bin", "path": "upload.bin",
                    "content": base64.b64encode(chunk).decode(), "chunk": -1 if number == len(chunks) else number}
            put = browser.put(f"{contents}/upload.bin", json=body, headers=headers, timeout=60)
            assert put.status_code in (200, 201), (number, put.status_code, put.text[:300])
        stored = browser.get(f"{contents}/upload.bin?content=1&format=base64&type=file", headers=headers, timeout=60)
        assert stored.status_code == 200, stored.text[:300]
        assert base64.b64decode(stored.json()["content"]) == data

        notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
            {"cell_type": "markdown", "id": "big", "metadata": {}, "source": "x" * (4 * 1024 * 1024)}]}
        put = browser.put(f"{contents}/big.ipynb", json={"type": "notebook", "format": "json", "content": notebook},
                          headers=headers, timeout=60)
        assert put.status_code in (200, 201), (put.status_code, put.text[:300])
    finally:
        grace.stop()
