"""``teleo.Client``: the calls of :class:`teleo.Store`, over a running ``teleo serve``.

For programs that do not own the store: many processes, in many languages, share one server
(docs/SERVER.md). Vectors travel as base64 of little-endian float32 both ways (the compact
form of the HTTP API), and come back as numpy arrays, as from the embedded store. Filters and
comparisons are the same dicts. Errors are the same exception classes, with the server's
status and error code as ``status`` and ``code``.

Only the standard library is used for HTTP (``urllib``), so the package needs no client
dependency. Each call is one request; a ``Client`` may be shared by threads.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import errors
from ._teleo import Array, Hit

__all__ = ["Client"]

#: Default seconds a request may take before the client gives up.
DEFAULT_TIMEOUT = 60.0

# The server's error codes (docs/SERVER.md) and the class each becomes.
_CODE_TO_CLASS = {
    "validation": errors.ValidationError,
    "bad_request": errors.ValidationError,
    "batch_too_large": errors.BatchTooLargeError,
    "payload_too_large": errors.BatchTooLargeError,
    "not_found": errors.NotFoundError,
    "unauthorized": errors.AuthError,
    "forbidden": errors.AuthError,
    "overloaded": errors.UnavailableError,
    "timeout": errors.UnavailableError,
    "read_only": errors.ReadOnlyError,
    "in_use": errors.StoreInUseError,
    "internal": errors.BackendError,
    "stopping": errors.UnavailableError,
    "committed_not_indexed": errors.CommittedNotIndexedError,
    "outcome_unknown": errors.OutcomeUnknownError,
    "corruption": errors.CorruptionError,
}


def _b64_floats(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")


def _floats_from(value: Any) -> np.ndarray:
    if isinstance(value, str):
        # frombuffer over bytes is read-only; the store's arrays are writable, so these are too.
        return np.frombuffer(bytearray(base64.b64decode(value)), dtype="<f4").astype(np.float32, copy=False)
    return np.asarray(value, dtype=np.float32)


def _checked(value: Any, slot: str, what: str, dtype: type, ndim: int, cast: bool) -> np.ndarray:
    """``value`` as an array of ``dtype``: refused (naming the slot) if it is another dtype,
    unless ``cast``; the same rule as the embedded store."""
    if isinstance(value, np.ndarray) and value.dtype == dtype:
        array = value
    elif cast:
        try:
            array = np.asarray(value, dtype=dtype)
        except (TypeError, ValueError) as e:
            raise errors.ValidationError(f"{slot}: {what}: cannot convert to {np.dtype(dtype).name}: {e}",
                                         embedder=slot, reason=str(e)) from None
    else:
        got = f"a numpy array of {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
        reason = f"{what}: expected a {ndim}-D numpy array of {np.dtype(dtype).name}, got {got} (pass cast=True to convert)"
        raise errors.ValidationError(f"{slot}: {reason}", embedder=slot, reason=reason)
    if array.ndim != ndim:
        reason = f"{what}: expected a {ndim}-D array, got {array.ndim}-D"
        raise errors.ValidationError(f"{slot}: {reason}", embedder=slot, reason=reason)
    return array


class Client:
    """The store served at ``url`` (``http://127.0.0.1:6333``), with API key ``key`` if the
    server enforces keys. ``timeout``: seconds per request. ``tls_ca``: a PEM file to trust
    (for a server with a self-signed certificate)."""

    def __init__(self, url: str, key: Optional[str] = None, *, timeout: float = DEFAULT_TIMEOUT,
                 tls_ca: Optional[str] = None) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise errors.ValidationError(f"{url!r} is not an http:// or https:// URL", reason="bad url")
        self.url = url.rstrip("/")
        self._key = key
        self._timeout = timeout
        self._context = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
        self._closed = False
        self._schema = self._call("GET", "/v1/schema")

    # -- the HTTP round trip, and its errors -------------------------------------------------

    def _call(self, method: str, path: str, body: Optional[Mapping[str, Any]] = None, *,
              write: bool = False) -> Any:
        if self._closed:
            raise errors.StoreClosedError("the client is closed")
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self._key:
            request.add_header("Authorization", f"Bearer {self._key}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout, context=self._context) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise self._error(e) from None
        except TimeoutError as e:
            # The request went out: a write may still be applied, wholly or not at all.
            error = errors.UnavailableError(f"no answer from {self.url} within {self._timeout} s: {e}",
                                            status=0, code="timeout")
            if write:
                error.write_outcome = "unknown"
            raise error from None
        except (urllib.error.URLError, OSError) as e:
            raise errors.UnavailableError(f"cannot reach {self.url}: {e}", status=0, code="unreachable") from None
        return json.loads(raw) if raw else None

    @staticmethod
    def _error(e: urllib.error.HTTPError) -> errors.TeleoError:
        try:
            detail = json.loads(e.read() or b"{}").get("error", {})
        except (ValueError, AttributeError):
            detail = {}
        code = detail.get("code", "")
        message = detail.get("message") or f"HTTP {e.code}"
        cls = _CODE_TO_CLASS.get(code)
        if cls is None:
            cls = errors.NotFoundError if e.code == 404 else errors.ServerError
        context: Dict[str, Any] = {"status": e.code, "code": code}
        if "id" in detail:
            context["id"] = detail["id"]
        if "embedder" in detail:
            context["embedder"] = detail["embedder"]
        if cls in (errors.ValidationError, errors.BatchTooLargeError):
            context["reason"] = message
        outcome = detail.get("outcome")
        if outcome in ("not_written", "committed", "unknown"):
            context["write_outcome"] = outcome
        retry = e.headers.get("Retry-After") if e.headers else None
        if retry is not None:
            try:
                context["retry_after"] = float(retry)
            except ValueError:
                pass
        return cls(message, **context)

    # -- translation between numpy and the wire -----------------------------------------------

    def _kind(self, slot: str) -> Tuple[str, Any]:
        index = _slot_index(slot)
        shape = self._schema["slots"][index]
        (kind, size), = shape.items()
        return kind, size

    def _encode(self, slot: str, value: Any, cast: bool) -> Dict[str, Any]:
        name = _short(slot)
        kind, _ = self._kind(name)
        if kind == "Dense":
            return {"dense": _b64_floats(_checked(value, name, "a dense slot", np.float32, 1, cast))}
        if kind == "TokenLevel":
            rows = _checked(value, name, "a token-level slot (one row per token)", np.float32, 2, cast)
            return {"tokens": {"dims": int(rows.shape[1]), "data": _b64_floats(rows)}}
        if kind == "Sparse":
            if not (isinstance(value, tuple) and len(value) == 2):
                reason = "a sparse slot takes a pair (indices, values) of numpy arrays"
                raise errors.ValidationError(f"{name}: {reason}", embedder=name, reason=reason)
            indices = _checked(value[0], name, "the term ids of a sparse slot", np.uint32, 1, cast)
            values = _checked(value[1], name, "the weights of a sparse slot", np.float32, 1, cast)
            return {"sparse": {"indices": [int(i) for i in indices], "values": _b64_floats(values)}}
        if not isinstance(value, (bytes, bytearray)):
            reason = f"a binary slot takes bytes (the packed bits), got {type(value).__name__}"
            raise errors.ValidationError(f"{name}: {reason}", embedder=name, reason=reason)
        return {"binary": base64.b64encode(bytes(value)).decode("ascii")}

    @staticmethod
    def _decode_slot(wire: Mapping[str, Any]) -> Any:
        (kind, value), = wire.items()
        if kind == "dense":
            return _floats_from(value)
        if kind == "tokens":
            return _floats_from(value["data"]).reshape(-1, int(value["dims"]))
        if kind == "sparse":
            return (np.asarray(value["indices"], dtype=np.uint32), _floats_from(value["values"]))
        return base64.b64decode(value)

    def _array_to_wire(self, a: Array, cast: bool) -> Dict[str, Any]:
        import uuid

        metadata = None
        if a.namespace is not None or a.memory_type is not None or a.tags or a.custom:
            metadata = {"namespace": a.namespace, "memory_type": a.memory_type, "tags": list(a.tags),
                        "custom": dict(a.custom)}
        body: Dict[str, Any] = {
            "id": a.id or str(uuid.uuid7() if hasattr(uuid, "uuid7") else uuid.uuid4()),
            "embeddings": {_short(k): self._encode(k, v, cast) for k, v in a.embeddings.items()},
            "source_hash": a.source_hash,
        }
        if a.created_at is not None:
            body["created_at"] = _iso(a.created_at)
        if metadata is not None:
            body["metadata"] = metadata
        if a.content is not None:
            body["content"] = a.content
        return body

    def _array_from_wire(self, w: Mapping[str, Any]) -> Array:
        m = w.get("metadata") or {}
        created = w.get("created_at")
        return Array(
            {k: self._decode_slot(v) for k, v in (w.get("embeddings") or {}).items()},
            id=w["id"],
            content=w.get("content"),
            namespace=m.get("namespace"),
            memory_type=m.get("memory_type"),
            tags=list(m.get("tags") or []),
            custom=dict(m.get("custom") or {}),
            created_at=_parse_time(created) if created else None,
            source_hash=int(w.get("source_hash") or 0),
        )

    def _hits(self, response: Mapping[str, Any]) -> List[Hit]:
        hits = []
        for h in response["hits"]:
            array = self._array_from_wire(h["array"]) if h.get("array") else None
            hits.append(Hit(h["id"], float(h["score"]), int(h["rank"]), dict(h.get("scores") or {}), array))
        return hits

    # -- the calls ----------------------------------------------------------------------------

    @property
    def schema(self) -> Dict[str, Any]:
        """The store's schema: ``{"slots": [13 shapes], "max_tokens": n}``."""
        return dict(self._schema)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, arrays: Union[Array, Sequence[Array]], *, cast: bool = False) -> Union[str, List[str]]:
        """As :meth:`teleo.Store.put`: one atomic commit on the server."""
        if isinstance(arrays, Array):
            body = self._array_to_wire(arrays, cast)
            self._call("POST", "/v1/arrays", body, write=True)
            return body["id"]
        wire = [self._array_to_wire(a, cast) for a in arrays]
        self._call("POST", "/v1/arrays/batch", {"arrays": wire}, write=True)
        return [w["id"] for w in wire]

    def put_many(self, embeddings: Mapping[str, Any], *, ids: Optional[Sequence[str]] = None,
                 contents: Optional[Sequence[Optional[str]]] = None, namespace: Optional[str] = None,
                 memory_type: Optional[str] = None, tags: Optional[Sequence[str]] = None,
                 custom: Optional[Mapping[str, str]] = None, created_at: Optional[datetime] = None,
                 cast: bool = False) -> List[str]:
        """As :meth:`teleo.Store.put_many`: one value per slot, one row (or item) per array."""
        columns = {_short(k): _rows(k, v, self._kind(_short(k))[0]) for k, v in embeddings.items()}
        if not columns:
            raise errors.ValidationError("put_many needs the slots' values", reason="no slots")
        n = len(next(iter(columns.values())))
        for slot, values in columns.items():
            if len(values) != n:
                reason = f"{len(values)} values given for {n} arrays"
                raise errors.ValidationError(f"{slot}: {reason}", embedder=slot, reason=reason)
        if isinstance(ids, str):
            raise errors.ValidationError("ids: a list of ids, one per array, not one string", reason="ids")
        if ids is not None and len(ids) != n:
            raise errors.ValidationError(f"{len(ids)} ids given for {n} arrays", reason="ids")
        if contents is not None and len(contents) != n:
            raise errors.ValidationError(f"{len(contents)} contents given for {n} arrays", reason="contents")
        # One creation time for the whole batch, as the embedded store gives it.
        created_at = created_at or datetime.now(timezone.utc)
        arrays = [
            Array({slot: values[i] for slot, values in columns.items()},
                  id=None if ids is None else ids[i],
                  content=None if contents is None else contents[i],
                  namespace=namespace, memory_type=memory_type, tags=list(tags or []),
                  custom=dict(custom or {}), created_at=created_at)
            for i in range(n)
        ]
        return list(self.put(arrays, cast=cast))

    def get(self, ids: Union[str, Sequence[str]], *, slots: Union[None, str, Sequence[str]] = None,
            missing_ok: bool = False) -> Any:
        """As :meth:`teleo.Store.get`."""
        one = isinstance(ids, str) or hasattr(ids, "hex")
        id_list = [str(ids)] if one else [str(i) for i in ids]
        projection = _projection(slots, "all")
        if missing_ok:
            found = []
            for i in id_list:
                try:
                    found.extend(self._call("POST", "/v1/arrays/get",
                                            {"ids": [i], "slots": projection, "encoding": "base64"})["arrays"])
                except errors.NotFoundError:
                    pass
            arrays = [self._array_from_wire(a) for a in found]
        else:
            response = self._call("POST", "/v1/arrays/get", {"ids": id_list, "slots": projection, "encoding": "base64"})
            arrays = [self._array_from_wire(a) for a in response["arrays"]]
        if one:
            return arrays[0] if arrays else None
        return arrays

    def delete(self, ids: Union[str, Sequence[str]], *, missing_ok: bool = False) -> int:
        """As :meth:`teleo.Store.delete`: one commit."""
        id_list = [str(ids)] if isinstance(ids, str) or hasattr(ids, "hex") else [str(i) for i in ids]
        if missing_ok:
            present = []
            for i in id_list:
                try:
                    self._call("POST", "/v1/arrays/get", {"ids": [i], "slots": "none"})
                    present.append(i)
                except errors.NotFoundError:
                    pass
            id_list = present
        if not id_list:
            return 0
        return int(self._call("POST", "/v1/arrays/delete", {"ids": id_list}, write=True)["count"])

    def delete_where(self, filter: Mapping[str, Any]) -> int:
        """As :meth:`teleo.Store.delete_where` (an empty filter is refused)."""
        if not any(v is not None for v in filter.values()):
            raise errors.ValidationError(
                "delete_where needs at least one condition; an empty filter would delete everything",
                reason="empty filter")
        return int(self._call("POST", "/v1/arrays/delete_by_filter", {"filter": _filter(filter)},
                              write=True)["count"])

    def update(self, id: str, *, cast: bool = False, **changes: Any) -> None:
        """As :meth:`teleo.Store.update`: ``embeddings``, ``content``, ``memory_type``, ``tags``,
        ``custom``. The HTTP API replaces the metadata whole, so for a metadata field the
        others are read first and sent back unchanged: unlike the embedded store's update, two
        clients changing different fields of one array at once can lose one change."""
        allowed = {"embeddings", "content", "memory_type", "tags", "custom"}
        unknown = set(changes) - allowed
        if "namespace" in unknown:
            raise errors.ValidationError("an array's namespace does not change in an update: put the array again",
                                         reason="namespace")
        if unknown:
            raise errors.ValidationError(f"{sorted(unknown)[0]!r}: update takes {', '.join(sorted(allowed))}",
                                         reason="unknown keyword")
        patch: Dict[str, Any] = {}
        if "embeddings" in changes:
            patch["embeddings"] = {_short(k): self._encode(k, v, cast) for k, v in changes["embeddings"].items()}
        if "content" in changes:
            patch["content"] = changes["content"]
        if {"memory_type", "tags", "custom"} & set(changes):
            current = self.get(str(id), slots="none")
            metadata = {"namespace": current.namespace, "memory_type": current.memory_type,
                        "tags": list(current.tags), "custom": dict(current.custom)}
            empty: Dict[str, Any] = {"memory_type": None, "tags": [], "custom": {}}
            for k in ("memory_type", "tags", "custom"):
                if k in changes:
                    metadata[k] = empty[k] if changes[k] is None else changes[k]
            patch["metadata"] = metadata
        self._call("PATCH", f"/v1/arrays/{urllib.parse.quote(str(id))}", patch, write=True)

    def search(self, embedder: str, query: Any, k: int = 10, *, filter: Optional[Mapping[str, Any]] = None,
               ef: Optional[int] = None, overfetch: Optional[int] = None, rescore_factor: Optional[int] = None,
               with_metadata: bool = False, cast: bool = False) -> List[Hit]:
        """As :meth:`teleo.Store.search`."""
        body = {"embedder": _short(embedder), "query": self._encode(embedder, query, cast), "limit": k,
                "filter": _filter(filter), "params": _params(ef, overfetch, rescore_factor),
                "with_metadata": with_metadata}
        return self._hits(self._call("POST", "/v1/search", body))

    def search_fused(self, query: Mapping[str, Any], k: int = 10, *, comparison: Any = None,
                     filter: Optional[Mapping[str, Any]] = None, ef: Optional[int] = None,
                     overfetch: Optional[int] = None, rescore_factor: Optional[int] = None,
                     with_metadata: bool = False, cast: bool = False) -> List[Hit]:
        """As :meth:`teleo.Store.search_fused`; the same comparison strings and dicts."""
        body = {"query": {_short(s): self._encode(s, v, cast) for s, v in query.items()},
                "comparison": _comparison(comparison), "limit": k, "filter": _filter(filter),
                "params": _params(ef, overfetch, rescore_factor), "with_metadata": with_metadata}
        return self._hits(self._call("POST", "/v1/search/fused", body))

    def put_text(self, *args: Any, **kwargs: Any) -> Any:
        """Not over HTTP: the text pipeline runs where the store is. Use :class:`teleo.Store`
        on the store's machine, or the server's MCP tools (docs/MCP.md)."""
        raise errors.TextPipelineError(
            "put_text needs the store's text pipeline, which runs where the store is: the HTTP API takes "
            "vectors; use teleo.Store on that machine, or the server's MCP endpoint (remember / recall)")

    search_text = put_text

    def count(self, filter: Optional[Mapping[str, Any]] = None) -> int:
        """As :meth:`teleo.Store.count`."""
        return int(self._call("POST", "/v1/arrays/count", {"filter": _filter(filter)})["count"])

    def scroll(self, filter: Optional[Mapping[str, Any]] = None, *, after: Optional[str] = None,
               limit: int = 100, slots: Union[None, str, Sequence[str]] = None) -> Tuple[List[Array], Optional[str]]:
        """As :meth:`teleo.Store.scroll`."""
        body: Dict[str, Any] = {"filter": _filter(filter), "limit": limit, "slots": _projection(slots, "none"),
                                "encoding": "base64"}
        if after is not None:
            body["after"] = str(after)
        page = self._call("POST", "/v1/arrays/scroll", body)
        return [self._array_from_wire(a) for a in page["arrays"]], page.get("next_after")

    def stats(self) -> Dict[str, Any]:
        """As :meth:`teleo.Store.stats` (the server's figures)."""
        return self._call("GET", "/v1/stats")

    def checkpoint(self, name: str) -> str:
        """Write a checkpoint named ``name`` into the server's checkpoint directory (admin key);
        its path on the server's machine."""
        return self._call("POST", "/v1/admin/checkpoint", {"name": name})["path"]

    def close(self) -> None:
        """Forget the connection settings; later calls raise :class:`StoreClosedError`."""
        self._closed = True

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r}{', closed' if self._closed else ''})"


def _slot_index(slot: str) -> int:
    name = _short(slot)
    return int(name[1:]) - 1


def _short(slot: str) -> str:
    """ "E7_Code" or "e7" -> "E7"; anything else is refused."""
    head = str(slot).split("_", 1)[0].upper()
    if head.startswith("E") and head[1:].isdigit() and 1 <= int(head[1:]) <= 13:
        return head
    raise errors.ValidationError(f"{slot!r} names no embedder (E1 … E13)", reason="unknown slot")


def _rows(slot: str, value: Any, kind: str) -> List[Any]:
    """One value per array: the rows of a 2-D array (uint8 rows of a binary slot as bytes), or
    the items of a list."""
    if kind == "Binary" and isinstance(value, np.ndarray) and value.ndim == 2:
        if value.dtype != np.uint8:
            reason = "a 2-D array for a binary slot must be uint8, one row of packed bits per array"
            raise errors.ValidationError(f"{_short(slot)}: {reason}", embedder=_short(slot), reason=reason)
        return [row.tobytes() for row in value]
    return list(value)


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise errors.ValidationError("datetimes must be timezone-aware (e.g. datetime.now(timezone.utc))",
                                     reason="naive datetime")
    return t.isoformat()


def _parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


_FILTER_KEYS = ("namespace", "created_after", "created_before", "min_similarity", "memory_types",
                "exclude_ids", "tags", "custom")


def _filter(f: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    if f is None:
        return {}
    out: Dict[str, Any] = {}
    for key, value in f.items():
        if key not in _FILTER_KEYS:
            raise errors.ValidationError(f"{key!r} is no filter key (expected one of {', '.join(_FILTER_KEYS)})",
                                         reason="unknown filter key")
        if value is None:
            continue
        if key in ("created_after", "created_before"):
            value = _iso(value)
        elif key in ("memory_types", "tags", "exclude_ids"):
            if isinstance(value, str):
                raise errors.ValidationError(f"filter {key!r} takes a list, got one string", reason=key)
            value = [str(v) for v in value]
        out[key] = value
    return out


def _params(ef: Optional[int], overfetch: Optional[int], rescore_factor: Optional[int]) -> Dict[str, int]:
    return {k: v for k, v in (("ef", ef), ("overfetch", overfetch), ("rescore_factor", rescore_factor))
            if v is not None}


_GROUPS = ("semantic", "temporal", "relational", "lexical", "all")


def _comparison(c: Any) -> Dict[str, Any]:
    if c is None:
        return {"type": "rrf"}
    if isinstance(c, str):
        if c.lower() == "rrf":
            return {"type": "rrf"}
        if c.lower() in _GROUPS:
            return {"type": "group", "group": c.lower()}
        return {"type": "single", "embedder": _short(c)}
    if isinstance(c, Mapping):
        return dict(c)
    raise errors.ValidationError("a comparison is a string or a dict with a \"type\"", reason="comparison")


def _projection(slots: Union[None, str, Iterable[str]], default: str) -> str:
    if slots is None:
        return default
    if isinstance(slots, str):
        return slots if slots in ("all", "none") else _short(slots)
    names = [_short(s) for s in slots]
    return ",".join(names) if names else "none"
