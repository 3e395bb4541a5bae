"""JupyterHub extensions of the hpcgateway.jupyterhub collection.

This package runs inside the hub (installed into its venv by the
`jupyterhub` role); each module is one focused piece:

- `globus`: GlobusOAuthenticator with the gateway's login policy.
- `placeholder`: a spawner that refuses to spawn until the spawner role runs.
- `checkconfig`: loads a JupyterHub config file, to check it before a restart.
"""

__version__ = "0.1.0"
