"""Legacy query-engine HTTP server (Prisma 4–6): ``POST /``, ``/transaction/*``, status, metrics.

The engine answers failed queries with HTTP 200 and ``errors[]``, batch items positionally in
``batchResult`` and transaction-endpoint failures with a bare user-facing error and 404/422/504
(protocols.md A.5, A.6). :func:`decode_query` and :func:`decode_tx_start` are reused by the
Data Proxy decoder, which wraps the same bodies.

Protocol naming: ``engine-json`` / ``engine-graphql`` when the body says which; ``engine``
for body-less endpoints (transaction commit, status, metrics), where nothing on the wire tells
the two apart (:mod:`pdp_observe.transactions` refines a transaction from its queries).
"""

from __future__ import annotations

from typing import Any

from ..exchange import Operation
from . import errors
from ._wire import MAX_TEXT, Wire, as_dict, as_list, as_str, text_of
from .engine_body import EngineBody, parse_body
from .fingerprint import collapse_runs, fingerprint, shape_text
from .graphql import split_field

ENGINE = "engine"
_MISC = {"status": "health", "metrics": "metrics"}
_OTHER = frozenset({"sdl", "dmmf", "server_info", "boot_trace"})


def decode(w: Wire) -> Operation:
    """Decode one exchange with the legacy engine (detection already chose this generation)."""
    segs = w.segments
    if not segs:
        if w.method == "GET":
            return Operation(protocol=ENGINE, kind="other", details={"endpoint": "playground"})
        return decode_query(w)
    if segs[0] == "transaction":
        return _transaction(w)
    if segs[0] in _MISC:
        return _misc(w, _MISC[segs[0]])
    if segs[0] in _OTHER:
        return Operation(protocol=ENGINE, kind="other", details={"endpoint": segs[0]})
    return Operation(protocol=ENGINE, reason="unrecognised query-engine path")


def _misc(w: Wire, kind: str) -> Operation:
    op = Operation(protocol=ENGINE, kind=kind)
    if kind == "metrics":
        op.details["format"] = "json" if "format=json" in w.query else "prometheus"
    if w.failed:
        op.error_message = text_of(w.resp_body) or f"HTTP {w.status}"
    return op


def decode_query(w: Wire) -> Operation:
    """A query or batch body plus what its response says (errors, per-item failures)."""
    body, problem = w.req_json()
    decoded = parse_body(body) if problem is None else None
    if decoded is None:
        op = Operation(protocol=ENGINE, kind="query")
        op.reason = f"request {problem}" if problem else "not a Prisma engine request body"
        _from_response_data(op, w)
    else:
        op = from_body(decoded)
    op.txn = w.header("x-transaction-id")
    apply_response(op, w)
    return op


def from_body(decoded: EngineBody) -> Operation:
    """The Operation for a decoded engine body (single or batch)."""
    ops = decoded.ops
    problems = [o.problem for o in ops if o.problem]
    op = Operation(protocol=decoded.protocol, reason="; ".join(problems)[:MAX_TEXT] or None)
    op.sql = [o.sql for o in ops if o.sql is not None]
    if not decoded.batch:
        single = ops[0]
        op.kind, op.model, op.action = single.kind, single.model, single.action
        op.fingerprint = single.fingerprint
        op.details["shape"] = shape_text(single.shape)
        return op
    _batch_fields(op, decoded)
    return op


def _batch_fields(op: Operation, decoded: EngineBody) -> None:
    """A batch is one Operation; its model/action are set only when every item shares them."""
    ops = decoded.ops
    prints = [o.fingerprint for o in ops]
    op.kind = "batch"
    op.operations = [{"model": o.model, "action": o.action, "fingerprint": p} for o, p in zip(ops, prints)]
    models, actions = {o.model for o in ops}, {o.action for o in ops}
    op.model = models.pop() if len(models) == 1 else None
    op.action = actions.pop() if len(actions) == 1 else None
    op.fingerprint = fingerprint("batch", str(decoded.transactional), *collapse_runs([p or "?" for p in prints]))
    names = collapse_runs([f"{o.model or ''}.{o.action}" for o in ops])
    op.details.update(batch_size=len(ops), transactional=decoded.transactional)
    op.details["shape"] = shape_text("batch[" + ", ".join(names) + "]")
    op.isolation_level = decoded.isolation_level


def apply_response(op: Operation, w: Wire) -> None:
    """Errors of a query response: ``errors[]``, failed ``batchResult`` items, bare UFEs."""
    body, problem = w.resp_json()
    if problem is not None:
        op.error_code = errors.sniff_code(w.resp_body)
        if w.failed and op.error_code is None:
            op.error_message = text_of(w.resp_body) or f"HTTP {w.status}"
        return
    if not isinstance(body, dict):
        return
    errors.apply_all(op, errors.engine_errors(body))
    if "batchResult" in body:
        _batch_errors(op, as_list(body["batchResult"]))
    if errors.is_bare_ufe(body):
        errors.apply(op, errors.from_ufe(body))
        if w.status == 422 and "Error parsing" in (op.error_message or ""):
            op.details["protocol_mismatch"] = True


def _batch_errors(op: Operation, results: list[Any]) -> None:
    """Mark each failed batch item (items are positional) and report the first failure."""
    failed = []
    for index, item in enumerate(results):
        infos = errors.engine_errors(item)
        if not infos:
            continue
        failed.append(index)
        if index < len(op.operations):
            op.operations[index]["error_code"] = infos[0].code
        errors.apply(op, infos[0])
    if failed:
        op.details["failed_operations"] = failed


def _from_response_data(op: Operation, w: Wire) -> None:
    """Undecodable request: the response key ``<action><Model>`` still names the operation."""
    body, _ = w.resp_json()
    data = as_dict(as_dict(body).get("data"))
    if len(data) == 1:
        op.model, op.action = split_field(next(iter(data)))


def _transaction(w: Wire) -> Operation:
    segs = w.segments
    if segs[1:] == ("start",):
        op = Operation(protocol=ENGINE, kind="tx_start")
        decode_tx_start(op, w)
    elif len(segs) == 3 and segs[2] in ("commit", "rollback"):
        op = Operation(protocol=ENGINE, kind="tx_" + segs[2], txn=segs[1])
    else:
        return Operation(protocol=ENGINE, reason="unrecognised transaction path")
    apply_tx_errors(op, w)
    return op


def decode_tx_start(op: Operation, w: Wire) -> None:
    """Options from the start body (snake_case on engines, camelCase on the executor), id from the response."""
    body, _ = w.req_json()
    options = as_dict(body)
    op.isolation_level = as_str(options.get("isolation_level")) or as_str(options.get("isolationLevel"))
    for wire_key, key in (("max_wait", "max_wait_ms"), ("maxWait", "max_wait_ms"), ("timeout", "timeout_ms")):
        value = options.get(wire_key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            op.details[key] = value
    resp, _ = w.resp_json()
    op.txn = as_str(as_dict(resp).get("id"))


def apply_tx_errors(op: Operation, w: Wire) -> None:
    """Transaction endpoints fail with a bare UFE (P2028) or, for bad options, plain text."""
    body, problem = w.resp_json()
    if errors.is_bare_ufe(body):
        errors.apply(op, errors.from_ufe(body))
    elif w.failed:
        op.error_code = errors.sniff_code(w.resp_body) if problem else None
        op.error_message = text_of(w.resp_body) or f"HTTP {w.status}"
