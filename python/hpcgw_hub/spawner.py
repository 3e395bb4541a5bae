"""GatewaySpawner: notebooks as Slurm jobs of one shared `gateway` account.

A batchspawner subclass for hubs whose users are not Unix users anywhere:
- commands go over one reused SSH connection as `gateway` to a forced-command
  gate (`hpcgw_hub.gate`), never through a shell on either side;
- the hub sends the gate a JSON request (user id, checked options, the
  JUPYTERHUB_* environment); the gate checks it again against the cluster's
  own settings and builds the batch script (docs/spawning.md);
  spawn options from the form or the REST API are checked against the admin's
  profiles first (`hpcgw_hub.options`): outside values are a 400, and no job;
- the spawn form is made from the profiles and the cluster's image list
  (`hpcgw_hub.form`), prefilled with the user's last choice;
- the job reports its port through `hpcgw_hub.callback` once its notebook
  listens; the hub reaches it at 127.0.0.1:<port>, the hub end of its tunnel;
  the report must carry this start's fresh secret (HPCGW_PORT_SECRET), which
  the job wrapper keeps out of the container: code in the notebook, which
  has the server's API token, cannot report a port;
- an SSH or Slurm error while checking a job is "unknown": retried, and never
  taken for "the job is gone" (upstream batchspawner#315);
- stopping cancels the job and waits until Slurm confirms it is gone: a job
  Slurm still lists as COMPLETING is not gone (nor stopped for poll());
- jobs are named `<job_name_prefix>-<user id>`, so `hpcgw_hub.reaper` can
  cancel this hub's orphans when the hub starts;
- one listing of all this hub's jobs (`hpcgw_hub.jobpoll`) answers every
  spawner's status check: one squeue per poll interval, not one per server;
  at most `max_concurrent_commands` gate calls run at once;
- a job may wait in Slurm's queue for its profile's `max_pending_minutes`
  (JupyterHub's start_timeout is set per spawn to fit it); the pending page
  shows Slurm's reason and estimated start; past the limit the job is
  cancelled and the user is told why.
- the submit request names the hub user and their Globus identity id, which
  the gate writes into the job's Slurm comment (attribution for sacct);
- before any submit, the limits the hub enforces (`hpcgw_hub.limits`:
  servers, core-/GPU-hour budgets per user and group) are checked; over one,
  the spawn is a 403 in words and no job.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
import pathlib
import re
import secrets
import time
import urllib.parse
import weakref

import hpcgw_hub.callback  # noqa: F401  (replaces batchspawner's API handler)
import hpcgw_hub.spawnapi  # noqa: F401  (REST spawn options checked before they are stored)
from batchspawner import BatchSpawnerBase, JobStatus
from sqlalchemy.orm import object_session
from tornado import web
from traitlets import Any, Bool, Dict, Float, Integer, List, TraitError, Unicode, Union, default
from traitlets import validate as validate_trait

from . import limits as hub_limits
from .gate import Gate
from .jobpoll import JobPoller
from .form import render
from .options import NO_PROFILE, OptionsError, check_profiles, from_form, remembered, usable, validate
from .rules import is_secret_env, log_tail

# JupyterHub page templates of this package (c.JupyterHub.template_paths): the
# spawn-pending page with the queue's words and a cancel button.
PAGE_TEMPLATES = str(pathlib.Path(__file__).parent / "templates" / "jupyterhub")

PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"}
RUNNING = {"RUNNING"}
# What the gate prints for a job Slurm no longer lists (or not this hub's).
# Any state Slurm still lists is not gone: COMPLETING above all (the node has
# not confirmed the end; with its slurmd down, the notebook still runs).
# squeue -j lists no job that has ended (measured: Slurm 24.11, MinJobAge 300).
GONE = "GONE"
# The gate's environment rule (roles/gateway/files/hpcgw-gate): JUPYTERHUB_*
# names and the secrets of the job wrapper, values without control characters.
GATE_ENV = re.compile(r"^JUPYTERHUB_[A-Z0-9_]{1,100}$")
JOB_SECRETS = frozenset({"HPCGW_PORT_SECRET"})
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_ENV_VALUE = 4096
# A gate refusal meant for the user (roles/gateway/files/hpcgw-gate USER_MESSAGE).
USER_MESSAGE = re.compile(r"^hpcgw-gate: refused: for the user: (.{1,1000})$", re.MULTILINE)


def user_error(status: int, message: str) -> web.HTTPError:
    """An error whose text the user sees on the spawn-pending page (`jupyterhub_message`)."""
    http_error = web.HTTPError(status, message)  # no args: a % in it is not a format
    http_error.jupyterhub_message = message
    return http_error


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
    stop_timeout = Float(
        360, config=True,
        help="Seconds to wait for Slurm to confirm a cancelled job is gone (no longer listed; COMPLETING is not "
        "gone). Longer than Slurm's default SlurmdTimeout (300 s): a node whose slurmd is down keeps the job "
        "COMPLETING until Slurm marks the node down. JupyterHub forgets the job when stop() returns.",
    )
    startup_poll_interval = Float(0.5, config=True, help="Seconds between status checks while a job starts.")
    pending_poll_interval = Float(
        2.0, config=True,
        help="Seconds between status checks while a job waits in Slurm's queue (it cannot report its port "
        "before it runs): many queued spawns then cost the cluster little.",
    )
    stop_poll_interval = Float(0.25, config=True, help="Seconds between checks that a cancelled job is gone.")
    reuse_ssh_connection = Bool(
        True, config=True, help="Send every command over one shared SSH connection (off: a new connection each time)."
    )
    max_concurrent_commands = Integer(
        8, config=True,
        help="Gate commands that may run at once (the others wait): each is one SSH session on the shared "
        "connection, and sshd refuses sessions past its MaxSessions (default 10). Keep it below that.",
    )
    start_margin = Integer(
        60, config=True,
        help="Seconds JupyterHub's start_timeout (set per spawn) leaves beyond this spawner's own limits (the "
        "queue wait, then start_timeout once the job runs), so that the user gets this spawner's words, not "
        "a bare timeout.",
    )

    # One poller per gate and job name prefix: one listing for all spawners.
    _pollers: dict = {}

    limits = Dict(
        config=True,
        help="Limits the hub enforces per user and per hub group: {period: month|week|day, per_user: {servers, "
        "core_hours, gpu_hours}, per_group: {<group>: {...}}, cache_seconds} (see hpcgw_hub.limits). Empty: none.",
    )
    globus_user_key = Unicode(
        "globus_user", config=True,
        help="The auth state key holding the Globus userinfo, whose `sub` is the identity id (the attribution's).",
    )

    @validate_trait("limits")
    def _check_limits(self, proposal):
        try:
            hub_limits.check_limits(proposal.value)
        except ValueError as error:
            raise TraitError(f"GatewaySpawner.{error}") from None
        return proposal.value

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
            reuse_connection=self.reuse_ssh_connection, max_sessions=self.max_concurrent_commands,
        )
        key = tuple(sorted(settings.items()))
        if key not in self._gates:
            self._gates[key] = Gate(**settings)
        return self._gates[key]

    @property
    def poller(self) -> JobPoller:
        """The listing of this hub's jobs that every spawner of the process shares."""
        gate = self.gate
        key = (id(gate), self.job_name_prefix)
        entry = self._pollers.get(key)
        if entry is None or entry.gate is not gate:
            entry = self._pollers[key] = JobPoller(gate, self.job_name_prefix)
        return entry

    # -- spawn options -----------------------------------------------------
    def user_groups(self):
        """The user's hub group names, or None when no profile names `groups`
        (every profile is everyone's: nothing to look up)."""
        if not any("groups" in profile for profile in self.profiles):
            return None
        return sorted(group.name for group in self.user.groups)

    def profile_form(self) -> str:
        """The spawn form, prefilled with the user's last options where still allowed.

        JupyterHub keeps the last options of each server in its database
        (orm Spawner.user_options, set on every spawn request that carries
        options) and hands them to a new spawner as `user_options`. Only the
        profiles the user may use (their hub groups) are on it.
        """
        groups = self.user_groups()
        profiles = self.profiles if groups is None else usable(self.profiles, groups)
        if not profiles:
            return f'<p class="alert alert-warning" id="hpcgw-no-profile">{NO_PROFILE[0].upper()}{NO_PROFILE[1:]}</p>'
        return render(profiles, self.images, remembered(self.user_options, profiles))

    def options_from_form(self, formdata):
        """The form's fields as typed options, checked as the REST API's are."""
        try:
            options = from_form(formdata)
            validate(options, self.profiles, self.user_groups())
        except OptionsError as error:
            raise refused(error) from None
        return options

    def check_user_options(self, options):
        """Refuse options before JupyterHub stores them (`hpcgw_hub.spawnapi`)."""
        try:
            validate(options, self.profiles, self.user_groups())
        except OptionsError as error:
            raise refused(error) from None

    def job_request(self):
        """The job the user's options ask for; the same check for the form and the REST API."""
        try:
            return validate(self.user_options or {}, self.profiles, self.user_groups())
        except OptionsError as error:
            raise refused(error) from None

    # -- the submit request (the gate builds the batch script) --------------
    def job_environment(self, request) -> dict:
        """What the job wrapper gets from the hub: JUPYTERHUB_* (the spawner's
        environment and `environment` config) and the secrets in JOB_SECRETS.
        The gate accepts nothing else and sets HPCGW_USER_ID, HPCGW_IMAGE and
        HPCGW_GPUS itself from the checked request."""
        env = {k: v for k, v in self.get_env().items() if k.startswith("JUPYTERHUB_")}
        env.update({k: v for k, v in self.environment.items() if isinstance(v, str)})
        if not self.port_secret:
            self.port_secret = secrets.token_urlsafe(32)
        env["HPCGW_PORT_SECRET"] = self.port_secret
        env = {k: str(v) for k, v in env.items() if GATE_ENV.match(k) or k in JOB_SECRETS}
        for name, value in env.items():
            if CONTROL.search(value):
                raise web.HTTPError(400, f"refused: {name} holds a control character")
            if len(value) > MAX_ENV_VALUE:
                raise web.HTTPError(400, f"refused: {name} is longer than {MAX_ENV_VALUE} characters")
        return env

    async def attribution(self) -> dict:
        """The submit request's attribution: the hub user (percent-encoded
        where the gate's strict pattern needs it) and the Globus identity id
        (the `sub` kept in auth state), or "" when the user has none."""
        globus_id = ""
        try:
            state = await self.user.get_auth_state() or {}
        except Exception as error:  # noqa: BLE001 (attribution never stops a spawn)
            self.log.warning("No auth state for %s's attribution: %s", self.user.name, error)
            state = {}
        value = state.get(self.globus_user_key) if isinstance(state, dict) else None
        if isinstance(value, dict):  # oauthenticator keeps the whole userinfo there: its `sub`
            value = value.get("sub")
        if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                                                   value):
            globus_id = value
        return {"hub_user": urllib.parse.quote(self.user.name, safe="@._+~-")[:128], "globus_id": globus_id}

    def submit_request(self, request) -> str:
        """The JSON the gate's `submit` reads on stdin (docs/spawning.md): the
        checked options, the user id and the environment; the gate checks it
        all again against the cluster's own settings and builds the job."""
        body = {
            "user_id": self.user_id,
            "profile": request.profile,
            "image": request.image,
            "minutes": request.minutes,
            "cpus": request.cpus,
            "memory_mb": request.memory_mb,
            "gpus": request.gpus,
            "env": self.job_environment(request),
            **getattr(self, "_attribution", {}),
        }
        return json.dumps(body, sort_keys=True)

    # -- batchspawner's job interface, over the gate -----------------------
    # -- limits the hub enforces (hpcgw_hub.limits) ---------------------------
    _starting: weakref.WeakSet = weakref.WeakSet()  # spawners past the check, no job saved yet

    def _has_job(self, orm_spawner) -> bool:
        return orm_spawner.server is not None or bool((orm_spawner.state or {}).get("job_id"))

    def _running_servers(self, orm_users) -> int:
        """Servers of these users with a job on the cluster (or past the limit
        check and about to submit one), this spawner's not counted."""
        names = {orm_user.name for orm_user in orm_users}
        count = sum(
            1 for orm_user in orm_users for orm_spawner in orm_user._orm_spawners
            if orm_spawner is not self.orm_spawner and self._has_job(orm_spawner)
        )
        count += sum(
            1 for other in list(self._starting)
            if other is not self and other.user.name in names and other.pending == "spawn"
            and not self._has_job(other.orm_spawner)
        )
        return count

    async def enforce_limits(self) -> None:
        """Refuse the spawn (LimitReached, 403 in words) when a limit is reached; no job then."""
        limits = self.limits
        if not limits:
            return
        period = limits.get("period", "month")
        since, until = hub_limits.period_bounds(period, datetime.datetime.now(datetime.timezone.utc))
        orm_user = self.user.orm_user
        groups = {group.name: list(group.users) for group in orm_user.groups
                  if group.name in (limits.get("per_group") or {})}
        budgets = [limits.get("per_user") or {}] + [limits["per_group"][name] for name in groups]
        usage: dict[str, tuple[float, float]] = {}
        if any("core_hours" in limit or "gpu_hours" in limit for limit in budgets):
            from .usage import aggregate  # noqa: PLC0415 (usage imports the spawner's user_id)

            try:
                jobs, age = await hub_limits.CACHE.jobs(self.gate, since, until, limits.get("cache_seconds", 60))
            except RuntimeError as error:
                self.log.error("Usage of %s unknown, spawn refused: %s", self.user.name, error)
                raise web.HTTPError(503, "The cluster's accounting did not answer, so your budget cannot be "
                                    "checked; please try again in a minute.") from None
            members = {orm_user} | {member for users in groups.values() for member in users}
            names = {user_id(member.name): member.name for member in members}
            by_user, by_group = aggregate(jobs, names, {name: [g for g, users in groups.items()
                                                               if any(u.name == name for u in users)]
                                                        for name in names.values()}, extra_seconds=age)
            usage = {f"user:{name}": (t.core_hours, t.gpu_hours) for name, t in by_user.items()}
            usage.update({f"group:{name}": (t.core_hours, t.gpu_hours) for name, t in by_group.items()})
        # From here to the registration below nothing awaits: two spawns
        # cannot both pass the last free server.
        servers = {f"user:{self.user.name}": self._running_servers([orm_user])}
        servers.update({f"group:{name}": self._running_servers(users) for name, users in groups.items()})
        try:
            hub_limits.check_spawn(limits, self.user.name, sorted(groups), servers, usage, until, period)
        except hub_limits.LimitReached as reached:
            self.log.warning("Spawn of %s refused: %s", self.user.name, reached.log_message % reached.args)
            raise
        self._starting.add(self)

    async def submit_batch_script(self):
        result = await self.gate.submit(self.submit_request(self.job_request()))
        job_id = result.stdout.strip().split(";")[0] if result.ok else ""
        if not re.fullmatch(r"[0-9]+", job_id):
            told = USER_MESSAGE.search(result.stderr or "") if result.returncode == 126 else None
            if told:  # e.g. over the storage cap: the gate's words for the user, no job
                self.log.warning("The cluster refused %s's job: %s", self.user.name, told.group(1))
                raise user_error(403, f"The cluster did not start your notebook: {told.group(1)}")
            self.log.error("Slurm refused %s's job: %s", self.user.name, (result.stderr or result.stdout).strip())
            raise web.HTTPError(503, "The cluster did not accept the notebook job; please try again later.")
        self.job_id = job_id
        self.log.info("Submitted job %s for %s", job_id, self.user.name)
        return job_id

    async def job_log_tail(self) -> str:
        """The end of this job's log as the user may see it: the gate's bounded,
        redacted tail, redacted again here by the values this start gave the
        job (the port secret, the API token, token-like JUPYTERHUB_*/HPCGW_*
        values). Empty when the cluster has none or does not answer."""
        try:
            result = await self.gate.log(self.user_id, self.job_id)
        except Exception as error:  # a missing tail must never hide the failure itself
            self.log.warning("No log of job %s: %s", self.job_id, error)
            return ""
        if not result.ok:
            self.log.warning("No log of job %s: %s", self.job_id, result.stderr.strip())
            return ""
        env = {**self.get_env(), **{k: v for k, v in self.environment.items() if isinstance(v, str)}}
        values = [self.port_secret, self.api_token or ""]
        values += [v for k, v in env.items() if k.startswith(("JUPYTERHUB_", "HPCGW_")) and is_secret_env(k, v)]
        return log_tail(result.stdout.encode("utf-8", "replace"), values=values)

    async def query_job_status(self, max_age: float = 0.0):
        """The job's state from the shared listing of this hub's jobs (one
        begun at most `max_age` seconds ago, and after the job's submission)."""
        if not self.job_id:
            self.job_status = ""
            return JobStatus.NOTFOUND
        delay = self.status_retry_delay
        for attempt in range(self.status_retries + 1):
            result = await self.poller.listing(max_age, newer_than=self._submitted_at)
            if result.ok:
                job = result.jobs.get(self.job_id)
                if job is None:
                    self.job_status, self.job_start_estimate = GONE, ""
                else:
                    self.job_status = f"{job.state} {job.node} {job.reason}"
                    self.job_start_estimate = job.start if job.start not in ("N/A", "Unknown", "None") else ""
                state = self.job_status.split(" ", 1)[0]
                if state in RUNNING:
                    return JobStatus.RUNNING
                if state in PENDING:
                    return JobStatus.PENDING
                if state == GONE:
                    return JobStatus.NOTFOUND
                # Still listed, neither queued nor running (COMPLETING,
                # SIGNALING, STAGE_OUT, STOPPED...): its processes may still
                # run, so it is not gone (batchspawner's JobStatus has no
                # "ending"; state_isending() tells it from an SSH failure).
                return JobStatus.UNKNOWN
            self.log.warning("Status of job %s unknown (try %d): %s", self.job_id, attempt + 1, result.error)
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

    def state_isending(self):
        """Slurm still lists the job, neither pending nor running (COMPLETING...)."""
        state = self.job_status.split(" ", 1)[0]
        return bool(state) and state not in PENDING | RUNNING | {GONE, "UNKNOWN"}

    # -- lifecycle ---------------------------------------------------------
    port_secret = ""  # this start's secret for the port report (start() makes it)
    job_start_estimate = ""  # Slurm's estimated start of a pending job (squeue --start), "" when unknown
    _submitted_at = float("-inf")  # the event loop's clock at this start's submit: older listings miss the job
    _configured_start_timeout = None  # start_timeout as configured, before run_pre_spawn_hook sets it per spawn

    def port_secret_matches(self, secret: str) -> bool:
        """True if `secret` is this start's port secret (only the job wrapper has it)."""
        return bool(self.port_secret) and hmac.compare_digest(self.port_secret.encode(), (secret or "").encode())

    def notebook_port_reported(self, port: int) -> bool:
        """Called by the port callback; True if this spawner was waiting for it."""
        waiting = getattr(self, "_port_reported", None)
        if waiting is None or waiting.done():
            return False
        waiting.set_result(port)
        return True

    def save_state(self) -> None:
        """Save the job id in the hub database now, while the start goes on.

        JupyterHub saves a spawner's state only when start() returns, which for
        a job waiting in the queue can be minutes. Saved early: a hub restarted
        meanwhile stops the job (its poll() finds it, and User.stop cancels
        it), and the reaper (`hpcgw_hub.reaper`, which cancels only jobs still
        unknown to the hub after its grace) spares it. The reaper alone would
        not do: it would cancel a job whose start is still waiting.
        Committed through the session that holds this spawner's ORM row, the
        one JupyterHub's User.spawn commits with, not `Spawner.db`, which is
        deprecated and logs a warning on first use (JupyterHub 5.5.4 too).
        """
        self.orm_spawner.state = self.get_state()
        session = object_session(self.orm_spawner)
        if session is not None:
            session.commit()

    # -- the queue: how long a job may wait, and what the user is told --------
    @property
    def startup_timeout(self) -> int:
        """start_timeout as configured: how long the notebook may take once its job runs."""
        if self._configured_start_timeout is None:
            self._configured_start_timeout = self.start_timeout
        return self._configured_start_timeout

    def profile_of(self, name: str) -> dict:
        return next((profile for profile in self.profiles if profile.get("name") == name), {})

    def pending_limit(self, profile: dict) -> int:
        """Seconds a job of `profile` may wait in the queue: its max_pending_minutes,
        else start_timeout (the budget a start had before the limit existed)."""
        minutes = profile.get("max_pending_minutes")
        return int(minutes) * 60 if minutes else self.startup_timeout

    def run_pre_spawn_hook(self):
        """Set JupyterHub's start_timeout for this spawn from its profile.

        User.spawn reads `start_timeout` once, when it calls start() (right
        after this hook), and cancels start() when it passes, failing the
        spawn with a bare "Spawn failed: ". It must not cut a queue wait the
        profile allows short: it is the queue limit, plus start_timeout for
        the notebook to start once its job runs, plus `start_margin`, so
        that start() always ends first, with words.
        """
        startup = self.startup_timeout  # read before it is set per spawn
        try:
            request = validate(self.user_options or {}, self.profiles)
        except OptionsError:
            pass  # start() refuses the options, in words
        else:
            self.start_timeout = (self.pending_limit(self.profile_of(request.profile)) + startup
                                  + int(self.command_timeout) + self.start_margin)
        return super().run_pre_spawn_hook()

    @staticmethod
    def _clock() -> float:
        return time.monotonic()

    @staticmethod
    def _minutes(seconds: float) -> str:
        minutes = seconds / 60
        whole = round(minutes)
        amount = str(whole) if abs(minutes - whole) < 0.05 else f"{minutes:.1f}"
        return f"{amount} minute" + ("" if amount == "1" else "s")

    def queue_limit_passed(self, request, waited: float, limit: float) -> web.HTTPError:
        """The error a user sees when their job waited past the profile's limit."""
        words = self.job_status.split(" ", 2)
        reason = words[2] if len(words) > 2 and words[2] not in ("", "None") else "none given"
        message = (
            f"Job {self.job_id} was cancelled: it waited {self._minutes(waited)} in the queue of partition "
            f"{request.partition} (reason {reason}); the limit of profile {request.profile} is "
            f"{self._minutes(limit)}. The cluster is busy: please try again later or choose another profile."
        )
        error = web.HTTPError(503, "%s", message)
        error.jupyterhub_message = message
        return error

    def did_not_start(self, seconds: float, what: str) -> web.HTTPError:
        message = f"The notebook did not start within {self._minutes(seconds)} {what}; job {self.job_id} is cancelled."
        error = web.HTTPError(500, "%s", message)
        error.jupyterhub_message = message
        return error

    async def start(self):
        request = self.job_request()  # before anything is submitted
        limit = self.pending_limit(self.profile_of(request.profile))
        startup = self.startup_timeout
        await self.enforce_limits()
        self._attribution = await self.attribution()
        self.port = 0
        self.port_secret = secrets.token_urlsafe(32)  # fresh for every start
        self._port_reported = asyncio.get_running_loop().create_future()
        self.job_status, self.job_start_estimate = "", ""
        self._pending_limit, self._pending_waited, self._partition = limit, 0.0, request.partition
        self._submitted_at = asyncio.get_running_loop().time()  # a listing begun earlier cannot know the job
        await self.submit_batch_script()
        self.save_state()
        self.log.info("Job %s (%s) for %s submitted: %s", self.job_id, self.job_name, self.user.name, request)
        submitted = self._clock()
        running_since = None
        interval = self.startup_poll_interval  # then as the last check found the job
        while not self._port_reported.done():
            status = await self.query_job_status(max_age=interval)
            if status == JobStatus.NOTFOUND or self.state_isending():
                log = f"{self.gateway_root}/logs/{self.user_id}/{self.job_id}.log"
                tail = await self.job_log_tail()
                if status == JobStatus.NOTFOUND:
                    self.clear_state()
                # else the job is ending: keep its id, so the hub's stop() after
                # this failure waits until Slurm no longer lists it.
                message = f"The notebook job ended before the notebook started (cluster log: {log})."
                if tail:
                    message += f" The end of your job's log:\n{tail}"
                raise user_error(500, message)
            now = self._clock()
            if self.state_ispending():
                self._pending_waited = now - submitted
                if self._pending_waited > limit:
                    error = self.queue_limit_passed(request, self._pending_waited, limit)
                    self.log.warning("Job %s of %s: %s", self.job_id, self.user.name, error.jupyterhub_message)
                    await self.cancel_batch_job()  # JupyterHub's stop() then waits until it is gone
                    raise error
            elif self.state_isrunning():
                running_since = now if running_since is None else running_since
                if now - running_since > startup:
                    await self.cancel_batch_job()
                    raise self.did_not_start(startup, "of its job starting")
            elif now - submitted > limit + startup:  # status unknown (SSH or Slurm trouble) for long
                await self.cancel_batch_job()
                raise self.did_not_start(limit + startup, "(the cluster did not answer)")
            interval = self.pending_poll_interval if self.state_ispending() else self.startup_poll_interval
            try:
                await asyncio.wait_for(asyncio.shield(self._port_reported), interval)
            except asyncio.TimeoutError:
                pass
        self.port = self._port_reported.result()
        self.log.info("Job %s for %s: notebook at 127.0.0.1:%d", self.job_id, self.user.name, self.port)
        return self.ip, self.port

    async def poll(self):
        if not self.job_id:
            return 0
        status = await self.query_job_status(max_age=self.poll_interval)
        # A job Slurm still lists as COMPLETING is not stopped yet: its
        # notebook may still run (a node whose slurmd is down never confirms
        # the end). The server stays until Slurm no longer lists the job, so
        # that the hub's stop() cancels it and waits, and no second job starts.
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
        interval = self.stop_poll_interval
        while asyncio.get_running_loop().time() < deadline:
            if await self.query_job_status() == JobStatus.NOTFOUND:
                return
            await asyncio.sleep(interval)
            interval = min(interval * 2, 5.0)  # quick for the usual seconds, then every 5 s
        self.log.warning("Job %s of %s: Slurm did not confirm it is gone", self.job_id, self.user.name)

    def pending_message(self) -> str:
        words = self.job_status.split(" ", 2)
        reason = words[2] if len(words) > 2 and words[2] not in ("", "None") else "pending"
        where = f" of partition {self._partition}" if getattr(self, "_partition", "") else ""
        estimate = (f"Slurm's estimated start: {self.job_start_estimate}" if self.job_start_estimate
                    else "no estimated start yet")
        limit = getattr(self, "_pending_limit", 0)
        waited = (f"; waited {self._minutes(self._pending_waited)} of at most {self._minutes(limit)}"
                  if limit else "")
        return f"Waiting in the Slurm queue{where} ({reason.strip('()')}): {estimate}{waited}..."

    async def progress(self):
        while True:
            words = self.job_status.split(" ", 2)
            if self.state_ispending():
                yield {"message": self.pending_message()}
            elif self.state_isrunning():
                node = words[1] if len(words) > 1 else "a node"
                yield {"message": f"Job {self.job_id} running on {node}: starting the notebook..."}
            elif self.state_isending():
                yield {"message": f"Job {self.job_id} is ending on the cluster..."}
            elif self.job_id:
                yield {"message": f"Job {self.job_id} submitted..."}
            await asyncio.sleep(1)
