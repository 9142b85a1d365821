"""Interactive transactions grouped from decoded exchanges (pdp_observe.transactions)."""

from __future__ import annotations

import base64
import bisect
import json
from pathlib import Path
from typing import Any

import pytest

from pdp_observe.exchange import Operation
from pdp_observe.protocol import decode
from pdp_observe.transactions import Outcome, Transaction, group_transactions

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "recorded"


def recorded_items(stack: str) -> list[tuple[str, float, float | None, Operation]]:
    rows = [json.loads(line) for line in (RECORDED / f"{stack}.jsonl").read_text().splitlines() if line]
    rows.sort(key=lambda r: r["seq"])
    items = []
    for row in rows:
        op = decode(row["method"], row["path"], [tuple(h) for h in row["req_headers"]], base64.b64decode(row["req_body_b64"]),
                    row["status"], [tuple(h) for h in row["resp_headers"]], base64.b64decode(row["resp_body_b64"]))
        items.append((str(row["seq"]), row["t_request"], row["t_response_end"], op))
    return items


def step_of(stack: str, t: float) -> str:
    """The workload step (``A8``, ``A9`` …) running at time ``t``."""
    steps = [json.loads(line) for line in (RECORDED / f"{stack}.steps.jsonl").read_text().splitlines() if line]
    index = bisect.bisect_right([s["t_start"] for s in steps], t) - 1
    return steps[index]["step"].split()[0]


EXPECTED = {  # step → (outcome, queries, exchanges)
    "qpe": {"A8": (Outcome.COMMITTED, 3, 5), "A9": (Outcome.COMMITTED, 3, 5), "A10": (Outcome.ROLLED_BACK, 1, 3)},
    "other": {"A9": (Outcome.COMMITTED, 3, 5), "A10": (Outcome.ROLLED_BACK, 1, 3)},
}
PROTOCOL = {"qpe72": "qpe", "qpe72-tracing": "qpe", "qpe72-capture": "qpe", "qe619": "engine-json",
            "qe471": "engine-graphql", "dp619": "dataproxy"}


@pytest.mark.parametrize("stack", sorted(PROTOCOL))
def test_recorded_transactions(stack: str) -> None:
    items = recorded_items(stack)
    found = group_transactions(items)
    expected = EXPECTED["qpe" if stack.startswith("qpe") else "other"]
    assert {step_of(stack, tx.started or 0): (tx.outcome, tx.query_count, len(tx.exchange_ids)) for tx in found} == expected
    position = {exchange_id: i for i, (exchange_id, *_rest) in enumerate(items)}
    for tx in found:
        assert tx.protocol == PROTOCOL[stack] and tx.start_seen and tx.txn
        assert [position[e] for e in tx.exchange_ids] == sorted(position[e] for e in tx.exchange_ids)
        assert tx.started is not None and tx.ended is not None and tx.ended > tx.started
        assert tx.duration_ms == pytest.approx((tx.ended - tx.started) * 1000)
        assert tx.error_code is None and tx.isolation_level is None


def op(kind: str, txn: str | None = None, code: str | None = None, message: str | None = None, **extra: Any) -> Operation:
    return Operation(protocol=extra.pop("protocol", "engine"), kind=kind, txn=txn, error_code=code, error_message=message, **extra)


def run(*ops: Operation, done: bool = True) -> list[Transaction]:
    return group_transactions((f"e{i}", float(i), float(i) + 0.5 if done else None, o) for i, o in enumerate(ops))


def test_query_expiry_ends_the_transaction() -> None:
    (tx,) = run(op("tx_start", "t1", isolation_level="Serializable"), op("query", "t1", protocol="engine-json"),
                op("query", "t1", "P2028", "Transaction already closed: expired"), op("tx_rollback", "t1", "P2028"))
    assert (tx.outcome, tx.query_count, tx.error_code, tx.isolation_level) == (Outcome.EXPIRED, 2, "P2028", "Serializable")
    assert tx.protocol == "engine-json"  # refined from the queries
    assert (tx.ended, tx.duration_ms) == (2.5, 2500.0)  # the expiry, not the later rollback
    assert tx.exchange_ids == ["e0", "e1", "e2", "e3"]


@pytest.mark.parametrize(
    ("end", "code", "outcome"),
    [
        ("tx_commit", None, Outcome.COMMITTED),
        ("tx_rollback", None, Outcome.ROLLED_BACK),
        ("tx_commit", "P2028", Outcome.EXPIRED),  # engine 422 "expired transaction" / 404 not found
        ("tx_rollback", "P2028", Outcome.EXPIRED),  # executor 409 on the rollback after a timeout
        ("tx_commit", "P2034", Outcome.FAILED),
    ],
)
def test_how_the_end_is_read(end: str, code: str | None, outcome: str) -> None:
    (tx,) = run(op("tx_start", "t1"), op(end, "t1", code))
    assert tx.outcome == outcome


def test_failed_start_is_a_failed_transaction_without_id() -> None:
    (tx,) = run(op("tx_start", None, "P2028", "Unable to start a transaction in the given time."))
    assert (tx.txn, tx.outcome, tx.error_code, tx.ended) == (None, Outcome.FAILED, "P2028", 0.5)


def test_query_error_inside_keeps_the_transaction_open() -> None:
    (tx,) = run(op("tx_start", "t1"), op("query", "t1", "P2002", "dup"))
    assert (tx.outcome, tx.error_code, tx.ended, tx.duration_ms) == (Outcome.OPEN, "P2002", None, None)


def test_capture_started_mid_transaction() -> None:
    (tx,) = run(op("query", "t1"), op("tx_commit", "t1"))
    assert (tx.start_seen, tx.started, tx.outcome, tx.query_count) == (False, 0.0, Outcome.COMMITTED, 1)


def test_interleaved_transactions_and_plain_queries() -> None:
    found = run(op("tx_start", "a"), op("tx_start", "b"), op("query"), op("query", "b"), op("query", "a"),
                op("tx_commit", "b"), op("metrics"), op("tx_rollback", "a"))
    assert [(t.txn, t.exchange_ids, t.outcome) for t in found] == [
        ("a", ["e0", "e4", "e7"], Outcome.ROLLED_BACK),
        ("b", ["e1", "e3", "e5"], Outcome.COMMITTED),
    ]


def test_missing_done_time_falls_back_to_received() -> None:
    (tx,) = run(op("tx_start", "t1"), op("tx_commit", "t1"), done=False)
    assert (tx.ended, tx.duration_ms) == (1.0, 1000.0)


def test_junk_items_are_skipped() -> None:
    items: list[Any] = [("e0", 0.0, None, None), ("e1", 1.0, None, "not an op"), ("e2", 2.0, 2.1, op("tx_start", "t"))]
    assert [t.txn for t in group_transactions(items)] == ["t"]
