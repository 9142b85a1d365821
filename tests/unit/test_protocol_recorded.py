"""Real recorded traffic of six Prisma stacks, decoded and checked against what the workload did.

Exchanges are mapped to workload steps by time (``<stack>.steps.jsonl``: each exchange
belongs to the last step that started before its request arrived).
"""

from __future__ import annotations

import base64
import bisect
import dataclasses
import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from pdp_observe.exchange import Operation
from pdp_observe.protocol import decode

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "recorded"
QPE_STACKS = ("qpe72", "qpe72-tracing", "qpe72-capture")
STACKS = (*QPE_STACKS, "qe619", "qe471", "dp619")
PROTOCOLS = {
    "qpe72": {"qpe"}, "qpe72-tracing": {"qpe"}, "qpe72-capture": {"qpe"},
    "qe619": {"engine", "engine-json"}, "qe471": {"engine", "engine-graphql"}, "dp619": {"dataproxy"},
}
STEP_KEY = re.compile(r"^(A\d+b?|POOL burst \d|POOL after)")


@lru_cache(maxsize=None)
def exchanges(stack: str) -> tuple[tuple[dict[str, Any], Operation], ...]:
    """``(recorded row, decoded operation)`` in arrival (``seq``) order."""
    rows = [json.loads(line) for line in (RECORDED / f"{stack}.jsonl").read_text().splitlines() if line]
    rows.sort(key=lambda r: r["seq"])
    return tuple((row, decode_row(row)) for row in rows)


def decode_row(row: dict[str, Any]) -> Operation:
    return decode(
        row["method"], row["path"], [tuple(h) for h in row["req_headers"]], base64.b64decode(row["req_body_b64"]),
        row["status"], [tuple(h) for h in row["resp_headers"]], base64.b64decode(row["resp_body_b64"]),
    )


@lru_cache(maxsize=None)
def steps(stack: str) -> tuple[dict[str, Any], ...]:
    lines = (RECORDED / f"{stack}.steps.jsonl").read_text().splitlines()
    return tuple(json.loads(line) for line in lines if line)


def step_key(step: dict[str, Any]) -> str:
    match = STEP_KEY.match(step["step"])
    assert match, step["step"]
    return match.group(1)


@lru_cache(maxsize=None)
def by_step(stack: str) -> dict[str, list[Operation]]:
    """Operations per workload step key (``A1`` … ``POOL after``); A1 has three runs."""
    starts = [s["t_start"] for s in steps(stack)]
    out: dict[str, list[Operation]] = {step_key(s): [] for s in steps(stack)}
    for row, op in exchanges(stack):
        index = bisect.bisect_right(starts, row["t_request"]) - 1
        assert index >= 0, f"exchange {row['seq']} before the first step"
        out[step_key(steps(stack)[index])].append(op)
    return out


def ops_of(stack: str, key: str, kinds: tuple[str, ...] = ("query", "batch", "raw")) -> list[Operation]:
    return [op for op in by_step(stack)[key] if op.kind in kinds]


def label(op: Operation) -> str | None:
    """``Model.action``, ``batch[…]`` or the tx step; None for infrastructure exchanges."""
    if op.kind.startswith("tx_"):
        return op.kind
    if op.kind == "batch":
        return "batch[" + ",".join(f"{o['model']}.{o['action']}" for o in op.operations) + "]"
    if op.kind in ("query", "raw"):
        return f"{op.model}.{op.action}"
    return None


A8_ITEMS = ["User.aggregate", "Post.findMany", "Post.updateOne"]
A14 = sorted(["User.findMany", "Post.findMany", "User.aggregate", "Post.aggregate", "Post.findMany",
              "Post.findMany", "User.findFirst", "Post.aggregate", "User.findMany", "Post.findFirst"])


def expected_steps(stack: str) -> dict[str, list[str]]:
    """What each step must look like on the wire, per generation (README "Workload")."""
    qpe = stack in QPE_STACKS
    a8 = ["tx_start", *A8_ITEMS, "tx_commit"] if qpe else ["batch[" + ",".join(A8_ITEMS) + "]"]
    a15 = ["User.findUnique"] if qpe else ["batch[User.findUnique,User.findUnique,User.findUnique]"]
    a1 = ["User.createOne"] * (4 if stack == "dp619" else 3)  # dp619: 404 SchemaMissing, then the retry
    return {
        "A1": a1, "A2": ["User.findMany"], "A2b": ["Post.findMany"], "A3": ["User.findUnique"],
        "A3b": ["User.findUnique"], "A4": ["User.updateOne"], "A5": ["User.upsertOne"], "A5b": ["User.upsertOne"],
        "A6": ["Post.deleteOne"], "A7": ["User.aggregate"], "A7b": ["Post.aggregate"], "A8": a8,
        "A9": ["tx_start", "User.createOne", "Post.createOne", "Post.aggregate", "tx_commit"],
        "A10": ["tx_start", "User.createOne", "tx_rollback"], "A10b": ["User.findUnique"],
        "A11": ["User.createOne"], "A12": ["User.updateOne"], "A13": ["None.queryRaw"], "A13b": ["None.executeRaw"],
        "A14": A14, "A15": a15, "A16": [], "POOL burst 1": ["None.queryRaw"] * 8,
        "POOL burst 2": ["None.queryRaw"] * 8, "POOL after": ["User.aggregate"],
    }


@pytest.mark.parametrize("stack", STACKS)
def test_every_exchange_decodes_fully(stack: str) -> None:
    decoded = exchanges(stack)
    assert len(decoded) == len((RECORDED / f"{stack}.jsonl").read_text().splitlines())
    for row, op in decoded:
        assert op.reason is None, (row["seq"], op.reason)
    assert {op.protocol for _, op in decoded} == PROTOCOLS[stack]


@pytest.mark.parametrize("stack", STACKS)
def test_model_action_sequence_follows_the_workload(stack: str) -> None:
    expected = expected_steps(stack)
    for step in steps(stack):
        key = step_key(step)
        got = [lab for op in by_step(stack)[key] if (lab := label(op))]
        want = expected[key]
        if "parallel" in step:
            got, want = sorted(got), sorted(want)
        if key == "A1":  # three steps share the key; each holds one create (dp619: two in the first)
            assert set(got) == {"User.createOne"}
            assert len(got) == len(want)
            continue
        assert got == want, (key, got)


@pytest.mark.parametrize("stack", STACKS)
def test_error_codes_per_step_match_the_clients(stack: str) -> None:
    seen: dict[str, list[str]] = {}
    for step in steps(stack):
        key = step_key(step)
        codes = seen.setdefault(key, [op.error_code for op in by_step(stack)[key] if op.error_code])
        if "outcomes" in step:
            want = Counter({code: n for code, n in step["outcomes"].items() if code != "ok"})
            assert Counter(codes) == want, key
        elif str(step.get("code", "")).startswith("P"):
            assert codes == [step["code"]], key
        elif stack == "dp619" and key == "A1":
            assert codes == ["P5005"]  # SchemaMissing; the client uploads and retries, so A1 succeeds
        else:
            assert codes == [], key


def test_dataproxy_schema_missing_then_upload() -> None:
    first, upload, retry = exchanges("dp619")[:3]
    assert first[1].error_code == "P5005" and first[0]["status"] == 404
    assert first[1].details["dp_error"] == "EngineNotStarted.SchemaMissing"
    assert upload[1].kind == "schema_upload"
    assert upload[1].details["schema_hash_match"] is True
    assert upload[1].details["schema_sha256"] == upload[1].schema_hash
    schema = (RECORDED / "dp619.schema.prisma").read_text()
    assert upload[1].details["models"] == re.findall(r"^model (\w+) \{", schema, re.M) == ["User", "Post"]
    assert retry[1].error_code is None and retry[1].fingerprint == first[1].fingerprint


@pytest.mark.parametrize("stack", QPE_STACKS)
def test_every_executor_query_carries_its_sql(stack: str) -> None:
    queries = [op for _, op in exchanges(stack) if op.kind in ("query", "raw")]
    assert len(queries) == 36
    for op in queries:
        assert op.sql and op.details["statement_count"] == len(op.sql)
        for statement in op.sql:
            numbers = [int(n) for n in re.findall(r"\$(\d+)", statement.sql)]
            assert statement.param_count == len(statement.params) == len(numbers)
            assert numbers == list(range(1, len(numbers) + 1)), statement.sql


A13_SQL = ('SELECT count(*)::int AS users FROM "User" WHERE email LIKE $1', ["%@example.test"])
A13B_SQL = ('UPDATE "User" SET name = $1 WHERE id = $2', ["Carol R.", 3])


@pytest.mark.parametrize("stack", (*QPE_STACKS, "qe471"))
def test_raw_queries_keep_sql_text_and_parameters(stack: str) -> None:
    (a13,) = ops_of(stack, "A13")
    (a13b,) = ops_of(stack, "A13b")
    assert (a13.kind, a13.model) == ("raw", None)
    assert [(s.sql, s.params, s.param_count) for s in a13.sql] == [(*A13_SQL, 1)]
    assert [(s.sql, s.params, s.param_count) for s in a13b.sql] == [(*A13B_SQL, 2)]


def test_pool_burst_raw_queries_fingerprint_by_shape() -> None:
    burst1 = {op.fingerprint for op in ops_of("qe471", "POOL burst 1")}
    burst2 = {op.fingerprint for op in ops_of("qe471", "POOL burst 2")}
    assert len(burst1) == len(burst2) == 1 and burst1 != burst2


@pytest.mark.parametrize("stack", STACKS)
def test_same_shape_same_fingerprint_different_shape_different(stack: str) -> None:
    one = {key: [op.fingerprint for op in ops_of(stack, key)] for key in by_step(stack)}
    assert len(set(one["A1"])) == 1  # Alice (2 posts), Bob (3), Carol (4): array length is not shape
    assert one["A5"] == one["A5b"]  # the same upsert twice
    assert one["A3"] != one["A3b"]  # select {id, name} by email vs. all scalars by id
    assert one["A2"] != one["A2b"] and one["A7"] != one["A7b"]
    assert one["A11"][0] != one["A1"][0]  # no nested posts
    assert one["A12"] == one["A4"]  # update by id, other values
    creates = [op.fingerprint for op in by_step(stack)["A9"] + by_step(stack)["A10"] if op.model == "User"]
    assert creates[0] == creates[1] == one["A11"][0]  # create {email, name}, in or out of a transaction
    a14 = ops_of(stack, "A14")
    assert len({op.fingerprint for op in a14}) == 10  # ten different queries


def test_fingerprints_are_stable_across_runs_of_one_client() -> None:
    """qpe72, -tracing and -capture ran the same workload: same shapes, same fingerprints."""
    prints = [Counter(op.fingerprint for _, op in exchanges(s) if op.fingerprint) for s in QPE_STACKS]
    assert prints[0] == prints[1] == prints[2]


def test_json_protocol_fingerprints_equal_over_engine_and_data_proxy() -> None:
    engine = {op.fingerprint for _, op in exchanges("qe619") if op.fingerprint}
    proxy = {op.fingerprint for _, op in exchanges("dp619") if op.fingerprint}
    assert engine == proxy


def test_raw_sql_fingerprint_is_the_same_on_every_generation() -> None:
    prints = {stack: ops_of(stack, "A13")[0].fingerprint for stack in ("qpe72", "qe471")}
    assert prints["qpe72"] == prints["qe471"]


@pytest.mark.parametrize("stack", STACKS)
def test_transaction_ids_are_linked_from_start_to_end(stack: str) -> None:
    decoded = [op for _, op in exchanges(stack)]
    started = [op.txn for op in decoded if op.kind == "tx_start"]
    ended = [op.txn for op in decoded if op.kind in ("tx_commit", "tx_rollback")]
    assert len(started) == (3 if stack in QPE_STACKS else 2) and all(started)
    assert sorted(started) == sorted(ended)
    in_tx = [op for op in decoded if op.txn and op.kind in ("query", "batch", "raw")]
    assert {op.txn for op in in_tx} == set(started)


@pytest.mark.parametrize("stack", STACKS)
def test_api_key_never_reaches_an_operation(stack: str) -> None:
    raw = (RECORDED / f"{stack}.jsonl").read_text()
    if stack in (*QPE_STACKS, "dp619"):
        assert "Bearer test" in raw  # the fixture does carry the key
    for _, op in exchanges(stack):
        text = json.dumps(dataclasses.asdict(op))
        assert "Bearer test" not in text and "api_key=test" not in text
        assert "Bearer" not in text and "authorization" not in text.lower()
