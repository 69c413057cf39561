#!/usr/bin/env python3
"""Tables and a plot of how `teleo bench` figures grow with the store.

    python3 docs/perf/growth.py bench-20k.json bench-100k.json bench-500k.json \
        --svg docs/perf/growth.svg > tables.md

Each input is the output of `teleo --json bench ...` (one JSON object per line). Prints
Markdown tables (per-embedder recall and p50, and the store-wide figures) and writes an SVG
plot of the p50 of each index kind, fused search and the bare usearch baseline against the
number of arrays (both axes logarithmic). Standard library only.
"""

import json
import math
import sys
from collections import defaultdict


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def metric(lines, name, **match):
    for m in lines:
        if m.get("metric") == name and all(m.get(k) == v for k, v in match.items()):
            return m
    return None


def value(lines, name, **match):
    m = metric(lines, name, **match)
    return None if m is None else m.get("value")


def fmt_us(us):
    if us is None:
        return "-"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def embedders(lines):
    seen = []
    for m in lines:
        if m.get("metric") == "search_p50_us" and m["embedder"] not in seen:
            seen.append(m["embedder"])
    return seen


def tables(runs):
    sizes = [metric(r, "dataset")["n"] for r in runs]
    head = "| embedder | index | " + " | ".join(f"{n:,}: recall@10 / p50 / QPS 2 vs 1" for n in sizes) + " |"
    out = [head, "|" + "---|" * (2 + len(runs))]
    for e in embedders(runs[0]):
        kind = metric(runs[0], "search_p50_us", embedder=e)["index"]
        cells = []
        for r in runs:
            recall = value(r, "recall_at_10", embedder=e)
            p50 = value(r, "search_p50_us", embedder=e)
            q2 = value(r, "search_qps", embedder=e, clients=2)
            q1 = value(r, "search_qps", embedder=e, clients=1)
            scale = f"{q2 / q1:.2f}×" if q1 and q2 else "-"
            cells.append(f"{fmt(recall, '.3f')} / {fmt_us(p50)} / {scale}")
        out.append(f"| {e} | {kind} | " + " | ".join(cells) + " |")
    out.append("")
    rows = [
        ("ingest (arrays/s)", lambda r: fmt(value(r, "ingest_arrays_per_s"), ".0f")),
        ("peak RSS, ingest + search (GB)", lambda r: fmt((value(r, "peak_rss_ingest_search_bytes") or 0) / 1e9, ".2f")),
        ("peak RSS, whole run (GB)", lambda r: fmt((value(r, "peak_rss_bytes") or 0) / 1e9, ".2f")),
        ("index memory (GiB)", lambda r: fmt((value(r, "index_memory_bytes") or 0) / 2**30, ".2f")),
        ("disk per array (KiB)", lambda r: fmt((value(r, "disk_bytes_per_array") or 0) / 1024, ".1f")),
        ("get p50", lambda r: fmt_us(value(r, "get_p50_us"))),
        ("fused RRF p50 / p99", lambda r: f"{fmt_us(value(r, 'fused_rrf_p50_us'))} / {fmt_us(value(r, 'fused_rrf_p99_us'))}"),
        ("fused RRF recall@10 vs exhaustive", lambda r: fmt(value(r, "fused_rrf_recall_at_10"), ".3f")),
        ("fused weighted p50", lambda r: fmt_us(value(r, "fused_weighted_p50_us"))),
        ("fused weighted recall@10 vs exhaustive", lambda r: fmt(value(r, "fused_weighted_recall_at_10"), ".3f")),
        ("bare usearch E1 p50 (store p50, ratio)", bare),
        ("E1 p99 idle / while a writer commits", under_writes),
        ("reopen to first search (in process)", lambda r: fmt(value(r, "reopen_to_first_result_ms"), ".0f") + " ms"),
        ("fresh process: open + first search + exit", lambda r: fmt(value(r, "fresh_process_first_search_ms"), ".0f") + " ms"),
        ("close (snapshots)", lambda r: fmt(value(r, "close_ms"), ".0f") + " ms"),
    ]
    out.append("| figure | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    out.append("|" + "---|" * (1 + len(runs)))
    for name, get in rows:
        out.append(f"| {name} | " + " | ".join(get(r) for r in runs) + " |")
    return "\n".join(out)


def bare(r):
    m = metric(r, "bare_usearch_p50_us")
    if m is None:
        return "-"
    return f"{fmt_us(m['value'])} ({fmt_us(m['store_p50_us'])}, {m['store_over_bare']:.2f}×, ef {m['ef']})"


def under_writes(r):
    m = metric(r, "search_p99_under_writes_us")
    if m is None:
        return "-"
    idle = value(r, "search_p99_us", embedder=m["embedder"])
    ratio = f", {m['value'] / idle:.2f}×" if idle else ""
    return f"{fmt_us(idle)} / {fmt_us(m['value'])}{ratio} ({m['commits']} commits)"


def series(runs):
    """p50 (µs) per series name, as (n, p50) points."""
    out = defaultdict(list)
    for r in runs:
        n = metric(r, "dataset")["n"]
        by_kind = defaultdict(list)
        for m in r:
            if m.get("metric") == "search_p50_us":
                by_kind[m["index"]].append(m["value"])
        for kind, values in by_kind.items():
            out[f"{kind} (median of {len(values)})"].append((n, sorted(values)[len(values) // 2]))
        for name, key in [("fused RRF", "fused_rrf_p50_us"), ("fused weighted", "fused_weighted_p50_us"),
                          ("bare usearch E1", "bare_usearch_p50_us")]:
            v = value(r, key)
            if v is not None:
                out[name].append((n, v))
    return out


def svg(runs, path):
    data = series(runs)
    width, height, left, bottom, top, right = 760, 440, 70, 50, 20, 230
    xs = [n for pts in data.values() for n, _ in pts]
    ys = [v for pts in data.values() for _, v in pts]
    x0, x1 = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    px = lambda n: left + (math.log10(n) - x0) / (x1 - x0) * (width - left - right)
    py = lambda v: height - bottom - (math.log10(v) - y0) / (y1 - y0) * (height - bottom - top)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for e in range(y0, y1 + 1):
        y = py(10 ** e)
        label = f"{10 ** e / 1000:g} ms" if e >= 3 else f"{10 ** e:g} µs"
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for n in sorted(set(xs)):
        x = px(n)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">{n:,}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle">arrays in the store</text>')
    parts.append(f'<text x="14" y="{(top + height - bottom) / 2}" transform="rotate(-90 14 {(top + height - bottom) / 2})" text-anchor="middle">search p50, one client</text>')
    for i, (name, pts) in enumerate(sorted(data.items())):
        c = colours[i % len(colours)]
        pts = sorted(pts)
        path_d = " ".join(f"{'M' if j == 0 else 'L'}{px(n):.1f},{py(v):.1f}" for j, (n, v) in enumerate(pts))
        parts.append(f'<path d="{path_d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for n, v in pts:
            parts.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{c}"/>')
        ly = top + 10 + 18 * i
        parts.append(f'<line x1="{width - right + 15}" y1="{ly}" x2="{width - right + 35}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        parts.append(f'<text x="{width - right + 40}" y="{ly + 4}">{name}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main(argv):
    paths, out_svg = [], None
    it = iter(argv)
    for a in it:
        if a == "--svg":
            out_svg = next(it, None)
        else:
            paths.append(a)
    if not paths:
        sys.exit(__doc__)
    runs = sorted((load(p) for p in paths), key=lambda r: metric(r, "dataset")["n"])
    print(tables(runs))
    if out_svg:
        svg(runs, out_svg)


if __name__ == "__main__":
    main(sys.argv[1:])
