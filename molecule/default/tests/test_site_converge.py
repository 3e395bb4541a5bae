"""site.yml on the converged test site: a second run changes nothing, a
--check --diff run reports nothing and fails nothing, and users stay logged in."""

HOSTS = ("hub.gateway.test", "login.cluster.test")


def test_second_converge_and_check_change_nothing_and_keep_sessions(login, browser, testbed, run_playbook):
    assert login("bob@uchicago.edu").url == f"https://{testbed.hub_name}/hub/home"
    session_cookies = browser.cookies.copy()

    again = run_playbook("site.yml")
    assert again.returncode == 0, again.output[-3000:]
    for host in HOSTS:
        assert again.recap(host)["changed"] == 0, again.output[-5000:]

    check = run_playbook("site.yml", "--check", "--diff")
    assert check.returncode == 0, check.output[-3000:]
    for host in HOSTS:
        recap = check.recap(host)
        assert (recap["changed"], recap["failed"]) == (0, 0), check.output[-5000:]

    # The session cookie from before both runs still logs bob in.
    browser.cookies = session_cookies
    reply = browser.get(f"https://{testbed.hub_name}/hub/api/user", timeout=20)
    assert reply.status_code == 200 and reply.json()["name"] == "bob"
