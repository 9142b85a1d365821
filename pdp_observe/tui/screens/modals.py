"""Small dialogs: a text to read (curl), a yes/no question, the export prompt, replay results."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from rich.syntax import Syntax
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, ProgressBar, Static

from ..detail_view import body_renderable
from ..export import export, format_for
from ..source import Source, SourceError


class TextModal(ModalScreen[None]):
    """A block of text to read or copy (the curl command)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, title: str, text: str, note: str = "") -> None:
        super().__init__()
        self.title_text, self.text, self.note = title, text, note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.title_text, "bold"), classes="dialog-title")
            yield VerticalScroll(Static(Text(self.text), id="modal-text"))
            if self.note:
                yield Static(Text(self.note, "dim"), classes="dialog-note")


class ConfirmModal(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.question), classes="dialog-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ExportModal(ModalScreen[int]):
    """Asks for a file name (``.har`` = HAR 1.2, ``.jsonl`` = JSON lines), then exports with progress."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    class Progressed(Message):
        def __init__(self, done: int, total: int) -> None:
            super().__init__()
            self.done, self.total = done, total

    class Finished(Message):
        def __init__(self, path: str, count: int, error: str | None) -> None:
            super().__init__()
            self.path, self.count, self.error = path, count, error

    def __init__(self, source: Source, filter: str, total: int | None, default_path: str = "pdp-export.har") -> None:
        super().__init__()
        self.source, self.filter, self.total = source, filter, total
        self.default_path = default_path
        self.running = False
        self.result: tuple[str, int, str | None] | None = None

    def compose(self) -> ComposeResult:
        what = f"{self.total:,} exchanges" if self.total is not None else "the exchanges"
        where = f" matching {self.filter!r}" if self.filter else ""
        with Vertical(classes="dialog"):
            yield Static(Text(f"Export {what}{where}", "bold"), classes="dialog-title")
            yield Static("File name: ends in .jsonl for JSON lines (one `show --json` object each), "
                         "anything else is HAR 1.2. Enter starts.", classes="dialog-note")
            yield Input(self.default_path, id="export-path")
            yield ProgressBar(total=self.total or None, id="export-progress", show_eta=False)
            yield Static("", id="export-status")

    def on_mount(self) -> None:
        self.query_one(ProgressBar).display = False

    @on(Input.Submitted, "#export-path")
    def _start(self, event: Input.Submitted) -> None:
        if self.running:
            return
        path = os.path.expanduser(event.value.strip())
        if not path:
            return
        self.running = True
        self.query_one(ProgressBar).display = True
        self.query_one("#export-status", Static).update(f"writing {format_for(path).upper()} to {path} …")
        self.run_worker(self._export(path), group="export", exclusive=True, exit_on_error=False)

    async def _export(self, path: str) -> None:
        def progress(done: int, total: int) -> None:
            self.post_message(self.Progressed(done, total))

        try:
            count = await export(self.source, path, filter=self.filter, progress=progress)
        except (SourceError, OSError) as exc:
            self.post_message(self.Finished(path, 0, str(exc)))
            return
        self.post_message(self.Finished(path, count, None))

    def on_export_modal_progressed(self, msg: Progressed) -> None:
        self.query_one(ProgressBar).update(total=msg.total or None, progress=msg.done)

    def on_export_modal_finished(self, msg: Finished) -> None:
        self.running = False
        self.result = (msg.path, msg.count, msg.error)
        if msg.error:
            self.query_one("#export-status", Static).update(Text(f"export failed: {msg.error}", "red"))
            return
        self.notify(f"wrote {msg.count} exchanges to {msg.path}", title="export")
        self.dismiss(msg.count)

    def action_cancel(self) -> None:
        self.workers.cancel_group(self, "export")
        self.dismiss(0)


class ReplayScreen(Screen[None]):
    """The replayed answer beside the original, and the diff between them."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__()
        self.result = result

    def compose(self) -> ComposeResult:
        r = self.result
        orig = r.get("original") or {}
        same = r.get("same_status") and not r.get("diff")
        verdict = Text("same answer", "bold green") if same else Text("the answer changed", "bold yellow")
        head = Text.assemble(("replay of ", "dim"), (str(r.get("id")), "bold"), "  ", verdict,
                             f"  ({'read-only' if r.get('read_only') else 'confirmed write'}: {r.get('reason') or ''})")
        for note in r.get("notes") or ():
            head.append(f"\nnote: {note}", "yellow")
        yield Static(head, id="replay-title")
        with Horizontal(id="replay-sides"):
            with VerticalScroll(classes="replay-side"):
                yield Static(Text(f"original: {orig.get('status')}  {orig.get('duration_ms')} ms", "bold"))
                yield Static(body_renderable({"text": orig.get("body") or ""}, None))
            with VerticalScroll(classes="replay-side"):
                yield Static(Text(f"replayed: {r.get('status')}  {r.get('duration_ms')} ms", "bold"))
                yield Static(body_renderable({"text": r.get("body") or ""}, None))
        with VerticalScroll(id="replay-diff"):
            diff = r.get("diff") or ""
            yield Static(Syntax(diff, "diff", background_color="default") if diff
                         else Text("no difference in the bodies", "green"))
        yield Footer()
