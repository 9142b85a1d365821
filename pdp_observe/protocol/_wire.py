"""The exchange as the decoders see it: one read-only value, parsed at most once.

Every decoder needs the same few things (path segments, case-insensitive headers, the JSON of
each body and *why* a body could not be parsed), and the detection step needs them before any
decoder runs. Keeping them on one :class:`Wire` means a body is parsed once per exchange, and
the "never raise on bad input" rule is enforced in one place: :func:`parse_json` turns every
failure into a short reason string instead of an exception.
"""

from __future__ import annotations

import json

import orjson
from typing import Any

MAX_TEXT = 1000
"""Longest error message / text body kept in an Operation (P2028 messages are ~300 chars)."""


def parse_json(data: bytes, truncated: bool = False) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, reason)``; never raises, whatever the bytes.

    ``json.loads`` raises ``ValueError`` for bad JSON and bad UTF-8 and ``RecursionError`` for
    pathological nesting; both are normal inputs for a passive recorder.
    """
    if not data:
        return None, "empty body"
    try:
        return orjson.loads(data), None  # ~3x faster; it refuses what json.loads may still take
    except orjson.JSONDecodeError:
        pass  # (integers past 64 bits, NaN, lone surrogates, deep nesting): ask the stdlib
    try:
        return json.loads(data), None
    except RecursionError:
        return None, "JSON nested too deeply"
    except UnicodeDecodeError:
        return None, "body is not UTF-8"
    except ValueError:
        return None, "body truncated" if truncated else "malformed JSON"


def text_of(data: bytes, limit: int = MAX_TEXT) -> str:
    """A printable prefix of a (possibly binary) body, for error messages."""
    return data[:limit].decode("utf-8", "replace").strip()


def as_str(value: Any) -> str | None:
    """``value`` if it is a non-empty string, else ``None`` (wire fields may have any type)."""
    return value if isinstance(value, str) and value else None


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


MAX_NEST = 16
"""Deepest structure copied into an Operation (error meta, SQL parameters)."""


def bounded(value: Any, depth: int = MAX_NEST) -> Any:
    """``value`` with anything nested deeper than ``depth`` replaced by ``"…"``.

    JSON that ``json.loads`` accepted can still be ~1000 levels deep; copied as-is into an
    Operation it would make every later ``asdict``/``json.dumps`` hit the recursion limit.
    """
    if isinstance(value, dict):
        if depth <= 0:
            return "…"
        return {k: bounded(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth <= 0:
            return "…"
        return [bounded(v, depth - 1) for v in value]
    return value


def _to_bytes(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    return b""


def _fold(headers: Any) -> dict[str, str]:
    """Lower-cased header map; the first occurrence wins, malformed pairs are skipped."""
    out: dict[str, str] = {}
    for pair in headers or ():
        if isinstance(pair, (tuple, list)) and len(pair) == 2:
            name, value = pair
            if isinstance(name, str) and isinstance(value, str):
                out.setdefault(name.lower(), value)
    return out


class Wire:
    """One request/response pair, normalised for decoding (see the module docstring)."""

    __slots__ = (
        "method", "segments", "query", "status", "truncated",
        "req_body", "resp_body", "_req_headers", "_resp_headers", "_cache",
    )

    def __init__(
        self,
        method: Any,
        path: Any,
        req_headers: Any,
        req_body: Any,
        status: Any,
        resp_headers: Any,
        resp_body: Any,
        truncated: bool,
    ) -> None:
        self.method = method.upper() if isinstance(method, str) else ""
        raw_path = path if isinstance(path, str) else ""
        path_only, _, self.query = raw_path.partition("?")
        self.segments = tuple(s for s in path_only.split("/") if s)
        self.status = status if isinstance(status, int) and not isinstance(status, bool) else None
        self.truncated = bool(truncated)
        self.req_body = _to_bytes(req_body)
        self.resp_body = _to_bytes(resp_body)
        self._req_headers = _fold(req_headers)
        self._resp_headers = _fold(resp_headers)
        self._cache: dict[str, tuple[Any, str | None]] = {}

    def header(self, name: str) -> str | None:
        """A request header, looked up case-insensitively (clients mix spellings)."""
        return self._req_headers.get(name)

    def resp_header(self, name: str) -> str | None:
        """A response header, looked up case-insensitively."""
        return self._resp_headers.get(name)

    @property
    def failed(self) -> bool:
        """The server answered with an HTTP error status."""
        return self.status is not None and self.status >= 400

    def req_json(self) -> tuple[Any, str | None]:
        """The request body as JSON, or the reason it is not (cached)."""
        if "req" not in self._cache:
            self._cache["req"] = parse_json(self.req_body, self.truncated)
        return self._cache["req"]

    def resp_json(self) -> tuple[Any, str | None]:
        """The response body as JSON, or the reason it is not (cached)."""
        if "resp" not in self._cache:
            self._cache["resp"] = parse_json(self.resp_body, self.truncated)
        return self._cache["resp"]
