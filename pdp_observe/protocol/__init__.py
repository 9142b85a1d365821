"""Pure decoders: what Prisma asked for, from one recorded HTTP exchange.

:func:`decode` detects the wire generation and hands the exchange to one module per
generation — :mod:`.engine` (legacy query engine, JSON and GraphQL protocols),
:mod:`.dataproxy` (Data Proxy / Accelerate), :mod:`.qpe` (Prisma 7 query-plan executor) —
which all return the one :class:`~pdp_observe.exchange.Operation`. Everything here is a pure
function of its arguments: no I/O, no globals, and no exception for any input, because it runs
on every captured exchange and a decoder bug must cost one Operation, never the pipeline.

Detection, most specific first:

1. ``/<clientVersion>/<64-hex schemaHash>/…`` → Data Proxy.
2. ``/query``, ``/connection-info``, ``/health``, ``/transaction/<id>/query`` → executor.
3. other ``/transaction/…`` (both servers have them) → executor if any of: the tx id is a
   UUID (engines use cuid/cuid2), the start body is camelCase (``maxWait``), the response
   has ``Prisma-Transaction-Id`` or a UUID ``id``, the request has ``Authorization`` or a
   version-like ``Prisma-Engine-Hash`` (``7.2.0``; engine clients send neither); else engine.
4. ``/``, ``/status``, ``/metrics``, ``/sdl``, ``/dmmf``, ``/server_info``, ``/boot_trace`` →
   engine. Anything else → ``protocol="unknown"`` with a ``reason``.

``details`` keys a decoder may fill: ``shape`` (value-free query shape), ``statement_count``,
``batch_size``, ``transactional``, ``failed_operations``, ``error_meta``, ``error_codes``,
``protocol_mismatch``, ``client_code``, ``dp_error``, ``engine_protocol``, ``itx_endpoint``,
``max_wait_ms``, ``timeout_ms``, ``schema_size``, ``schema_sha256``, ``schema_hash_match``,
``models``, ``provider``, ``supports_relation_joins``, ``endpoint``, ``format``.
"""

from __future__ import annotations

from ..exchange import Operation
from . import dataproxy, engine, qpe
from ._wire import Wire, as_dict, as_str

__all__ = ["decode"]

_ENGINE_ROOTS = frozenset({"transaction", "status", "metrics", "sdl", "dmmf", "server_info", "boot_trace"})


def decode(
    method: str,
    path: str,
    req_headers: list[tuple[str, str]],
    req_body: bytes,
    status: int | None = None,
    resp_headers: list[tuple[str, str]] | None = None,
    resp_body: bytes | None = None,
    *,
    truncated: bool = False,
) -> Operation:
    """The Prisma operation in one exchange; never raises (see the module docstring)."""
    try:
        w = Wire(method, path, req_headers, req_body, status, resp_headers, resp_body, truncated)
        return _dispatch(w)
    except Exception as exc:  # noqa: BLE001 - last guard: mapped into the Operation, not lost
        return Operation(reason=f"decoder error: {type(exc).__name__}: {exc}"[:300])


def _dispatch(w: Wire) -> Operation:
    segs = w.segments
    if dataproxy.matches(segs):
        return dataproxy.decode(w)
    if qpe.owns(segs):
        return qpe.decode(w)
    if segs[:1] == ("transaction",):
        return qpe.decode(w) if _looks_qpe(w) else engine.decode(w)
    if not segs or segs[0] in _ENGINE_ROOTS:
        return engine.decode(w)
    return Operation(reason="path is not a Prisma endpoint")


def _looks_qpe(w: Wire) -> bool:
    """Tell the executor's ``/transaction/*`` from the engine's (rule 3 above)."""
    segs = w.segments
    if len(segs) >= 2 and segs[1] != "start":
        return bool(qpe.UUID.match(segs[1]))
    if w.resp_header("prisma-transaction-id"):
        return True
    resp, _ = w.resp_json()
    tx_id = as_str(as_dict(resp).get("id"))
    if tx_id:
        return bool(qpe.UUID.match(tx_id))
    body, _ = w.req_json()
    keys = set(as_dict(body))
    if keys & {"maxWait", "isolationLevel", "newTxId"}:
        return True
    if keys & {"max_wait", "isolation_level"}:
        return False
    version = w.header("prisma-engine-hash") or ""
    return bool(w.header("authorization")) or version[:1].isdigit() and "." in version
