"""Interactive transactions: link the exchanges of one ``$transaction`` and say how it ended.

A transaction is spread over several exchanges that name it differently: the start carries
its id only in the *response* (body ``id``; the Prisma 7 executor also sends the
``Prisma-Transaction-Id`` header), later queries carry it in ``X-transaction-id`` (engines),
in the path (executor, Data Proxy ``itx/<id>``), and it ends with a commit, a rollback, or a
P2028 when it expired or was forgotten. The decoders put that id in ``Operation.txn``
whichever way it travelled, so grouping here is a pure pass over decoded operations.

Non-interactive batches (``{"batch": [...], "transaction": …}`` on the engines) are one
exchange and are not listed; on Prisma 7 the same ``$transaction([...])`` *is* an interactive
transaction on the wire and is listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from .exchange import Operation

Item = tuple[str, float, float | None, Operation]
"""``(exchange_id, received_ts, done_ts, operation)``, in arrival order."""


class Outcome:
    """How a transaction ended (plain strings: stored, filtered on and printed as text)."""

    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    EXPIRED = "expired"  # P2028: timed out, closed or unknown to the server
    FAILED = "failed"  # the start, commit or rollback failed for another reason
    OPEN = "open"  # no end seen (still running, or the end was not captured)

    ALL = (COMMITTED, ROLLED_BACK, EXPIRED, FAILED, OPEN)


_ENGINE_PROTOCOLS = ("engine-json", "engine-graphql")


@dataclass(slots=True)
class Transaction:
    """One interactive transaction as seen on the wire.

    ``started``/``ended`` are epoch seconds (receipt of the start, completion of the exchange
    that ended it); ``start_seen`` is false when the start was not captured, and then
    ``started`` is the first exchange seen. ``query_count`` counts query exchanges (a batch
    counts once). ``error_code`` is the last Prisma error code seen inside the transaction.
    """

    txn: str | None
    protocol: str
    exchange_ids: list[str] = field(default_factory=list)
    started: float | None = None
    ended: float | None = None
    duration_ms: float | None = None
    query_count: int = 0
    outcome: str = Outcome.OPEN
    isolation_level: str | None = None
    error_code: str | None = None
    start_seen: bool = True


class TransactionTracker:
    """Follows transactions one exchange at a time, across batches (the capture worker's view).

    ``feed`` returns the transaction the exchange touched (to be stored) or None. Recent
    transactions, ended ones included (a rollback often follows an expiry), are held in
    memory; ``max_open`` bounds that memory — the oldest is forgotten first (it stays stored).
    """

    def __init__(self, max_open: int = 10000) -> None:
        self.max_open = max_open
        self.open: dict[str, Transaction] = {}  # insertion-ordered: oldest first

    def feed(self, exchange_id: str, received: float, done: float | None, op: Operation) -> Transaction | None:
        if not isinstance(op, Operation):
            return None
        if op.kind == "tx_start":
            tx = _start(exchange_id, received, done, op)
            if tx.txn:
                self._hold(tx)
            return _finish(tx)
        if not op.txn:
            return None
        tx = self.open.get(op.txn)
        if tx is None:
            tx = _unseen_start(op, received)
            self._hold(tx)
        tx.exchange_ids.append(exchange_id)
        _follow(tx, op, done if done is not None else received)
        return _finish(tx)

    def _hold(self, tx: Transaction) -> None:
        assert tx.txn is not None
        if len(self.open) >= self.max_open:
            self.open.pop(next(iter(self.open)))
        self.open[tx.txn] = tx


def _finish(tx: Transaction) -> Transaction:
    if tx.started is not None and tx.ended is not None:
        tx.duration_ms = (tx.ended - tx.started) * 1000.0
    return tx


def group_transactions(items: Iterable[Item]) -> list[Transaction]:
    """Group decoded exchanges into transactions, in order of their first exchange."""
    tracker = TransactionTracker(max_open=1 << 62)
    found: dict[int, Transaction] = {}
    for exchange_id, received, done, op in items:
        tx = tracker.feed(exchange_id, received, done, op)
        if tx is not None:
            found.setdefault(id(tx), tx)
    return list(found.values())


def _start(exchange_id: str, received: float, done: float | None, op: Operation) -> Transaction:
    """A start exchange; without an id in its response the transaction never began."""
    tx = Transaction(op.txn, op.protocol, [exchange_id], received, isolation_level=op.isolation_level)
    if not op.txn and (op.error_code or op.error_message):
        tx.outcome, tx.error_code = Outcome.FAILED, op.error_code
        tx.ended = done if done is not None else received
    return tx


def _unseen_start(op: Operation, received: float) -> Transaction:
    """A transaction whose start was not captured (capture began mid-transaction)."""
    return Transaction(op.txn, op.protocol, started=received, start_seen=False)


def _follow(tx: Transaction, op: Operation, at: float) -> None:
    """Apply one later exchange of the transaction: a query, a commit or a rollback."""
    if tx.protocol == "engine" and op.protocol in _ENGINE_PROTOCOLS:
        tx.protocol = op.protocol  # body-less tx endpoints cannot tell JSON from GraphQL
    if op.error_code:
        tx.error_code = op.error_code
    if op.kind in ("tx_commit", "tx_rollback"):
        _end(tx, _end_outcome(op), at)
        return
    tx.query_count += 1
    if op.error_code == "P2028":
        _end(tx, Outcome.EXPIRED, at)


def _end_outcome(op: Operation) -> str:
    if op.error_code == "P2028":
        return Outcome.EXPIRED
    if op.error_code or op.error_message:
        return Outcome.FAILED
    return Outcome.COMMITTED if op.kind == "tx_commit" else Outcome.ROLLED_BACK


def _end(tx: Transaction, outcome: str, at: float) -> None:
    """The first end wins: a rollback after an expiry does not make it "rolled back"."""
    if tx.outcome == Outcome.OPEN:
        tx.outcome, tx.ended = outcome, at

