"""From what the hot path noted down (:class:`RawCapture`) to a stored :class:`Exchange`.

The split exists for speed: the proxy only appends bytes references and perf_counter()
readings to a slotted object; header decoding, content decoding (gzip/br), hashing of
small bodies, redaction and id assignment all happen here, in the capture worker thread.
"""

from __future__ import annotations

import hashlib
import operator
import zlib
from typing import Any

from .exchange import Body, Exchange, Request, Response, Timings, new_id
from .redact import Redactor

try:  # brotli is a declared dependency; keep decoding optional so a missing wheel costs only br bodies
    import brotli as _brotli
except ImportError:  # pragma: no cover
    _brotli = None


class RawCapture:
    """Everything the hot path records about one exchange, with no processing at all.

    Times: ``wall`` is epoch seconds at arrival; the ``t_*`` are perf_counter() readings.
    Header lists are aiohttp's raw ``(bytes, bytes)`` pairs, untouched.
    Bodies: ``req_body``/``resp_body`` hold at most the capture limit; ``*_size`` the full
    length; ``*_sha256`` is filled on the hot path only when a body was streamed (and so
    not held whole); otherwise the worker hashes the complete bytes it has.
    """

    __slots__ = (
        "wall", "t0", "t_connected", "t_first_byte", "t_done",
        "method", "path", "version", "client", "upstream",
        "req_headers", "req_body", "req_size", "req_sha256", "req_truncated",
        "status", "reason", "resp_headers", "resp_body", "resp_size", "resp_sha256",
        "resp_truncated", "failure", "failure_detail",
        "inflight", "trace", "tel",
    )

    def __init__(self, wall: float, t0: float, method: str, path: str, version: str,
                 client: str | None, upstream: str, req_headers: Any) -> None:
        self.wall = wall
        self.t0 = t0
        self.t_connected: float | None = None
        self.t_first_byte: float | None = None
        self.t_done: float | None = None
        self.method = method
        self.path = path
        self.version = version
        self.client = client
        self.upstream = upstream
        self.req_headers = req_headers
        self.req_body: bytes = b""
        self.req_size = 0
        self.req_sha256: str | None = None
        self.req_truncated = False
        self.status: int | None = None
        self.reason = ""
        self.resp_headers: Any = ()
        self.resp_body: bytes = b""
        self.resp_size = 0
        self.resp_sha256: str | None = None
        self.resp_truncated = False
        self.failure: str | None = None
        self.failure_detail: str | None = None
        # correlation (see proxy.py): requests in flight at arrival (this one included);
        # (trace_id, span_id, parent_span_id | None, sampled) of the sidecar's span;
        # (generation, client's capture header | None, header sent, client bytes removed | None)
        self.inflight = 0
        self.trace: tuple[str, str, str | None, bool] | None = None
        self.tel: tuple[str, str | None, str, int | None] | None = None

    @property
    def held_bytes(self) -> int:
        return len(self.req_body) + len(self.resp_body)

    def to_tuple(self) -> tuple[Any, ...]:
        """Compact picklable form for the pipe to the recorder process (slot order)."""
        return _get_all(self)

    @classmethod
    def from_tuple(cls, values: tuple[Any, ...]) -> "RawCapture":
        raw = cls.__new__(cls)
        _set_all(raw, values)
        return raw


_SLOTS = RawCapture.__slots__
_get_all = operator.attrgetter(*_SLOTS)  # one C call on the hot path instead of 27 getattr()s


def _make_set_all() -> Any:
    """``raw.a, raw.b, ... = values`` for every slot, as one unpacking assignment: the
    recorder process rebuilds each capture from the pipe with it (0.2 µs; a setattr loop was
    1.2 µs). Generated from ``__slots__`` so the two can never disagree."""
    ns: dict[str, Any] = {}
    exec("def set_all(raw, values):\n    " + ", ".join(f"raw.{n}" for n in _SLOTS) + " = values\n", ns)  # noqa: S102
    return ns["set_all"]


_set_all = _make_set_all()


def keep_whole(body: bytes, limit: int) -> tuple[bytes, int, str | None, bool]:
    """(kept prefix, size, sha256 or None, truncated) for a body read whole on the hot path.

    The hash is computed here only when the body is cut (the worker cannot hash what it does
    not have); otherwise the worker hashes the complete bytes off the path.
    """
    if len(body) > limit:
        return body[:limit], len(body), hashlib.sha256(body).hexdigest(), True
    return body, len(body), None, False


class BodyTee:
    """A streamed body's capped prefix, full size and (only when cut) sha256, chunk by chunk.

    Hashing starts only once the body outgrows the limit: until then every byte is kept, and
    the worker hashes the kept bytes off the request path (sha256 of 1 MiB is ~2 ms of CPU).
    """

    __slots__ = ("limit", "parts", "held", "size", "_hash")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.held = 0
        self.size = 0
        self._hash: Any = None

    def feed(self, chunk: bytes) -> None:
        if self._hash is None and self.size + len(chunk) > self.limit:
            self._hash = hashlib.sha256(b"".join(self.parts))  # everything so far was kept
        if self._hash is not None:
            self._hash.update(chunk)
        self.size += len(chunk)
        if self.held < self.limit:
            piece = chunk[: self.limit - self.held]
            self.parts.append(piece)
            self.held += len(piece)

    def result(self) -> tuple[bytes, int, str | None, bool]:
        sha = self._hash.hexdigest() if self._hash is not None else None
        return b"".join(self.parts), self.size, sha, self.size > self.held


def decode_content(data: bytes, encoding: str | None, limit: int) -> tuple[bytes, str | None]:
    """Undo gzip/deflate/br for storage; a truncated stream decodes as far as it goes.

    Returns (decoded bytes, error or None). Output is capped at ``limit`` (a zip bomb in a
    captured prefix must not blow up the worker). Unknown encodings are stored as sent.
    """
    enc = (encoding or "").strip().lower()
    if not data or enc in ("", "identity"):
        return data, None
    cap = max(limit, 1)
    try:
        if enc in ("gzip", "x-gzip", "deflate"):
            wbits = 47 if enc != "deflate" else zlib.MAX_WBITS
            d = zlib.decompressobj(wbits)
            out = d.decompress(data, cap)
            return out, None
        if enc == "br" and _brotli is not None:
            d = _brotli.Decompressor()
            out = d.process(data)
            return out[:cap], None
    except (zlib.error, Exception) as exc:  # noqa: BLE001 - any decoder failure is data, not a crash
        if enc == "deflate":
            try:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, cap), None
            except zlib.error:
                pass
        return data, f"{enc} decode failed: {exc}"
    return data, f"unsupported content-encoding {enc!r}; stored as sent"


def _body(data: bytes, size: int, sha: str | None, truncated: bool,
          raw_headers: Any, redactor: Redactor, limit: int) -> Body:
    encoding = _content_encoding(raw_headers)
    decoded, err = decode_content(data, encoding, limit)
    return Body(
        data=redactor.body(decoded),
        size=size,
        sha256=sha if sha is not None else hashlib.sha256(data).hexdigest(),
        truncated=truncated,
        encoding=encoding,
        decode_error=err,
    )


def _content_encoding(raw: Any) -> str | None:
    """From the headers as captured (before redaction: a user may redact any header)."""
    for k, v in raw:
        if len(k) == 16 and k.lower() in (b"content-encoding", "content-encoding"):
            return v.decode("latin-1") if isinstance(v, bytes) else v
    return None


def build_exchange(raw: RawCapture, redactor: Redactor, body_limit: int) -> Exchange:
    """Turn a hot-path record into the redacted :class:`Exchange` every sink consumes."""
    base = raw.t0
    request = Request(
        method=raw.method,
        path=redactor.text(raw.path),
        headers=redactor.raw_header_pairs(raw.req_headers),
        body=_body(raw.req_body, raw.req_size, raw.req_sha256, raw.req_truncated,
                   raw.req_headers, redactor, body_limit),
        http_version=raw.version,
    )
    response = None
    if raw.status is not None:
        response = Response(
            status=raw.status,
            reason=raw.reason,
            headers=redactor.raw_header_pairs(raw.resp_headers),
            body=_body(raw.resp_body, raw.resp_size, raw.resp_sha256, raw.resp_truncated,
                       raw.resp_headers, redactor, body_limit),
        )

    def at(t: float | None) -> float | None:
        return None if t is None else raw.wall + (t - base)

    return Exchange(
        id=new_id(),
        request=request,
        response=response,
        timings=Timings(received=raw.wall, upstream_connected=at(raw.t_connected),
                        first_byte=at(raw.t_first_byte), done=at(raw.t_done)),
        client=raw.client,
        upstream=redactor.text(raw.upstream),
        failure=raw.failure,
        failure_detail=redactor.text(raw.failure_detail) if raw.failure_detail else None,
        trace_id=raw.trace[0] if raw.trace else None,
        span_id=raw.trace[1] if raw.trace else None,
        parent_span_id=raw.trace[2] if raw.trace else None,
        telemetry=None if raw.tel is None else {
            "generation": raw.tel[0], "client_asked": raw.tel[1], "sent": raw.tel[2],
            "stripped_bytes": raw.tel[3]},
        pool={"in_flight": raw.inflight} if raw.inflight else None,
    )
