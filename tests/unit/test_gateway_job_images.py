"""hpcgw-job with container images (<etc>/images.json, written by the
apptainer_images role): the argv notebook_command builds for Apptainer and
Singularity, the environment that reaches the container (the runtime's
prefix, nothing of the gateway's), and the refusal of an unknown image
before anything starts.

Two kinds of tests: the wrapper's functions called directly (loaded from the
script), and the wrapper run for real in test_gateway_job.py's bed, whose
fake runtime records its argv and environment and then does what `run
--cleanenv` does: starts the command after the image with only the prefixed
variables (prefix removed) and HOME=/home/user.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import sys
from pathlib import Path

import pytest
from cluster_scripts import load_script
from job_bed import HUB_PORT, JOB, TOKEN, USER_ID, alive


def load_wrapper():
    return load_script(JOB, "hpcgw_job")


job = load_wrapper()
SOCKET_ARGS = ["--ServerApp.sock=/hpcgw-job/notebook.sock", "--ServerApp.sock_mode=0600",
               "--KernelManager.transport=ipc"]



def settings(tmp_path: Path, kind: str = "apptainer", **changes) -> dict:
    sif = tmp_path / "notebook.sif"
    sif.write_bytes(b"SIF")
    other = tmp_path / "other.sif"
    other.write_bytes(b"SIF")
    images = {
        "runtime": f"/usr/bin/{kind}",
        "runtime_kind": kind,
        "images": [
            {"name": "notebook", "label": "JupyterLab", "description": "Python 3",
             "path": str(sif), "command": ["jupyterhub-singleuser"]},
            {"name": "other", "label": "Other", "description": "", "path": str(other),
             "command": ["/opt/env/bin/jupyterhub-singleuser", "--debug"]},
        ],
        "binds": [],
        "gpu_flag": "--nv",
    }
    images.update(changes)
    return images


def write(tmp_path: Path, images: dict) -> Path:
    path = tmp_path / "images.json"
    path.write_text(json.dumps(images))
    return path


def container(tmp_path, environ=None, **changes):
    images = job.read_images(write(tmp_path, settings(tmp_path, **changes)))
    images["runtime"] = sys.executable  # an executable program
    return job.choose_container(images, environ or {})


# --- notebook_command, directly -------------------------------------------

def test_without_images_json_there_is_no_notebook(tmp_path):
    with pytest.raises(job.Failure, match=r"no image settings .*images.json: notebooks run only in a container"):
        job.read_images(tmp_path / "images.json")


@pytest.mark.parametrize("kind", ["apptainer", "singularity"])
def test_apptainer_and_singularity_argv(tmp_path, kind):
    chosen = container(tmp_path, kind=kind)
    chosen["runtime"] = f"/usr/bin/{kind}"
    user_dir = Path("/hpcgw/users") / USER_ID
    assert job.notebook_command(user_dir, Path("/tmp/hpcgw-7-abc"), chosen) == [
        f"/usr/bin/{kind}", "run", "--containall", "--cleanenv",
        "--home", f"/hpcgw/users/{USER_ID}:/home/user", "--pwd", "/home/user",
        "--bind", "/tmp/hpcgw-7-abc:/hpcgw-job:rw",
        str(tmp_path / "notebook.sif"), "python3", "-c", job.CONTAINER_LAUNCHER,
        "jupyterhub-singleuser", *SOCKET_ARGS,
    ]


def test_binds_gpu_flag_and_the_chosen_images_command(tmp_path):
    binds = [{"src": "/data/sets", "dest": "/datasets", "mode": "ro"},
             {"src": "/scratch/proj", "dest": "/scratch", "mode": "rw"}]
    chosen = container(tmp_path, {"HPCGW_IMAGE": "other", "HPCGW_GPUS": "2"}, binds=binds)
    argv = job.notebook_command(Path("/u"), Path("/tmp/j"), chosen)
    assert argv[argv.index("--pwd") + 2:] == [
        "--bind", "/tmp/j:/hpcgw-job:rw",
        "--bind", "/data/sets:/datasets:ro", "--bind", "/scratch/proj:/scratch:rw", "--nv",
        str(tmp_path / "other.sif"), "python3", "-c", job.CONTAINER_LAUNCHER,
        "/opt/env/bin/jupyterhub-singleuser", "--debug", *SOCKET_ARGS,
    ]


@pytest.mark.parametrize(("gpus", "flag", "expected"), [
    (None, "--nv", False), ("", "--nv", False), ("0", "--nv", False), ("1", "--nv", True),
    ("4", "--rocm", True), ("1", "", False),
])
def test_the_gpu_flag_only_when_the_job_has_gpus(tmp_path, gpus, flag, expected):
    environ = {} if gpus is None else {"HPCGW_GPUS": gpus}
    argv = job.notebook_command(Path("/u"), Path("/tmp/j"), container(tmp_path, environ, gpu_flag=flag))
    assert (flag in argv) is expected
    assert not {"--nv", "--rocm"} - {flag} & set(argv)


def test_no_image_named_means_the_first(tmp_path):
    assert container(tmp_path, {})["image"]["name"] == "notebook"
    assert container(tmp_path, {"HPCGW_IMAGE": ""})["image"]["name"] == "notebook"


@pytest.mark.parametrize("name", ["nope", "Notebook", "../notebook", "notebook;id", "notebook.sif"])
def test_an_unknown_image_is_refused(tmp_path, name):
    with pytest.raises(job.Failure, match=r"HPCGW_IMAGE=.* is not an image of this cluster; known: notebook, other"):
        container(tmp_path, {"HPCGW_IMAGE": name})


@pytest.mark.parametrize("gpus", ["-1", "two", "1 ", "99999"])
def test_bad_gpu_counts_are_refused(tmp_path, gpus):
    with pytest.raises(job.Failure, match="HPCGW_GPUS"):
        container(tmp_path, {"HPCGW_GPUS": gpus})


def test_a_missing_image_file_or_runtime_is_named(tmp_path):
    images = job.read_images(write(tmp_path, settings(tmp_path)))
    not_a_program = tmp_path / "apptainer"
    not_a_program.write_text("")
    with pytest.raises(job.Failure, match=f"container runtime {not_a_program} is not an executable program"):
        job.choose_container({**images, "runtime": str(not_a_program)}, {})
    (tmp_path / "notebook.sif").unlink()
    with pytest.raises(job.Failure, match="image file .*notebook.sif of notebook is missing"):
        job.choose_container(images, {})


def test_bad_image_settings_are_named(tmp_path):
    bad = settings(
        tmp_path, runtime="apptainer", runtime_kind="docker", gpu_flag="--nv; id",
        binds=[{"src": "/a,b", "dest": "/d", "mode": "ro"}, {"src": "/a", "dest": "rel", "mode": "ro"},
               {"src": "/a", "dest": "/d:x", "mode": "ro"}, {"src": "/a", "dest": "/d", "mode": "rwx"}],
    )
    bad["images"][1] = {"name": "Bad Name", "path": "rel.sif", "command": []}
    with pytest.raises(job.Failure) as failure:
        job.read_images(write(tmp_path, bad))
    message = str(failure.value)
    for expected in ("runtime must be", "runtime_kind must be", "images[1].name", "images[1].path",
                     "images[1].command", "binds[0]", "binds[1]", "binds[2]", "binds[3]", "gpu_flag"):
        assert expected in message
    assert "images[0]" not in message


@pytest.mark.parametrize(("kind", "prefix"), [("apptainer", "APPTAINERENV_"), ("singularity", "SINGULARITYENV_")])
def test_the_notebooks_environment_goes_in_with_the_runtimes_prefix_only(tmp_path, kind, prefix):
    environ = {
        "PATH": "/usr/bin:/bin", "HOME": "/home/gateway", "USER": "gateway", "LANG": "C.UTF-8",
        "SECRET_OF_THE_GATEWAY": "x", "APPTAINER_BIND": "/home/gateway", "APPTAINERENV_LD_PRELOAD": "/evil.so",
        "SINGULARITYENV_FOO": "x", "SSH_AUTH_SOCK": "/tmp/agent", "HPCGW_IMAGE": "notebook",
        "JUPYTERHUB_API_TOKEN": TOKEN, "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
        "SLURM_JOB_ID": "77", "CUDA_VISIBLE_DEVICES": "0", "HPCGW_PORT_SECRET": "wrapper-only",
    }
    notebook_env = job.notebook_environment(environ, 5001)
    env = job.container_environment(notebook_env, environ, kind)
    encoded = env.pop(f"{prefix}HPCGW_NOTEBOOK_ENV")
    assert env == {"PATH": "/usr/bin:/bin", "HOME": "/home/gateway", "USER": "gateway", "LANG": "C.UTF-8"}
    assert json.loads(base64.b64decode(encoded)) == {
        "LANG": "C.UTF-8",
        "JUPYTERHUB_API_TOKEN": TOKEN,
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
        "JUPYTERHUB_API_URL": "http://127.0.0.1:5001/hub/api",
        "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:8888/user/alice/",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
        "SLURM_JOB_ID": "77",
        "CUDA_VISIBLE_DEVICES": "0",
    }


def test_a_hostile_user_name_reaches_the_container_as_base64_only(tmp_path):
    # The runtimes source their APPTAINERENV_* values as shell: a quote broke
    # the notebook's start, and $(...) would run (found on the test bed).
    name = "x';touch pwned-q;'$(touch pwned-d)`touch pwned-b`\"&&id|tee pwned-p;<>*?~!{}[]\\"
    environ = {"PATH": "/usr/bin", "JUPYTERHUB_USER": name, "JUPYTERHUB_SERVICE_PREFIX": f"/user/{name}/"}
    env = job.container_environment(job.notebook_environment(environ, 5001), environ, "apptainer")
    assert all(re.fullmatch(r"[A-Za-z0-9+/=]*", value) for name_, value in env.items()
               if name_.startswith("APPTAINERENV_")), env
    assert json.loads(base64.b64decode(env["APPTAINERENV_HPCGW_NOTEBOOK_ENV"]))["JUPYTERHUB_USER"] == name


# --- the wrapper run for real, with a fake runtime -------------------------

def test_the_notebook_runs_in_the_image_and_the_tunnel_outside(bed):
    wrapper = bed.start(HPCGW_IMAGE="other", HPCGW_GPUS="1", APPTAINER_BIND="/home", APPTAINERENV_EVIL="1")
    report = bed.reported()
    assert json.loads(report["body"]) == {"port": HUB_PORT}
    assert report["notebook_listening"] is True

    user_dir = bed.users / USER_ID
    runtime = bed.record("runtime")
    job_dir = Path(bed.record("notebook")["sock"]).parent
    assert runtime["argv"][1:] == [
        "run", "--containall", "--cleanenv", "--home", f"{user_dir}:/home/user", "--pwd", "/home/user",
        "--bind", f"{job_dir}:/hpcgw-job:rw",
        "--bind", f"{bed.logs / USER_ID}:/hpcgw-logs:ro",  # the user's own logs only
        "--bind", "/data:/datasets:ro", "--nv", str(bed.here / "other.sif"),
        "python3", "-c", job.CONTAINER_LAUNCHER,
        str(bed.bin / "notebook"), *SOCKET_ARGS,
    ]
    # The runtime gets its basics and the notebook's variables, prefixed; not
    # the gateway's (SECRET_OF_THE_GATEWAY, a site's APPTAINER_BIND or
    # APPTAINERENV_*, the proxy, the wrapper's own HPCGW_*).
    # (LC_CTYPE: the fake runtime's own Python sets it under the C locale, PEP 538.)
    allowed = {"PATH", "HOME", "LANG", "USER", "LOGNAME", "LC_CTYPE"}
    assert {name for name in runtime["env"] if not name.startswith("APPTAINERENV_")} <= allowed
    assert [name for name in runtime["env"] if name.startswith("APPTAINERENV_")] == ["APPTAINERENV_HPCGW_NOTEBOOK_ENV"]
    passed = json.loads(base64.b64decode(runtime["env"]["APPTAINERENV_HPCGW_NOTEBOOK_ENV"]))
    assert passed["JUPYTERHUB_API_TOKEN"] == TOKEN
    assert not {"HOME", "PATH", "HPCGW_IMAGE", "EVIL"} & set(passed)

    # Inside (as the fake runtime's --cleanenv does it): the hub's variables only.
    inside = bed.record("notebook")["env"]
    assert inside["HOME"] == "/home/user"
    assert inside["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:8888/user/alice/"
    assert inside["JUPYTERHUB_API_TOKEN"] == TOKEN
    assert not {"SECRET_OF_THE_GATEWAY", "HPCGW_USER_ID", "HPCGW_IMAGE", "HPCGW_GPUS", "http_proxy",
                "APPTAINER_BIND", "EVIL"} & set(inside)
    assert str(bed.here) not in json.dumps(inside)  # no path of the gateway (tunnel key, known_hosts)
    assert bed.record("notebook")["cwd"] == str(user_dir)

    # ssh ran outside, as before, with no container variable.
    ssh = bed.record("ssh")
    assert ssh["argv"][0].endswith("/ssh")
    assert not [name for name in ssh["env"] if "APPTAINER" in name]
    assert TOKEN not in " ".join(runtime["argv"])

    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 0
    assert not alive(runtime["pid"])
    assert "image other" in bed.log_text()


def test_an_unknown_image_is_refused_before_anything_starts(bed):
    assert bed.run(HPCGW_IMAGE="bigdata") != 0
    log = bed.log_text()
    assert "HPCGW_IMAGE='bigdata' is not an image of this cluster; known: notebook, other" in log
    assert bed.record("ssh") is None
    assert bed.record("runtime") is None
    assert list(bed.users.iterdir()) == []

