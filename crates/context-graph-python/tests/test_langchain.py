"""teleo.langchain.TeleoVectorStore: LangChain's own standard tests for vector stores (sync and
async, run whole: nothing is skipped), and what the standard suite does not cover: filters,
max marginal relevance, from_texts, the semantic search mode, reopening."""

from __future__ import annotations

from typing import Generator

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests

import teleo
from teleo.langchain import TeleoVectorStore


class TestTeleoVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, tmp_path, model_dir) -> Generator[TeleoVectorStore, None, None]:  # type: ignore[override]
        store = TeleoVectorStore(str(tmp_path / "lc"), self.get_embeddings(), model_dir=model_dir)
        try:
            yield store
        finally:
            store.close()


class TestTeleoVectorStoreSemanticStandard(VectorStoreIntegrationTests):
    """The same suite with searches of the caller's embedding alone."""

    @pytest.fixture()
    def vectorstore(self, tmp_path, model_dir) -> Generator[TeleoVectorStore, None, None]:  # type: ignore[override]
        store = TeleoVectorStore(str(tmp_path / "lc"), self.get_embeddings(), model_dir=model_dir, search="semantic")
        try:
            yield store
        finally:
            store.close()


EMB = DeterministicFakeEmbedding(size=6)
TEXTS = ["apples are red", "bananas are yellow", "cherries are dark red", "the sky is blue"]
METAS = [{"fruit": True, "colour": "red", "n": 1}, {"fruit": True, "colour": "yellow", "n": 2},
         {"fruit": True, "colour": "red", "n": 3}, {"fruit": False, "colour": "blue", "n": 4}]


def test_filters_match_metadata_values_exactly(tmp_path, model_dir):
    vs = TeleoVectorStore.from_texts(TEXTS, EMB, metadatas=METAS, ids=["a", "b", "c", "d"],
                                     path=str(tmp_path / "s"), model_dir=model_dir)
    red = vs.similarity_search("red fruit", k=4, filter={"colour": "red"})
    assert sorted(d.id for d in red) == ["a", "c"]
    assert vs.similarity_search("x", k=4, filter={"fruit": False})[0].metadata == METAS[3]
    assert [d.id for d in vs.similarity_search("x", k=4, filter={"n": 2})] == ["b"]
    assert vs.similarity_search("x", k=4, filter={"colour": "green"}) == []
    with pytest.raises(teleo.ValidationError):
        vs.similarity_search("x", filter={"colour": ["red", "blue"]})
    scored = vs.similarity_search_with_relevance_scores("apples are red", k=2)
    assert scored[0][0].id == "a" and 0.0 <= scored[1][1] <= scored[0][1] <= 1.0
    vs.close()


def test_mmr_by_vector_from_texts_and_reopen(tmp_path, model_dir):
    path = str(tmp_path / "s")
    vs = TeleoVectorStore.from_texts(TEXTS, EMB, ids=["a", "b", "c", "d"], path=path, model_dir=model_dir)
    mmr = vs.max_marginal_relevance_search("apples are red", k=2, fetch_k=4, lambda_mult=0.5)
    assert len(mmr) == 2 and mmr[0].id == "a" and mmr[1].id != "a"
    by_vector = vs.similarity_search_by_vector(EMB.embed_query("the sky is blue"), k=1)
    assert by_vector[0].id == "d"
    assert vs.max_marginal_relevance_search_by_vector(EMB.embed_query("bananas are yellow"), k=1)[0].id == "b"
    vs.close()
    again = TeleoVectorStore(path, EMB)
    assert [d.page_content for d in again.get_by_ids(["d", "zz", "a"])] == ["the sky is blue", "apples are red"]
    assert again.store.count({"namespace": "langchain"}) == 4
    again.delete()  # the whole namespace
    assert again.similarity_search("anything", k=3) == []
    again.close()


def test_namespaces_keep_collections_apart(tmp_path, model_dir):
    store = teleo.Store.create_text(tmp_path / "s", model_dir, semantic_dims=6)
    one = TeleoVectorStore(embedding=EMB, store=store, namespace="one")
    two = TeleoVectorStore(embedding=EMB, store=store, namespace="two")
    # the same LangChain id in two collections names two documents
    one.add_documents([Document(page_content="only in one", id="x")])
    two.add_documents([Document(page_content="only in two", id="x")])
    assert [d.page_content for d in one.similarity_search("only", k=5)] == ["only in one"]
    assert [d.page_content for d in two.get_by_ids(["x"])] == ["only in two"]
    one.delete(["x"])
    assert one.get_by_ids(["x"]) == [] and len(two.get_by_ids(["x"])) == 1
    store.close()


def test_a_store_whose_pipeline_makes_e1_itself_is_refused(tmp_path, model_dir):
    teleo.Store.create_text(tmp_path / "t", model_dir).close()
    with pytest.raises(teleo.TextPipelineError, match="semantic slot"):
        TeleoVectorStore(str(tmp_path / "t"), EMB)
