"""One exchange in full: Overview, Request, Response, Headers, Trace and Raw tabs."""

from __future__ import annotations

import json
from datetime import tzinfo
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane, Tree
from textual.widgets.tree import TreeNode

from .. import detail_view as view
from ..columns import operation_label, status_label

TABS = ("overview", "request", "response", "headers", "trace", "raw")
TREE_NODES_MAX = 5000
"""A huge response is shown as a tree of its first nodes; Raw has the rest."""


def _label(key: Any, value: Any) -> Text:
    prefix = Text(f"{key}: ", "bold") if key is not None else Text()
    if isinstance(value, dict):
        return prefix + Text(f"{{}} {len(value)} keys", "dim")
    if isinstance(value, list):
        return prefix + Text(f"[] {len(value)} items", "dim")
    style = "green" if isinstance(value, str) else "cyan" if isinstance(value, (int, float)) else "magenta"
    return prefix + Text(json.dumps(value, ensure_ascii=False)[:500], style)


def fill_tree(node: TreeNode[Any], value: Any, budget: list[int], depth: int = 0) -> None:
    """Add ``value``'s children under ``node``; expands the first two levels."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        budget[0] -= 1
        if budget[0] < 0:
            node.add_leaf(Text("… (more in the Raw tab)", "dim"))
            return
        if isinstance(child, (dict, list)) and child:
            sub = node.add(_label(key, child), expand=depth < 2)
            fill_tree(sub, child, budget, depth + 1)
        else:
            node.add_leaf(_label(key, child))


def _safe(render: Any, *args: Any) -> Any:
    """One tab's rendering; an exchange this version cannot draw shows why instead of crashing."""
    try:
        return render(*args)
    except Exception as exc:  # noqa: BLE001
        return Text(f"cannot show this part of the exchange: {exc!r} (the Raw tab has it as captured)", "red")


class DetailScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("t", "transaction", "Txn"),
        Binding("c", "copy_curl", "Curl"),
        Binding("r", "replay", "Replay"),
        *[Binding(str(i + 1), f"tab('{name}')", name.title(), show=False) for i, name in enumerate(TABS)],
    ]

    def __init__(self, detail: dict[str, Any], *, tz: tzinfo | None = None, width: int = 100) -> None:
        super().__init__()
        self.detail = detail
        self.tz = tz
        self.width = width

    def compose(self) -> ComposeResult:
        d = self.detail
        yield Static(self._title(), id="detail-title")
        with TabbedContent(id="detail-tabs", initial="overview"):
            with TabPane("1 Overview", id="overview"):
                yield VerticalScroll(Static(_safe(view.overview, d, self.tz, max(20, self.width - 24))))
            with TabPane("2 Request", id="request"):
                yield VerticalScroll(Static(_safe(view.request_view, d)))
            with TabPane("3 Response", id="response"):
                yield from self._response()
            with TabPane("4 Headers", id="headers"):
                yield VerticalScroll(Static(_safe(view.headers_view, d)))
            with TabPane("5 Trace", id="trace"):
                yield VerticalScroll(Static(_safe(view.waterfall, d, self.width - 4)))
            with TabPane("6 Raw", id="raw"):
                yield VerticalScroll(Static(_safe(view.raw_view, d)))
        yield Footer()

    def _title(self) -> Text:
        d = self.detail
        rq, rs, op = d.get("request") or {}, d.get("response") or {}, d.get("operation") or {}
        row = {**op, "method": rq.get("method"), "path": rq.get("path"), "status": rs.get("status"),
               "failure": d.get("failure"), "error_code": op.get("error_code")}
        dur = view.timing_segments(d)
        total = sum(ms for _, ms in dur)
        return Text.assemble(("exchange ", "dim"), (str(d.get("id")), "bold"), "  ",
                             (operation_label(row), "bold"), "  ", status_label(row),
                             f"  {total:.1f} ms" if dur else "")

    def _response(self) -> ComposeResult:
        rs = self.detail.get("response")
        if rs is None:
            yield Static(Text(f"no response: {self.detail.get('failure') or 'unfinished'} "
                              f"{self.detail.get('failure_detail') or ''}", "red"))
            return
        yield Static(Text(f"{rs.get('status')} {rs.get('reason') or ''}", "bold"), classes="response-status")
        data = view.response_json(self.detail)
        if isinstance(data, (dict, list)):
            tree: Tree[Any] = Tree(_label(None, data), id="response-tree")
            tree.root.expand()
            fill_tree(tree.root, data, [TREE_NODES_MAX])
            yield tree
        else:
            yield VerticalScroll(Static(view.body_renderable(rs.get("body") or {}, None)))

    def action_tab(self, name: str) -> None:
        self.query_one(TabbedContent).active = name

    def action_transaction(self) -> None:
        txn = (self.detail.get("transaction") or {}).get("txn") or (self.detail.get("operation") or {}).get("txn")
        if not txn:
            self.notify("this exchange is not part of an interactive transaction", severity="warning")
            return
        self.app.open_transaction(txn)  # type: ignore[attr-defined]

    def action_copy_curl(self) -> None:
        self.app.show_curl(self.detail)  # type: ignore[attr-defined]

    def action_replay(self) -> None:
        self.app.replay(self.detail["id"])  # type: ignore[attr-defined]
