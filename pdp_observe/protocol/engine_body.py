"""Query-engine request bodies (``POST /`` and the Data Proxy's ``…/graphql``) → operations.

Both engine protocols, single or batched, reduce to the same list of :class:`EngineOp`
(model, action, raw SQL, value-free signature), so :mod:`.engine` and :mod:`.dataproxy` build
their Operation the same way. One engine process speaks one protocol, but the body says which
(protocols.md A.4): JSON protocol has ``action``, GraphQL has a ``query`` document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..exchange import SqlStatement
from . import graphql
from ._wire import as_dict, as_list, as_str, bounded
from .fingerprint import fingerprint, normalize_sql, query_sig

RAW_ACTIONS = frozenset({"queryRaw", "executeRaw", "findRaw", "aggregateRaw", "runCommandRaw"})
"""Actions without a query selection; the first two carry SQL."""


@dataclass(slots=True)
class EngineOp:
    """One Prisma operation inside an engine request body."""

    model: str | None
    action: str | None
    sig: str
    sql: SqlStatement | None = None
    problem: str | None = None

    @property
    def kind(self) -> str:
        return "raw" if self.action in RAW_ACTIONS else "query"

    @property
    def fingerprint(self) -> str | None:
        """None when the operation could not be named: unknown shapes must not group together."""
        return fingerprint(self.model, self.action, self.sig) if self.action else None

    @property
    def shape(self) -> str:
        """``User.findMany(where:{id:?}){id}`` or ``queryRaw: SELECT ? …``, for people."""
        if self.sql is not None:
            return f"{self.action}: {self.sig}"
        return f"{self.model or ''}.{self.action}{self.sig}"


@dataclass(slots=True)
class EngineBody:
    """A decoded engine request: its protocol and its operations (one unless batched)."""

    protocol: str
    ops: list[EngineOp] = field(default_factory=list)
    batch: bool = False
    transactional: bool = False
    isolation_level: str | None = None


def parse_body(body: Any) -> EngineBody | None:
    """The engine request in ``body`` (parsed JSON), or ``None`` if it is not one."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("batch"), list):
        return _batch(body)
    protocol = _protocol_of(body)
    if protocol is None:
        return None
    return EngineBody(protocol, [_single(body, protocol)])


def _protocol_of(item: Any) -> str | None:
    if isinstance(item, dict):
        if isinstance(item.get("query"), str):
            return "engine-graphql"
        if "action" in item:
            return "engine-json"
    return None


def _single(item: Any, protocol: str) -> EngineOp:
    if protocol == "engine-graphql":
        return _graphql_op(item.get("query", ""))
    return _json_op(item)


def _batch(body: dict[str, Any]) -> EngineBody:
    items = body["batch"]
    protocols = [_protocol_of(item) for item in items]
    protocol = next((p for p in protocols if p), "engine-json")
    ops = []
    for index, (item, proto) in enumerate(zip(items, protocols)):
        if proto is None:
            ops.append(EngineOp(None, None, "?", problem=f"batch item {index} is not a query"))
        else:
            ops.append(_single(item, proto))
    out = EngineBody(protocol, ops, batch=True)
    tx = body.get("transaction")
    if protocol == "engine-graphql":
        out.transactional = tx is True
        out.isolation_level = as_str(body.get("isolationLevel"))
    else:
        out.transactional = isinstance(tx, dict)
        out.isolation_level = as_str(as_dict(tx).get("isolationLevel"))
    return out


def _json_op(item: dict[str, Any]) -> EngineOp:
    """``{modelName?, action, query: {arguments, selection}}``."""
    model, action = as_str(item.get("modelName")), as_str(item.get("action"))
    query = as_dict(item.get("query"))
    problem = None if action else "JSON-protocol query without an action"
    return _op(model, action, query, problem)


def _graphql_op(document: str) -> EngineOp:
    """The first root field of a Prisma GraphQL document (Prisma sends exactly one)."""
    try:
        _, fields = graphql.parse(document)
    except graphql.GraphQLError as exc:
        return EngineOp(None, None, "?", problem=f"GraphQL: {exc}")
    if not fields:
        return EngineOp(None, None, "?", problem="GraphQL document without a field")
    name, query = fields[0]
    model, action = graphql.split_field(name)
    problem = None if action else f"unknown GraphQL root field {name[:80]!r}"
    return _op(model, action or name, query if isinstance(query, dict) else {}, problem)


def _op(model: str | None, action: str | None, query: dict[str, Any], problem: str | None) -> EngineOp:
    if action in ("queryRaw", "executeRaw"):
        sql = _raw_sql(as_dict(query.get("arguments")))
        if sql is not None:
            return EngineOp(model, action, normalize_sql(sql.sql), sql, problem)
    return EngineOp(model, action, query_sig(query), None, problem)


def _raw_sql(arguments: dict[str, Any]) -> SqlStatement | None:
    """``{query: "<sql>", parameters: "<JSON array as a string>"}`` (protocols.md A.4)."""
    sql = as_str(arguments.get("query"))
    if sql is None:
        return None
    raw = arguments.get("parameters")
    params: list[Any] = []
    if isinstance(raw, str):
        try:
            params = as_list(json.loads(raw))
        except (ValueError, RecursionError):
            params = []
    elif isinstance(raw, list):
        params = raw
    return SqlStatement(sql=sql, params=bounded(params), param_count=len(params))
