"""The interpreter is released while the store works: Python threads search while another
writes, and make progress during a long store call."""

from __future__ import annotations

import threading
import time

import numpy as np

import teleo
from conftest import SCHEMA, arrays, slots


def test_threads_search_while_another_writes_and_every_write_lands(tmp_path):
    with teleo.Store(tmp_path / "s", schema=SCHEMA, durability="buffered") as store:
        first = store.put(arrays(50))
        queries = [store.get(i).embeddings for i in first[:10]]
        errors, results = [], []
        writing = threading.Event()
        writing.set()

        def writer():
            try:
                for batch in range(20):
                    store.put(arrays(10, start=1000 + batch * 10))
            except Exception as e:  # pragma: no cover - the assertion below reports it
                errors.append(e)
            finally:
                writing.clear()

        def searcher(n):
            try:
                rounds = 0
                while writing.is_set() or rounds < 5:
                    j = (n + rounds) % len(queries)
                    q = queries[j]
                    hits = store.search_fused({"E1": q["E1"], "E13": q["E13"]}, k=5)
                    results.append((first[j], hits[0].id))
                    rounds += 1
            except Exception as e:  # pragma: no cover
                errors.append(e)

        threads = [threading.Thread(target=writer)] + [threading.Thread(target=searcher, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert store.count() == 250
        # every search, whatever commit it saw, found its own query's array first
        assert results and all(want == got for want, got in results), results[:5]


def test_python_runs_while_a_store_call_is_in_progress(tmp_path):
    """A store call that held the interpreter would stop every other Python thread for its
    whole duration; the counter thread must advance while the big commit runs."""
    with teleo.Store(tmp_path / "s", schema=SCHEMA, max_batch=5000) as store:
        batch = arrays(3000)
        ticks = []
        inside = threading.Event()
        done = threading.Event()

        def counter():
            while not done.is_set():
                if inside.is_set():
                    ticks.append(time.perf_counter())
                time.sleep(0)

        t = threading.Thread(target=counter)
        t.start()
        try:
            # The conversion from numpy happens with the interpreter held; the commit without.
            core = batch
            inside.set()
            started = time.perf_counter()
            store.put(core)
            ended = time.perf_counter()
            inside.clear()
        finally:
            done.set()
            t.join()
        during = [x for x in ticks if started < x < ended]
        assert store.count() == 3000
        assert len(during) > 10, f"{len(during)} ticks of another thread during a {ended - started:.3f} s put"
