"""JupyterHub extensions of the hpcgateway.jupyterhub collection.

This package runs inside the hub (installed into its venv by the
`jupyterhub` role); each module is one focused piece:

- `globus`: GlobusOAuthenticator with the gateway's login policy.
- `placeholder`: a spawner that refuses to spawn until the spawner role runs.
- `spawner`: GatewaySpawner, notebooks as Slurm jobs of the shared gateway
  account, over `gate` (the SSH calls to the cluster's forced command);
  `options` checks spawn options, `form` renders the spawn form
  (templates/form.html.j2), `spawnapi` checks REST spawns, `callback`
  takes the job's port report.
- `reaper`: cancels this hub's orphaned jobs when the hub starts (the
  `hpcgw-reaper` console script).
- `checkconfig`: loads a JupyterHub config file, to check it before a restart.
- `siteconfig`: applies the site's `jupyterhub_config` settings.
- `whois`: which hub user a job, a user folder or a job log belongs to.

Entry points (pyproject.toml) let a hub config name the classes:
`spawner_class = "hpcgw-gateway"`, `authenticator_class = "hpcgw-globus"`.
"""

# The package's version: pyproject.toml reads it from here.
__version__ = "0.1.0"
