"""hpcgw_hub: spawn options, the batch script, the port callback, orphan reaping."""

from __future__ import annotations

import asyncio
import json
import re
from html.parser import HTMLParser
from unittest.mock import Mock

import pytest
from jupyterhub import apihandlers
from tornado import web
from traitlets import TraitError

from hpcgw_hub.callback import parse_port
from hpcgw_hub.options import JobRequest, OptionsError, check_profiles, from_form, remembered, validate
from hpcgw_hub.reaper import known_job_ids, orphans
from hpcgw_hub.spawner import GatewaySpawner, user_id

PROFILES = [
    {"name": "compute", "label": "CPU notebook", "partition": "compute",
     "default_minutes": 60, "max_minutes": 480, "default_cpus": 1, "max_cpus": 2,
     "default_memory_mb": 1024, "max_memory_mb": 4096, "images": ["notebook", "datascience"]},
    {"name": "gpu", "label": "GPU notebook", "partition": "gpu",
     "default_minutes": 30, "max_minutes": 60, "default_cpus": 1, "max_cpus": 1,
     "default_memory_mb": 1024, "max_memory_mb": 2048, "default_gpus": 1, "max_gpus": 2,
     "images": ["cuda", "notebook"]},
]
IMAGES = [
    {"name": "notebook", "label": "Python notebook", "description": "JupyterLab and the scientific Python stack"},
    {"name": "datascience", "label": "Data science", "description": "R and Python"},
    {"name": "cuda", "label": "CUDA", "description": "PyTorch with CUDA"},
    {"name": "unused", "label": "Not in any profile", "description": "never offered"},
]


def test_defaults_make_a_valid_request():
    assert validate({}, PROFILES) == JobRequest(
        profile="compute", partition="compute", image="notebook", minutes=60, cpus=1, memory_mb=1024, gpus=0)
    assert validate({"profile": "gpu"}, PROFILES) == JobRequest(
        profile="gpu", partition="gpu", image="cuda", minutes=30, cpus=1, memory_mb=1024, gpus=1)
    assert validate({"profile": "gpu", "image": "notebook", "minutes": 60, "cpus": 1, "memory_mb": 2048, "gpus": 0},
                    PROFILES).image == "notebook"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"profile": "debug"}, "profile must be one of compute, gpu (asked: 'debug')"),
        ({"profile": "compute; id"}, "profile must be one of compute, gpu (asked: 'compute; id')"),
        ({"profile": ["gpu"]}, "profile must be one of compute, gpu (asked: ['gpu'])"),
        ({"image": "cuda"}, "image 'cuda' is not offered with profile compute; choose one of notebook, datascience"),
        ({"profile": "gpu", "image": "datascience"},
         "image 'datascience' is not offered with profile gpu; choose one of cuda, notebook"),
        ({"image": "unused"}, "image 'unused' is not offered with profile compute"),
        ({"image": "../../etc/passwd"}, "image '../../etc/passwd' is not offered with profile compute"),
        ({"image": 3}, "image 3 is not offered with profile compute"),
        ({"minutes": 481}, "minutes must be between 1 and 480 (asked: 481)"),
        ({"minutes": 0}, "minutes must be between 1 and 480 (asked: 0)"),
        ({"profile": "gpu", "minutes": 61}, "minutes must be between 1 and 60 (asked: 61)"),
        ({"minutes": 1.5}, "minutes must be a whole number, not 1.5"),
        ({"cpus": 3}, "cpus must be between 1 and 2 (asked: 3)"),
        ({"cpus": "2"}, "cpus must be a whole number, not '2'"),
        ({"cpus": True}, "cpus must be a whole number, not True"),
        ({"cpus": None}, "cpus must be a whole number, not None"),
        ({"memory_mb": 10**9}, "memory_mb must be between 1 and 4096 (asked: 1000000000)"),
        ({"memory_mb": -1}, "memory_mb must be between 1 and 4096 (asked: -1)"),
        ({"gpus": 1}, "gpus must be between 0 and 0 (asked: 1)"),
        ({"profile": "gpu", "gpus": 3}, "gpus must be between 0 and 2 (asked: 3)"),
        ({"partition": "gpu"}, "unknown spawn option(s): partition (allowed: profile, image, minutes, cpus"),
        ({"req_options": "--uid=0", "batch_cancel_cmd": "id"}, "unknown spawn option(s): batch_cancel_cmd, req_options"),
    ],
)
def test_options_outside_the_profile_are_refused_in_words(options, message):
    with pytest.raises(OptionsError) as refused:
        validate(options, PROFILES)
    assert message in str(refused.value)


def test_options_must_be_an_object():
    with pytest.raises(OptionsError, match="must be a JSON object"):
        validate(["profile", "gpu"], PROFILES)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"name": "a b"}, "profiles[1].name"),
        ({"name": "compute"}, "profiles[1].name"),
        ({"label": ""}, "profiles[1].label"),
        ({"partition": "gpu;id"}, "profiles[1].partition"),
        ({"max_minutes": "60"}, "profiles[1].max_minutes"),
        ({"default_minutes": 61}, "profiles[1].default_minutes"),
        ({"default_cpus": 0}, "profiles[1].default_cpus"),
        ({"max_gpus": True}, "profiles[1].max_gpus"),
        ({"images": []}, "profiles[1].images"),
        ({"images": ["../x"]}, "profiles[1].images"),
        ({"images": ["nosuch"]}, 'profiles[1].images[0] is "nosuch", not an image the cluster offers'),
        ({"images": ["CUDA"]}, "profiles[1].images[0] must be an image name"),
        ({"max_cpus": None}, "profiles[1].max_cpus must be a whole number of at least 1"),
    ],
)
def test_a_wrong_profile_is_named_by_its_field(change, field):
    profiles = [PROFILES[0], {**PROFILES[1], **change}]
    with pytest.raises(ValueError, match=re.escape(field)):
        check_profiles(profiles, IMAGES)
    if "cluster offers" not in field:  # the spawner checks its profiles alone (the role checks them against the images)
        with pytest.raises(TraitError, match=re.escape(field)):
            GatewaySpawner(user=Mock(name="user"), profiles=profiles)


def test_form_fields_become_typed_options():
    assert from_form({"profile": ["gpu"], "image": ["cuda"], "cpus": ["1"], "gpus": [" 2 "], "minutes": [""],
                      "memory_mb": ["2048"]}) == {"profile": "gpu", "image": "cuda", "cpus": 1, "gpus": 2,
                                                  "memory_mb": 2048}
    # Fields the form does not have stay, so that validate() refuses them by name.
    assert from_form({"partition": ["gpu"], "_xsrf": ["x"]}) == {"partition": "gpu"}
    for bad in ("two", "1.5", "0x10", "1e3"):
        with pytest.raises(OptionsError, match=f"cpus must be a whole number, not '{bad}'"):
            from_form({"cpus": [bad]})


@pytest.mark.parametrize(
    "body, status",
    [
        (b'{"port": 40123}', 200),
        (b'{"port": "40123"}', 400),
        (b'{"port": 0}', 400),
        (b'{"port": 70000}', 400),
        (b'{"port": true}', 400),
        (b'{"port": 40123, "batch_cancel_cmd": "id"}', 400),
        (b'{"ip": "10.0.0.1"}', 400),
        (b"[40123]", 400),
        (b"port=40123", 400),
        (b"", 400),
    ],
)
def test_port_callback_accepts_only_a_port(body, status):
    if status == 200:
        assert parse_port(body) == 40123
    else:
        with pytest.raises(web.HTTPError) as refused:
            parse_port(body)
        assert refused.value.status_code == 400


def test_batchspawner_attribute_setting_handler_is_gone():
    assert not [route for route, _ in apihandlers.default_handlers if "batchspawner" in route]


def test_user_ids_are_stable_safe_and_distinct():
    assert user_id("alice") == user_id("alice")
    assert user_id("erin@uchicago.edu") != user_id("erin@globusid.org")
    assert all(c in "u-0123456789abcdef" for c in user_id("$(rm -rf ~);`id`"))


def spawner_for(username: str, environment: dict | None = None) -> GatewaySpawner:
    spawner = GatewaySpawner(
        user=Mock(name="user"), gateway_root="/home/gateway/hpcgw", cluster_host="login",
        profiles=PROFILES, images=IMAGES, job_name_prefix="hpcgw-hub",
    )
    spawner.user.name = username
    spawner.environment = environment or {}
    spawner.get_env = lambda: {"JUPYTERHUB_USER": username, "JUPYTERHUB_API_TOKEN": "t0k3n", "PATH": "/evil"}
    return spawner


def test_the_submit_request_carries_checked_values_and_no_script():
    hostile = "x'; touch pwned; echo '$(touch pwned2)`touch pwned3` #SBATCH --uid=0"
    spawner = spawner_for(hostile, {"EXTRA": "a b;c", "bad-name": "x", "JUPYTERHUB_EXTRA": "1",
                                    "HPCGW_PORT_SECRET": "s3cr3t", "HPCGW_USER_ID": "u-0000000000000000ffff",
                                    "LD_PRELOAD": "/tmp/x.so"})
    body = json.loads(spawner.submit_request(validate({}, PROFILES)))
    # The port secret is the hub's own for this start: the environment config cannot set it.
    secret = body["env"].pop("HPCGW_PORT_SECRET")
    assert secret == spawner.port_secret and secret != "s3cr3t" and len(secret) >= 32
    # Exactly the gate's keys: the gate builds the script, the job name, --output and --chdir.
    assert body == {
        "user_id": user_id(hostile), "profile": "compute", "image": "notebook", "minutes": 60, "cpus": 1,
        "memory_mb": 1024, "gpus": 0,
        "env": {"JUPYTERHUB_USER": hostile, "JUPYTERHUB_API_TOKEN": "t0k3n", "JUPYTERHUB_EXTRA": "1"},
    }


def test_the_submit_request_is_what_the_gate_accepts(tmp_path):
    """The hub's request, given to the real gate (fake sbatch), starts a job."""
    from test_gateway_gate import Slurm

    slurm = Slurm(tmp_path)
    slurm.settings(job_name_prefix="hpcgw-hub", profiles=PROFILES)
    slurm.answers("sbatch", out="31\n")
    spawner = spawner_for("carol")
    spawner.profiles = PROFILES
    spawner.user_options = {"profile": "gpu", "image": "cuda", "gpus": 2}
    done = slurm.gate("submit", spawner.submit_request(spawner.job_request()).encode())
    assert (done.returncode, done.stdout) == (0, b"31\n"), done.stderr
    [call] = slurm.calls()
    assert f"--job-name={spawner.job_name}" in call["argv"] and "--gres=gpu:2" in call["argv"]
    assert "export HPCGW_IMAGE=cuda" in call["stdin"] and "export HPCGW_GPUS=2" in call["stdin"]


def test_control_characters_are_refused():
    spawner = spawner_for("bob\n#SBATCH --uid=0")
    with pytest.raises(web.HTTPError) as refused:
        spawner.submit_request(validate({}, PROFILES))
    assert refused.value.status_code == 400


def test_reaper_cancels_only_this_hubs_unknown_jobs():
    users = [
        {"servers": {"": {"state": {"job_id": "101"}}}},
        {"servers": {"": {"state": {}}, "other": None}},
        {"servers": {}},
    ]
    listing = "101 hpcgw-hub-u-aaaa RUNNING\n102 hpcgw-hub-u-bbbb PENDING\n103 other-job RUNNING\n104 hpcgw-hubx-u-c RUNNING\n"
    assert orphans(listing, "hpcgw-hub", known_job_ids(users)) == ["102"]


def test_reaper_spares_a_job_its_spawner_saves_while_the_reaper_looks(monkeypatch):
    """The hub restarts while bob's server starts: the reaper sees job 102 on the
    cluster before bob's spawner has saved it. Only 103, still unknown after the
    grace, is cancelled (measured on the test bed: this race cancelled a spawn)."""
    import asyncio
    from types import SimpleNamespace

    from hpcgw_hub import reaper

    answers = iter([
        [],                                                   # before 102 is saved
        [{"servers": {"": {"state": {"job_id": "102"}}}}],    # after the grace
    ])
    monkeypatch.setattr(reaper, "hub_users", lambda url, token: next(answers))
    cancelled = []

    class FakeGate:
        async def list_jobs(self, prefix):
            return SimpleNamespace(ok=True, stdout="102 hpcgw-hub-u-b RUNNING\n103 hpcgw-hub-u-c RUNNING\n", stderr="")

        async def cancel(self, job_id):
            cancelled.append(job_id)
            return SimpleNamespace(ok=True, stdout="", stderr="")

    done = asyncio.run(reaper.reap_once(FakeGate(), "http://hub/api", "t", "hpcgw-hub", grace=0))
    assert done == cancelled == ["103"]


def test_the_placeholder_spawner_refuses_in_words():
    import asyncio

    from hpcgw_hub.placeholder import NotConfiguredSpawner

    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(NotConfiguredSpawner(user=Mock(name="user")).start())
    assert refused.value.status_code == 503
    assert "cluster connection is not configured" in refused.value.log_message


def test_spawners_share_one_gate_per_connection_setting():
    a, b = spawner_for("alice"), spawner_for("bob")
    assert a.gate is b.gate
    b.command_timeout = 5
    assert a.gate is not b.gate and b.gate.timeout == 5


def test_the_submit_request_carries_the_image_and_gpus_not_in_the_environment():
    spawner = spawner_for("carol", {"HPCGW_IMAGE": "override", "HPCGW_GPUS": "9"})
    spawner.user_options = {"profile": "gpu", "gpus": 2}
    body = json.loads(spawner.submit_request(spawner.job_request()))
    assert (body["profile"], body["image"], body["gpus"]) == ("gpu", "cuda", 2)
    # The gate sets HPCGW_IMAGE and HPCGW_GPUS from the checked values; only the port secret travels in env.
    assert [name for name in body["env"] if name.startswith("HPCGW_")] == ["HPCGW_PORT_SECRET"]


def test_an_environment_value_with_a_control_character_is_refused():
    spawner = spawner_for("erin", {"JUPYTERHUB_X": "a\x1b[2J"})
    with pytest.raises(web.HTTPError) as refused:
        spawner.submit_request(validate({}, PROFILES))
    assert refused.value.status_code == 400


# -- the spawn form ---------------------------------------------------------
def form_of(spawner) -> str:
    import asyncio

    return asyncio.run(spawner.get_options_form())


def options_in(html: str, select: str) -> list[tuple[str, bool, bool]]:
    """(value, selected, disabled) of each <option> of the <select name=select>."""
    body = re.search(rf'<select [^>]*name="{select}">(.*?)</select>', html, re.S).group(1)
    return [(m.group(1), " selected" in m.group(0), " disabled" in m.group(0))
            for m in re.finditer(r'<option value="([^"]*)"[^>]*>', body)]


def number_input(html: str, name: str) -> dict:
    tag = re.search(rf'<input [^>]*name="{name}"[^>]*>', html).group(0)
    return dict(re.findall(r'(min|max|value)="([^"]*)"', tag))


def test_the_form_offers_the_profiles_and_only_their_images():
    html = form_of(spawner_for("alice"))
    assert options_in(html, "profile") == [("compute", True, False), ("gpu", False, False)]
    # The default profile's images are choosable; other profiles' are there for the script, disabled.
    assert options_in(html, "image") == [("notebook", True, False), ("datascience", False, False),
                                         ("cuda", False, True)]
    assert "unused" not in html and "never offered" not in html
    assert number_input(html, "minutes") == {"min": "1", "max": "480", "value": "60"}
    assert number_input(html, "cpus") == {"min": "1", "max": "2", "value": "1"}
    assert number_input(html, "memory_mb") == {"min": "1", "max": "4096", "value": "1024"}
    assert number_input(html, "gpus") == {"min": "0", "max": "0", "value": "0"}


class Elements(HTMLParser):
    """Every start tag (name, attributes as the browser decodes them) and every text."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if data.strip():
            self.texts.append(data.strip())


FORM_TAGS = {"div", "label", "select", "option", "p", "input", "script"}
HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_the_form_escapes_every_admin_string():
    spawner = spawner_for("alice")
    spawner.profiles = [{**PROFILES[0], "label": HOSTILE}]
    spawner.images = [{"name": "notebook", "label": HOSTILE, "description": HOSTILE},
                      {"name": "datascience", "label": "R & Python", "description": "'quoted'"}]
    html = form_of(spawner)
    assert "<script>alert" not in html and "<img" not in html and 'onerror=alert(2)>' not in html
    form = Elements(html)
    # Only the form's own elements, one script (which holds no admin or user data)...
    assert {tag for tag, _ in form.tags} == FORM_TAGS
    assert [tag for tag, _ in form.tags].count("script") == 1
    # ...and each string back as the browser reads it: the profile's and image's labels, the description.
    assert form.texts.count(HOSTILE) == 3
    options = [attrs for tag, attrs in form.tags if tag == "option"]
    assert [o.get("data-description") for o in options] == [None, HOSTILE, "'quoted'"]
    assert "R & Python" in form.texts and "R &amp; Python" in html


def test_the_form_template_escapes_every_value_it_is_given():
    """Autoescape on the template itself: hostile text in every slot render()
    fills (including those the profile rules keep clean today: names, numbers)
    stays text. Fails if the template or a slot is ever marked safe."""
    from hpcgw_hub.form import ENVIRONMENT, TEMPLATE

    assert ENVIRONMENT.autoescape is True
    item = {"name": HOSTILE, "label": HOSTILE, "images": HOSTILE, "limits": HOSTILE, "description": HOSTILE,
            "selected": True, "allowed": False, "min": HOSTILE, "max": HOSTILE, "value": HOSTILE}
    html = ENVIRONMENT.get_template(TEMPLATE).render(
        profiles=[item], images=[item], description=HOSTILE, fields=[item])
    form = Elements(html)
    assert {tag for tag, _ in form.tags} == FORM_TAGS
    values = [value for _, attrs in form.tags for value in attrs.values() if value and HOSTILE in value]
    assert len(values) == 11  # every attribute slot holds the whole string, no attribute was broken out of
    assert form.texts.count(HOSTILE) == 4


def test_the_form_is_prefilled_with_the_last_choice():
    spawner = spawner_for("alice")
    spawner.user_options = {"profile": "gpu", "image": "notebook", "minutes": 45, "cpus": 1, "memory_mb": 2000,
                            "gpus": 2}
    html = form_of(spawner)
    assert options_in(html, "profile") == [("compute", False, False), ("gpu", True, False)]
    assert options_in(html, "image") == [("notebook", True, False), ("datascience", False, True),
                                         ("cuda", False, False)]
    assert number_input(html, "minutes") == {"min": "1", "max": "60", "value": "45"}
    assert number_input(html, "memory_mb") == {"min": "1", "max": "2048", "value": "2000"}
    assert number_input(html, "gpus") == {"min": "0", "max": "2", "value": "2"}


@pytest.mark.parametrize(
    "last, expected",
    [
        # Still allowed: kept.
        ({"profile": "gpu", "image": "notebook", "minutes": 45, "gpus": 0},
         {"profile": "gpu", "image": "notebook", "minutes": 45, "cpus": 1, "memory_mb": 1024, "gpus": 0}),
        # The image left the profile, the walltime is now over its cap: those two fall back to the defaults.
        ({"profile": "gpu", "image": "datascience", "minutes": 400, "cpus": 1},
         {"profile": "gpu", "image": "cuda", "minutes": 30, "cpus": 1, "memory_mb": 1024, "gpus": 1}),
        # The profile is gone: the first profile with its defaults.
        ({"profile": "old", "image": "notebook", "minutes": 10},
         {"profile": "compute", "image": "notebook", "minutes": 60, "cpus": 1, "memory_mb": 1024, "gpus": 0}),
        # Options of an older version, or a form's strings: defaults.
        ({"partition": "compute", "cpus": "2"},
         {"profile": "compute", "image": "notebook", "minutes": 60, "cpus": 1, "memory_mb": 1024, "gpus": 0}),
        (None, {"profile": "compute", "image": "notebook", "minutes": 60, "cpus": 1, "memory_mb": 1024, "gpus": 0}),
    ],
)
def test_a_remembered_choice_no_longer_allowed_falls_back_to_the_defaults(last, expected):
    assert remembered(last, PROFILES) == expected
    validate(remembered(last, PROFILES), PROFILES)  # the prefill is always a valid request


BAD_OPTIONS = [
    {"profile": "gpu", "minutes": 61},
    {"profile": "gpu", "image": "datascience"},
    {"image": "cuda"},
    {"cpus": 3},
    {"memory_mb": 10**7},
    {"gpus": 1},
    {"partition": "gpu"},
    {"req_options": "--uid=0"},
]


def as_form(options: dict) -> dict:
    return {name: [str(value)] for name, value in options.items()}


@pytest.mark.parametrize("options", BAD_OPTIONS)
def test_rest_and_form_give_the_same_error(options):
    from jupyterhub.utils import format_exception

    spawner = spawner_for("bob")
    with pytest.raises(web.HTTPError) as from_the_form:
        spawner.run_options_from_form(as_form(options))
    spawner.user_options = options  # what the REST API stores, unchanged
    with pytest.raises(web.HTTPError) as from_rest:
        spawner.job_request()
    with pytest.raises(OptionsError) as plain:
        validate(options, PROFILES)
    message = f"Spawn options refused: {plain.value}"
    for error in (from_the_form.value, from_rest.value):
        assert error.status_code == 400
        assert error.log_message % error.args == message  # the REST API's JSON "message"
        # What JupyterHub shows on the spawn form (str unless jupyterhub_message) and on the
        # spawn-pending page (jupyterhub_message only).
        assert format_exception(error)[0] == message
        assert format_exception(error, only_jupyterhub=True)[0] == message


def test_a_good_form_becomes_the_options_the_rest_api_would_send():
    spawner = spawner_for("bob")
    options = spawner.run_options_from_form(
        {"profile": ["gpu"], "image": ["cuda"], "minutes": ["60"], "cpus": ["1"], "memory_mb": ["2048"], "gpus": ["2"]})
    assert options == {"profile": "gpu", "image": "cuda", "minutes": 60, "cpus": 1, "memory_mb": 2048, "gpus": 2}
    spawner.user_options = options
    assert spawner.job_request() == validate(options, PROFILES)


def test_a_start_with_bad_options_submits_nothing():
    import asyncio

    spawner = spawner_for("bob")
    spawner.user_options = {"image": "cuda"}
    spawner.submit_batch_script = Mock(side_effect=AssertionError("submitted"))
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(spawner.start())
    assert refused.value.jupyterhub_message.startswith("Spawn options refused: image 'cuda'")


# -- a job Slurm still lists (COMPLETING) is not gone --------------------------
class FakeGate:
    """Answers `status` (and `list`, the shared listing, for job 77) from a
    list of gate answers, the last one repeated."""

    def __init__(self, *answers):
        from types import SimpleNamespace

        self.answers = [SimpleNamespace(returncode=0, ok=True, stdout=a + "\n", stderr="") for a in answers]
        self.asked = []

    async def status(self, job_id):
        self.asked.append(("status", job_id))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def list_jobs(self, prefix):
        self.asked.append(("list", prefix))
        from types import SimpleNamespace

        answer = (self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]).stdout.strip()
        line = "" if answer == "GONE" else "77 {}-u-00000000000000000000 {} {} N/A {}\n".format(prefix, *answer.split(" ", 2))
        return SimpleNamespace(returncode=0, ok=True, stdout=line, stderr="")

    async def cancel(self, job_id):
        self.asked.append(("cancel", job_id))
        from types import SimpleNamespace

        return SimpleNamespace(returncode=0, ok=True, stdout="", stderr="")


@pytest.fixture
def spawner_with_gate(monkeypatch):
    def make(gate):
        monkeypatch.setattr(GatewaySpawner, "gate", property(lambda self: gate))
        spawner = spawner_for("frank")
        spawner.job_id = "77"
        spawner.stop_poll_interval = 0
        spawner.poll_interval = 0  # each poll() a fresh listing
        return spawner

    return make


def test_a_completing_job_is_not_gone(spawner_with_gate):
    from batchspawner import JobStatus

    spawner = spawner_with_gate(FakeGate("COMPLETING c1 None"))
    assert asyncio.run(spawner.query_job_status()) != JobStatus.NOTFOUND
    assert spawner.state_isending()


def test_poll_keeps_a_completing_server_until_slurm_no_longer_lists_it(spawner_with_gate):
    gate = FakeGate("COMPLETING c1 None", "GONE")
    spawner = spawner_with_gate(gate)
    assert asyncio.run(spawner.poll()) is None
    assert spawner.job_id == "77"
    assert asyncio.run(spawner.poll()) == 1
    assert spawner.job_id == ""


def test_stop_waits_while_the_job_is_completing(spawner_with_gate):
    gate = FakeGate("RUNNING c1 None", "COMPLETING c1 None", "COMPLETING c1 None", "GONE")
    spawner = spawner_with_gate(gate)
    asyncio.run(spawner.stop())
    assert gate.asked == [("cancel", "77")] + [("list", "hpcgw-hub")] * 4


def test_stop_of_a_job_stuck_in_completing_says_so(spawner_with_gate, caplog):
    gate = FakeGate("COMPLETING c1 None")
    spawner = spawner_with_gate(gate)
    spawner.stop_timeout = 0.2
    spawner.stop_poll_interval = 0.05
    asyncio.run(spawner.stop())
    assert len(gate.asked) > 2
    assert "did not confirm it is gone" in caplog.text


def test_the_rest_spawn_api_is_the_checked_one():
    from jupyterhub.apihandlers.users import UserServerAPIHandler

    from hpcgw_hub.spawnapi import CheckedUserServerAPIHandler

    routes = {route: handler for route, handler in apihandlers.default_handlers if "/server" in route}
    assert routes[r"/api/users/([^/]+)/server"] is CheckedUserServerAPIHandler
    assert routes[r"/api/users/([^/]+)/servers/([^/]*)"] is CheckedUserServerAPIHandler
    assert UserServerAPIHandler not in {handler for _, handler in apihandlers.default_handlers}


def rest_spawn(body: bytes, monkeypatch):
    """Drive the checked handler's POST as tornado would (past the scope check);
    returns (JupyterHub's own POST was reached with these options?, the spawner)."""
    import asyncio

    from jupyterhub.apihandlers.users import UserServerAPIHandler

    from hpcgw_hub.spawnapi import CheckedUserServerAPIHandler

    reached = []

    async def stock_post(self, user_name, server_name=""):
        reached.append(self.get_json_body())

    monkeypatch.setattr(UserServerAPIHandler, "post", stock_post)
    spawner = spawner_for("alice")
    handler = object.__new__(CheckedUserServerAPIHandler)
    handler.request = Mock(body=body)
    handler.application = Mock(settings={"allow_named_servers": False})
    handler.find_user = Mock(return_value=Mock(get_spawner=Mock(return_value=spawner)))
    post = CheckedUserServerAPIHandler.post.__wrapped__  # past needs_scope
    try:
        asyncio.run(post(handler, "alice"))
    except web.HTTPError as error:
        return error, reached
    return None, reached


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"1", b"null", b'{"cpus": 99}', b'{"batch_cancel_cmd": "id"}'])
def test_a_rest_spawn_with_bad_options_is_a_400_before_jupyterhub_sees_it(body, monkeypatch):
    """JupyterHub stores the options, then fails on a non-object (500, ghost
    server): the check comes before, so nothing is stored or started."""
    error, reached = rest_spawn(body, monkeypatch)
    if body == b"null":  # JSON null is no options: the stored ones apply
        assert error is None and reached == [None]
        return
    assert error is not None and error.status_code == 400
    assert "Spawn options refused" in error.log_message % error.args
    assert reached == []


@pytest.mark.parametrize("body", [b"", b"{}", b'{"profile": "gpu", "gpus": 2}'])
def test_a_rest_spawn_with_good_options_goes_on(body, monkeypatch):
    error, reached = rest_spawn(body, monkeypatch)
    assert error is None and len(reached) == 1


@pytest.mark.parametrize("stored", [[], "x", 1, [{"cpus": 1}]])
def test_stored_options_that_are_no_object_do_not_stop_the_hub(stored):
    """JupyterHub hands a server's stored options to its spawner when the hub
    starts: a list stored by an old REST spawn raised a TraitError there."""
    spawner = spawner_for("alice")
    spawner.user_options = stored
    assert spawner.user_options == {}
