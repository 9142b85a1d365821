"""Data Proxy / Accelerate (``DataProxyEngine``, Prisma 4–6): ``/<clientVersion>/<schemaHash>/…``.

The bodies are the engine's (decoded by :mod:`.engine`); what this layer adds is the URL
(client version, schema hash, itx id), the lazy schema upload and the proxy's own error
bodies, mapped to the P5xxx codes the client raises for them (protocols.md B.2, B.5). The
API key travels in ``Authorization``/``api_key`` and is never read here: nothing from the
request headers or query string reaches the Operation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from ..exchange import Operation
from . import engine
from ._wire import Wire, as_dict, as_str, text_of

DATAPROXY = "dataproxy"
SCHEMA_HASH = re.compile(r"^[0-9a-f]{64}$")
_MODEL = re.compile(r"^[ \t]*model[ \t]+([A-Za-z_]\w*)[ \t]*\{", re.M)

# EngineNotStarted reasons → the client's error code and message (responseToError.ts).
_NOT_STARTED = {
    "SchemaMissing": ("P5005", "Schema needs to be uploaded"),
    "EngineVersionNotSupported": ("P5012", "Engine version is not supported"),
    "EngineStartupError": ("P5014", "Unknown engine startup error"),
    "HealthcheckTimeout": ("P5013", "Engine not started: healthcheck timeout"),
}
_MISROUTED = {
    "IDParseError": "Could not parse interactive transaction ID",
    "NoQueryEngineFoundError": "Could not find Query Engine for the specified host and transaction ID",
    "TransactionStartError": "Could not start interactive transaction",
}
_BY_STATUS = ((401, "P5007"), (403, "P5007"), (404, "P5003"), (429, "P5008"), (504, "P5009"))


def matches(segments: tuple[str, ...]) -> bool:
    """``/<clientVersion>/<64-hex schemaHash>/…``: no other Prisma server has this shape."""
    return len(segments) >= 3 and bool(SCHEMA_HASH.match(segments[1]))


def decode(w: Wire) -> Operation:
    """Decode one Data Proxy exchange (:func:`matches` was true)."""
    version, schema_hash, rest = w.segments[0], w.segments[1], w.segments[2:]
    op = _route(w, rest, schema_hash)
    op.protocol, op.client_version, op.schema_hash = DATAPROXY, version, schema_hash
    _proxy_errors(op, w)
    return op


def _route(w: Wire, rest: tuple[str, ...], schema_hash: str) -> Operation:
    if rest == ("graphql",):
        return _query(w)
    if rest == ("schema",):
        return _schema(w, schema_hash)
    if rest == ("transaction", "start"):
        return _tx_start(w)
    if len(rest) == 3 and rest[0] == "itx":
        if rest[2] == "graphql":
            op = _query(w)
            op.txn = rest[1]
            return op
        if rest[2] in ("commit", "rollback"):
            op = Operation(kind="tx_" + rest[2], txn=rest[1])
            engine.apply_tx_errors(op, w)
            return op
    return Operation(kind="other", reason="unrecognised Data Proxy path")


def _query(w: Wire) -> Operation:
    op = engine.decode_query(w)
    op.details["engine_protocol"] = op.protocol
    return op


def _tx_start(w: Wire) -> Operation:
    op = Operation(kind="tx_start")
    engine.decode_tx_start(op, w)
    engine.apply_tx_errors(op, w)
    body, _ = w.resp_json()
    endpoint = as_str(as_dict(as_dict(body).get("data-proxy")).get("endpoint"))
    if endpoint:
        op.details["itx_endpoint"] = endpoint.split("?", 1)[0]  # never keep a query string
    return op


def _schema(w: Wire, schema_hash: str) -> Operation:
    """``PUT …/schema``: the base64 schema text, whose sha256 *is* the schemaHash (B.2)."""
    text = w.req_body
    op = Operation(kind="schema_upload", details={"schema_size": len(text)})
    if w.truncated:
        op.reason = "schema body truncated: hash not verified"
    else:
        digest = hashlib.sha256(text).hexdigest()
        op.details.update(schema_sha256=digest, schema_hash_match=digest == schema_hash)
    models = _models(text)
    if models is None:
        op.reason = op.reason or "schema upload is not base64 text"
    else:
        op.details["models"] = models
    return op


def _models(text: bytes) -> list[str] | None:
    """Model names from the uploaded schema (a truncated upload yields those before the cut)."""
    usable = text.strip()
    usable = usable[: len(usable) - len(usable) % 4]
    try:
        schema = base64.b64decode(usable, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None
    return _MODEL.findall(schema)


def _proxy_errors(op: Operation, w: Wire) -> None:
    """The proxy's own error bodies, then the client's status fallback (B.5 steps 3–5)."""
    body, _ = w.resp_json()
    mapped = _classify(body)
    if mapped is not None:
        code, message, raw = mapped
        op.details["dp_error"] = raw
        if code is not None:
            op.error_code, op.error_message = code, message
            return
    if w.failed and op.error_code is None:
        op.error_code = _status_code(w.status or 0)
        op.error_message = op.error_message or text_of(w.resp_body) or f"HTTP {w.status}"


def _classify(body: Any) -> tuple[str | None, str | None, str] | None:
    """``(code, message, raw reason)`` of a proxy error body; code None = fall back to status."""
    if body == "InternalDataProxyError":
        return "P5006", "Internal Data Proxy error", body
    if not isinstance(body, dict) or len(body) != 1:
        return None
    kind, inner = next(iter(body.items()))
    reason = as_dict(inner).get("reason")
    if kind == "EngineNotStarted":
        return _not_started(reason)
    if kind == "InteractiveTransactionMisrouted":
        message = _MISROUTED.get(reason) if isinstance(reason, str) else None
        return "P5015", message or "Interactive transaction error", f"{kind}.{reason}"
    if kind == "InvalidRequestError":
        return "P5011", as_str(reason) or "Request parameters are invalid", kind
    return None


def _not_started(reason: Any) -> tuple[str | None, str | None, str]:
    name = reason if isinstance(reason, str) else next(iter(as_dict(reason)), "?")
    raw = f"EngineNotStarted.{name}"
    detail = as_dict(as_dict(reason).get(name))
    if name == "KnownEngineStartupError":
        return as_str(detail.get("error_code")) or "P5014", as_str(detail.get("msg")), raw
    if name in _NOT_STARTED:
        code, message = _NOT_STARTED[name]
        return code, as_str(detail.get("msg")) or message, raw
    return None, None, raw


def _status_code(status: int) -> str:
    """What the client raises for an unrecognised error body with this HTTP status."""
    for match, code in _BY_STATUS:
        if status == match:
            return code
    return "P5006" if status >= 500 else "P5000"
