"""One interactive transaction: its queries in order, the gaps between them, how it ended."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..columns import fmt_clock, fmt_ms, operation_label, status_label, status_style

OUTCOME_STYLES = {"committed": "green", "rolled_back": "yellow", "expired": "bold red", "failed": "red",
                  "open": "cyan"}


def summary(tx: dict[str, Any], tz: tzinfo | None) -> Text:
    outcome = str(tx.get("outcome"))
    text = Text.assemble(("transaction ", "dim"), (str(tx.get("txn")), "bold"), "  ",
                         (outcome.replace("_", " ").upper(), OUTCOME_STYLES.get(outcome, "")),
                         f"  {fmt_ms(tx.get('duration_ms'))} ms" if tx.get("duration_ms") is not None else "")
    facts = [f"protocol {tx.get('protocol') or '-'}", f"started {fmt_clock(tx.get('started'), tz)}",
             f"{tx.get('query_count', 0)} queries", f"{len(tx.get('exchanges') or [])} exchanges"]
    if tx.get("isolation_level"):
        facts.append(f"isolation {tx['isolation_level']}")
    if tx.get("busy_ms") is not None:
        facts.append(f"busy {fmt_ms(tx.get('busy_ms'))} ms, idle between queries {fmt_ms(tx.get('idle_ms'))} ms")
    if tx.get("error_code"):
        facts.append(f"error {tx['error_code']}")
    if not tx.get("start_seen", True):
        facts.append("start not captured")
    text.append("\n" + "  ·  ".join(facts))
    if tx.get("missing"):
        text.append(f"\n{len(tx['missing'])} member exchanges are no longer stored (retention)", "yellow")
    return text


class TransactionScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, tx: dict[str, Any], *, tz: tzinfo | None = None) -> None:
        super().__init__()
        self.tx = tx
        self.tz = tz

    def compose(self) -> ComposeResult:
        yield Static(summary(self.tx, self.tz), id="txn-summary")
        table: DataTable[Any] = DataTable(id="txn-members", cursor_type="row", zebra_stripes=True)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("#", "at", "+ms", "gap ms", "operation", "status", "ms", "engine", "SQL")
        rows = self.tx.get("exchanges") or []
        t0 = rows[0]["ts"] if rows else 0.0
        for i, r in enumerate(rows, 1):
            gap = r.get("gap_ms")
            gap_text = Text("-" if gap is None else fmt_ms(gap), "bold yellow" if gap is not None and gap >= 100 else "")
            table.add_row(
                str(i), fmt_clock(r.get("ts"), self.tz), fmt_ms((r["ts"] - t0) * 1000.0), gap_text,
                operation_label(r), Text(status_label(r), status_style(r)), fmt_ms(r.get("duration_ms")),
                fmt_ms(r.get("engine_ms")), str(len(r.get("sql") or []) or "-"), key=r["id"])
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.app.open_detail(event.row_key.value)  # type: ignore[attr-defined]
