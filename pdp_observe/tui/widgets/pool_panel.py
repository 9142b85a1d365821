"""The pool panel: engine pool gauges as sparklines, or the hop's own pressure without them.

With ``--engine-metrics-url`` scraped, the sidecar stores engine pool samples and the panel
shows busy / idle / open / waiting connections. Without them (Prisma 7 exposes no pool
metrics) it shows what the hop itself sees: requests in flight, requests and errors per
second, and open interactive transactions.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

HISTORY = 120
ENGINE_GAUGES = ("busy", "idle", "open", "waiting")
HOP_GAUGES = ("in flight", "req/s", "errors/s", "open txns")


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}{suffix}"
    return f"{value}{suffix}"


class Gauge(Vertical):
    """A label with the current value over a sparkline of recent values."""

    def __init__(self, name: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="gauge")
        self.gauge_name = name

    def compose(self) -> ComposeResult:
        yield Static(self.gauge_name, classes="gauge-label")
        yield Sparkline([], summary_function=max)

    def show(self, name: str, values: list[float], current: Any) -> None:
        self.query_one(".gauge-label", Static).update(f"{name} [b]{_fmt(current)}[/b]")
        self.query_one(Sparkline).data = values or [0]


class PoolPanel(Vertical):
    """Always docked at the bottom; ``b`` collapses it to its one-line summary."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.samples: list[dict[str, Any]] = []
        self.series: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}
        self.open_txns: deque[float] = deque(maxlen=HISTORY)
        self.border_title = "pool"

    def compose(self) -> ComposeResult:
        yield Static("", id="pool-summary")
        with Horizontal(id="pool-gauges"):
            for i in range(4):
                yield Gauge(HOP_GAUGES[i], id=f"gauge-{i}")

    def on_mount(self) -> None:
        self.call_after_refresh(self.redraw)

    def update_pool(self, data: dict[str, Any]) -> None:
        self.samples = list(data.get("samples") or [])[-HISTORY:]
        self.series = list(data.get("series") or [])[-HISTORY:]
        self.redraw()

    def update_stats(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        if stats.get("open_transactions") is not None:
            self.open_txns.append(float(stats["open_transactions"]))
        self.redraw()

    @property
    def engine_mode(self) -> bool:
        return any((s.get("pool") or {}).get("busy") is not None for s in self.samples)

    def redraw(self) -> None:
        if not self.is_mounted or not self.query("#gauge-3"):  # data may come before the children
            return
        if self.engine_mode:
            self.border_title = "engine pool (scraped)"
            for i, key in enumerate(ENGINE_GAUGES):
                values = [float((s.get("pool") or {}).get(key) or 0) for s in self.samples]
                current = (self.samples[-1].get("pool") or {}).get(key) if self.samples else None
                self.query_one(f"#gauge-{i}", Gauge).show(key, values, current)
        else:
            self.border_title = "hop pressure (no engine pool metrics)"
            in_flight = [float(s.get("max_in_flight") or 0) for s in self.series]
            rps = [float(s.get("requests") or 0) for s in self.series]
            errors = [float(s.get("errors") or 0) for s in self.series]
            last = self.series[-1] if self.series else {}
            live_in_flight = self.stats.get("in_flight")
            rows = (
                (in_flight, live_in_flight if live_in_flight is not None else last.get("max_in_flight")),
                (rps, last.get("requests")),
                (errors, last.get("errors")),
                (list(self.open_txns), self.stats.get("open_transactions")),
            )
            for i, (values, current) in enumerate(rows):
                self.query_one(f"#gauge-{i}", Gauge).show(HOP_GAUGES[i], values, current)
        self.query_one("#pool-summary", Static).update(self.summary())

    def summary(self) -> str:
        s = self.stats
        rate = s.get("error_rate")
        parts = [f"req/s [b]{_fmt(s.get('rps'))}[/b]",
                 f"errors [b]{'-' if rate is None else f'{rate * 100:.1f}%'}[/b]",
                 f"in flight [b]{_fmt(s.get('in_flight'))}[/b]",
                 f"high water [b]{_fmt(s.get('high_water'))}[/b]"]
        dropped = s.get("dropped")
        if isinstance(dropped, dict):
            dropped = sum(dropped.values())
        if dropped:
            parts.append(f"[red]dropped {dropped}[/red]")
        if s.get("offline"):
            parts.append("[dim](from the capture file)[/dim]")
        return "  ·  ".join(parts)
