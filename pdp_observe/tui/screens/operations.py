"""Operations by fingerprint (like pg_stat_statements) over a window; Enter lists them."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..columns import fmt_ms
from ..source import Source, SourceError

WINDOWS: tuple[tuple[str, float | None], ...] = (("1m", 60.0), ("5m", 300.0), ("1h", 3600.0), ("all", None))


def operation_filter(op: dict[str, Any]) -> str:
    """The list filter that shows this operation's exchanges."""
    if op.get("fingerprint"):
        return f"fp:{_quote(op['fingerprint'])}"
    terms = [f"{k}:{_quote(op[k])}" for k in ("model", "action", "kind") if op.get(k)]
    return " ".join(terms)


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "_-.:/*?" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _name(op: dict[str, Any]) -> str:
    if op.get("model") and op.get("action"):
        return f"{op['model']}.{op['action']}"
    return str(op.get("action") or op.get("kind") or "-")


class OperationsScreen(Screen[str]):
    """Dismissed with the filter to apply when a row is chosen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("w", "next_window", "Window"),
        *[Binding(str(i + 1), f"window({i})", label, show=False) for i, (label, _) in enumerate(WINDOWS)],
    ]

    class Loaded(Message):
        def __init__(self, window: int, ops: list[dict[str, Any]]) -> None:
            super().__init__()
            self.window, self.ops = window, ops

    class Failed(Message):
        def __init__(self, error: SourceError) -> None:
            super().__init__()
            self.error = error

    def __init__(self, source: Source, *, filter: str = "", window: int | None = None) -> None:
        super().__init__()
        self.source = source
        self.filter = filter
        self.window = (1 if getattr(source, "live", False) else 3) if window is None else window
        self.ops: list[dict[str, Any]] = []
        self.loading = False

    def compose(self) -> ComposeResult:
        yield Static("", id="ops-title")
        yield DataTable(id="ops-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key, width in (("operation", "op", 26), ("fingerprint", "fp", 16), ("count", "count", 7),
                                  ("errors", "errors", 6), ("p50", "p50", 8), ("p95", "p95", 8), ("p99", "p99", 8),
                                  ("max", "max", 8), ("total ms", "total", 10), ("share", "share", 6),
                                  ("shape", "shape", None)):
            table.add_column(label, key=key, width=width)
        table.focus()
        self.load()

    def load(self) -> None:
        self.loading = True
        self._title()
        self.run_worker(self._fetch(self.window), group="ops", exclusive=True, exit_on_error=False)

    async def _fetch(self, window: int) -> None:
        try:
            ops = await self.source.operations(window_s=WINDOWS[window][1], filter=self.filter)
        except SourceError as exc:
            self.post_message(self.Failed(exc))
            return
        self.post_message(self.Loaded(window, ops))

    def _title(self) -> None:
        windows = "  ".join(f"[b reverse] {i + 1} {label} [/]" if i == self.window else f"{i + 1} {label}"
                            for i, (label, _) in enumerate(WINDOWS))
        state = "  loading…" if self.loading else f"  {len(self.ops)} operations"
        where = f"  filter: {self.filter}" if self.filter else ""
        self.query_one("#ops-title", Static).update(f"operations over: {windows}{state}{where}"
                                                    "   (Enter: list its exchanges)")

    def on_operations_screen_loaded(self, msg: Loaded) -> None:
        if msg.window != self.window:
            return
        self.loading = False
        self.ops = msg.ops
        table = self.query_one(DataTable)
        table.clear()
        for i, op in enumerate(msg.ops):
            errors = op.get("errors") or 0
            table.add_row(
                _name(op), (op.get("fingerprint") or "-")[:16], str(op.get("count", 0)),
                Text(str(errors), "red" if errors else "dim"),
                fmt_ms(op.get("p50")), fmt_ms(op.get("p95")), fmt_ms(op.get("p99")), fmt_ms(op.get("max")),
                fmt_ms(op.get("total_ms")), f"{(op.get('share') or 0) * 100:.0f}%", op.get("shape") or "",
                key=str(i))
        self._title()

    def on_operations_screen_failed(self, msg: Failed) -> None:
        self.loading = False
        self._title()
        self.notify(str(msg.error), title="operations", severity="error")

    def action_window(self, index: int) -> None:
        self.window = index
        self.load()

    def action_next_window(self) -> None:
        self.action_window((self.window + 1) % len(WINDOWS))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        index = int(event.row_key.value or 0)
        if 0 <= index < len(self.ops) and (flt := operation_filter(self.ops[index])):
            self.dismiss(flt)
