"""The filter bar: type a filter, see any error where it is, Enter applies, Esc clears."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static

from ...filterlang import FilterError, compile_filter


def error_marker(text: str, error: FilterError) -> Text:
    """The filter with the offending character highlighted, a caret under it, and why."""
    pos = max(0, min(error.position, len(text)))
    out = Text("  ")
    out.append(text[:pos])
    out.append(text[pos:pos + 1] or " ", "bold white on red")
    out.append(text[pos + 1:])
    out.append("\n  " + " " * pos + "^ ", "bold red")
    out.append(error.message, "red")
    return out


class FilterBar(Vertical):
    """Hidden until ``/``; validates on every keystroke, never raises."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear", "Clear filter", show=True)]

    class Applied(Message):
        """A valid filter was submitted (``""`` when cleared)."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.applied = ""
        self.error: FilterError | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: model:User action:findMany status:>=400 ms:>250 code:P2024 "
                    "(? for help)", id="filter-input", select_on_focus=False)
        yield Static("", id="filter-error")

    def open(self, text: str | None = None) -> None:
        self.display = True
        box = self.query_one(Input)
        if text is not None:
            box.value = text
        box.focus()

    def set_text(self, text: str) -> None:
        """Show ``text`` as the applied filter (set from elsewhere, e.g. the operations view)."""
        self.query_one(Input).value = text
        self.check(text)
        self.applied = text
        self.display = bool(text)

    @on(Input.Changed, "#filter-input")
    def _validate(self, event: Input.Changed) -> None:
        self.error = self.check(event.value)

    def check(self, text: str) -> FilterError | None:
        """Show the error in ``text`` (or clear it); returns it."""
        note = self.query_one("#filter-error", Static)
        try:
            compile_filter(text)
        except FilterError as exc:
            note.update(error_marker(text, exc))
            note.display = True
            return exc
        note.update("")
        note.display = False
        return None

    @on(Input.Submitted, "#filter-input")
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        self.error = self.check(event.value)
        if self.error is None:
            self.applied = event.value.strip()
            self.post_message(self.Applied(self.applied))

    def action_clear(self) -> None:
        self.query_one(Input).value = ""
        self.check("")
        self.applied = ""
        self.display = False
        self.post_message(self.Applied(""))
