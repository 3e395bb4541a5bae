# Copyright: HPC Gateway maintainers
# Apache-2.0 (see LICENSE)
"""The gateway's rules as tests: one definition, plugins/module_utils/rules.py."""

from __future__ import annotations

from ansible_collections.hpcgateway.jupyterhub.plugins.module_utils.rules import (
    IMAGE_NAME,
    is_known_hosts_line,
    is_ssh_public_key,
)


def image_name(value) -> bool:
    """An image's name (the hub, apptainer_images and the job wrapper's rule)."""
    return isinstance(value, str) and IMAGE_NAME.fullmatch(value) is not None


class TestModule:
    """hpcgateway.jupyterhub.ssh_public_key, known_hosts_line, image_name."""

    def tests(self):
        return {
            "ssh_public_key": is_ssh_public_key,
            "known_hosts_line": is_known_hosts_line,
            "image_name": image_name,
        }
