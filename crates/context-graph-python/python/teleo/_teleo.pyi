# Type stubs of the Rust extension teleo._teleo (crates/context-graph-python/src), checked
# against the built module by mypy's stubtest in .ci/python-tests. The TypedDicts and aliases
# (Filter, Comparison, SlotValue, ...) exist for type checkers only: at run time a filter or a
# comparison is a plain dict (tests/stubtest-allowlist.txt lists them).
from __future__ import annotations

import os
import uuid
from datetime import datetime
from typing import Any, Dict, List, Literal, Optional, final, Sequence, Tuple, TypedDict, Union, overload

import numpy as np
import numpy.typing as npt

__all__ = ["Array", "Hit", "Store", "EMBEDDERS", "__version__"]
__version__: str
#: The 13 slot names, "E1" ... "E13".
EMBEDDERS: List[str]

#: A dense slot: 1-D float32; token-level: 2-D float32 (tokens x dims); sparse: (uint32 ids,
#: float32 weights); binary: packed bits.
SlotValue = Union[
    npt.NDArray[np.float32],
    Tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]],
    bytes,
]
Id = Union[str, uuid.UUID]

class Filter(TypedDict, total=False):
    namespace: str
    created_after: datetime
    created_before: datetime
    min_similarity: float
    memory_types: List[str]
    exclude_ids: List[Union[str, uuid.UUID]]
    tags: List[str]
    custom: Dict[str, str]

class RrfComparison(TypedDict, total=False):
    type: Literal["rrf"]
    k: int
    weights: Dict[str, float]

class WeightedComparison(TypedDict):
    type: Literal["weighted"]
    weights: Dict[str, float]

class GroupComparison(TypedDict):
    type: Literal["group"]
    group: Literal["semantic", "temporal", "relational", "lexical", "all"]

class SingleComparison(TypedDict):
    type: Literal["single"]
    embedder: str

#: "rrf", a group name, a slot name, or one of the dicts.
Comparison = Union[str, RrfComparison, WeightedComparison, GroupComparison, SingleComparison]
#: "all", "none", one slot name, or a list of slot names.
Slots = Union[str, Sequence[str]]

@final
class Array:
    """One memory: id, slots by name, content and metadata. Reading ``tags`` or ``custom``
    gives a copy: assign a new value to change them."""

    id: Optional[str]
    embeddings: Dict[str, Any]
    content: Optional[str]
    namespace: Optional[str]
    memory_type: Optional[str]
    tags: List[str]
    custom: Dict[str, str]
    created_at: Optional[datetime]
    source_hash: int
    def __new__(
        cls,
        embeddings: Optional[Dict[str, SlotValue]] = None,
        *,
        id: Optional[Id] = None,
        content: Optional[str] = None,
        namespace: Optional[str] = None,
        memory_type: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        custom: Optional[Dict[str, str]] = None,
        created_at: Optional[datetime] = None,
        source_hash: int = 0,
    ) -> Array: ...

@final
class Hit:
    """One search result (read-only)."""

    @property
    def id(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def rank(self) -> int: ...
    @property
    def scores(self) -> Dict[str, float]: ...
    @property
    def array(self) -> Optional[Array]: ...
    def __new__(
        cls, id: str, score: float, rank: int, scores: Optional[Dict[str, float]] = None, array: Optional[Array] = None
    ) -> Hit: ...

@final
class Store:
    """The embedded store: RocksDB and 13 indices in this process."""

    def __new__(
        cls,
        path: Union[str, os.PathLike[str]],
        schema: Union[None, Dict[str, Any], Sequence[Dict[str, Any]]] = None,
        *,
        create: bool = True,
        durability: Literal["sync", "buffered"] = "sync",
        max_batch: Optional[int] = None,
        cache_size_mb: Optional[int] = None,
        search_overfetch: Optional[int] = None,
        fusion_depth: Optional[int] = None,
        rescore_factor: Optional[int] = None,
    ) -> Store: ...
    @staticmethod
    def create_text(
        path: Union[str, os.PathLike[str]],
        model_dir: Union[str, os.PathLike[str]],
        *,
        semantic_dims: Optional[int] = None,
        durability: Literal["sync", "buffered"] = "sync",
        max_batch: Optional[int] = None,
    ) -> Store: ...
    @property
    def path(self) -> str: ...
    @property
    def schema(self) -> Dict[str, Any]: ...
    @property
    def closed(self) -> bool: ...
    @overload
    def put(self, arrays: Array, *, cast: bool = False) -> str: ...
    @overload
    def put(self, arrays: Sequence[Array], *, cast: bool = False) -> List[str]: ...
    def put_many(
        self,
        embeddings: Dict[str, Any],
        *,
        ids: Optional[Sequence[Id]] = None,
        contents: Optional[Sequence[Optional[str]]] = None,
        namespace: Optional[str] = None,
        memory_type: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        custom: Optional[Dict[str, str]] = None,
        created_at: Optional[datetime] = None,
        cast: bool = False,
    ) -> List[str]: ...
    @overload
    def get(self, ids: Id, *, slots: Optional[Slots] = None, missing_ok: bool = False) -> Optional[Array]: ...
    @overload
    def get(self, ids: List[Id], *, slots: Optional[Slots] = None, missing_ok: bool = False) -> List[Array]: ...
    def delete(self, ids: Union[Id, Sequence[Id]], *, missing_ok: bool = False) -> int: ...
    def delete_where(self, filter: Filter) -> int: ...
    def update(
        self,
        id: Id,
        *,
        cast: bool = False,
        embeddings: Dict[str, SlotValue] = ...,
        content: Optional[str] = ...,
        memory_type: Optional[str] = ...,
        tags: Optional[Sequence[str]] = ...,
        custom: Optional[Dict[str, str]] = ...,
    ) -> None: ...
    def search(
        self,
        embedder: str,
        query: SlotValue,
        k: int = 10,
        *,
        filter: Optional[Filter] = None,
        ef: Optional[int] = None,
        overfetch: Optional[int] = None,
        rescore_factor: Optional[int] = None,
        with_metadata: bool = False,
        cast: bool = False,
    ) -> List[Hit]: ...
    def search_fused(
        self,
        query: Dict[str, SlotValue],
        k: int = 10,
        *,
        comparison: Optional[Comparison] = None,
        filter: Optional[Filter] = None,
        ef: Optional[int] = None,
        overfetch: Optional[int] = None,
        rescore_factor: Optional[int] = None,
        with_metadata: bool = False,
        cast: bool = False,
    ) -> List[Hit]: ...
    @overload
    def put_text(
        self,
        texts: str,
        *,
        ids: Optional[Sequence[Id]] = None,
        namespace: Optional[str] = None,
        memory_type: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        custom: Union[None, Dict[str, str], Sequence[Dict[str, str]]] = None,
        vectors: Optional[Dict[str, Any]] = None,
        created_at: Optional[datetime] = None,
        cast: bool = False,
    ) -> str: ...
    @overload
    def put_text(
        self,
        texts: List[str],
        *,
        ids: Optional[Sequence[Id]] = None,
        namespace: Optional[str] = None,
        memory_type: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        custom: Union[None, Dict[str, str], Sequence[Dict[str, str]]] = None,
        vectors: Optional[Dict[str, Any]] = None,
        created_at: Optional[datetime] = None,
        cast: bool = False,
    ) -> List[str]: ...
    def search_text(
        self,
        text: str,
        k: int = 10,
        *,
        embedders: Optional[Sequence[str]] = None,
        comparison: Optional[Comparison] = None,
        vectors: Optional[Dict[str, SlotValue]] = None,
        filter: Optional[Filter] = None,
        ef: Optional[int] = None,
        overfetch: Optional[int] = None,
        rescore_factor: Optional[int] = None,
        with_metadata: bool = False,
        cast: bool = False,
    ) -> List[Hit]: ...
    def count(self, filter: Optional[Filter] = None) -> int: ...
    def scroll(
        self, filter: Optional[Filter] = None, *, after: Optional[Id] = None, limit: int = 100, slots: Optional[Slots] = None
    ) -> Tuple[List[Array], Optional[str]]: ...
    def stats(self) -> Dict[str, Any]: ...
    def checkpoint(self, dest: Union[str, os.PathLike[str]]) -> str: ...
    def pipeline(self) -> List[Dict[str, Optional[str]]]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(self, *exc: object) -> bool: ...
