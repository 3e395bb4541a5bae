"""GatewaySpawner: notebooks as Slurm jobs of one shared `gateway` account.

A batchspawner subclass for hubs whose users are not Unix users anywhere:
- commands go over one reused SSH connection as `gateway` to a forced-command
  gate (`hpcgw_hub.gate`), never through a shell on either side;
- the batch script is built here with every value checked and shell-quoted;
  spawn options from the form or the REST API are checked against the admin's
  profiles first (`hpcgw_hub.options`): outside values are a 400, and no job;
- the spawn form is made from the profiles and the cluster's image list
  (`hpcgw_hub.form`), prefilled with the user's last choice;
- the job reports its port through `hpcgw_hub.callback` once its notebook
  listens; the hub reaches it at 127.0.0.1:<port>, the hub end of its tunnel;
- an SSH or Slurm error while checking a job is "unknown": retried, and never
  taken for "the job is gone" (upstream batchspawner#315);
- stopping cancels the job and waits until Slurm confirms it is gone;
- jobs are named `<job_name_prefix>-<user id>`, so `hpcgw_hub.reaper` can
  cancel this hub's orphans when the hub starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shlex

import hpcgw_hub.callback  # noqa: F401  (replaces batchspawner's API handler)
import hpcgw_hub.spawnapi  # noqa: F401  (REST spawn options checked before they are stored)
from batchspawner import BatchSpawnerBase, JobStatus
from tornado import web
from traitlets import Any, Bool, Dict, Float, Integer, List, TraitError, Unicode, Union, default
from traitlets import validate as validate_trait

from .gate import Gate
from .form import render
from .options import OptionsError, check_profiles, from_form, remembered, validate

PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"}
RUNNING = {"RUNNING"}
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
SLURM_WORD = re.compile(r"^[A-Za-z0-9_.-]+$")


def refused(error: OptionsError) -> web.HTTPError:
    """A 400 whose text the user sees: in the REST API's JSON, on the spawn form
    (JupyterHub shows str() of an error from options_from_form or an early
    start) and on the spawn-pending page (which shows only `jupyterhub_message`)."""
    message = f"Spawn options refused: {error}"
    http_error = web.HTTPError(400, "%s", message)
    http_error.jupyterhub_message = message
    return http_error


def _profile_form(spawner) -> str:
    # Spawner.get_options_form() calls options_form(spawner).
    return spawner.profile_form()


def user_id(username: str) -> str:
    """A hub user's folder name on the cluster: stable, and safe in any path or shell."""
    return "u-" + hashlib.sha256(username.encode()).hexdigest()[:20]


class GatewaySpawner(BatchSpawnerBase):
    """Start each notebook as a Slurm job of the shared gateway account."""

    cluster_host = Unicode(config=True, help="The cluster login node the hub submits to.")
    cluster_ssh_port = Integer(22, config=True, help="Its SSH port.")
    gateway_user = Unicode("gateway", config=True, help="The shared cluster account.")
    gateway_root = Unicode(config=True, help="The gateway's folder on the cluster (bin/, users/, logs/).")
    ssh_key = Unicode(config=True, help="The hub's private key for the gateway account.")
    known_hosts = Unicode(config=True, help="known_hosts with the login node's pinned host keys.")
    control_path = Unicode("/run/jupyterhub/ssh-%C", config=True, help="The shared SSH connection's socket.")
    command_timeout = Float(20, config=True, help="Seconds one gate command may take.")
    job_name_prefix = Unicode("hpcgw", config=True, help="Slurm job names: <prefix>-<user id>. One per hub.")
    profiles = List(
        Dict(),
        config=True,
        help="What users may ask for: a list of profiles {name, label, partition, default_/max_ minutes, cpus, "
        "memory_mb, gpus, images}; the first is the default (see hpcgw_hub.options).",
    )
    images = List(
        Dict(), config=True, help="The images the cluster offers: a list of {name, label, description}."
    )
    status_retries = Integer(2, config=True, help="Retries of a failed status check before it counts as unknown.")
    status_retry_delay = Float(1.0, config=True, help="Seconds before the first retry (doubles each time).")
    stop_timeout = Float(30, config=True, help="Seconds to wait for Slurm to confirm a cancelled job is gone.")
    startup_poll_interval = Float(0.5, config=True, help="Seconds between status checks while a job starts.")
    stop_poll_interval = Float(0.25, config=True, help="Seconds between checks that a cancelled job is gone.")
    reuse_ssh_connection = Bool(
        True, config=True, help="Send every command over one shared SSH connection (off: a new connection each time)."
    )

    # One Gate (and so one SSH master) per set of connection settings, shared
    # by every spawner of this hub process.
    _gates: dict = {}

    @validate_trait("profiles")
    def _check_profiles(self, proposal):
        try:
            check_profiles(proposal.value)
        except ValueError as error:
            raise TraitError(f"GatewaySpawner.{error}") from None
        return proposal.value

    # Any value is taken, then made an object below (Dict alone would raise).
    user_options = Union([Dict(), Any()], help="The server's spawn options (see hpcgw_hub.options).")

    @validate_trait("user_options")
    def _user_options_object(self, proposal):
        # A non-object stored by JupyterHub before hpcgw_hub.spawnapi refused
        # them (e.g. from a REST spawn of "[]") made the hub fail at start.
        if not isinstance(proposal.value, dict):
            self.log.warning("Ignoring stored spawn options that are not an object: %r", proposal.value)
            return {}
        return proposal.value

    @default("options_form")
    def _options_form_default(self):
        return _profile_form

    @default("ip")
    def _ip_default(self):
        # The hub reaches every notebook on its own loopback, at its tunnel's end.
        return "127.0.0.1"

    @default("req_username")
    def _req_username_default(self):
        return self.gateway_user

    @default("req_homedir")
    def _req_homedir_default(self):
        # Hub users are not Unix users: no getpwnam() (stock batchspawner's "name not found").
        return f"{self.gateway_root}/users/{self.user_id}"

    @default("poll_jitter")
    def _poll_jitter_default(self):
        return 0.2

    def user_env(self, env):
        return env

    @property
    def user_id(self) -> str:
        return user_id(self.user.name)

    @property
    def job_name(self) -> str:
        return f"{self.job_name_prefix}-{self.user_id}"

    @property
    def gate(self) -> Gate:
        settings = dict(
            host=self.cluster_host, user=self.gateway_user, key=self.ssh_key, known_hosts=self.known_hosts,
            port=self.cluster_ssh_port, control_path=self.control_path, timeout=self.command_timeout,
            reuse_connection=self.reuse_ssh_connection,
        )
        key = tuple(sorted(settings.items()))
        if key not in self._gates:
            self._gates[key] = Gate(**settings)
        return self._gates[key]

    # -- spawn options -----------------------------------------------------
    def profile_form(self) -> str:
        """The spawn form, prefilled with the user's last options where still allowed.

        JupyterHub keeps the last options of each server in its database
        (orm Spawner.user_options, set on every spawn request that carries
        options) and hands them to a new spawner as `user_options`.
        """
        return render(self.profiles, self.images, remembered(self.user_options, self.profiles))

    def options_from_form(self, formdata):
        """The form's fields as typed options, checked as the REST API's are."""
        try:
            options = from_form(formdata)
            validate(options, self.profiles)
        except OptionsError as error:
            raise refused(error) from None
        return options

    def check_user_options(self, options):
        """Refuse options before JupyterHub stores them (`hpcgw_hub.spawnapi`)."""
        try:
            validate(options, self.profiles)
        except OptionsError as error:
            raise refused(error) from None

    def job_request(self):
        """The job the user's options ask for; the same check for the form and the REST API."""
        try:
            return validate(self.user_options or {}, self.profiles)
        except OptionsError as error:
            raise refused(error) from None

    # -- the batch script --------------------------------------------------
    def job_environment(self, request) -> dict:
        env = {k: v for k, v in self.get_env().items() if k.startswith("JUPYTERHUB_")}
        env.update({k: v for k, v in self.environment.items() if isinstance(v, str)})
        # The job wrapper's contract (docs/spawning.md); set last, so nothing overrides them.
        env["HPCGW_USER_ID"] = self.user_id
        env["HPCGW_IMAGE"] = request.image
        env["HPCGW_GPUS"] = str(request.gpus)
        env = {k: str(v) for k, v in env.items() if ENV_NAME.match(k) and k not in {"PATH", "HOME", "LD_PRELOAD"}}
        for name, value in env.items():
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise web.HTTPError(400, f"refused: {name} holds a control character")
        return env

    def batch_script_for(self, request) -> str:
        for word in (request.partition, self.job_name):
            if not SLURM_WORD.match(word):
                raise web.HTTPError(400, f"refused: {word!r} is not a safe Slurm name")
        root = self.gateway_root
        lines = [
            "#!/bin/bash",
            f"#SBATCH --job-name={self.job_name}",
            f"#SBATCH --partition={request.partition}",
            f"#SBATCH --time={request.minutes}",
            f"#SBATCH --cpus-per-task={request.cpus}",
            f"#SBATCH --mem={request.memory_mb}M",
            f"#SBATCH --output={root}/logs/{self.user_id}.%j.log",
            f"#SBATCH --chdir={root}",
        ]
        if request.gpus:
            lines.append(f"#SBATCH --gres=gpu:{request.gpus}")
        lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(self.job_environment(request).items())]
        lines.append(f"exec {shlex.quote(root + '/bin/hpcgw-job')}")
        return "\n".join(lines) + "\n"

    # -- batchspawner's job interface, over the gate -----------------------
    async def submit_batch_script(self):
        result = await self.gate.submit(self.batch_script_for(self.job_request()))
        job_id = result.stdout.strip().split(";")[0] if result.ok else ""
        if not re.fullmatch(r"[0-9]+", job_id):
            self.log.error("Slurm refused %s's job: %s", self.user.name, (result.stderr or result.stdout).strip())
            raise web.HTTPError(503, "The cluster did not accept the notebook job; please try again later.")
        self.job_id = job_id
        self.log.info("Submitted job %s for %s", job_id, self.user.name)
        return job_id

    async def query_job_status(self):
        if not self.job_id:
            self.job_status = ""
            return JobStatus.NOTFOUND
        delay = self.status_retry_delay
        for attempt in range(self.status_retries + 1):
            result = await self.gate.status(self.job_id)
            if result.ok:
                self.job_status = result.stdout.strip()
                state = self.job_status.split(" ", 1)[0]
                if state in RUNNING:
                    return JobStatus.RUNNING
                if state in PENDING:
                    return JobStatus.PENDING
                return JobStatus.NOTFOUND  # GONE, or a terminal state
            self.log.warning("Status of job %s unknown (try %d): %s", self.job_id, attempt + 1, result.stderr.strip())
            if attempt < self.status_retries:
                await asyncio.sleep(delay)
                delay *= 2
        self.job_status = "UNKNOWN"
        return JobStatus.UNKNOWN

    async def cancel_batch_job(self):
        for _ in range(3):
            result = await self.gate.cancel(self.job_id)
            if result.ok:
                return
            self.log.warning("Cancel of job %s failed: %s", self.job_id, result.stderr.strip())
            await asyncio.sleep(1)

    def state_ispending(self):
        return self.job_status.split(" ", 1)[0] in PENDING

    def state_isrunning(self):
        return self.job_status.split(" ", 1)[0] in RUNNING

    def state_isunknown(self):
        return self.job_status == "UNKNOWN"

    def state_gethost(self):
        return self.ip

    # -- lifecycle ---------------------------------------------------------
    def notebook_port_reported(self, port: int) -> bool:
        """Called by the port callback; True if this spawner was waiting for it."""
        waiting = getattr(self, "_port_reported", None)
        if waiting is None or waiting.done():
            return False
        waiting.set_result(port)
        return True

    async def start(self):
        request = self.job_request()  # before anything is submitted
        self.port = 0
        self._port_reported = asyncio.get_running_loop().create_future()
        await self.submit_batch_script()
        # Save the job id now: a hub restart during the start then still knows the job.
        self.orm_spawner.state = self.get_state()
        self.db.commit()
        self.log.info("Job %s (%s) for %s submitted: %s", self.job_id, self.job_name, self.user.name, request)
        while not self._port_reported.done():
            status = await self.query_job_status()
            if status == JobStatus.NOTFOUND:
                log = f"{self.gateway_root}/logs/{self.user_id}.{self.job_id}.log"
                self.clear_state()
                raise web.HTTPError(500, f"The notebook job ended before the notebook started (cluster log: {log}).")
            try:
                await asyncio.wait_for(asyncio.shield(self._port_reported), self.startup_poll_interval)
            except asyncio.TimeoutError:
                pass
        self.port = self._port_reported.result()
        self.log.info("Job %s for %s: notebook at 127.0.0.1:%d", self.job_id, self.user.name, self.port)
        return self.ip, self.port

    async def poll(self):
        if not self.job_id:
            return 0
        status = await self.query_job_status()
        if status in (JobStatus.RUNNING, JobStatus.PENDING, JobStatus.UNKNOWN):
            return None
        self.clear_state()
        return 1

    async def stop(self, now=False):
        if not self.job_id:
            return
        await self.cancel_batch_job()
        if now:
            return
        deadline = asyncio.get_running_loop().time() + self.stop_timeout
        while asyncio.get_running_loop().time() < deadline:
            if await self.query_job_status() == JobStatus.NOTFOUND:
                return
            await asyncio.sleep(self.stop_poll_interval)
        self.log.warning("Job %s of %s: Slurm did not confirm it is gone", self.job_id, self.user.name)

    async def progress(self):
        while True:
            words = self.job_status.split(" ", 2)
            if self.state_ispending():
                reason = words[2] if len(words) > 2 else ""
                yield {"message": f"Waiting in the Slurm queue ({reason.strip('()') or 'pending'})..."}
            elif self.state_isrunning():
                node = words[1] if len(words) > 1 else "a node"
                yield {"message": f"Job {self.job_id} running on {node}: starting the notebook..."}
            elif self.job_id:
                yield {"message": f"Job {self.job_id} submitted..."}
            await asyncio.sleep(1)
