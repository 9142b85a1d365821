"""An OTLP/HTTP trace receiver: the spans the Prisma engine (or any OTel SDK) sends the sidecar.

A Prisma engine started with ``--enable-open-telemetry``, or an app's own OTel SDK, can export
its spans to the sidecar's admin listener instead of (or on the way to) a collector. The sidecar
links them to recorded exchanges by trace id; this module only receives them:

- :func:`decode_traces` turns one ``POST /v1/traces`` body into :class:`ReceivedSpan` values.
  It is pure, and every bad input becomes an :class:`OtlpDecodeError` with one of three reasons,
  never another exception, because it runs inside a server on bytes anyone can send.
- :class:`OtlpReceiver` serves ``POST /v1/traces`` as the OTLP/HTTP spec asks: protobuf and
  JSON bodies, gzip, 200 with an ``ExportTraceServiceResponse`` (``partial_success`` when some
  spans had unusable ids), 400/413/415 with a ``google.rpc.Status`` in the request's format.
- :class:`OtlpForwarder` re-sends the bodies it accepted to a real collector from a background
  task with a bounded queue, so a slow or dead collector costs counted drops, never the
  exporter's answer.

OTLP/JSON is the protobuf JSON mapping with the OTLP exceptions: trace and span ids are hex
(not base64), enums are integers; int64 may be a string or a number, field names are
lowerCamelCase. Hex ids are rewritten to base64 and the document is then parsed by protobuf's
own ``json_format``, so both formats end in the same message and one conversion.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import re
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping

import aiohttp
import orjson
from aiohttp import web
from aiohttp.web_urldispatcher import _default_expect_handler
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = [
    "DEFAULT_MAX_BYTES",
    "OtlpDecodeError",
    "OtlpForwarder",
    "OtlpReceiver",
    "ReceivedSpan",
    "decode_traces",
    "traces_url",
]

log = logging.getLogger("pdp_observe.engine.otlp")

TRACES_PATH = "/v1/traces"
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
"""Largest request body accepted (an SDK batch of 512 spans is typically 100-300 KiB)."""

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_MEDIA_TYPES = {PROTOBUF: "protobuf", "application/protobuf": "protobuf", JSON: "json"}

_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_HEX = re.compile(r"[0-9a-fA-F]*")
_PLAIN_JSON = re.compile(rb"^\s*\{")

# gRPC codes for google.rpc.Status.code (the OTLP spec says clients must not act on it).
_INVALID_ARGUMENT = 3
_RESOURCE_EXHAUSTED = 8


# --------------------------------------------------------------------------- the record


@dataclass(slots=True)
class ReceivedSpan:
    """One span as the sidecar keeps it: ids in lowercase hex, times in epoch seconds.

    ``attributes`` holds JSON values only: OTLP ``bytesValue`` becomes its base64 string (as in
    OTLP/JSON) and a non-finite double its proto3 JSON spelling (``"NaN"``, ``"Infinity"``),
    so :meth:`to_dict` is strict JSON whatever the sender put in.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start: float
    end: float
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "unset"
    service_name: str | None = None
    scope: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with stable keys (the field names)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReceivedSpan:
        """The inverse of :meth:`to_dict`; optional keys may be missing (older records)."""
        parent = data.get("parent_span_id")
        return cls(
            trace_id=str(data["trace_id"]),
            span_id=str(data["span_id"]),
            parent_span_id=str(parent) if parent else None,
            name=str(data.get("name", "")),
            kind=str(data.get("kind", "unspecified")),
            start=float(data.get("start", 0.0)),
            end=float(data.get("end", 0.0)),
            attributes=dict(data.get("attributes") or {}),
            status=str(data.get("status", "unset")),
            service_name=data.get("service_name"),
            scope=data.get("scope"),
        )


class OtlpDecodeError(ValueError):
    """Why a request body could not be turned into spans.

    ``reason`` is one of ``unsupported_media_type``, ``bad_encoding`` (unknown
    Content-Encoding, corrupt compressed data, or a body that inflates past the limit) and
    ``undecodable``. ``status`` is the HTTP answer the receiver gives for it, because one
    reason can deserve two: an unknown Content-Encoding is a 415 (RFC 9110 §15.5.16), corrupt
    gzip a 400, a decompression bomb a 413.
    """

    REASONS = ("unsupported_media_type", "bad_encoding", "undecodable")

    def __init__(self, reason: str, detail: str = "", status: int = 400) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.status = status


# --------------------------------------------------------------------------- decoding


def media_format(content_type: str | None) -> str | None:
    """``"protobuf"``, ``"json"`` or ``None`` for a Content-Type header (parameters ignored)."""
    return _MEDIA_TYPES.get((content_type or "").split(";", 1)[0].strip().lower())


def decode_traces(
    body: bytes,
    content_type: str,
    content_encoding: str | None = None,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_BYTES * 16,
) -> list[ReceivedSpan]:
    """The spans in one OTLP/HTTP ``/v1/traces`` request body.

    Spans with unusable ids (wrong length or all zero) are left out; :class:`OtlpReceiver`
    reports them as ``partial_success``. An empty body is ``undecodable``: protobuf would
    read it as an empty request, but no exporter sends one, so it is a broken client.
    Raises :class:`OtlpDecodeError` and nothing else.
    """
    return _decode(body, content_type, content_encoding, max_decoded_bytes)[0]


def _decode(
    body: bytes, content_type: str | None, content_encoding: str | None, max_decoded_bytes: int
) -> tuple[list[ReceivedSpan], int]:
    """``(spans, number of spans left out)``; the one place exceptions are mapped."""
    fmt = media_format(content_type)
    if fmt is None:
        raise OtlpDecodeError("unsupported_media_type", f"content-type {content_type!r}", 415)
    try:
        data = _decompress(bytes(body), content_encoding, max_decoded_bytes)
        if not data:
            raise OtlpDecodeError("undecodable", "empty body")
        request = _parse_protobuf(data) if fmt == "protobuf" else _parse_json(data)
        return _spans(request)
    except OtlpDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - last guard: a decoder bug is one 400, not a 500
        raise OtlpDecodeError("undecodable", f"{type(exc).__name__}: {exc}"[:300]) from None


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo gzip/deflate with a bound on the output (a 1 MiB gzip can inflate to 1 GiB)."""
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":  # RFC 9110 says zlib format; some clients send raw deflate
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    else:
        raise OtlpDecodeError("bad_encoding", f"unsupported content-encoding {encoding!r}", 415)
    out = bytearray()
    data = body
    try:
        while True:  # gzip allows several members back to back
            d = zlib.decompressobj(wbits)
            out += d.decompress(data, limit - len(out) + 1)
            if len(out) > limit:
                raise OtlpDecodeError("bad_encoding", f"decompressed body larger than {limit} bytes", 413)
            if not d.eof:
                raise OtlpDecodeError("bad_encoding", f"truncated {enc} data")
            data = d.unused_data
            if wbits <= zlib.MAX_WBITS or not data.strip(b"\0"):
                break
    except zlib.error as exc:
        raise OtlpDecodeError("bad_encoding", f"{enc}: {exc}") from None
    return bytes(out)


def _parse_protobuf(data: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(data)


def _parse_json(data: bytes) -> ExportTraceServiceRequest:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise OtlpDecodeError("undecodable", f"invalid JSON: {exc}"[:300]) from None
    if not isinstance(doc, dict):
        raise OtlpDecodeError("undecodable", "JSON body is not an object")
    _ids_hex_to_base64(doc)
    return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)


_SPAN_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_LINK_ID_KEYS = ("traceId", "spanId", "trace_id", "span_id")


def _ids_hex_to_base64(doc: dict[str, Any]) -> None:
    """OTLP/JSON's hex ids → the base64 ``json_format`` expects, in place.

    Wrong shapes are left alone for ``ParseDict`` to reject with a proper message; only a
    non-hex id is reported here, since base64 decoding would silently accept most of them.
    """
    for rs in _list(doc.get("resourceSpans", doc.get("resource_spans"))):
        if not isinstance(rs, dict):
            continue
        for ss in _list(rs.get("scopeSpans", rs.get("scope_spans"))):
            if not isinstance(ss, dict):
                continue
            for span in _list(ss.get("spans")):
                if not isinstance(span, dict):
                    continue
                _rewrite(span, _SPAN_ID_KEYS)
                for link in _list(span.get("links")):
                    if isinstance(link, dict):
                        _rewrite(link, _LINK_ID_KEYS)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _rewrite(obj: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str):
            if len(value) % 2 or not _HEX.fullmatch(value):
                raise OtlpDecodeError("undecodable", f"{key} {value[:40]!r} is not hex")
            obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _spans(request: ExportTraceServiceRequest) -> tuple[list[ReceivedSpan], int]:
    spans: list[ReceivedSpan] = []
    invalid = 0
    for rs in request.resource_spans:
        service = None
        for kv in rs.resource.attributes:
            if kv.key == "service.name" and kv.value.WhichOneof("value") == "string_value":
                service = kv.value.string_value
        for ss in rs.scope_spans:
            scope = ss.scope.name or None
            for span in ss.spans:
                received = _span(span, service, scope)
                if received is None:
                    invalid += 1
                else:
                    spans.append(received)
    return spans, invalid


def _span(span: Span, service: str | None, scope: str | None) -> ReceivedSpan | None:
    """``None`` for a span whose ids cannot be linked to anything (the spec calls them invalid)."""
    tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
    if len(tid) != 16 or len(sid) != 8 or not any(tid) or not any(sid) or len(pid) not in (0, 8):
        return None
    return ReceivedSpan(
        trace_id=tid.hex(),
        span_id=sid.hex(),
        parent_span_id=pid.hex() if any(pid) else None,
        name=span.name,
        kind=_KINDS.get(span.kind, "unspecified"),
        start=span.start_time_unix_nano / 1e9,
        end=span.end_time_unix_nano / 1e9,
        attributes=_attributes(span.attributes),
        status=_STATUS.get(span.status.code, "unset"),
        service_name=service,
        scope=scope,
    )


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "bool_value":
        return v.bool_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        d = v.double_value
        return d if math.isfinite(d) else ("NaN" if math.isnan(d) else ("Infinity" if d > 0 else "-Infinity"))
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return _attributes(v.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return None  # an empty AnyValue is the OTLP way of saying null


# --------------------------------------------------------------------------- the server


_SERVER_INFLATES = frozenset({"gzip", "deflate", "br", "zstd"})
"""The Content-Encodings aiohttp's server undoes by itself (``auto_decompress``, the default)."""


def _looks_plain(body: bytes, fmt: str) -> bool:
    """Whether a body labelled compressed is already plain OTLP of its format.

    aiohttp's server undoes gzip/deflate/br/zstd itself unless its runner was made with
    ``auto_decompress=False``, and a handler cannot ask which (the flag lives in the C
    parser). The body tells: a serialized ``ExportTraceServiceRequest`` starts with field 1's
    tag (0x0a), OTLP/JSON with ``{``; gzip (1f 8b), zlib (78 ..) and zstd never do.
    """
    return body[:1] == b"\x0a" if fmt == "protobuf" else bool(_PLAIN_JSON.match(body))


class OtlpReceiver:
    """``POST /v1/traces`` for the admin app; mount with ``app.add_routes(receiver.routes())``.

    ``max_bytes`` bounds the body as it arrives (Content-Length first, then while reading, so
    an oversized body is answered 413 without being read) and after decompression (aiohttp
    usually inflates before the handler sees the body, so the same bound holds whatever the
    runner's ``auto_decompress``). ``on_spans`` runs on the event loop and must be quick; an
    exception from it is counted in ``stats["on_spans_errors"]``, never sent to the exporter,
    which would only retry the same batch.
    """

    def __init__(
        self,
        on_spans: Callable[[list[ReceivedSpan]], None],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        forwarder: OtlpForwarder | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.forwarder = forwarder
        self._on_spans = on_spans
        self.stats: dict[str, Any] = {
            "requests": 0,
            "spans": 0,
            "invalid_spans": 0,
            "rejected": {"too_large": 0, "unsupported_media_type": 0, "bad_encoding": 0, "undecodable": 0},
            "on_spans_errors": 0,
        }

    def routes(self) -> list[web.RouteDef]:
        return [web.post(TRACES_PATH, self._handle, expect_handler=self._expect)]

    # -- request handling

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """Answer ``Expect: 100-continue`` with the verdict when headers already decide it."""
        rejection = self._check_headers(request)
        if rejection is not None:
            self.stats["requests"] += 1
            return rejection
        return await _default_expect_handler(request)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.stats["requests"] += 1
        rejection = self._check_headers(request)
        if rejection is not None:
            return rejection
        fmt = media_format(request.content_type) or "json"
        body, failure = await self._read_body(request)
        if failure is not None:
            return failure
        encoding = request.headers.get("Content-Encoding")
        if encoding and encoding.strip().lower() in _SERVER_INFLATES and _looks_plain(body, fmt):
            encoding = None  # the server already inflated it (see _looks_plain)
        try:
            spans, invalid = _decode(body, request.headers.get("Content-Type"), encoding, self.max_bytes)
        except OtlpDecodeError as exc:
            reason = "too_large" if exc.status == 413 else exc.reason
            return self._reject(reason, exc.status, exc.detail or exc.reason, fmt)
        if self.forwarder is not None:
            self.forwarder.submit(body, request.headers.get("Content-Type", PROTOBUF), encoding)
        self.stats["spans"] += len(spans)
        self.stats["invalid_spans"] += invalid
        if spans:
            try:
                self._on_spans(spans)
            except Exception as exc:  # noqa: BLE001 - the consumer's bug is counted, not the exporter's
                self.stats["on_spans_errors"] += 1
                log.debug("on_spans failed: %r", exc)
        reply = ExportTraceServiceResponse()
        if invalid:
            reply.partial_success.rejected_spans = invalid
            reply.partial_success.error_message = f"{invalid} spans with invalid trace or span ids"
        return _message_response(200, reply, fmt)

    def _check_headers(self, request: web.Request) -> web.Response | None:
        """413 on a declared oversize body and 415 on a foreign media type, before any read."""
        fmt = media_format(request.headers.get("Content-Type"))
        length = request.content_length
        if length is not None and length > self.max_bytes:
            return self._reject("too_large", 413, f"body of {length} bytes exceeds {self.max_bytes}", fmt)
        if fmt is None:
            ctype = request.headers.get("Content-Type", "")
            return self._reject("unsupported_media_type", 415, f"content-type {ctype!r}; use {PROTOBUF} or {JSON}", None)
        return None

    async def _read_body(self, request: web.Request) -> tuple[bytes, web.StreamResponse | None]:
        """The body, or a 413 as soon as it passes ``max_bytes`` (the rest is never buffered)."""
        fmt = media_format(request.content_type)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    return b"", self._reject("too_large", 413, f"body exceeds {self.max_bytes} bytes", fmt)
                chunks.append(chunk)
        except web.RequestPayloadError as exc:
            # aiohttp inflates gzip/deflate itself and reports corrupt data (and broken
            # chunking) here. The stream is dead: answer, then close the connection ourselves,
            # or aiohttp's lingering read would hit the same error and log it as unhandled.
            reason = "bad_encoding" if request.headers.get("Content-Encoding") else "undecodable"
            resp = self._reject(reason, 400, f"unreadable body: {exc}"[:300], fmt)
            try:
                await resp.prepare(request)
                await resp.write_eof()
            except OSError:
                pass
            if request.protocol is not None:
                request.protocol.force_close()
            return b"", resp
        except OSError as exc:  # the client went away mid-body; nobody will read the answer
            return b"", self._reject("undecodable", 400, f"connection lost: {exc}"[:300], fmt)
        return b"".join(chunks), None

    def _reject(self, reason: str, status: int, message: str, fmt: str | None) -> web.Response:
        self.stats["rejected"][reason] += 1
        code = _RESOURCE_EXHAUSTED if status == 413 else _INVALID_ARGUMENT
        resp = _message_response(status, Status(code=code, message=message), fmt or "json")
        if status == 413:
            # The rest of the body is not wanted; aiohttp discards what is in flight for at
            # most its lingering time (so the 413 is not lost to a TCP reset), then closes.
            resp.force_close()
        return resp


def _message_response(status: int, message: Any, fmt: str) -> web.Response:
    """A protobuf message as the body, encoded as the request was (the OTLP/HTTP rule)."""
    if fmt == "protobuf":
        return web.Response(status=status, body=message.SerializeToString(), content_type=PROTOBUF)
    text = json_format.MessageToJson(message, indent=None)
    return web.Response(status=status, body=text.encode(), content_type=JSON)


# --------------------------------------------------------------------------- forwarding


def traces_url(endpoint: str) -> str:
    """The OTLP base-URL rule: ``http://c:4318`` → ``http://c:4318/v1/traces``; a URL that
    already ends with ``/v1/traces`` is used as is."""
    if endpoint.rstrip("/").endswith(TRACES_PATH):
        return endpoint
    return endpoint.rstrip("/") + TRACES_PATH


class OtlpForwarder:
    """Re-sends accepted request bodies, unchanged, to a collector's ``/v1/traces``.

    :meth:`submit` never waits: a full queue (``max_queue`` bodies) drops the newest body and
    counts it in ``stats["dropped"]``. One background task sends them in order; a failure
    (connection error, timeout, non-2xx) is counted in ``stats["failed"]`` with
    ``stats["last_error"]`` and not retried, so a dead collector costs a bounded queue, never
    memory or the exporter's answer. When aiohttp inflated a gzip body before the receiver saw
    it, the body goes on uncompressed (without Content-Encoding): the same request, re-encoded
    by nobody. Own the lifetime with :meth:`start`/:meth:`stop`, or
    ``app.cleanup_ctx.append(forwarder.lifespan)``; bodies submitted before :meth:`start` wait
    in the queue. There is no loop guard: pointing it at its own receiver resends forever.
    """

    def __init__(
        self,
        endpoint: str,
        max_queue: int = 1000,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = traces_url(endpoint)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._headers = dict(headers or {})
        self._queue: asyncio.Queue[tuple[bytes, str, str | None]] = asyncio.Queue(maxsize=max(1, max_queue))
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.stats: dict[str, Any] = {"queued": 0, "sent": 0, "failed": 0, "dropped": 0, "last_error": None}

    def submit(self, body: bytes, content_type: str, content_encoding: str | None = None) -> bool:
        """Queue one body for sending; ``False`` (and counted) when it had to be dropped."""
        if self._closed:
            self.stats["dropped"] += 1
            return False
        try:
            self._queue.put_nowait((body, content_type, content_encoding))
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            return False
        self.stats["queued"] = self._queue.qsize()
        return True

    async def start(self) -> None:
        """Start the sending task (on the running loop)."""
        if self._task is None:
            self._closed = False
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._task = asyncio.create_task(self._run(), name="otlp-forwarder")

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Send what is queued for at most ``drain_timeout`` seconds, then stop; what is left
        is counted as dropped. Leaves no task or connection behind."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            if not task.done():
                try:
                    await asyncio.wait_for(self._queue.join(), drain_timeout)
                except TimeoutError:
                    pass
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            self.stats["dropped"] += 1
        self.stats["queued"] = 0
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def lifespan(self, _app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: start with the app, stop (draining) with it."""
        await self.start()
        yield
        await self.stop()

    async def _run(self) -> None:
        while True:
            body, ctype, encoding = await self._queue.get()
            try:
                await self._send(body, ctype, encoding)
            finally:
                self._queue.task_done()
                self.stats["queued"] = self._queue.qsize()

    async def _send(self, body: bytes, content_type: str, content_encoding: str | None) -> None:
        assert self._session is not None
        headers = {**self._headers, "Content-Type": content_type}
        if content_encoding:
            headers["Content-Encoding"] = content_encoding
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    self.stats["sent"] += 1
                    return
                error = f"HTTP {resp.status}"
        except asyncio.CancelledError:
            self.stats["dropped"] += 1  # stop() gave up on it: lost, and counted as such
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is one counted loss
            error = f"{type(exc).__name__}: {exc}"[:300]
        self.stats["failed"] += 1
        self.stats["last_error"] = error
        log.debug("OTLP forward to %s failed: %s", self.url, error)
