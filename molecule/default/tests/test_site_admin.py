"""The site's settings reach the running hub (issue 10): nginx follows the
proxy's port when a site changes it, and the site's jupyterhub_config is
applied last, over every role's conf.d fragment. The test site
(inventory/host_vars/hub.gateway.test/jupyterhub.yml) sets
jupyterhub_proxy_port 8010 and Spawner.start_timeout 420, where the spawner
role writes GatewaySpawner.start_timeout 300."""

import json

import pytest

pytestmark = pytest.mark.xdist_group("hub")

testinfra_hosts = ["hub.gateway.test"]

# What the hub itself resolves from its config files: the effective traits of
# the spawner class it runs (traitlets' own rules, subclass sections included).
EFFECTIVE_CONFIG = r"""
import json
from traitlets.config.loader import PyFileConfigLoader
from traitlets.utils.importstring import import_item
config = PyFileConfigLoader("jupyterhub_config.py", path="/etc/jupyterhub").load_config()
spawner = import_item(config.JupyterHub.spawner_class)(config=config)
print(json.dumps({"spawner_class": config.JupyterHub.spawner_class, "start_timeout": spawner.start_timeout}))
"""


def test_the_proxy_listens_on_the_sites_port_and_nginx_follows_it(host):
    assert host.socket("tcp://127.0.0.1:8010").is_listening
    assert not host.socket("tcp://127.0.0.1:8000").is_listening
    # NGINX's effective configuration passes to that port.
    effective = host.check_output("nginx -T 2>/dev/null | grep proxy_pass")
    assert "proxy_pass http://127.0.0.1:8010;" in effective
    # ...and the hub answers through NGINX on the changed port.
    status = host.check_output("curl -sk -o /dev/null -w '%{http_code}' "
                               "--resolve hub.gateway.test:443:127.0.0.1 https://hub.gateway.test/hub/api/")
    assert status == "200"


def test_the_sites_hub_config_wins_over_the_roles_fragments(host):
    fragment = host.check_output("grep -h start_timeout /etc/jupyterhub/conf.d/30-spawner.py")
    assert "s.start_timeout = 300" in fragment  # the spawner role's own value...
    out = host.check_output("/opt/jupyterhub/bin/python -c %s", EFFECTIVE_CONFIG)
    effective = json.loads(out)
    assert effective["spawner_class"] == "hpcgw_hub.spawner.GatewaySpawner"
    assert effective["start_timeout"] == 420  # ...but the site's is what the hub uses
