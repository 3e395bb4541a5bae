"""The spawn form in a real browser: Debian's chromium, driven by Playwright.

A person logs in through the Globus stand-in, picks a profile and an image on
the hub's form, and JupyterLab loads from the cluster. The screenshots stay
in .testbed/artefacts/ after the run (make test does not delete them).

The browser resolves the test bed's public names to its containers
(--host-resolver-rules) and accepts exactly the two certificates those names
serve (--ignore-certificate-errors-spki-list, by public key): pebble's root
changes every run and cannot be installed in chromium's store.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import ssl

import pytest
from conftest import REPO, hub_jobs, slurm_jobs
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hpcgw_hub.spawner import user_id

# Spawns on the cluster: with the other spawn tests, on one worker (conftest.py).
pytestmark = pytest.mark.xdist_group("hub")

CHROMIUM = "/usr/bin/chromium"
ARTEFACTS = REPO / ".testbed" / "artefacts"
IDENTITY = "heidi@uchicago.edu"


def spki_pin(host: str, port: int) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of the certificate `host:port` serves."""
    pem = ssl.get_server_certificate((host, port))
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture
def chromium_page(testbed, testbed_dns):
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), "Debian's chromium is missing (tests/testbed/host-setup.sh installs it)"
    pins = ",".join({spki_pin(testbed.hub_name, 443), spki_pin(testbed.globus_name, testbed.globus_port)})
    rules = ",".join(f"MAP {name} {address}" for name, address in testbed_dns.items())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", f"--host-resolver-rules={rules}", f"--ignore-certificate-errors-spki-list={pins}"],
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            yield context.new_page()
        finally:
            browser.close()


def test_a_person_picks_a_profile_and_an_image_and_jupyterlab_loads(chromium_page, testbed, cluster_host, hub_user):
    page = chromium_page
    name = IDENTITY.split("@")[0]
    page.goto(f"https://{testbed.hub_name}/hub/oauth_login")
    page.click(f'button[name="username"][value="{IDENTITY}"]')
    page.wait_for_url(f"https://{testbed.hub_name}/hub/**")

    page.goto(f"https://{testbed.hub_name}/hub/spawn")
    page.select_option("#hpcgw-profile", "short")
    page.select_option("#hpcgw-image", "notebook-marked")
    page.fill("#hpcgw-minutes", "30")
    try:
        page.click('#spawn_form [type="submit"]')
        # JupyterLab's shell, then its launcher: the front end really ran.
        page.wait_for_url(f"https://{testbed.hub_name}/user/{name}/lab**", timeout=120_000)
        page.wait_for_selector(".jp-LabShell", timeout=60_000)
        page.wait_for_selector(".jp-Launcher", timeout=60_000)
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTEFACTS / "jupyterlab-from-the-spawn-form.png"))

        jobs = [job for job, (job_name, _, state) in slurm_jobs(cluster_host).items()
                if job_name == f"hpcgw-hub-{user_id(name)}" and state == "RUNNING"]
        assert len(jobs) == 1, slurm_jobs(cluster_host)
        details = cluster_host.check_output(f"scontrol show job {jobs[0]}")
        assert "Partition=short" in details and "TimeLimit=00:30:00" in details, details
        log = cluster_host.check_output(f"cat ~gateway/hpcgw/logs/{user_id(name)}/{jobs[0]}.log")
        assert "image notebook-marked" in log, log
    finally:
        hub_user(IDENTITY).stop()

    # The form remembers the last choice; a value outside the profile is
    # refused in words on the form, and no job is submitted.
    page.goto(f"https://{testbed.hub_name}/hub/spawn")
    assert page.input_value("#hpcgw-profile") == "short"
    assert page.input_value("#hpcgw-image") == "notebook-marked"
    assert page.input_value("#hpcgw-minutes") == "30"
    assert hub_jobs(cluster_host, f"hpcgw-hub-{user_id(name)}") == set()
    # The browser's own check (the field's max) is taken away first: the hub
    # must refuse it by itself, as it does a hand-made request.
    page.eval_on_selector("#hpcgw-minutes", "field => field.removeAttribute('max')")
    page.fill("#hpcgw-minutes", "999")
    page.click('#spawn_form [type="submit"]')
    page.wait_for_selector("text=minutes must be between 1 and 60", timeout=30_000)
    page.screenshot(path=str(ARTEFACTS / "spawn-form-refusal.png"))
    assert hub_jobs(cluster_host, f"hpcgw-hub-{user_id(name)}") == set()
