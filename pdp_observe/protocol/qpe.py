"""Prisma 7 query-plan executor (Accelerate, ``prisma dev``): ``/query``, ``/transaction/*``.

Requests carry a compiled plan with the SQL inside (:mod:`.plan`); transaction ids are UUIDs
in the path, returned by ``/transaction/start`` in the body and the ``Prisma-Transaction-Id``
header. Errors are ``{code, error, meta}`` with 400 (P1xxx/P2xxx), 409 (P2028), 422 (resource
limits, no code) or 500 (protocols.md C.2–C.3). For a body without a code the client raises
the ``Prisma-Error-Code`` header or P6000; that is kept in ``details["client_code"]``.
"""

from __future__ import annotations

import re

from ..exchange import Operation
from . import errors
from ._wire import MAX_TEXT, Wire, as_dict, as_str, bounded, text_of
from .engine import decode_tx_start
from .engine_body import RAW_ACTIONS
from .fingerprint import fingerprint, normalize_sql, shape_text, value_sig
from .plan import statements

QPE = "qpe"
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+")
_PATHS = {("connection-info",): "connection_info", ("health",): "health"}


def owns(segments: tuple[str, ...]) -> bool:
    """Paths only the executor serves (``/transaction/…`` is shared: see detection)."""
    return segments in (("query",), ("connection-info",), ("health",)) or (
        len(segments) == 3 and segments[0] == "transaction" and segments[2] == "query"
    )


def decode(w: Wire) -> Operation:
    """Decode one executor exchange."""
    segs = w.segments
    if segs == ("query",):
        op = _query(w, None)
    elif segs in _PATHS:
        op = Operation(kind=_PATHS[segs])
        _connection_info(op, w)
    elif segs[:1] == ("transaction",):
        op = _transaction(w, segs)
    else:
        op = Operation(reason="unrecognised query-plan-executor path")
    op.protocol = QPE
    version = w.header("prisma-engine-hash")  # the 7.x client sends its own version here
    if version and _VERSION.match(version):
        op.client_version = version
    _errors(op, w)
    return op


def _transaction(w: Wire, segs: tuple[str, ...]) -> Operation:
    if segs[1:] == ("start",):
        op = Operation(kind="tx_start")
        decode_tx_start(op, w)
        op.txn = op.txn or w.resp_header("prisma-transaction-id")
        return op
    if len(segs) == 3 and segs[2] == "query":
        return _query(w, segs[1])
    if len(segs) == 3 and segs[2] in ("commit", "rollback"):
        return Operation(kind="tx_" + segs[2], txn=segs[1])
    return Operation(reason="unrecognised transaction path")


def _query(w: Wire, txn: str | None) -> Operation:
    """``{model?, operation, plan, params}``: model, action and every SQL statement."""
    body, problem = w.req_json()
    if problem is not None or not isinstance(body, dict):
        return Operation(kind="query", txn=txn, reason=f"request {problem or 'is not a JSON object'}")
    model, action = as_str(body.get("model")), as_str(body.get("operation"))
    sql, cut = statements(body.get("plan"))
    op = Operation(kind="raw" if action in RAW_ACTIONS else "query", model=model, action=action, txn=txn, sql=sql)
    if action is None:
        op.reason = "query without an operation"
        return op
    raw = op.kind == "raw"
    shapes = [normalize_sql(s.sql, numbers=raw) for s in sql]
    signature = "\n".join(shapes) if shapes else value_sig(body.get("plan"))
    op.fingerprint = fingerprint(model, action, signature)
    first = shapes[0] if shapes else ""
    more = f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""
    name = f"{action}" if raw else f"{model or ''}.{action}"
    op.details.update(statement_count=len(sql), shape=shape_text(f"{name}: {first}{more}"))
    if cut:
        op.reason = "plan too large: SQL list incomplete"
    return op


def _connection_info(op: Operation, w: Wire) -> None:
    body, _ = w.resp_json()
    info = as_dict(body)
    if op.kind == "connection_info" and info:
        op.details["provider"] = as_str(info.get("provider"))
        joins = as_dict(info.get("connectionInfo")).get("supportsRelationJoins")
        if isinstance(joins, bool):
            op.details["supports_relation_joins"] = joins


def _errors(op: Operation, w: Wire) -> None:
    """``{code?, error, meta?}`` on any status ≥ 400; a non-JSON body is kept as text."""
    if not w.failed:
        return
    body, problem = w.resp_json()
    if isinstance(body, dict):
        op.error_code = as_str(body.get("code"))
        message = as_str(body.get("error")) or as_str(body.get("message"))
        op.error_message = message[:MAX_TEXT] if message else f"HTTP {w.status}"
        if body.get("meta") not in (None, {}, []):
            op.details["error_meta"] = bounded(body["meta"])
    else:
        op.error_code = errors.sniff_code(w.resp_body) if problem else None
        op.error_message = text_of(w.resp_body) or f"HTTP {w.status}"
    if op.error_code is None:
        op.details["client_code"] = w.resp_header("prisma-error-code") or "P6000"
