"""teleo.Store: every slot kind through numpy, every refusal as its exception with nothing
written, atomic batches, search and its filters, reopen."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

import teleo
from conftest import DIMS, SCHEMA, arrays, slots


def assert_same_slots(got, want):
    assert set(got) == set(want)
    for name, value in want.items():
        g = got[name]
        if isinstance(value, tuple):
            assert g[0].dtype == np.uint32 and g[1].dtype == np.float32
            np.testing.assert_array_equal(g[0], value[0])
            np.testing.assert_array_equal(g[1], value[1])
        elif isinstance(value, bytes):
            assert g == value
        else:
            assert g.dtype == np.float32 and g.shape == value.shape
            np.testing.assert_array_equal(g, value)


def test_every_slot_kind_round_trips_through_numpy(store):
    want = slots(1)
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    a = teleo.Array(want, content="hello", namespace="ns", memory_type="note", tags=["x", "y"],
                    custom={"k": "v"}, created_at=created, source_hash=42)
    id_ = store.put(a)
    assert uuid.UUID(id_)
    got = store.get(id_)
    assert_same_slots(got.embeddings, want)
    assert (got.id, got.content, got.namespace, got.memory_type) == (id_, "hello", "ns", "note")
    assert (got.tags, got.custom, got.created_at, got.source_hash) == (["x", "y"], {"k": "v"}, created, 42)
    # an id given as uuid.UUID is the same id
    assert store.get(uuid.UUID(id_)).id == id_


def test_reads_hand_over_the_stores_buffers_without_a_copy(store):
    """The arrays wrap the vectors Rust read (numpy did not allocate and fill them). A copy
    made inside Rust before the hand-over would not show here; the code has none (convert.rs)."""
    id_ = store.put(teleo.Array(slots(2)))
    got = store.get(id_).embeddings
    for value in [got["E1"], got["E12"], got["E6"][0], got["E6"][1]]:
        # An array numpy allocated and filled (a copy) owns its data; these wrap Rust's vectors.
        assert value.flags.owndata is False, value
        assert value.base is not None
    assert got["E12"].shape == (3, 4) and got["E12"].flags.c_contiguous


def test_a_projection_reads_only_the_slots_asked_for(store):
    id_ = store.put(teleo.Array(slots(3), content="c", namespace="n"))
    assert set(store.get(id_, slots=["E1", "E13"]).embeddings) == {"E1", "E13"}
    meta_only = store.get(id_, slots="none")
    assert meta_only.embeddings == {} and meta_only.content == "c" and meta_only.namespace == "n"
    assert set(store.get(id_, slots="E9").embeddings) == {"E9"}
    with pytest.raises(teleo.ValidationError):
        store.get(id_, slots=["E14"])


def test_put_many_takes_one_2d_array_per_dense_slot(store):
    n = 6
    rng = np.random.default_rng(7)
    columns = {e: rng.standard_normal((n, DIMS)).astype(np.float32) for e in SCHEMA_DENSE}
    per_array = [slots(100 + i) for i in range(n)]
    for e in ("E6", "E13", "E12"):
        columns[e] = [p[e] for p in per_array]
    columns["E9"] = np.frombuffer(b"".join(p["E9"] for p in per_array), dtype=np.uint8).reshape(n, -1)
    ids = store.put_many(columns, contents=[f"t{i}" for i in range(n)], namespace="bulk", tags=["b"])
    assert len(ids) == n and store.count({"namespace": "bulk"}) == n
    got = store.get(ids)
    assert [g.id for g in got] == ids
    for i, g in enumerate(got):
        np.testing.assert_array_equal(g.embeddings["E1"], columns["E1"][i])
        assert g.embeddings["E9"] == per_array[i]["E9"] and g.content == f"t{i}" and g.tags == ["b"]
    # a column of the wrong length is refused, naming the slot, and nothing is written
    columns["E5"] = columns["E5"][:3]
    with pytest.raises(teleo.ValidationError) as e:
        store.put_many(columns)
    assert e.value.embedder == "E5"
    assert store.count() == n


SCHEMA_DENSE = ["E1", "E2", "E3", "E4", "E5", "E7", "E8", "E10", "E11"]


def test_float64_is_refused_naming_the_slot_unless_cast_is_asked(store):
    s = slots(4)
    s["E7"] = s["E7"].astype(np.float64)
    with pytest.raises(teleo.ValidationError) as e:
        store.put(teleo.Array(s))
    assert e.value.embedder == "E7" and "float64" in str(e.value) and "cast=True" in str(e.value)
    assert isinstance(e.value, ValueError)
    assert store.count() == 0
    id_ = store.put(teleo.Array(s), cast=True)
    np.testing.assert_array_equal(store.get(id_).embeddings["E7"], s["E7"].astype(np.float32))
    s2 = slots(5)
    s2["E1"] = [float(x) for x in s2["E1"]]
    with pytest.raises(teleo.ValidationError, match="E1"):
        store.put(teleo.Array(s2))
    store.put(teleo.Array(s2), cast=True)


@pytest.mark.parametrize(
    "slot, value, words",
    [
        ("E1", np.ones(DIMS + 1, dtype=np.float32), "9 values, expected 8"),
        ("E1", np.full(DIMS, np.nan, dtype=np.float32), "non-finite"),
        ("E6", (np.array([5, 3], dtype=np.uint32), np.array([1.0, 1.0], dtype=np.float32)), "increasing"),
        ("E13", (np.array([500], dtype=np.uint32), np.array([1.0], dtype=np.float32)), "vocabulary size"),
        ("E6", (np.array([1, 2], dtype=np.uint32), np.array([1.0], dtype=np.float32)), "2 indices but 1 values"),
        ("E9", b"\x00", "expected 8 for 64 bits"),
        ("E12", np.ones((2, 3), dtype=np.float32), "dims_per_token is 3"),
        ("E9", "not bytes", "bytes"),
        ("E6", np.ones(3, dtype=np.float32), "pair"),
        ("E12", np.ones(4, dtype=np.float32), "2-D"),
    ],
)
def test_bad_slots_raise_validation_errors_with_their_context_and_write_nothing(store, slot, value, words):
    s = slots(6)
    s[slot] = value
    good = arrays(2, start=50)
    with pytest.raises(teleo.ValidationError) as e:
        store.put(good + [teleo.Array(s)])  # one bad array fails the whole batch
    assert e.value.embedder == slot, str(e.value)
    assert words.lower() in str(e.value).lower()
    assert e.value.reason
    assert store.count() == 0


def test_an_array_missing_a_slot_is_refused(store):
    s = slots(8)
    del s["E4"]
    with pytest.raises(teleo.ValidationError) as e:
        store.put(teleo.Array(s, id=str(uuid.uuid4())))
    assert e.value.embedder == "E4" and e.value.id is not None
    with pytest.raises(teleo.ValidationError):
        store.put(teleo.Array({"E99": np.ones(DIMS, dtype=np.float32)}))
    with pytest.raises(teleo.ValidationError):
        teleo.Array(slots(1), id="not-a-uuid")
    assert store.count() == 0


def test_a_batch_over_the_limit_is_refused_whole(tmp_path):
    with teleo.Store(tmp_path / "s", schema=SCHEMA, max_batch=4) as s:
        with pytest.raises(teleo.BatchTooLargeError) as e:
            s.put(arrays(5))
        assert (e.value.max, e.value.actual) == (4, 5)
        assert isinstance(e.value, teleo.ValidationError)
        assert s.count() == 0
        assert len(s.put(arrays(4))) == 4


def test_missing_ids_raise_not_found_and_deletes_are_all_or_nothing(store):
    ids = store.put(arrays(3))
    ghost = str(uuid.uuid4())
    with pytest.raises(teleo.NotFoundError) as e:
        store.get(ghost)
    assert e.value.id == ghost and isinstance(e.value, LookupError)
    with pytest.raises(teleo.NotFoundError):
        store.get([ids[0], ghost])
    assert [a.id for a in store.get([ghost, ids[1]], missing_ok=True)] == [ids[1]]
    with pytest.raises(teleo.NotFoundError):
        store.delete([ids[0], ghost])
    assert store.count() == 3  # nothing deleted
    assert store.delete([ids[0], ghost], missing_ok=True) == 1
    assert store.delete(ids[1]) == 1
    assert store.count() == 1


def test_search_one_embedder_with_filters_and_parameters(store):
    ns_a = store.put(arrays(5, namespace="a", tags=["t"]))
    store.put(arrays(5, start=5, namespace="b"))
    query = store.get(ns_a[2]).embeddings
    for slot in ["E1", "E6", "E9", "E12"]:
        hits = store.search(slot, query[slot], k=3)
        assert hits[0].id == ns_a[2], slot
        assert [h.rank for h in hits] == [1, 2, 3]
        assert set(hits[0].scores) == {slot}
    # MaxSim sums, over the query's 3 unit-length tokens, the best cosine in the document
    assert hits[0].scores["E12"] == pytest.approx(3.0, abs=1e-4)
    only_b = store.search("E1", query["E1"], k=10, filter={"namespace": "b"}, ef=64)
    assert len(only_b) == 5 and ns_a[2] not in {h.id for h in only_b}
    tagged = store.search("E1", query["E1"], k=10, filter={"tags": ["t"], "exclude_ids": [ns_a[2]]})
    assert {h.id for h in tagged} == set(ns_a) - {ns_a[2]}
    with_meta = store.search("E1", query["E1"], k=1, with_metadata=True)
    assert with_meta[0].array.content == "memory 2" and with_meta[0].array.embeddings == {}
    later = store.search("E1", query["E1"], k=10,
                         filter={"created_after": datetime.now(timezone.utc) + timedelta(hours=1)})
    assert later == []
    with pytest.raises(teleo.ValidationError, match="namepsace"):
        store.search("E1", query["E1"], filter={"namepsace": "a"})
    with pytest.raises(teleo.ValidationError):
        store.search("E1", query["E1"], k=0)
    with pytest.raises(teleo.ValidationError):
        store.search("E1", query["E1"], k=10**9)
    with pytest.raises(teleo.ValidationError):
        store.search("E1", query["E1"], ef=0)


def test_fused_search_takes_every_comparison_type(store):
    ids = store.put(arrays(8))
    q = store.get(ids[4]).embeddings
    for comparison in [None, "rrf", "semantic", "lexical", "E13",
                       {"type": "rrf", "k": 10, "weights": {"E1": 0.5, "E6": 0.5}},
                       {"type": "weighted", "weights": {"E1": 0.25, "E9": 0.25, "E12": 0.25, "E13": 0.25}},
                       {"type": "group", "group": "temporal"}, {"type": "single", "embedder": "E2"}]:
        hits = store.search_fused(q, k=3, comparison=comparison)
        assert hits[0].id == ids[4], comparison
    weighted = store.search_fused({"E1": q["E1"], "E9": q["E9"]}, k=2,
                                  comparison={"type": "weighted", "weights": {"E1": 0.5, "E9": 0.5}})
    assert set(weighted[0].scores) == {"E1", "E9"}
    assert weighted[0].score == pytest.approx(1.0, abs=1e-5)
    for bad in ["nonsense", {"type": "weighted"}, {"type": "weighted", "weights": {"E1": 0.7}},
                {"type": "rrf", "weights": {"E1": 1.0}, "extra": 1}, {"type": "sum"}, 42]:
        with pytest.raises(teleo.ValidationError):
            store.search_fused(q, comparison=bad)


def test_search_defaults_are_open_options(tmp_path):
    with teleo.Store(tmp_path / "s", schema=SCHEMA, search_overfetch=1, fusion_depth=1,
                     rescore_factor=1) as shallow:
        ids = shallow.put(arrays(8))
        q = shallow.get(ids[2]).embeddings
        assert shallow.search_fused(q, k=3)[0].id == ids[2]
    for bad in [{"fusion_depth": -1}, {"fusion_depth": "deep"}]:
        with pytest.raises((OverflowError, TypeError)):
            teleo.Store(tmp_path / "t", schema=SCHEMA, **bad)


def test_count_scroll_update_and_delete_where(store):
    ids = store.put(arrays(7, namespace="x", memory_type="fact"))
    store.put(arrays(3, start=7, namespace="y"))
    assert store.count() == 10 and store.count({"namespace": "x", "memory_types": ["fact"]}) == 7
    seen, after = [], None
    while True:
        page, after = store.scroll({"namespace": "x"}, after=after, limit=3)
        seen += [a.id for a in page]
        assert all(a.embeddings == {} for a in page)
        if after is None:
            break
    assert sorted(seen) == sorted(ids)
    page, _ = store.scroll(limit=2, slots=["E1"])
    assert set(page[0].embeddings) == {"E1"}

    new_e1 = np.ones(DIMS, dtype=np.float32)
    store.update(ids[0], content="changed", tags=["new"], embeddings={"E1": new_e1})
    a = store.get(ids[0])
    assert (a.content, a.tags, a.memory_type, a.namespace) == ("changed", ["new"], "fact", "x")
    np.testing.assert_array_equal(a.embeddings["E1"], new_e1)
    assert store.search("E1", new_e1, k=1)[0].id == ids[0]
    store.update(ids[0], content=None, memory_type=None)
    a = store.get(ids[0], slots="none")
    assert a.content is None and a.memory_type is None and a.tags == ["new"]
    with pytest.raises(teleo.ValidationError):
        store.update(ids[0], namespace="elsewhere")
    with pytest.raises(teleo.ValidationError):
        store.update(ids[0], colour="red")
    with pytest.raises(teleo.NotFoundError):
        store.update(str(uuid.uuid4()), content="x")
    before = store.get(ids[1])
    with pytest.raises(teleo.ValidationError):
        store.update(ids[1], content="not this", embeddings={"E1": np.ones(3, dtype=np.float32)})
    after = store.get(ids[1])
    assert after.content == "memory 1"
    np.testing.assert_array_equal(after.embeddings["E1"], before.embeddings["E1"])
    with pytest.raises(teleo.ValidationError):
        store.update(ids[1], tags="one-string")

    with pytest.raises(teleo.ValidationError):
        store.delete_where({})
    assert store.delete_where({"namespace": "y"}) == 3
    assert store.count() == 7


def test_the_store_reopens_with_its_data_and_schema(tmp_path):
    path = tmp_path / "s"
    with teleo.Store(path, schema=SCHEMA) as s:
        ids = s.put(arrays(20))
        stats = s.stats()
        assert stats["total_arrays"] == 20 and len(stats["indices"]) == 13
        cp = s.checkpoint(tmp_path / "copy")
    assert s.closed
    with pytest.raises(teleo.StoreClosedError):
        s.count()
    with teleo.Store(path) as again:  # no schema: the stored one
        assert again.count() == 20
        assert again.schema["slots"] == SCHEMA["slots"]
        q = again.get(ids[7]).embeddings["E1"]
        assert again.search("E1", q, k=1)[0].id == ids[7]
    with teleo.Store(cp) as copy:
        assert copy.count() == 20
    with pytest.raises(teleo.NotFoundError):
        teleo.Store(tmp_path / "nothing-here", create=False)
    with pytest.raises(teleo.NotFoundError):
        teleo.Store(tmp_path / "nothing-here", schema=SCHEMA, create=False)
    assert not (tmp_path / "nothing-here").exists()


def test_a_second_handle_and_another_schema_are_refused(tmp_path):
    path = tmp_path / "s"
    with teleo.Store(path, schema=SCHEMA):
        with pytest.raises(teleo.StoreInUseError) as e:
            teleo.Store(path)
        assert e.value.path
    other = {"slots": [dict(s) for s in SCHEMA["slots"]]}
    other["slots"][0] = {"Dense": 16}
    with pytest.raises(teleo.SchemaMismatchError):
        teleo.Store(path, schema=other)
    with pytest.raises(teleo.ValidationError):
        teleo.Store(tmp_path / "bad", schema={"slots": [{"Dense": 4}]})
    with pytest.raises(teleo.ValidationError):
        teleo.Store(tmp_path / "bad2", durability="sometimes")


def test_every_error_is_a_teleo_error_and_never_kills_the_interpreter(store):
    # Hostile values of every argument: each must raise, none may crash the process.
    q = slots(1)["E1"]
    calls = [
        lambda: store.put(42),
        lambda: store.put([teleo.Array(slots(1)), "x"]),
        lambda: store.put_many({}),
        lambda: store.put_many({"E1": np.ones((2, DIMS), np.float32), "E1_Semantic": np.ones((2, DIMS), np.float32)}),
        lambda: store.put_many({"E1": 5}),
        lambda: store.get(12),
        lambda: store.get(["nope"]),
        lambda: store.search("E1", q[::2]),
        lambda: store.search("E1", q.reshape(2, 4)),
        lambda: store.search("E0", q),
        lambda: store.search_fused({"E1": q, "e1": q}),
        lambda: store.search_fused({1: q}),
        lambda: store.count({"tags": "one-string"}),
        lambda: store.count("namespace"),
        lambda: store.scroll(after="x"),
        lambda: store.delete_where({"created_after": "yesterday"}),
    ]
    for call in calls:
        with pytest.raises((teleo.TeleoError, TypeError, OverflowError)):
            call()
    # non-contiguous input of the right dtype is read correctly, not refused
    store.put(teleo.Array(slots(9)))
    wide = np.zeros((DIMS, 2), dtype=np.float32)
    wide[:, 0] = store.get(store.scroll(limit=1)[0][0].id).embeddings["E1"]
    assert store.search("E1", wide[:, 0], k=1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_damaged_bytes_on_disk_raise_corruption_error(tmp_path):
    """Bytes flipped in the largest table file: reads that reach them raise CorruptionError
    (RocksDB's block checksums, the store's own), never a wrong array or a crash."""
    import glob
    import os

    path = tmp_path / "s"
    with teleo.Store(path, schema=SCHEMA) as s:
        ids = s.put(arrays(50))
        want = {i: s.get(i).content for i in ids}
    table = max(glob.glob(str(path / "data" / "*.sst")), key=os.path.getsize)
    raw = bytearray(open(table, "rb").read())
    for offset in range(1000, min(len(raw), 20000), 997):
        raw[offset] ^= 0xFF
    open(table, "wb").write(raw)
    corrupt = 0
    try:
        store = teleo.Store(path)
    except teleo.CorruptionError:
        return  # found at open: as good
    try:
        for i in ids:
            try:
                assert store.get(i).content == want[i]
            except teleo.CorruptionError as e:
                assert e.what
                corrupt += 1
    finally:
        try:
            store.close()
        except teleo.CorruptionError as e:
            # RocksDB's background compaction may have read the damaged block meanwhile; the
            # flush on close then reports it. Said, and the store closed all the same.
            assert "checksum" in e.what
    assert corrupt > 0
    assert store.closed
    # The path is released: a second open gets as far as the first did.
    try:
        teleo.Store(path).close()
    except teleo.CorruptionError:
        pass
