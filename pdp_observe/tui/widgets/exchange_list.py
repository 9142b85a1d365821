"""The live list: a virtualised Line-API view over any number of stored exchanges.

The widget's virtual height is the row count the source reports; it renders only the lines
on screen and asks the source for the 100-row pages those lines fall in, one page at a time
(a worker fetches, :class:`PageLoaded` delivers, the handler stores it and repaints). At
most ``MAX_PAGES`` pages are kept, so a million-row capture costs a few hundred rows of
memory. A refresh (follow mode) keeps showing the previous pages until their new contents
arrive, so the list never flickers to blank.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..columns import Row, column_at, render_header, render_row
from ..source import Source, SourceError

PAGE = 100
MAX_PAGES = 24
RETRY_S = 2.0
HEADER = 1


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What the list shows: the filter text and the order."""

    filter: str = ""
    sort: str = "time"
    desc: bool = True


@dataclass(slots=True)
class _Page:
    generation: int
    rows: list[Row]


class ExchangeList(ScrollView, can_focus=True):
    """Rows of the current query, newest first by default; Enter opens the selected one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "jump(0)", "First", show=False),
        Binding("end,G", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Open", show=True),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"exchange-list--header", "exchange-list--cursor", "exchange-list--loading"}
    DEFAULT_CSS = """
    ExchangeList { background: $surface; overflow-x: hidden; }
    ExchangeList > .exchange-list--header { background: $panel; color: $text; text-style: bold; }
    ExchangeList > .exchange-list--cursor { background: $accent 40%; }
    ExchangeList:focus > .exchange-list--cursor { background: $accent 70%; }
    ExchangeList > .exchange-list--loading { color: $text-muted; }
    """

    class PageLoaded(Message):
        def __init__(self, generation: int, page: int, total: int, rows: list[Row]) -> None:
            super().__init__()
            self.generation, self.page, self.total, self.rows = generation, page, total, rows

    class PageFailed(Message):
        def __init__(self, generation: int, page: int, error: SourceError) -> None:
            super().__init__()
            self.generation, self.page, self.error = generation, page, error

    class Selected(Message):
        """Enter (or a double click) on a loaded row."""

        def __init__(self, row: Row) -> None:
            super().__init__()
            self.row = row

    class CursorMoved(Message):
        def __init__(self, index: int, row: Row | None) -> None:
            super().__init__()
            self.index, self.row = index, row

    class SortClicked(Message):
        def __init__(self, sort: str) -> None:
            super().__init__()
            self.sort = sort

    class TotalChanged(Message):
        def __init__(self, total: int) -> None:
            super().__init__()
            self.total = total

    def __init__(self, source: Source, *, tz: tzinfo | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.tz = tz
        self.query = ListQuery()
        self.generation = 0
        self.total: int | None = None
        self.cursor = 0
        self.thresholds: tuple[float | None, float | None] = (None, None)
        self._pages: OrderedDict[int, _Page] = OrderedDict()
        self._loading: tuple[int, int] | None = None
        self._load_scheduled = False
        self._strips: LRUCache[tuple[Any, ...], Strip] = LRUCache(1024)
        self._anchor_id: str | None = None  # keep this exchange selected across a refresh
        self.error: str | None = None  # why the last page could not be read
        self._retry_timer: Any = None

    # ---- queries ---------------------------------------------------------------------
    def set_query(self, query: ListQuery) -> None:
        """Show another filter or order: from the top, nothing kept."""
        self.query = query
        self._cancel_retry()
        self.generation += 1
        self._pages.clear()
        self._strips.clear()
        self.total = None
        self.cursor = 0
        self._anchor_id = None
        self.scroll_to(y=0, animate=False, immediate=True)
        self._update_virtual_size()
        self._schedule_load()
        self.refresh()

    def reload(self) -> None:
        """Fetch what is on screen again (new rows arrived); the current pages stay until then."""
        self._cancel_retry()
        self.generation += 1
        row = self.row_at(self.cursor)
        self._anchor_id = row.get("id") if row else None
        self._schedule_load()

    def _cancel_retry(self) -> None:
        if self._retry_timer is not None:
            self._retry_timer.stop()
            self._retry_timer = None

    @property
    def busy(self) -> bool:
        """A page is being fetched or is still needed for the lines on screen."""
        return self._loading is not None or self._load_scheduled or bool(self._missing_pages())

    def row_at(self, index: int) -> Row | None:
        page = self._pages.get(index // PAGE)
        if page is None:
            return None
        offset = index % PAGE
        return page.rows[offset] if offset < len(page.rows) else None

    @property
    def selected(self) -> Row | None:
        return self.row_at(self.cursor) if self.total else None

    def loaded_rows(self) -> list[Row]:
        return [r for p in self._pages.values() for r in p.rows]

    # ---- loading ---------------------------------------------------------------------
    def _visible_pages(self) -> list[int]:
        top = int(self.scroll_offset.y)
        bottom = top + max(1, self.size.height - HEADER)
        if self.total is not None:
            bottom = min(bottom, self.total)
        pages = list(range(top // PAGE, max(top, bottom - 1) // PAGE + 1))
        cursor_page = self.cursor // PAGE
        if cursor_page not in pages:
            pages.append(cursor_page)
        return pages

    def _missing_pages(self) -> list[int]:
        pages = [0] if self.total is None else [p for p in self._visible_pages() if p * PAGE < max(self.total, 1)]
        return [p for p in pages if (page := self._pages.get(p)) is None or page.generation != self.generation]

    def _schedule_load(self) -> None:
        if self._load_scheduled:
            return
        self._load_scheduled = True
        self.call_later(self._start_load)

    def _start_load(self) -> None:
        self._load_scheduled = False
        if self._loading is not None or self._retry_timer is not None:
            return
        missing = self._missing_pages()
        if not missing:
            return
        page = missing[0]
        self._loading = (self.generation, page)
        self.run_worker(self._fetch(self.generation, page, self.query), group="pages", exit_on_error=False)

    async def _fetch(self, generation: int, page: int, query: ListQuery) -> None:
        try:
            data = await self.source.page(filter=query.filter, sort=query.sort, desc=query.desc,
                                          offset=page * PAGE, limit=PAGE)
            total, rows = int(data.get("total") or 0), list(data.get("rows") or [])
        except SourceError as exc:
            self.post_message(self.PageFailed(generation, page, exc))
            return
        except Exception as exc:  # noqa: BLE001 - a malformed answer must not stall the list
            self.post_message(self.PageFailed(generation, page, SourceError(f"unexpected answer: {exc!r}")))
            return
        self.post_message(self.PageLoaded(generation, page, total, rows))

    def on_exchange_list_page_loaded(self, msg: PageLoaded) -> None:
        msg.stop()
        self._loading = None
        if msg.generation != self.generation:
            self._schedule_load()
            return
        self.error = None
        self._pages[msg.page] = _Page(msg.generation, msg.rows)
        self._pages.move_to_end(msg.page)
        while len(self._pages) > MAX_PAGES:
            self._pages.popitem(last=False)
        self._set_total(msg.total)
        self._restore_anchor(msg.page)
        self._strips.clear()
        self.refresh()
        self._schedule_load()
        self._report_cursor()

    def on_exchange_list_page_failed(self, msg: PageFailed) -> None:
        # not stopped: the screen reports it too. Asked again after RETRY_S, not in a loop.
        self._loading = None
        if msg.generation != self.generation:
            self._schedule_load()
            return
        self.error = str(msg.error)
        self._retry_timer = self.set_timer(RETRY_S, self._retry)
        self.refresh()

    def _retry(self) -> None:
        self._retry_timer = None
        self._schedule_load()

    def _set_total(self, total: int) -> None:
        old = self.total
        if old == total:
            return
        self.total = total
        self._update_virtual_size()
        if old is not None and self._anchor_id is not None and self.query.sort == "time" and self.query.desc:
            delta = total - old  # rows arrived at the top: everything moved down by that much
            if delta > 0:
                self.cursor += delta
                if self.scroll_offset.y > 0:  # at the top, new rows show; elsewhere the view holds still
                    self.scroll_to(y=self.scroll_offset.y + delta, animate=False, immediate=True)
        self.cursor = max(0, min(self.cursor, total - 1))
        self.post_message(self.TotalChanged(total))

    def _restore_anchor(self, page: int) -> None:
        """After a refresh, put the cursor back on the exchange it was on, if that row is here."""
        if self._anchor_id is None:
            return
        rows = self._pages[page].rows
        for i, r in enumerate(rows):
            if r.get("id") == self._anchor_id:
                self.cursor = page * PAGE + i
                self._anchor_id = None
                self._ensure_visible()
                return

    @property
    def content_width(self) -> int:
        """Cells a row may use: the widget less its vertical scrollbar."""
        return self.scrollable_content_region.width or self.size.width

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(self.content_width, (self.total or 0) + HEADER)

    def on_resize(self, _: events.Resize) -> None:
        self._update_virtual_size()
        self._strips.clear()

    # ---- rendering -------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.content_width
        if y == 0:
            style = self.get_component_rich_style("exchange-list--header")
            return self._strip(render_header(width, self.query.sort, self.query.desc), width, style)
        index = int(self.scroll_offset.y) + y - HEADER
        if self.total is not None and index >= self.total:
            if self.total == 0 and index == 0:
                return self._message("no exchanges match" if self.query.filter else "no exchanges yet", width)
            return Strip.blank(width, self.rich_style)
        row = self.row_at(index)
        if row is None:
            self._schedule_load()
            if self.error is not None and y == HEADER:
                return self._message(f"cannot load: {self.error} (retrying)", width)
            return self._message("…" if self.total is not None else "loading…", width)
        if self._pages[index // PAGE].generation != self.generation:
            self._schedule_load()
        selected = index == self.cursor
        cursor_style = self.get_component_rich_style("exchange-list--cursor") if selected else None
        key = (index, row.get("id"), width, selected, cursor_style, self.thresholds, self.rich_style)
        strip = self._strips.get(key)
        if strip is None:
            base = self.rich_style + cursor_style if cursor_style is not None else self.rich_style
            strip = self._strip(render_row(row, width, self.tz, self.thresholds), width, base)
            self._strips[key] = strip
        return strip

    def _strip(self, text: Text, width: int, style: Style) -> Strip:
        return Strip(list(text.render(self.app.console))).crop_extend(0, width, style).apply_style(style)

    def _message(self, msg: str, width: int) -> Strip:
        style = self.get_component_rich_style("exchange-list--loading")
        return self._strip(Text(f"  {msg}"), width, self.rich_style + style)

    # ---- cursor ----------------------------------------------------------------------
    def move_cursor(self, index: int) -> None:
        if not self.total:
            return
        self.cursor = max(0, min(index, self.total - 1))
        self._anchor_id = None
        self._ensure_visible()
        self.refresh()
        self._schedule_load()
        self._report_cursor()

    def _ensure_visible(self) -> None:
        height = max(1, self.size.height - HEADER)
        top = int(self.scroll_offset.y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    def _report_cursor(self) -> None:
        self.post_message(self.CursorMoved(self.cursor, self.selected))

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor + direction * max(1, self.size.height - HEADER - 1))

    def action_jump(self, where: int) -> None:
        self.move_cursor(0 if where == 0 else (self.total or 1) - 1)

    def action_select(self) -> None:
        if (row := self.selected) is not None:
            self.post_message(self.Selected(row))

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            col = column_at(self.content_width, event.x + int(self.scroll_offset.x))
            if col is not None and col.sort is not None:
                self.post_message(self.SortClicked(col.sort))
            return
        index = int(self.scroll_offset.y) + event.y - HEADER
        if self.total and 0 <= index < self.total:
            self.move_cursor(index)
            if event.chain >= 2:
                self.action_select()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._schedule_load()
