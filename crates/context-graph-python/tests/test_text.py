"""Text through the store's pipeline: put_text / search_text with the local model, and the
caller's own vectors for `caller` slots."""

from __future__ import annotations

import numpy as np
import pytest

import teleo
from conftest import SCHEMA

NOTES = [
    "The cat sat on the warm windowsill all afternoon.",
    "Quarterly revenue grew by twelve percent in Europe.",
    "Rust's borrow checker rejects two mutable references.",
    "The recipe needs two eggs, flour and a pinch of salt.",
]


def test_a_text_store_embeds_stores_and_finds_texts(tmp_path, model_dir):
    with teleo.Store.create_text(tmp_path / "t", model_dir) as store:
        providers = {p["embedder"]: p["provider"] for p in store.pipeline()}
        assert providers["E1"] == "bert" and providers["E9"] == "hdc" and providers["E2"] == "temporal"
        ids = store.put_text(NOTES, namespace="notes", custom=[{"n": str(i)} for i in range(len(NOTES))])
        one = store.put_text("Kittens chase a ball of yarn.", tags=["pets"])
        assert isinstance(one, str) and len(ids) == 4
        a = store.get(ids[2])
        assert a.content == NOTES[2] and a.custom == {"n": "2"} and a.namespace == "notes"
        assert a.embeddings["E1"].shape == (384,) and a.embeddings["E12"].shape[1] == 384
        hits = store.search_text("which animal sat by the window?", k=2, filter={"namespace": "notes"},
                                 with_metadata=True)
        assert hits[0].id == ids[0] and hits[0].array.content == NOTES[0]
        assert len(hits[0].scores) == 13
        semantic = store.search_text("compiler errors about references", k=1, embedders=["E1"])
        assert semantic[0].id == ids[2] and set(semantic[0].scores) == {"E1"}
        with pytest.raises(teleo.TextPipelineError):
            store.put_text(["fine", "   "])
        assert store.count() == 5
    # reopened, the pipeline is found again
    with teleo.Store(tmp_path / "t") as again:
        assert again.search_text("eggs and flour", k=1)[0].id == ids[3]
    with pytest.raises(teleo.ValidationError):
        teleo.Store.create_text(tmp_path / "t", model_dir)


def test_threads_loading_the_pipeline_at_once_do_not_wait_on_each_other(tmp_path, model_dir):
    import threading

    teleo.Store.create_text(tmp_path / "t", model_dir).close()
    with teleo.Store(tmp_path / "t") as store:  # reopened: the pipeline is not loaded yet
        store.put_text("a note about the garden")
        # a fresh handle again, so that every thread below finds it unloaded
    with teleo.Store(tmp_path / "t") as store:
        results, errors = [], []

        def search():
            try:
                results.append(store.search_text("garden", k=1)[0].id)
            except Exception as e:  # pragma: no cover
                errors.append(e)

        threads = [threading.Thread(target=search) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a thread is stuck loading the pipeline"
        assert errors == [] and len(set(results)) == 1


def test_a_bad_model_directory_creates_nothing(tmp_path):
    with pytest.raises(teleo.TextPipelineError):
        teleo.Store.create_text(tmp_path / "t", tmp_path / "no-model")
    assert not (tmp_path / "t").exists()


def test_caller_slots_take_the_callers_vectors(tmp_path, model_dir):
    dims = 6
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((len(NOTES), dims)).astype(np.float32)
    with teleo.Store.create_text(tmp_path / "c", model_dir, semantic_dims=dims) as store:
        providers = {p["embedder"]: p for p in store.pipeline()}
        assert providers["E1"]["provider"] == "caller" and providers["E7"]["provider"] == "caller"
        assert store.schema["slots"][0] == {"Dense": dims}
        ids = store.put_text(NOTES, vectors={"E1": vectors})
        got = store.get(ids[1])
        np.testing.assert_array_equal(got.embeddings["E1"], vectors[1])
        np.testing.assert_array_equal(got.embeddings["E7"], vectors[1])  # copy_of E1
        hits = store.search_text("anything", k=1, vectors={"E1": vectors[1]}, embedders=["E1"])
        assert hits[0].id == ids[1]
        with pytest.raises(teleo.TextPipelineError) as e:
            store.put_text(["no vector given"])
        assert e.value.embedder == "E1"
        with pytest.raises(teleo.TextPipelineError):
            store.put_text(NOTES[:2], vectors={"E1": vectors[:2], "E13": vectors[:2]})
        with pytest.raises(teleo.ValidationError):
            store.put_text(NOTES, vectors={"E1": vectors[:3]})
        with pytest.raises(teleo.ValidationError):
            store.put_text(NOTES[:1], vectors={"E1": vectors[:1].astype(np.float64)})
        assert store.count() == 4


def test_a_store_without_a_pipeline_says_how_to_get_one(tmp_path):
    with teleo.Store(tmp_path / "v", schema=SCHEMA) as store:
        with pytest.raises(teleo.TextPipelineError, match="create_text"):
            store.put_text("hello")
        with pytest.raises(teleo.TextPipelineError):
            store.search_text("hello")
