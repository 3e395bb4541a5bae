#!/usr/bin/env python3
"""Globus Auth + Globus Groups stand-in for the test bed.

NOT Globus. A test fixture that speaks the subset of the Globus Auth / Groups
HTTP protocol that oauthenticator's GlobusOAuthenticator (17.4) and globus-sdk
(4.9) use, so those unmodified clients can run against it where the real
service is unreachable. Everything is held in memory; a restart forgets all
codes and tokens and makes a new id_token signing key (unless --signing-key).

Runs with the Python 3.11 standard library plus PyJWT (>= 2.6) and
cryptography (>= 38), i.e. Debian bookworm's python3-jwt and
python3-cryptography.

    python3 globus_standin.py --clients clients.json \
        --listen 0.0.0.0:8443 --cert cert.pem --key key.pem \
        --issuer https://auth.globus.test:8443

See README.md beside this file for the endpoints and the test identities.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

AUTH_RS = "auth.globus.org"
GROUPS_RS = "groups.api.globus.org"
OIDC_SCOPES = ("openid", "profile", "email")
VIEW_IDENTITY_SET = "urn:globus:auth:scope:auth.globus.org:view_identity_set"
GROUPS_READ_SCOPES = frozenset(
    {
        "urn:globus:auth:scope:groups.api.globus.org:view_my_groups_and_memberships",
        "urn:globus:auth:scope:groups.api.globus.org:all",
    }
)
# Client identities are not in any identity provider of the config.
CLIENT_IDP_ID = "00000000-0000-4000-8000-00000000c1d0"
CLIENT_IDP_NAME = "Globus Auth clients (stand-in)"
CLIENT_USERNAME_DOMAIN = "clients.auth.globus.org"

CODE_LIFETIME = 600  # authorization codes and login forms
MAX_BODY = 1 << 20
PKCE_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


class OAuthError(Exception):
    """An error answered as Globus-style JSON."""

    def __init__(self, status, error, description, headers=None):
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}


class PageError(Exception):
    """An error answered as a small HTML page (browser-facing, no redirect)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status, error, description):
    """Globus Auth error document: OAuth fields plus Globus's `errors` list."""
    return {
        "error": error,
        "error_description": description,
        "errors": [
            {
                "status": str(status),
                "id": str(uuid.uuid4()),
                "code": error.upper(),
                "title": error.replace("_", " ").capitalize(),
                "detail": description,
            }
        ],
    }


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def int_b64url(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def now() -> int:
    return int(time.time())


def scope_resource_server(scope: str):
    """Resource server a Globus scope string belongs to, or None if unknown."""
    if scope in OIDC_SCOPES:
        return AUTH_RS
    prefix = "urn:globus:auth:scope:"
    if scope.startswith(prefix):
        rs, sep, name = scope[len(prefix):].partition(":")
        return rs if rs and sep and name and "[" not in scope else None
    prefix = "https://auth.globus.org/scopes/"
    if scope.startswith(prefix):
        rs, sep, name = scope[len(prefix):].partition("/")
        return rs if rs and sep and name and "[" not in scope else None
    return None


def group_scopes(scope_string):
    """Split a scope string into {resource_server: [scopes]} in request order."""
    by_rs = {}
    for scope in (scope_string or "").split():
        rs = scope_resource_server(scope)
        if rs is None:
            raise OAuthError(400, "invalid_scope", f"unknown scope: {scope}")
        if scope not in by_rs.setdefault(rs, []):
            by_rs[rs].append(scope)
    if not by_rs:
        raise OAuthError(400, "invalid_scope", "no scope requested")
    # Globus answers with the auth.globus.org token at the top level when
    # there is one; the others go to `other_tokens`.
    if AUTH_RS in by_rs:
        by_rs = {AUTH_RS: by_rs.pop(AUTH_RS), **by_rs}
    return by_rs


def pkce_challenge(verifier: str, method: str) -> str:
    if method == "S256":
        return b64url(hashlib.sha256(verifier.encode("ascii")).digest())
    return verifier


class Config:
    """Identities, groups and identity providers (identities.json) + clients."""

    def __init__(self, identities_doc: dict, clients_doc: dict):
        self.idps = []
        for idp in identities_doc.get("identity_providers", []):
            self.idps.append(
                {"id": str(idp["id"]), "name": idp["name"],
                 "domains": [d.lower() for d in idp.get("domains", [])]}
            )
        self.groups = {}
        for group in identities_doc.get("groups", []):
            self.groups[group["name"]] = {
                "id": str(group["id"]),
                "name": group["name"],
                "description": group.get("description", ""),
            }
        self.identities = {}  # username -> identity
        self.by_sub = {}
        for ident in identities_doc.get("identities", []):
            username = ident["username"]
            domain = username.rsplit("@", 1)[-1].lower()
            idp = self._idp_for(ident.get("identity_provider"), domain)
            if idp is None:
                raise ValueError(f"no identity provider for {username}")
            groups = []
            for name in ident.get("groups", []):
                if name not in self.groups:
                    raise ValueError(f"{username}: unknown group {name}")
                groups.append(name)
            record = {
                "sub": str(ident["sub"]),
                "username": username,
                "name": ident.get("name", username),
                "email": ident.get("email"),
                "organization": ident.get("organization"),
                "identity_provider": idp["id"],
                "identity_provider_display_name": idp["name"],
                "groups": groups,
                "is_client": False,
            }
            if username in self.identities or record["sub"] in self.by_sub:
                raise ValueError(f"duplicate identity {username}")
            self.identities[username] = record
            self.by_sub[record["sub"]] = record

        self.clients = {}
        for client_id, spec in (clients_doc or {}).items():
            if client_id.startswith("_"):
                continue
            self.clients[str(client_id)] = {
                "client_id": str(client_id),
                "secret": spec.get("secret") or None,  # None: public client
                "redirect_uris": list(spec.get("redirect_uris") or []),
                "name": spec.get("name") or str(client_id),
            }

    def _idp_for(self, wanted, domain):
        for idp in self.idps:
            if wanted is not None:
                if wanted in (idp["id"], idp["name"]):
                    return idp
            elif domain in idp["domains"]:
                return idp
        return None

    def client_identity(self, client):
        return {
            "sub": client["client_id"],
            "username": f'{client["client_id"]}@{CLIENT_USERNAME_DOMAIN}',
            "name": client["name"],
            "email": None,
            "organization": None,
            "identity_provider": CLIENT_IDP_ID,
            "identity_provider_display_name": CLIENT_IDP_NAME,
            "groups": [],
            "is_client": True,
        }


class State:
    """All mutable server state, guarded by one lock."""

    def __init__(self, config: Config, issuer: str, token_lifetime: int, key):
        self.config = config
        self.issuer = issuer
        self.token_lifetime = token_lifetime
        self.key = key
        pub = key.public_key().public_numbers()
        self.jwk = {"kty": "RSA", "alg": "RS512", "use": "sig",
                    "n": int_b64url(pub.n), "e": int_b64url(pub.e)}
        # RFC 7638 thumbprint as the key id
        thumb = json.dumps({"e": self.jwk["e"], "kty": "RSA", "n": self.jwk["n"]},
                           separators=(",", ":"), sort_keys=True)
        self.jwk["kid"] = b64url(hashlib.sha256(thumb.encode()).digest())[:16]
        self.lock = threading.Lock()
        self.pending = {}   # login-form token -> authorize request
        self.codes = {}     # authorization code -> record
        self.access = {}    # access token -> record
        self.refresh = {}   # refresh token -> record
        self.events = []

    # -- helpers (call with the lock held) ---------------------------------
    def _event(self, kind, **fields):
        self.events.append({"seq": len(self.events) + 1, "time": time.time(),
                            "event": kind, **fields})

    def _purge(self):
        t = now()
        for table in (self.pending, self.codes):
            for key in [k for k, v in table.items() if v["exp"] < t - CODE_LIFETIME]:
                del table[key]
        for key in [k for k, v in self.access.items() if v["exp"] < t - 86400]:
            del self.access[key]

    def principal(self, rec):
        if rec["is_client"]:
            client = self.config.clients.get(rec["sub"])
            return self.config.client_identity(client) if client else None
        return self.config.by_sub.get(rec["sub"])

    def _revoke(self, rec, reason, by_client):
        if rec["revoked"]:
            return
        rec["revoked"] = True
        self._event("token_revoked", client_id=rec["client_id"],
                    username=rec["username"], sub=rec["sub"],
                    resource_server=rec["resource_server"],
                    token_kind=rec["kind"], reason=reason, by_client=by_client)
        if rec["kind"] == "refresh":
            for tok in rec["access_tokens"]:
                access = self.access.get(tok)
                if access:
                    self._revoke(access, reason + " (refresh token revoked)", by_client)

    def _new_access(self, client_id, principal, rs, scopes, grant, refresh_rec=None):
        token = secrets.token_urlsafe(40)
        t = now()
        rec = {"kind": "access", "token": token, "client_id": client_id,
               "sub": principal["sub"], "username": principal["username"],
               "is_client": principal["is_client"], "resource_server": rs,
               "scopes": list(scopes), "iat": t, "exp": t + self.token_lifetime,
               "grant": grant, "revoked": False,
               "refresh_token": refresh_rec["token"] if refresh_rec else None}
        self.access[token] = rec
        if refresh_rec is not None:
            refresh_rec["access_tokens"].append(token)
        return rec

    def _new_refresh(self, client_id, principal, rs, scopes):
        token = secrets.token_urlsafe(48)
        rec = {"kind": "refresh", "token": token, "client_id": client_id,
               "sub": principal["sub"], "username": principal["username"],
               "is_client": principal["is_client"], "resource_server": rs,
               "scopes": list(scopes), "iat": now(), "revoked": False,
               "access_tokens": []}
        self.refresh[token] = rec
        return rec

    def id_token(self, client_id, principal, scopes, access_token, nonce=None):
        t = now()
        digest = hashlib.sha512(access_token.encode("ascii")).digest()
        claims = {
            "iss": self.issuer,
            "sub": principal["sub"],
            "aud": client_id,
            "iat": t,
            "exp": t + self.token_lifetime,
            "at_hash": b64url(digest[: len(digest) // 2]),
            "last_authentication": t,
        }
        claims.update(self.claims(principal, scopes))
        if nonce:
            claims["nonce"] = nonce
        return jwt.encode(claims, self.key, algorithm="RS512",
                          headers={"kid": self.jwk["kid"]})

    def claims(self, principal, scopes):
        """OIDC claims for userinfo / id_token, by granted scope."""
        out = {"sub": principal["sub"]}
        if "profile" in scopes:
            out.update(
                name=principal["name"],
                preferred_username=principal["username"],
                organization=principal["organization"],
                identity_provider=principal["identity_provider"],
                identity_provider_display_name=principal["identity_provider_display_name"],
            )
        if "email" in scopes:
            out["email"] = principal["email"]
        if VIEW_IDENTITY_SET in scopes:
            out["identity_set"] = [self.identity_detail(principal)]
        return out

    @staticmethod
    def identity_detail(principal):
        return {
            "sub": principal["sub"],
            "username": principal["username"],
            "name": principal["name"],
            "email": principal["email"],
            "organization": principal["organization"],
            "identity_provider": principal["identity_provider"],
            "identity_provider_display_name": principal["identity_provider_display_name"],
            "last_authentication": now(),
        }

    def issue(self, client_id, principal, by_rs, grant, offline, state=None,
              nonce=None, code_rec=None):
        """Mint one token per resource server; Globus-shaped token response."""
        docs = []
        with self.lock:
            self._purge()
            for rs, scopes in by_rs.items():
                rrec = self._new_refresh(client_id, principal, rs, scopes) if offline else None
                arec = self._new_access(client_id, principal, rs, scopes, grant, rrec)
                if code_rec is not None:
                    code_rec["issued"].append(arec["token"])
                    if rrec:
                        code_rec["issued"].append(rrec["token"])
                doc = {
                    "access_token": arec["token"],
                    "expires_in": self.token_lifetime,
                    "resource_server": rs,
                    "scope": " ".join(scopes),
                    "token_type": "Bearer",
                }
                if rrec:
                    doc["refresh_token"] = rrec["token"]
                if state is not None:
                    doc["state"] = state
                docs.append(doc)
            self._event("token_issued", client_id=client_id,
                        username=principal["username"], sub=principal["sub"],
                        grant=grant, resource_servers=list(by_rs),
                        scopes=[s for ss in by_rs.values() for s in ss],
                        refresh_tokens=bool(offline))
        top = docs[0]
        top["other_tokens"] = docs[1:]  # always present (oauthenticator needs it)
        if "openid" in by_rs.get(AUTH_RS, []) and top["resource_server"] == AUTH_RS:
            top["id_token"] = self.id_token(client_id, principal, by_rs[AUTH_RS],
                                            top["access_token"], nonce)
        return top

    def lookup_access(self, token):
        """Active access-token record or None."""
        with self.lock:
            rec = self.access.get(token)
            if rec is None or rec["revoked"] or rec["exp"] < now():
                return None
            if self.principal(rec) is None:
                return None
            return dict(rec)


# ---------------------------------------------------------------------------
# HTTP


PAGE_STYLE = (
    "body{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}"
    "button{display:block;width:100%;margin:.4em 0;padding:.6em;text-align:left}"
    ".note{color:#a00;font-size:.9em}"
)


def page(title, body_html):
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body_html}"
        "<p class=\"note\">Test stand-in for Globus Auth. Not Globus.</p>"
        "</body></html>"
    ).encode("utf-8")


def add_query(url, params):
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def single_params(raw: str, what: str):
    """Parse a query/form string; each parameter at most once."""
    parsed = parse_qs(raw, keep_blank_values=True)
    out = {}
    for key, values in parsed.items():
        if len(values) > 1 and key not in ("statuses",):
            raise OAuthError(400, "invalid_request", f"{what}: repeated parameter {key}")
        out[key] = values[0] if len(values) == 1 else values
    return out


class Handler(BaseHTTPRequestHandler):
    server_version = "GlobusAuthStandin/1"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30

    ROUTES = {
        ("GET", "/.well-known/openid-configuration"): "openid_configuration",
        ("GET", "/jwk.json"): "jwk",
        ("GET", "/v2/oauth2/authorize"): "authorize_form",
        ("POST", "/v2/oauth2/authorize"): "authorize_submit",
        ("POST", "/v2/oauth2/token"): "token",
        ("GET", "/v2/oauth2/userinfo"): "userinfo",
        ("POST", "/v2/oauth2/userinfo"): "userinfo",
        ("POST", "/v2/oauth2/token/introspect"): "introspect",
        ("POST", "/v2/oauth2/token/revoke"): "revoke",
        ("GET", "/v2/groups/my_groups"): "my_groups",
        ("GET", "/_standin/events"): "standin_events",
        ("GET", "/_standin/health"): "standin_health",
    }

    @property
    def state(self) -> State:
        return self.server.standin

    # -- plumbing ----------------------------------------------------------
    def setup(self):
        self.request.settimeout(self.timeout)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_request(self, code="-", size="-"):
        path = urlsplit(getattr(self, "path", "") or "").path
        sys.stderr.write(
            f"{self.log_date_time_string()} {self.client_address[0]} "
            f"{getattr(self, 'command', '-')} {path} {code} {size}\n"
        )

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.log_date_time_string()} {self.client_address[0]} {fmt % args}\n")

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def dispatch(self, method):
        parts = urlsplit(self.path)
        self.query_string = parts.query
        route = self.ROUTES.get((method, parts.path))
        try:
            if route is None:
                if any(p == parts.path for (_m, p) in self.ROUTES):
                    raise OAuthError(405, "method_not_allowed", f"{method} not allowed here")
                raise OAuthError(404, "not_found", f"no such path: {parts.path}")
            getattr(self, "h_" + route)()
        except OAuthError as err:
            self.send_json(err.status, error_body(err.status, err.error, err.description),
                           err.headers)
        except PageError as err:
            self.send_html(err.status, page("Error", f"<p>{html.escape(err.message)}</p>"))
        except Exception:  # pragma: no cover - keep serving
            traceback.print_exc(file=sys.stderr)
            self.send_json(500, error_body(500, "server_error", "internal error"))

    def send_body(self, status, body: bytes, content_type, headers=None):
        self.send_response(status, None)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Pragma", "no-cache")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status, obj, headers=None):
        self.send_body(status, json.dumps(obj).encode("utf-8"), "application/json", headers)

    def send_html(self, status, body: bytes):
        self.send_body(status, body, "text/html; charset=utf-8", {
            "X-Frame-Options": "DENY",
            "Content-Security-Policy":
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        })

    def redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def read_form(self):
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise OAuthError(411, "invalid_request", "send a Content-Length body")
        try:
            n = int(length or 0)
        except ValueError:
            raise OAuthError(400, "invalid_request", "bad Content-Length") from None
        if n > MAX_BODY:
            raise OAuthError(413, "invalid_request", "body too large")
        raw = self.rfile.read(n) if n else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if raw and ctype != "application/x-www-form-urlencoded":
            raise OAuthError(400, "invalid_request",
                             "expected application/x-www-form-urlencoded")
        return single_params(raw.decode("utf-8", "replace"), "body")

    def query(self):
        return single_params(self.query_string, "query")

    def client_auth(self, form, allow_public):
        """Authenticate the calling client: HTTP Basic, or client_id/secret
        in the body; a public client (no secret) by client_id alone when
        allow_public."""
        clients = self.state.config.clients
        header = self.headers.get("Authorization") or ""
        bad = OAuthError(401, "invalid_client", "client authentication failed",
                         {"WWW-Authenticate": 'Basic realm="globus-standin"'})
        if header[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
                client_id, _, secret = decoded.partition(":")
            except Exception:
                raise bad from None
            candidates = [(client_id, secret), (unquote(client_id), unquote(secret))]
        elif "client_secret" in form:
            candidates = [(form.get("client_id", ""), form["client_secret"])]
        elif "client_id" in form and allow_public:
            client = clients.get(form["client_id"])
            if client is not None and client["secret"] is None:
                return client
            raise bad
        else:
            raise bad
        for client_id, secret in candidates:
            client = clients.get(client_id)
            if (client is not None and client["secret"] is not None
                    and hmac.compare_digest(client["secret"].encode(), secret.encode())):
                if form.get("client_id", client_id) != client_id:
                    raise bad
                return client
        raise bad

    def bearer(self, resource_server, required_scopes=None):
        header = self.headers.get("Authorization") or ""
        if header[:7].lower() != "bearer ":
            raise OAuthError(401, "unauthorized", "Call must be authenticated",
                             {"WWW-Authenticate": 'Bearer realm="globus-standin"'})
        rec = self.state.lookup_access(header[7:].strip())
        if rec is None or rec["resource_server"] != resource_server:
            raise OAuthError(401, "invalid_token",
                             f"token is not an active {resource_server} token",
                             {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if required_scopes and not set(rec["scopes"]) & set(required_scopes):
            raise OAuthError(403, "insufficient_scope",
                             "token lacks a required scope: " + " ".join(sorted(required_scopes)),
                             {"WWW-Authenticate": 'Bearer error="insufficient_scope"'})
        return rec

    # -- discovery ---------------------------------------------------------
    def h_openid_configuration(self):
        iss = self.state.issuer
        self.send_json(200, {
            "issuer": iss,
            "authorization_endpoint": f"{iss}/v2/oauth2/authorize",
            "token_endpoint": f"{iss}/v2/oauth2/token",
            "userinfo_endpoint": f"{iss}/v2/oauth2/userinfo",
            "revocation_endpoint": f"{iss}/v2/oauth2/token/revoke",
            "introspection_endpoint": f"{iss}/v2/oauth2/token/introspect",
            "jwks_uri": f"{iss}/jwk.json",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token",
                                      "client_credentials"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS512"],
            "scopes_supported": list(OIDC_SCOPES),
            "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                      "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256", "plain"],
            "claims_supported": ["at_hash", "aud", "email", "exp", "iat", "iss",
                                 "name", "nonce", "organization",
                                 "preferred_username", "sub", "identity_provider",
                                 "identity_provider_display_name", "identity_set",
                                 "last_authentication"],
        })

    def h_jwk(self):
        self.send_json(200, {"keys": [self.state.jwk]})

    # -- authorize ---------------------------------------------------------
    def check_client_redirect(self, params):
        client = self.state.config.clients.get(params.get("client_id") or "")
        if client is None:
            raise PageError(400, "Unknown client_id.")
        redirect_uri = params.get("redirect_uri") or ""
        if client["redirect_uris"]:
            if redirect_uri not in client["redirect_uris"]:
                raise PageError(400, "redirect_uri is not registered for this client.")
        else:
            parts = urlsplit(redirect_uri)
            if parts.scheme != "https" or not parts.netloc or parts.fragment:
                raise PageError(400, "redirect_uri must be an https URL.")
        return client, redirect_uri

    def h_authorize_form(self):
        try:
            params = self.query()
        except OAuthError as err:
            raise PageError(400, err.description) from None
        client, redirect_uri = self.check_client_redirect(params)
        state = params.get("state")

        def fail(error, description):
            out = {"error": error, "error_description": description}
            if state is not None:
                out["state"] = state
            self.redirect(add_query(redirect_uri, out))

        if params.get("response_type") != "code":
            return fail("unsupported_response_type", "response_type must be code")
        try:
            by_rs = group_scopes(params.get("scope"))
        except OAuthError as err:
            return fail(err.error, err.description)
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if challenge is None:
            if method is not None:
                return fail("invalid_request", "code_challenge_method without code_challenge")
            if client["secret"] is None:
                return fail("invalid_request", "public clients must use PKCE")
        else:
            method = method or "plain"
            if method not in ("S256", "plain"):
                return fail("invalid_request", "code_challenge_method must be S256 or plain")
            if not PKCE_RE.match(challenge):
                return fail("invalid_request", "malformed code_challenge")
        form_token = secrets.token_urlsafe(32)
        st = self.state
        with st.lock:
            st._purge()
            st.pending[form_token] = {
                "client_id": client["client_id"], "redirect_uri": redirect_uri,
                "by_rs": by_rs, "state": state, "code_challenge": challenge,
                "code_challenge_method": method,
                "offline": params.get("access_type") == "offline",
                "nonce": params.get("nonce"), "exp": now() + CODE_LIFETIME,
            }
        buttons = []
        for ident in st.config.identities.values():
            label = (f'{ident["name"]} &lt;{html.escape(ident["username"])}&gt; '
                     f'&mdash; {html.escape(ident["identity_provider_display_name"])}')
            buttons.append(
                f'<button type="submit" name="username" '
                f'value="{html.escape(ident["username"], quote=True)}">{label}</button>'
            )
        scopes = " ".join(s for ss in by_rs.values() for s in ss)
        body = (
            f'<p>Application <b>{html.escape(client["name"])}</b> asks for: '
            f"<code>{html.escape(scopes)}</code></p>"
            '<form method="post" action="/v2/oauth2/authorize">'
            f'<input type="hidden" name="form_token" value="{form_token}">'
            "<p>Sign in as:</p>" + "".join(buttons)
            + '<button type="submit" name="deny" value="1">Deny</button></form>'
        )
        self.send_html(200, page("Globus Auth stand-in: sign in", body))

    def h_authorize_submit(self):
        try:
            form = self.read_form()
        except OAuthError as err:
            raise PageError(400, err.description) from None
        st = self.state
        with st.lock:
            pending = st.pending.get(form.get("form_token") or "")
            if pending is None or pending["exp"] < now():
                st.pending.pop(form.get("form_token") or "", None)
                raise PageError(400, "Login form expired or already used; start again.")
            deny = form.get("deny")
            ident = st.config.identities.get(form.get("username") or "")
            if ident is None and not deny:
                raise PageError(400, "Unknown identity.")
            del st.pending[form["form_token"]]
            if deny:
                code = None
            else:
                code = secrets.token_urlsafe(32)
                st.codes[code] = {**pending, "sub": ident["sub"], "used": False,
                                  "issued": [], "exp": now() + CODE_LIFETIME}
                st._event("login", client_id=pending["client_id"],
                          username=ident["username"], sub=ident["sub"])
        params = ({"code": code} if code else
                  {"error": "access_denied", "error_description": "user denied"})
        if pending["state"] is not None:
            params["state"] = pending["state"]
        self.redirect(add_query(pending["redirect_uri"], params))

    # -- token -------------------------------------------------------------
    def h_token(self):
        form = self.read_form()
        client = self.client_auth(form, allow_public=True)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            doc = self.grant_code(client, form)
        elif grant == "refresh_token":
            doc = self.grant_refresh(client, form)
        elif grant == "client_credentials":
            doc = self.grant_client_credentials(client, form)
        else:
            raise OAuthError(400, "unsupported_grant_type", f"unsupported grant_type: {grant}")
        self.send_json(200, doc)

    def grant_code(self, client, form):
        st = self.state
        invalid = OAuthError(400, "invalid_grant", "invalid authorization code")
        with st.lock:
            rec = st.codes.get(form.get("code") or "")
            if rec is None or rec["client_id"] != client["client_id"]:
                raise invalid
            if rec["used"]:
                # RFC 6749 4.1.2: revoke what the code gave
                for tok in rec["issued"]:
                    trec = st.access.get(tok) or st.refresh.get(tok)
                    if trec:
                        st._revoke(trec, "authorization code reused", client["client_id"])
                st._event("code_reused", client_id=client["client_id"], sub=rec["sub"])
                raise OAuthError(400, "invalid_grant", "authorization code already used")
            if rec["exp"] < now():
                raise OAuthError(400, "invalid_grant", "authorization code expired")
            rec["used"] = True  # single use, even when the checks below fail
            if form.get("redirect_uri") != rec["redirect_uri"]:
                raise OAuthError(400, "invalid_grant", "redirect_uri does not match")
            verifier = form.get("code_verifier")
            if rec["code_challenge"] is not None:
                if not verifier or not PKCE_RE.match(verifier):
                    raise OAuthError(400, "invalid_grant", "code_verifier missing or malformed")
                expected = pkce_challenge(verifier, rec["code_challenge_method"])
                if not hmac.compare_digest(expected, rec["code_challenge"]):
                    raise OAuthError(400, "invalid_grant", "code_verifier does not match")
            elif verifier is not None:
                raise OAuthError(400, "invalid_grant",
                                 "code_verifier sent but no code_challenge was")
            principal = st.config.by_sub.get(rec["sub"])
        if principal is None:
            raise invalid
        return st.issue(client["client_id"], principal, rec["by_rs"],
                        "authorization_code", rec["offline"], state=rec["state"],
                        nonce=rec["nonce"], code_rec=rec)

    def grant_refresh(self, client, form):
        st = self.state
        with st.lock:
            rec = st.refresh.get(form.get("refresh_token") or "")
            if rec is None or rec["revoked"] or rec["client_id"] != client["client_id"]:
                raise OAuthError(400, "invalid_grant", "invalid refresh token")
            principal = st.principal(rec)
            if principal is None:
                raise OAuthError(400, "invalid_grant", "identity no longer exists")
            arec = st._new_access(client["client_id"], principal, rec["resource_server"],
                                  rec["scopes"], "refresh_token", rec)
            st._event("token_issued", client_id=client["client_id"],
                      username=principal["username"], sub=principal["sub"],
                      grant="refresh_token", resource_servers=[rec["resource_server"]],
                      refresh_tokens=True)
        doc = {
            "access_token": arec["token"],
            "expires_in": st.token_lifetime,
            "resource_server": rec["resource_server"],
            "scope": " ".join(rec["scopes"]),
            "token_type": "Bearer",
            "refresh_token": rec["token"],
            "other_tokens": [],
        }
        if rec["resource_server"] == AUTH_RS and "openid" in rec["scopes"]:
            doc["id_token"] = st.id_token(client["client_id"], principal, rec["scopes"],
                                          arec["token"])
        return doc

    def grant_client_credentials(self, client, form):
        if client["secret"] is None:
            raise OAuthError(401, "invalid_client", "public clients cannot use client_credentials")
        if not form.get("scope"):
            raise OAuthError(400, "invalid_scope", "scope is required")
        by_rs = group_scopes(form["scope"])
        principal = self.state.config.client_identity(client)
        return self.state.issue(client["client_id"], principal, by_rs,
                                "client_credentials", offline=False)

    # -- introspect / revoke ----------------------------------------------
    def h_introspect(self):
        form = self.read_form()
        client = self.client_auth(form, allow_public=False)
        token = form.get("token")
        if not token:
            raise OAuthError(400, "invalid_request", "token is required")
        rec = self.state.lookup_access(token)
        # A client may introspect the tokens issued to it.
        if rec is None or rec["client_id"] != client["client_id"]:
            return self.send_json(200, {"active": False})
        principal = self.state.principal(rec)
        doc = {
            "active": True,
            "token_type": "Bearer",
            "scope": " ".join(rec["scopes"]),
            "client_id": rec["client_id"],
            "username": principal["username"],
            "name": principal["name"],
            "email": principal["email"],
            "sub": principal["sub"],
            "exp": rec["exp"],
            "iat": rec["iat"],
            "nbf": rec["iat"],
            "aud": [rec["resource_server"], rec["client_id"]],
            "iss": self.state.issuer,
        }
        include = {i.strip() for i in (form.get("include") or "").split(",") if i.strip()}
        if "identity_set" in include:
            doc["identity_set"] = [principal["sub"]]
        if "identity_set_detail" in include:
            doc["identity_set_detail"] = [self.state.identity_detail(principal)]
        self.send_json(200, doc)

    def h_revoke(self):
        form = self.read_form()
        client = self.client_auth(form, allow_public=True)
        token = form.get("token")
        if not token:
            raise OAuthError(400, "invalid_request", "token is required")
        st = self.state
        with st.lock:
            rec = st.access.get(token) or st.refresh.get(token)
            if rec is not None and rec["client_id"] == client["client_id"]:
                st._revoke(rec, "revoked by client", client["client_id"])
            elif rec is not None:
                st._event("revoke_refused", client_id=client["client_id"],
                          token_client_id=rec["client_id"], token_kind=rec["kind"])
        # RFC 7009: 200 whether or not the token was known
        self.send_json(200, {"active": False})

    # -- resources ---------------------------------------------------------
    def h_userinfo(self):
        if self.command == "POST":
            self.read_form()
        rec = self.bearer(AUTH_RS, {"openid"})
        principal = self.state.principal(rec)
        self.send_json(200, self.state.claims(principal, rec["scopes"]))

    def h_my_groups(self):
        rec = self.bearer(GROUPS_RS, GROUPS_READ_SCOPES)
        params = self.query()
        statuses = params.get("statuses")
        if isinstance(statuses, list):
            statuses = ",".join(statuses)
        wanted = {s.strip() for s in (statuses or "").split(",") if s.strip()}
        principal = self.state.principal(rec)
        groups = []
        if not wanted or "active" in wanted:
            for name in principal["groups"]:
                group = self.state.config.groups[name]
                groups.append({
                    "id": group["id"],
                    "name": group["name"],
                    "description": group["description"],
                    "parent_id": None,
                    "group_type": "regular",
                    "enforce_session": False,
                    "session_limit": 28800,
                    "session_timeouts": {},
                    "my_memberships": [{
                        "group_id": group["id"],
                        "identity_id": principal["sub"],
                        "username": principal["username"],
                        "role": "member",
                        "status": "active",
                    }],
                    "policies": {
                        "group_visibility": "private",
                        "group_members_visibility": "managers",
                    },
                })
        self.send_json(200, groups)

    # -- stand-in test hooks (NOT part of Globus) ---------------------------
    def h_standin_events(self):
        params = self.query()
        try:
            since = int(params.get("since") or 0)
        except ValueError:
            raise OAuthError(400, "invalid_request", "since must be an integer") from None
        with self.state.lock:
            events = [e for e in self.state.events if e["seq"] > since]
        self.send_json(200, events)

    def h_standin_health(self):
        self.send_json(200, {"status": "ok", "issuer": self.state.issuer})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, socket.timeout, OSError)):
            sys.stderr.write(f"connection from {client_address[0]} failed: {exc!r}\n")
        else:  # pragma: no cover
            super().handle_error(request, client_address)


def parse_listen(value):
    host, sep, port = value.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError("--listen wants HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    try:
        return host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError("--listen wants HOST:PORT") from None


def load_key(path):
    if path and Path(path).exists():
        return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if path:
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
    return key


def main(argv=None):
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description="Globus Auth/Groups stand-in (tests only)")
    ap.add_argument("--config", default=str(here / "identities.json"),
                    help="identities/groups/identity providers JSON")
    ap.add_argument("--clients", required=True,
                    help='JSON {"<client_id>": {"secret": ..., "redirect_uris": [...], "name": ...}}')
    ap.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 8443),
                    help="HOST:PORT (port 0: pick one; see --ready-file)")
    ap.add_argument("--cert", required=True, help="TLS certificate chain (PEM)")
    ap.add_argument("--key", required=True, help="TLS private key (PEM)")
    ap.add_argument("--issuer", help="public base URL, e.g. https://auth.globus.test:8443 "
                                     "(default: https://HOST:PORT as bound)")
    ap.add_argument("--token-lifetime", type=int, default=172800,
                    help="access token lifetime in seconds (Globus: 172800)")
    ap.add_argument("--signing-key", help="id_token RSA key PEM; created if missing "
                                          "(default: a new key in memory)")
    ap.add_argument("--ready-file", help="write {issuer, port, pid} JSON here once listening")
    args = ap.parse_args(argv)

    identities_doc = json.loads(Path(args.config).read_text())
    clients_doc = json.loads(Path(args.clients).read_text())
    config = Config(identities_doc, clients_doc)

    host, port = args.listen
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    httpd = Server((host, port), Handler)
    port = httpd.server_address[1]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True,
                                   do_handshake_on_connect=False)
    shown_host = f"[{host}]" if ":" in host else host
    issuer = (args.issuer or f"https://{shown_host}:{port}").rstrip("/")
    httpd.standin = State(config, issuer, args.token_lifetime, load_key(args.signing_key))

    sys.stderr.write(
        f"globus-standin: listening on {shown_host}:{port}, issuer {issuer}, "
        f"{len(config.identities)} identities, {len(config.clients)} clients\n"
    )
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        Path(tmp).write_text(json.dumps({"issuer": issuer, "port": port, "pid": os.getpid()}))
        os.replace(tmp, args.ready_file)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
