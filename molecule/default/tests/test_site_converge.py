"""site.yml on the converged test site: a second run changes nothing, a
--check --diff run reports nothing and fails nothing, and users stay logged in."""

import concurrent.futures
import time

import pytest
from conftest import hub_steady

# Runs playbooks that must find the site untouched by other tests: one xdist worker, in order (conftest.py).
# root_pass: again after the side effect switched the site to the root mode.
pytestmark = [pytest.mark.xdist_group("playbooks"), pytest.mark.root_pass, pytest.mark.converges_site]

HOSTS = ("hub.gateway.test", "login.cluster.test")
# A task of each role's tasks/validate.yml that always runs. (tunnelbot's
# runs again in its main: the cluster's tunnel key arrives after the preflight.)
VALIDATE_TASKS = [
    "gateway : Check gateway_mode",
    "gateway : Look up gateway_user on the login node",
    "apptainer_images : Check apptainer_images_list is not empty",
    "jupyterhub : Check jupyterhub_public_url",
    "globus_auth : Ask Globus Auth whether the client id and secret are right",
    "spawner : Check spawner_job_name_prefix",
    "nginx : Check nginx_server_name is a DNS name",
]


def while_the_hub_restarts(request, seconds=45):
    """Another worker's test may be restarting the hub (502/503 from the proxy
    or nginx for a few seconds): ask again then, and only then."""
    deadline = time.monotonic() + seconds
    while True:
        reply = request()
        if reply.status_code not in (502, 503) or time.monotonic() > deadline:
            return reply
        time.sleep(1)


def changed_tasks(output: str) -> str:
    """The tasks that changed or failed, for the failure message."""
    blocks = output.split("\nTASK ")
    hits = [block.split("\n")[0] + "\n  " + "\n  ".join(line for line in block.split("\n")[1:]
                                                      if line.startswith(("changed", "fatal", "failed")))
            for block in blocks if "\nchanged:" in block or "\nfatal:" in block or "\nfailed:" in block]
    return "\n".join(hits) or output[-5000:]


def test_second_converge_and_check_change_nothing_and_keep_sessions(login, browser, testbed, run_playbook):
    # The login's first step asserts a 302 itself: wait out a restart first.
    while_the_hub_restarts(lambda: browser.get(f"https://{testbed.hub_name}/hub/oauth_login",
                                               allow_redirects=False, timeout=20))
    assert login("bob@uchicago.edu").url == f"https://{testbed.hub_name}/hub/home"
    session_cookies = browser.cookies.copy()

    # Both runs at once (about a minute and a half each): if the second
    # converge changed anything, its recap says so, and the check run, which
    # reads the same files and services meanwhile, fails or reports it too.
    # No other test restarts the hub meanwhile (conftest.hub_steady).
    with hub_steady(), concurrent.futures.ThreadPoolExecutor(2) as pool:
        second = pool.submit(run_playbook, "site.yml")
        checked = pool.submit(run_playbook, "site.yml", "--check", "--diff")
        again, check = second.result(), checked.result()

    assert again.returncode == 0, again.output[-3000:]
    for host in HOSTS:
        assert again.recap(host)["changed"] == 0, changed_tasks(again.output)
    # Each role's validate.yml ran once (in the preflight), not again in the
    # role's main (nor in gateway's keys step): one of its tasks, once.
    for task in VALIDATE_TASKS:
        assert again.output.count(f"TASK [hpcgateway.jupyterhub.{task}]") == 1, task

    assert check.returncode == 0, check.output[-3000:]
    for host in HOSTS:
        recap = check.recap(host)
        assert (recap["changed"], recap["failed"]) == (0, 0), changed_tasks(check.output)

    # The session cookie from before both runs still logs bob in.
    browser.cookies = session_cookies
    reply = while_the_hub_restarts(lambda: browser.get(f"https://{testbed.hub_name}/hub/api/user", timeout=20))
    assert reply.status_code == 200 and reply.json()["name"] == "bob"
