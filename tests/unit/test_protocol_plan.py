"""SQL from Prisma 7 query plans (pdp_observe.protocol.plan)."""

from __future__ import annotations

from typing import Any

from pdp_observe.protocol import plan

DOLLAR = {"prefix": "$", "hasNumbering": True}
REF = {"prisma__type": "param", "prisma__value": {"name": "@parent$id", "type": "Int"}}


def template(fragments: list[dict[str, Any]], args: list[Any], fmt: dict[str, Any] = DOLLAR) -> dict[str, Any]:
    return {"type": "templateSql", "fragments": fragments, "placeholderFormat": fmt, "args": args}


def chunk(text: str) -> dict[str, Any]:
    return {"type": "stringChunk", "chunk": text}


PARAM = {"type": "parameter"}
TUPLE = {"type": "parameterTuple"}


def test_parameters_are_numbered_and_kept_apart() -> None:
    node = template([chunk("SELECT a FROM t WHERE b = "), PARAM, chunk(" LIMIT "), PARAM], ["x", "2"])
    statement = plan.render_template(node)
    assert (statement.sql, statement.params, statement.param_count) == ("SELECT a FROM t WHERE b = $1 LIMIT $2", ["x", "2"], 2)


def test_unnumbered_placeholders() -> None:
    node = template([chunk("a = "), PARAM, chunk(" AND b IN "), TUPLE], [1, [2, 3]], {"prefix": "?", "hasNumbering": False})
    assert plan.render_template(node).sql == "a = ? AND b IN (?,?)"


def test_parameter_tuple_forms() -> None:
    listed = plan.render_template(template([chunk("IN "), TUPLE, chunk(" OFFSET "), PARAM], [["a", "b", "c"], "0"]))
    assert (listed.sql, listed.params) == ("IN ($1,$2,$3) OFFSET $4", ["a", "b", "c", "0"])
    empty = plan.render_template(template([chunk("IN "), TUPLE], [[]]))
    assert (empty.sql, empty.param_count) == ("IN (NULL)", 0)
    ref = plan.render_template(template([chunk("IN "), TUPLE], [REF]))  # bound at run time
    assert (ref.sql, ref.params) == ("IN ($1)", [REF])


def test_parameter_tuple_list() -> None:
    rows = {"type": "parameterTupleList", "itemPrefix": "(", "itemSeparator": ",", "itemSuffix": ")", "groupSeparator": ", "}
    statement = plan.render_template(template([chunk("INSERT INTO t (a,b) VALUES "), rows], [[[1, 2], [3, 4]]]))
    assert statement.sql == "INSERT INTO t (a,b) VALUES ($1,$2), ($3,$4)"
    assert statement.params == [1, 2, 3, 4]


def test_unknown_fragment_still_binds_a_value() -> None:
    statement = plan.render_template(template([chunk("a = "), {"type": "futureThing"}], [7]))
    assert (statement.sql, statement.params) == ("a = ?", [7])


def test_raw_sql_old_and_new_argument_keys() -> None:
    assert plan.render_raw({"type": "rawSql", "sql": "SELECT $1", "args": [1]}).params == [1]
    assert plan.render_raw({"type": "rawSql", "sql": "SELECT $1", "params": [2]}).param_count == 1


def test_statements_in_document_order_and_value_nodes_skipped() -> None:
    tree = {
        "type": "let",
        "args": {
            "bindings": [{"name": "0", "expr": {"type": "query", "args": template([chunk("SELECT 1")], [])}}],
            "expr": {"type": "seq", "args": [
                {"type": "value", "args": {"type": "rawSql", "sql": "user data, not SQL"}},
                {"type": "execute", "args": {"type": "rawSql", "sql": "SELECT 2", "args": []}},
            ]},
        },
    }
    found, cut = plan.statements(tree)
    assert [s.sql for s in found] == ["SELECT 1", "SELECT 2"] and not cut


def test_walk_is_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(plan, "MAX_NODES", 10)
    found, cut = plan.statements([[{"type": "rawSql", "sql": "x"}] for _ in range(20)])
    assert cut and len(found) < 20
