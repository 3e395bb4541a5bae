"""benchmarks/scale.py's arithmetic: sdiag's RPC counts read by section, and
nearest-rank percentiles; the SVG plot is well-formed XML."""

from __future__ import annotations

import pathlib
import sys
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale  # noqa: E402
from plot import write_svg  # noqa: E402

SDIAG = """*******************************************************
sdiag output at Mon Nov 30 19:40:01 2026 (1764531601)
Server thread count:  1
Remote Procedure Call statistics by message type
\tREQUEST_JOB_INFO_SINGLE                 ( 2021) count:40     ave_time:310    total_time:12400
\tREQUEST_PARTITION_INFO                  ( 2009) count:3      ave_time:568    total_time:1705
\tMESSAGE_NODE_REGISTRATION_STATUS        ( 1002) count:2      ave_time:154    total_time:309

Remote Procedure Call statistics by user
\troot            (       0) count:5      ave_time:462    total_time:1849
\tgateway         (    1000) count:40     ave_time:1971   total_time:7885

Pending RPC statistics
\tNo pending RPCs
"""


def test_sdiag_counts_by_type_and_by_user():
    counts = scale.parse_sdiag(SDIAG)
    assert counts["by_type"] == {"REQUEST_JOB_INFO_SINGLE": 40, "REQUEST_PARTITION_INFO": 3,
                                 "MESSAGE_NODE_REGISTRATION_STATUS": 2}
    assert counts["by_user"] == {"root": 5, "gateway": 40}


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert scale.percentile(values, 0.5) == 10
    assert scale.percentile(values, 0.95) == 19
    assert scale.percentile([3.0], 0.95) == 3
    assert scale.percentile([], 0.5) is None
    summary = scale.latency_summary([2.0, 1.0, 4.0], ["not ready in 330 s"])
    assert (summary["n"], summary["failures"], summary["p50"], summary["max"]) == (4, 1, 2.0, 4.0)


def test_the_plot_is_svg(tmp_path):
    rpc = {"total_per_min": 10.0, "by_user_per_min": {}, "running": 1}
    spawn = {"spawn": {"p50": 4.0, "p95": 6.0, "failures": 1, "n": 3}, "stop": {"p50": 1.0, "p95": 2.0}}
    document = {"testbed": "t", "commit": "abc", "cpus": 2, "results": {
        "gateway": {"rpc": {"1": rpc, "3": {**rpc, "total_per_min": 12.0}}, "spawns": {"3": spawn}},
        "batchspawner": {"rpc": {"1": rpc, "3": {**rpc, "total_per_min": 30.0}}, "spawns": {"3": spawn}}}}
    out = tmp_path / "plot.svg"
    write_svg(document, out)
    root = ET.fromstring(out.read_text())
    assert root.tag.endswith("svg")
    assert len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) == 6  # 2 RPC lines, 4 latency lines
    assert "batchspawner: 1/3 failed at 3" in out.read_text()
