"""The exceptions of teleo: one class per way a call fails, each carrying the store's context.

Every error of the embedded store (:class:`teleo.Store`) and of the HTTP client
(:class:`teleo.Client`) is a :class:`TeleoError`. Bad input raises :class:`ValidationError`
(also a :class:`ValueError`) with nothing written; a missing array :class:`NotFoundError` (also
a :class:`LookupError`). A failed write says what it left behind: most leave nothing;
:class:`CommittedNotIndexedError` is written but an index is behind; :class:`OutcomeUnknownError`
may or may not be durable.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "TeleoError",
    "ValidationError",
    "BatchTooLargeError",
    "NotFoundError",
    "CorruptionError",
    "StoreInUseError",
    "SchemaMismatchError",
    "UnsupportedFormatError",
    "ReadOnlyError",
    "CommittedNotIndexedError",
    "OutcomeUnknownError",
    "BackendError",
    "TextPipelineError",
    "StoreClosedError",
    "AuthError",
    "UnavailableError",
    "ServerError",
]


class TeleoError(Exception):
    """Base class of every teleo error. ``str(e)`` is the store's message."""

    #: Whether anything of the failed write call was written: ``"not_written"``,
    #: ``"committed"`` (written, an index behind) or ``"unknown"``.
    write_outcome: str = "not_written"

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        for name, value in context.items():
            setattr(self, name, value)


class ValidationError(TeleoError, ValueError):
    """Bad input: which array (``id``), which slot (``embedder``, e.g. ``"E1"``), what is wrong
    (``reason``). Nothing was written."""

    id: Optional[str] = None
    embedder: Optional[str] = None
    reason: str = ""


class BatchTooLargeError(ValidationError):
    """A batch longer than the store's ``max_batch`` (``max``, ``actual``). Nothing was written."""

    max: int = 0
    actual: int = 0


class NotFoundError(TeleoError, LookupError):
    """No array with this ``id`` is stored (or visible to the caller's key)."""

    id: Optional[str] = None


class CorruptionError(TeleoError):
    """Stored bytes fail to decode or fail their checksum (``what``)."""

    what: str = ""


class StoreInUseError(TeleoError):
    """Another process, or another open handle, holds the store at ``path``."""

    path: str = ""


class SchemaMismatchError(TeleoError):
    """The store was created with another schema than the one given (``reason``)."""

    reason: str = ""


class UnsupportedFormatError(TeleoError):
    """The store was written by a format this build does not read (``found``, ``supported``)."""

    found: int = 0
    supported: int = 0


class ReadOnlyError(TeleoError):
    """An earlier failure left the store refusing writes until it is reopened. Nothing of this
    call was written."""


class CommittedNotIndexedError(TeleoError):
    """Commit ``seq`` is written (a read shows it) but an index failed to apply it; the store
    refuses writes until it is reopened, which brings every index up to date."""

    write_outcome = "committed"
    seq: int = 0


class OutcomeUnknownError(TeleoError):
    """Commit ``seq`` may or may not be durable (making it durable failed); after a reopen it is
    wholly present or wholly absent."""

    write_outcome = "unknown"
    seq: int = 0


class BackendError(TeleoError):
    """RocksDB or the file system failed. Nothing of a write call was written."""


class TextPipelineError(TeleoError):
    """The store's text pipeline could not embed a text: the slot (``embedder``), the provider
    (``provider``) and why; or the store has no pipeline. Nothing was written."""

    embedder: Optional[str] = None
    provider: Optional[str] = None


class StoreClosedError(TeleoError):
    """The store was closed; open it again to use it."""


class AuthError(TeleoError, PermissionError):
    """The server refused the key (missing, unknown, or without the role or namespace)."""

    status: int = 0
    code: str = ""


class UnavailableError(TeleoError):
    """The server is overloaded, stopping, or refusing writes; try again later
    (``retry_after`` seconds, when the server said)."""

    status: int = 0
    code: str = ""
    retry_after: Optional[float] = None


class ServerError(TeleoError):
    """The server answered with an error no other class describes (``status``, ``code``)."""

    status: int = 0
    code: str = ""
