"""teleo: a store of teleological arrays (13 embeddings of one memory), embedded in Python.

Open a store (created with the default roster if the path holds none), write, search::

    import teleo
    with teleo.Store("./memories") as store:
        ids = store.put_many(slots)             # {"E1": float32 array (n, 1024), ...}: one commit
        hits = store.search("E1", query, k=5)   # exact scores, best first

- :class:`Store`: the embedded store (RocksDB and 13 indices in this process); every write is
  one atomic, durable commit, searchable on return.
- :class:`Client`: the same calls over a running ``teleo serve``.
- :class:`Array`, :class:`Hit`: one memory, one search result.
- :mod:`teleo.errors`: the exceptions (also importable from here).
- :mod:`teleo.langchain`: ``TeleoVectorStore``, a LangChain vector store.
"""

from ._teleo import EMBEDDERS, Array, Hit, Store, __version__
from .client import Client
from .errors import (
    AuthError,
    BackendError,
    BatchTooLargeError,
    CommittedNotIndexedError,
    CorruptionError,
    NotFoundError,
    OutcomeUnknownError,
    ReadOnlyError,
    SchemaMismatchError,
    ServerError,
    StoreClosedError,
    StoreInUseError,
    TeleoError,
    TextPipelineError,
    UnavailableError,
    UnsupportedFormatError,
    ValidationError,
)

__all__ = [
    "EMBEDDERS",
    "Array",
    "Hit",
    "Store",
    "Client",
    "__version__",
    "AuthError",
    "BackendError",
    "BatchTooLargeError",
    "CommittedNotIndexedError",
    "CorruptionError",
    "NotFoundError",
    "OutcomeUnknownError",
    "ReadOnlyError",
    "SchemaMismatchError",
    "ServerError",
    "StoreClosedError",
    "StoreInUseError",
    "TeleoError",
    "TextPipelineError",
    "UnavailableError",
    "UnsupportedFormatError",
    "ValidationError",
]
