"""What workers tell the app: they post these, the handlers own the state they carry.

Named for what happened (harlequin's convention), so a handler reads as a reaction.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message


class SourceStateChanged(Message):
    """The source became reachable (``ok``) or not (``error`` says why, retry pending)."""

    def __init__(self, ok: bool, error: str | None = None) -> None:
        super().__init__()
        self.ok = ok
        self.error = error


class RowsArrived(Message):
    """New exchanges were stored (all of them, not only those the filter shows)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.rows = rows


class StatsArrived(Message):
    def __init__(self, stats: dict[str, Any]) -> None:
        super().__init__()
        self.stats = stats


class PoolLoaded(Message):
    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self.data = data


class ThresholdsLoaded(Message):
    """Duration percentiles (p90, p99) under a filter; ``generation`` names the query asked."""

    def __init__(self, generation: int, p90: float | None, p99: float | None) -> None:
        super().__init__()
        self.generation = generation
        self.p90 = p90
        self.p99 = p99


class ExchangeLoaded(Message):
    """One exchange in full; ``purpose`` says what was asked for (detail, curl, ...)."""

    def __init__(self, detail: dict[str, Any], purpose: str) -> None:
        super().__init__()
        self.detail = detail
        self.purpose = purpose


class TransactionLoaded(Message):
    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self.data = data


class RequestFailed(Message):
    """A question to the source failed; ``what`` names it for the notification."""

    def __init__(self, what: str, error: Exception) -> None:
        super().__init__()
        self.what = what
        self.error = error


class ReplayFinished(Message):
    def __init__(self, ex_id: str, result: dict[str, Any]) -> None:
        super().__init__()
        self.ex_id = ex_id
        self.result = result


class ReplayRefused(Message):
    """The exchange writes data: the user must confirm before it is sent again."""

    def __init__(self, ex_id: str, reason: str) -> None:
        super().__init__()
        self.ex_id = ex_id
        self.reason = reason
