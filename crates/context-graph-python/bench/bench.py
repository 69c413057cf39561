"""Ingest and search through the Python package, on a dataset of the benchmark layout
(`teleo gen --out DIR` writes one; docs/CLI.md describes the layout), to set beside `teleo bench --data DIR`
on the same data in the same sitting.

    python bench.py --data DIR [--batch 256] [--searches 1000] [--work-dir DIR]

Prints one JSON object: ingest arrays/s (put_many, one commit per batch, buffered durability
as `teleo bench` uses), and per embedder the p50/p99 of `Store.search` (k 10, the store's
default search parameters) and recall@10 against the dataset's ground truth; and fused RRF
over every embedder; and searches per second from one and from two Python threads. Times
are wall clock around each Python call: conversion of the query
from numpy, the store's search, and the results' conversion back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import teleo


def load(dir: Path, meta: dict, n: int, with_ids: bool):
    """Per embedder: a callable giving row i's slot value, and for dense a 2-D matrix."""
    cols = {}
    for e in meta["embedders"]:
        name, kind = e["name"], e["kind"]
        if kind == "dense":
            cols[name] = ("dense", np.fromfile(dir / f"{name}.f32", dtype="<f4").reshape(n, e["dim"]))
        elif kind == "sparse":
            ptr = np.fromfile(dir / f"{name}.indptr", dtype="<u8")
            ind = np.fromfile(dir / f"{name}.indices", dtype="<u4")
            val = np.fromfile(dir / f"{name}.values", dtype="<f4")
            cols[name] = ("sparse", [(ind[ptr[i]:ptr[i + 1]], val[ptr[i]:ptr[i + 1]]) for i in range(n)])
        elif kind == "token":
            off = np.fromfile(dir / f"{name}.offsets", dtype="<u8")
            data = np.fromfile(dir / f"{name}.f32", dtype="<f4").reshape(-1, e["dim"])
            cols[name] = ("token", [data[off[i]:off[i + 1]] for i in range(n)])
        elif kind == "binary":
            width = (e["bits"] + 7) // 8
            raw = np.fromfile(dir / f"{name}.bits", dtype=np.uint8).reshape(n, width)
            cols[name] = ("binary", raw)
    ids = None
    if with_ids:
        raw = np.fromfile(dir / "ids.bin", dtype=np.uint8).reshape(n, 16)
        import uuid

        ids = [str(uuid.UUID(bytes=bytes(r))) for r in raw]
    return cols, ids


def schema_of(meta: dict) -> dict:
    shapes = {}
    for e in meta["embedders"]:
        kind = e["kind"]
        shapes[e["name"]] = ({"Dense": e["dim"]} if kind == "dense" else
                             {"Sparse": {"vocab_size": e["dim"]}} if kind == "sparse" else
                             {"TokenLevel": {"per_token": e["dim"]}} if kind == "token" else
                             {"Binary": {"bits": e["bits"]}})
    return {"slots": [shapes[f"E{i}"] for i in range(1, 14)]}


def value(col, i):
    kind, data = col
    if kind == "binary":
        return data[i].tobytes()
    return data[i]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--searches", type=int, default=1000)
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--ef", type=int, default=None,
                    help="search breadth of the dense and token-level searches (the ef `teleo bench` chose)")
    args = ap.parse_args()
    meta = json.loads((args.data / "meta.json").read_text())
    n, nq, gt_k = meta["n"], meta["queries"], meta["gt_k"]
    cols, ids = load(args.data, meta, n, True)
    qcols, _ = load(args.data / "q", meta, nq, False)
    contents = (args.data / "content.txt").read_text().splitlines()
    namespaces = (args.data / "namespaces.txt").read_text().splitlines()
    work = Path(tempfile.mkdtemp(dir=args.work_dir, prefix="teleo-pybench-"))
    out = {"n": n, "queries": nq, "batch": args.batch, "ef": args.ef}
    try:
        store = teleo.Store(work / "store", schema=schema_of(meta), durability="buffered")
        started = time.perf_counter()
        for s in range(0, n, args.batch):
            e = min(n, s + args.batch)
            # Records of one batch have different namespaces: a list of Arrays, one commit.
            arrays = [teleo.Array({k: value(c, i) for k, c in cols.items()}, id=ids[i], content=contents[i],
                                  namespace=namespaces[i]) for i in range(s, e)]
            store.put(arrays)
        ingest_s = time.perf_counter() - started
        out["ingest_arrays_per_s"] = round(n / ingest_s, 1)
        print(f"ingested {n} arrays in {ingest_s:.1f} s", file=sys.stderr)
        row_of = {i: r for r, i in enumerate(ids)}
        per = {}
        for name, col in qcols.items():
            gt_path = args.data / "gt" / f"{name}.top100"
            if not gt_path.exists():
                continue
            gt = np.fromfile(gt_path, dtype="<u4").reshape(nq, gt_k)
            lat, hits_ok = [], 0
            for j in range(args.searches):
                q = j % nq
                v = value(col, q)
                t = time.perf_counter()
                hits = store.search(name, v, 10, ef=args.ef if col[0] in ("dense", "token") else None)
                lat.append(time.perf_counter() - t)
                if j < nq:
                    truth = set(gt[q, :10].tolist())
                    hits_ok += sum(1 for h in hits if row_of[h.id] in truth)
            lat_us = np.array(lat) * 1e6
            per[name] = {"p50_us": round(float(np.percentile(lat_us, 50)), 1),
                         "p99_us": round(float(np.percentile(lat_us, 99)), 1),
                         "recall_at_10": round(hits_ok / (10 * min(nq, args.searches)), 4)}
            print(name, per[name], file=sys.stderr)
        out["search"] = per
        # Searches per second from 1 and from 2 Python threads sharing the store: the store
        # releases the interpreter, so two threads should approach twice one.
        import threading

        for name in [e for e in ("E1", "E13") if e in qcols]:
            col = qcols[name]
            qps = {}
            for threads in (1, 2):
                per_thread = max(1, args.searches // threads)

                def run(offset, col=col, name=name, per_thread=per_thread):
                    for j in range(per_thread):
                        store.search(name, value(col, (offset + j) % nq), 10,
                                     ef=args.ef if col[0] in ("dense", "token") else None)

                workers = [threading.Thread(target=run, args=(t * 7,)) for t in range(threads)]
                t0 = time.perf_counter()
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                qps[threads] = per_thread * threads / (time.perf_counter() - t0)
            per[name]["qps_1_thread"] = round(qps[1], 1)
            per[name]["qps_2_threads"] = round(qps[2], 1)
            print(name, f"QPS 1 thread {qps[1]:.0f}, 2 threads {qps[2]:.0f} ({qps[2] / qps[1]:.2f}x)", file=sys.stderr)
        lat = []
        for j in range(min(args.searches, 300)):
            q = j % nq
            query = {name: value(col, q) for name, col in qcols.items()}
            t = time.perf_counter()
            store.search_fused(query, 10, ef=args.ef)
            lat.append(time.perf_counter() - t)
        lat_ms = np.array(lat) * 1e3
        out["fused_rrf_p50_ms"] = round(float(np.percentile(lat_ms, 50)), 2)
        out["fused_rrf_p99_ms"] = round(float(np.percentile(lat_ms, 99)), 2)
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
