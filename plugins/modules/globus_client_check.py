#!/usr/bin/python
# Copyright: HPC Gateway maintainers
# Apache-2.0 (see LICENSE)
"""Ansible module: check Globus Auth client credentials with globus-sdk."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: globus_client_check
short_description: Check a Globus Auth confidential client's id and secret
description:
  - Asks Globus Auth for a token with the client credentials grant, using
    globus-sdk, then revokes that token. Fails when Globus Auth refuses the
    credentials or cannot be reached, so a play can stop before it changes
    anything. Changes nothing anywhere.
  - "Run it where globus-sdk is installed, usually the controller
    (C(delegate_to: localhost))."
version_added: 0.1.0
author: HPC Gateway maintainers (@hpcgateway)
options:
  client_id:
    description: The client id (a UUID) registered at Globus.
    type: str
    required: true
  client_secret:
    description: The client's secret.
    type: str
    required: true
  base_url:
    description:
      - Base URL of Globus Auth. Set it to reach a test or alternate Auth service.
    type: str
    default: https://auth.globus.org
  ca_bundle:
    description:
      - CA bundle (a path on the host running the module) that signs Globus Auth's
        certificate, when it is not in the system's trust store.
    type: path
  scopes:
    description: Scopes to ask for.
    type: list
    elements: str
    default: [openid]
requirements:
  - globus-sdk >= 4
notes:
  - Supports check mode; it only reads.
"""

EXAMPLES = r"""
- name: Check the hub's Globus client before changing anything
  hpcgateway.jupyterhub.globus_client_check:
    client_id: "{{ globus_auth_client_id }}"
    client_secret: "{{ globus_auth_client_secret }}"
  delegate_to: localhost
  run_once: true
  no_log: true
"""

RETURN = r"""
scopes:
  description: The scopes Globus Auth granted.
  returned: success
  type: str
resource_server:
  description: The resource server of the token Globus Auth issued.
  returned: success
  type: str
refused:
  description: True when Globus Auth answered and refused the credentials.
  returned: failure
  type: bool
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import globus_sdk
except ImportError:
    globus_sdk = None
    GLOBUS_SDK_ERROR = traceback.format_exc()
else:
    GLOBUS_SDK_ERROR = None


def point_globus_sdk_at(base_url: str, ca_bundle: str | None) -> None:
    """globus-sdk reads its service URL and CA from the environment."""
    os.environ["GLOBUS_SDK_SERVICE_URL_AUTH"] = base_url.rstrip("/") + "/"
    if ca_bundle:
        os.environ["GLOBUS_SDK_VERIFY_SSL"] = ca_bundle
        # requests prefers these over globus-sdk's own setting when present.
        for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            os.environ[variable] = ca_bundle


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "client_id": {"type": "str", "required": True},
            "client_secret": {"type": "str", "required": True, "no_log": True},
            "base_url": {"type": "str", "default": "https://auth.globus.org"},
            "ca_bundle": {"type": "path"},
            "scopes": {"type": "list", "elements": "str", "default": ["openid"]},
        },
        supports_check_mode=True,
    )
    if globus_sdk is None:
        module.fail_json(msg=missing_required_lib("globus-sdk"), exception=GLOBUS_SDK_ERROR)
    params = module.params
    point_globus_sdk_at(params["base_url"], params["ca_bundle"])
    client = globus_sdk.ConfidentialAppAuthClient(params["client_id"], params["client_secret"])
    try:
        tokens = client.oauth2_client_credentials_tokens(requested_scopes=" ".join(params["scopes"]))
    except globus_sdk.AuthAPIError as error:
        module.fail_json(
            msg=f"Globus Auth at {params['base_url']} refused the client credentials "
            f"(HTTP {error.http_status} {error.code}): the client id or secret is wrong",
            refused=True,
        )
    except globus_sdk.GlobusError as error:
        module.fail_json(msg=f"Cannot reach Globus Auth at {params['base_url']}: {error}", refused=False)

    token = tokens.by_resource_server.get("auth.globus.org") or next(iter(tokens.by_resource_server.values()))
    # The token was only a proof: do not leave it alive.
    try:
        client.oauth2_revoke_token(token["access_token"])
    except globus_sdk.GlobusError:
        module.warn("The check token could not be revoked; it expires by itself.")
    module.exit_json(changed=False, scopes=token["scope"], resource_server=token["resource_server"])


if __name__ == "__main__":
    main()
