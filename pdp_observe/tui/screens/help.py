"""The help screen: every key, then the filter language."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ...filterlang import FILTER_HELP

KEYS: tuple[tuple[str, str, str], ...] = (
    ("list", "↑ ↓ j k  PgUp PgDn  Home End g G", "move; the mouse wheel scrolls, a click selects"),
    ("list", "Enter / double click", "open the exchange"),
    ("list", "/", "filter (Enter applies, Esc clears; errors are marked where they are)"),
    ("list", "p  space", "follow new exchanges / pause"),
    ("list", "s  S  1-9  click a header", "next sort column, reverse the order, sort by column n"),
    ("list", "t", "the selected exchange's transaction"),
    ("list", "o", "operations by fingerprint (Enter lists one's exchanges)"),
    ("list", "c", "copy the exchange as a curl command"),
    ("list", "e", "export the filtered exchanges to HAR 1.2 or JSON lines"),
    ("list", "r", "replay to the upstream (attached only; writes ask first)"),
    ("list", "b", "collapse / expand the pool panel"),
    ("detail", "1-6  ← →", "Overview, Request, Response, Headers, Trace, Raw"),
    ("detail", "t  c  r", "transaction, curl, replay"),
    ("operations", "1-4  w", "window: 1m, 5m, 1h, all"),
    ("everywhere", "Esc  q", "back (q on the list quits)"),
    ("everywhere", "d", "dark / light theme"),
    ("everywhere", "ctrl+p", "command palette"),
    ("everywhere", "?", "this help"),
)


def keys_table() -> Table:
    table = Table(show_edge=False, expand=True, title="keys", title_justify="left")
    table.add_column("where", style="dim", no_wrap=True)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("does")
    for where, key, does in KEYS:
        table.add_row(where, key, does)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Static(keys_table())
            yield Static(Text("\n" + FILTER_HELP))
