"""The peer of benchmarks/scale.py: upstream batchspawner's own SlurmSpawner
on the same bed, configured as a site without this collection would (seed
004: the gateway account's allocation, commands over ssh through
`exec_prefix`), for the duration of a run, then the bed is put back.

What it sets, on the bed only, all removed at the end:
  - a key of the hub's service user that runs any command as `gateway` on the
    login node (`from=` the hub, `restrict`: no pty or forwarding), in
    gateway's authorized_keys beside the gate's line: SlurmSpawner sends its
    own `sbatch`, `squeue`, `scancel` command lines;
  - conf.d/95-benchmark-peer.py on the hub: `batchspawner.SlurmSpawner` with
    exec_prefix `ssh ... gateway@<login node>`; batchspawner's own port API
    (/hub/api/batchspawner, which the collection removes) back; the hub API
    bound to all addresses (the notebook reaches it without a tunnel, and the
    hub reaches the notebook on the compute node's name and port, as stock
    batchspawner does);
  - upstream's own port handling: batchspawner-singleuser (its file
    batchspawner/singleuser.py, copied from the hub's venv to the gateway's
    home) run by the image's python3 in the bed's own notebook image
    (`apptainer exec <image> python3 batchspawner-singleuser jupyterhub-singleuser`).
The only departures from upstream, each what a site on this cluster must do
too: hub users are not Unix users (user_env and the home folder name the
gateway account instead of getpwnam), ssh carries no environment (the
script exports the JUPYTERHUB_* variables get_env() returns), and sbatch's
--export=<list> and --get-user-env kill this bed's slurmd (docs/testbed.md:
the script leaves them out), squeue's format is quoted once more for ssh's
remote shell, and no srun step.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time

FRAGMENT = "/etc/jupyterhub/conf.d/95-benchmark-peer.py"
STATE_DIR = "/var/lib/jupyterhub"
KEY = f"{STATE_DIR}/.ssh/hpcgw_benchmark_peer_ed25519"
KNOWN_HOSTS = "/etc/jupyterhub/cluster_known_hosts"
HUB_USER = "jupyterhub"
VENV = "/opt/jupyterhub"
GATEWAY_HOME = "/home/gateway"
BENCH_DIR = f"{GATEWAY_HOME}/hpcgw-benchmark-peer"
AUTHORIZED_KEYS = f"{GATEWAY_HOME}/.ssh/authorized_keys"
MARK = "hpcgw-benchmark-peer"
HUB_API_PORT = 8081

PEER_CONFIG = r'''
# Written by benchmarks/peer.py for one benchmark run; removed after it.
import shlex

from batchspawner import SlurmSpawner
from batchspawner.api import BatchSpawnerAPIHandler
from jupyterhub import apihandlers
from traitlets import default

c = get_config()  # noqa: F821
SETTINGS = json.loads({settings!r})
apihandlers.default_handlers.append((r"/api/batchspawner", BatchSpawnerAPIHandler))


class PeerSlurmSpawner(SlurmSpawner):
    """Upstream's SlurmSpawner, with what a site of non-Unix hub users on
    this cluster must change (see benchmarks/peer.py)."""

    @default("req_homedir")  # not a configurable trait upstream (getpwnam of the hub user)
    def _req_homedir_default(self):
        return SETTINGS["home"]

    def user_env(self, env):
        env["USER"] = "gateway"
        env["HOME"] = SETTINGS["home"]
        return env

    async def _get_batch_script(self, **subvars):
        script = await super()._get_batch_script(**subvars)
        exports = "".join(f"export {{name}}={{shlex.quote(value)}}\n" for name, value in self.get_env().items()
                          if name.startswith("JUPYTERHUB_") or name in ("JPY_API_TOKEN",))
        head, _, body = script.partition("\nset -euo pipefail\n")
        return f"{{head}}\nset -euo pipefail\n{{exports}}{{body}}"


c.JupyterHub.spawner_class = PeerSlurmSpawner
c.JupyterHub.hub_bind_url = "http://0.0.0.0:{port}"
# The proxy (its unit may reach only loopback) keeps the hub on 127.0.0.1; the notebooks get its address.
c.JupyterHub.hub_connect_url = "http://127.0.0.1:{port}"
s = c.SlurmSpawner  # the subclass reads its parent's section
s.hub_connect_url = "http://{hub}:{port}"
s.exec_prefix = SETTINGS["exec_prefix"]
s.batch_query_cmd = "squeue -h -j {{job_id}} -o \"'%T %B'\""
s.req_partition = SETTINGS["partition"]
s.req_runtime = "1:00:00"
s.req_nprocs = "1"
s.req_memory = "1024M"
s.req_srun = ""
s.ip = "0.0.0.0"
s.start_timeout = 300
s.http_timeout = 300
s.poll_interval = SETTINGS["poll_interval"]
s.batchspawner_singleuser_cmd = SETTINGS["singleuser"]
s.cmd = ["jupyterhub-singleuser"]
s.batch_script = """#!/bin/bash
#SBATCH --output={{{{homedir}}}}/slurm-%j.log
#SBATCH --job-name=spawner-jupyterhub
#SBATCH --chdir={{{{homedir}}}}
{{% if partition  %}}#SBATCH --partition={{{{partition}}}}
{{% endif %}}{{% if runtime    %}}#SBATCH --time={{{{runtime}}}}
{{% endif %}}{{% if memory     %}}#SBATCH --mem={{{{memory}}}}
{{% endif %}}{{% if nprocs     %}}#SBATCH --cpus-per-task={{{{nprocs}}}}
{{% endif %}}
set -euo pipefail

trap 'echo SIGTERM received' TERM
{{{{prologue}}}}
{{{{cmd}}}}
echo "jupyterhub-singleuser ended gracefully"
{{{{epilogue}}}}
"""
'''


def _docker(container: str, *argv: str, check: bool = True, input_text: str | None = None) -> str:
    return subprocess.run(["docker", "exec", "-i", container, *argv], check=check, capture_output=True, text=True,
                          input=input_text).stdout


def options(profile: str) -> dict:
    """The peer has no profiles: its request is its configuration."""
    return {}


def _restart_hub(hub: str, user) -> None:
    """Restart, then wait until the admin's own model answers as JSON (the
    proxy may answer for a hub that is not up yet)."""
    _docker(hub, "systemctl", "restart", "jupyterhub")
    time.sleep(2)
    for _ in range(240):
        try:
            reply = user.api("GET", f"/users/{user.name}")
            if reply.status_code == 200 and reply.json().get("name") == user.name:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit("the hub did not come back")


@contextlib.contextmanager
def installed(testbed, user, partition: str = "compute"):
    hub, login = testbed.container("hub"), testbed.container("cluster")
    hub_address = testbed.address("hub")
    image = json.loads(_docker(login, "cat", f"{GATEWAY_HOME}/hpcgw/etc/images.json"))["images"][0]["path"]
    settings = {
        "exec_prefix": (f"ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={KNOWN_HOSTS} "
                        f"-o IdentitiesOnly=yes -i {KEY} gateway@login.cluster.test"),
        "home": BENCH_DIR,
        "partition": partition,
        "poll_interval": 30,  # as the collection's spawner_poll_interval
        "singleuser": f"apptainer exec {image} python3 {BENCH_DIR}/batchspawner-singleuser",
    }
    try:
        _docker(hub, "runuser", "-u", HUB_USER, "--", "sh", "-c",
                f"rm -f {KEY} {KEY}.pub; ssh-keygen -q -t ed25519 -N '' -C {MARK} -f {KEY}")
        public = _docker(hub, "cat", f"{KEY}.pub").strip()
        _docker(login, "sh", "-c", f"echo 'from=\"{hub_address}\",restrict {public}' >> {AUTHORIZED_KEYS}")
        singleuser = _docker(hub, "sh", "-c", f"cat {VENV}/lib/python3*/site-packages/batchspawner/singleuser.py")
        _docker(login, "runuser", "-u", "gateway", "--", "sh", "-c",
                f"mkdir -p {BENCH_DIR} && cat > {BENCH_DIR}/batchspawner-singleuser", input_text=singleuser)
        _docker(hub, "sh", "-c", f"cat > {FRAGMENT}",
                input_text="import json\n" + PEER_CONFIG.format(settings=json.dumps(settings), hub="hub.gateway.test",
                                                                port=HUB_API_PORT))
        _restart_hub(hub, user)
        yield
    finally:
        _docker(hub, "rm", "-f", FRAGMENT, KEY, f"{KEY}.pub", check=False)
        _docker(login, "sed", "-i", f"/ {MARK}$/d", AUTHORIZED_KEYS, check=False)
        _docker(login, "rm", "-rf", BENCH_DIR, check=False)
        _restart_hub(hub, user)
