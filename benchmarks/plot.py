"""An SVG plot of a benchmarks/scale.py result (no plotting library needed):
left, slurmctld's RPCs per minute against running servers, one line per
spawner; right, spawn latency p50 and p95 (and failures) against servers
started at once.

    python benchmarks/plot.py benchmarks/results/scale-<date>.json   # writes the .svg beside it
"""

from __future__ import annotations

import json
import pathlib
import sys
from xml.sax.saxutils import escape

COLOURS = {"gateway": "#1f77b4", "batchspawner": "#d62728"}
W, H, PAD = 380, 260, 48


def _scale(values: list[float], low: float, high: float):
    top = max(values + [1e-9])
    return lambda v: high - (v / top) * (high - low), top


def _panel(x0: int, title: str, xlabel: str, ylabel: str, series: dict[str, list[tuple[float, float, str]]]) -> list[str]:
    """series: name -> [(x, y, dash)], x categorical (in order), y from 0."""
    out = [f'<g transform="translate({x0},0)">',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="black"/>',
           f'<line x1="{PAD}" y1="30" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
           f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle">{escape(xlabel)}</text>',
           f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">{escape(ylabel)}</text>']
    xs = sorted({x for points in series.values() for x, _y, _d in points})
    ys = [y for points in series.values() for _x, y, _d in points]
    if not xs:
        return [*out, "</g>"]
    y_of, top = _scale(ys, 30, H - PAD)
    step = (W - 10 - PAD - 20) / max(1, len(xs) - 1)
    x_of = {x: PAD + 10 + i * step for i, x in enumerate(xs)}
    for x in xs:
        out.append(f'<text x="{x_of[x]:.0f}" y="{H - PAD + 16}" text-anchor="middle">{x:g}</text>')
    for fraction in (0, 0.5, 1):
        out.append(f'<text x="{PAD - 4}" y="{y_of(top * fraction) + 4:.0f}" text-anchor="end" font-size="10">'
                   f'{top * fraction:.3g}</text>')
    legend = 0
    for name, points in series.items():
        colour = COLOURS.get(name.split()[0], "#2ca02c")
        dash = points[0][2] if points else ""
        path = " ".join(f"{x_of[x]:.1f},{y_of(y):.1f}" for x, y, _d in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" '
                   f'stroke-dasharray="{dash}"/>')
        for x, y, _d in points:
            out.append(f'<circle cx="{x_of[x]:.1f}" cy="{y_of(y):.1f}" r="3" fill="{colour}"/>')
        out.append(f'<text x="{PAD + 8}" y="{42 + 14 * legend}" fill="{colour}" font-size="11">{escape(name)}</text>')
        legend += 1
    return [*out, "</g>"]


def write_svg(document: dict, path: pathlib.Path) -> None:
    results = document["results"]
    rpc = {f"{name}": [(float(n), m["total_per_min"], "") for n, m in sorted(r["rpc"].items(), key=lambda i: int(i[0]))]
           for name, r in results.items()}
    latency: dict[str, list[tuple[float, float, str]]] = {}
    failures = []
    for name, r in results.items():
        spawns = sorted(r["spawns"].items(), key=lambda i: int(i[0]))
        for key, dash in (("p50", ""), ("p95", "5,3")):
            latency[f"{name} {key}"] = [(float(n), s["spawn"][key] or 0, dash) for n, s in spawns]
        failures += [f"{name}: {s['spawn']['failures']}/{s['spawn']['n']} failed at {n}" for n, s in spawns]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 20 + 14 * len(failures)}" '
             'font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             *_panel(0, "slurmctld RPCs per minute (sdiag)", "running servers", "RPC / min", rpc),
             *_panel(W, "spawn latency, servers started at once", "spawns at once", "seconds", latency)]
    for i, line in enumerate(failures):
        parts.append(f'<text x="{W + PAD}" y="{H + 14 + 14 * i}" font-size="11">{escape(line)}</text>')
    parts.append(f'<text x="{PAD}" y="{H + 14}" font-size="11">bed {escape(str(document.get("testbed")))}, '
                 f'commit {escape(str(document.get("commit")))}, {document.get("cpus")} CPUs</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


if __name__ == "__main__":
    source = pathlib.Path(sys.argv[1])
    write_svg(json.loads(source.read_text()), source.with_suffix(".svg"))
    print(f"written: {source.with_suffix('.svg')}")
