"""The Globus Auth stand-in answers globus-sdk, unchanged, as Globus would."""

from __future__ import annotations

import pytest


@pytest.fixture
def globus_env(testbed, testbed_dns, trust_testbed_ca, monkeypatch):
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", testbed.globus_url)
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_GROUPS", testbed.globus_url)
    monkeypatch.setenv("GLOBUS_SDK_VERIFY_SSL", str(trust_testbed_ca))
    import globus_sdk

    return globus_sdk


def test_client_credentials_grant(globus_env, testbed):
    auth = globus_env.ConfidentialAppAuthClient(testbed.globus_client_id, testbed.globus_client_secret)
    tokens = auth.oauth2_client_credentials_tokens(requested_scopes="openid profile email")
    token = tokens.by_resource_server["auth.globus.org"]["access_token"]
    info = auth.oauth2_token_introspect(token)
    assert info["active"] is True
    assert info["client_id"] == testbed.globus_client_id


def test_wrong_client_secret_is_refused(globus_env, testbed):
    auth = globus_env.ConfidentialAppAuthClient(testbed.globus_client_id, "not-the-secret")
    with pytest.raises(globus_env.AuthAPIError) as refused:
        auth.oauth2_client_credentials_tokens(requested_scopes="openid")
    assert refused.value.http_status == 401
