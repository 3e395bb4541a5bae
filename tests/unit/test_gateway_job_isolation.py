"""hpcgw-job against a hostile notebook and its neighbours on the node
(issue 15), in the job_bed: what the wrapper gives the container, what it
keeps out, and what reaches the job's log.

- The notebook listens on a Unix socket in a job folder (0700, a fresh
  random name) bound into this job's container only, never on a TCP port
  of the node's loopback, which every job on the node shares: the tunnel
  forwards to the socket, and the wrapper checks that socket.
- The port secret (HPCGW_PORT_SECRET) goes to the hub in a header, never
  into the container, the runtime's environment, an argv or the log.
- The container's output reaches the log only through the wrapper: every
  line behind "notebook: ", control characters escaped, bounded in size;
  a line forged to look like the wrapper's cannot start a log line.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import stat

from job_bed import PORT_SECRET, alive

WRAPPER_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} hpcgw-job: ")


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_the_notebook_listens_on_a_socket_in_a_private_job_folder_not_on_a_tcp_port(bed):
    wrapper = bed.start()
    bed.reported()
    ssh = bed.record("ssh")["argv"]
    bind_address, hub_port, target = option(ssh, "-R").split(":", 2)
    assert (bind_address, hub_port) == ("127.0.0.1", "0")
    # The tunnel's target is a socket path, not <host>:<port> on the node's loopback.
    assert target.startswith("/") and target.endswith("/notebook.sock"), target
    job_dir = os.path.dirname(target)
    assert stat.S_IMODE(os.stat(job_dir).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(target).st_mode)
    # Bound into this job's container, and only that folder of the node's /tmp.
    runtime = bed.record("runtime")["argv"]
    binds = [runtime[i + 1] for i, arg in enumerate(runtime) if arg == "--bind"]
    assert f"{job_dir}:/hpcgw-job:rw" in binds
    notebook = bed.record("notebook")["argv"]
    assert not [arg for arg in notebook if arg.startswith(("--port", "--ip"))], notebook
    assert "--KernelManager.transport=ipc" in notebook
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 0
    assert not os.path.exists(job_dir)


def test_the_port_secret_goes_to_the_hub_and_never_into_the_container(bed):
    wrapper = bed.start()
    report = bed.reported()
    assert report["headers"].get("X-Hpcgw-Port-Secret") == PORT_SECRET
    runtime = bed.record("runtime")
    passed = base64.b64decode(runtime["env"]["APPTAINERENV_HPCGW_NOTEBOOK_ENV"]).decode()
    notebook = bed.record("notebook")
    for seen in (json.dumps(runtime), passed, json.dumps(notebook), json.dumps(bed.record("ssh"))):
        assert PORT_SECRET not in seen
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 0
    assert PORT_SECRET not in bed.log_text()


def test_without_the_port_secret_nothing_starts(bed):
    assert bed.run(HPCGW_PORT_SECRET=None) != 0
    assert "HPCGW_PORT_SECRET" in bed.log_text()
    assert bed.record("ssh") is None and bed.record("runtime") is None


def test_a_line_the_notebook_forges_reaches_the_log_only_behind_the_prefix(bed):
    bed.modes(ssh="ok", notebook="forge")
    wrapper = bed.start()
    bed.reported()
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 0
    lines = bed.log_text().splitlines()
    assert "notebook: notebook starting" in lines
    forged = [line for line in lines if "FORGED" in line]
    assert forged == [
        "notebook: 2026-01-01T00:00:00.000+0000 hpcgw-job: the hub accepted the port; FORGED",
        "notebook: evil\\x0dhpcgw-job: FORGED2",
    ]
    # Every line of the log is the wrapper's (timestamp first) or behind the prefix.
    strays = [line for line in lines if not (WRAPPER_LINE.match(line) or line.startswith("notebook: "))]
    assert not strays, strays


def test_the_notebooks_output_is_bounded_and_never_blocks_it(bed):
    # 12 MB of output before the notebook listens: the wrapper keeps reading
    # (the notebook still starts and is reported), logs at most its limit.
    bed.modes(ssh="ok", notebook="flood")
    wrapper = bed.start()
    report = bed.reported()
    assert report["notebook_listening"] is True
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 0
    assert not alive(bed.record("notebook")["pid"])
    text = bed.log_text()
    assert len(text) < 4 * 1024 * 1024 + 64 * 1024
    assert text.count("the rest of it is not logged") == 1
    assert "LAST LINE OF THE FLOOD" not in text and "after the flood" not in text
    assert "the hub accepted the port" in text
