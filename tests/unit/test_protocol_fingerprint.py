"""Fingerprint rules: values never matter, shape always does (pdp_observe.protocol.fingerprint)."""

from __future__ import annotations

import json
import time

import pytest

from pdp_observe.protocol import decode
from pdp_observe.protocol.fingerprint import collapse_runs, fingerprint, normalize_sql, query_sig, value_sig


def test_fingerprint_is_pinned() -> None:
    """Fingerprints are stored; changing the hash would split every stored group in two."""
    assert fingerprint("User", "findMany", "{id}") == fingerprint("User", "findMany", "{id}")
    assert fingerprint("User", "findMany", "{id}") == "58ba043f7064463c"
    assert fingerprint(None, "queryRaw", "SELECT ?") == fingerprint("", "queryRaw", "SELECT ?")


@pytest.mark.parametrize(
    ("sql", "shape"),
    [
        ("SELECT * FROM t WHERE a = 'x' AND b = 42 AND c = 1.5e3", "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?"),
        ("SELECT $1, $2, ?, @P1", "SELECT ?, ?, ?, ?"),
        ("UPDATE t SET a = 'it''s' WHERE id = 1", "UPDATE t SET a = ? WHERE id = ?"),
        ('SELECT "t1"."a$1", "x""y" FROM "T2"', 'SELECT "t1"."a$1", "x""y" FROM "T2"'),
        ("SELECT a FROM t WHERE id IN ($1,$2, $3)", "SELECT a FROM t WHERE id IN (...)"),
        ("SELECT a FROM t WHERE id IN ($1)", "SELECT a FROM t WHERE id IN (...)"),
        ("INSERT INTO t (a,b) VALUES ($1,$2), ($3,$4), ($5,$6)", "INSERT INTO t (a,b) VALUES (...)"),
        ("SELECT 1 /* traceparent='00-ab-cd-01' */", "SELECT ?"),
        ("SELECT a -- comment\n  FROM   t", "SELECT a FROM t"),
        ("SELECT t1.c2 FROM t1", "SELECT t1.c2 FROM t1"),
        ("SELECT 'unterminated", "SELECT ?"),
    ],
)
def test_normalize_sql(sql: str, shape: str) -> None:
    assert normalize_sql(sql) == shape


def test_normalize_compiled_sql_keeps_numbers() -> None:
    assert normalize_sql("SELECT a FROM t WHERE 1=1 LIMIT $1", numbers=False) == "SELECT a FROM t WHERE 1=1 LIMIT ?"


def test_normalize_sql_is_linear_on_hostile_input() -> None:
    start = time.perf_counter()
    for text in ("/*" * 50_000, "'" + "x" * 100_000, '"' * 100_001, "(?," * 50_000):
        normalize_sql(text)
    assert time.perf_counter() - start < 2.0


def test_values_are_not_shape_but_keys_are() -> None:
    assert value_sig({"a": 1, "b": "x"}) == value_sig({"b": "y", "a": 2}) == "{a:?,b:?}"
    assert value_sig({"a": 1}) != value_sig({"b": 1})
    assert value_sig({"a": None}) != value_sig({"a": 1})  # null is IS NULL: another query


def test_array_length_is_not_shape() -> None:
    assert value_sig({"in": [1, 2, 3]}) == value_sig({"in": [7]}) == "{in:[?]}"
    assert value_sig([{"t": "a"}, {"t": "b"}]) == value_sig([{"t": "c"}])
    assert value_sig([{"a": 1}, {"b": 1}]) == value_sig([{"b": 2}, {"a": 2}, {"a": 3}])
    assert value_sig([{"a": 1}]) != value_sig([{"a": 1}, {"b": 1}])


def test_tagged_values_keep_their_type() -> None:
    assert value_sig({"$type": "DateTime", "value": "2020-01-01"}) == "$DateTime"
    assert value_sig({"$type": "BigInt", "value": "1"}) != value_sig({"$type": "Decimal", "value": "1"})
    ref = {"$type": "FieldRef", "value": {"_ref": "price", "_container": "Item"}}
    assert value_sig(ref) == "$FieldRef(Item.price)"


def test_selection_booleans_are_shape() -> None:
    assert query_sig({"selection": {"id": True, "name": False}}) == "{id,!name}"
    with_args = {"arguments": {"take": 2}, "selection": {"posts": {"arguments": {"take": 1}, "selection": {"$scalars": True}}}}
    assert query_sig(with_args) == "(take:?){posts(take:?){$scalars}}"


def test_deep_structures_are_summarised_not_recursed() -> None:
    deep: object = 1
    for _ in range(5000):
        deep = {"a": deep}
    assert "…" in value_sig(deep)


def test_collapse_runs() -> None:
    assert collapse_runs(["a", "a", "b", "a", "a"]) == ["a", "b", "a"]


def json_body(model: str, action: str, args: dict[str, object], selection: dict[str, object]) -> bytes:
    return json.dumps({"modelName": model, "action": action, "query": {"arguments": args, "selection": selection}}).encode()


def graphql_body(document: str) -> bytes:
    return json.dumps({"query": document, "variables": {}}).encode()


def test_explicit_selection_fingerprints_alike_in_both_engine_protocols() -> None:
    as_json = decode("POST", "/", [], json_body("User", "findUnique", {"where": {"email": "a@x"}}, {"id": True, "name": True}))
    as_graphql = decode("POST", "/", [], graphql_body('query { findUniqueUser(where: {email: "b@y"}) { id name } }'))
    assert as_json.fingerprint == as_graphql.fingerprint
    assert as_json.details["shape"] == as_graphql.details["shape"] == "User.findUnique(where:{email:?}){id,name}"


def test_model_and_action_are_part_of_the_fingerprint() -> None:
    one = decode("POST", "/", [], json_body("User", "findMany", {}, {"id": True}))
    other = decode("POST", "/", [], json_body("Post", "findMany", {}, {"id": True}))
    first = decode("POST", "/", [], json_body("User", "findFirst", {}, {"id": True}))
    assert len({one.fingerprint, other.fingerprint, first.fingerprint}) == 3


def batch(*items: bytes, transaction: bool = False) -> bytes:
    body: dict[str, object] = {"batch": [json.loads(i) for i in items]}
    if transaction:
        body["transaction"] = {}
    return json.dumps(body).encode()


def find(email: str) -> bytes:
    return json_body("User", "findUnique", {"where": {"email": email}}, {"$scalars": True})


def test_batch_fingerprints() -> None:
    three = decode("POST", "/", [], batch(find("a"), find("b"), find("c")))
    two = decode("POST", "/", [], batch(find("x"), find("y")))
    assert three.fingerprint == two.fingerprint  # N same-shape findUniques are one shape
    count = json_body("User", "aggregate", {}, {"_count": {"selection": {"_all": True}}})
    mixed = decode("POST", "/", [], batch(find("a"), count))
    reversed_ = decode("POST", "/", [], batch(count, find("a")))
    assert mixed.fingerprint != reversed_.fingerprint
    assert (mixed.model, mixed.action) == ("User", None)
    tx = decode("POST", "/", [], batch(find("a"), count, transaction=True))
    assert tx.fingerprint != mixed.fingerprint and tx.details["transactional"] is True
