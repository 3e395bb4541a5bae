#!/usr/bin/python
# Copyright: HPC Gateway maintainers
# Apache-2.0 (see LICENSE)
"""Documentation of the action plugin plugins/action/site_settings.py."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: site_settings
short_description: Check a site's settings as a whole before any host is reached
description:
  - Runs on the controller (an action plugin) in the first play of
    C(hpcgateway.jupyterhub.site), before any host is reached. Fails, naming
    every problem, when
  - a host or group variable carries a role's prefix (C(jupyterhub_),
    C(nginx_), C(globus_auth_), C(tunnelbot_), C(spawner_), C(gateway_),
    C(apptainer_images_), or C(_common_) of the values the roles share) but no
    role declares it in meta/argument_specs.yml.
    The message names the variable, the file that sets it (host_vars/ or
    group_vars/, beside the playbook or the inventory's), the hosts, and
    the closest declared name. Variables the roles set while they run
    (facts, registered results) do not exist yet, so they are never checked.
  - a variable is set for the same host (or group) both in the host_vars/
    (group_vars/) beside the playbook and in the inventory's own, with
    different values. Ansible would silently use the one beside the
    playbook; the check names both files.
  - a hand-set C(nginx_upstream_url) has another port than
    C(jupyterhub_proxy_port) (its default follows that port).
  - Changes nothing.
version_added: 0.1.0
author: HPC Gateway maintainers (@hpcgateway)
options: {}
notes:
  - Supports check mode; it only reads.
  - Action plugin; the module file only documents it.
"""

EXAMPLES = r"""
- name: Check the site's settings as a whole
  hpcgateway.jupyterhub.site_settings:
"""

RETURN = r"""
msg:
  description: What was wrong, one line per problem, or that all is consistent.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    module.fail_json(msg="site_settings runs on the controller as an action plugin (hpcgateway.jupyterhub.site_settings).")


if __name__ == "__main__":
    main()
