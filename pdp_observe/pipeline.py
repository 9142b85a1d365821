"""Processors the capture worker runs on each batch, between capture and storage.

Each processor takes the batch's exchanges, may fill fields on them, and may return records
for the store to keep beside them (transactions). They run in the worker thread, never on
the request path; a processor that fails costs its own work for that batch, nothing else.
"""

from __future__ import annotations

from .exchange import Exchange, Operation
from .protocol import decode
from .transactions import Transaction, TransactionTracker


DECODE_RESPONSE_MAX = 256 * 1024
"""Successful responses past this are not parsed: they are query results, not errors or ids."""


class DecodeOperations:
    """Fill ``Exchange.operation`` from the redacted request/response, then follow transactions."""

    name = "decode"

    def __init__(self, max_open_transactions: int = 10000) -> None:
        self.tracker = TransactionTracker(max_open=max_open_transactions)

    def __call__(self, exchanges: list[Exchange]) -> list[Transaction]:
        touched: dict[int, Transaction] = {}
        for ex in exchanges:
            op = decode_exchange(ex)
            tx = self.tracker.feed(ex.id, ex.timings.received, ex.timings.done, op)
            if tx is not None and tx.txn:
                touched[id(tx)] = tx
        return list(touched.values())

    @staticmethod
    def late(exchanges: list[Exchange]) -> None:
        """Decode exchanges stored undecoded while the recorder was behind (see hub.Recorder).

        Only the operation: the transaction tracker follows traffic in arrival order, and
        feeding it exchanges from seconds ago would close or reopen the wrong transactions.
        """
        for ex in exchanges:
            decode_exchange(ex)


def decode_exchange(ex: Exchange) -> Operation:
    """Fill and return ``ex.operation`` from its redacted request and response."""
    rq, rs = ex.request, ex.response
    resp_body = rs.body.data if rs else None
    if rs is not None and rs.status < 400 and len(resp_body or b"") > DECODE_RESPONSE_MAX:
        resp_body = b""
    ex.operation = op = decode(
        rq.method, rq.path, rq.headers, rq.body.data,
        rs.status if rs else None, rs.headers if rs else None, resp_body,
        truncated=ex.truncated,
    )
    return op
