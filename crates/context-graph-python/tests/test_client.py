"""teleo.Client against a real `teleo serve` on loopback: the Store's calls over HTTP, with the
same values and the same exceptions."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import uuid

import numpy as np
import pytest

import teleo
from conftest import SCHEMA, arrays, slots


class Server:
    def __init__(self, teleo_bin, tmp_path):
        self.db = tmp_path / "served"
        (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
        run = lambda *args: subprocess.run([teleo_bin, "--db", str(self.db), *args], check=True,
                                           capture_output=True, text=True, timeout=120).stdout.strip()
        run("init", "--schema", str(tmp_path / "schema.json"))
        self.admin = run("keys", "create", "--role", "admin")
        self.reader_a = run("keys", "create", "--role", "read", "--namespace", "a")
        self.proc = subprocess.Popen(
            [teleo_bin, "--db", str(self.db), "serve", "--listen", "127.0.0.1:0",
             "--checkpoint-dir", str(tmp_path / "checkpoints")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(timeout=120)
        assert line and line[0].startswith("127.0.0.1:"), f"server did not start: {line}"
        self.url = "http://" + line[0].strip()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(timeout=60) == 0, self.proc.stderr.read()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def server(teleo_bin, tmp_path):
    s = Server(teleo_bin, tmp_path)
    yield s
    s.stop()


def test_the_client_does_what_the_store_does_over_http(server):
    c = teleo.Client(server.url, server.admin)
    assert c.schema["slots"] == SCHEMA["slots"]
    one = c.put(teleo.Array(slots(1), content="one", namespace="a", tags=["t"]))
    ids = c.put(arrays(5, start=10, namespace="b"))
    bulk = c.put_many({"E1": np.stack([slots(20 + i)["E1"] for i in range(3)]),
                       "E9": np.stack([np.frombuffer(slots(20 + i)["E9"], np.uint8) for i in range(3)]),
                       **{e: [slots(20 + i)[e] for i in range(3)] for e in slots(0) if e not in ("E1", "E9")}},
                      namespace="b")
    assert c.get(bulk[1]).embeddings["E9"] == slots(21)["E9"]
    assert c.count() == 9 and c.count({"namespace": "b"}) == 8
    got = c.get(one)
    want = slots(1)
    for name, value in want.items():
        if isinstance(value, tuple):
            np.testing.assert_array_equal(got.embeddings[name][0], value[0])
            np.testing.assert_array_equal(got.embeddings[name][1], value[1])
        elif isinstance(value, bytes):
            assert got.embeddings[name] == value
        else:
            assert got.embeddings[name].dtype == np.float32 and got.embeddings[name].flags.writeable
            np.testing.assert_array_equal(got.embeddings[name], value)
    assert (got.content, got.namespace, got.tags) == ("one", "a", ["t"])
    assert set(c.get(one, slots=["E1"]).embeddings) == {"E1"}
    hits = c.search("E12", want["E12"], k=3, with_metadata=True)
    assert hits[0].id == one and hits[0].array.content == "one"
    fused = c.search_fused({"E1": want["E1"], "E6": want["E6"]}, k=2,
                           comparison={"type": "weighted", "weights": {"E1": 0.5, "E6": 0.5}})
    assert fused[0].id == one and set(fused[0].scores) == {"E1", "E6"}
    c.update(one, content="changed", tags=["u"])
    again = c.get(one, slots="none")
    assert (again.content, again.tags, again.namespace) == ("changed", ["u"], "a")
    page, after = c.scroll({"namespace": "b"}, limit=5)
    assert len(page) == 5 and after is not None
    assert c.delete(ids[:2]) == 2 and c.delete_where({"namespace": "b"}) == 6
    assert c.count() == 1
    assert c.stats()["total_arrays"] == 1
    assert "ckpt" in c.checkpoint("ckpt")
    assert bulk and len(bulk) == 3


def test_server_errors_arrive_as_the_same_exceptions(server):
    c = teleo.Client(server.url, server.admin)
    ghost = str(uuid.uuid4())
    with pytest.raises(teleo.NotFoundError) as e:
        c.get(ghost)
    assert e.value.status == 404 and e.value.code == "not_found"
    bad = slots(2)
    bad["E1"] = np.ones(3, dtype=np.float32)
    with pytest.raises(teleo.ValidationError) as e:
        c.put(arrays(2) + [teleo.Array(bad)])
    assert e.value.status == 422 and e.value.embedder == "E1"
    assert c.count() == 0  # the batch failed whole
    f64 = slots(3)
    f64["E2"] = f64["E2"].astype(np.float64)
    with pytest.raises(teleo.ValidationError, match="cast=True"):
        c.put(teleo.Array(f64))
    with pytest.raises(teleo.AuthError) as e:
        teleo.Client(server.url, "not-a-key")
    assert e.value.status == 401
    reader = teleo.Client(server.url, server.reader_a)
    with pytest.raises(teleo.AuthError):
        reader.put(teleo.Array(slots(4), namespace="a"))
    c.put(teleo.Array(slots(5), namespace="b"))
    assert reader.count() == 0  # confined to namespace a: b's array is invisible
    with pytest.raises(teleo.TextPipelineError):
        c.put_text("text needs the store's pipeline")
    with pytest.raises(teleo.UnavailableError):
        teleo.Client("http://127.0.0.1:9", server.admin, timeout=2)
    c.close()
    with pytest.raises(teleo.StoreClosedError):
        c.count()
