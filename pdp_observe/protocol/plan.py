"""SQL inside a Prisma 7 query plan: find every statement and render it as the executor would.

Prisma 7 compiles each operation client-side into a ``QueryPlanNode`` tree; the SQL sits in
``query``/``execute`` nodes as ``rawSql {sql, args}`` or ``templateSql {fragments,
placeholderFormat, args}`` (protocols.md C.2; renderer: ``client-engine-runtime``
``render-query.ts``). So the request alone tells which SQL will run, and with which values.

The walk is iterative (no recursion limit to hit on hostile nesting) and linear in the size
of the plan; statements come out in document order, which is the order the executor binds
them. ``value`` nodes hold literals (user JSON could look like a node), so they are not entered.
"""

from __future__ import annotations

from typing import Any, Callable

from ..exchange import SqlStatement
from ._wire import as_dict, as_list, bounded

MAX_NODES = 500_000
"""Stop walking after this many JSON nodes (a plan is normally a few hundred)."""


def statements(plan: Any) -> tuple[list[SqlStatement], bool]:
    """Every SQL statement of the plan, and whether the walk was cut at :data:`MAX_NODES`."""
    found: list[SqlStatement] = []
    stack = [plan]
    visited = 0
    pop, extend = stack.pop, stack.extend
    # exact type checks: parsed JSON holds only dict/list/str/number/bool/None, and scalars
    # (most nodes) are skipped without a call
    while stack:
        visited += 1
        if visited > MAX_NODES:
            return found, True
        node = pop()
        t = type(node)
        if t is dict:
            kind = node.get("type")
            if kind == "templateSql":
                found.append(render_template(node))
            elif kind == "rawSql":
                found.append(render_raw(node))
            elif kind != "value":
                extend(reversed(node.values()))
        elif t is list:
            extend(reversed(node))
    return found, False


def render_raw(node: dict[str, Any]) -> SqlStatement:
    """``rawSql``: the user's SQL as written (7.2 sends ``args``; earlier builds ``params``)."""
    sql = node.get("sql")
    args = as_list(node.get("args", node.get("params")))
    return SqlStatement(sql=sql if isinstance(sql, str) else "", params=bounded(args), param_count=len(args))


def render_template(node: dict[str, Any]) -> SqlStatement:
    """``templateSql``: join the fragments, numbering placeholders per ``placeholderFormat``.

    A tuple argument that is still a reference to an earlier result (``prisma__type:
    param``) has no length yet; it is rendered as one placeholder, as the executor does for a
    scalar, and kept as the reference in ``params``.
    """
    fmt = as_dict(node.get("placeholderFormat"))
    prefix = fmt.get("prefix") if isinstance(fmt.get("prefix"), str) else "$"
    numbered = fmt.get("hasNumbering", True) is not False
    counter = [0]

    def placeholder() -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}" if numbered else prefix

    args = as_list(node.get("args"))
    parts: list[str] = []
    params: list[Any] = []
    index = 0
    for fragment in as_list(node.get("fragments")):
        frag = as_dict(fragment)
        kind = frag.get("type")
        if kind == "stringChunk":
            chunk = frag.get("chunk")
            parts.append(chunk if isinstance(chunk, str) else "")
            continue
        arg = args[index] if index < len(args) else None
        index += 1
        parts.append(_fragment(kind, frag, arg, params, placeholder))
    return SqlStatement(sql="".join(parts), params=bounded(params), param_count=len(params))


def _fragment(kind: Any, frag: dict[str, Any], arg: Any, params: list[Any], placeholder: Callable[[], str]) -> str:
    """Render one parameter fragment and append the values it binds to ``params``."""
    if kind == "parameter":
        params.append(arg)
        return placeholder()
    prefix, suffix = _text(frag, "itemPrefix", ""), _text(frag, "itemSuffix", "")
    separator = _text(frag, "itemSeparator", ",")
    if kind == "parameterTuple":
        items = arg if isinstance(arg, list) else [arg]
        params.extend(items)
        if not items:
            return "(NULL)"
        return "(" + separator.join(prefix + placeholder() + suffix for _ in items) + ")"
    if kind == "parameterTupleList":
        groups = []
        for row in as_list(arg):
            row = row if isinstance(row, list) else [row]
            params.extend(row)
            groups.append(prefix + separator.join(placeholder() for _ in row) + suffix)
        return _text(frag, "groupSeparator", ",").join(groups)
    params.append(arg)
    return "?"  # an unknown fragment type still binds one value


def _text(frag: dict[str, Any], key: str, default: str) -> str:
    value = frag.get(key)
    return value if isinstance(value, str) else default
