# Copyright: HPC Gateway maintainers
# Apache-2.0 (see LICENSE)
"""The gateway's rules as filters: one definition, plugins/module_utils/rules.py,
which the hub package carries too (python/hpcgw_hub/rules.py links to it)."""

from __future__ import annotations

from ansible_collections.hpcgateway.jupyterhub.plugins.module_utils.rules import (
    image_errors,
    known_hosts_lines,
    known_hosts_name,
    profile_errors,
    ssh_host_keys,
    ssh_key_id,
)


class FilterModule:
    """hpcgateway.jupyterhub.profile_errors, image_errors, ssh_host_keys, known_hosts_lines,
    known_hosts_name, ssh_key_id."""

    def filters(self):
        return {
            "profile_errors": profile_errors,
            "image_errors": image_errors,
            "ssh_host_keys": ssh_host_keys,
            "known_hosts_lines": known_hosts_lines,
            "known_hosts_name": known_hosts_name,
            "ssh_key_id": ssh_key_id,
        }
