"""``pdp-observe tui``: a live terminal UI over a sidecar's management API or a capture file.

Only :func:`run` is public; it imports Textual, so the CLI imports this package lazily.
"""

from __future__ import annotations

from datetime import tzinfo


def run(connect: str | None = None, token: str | None = None, db: str | None = None,
        tz: tzinfo | None = None) -> int:
    """Run the TUI until the user quits; returns the exit status."""
    from .app import ObserveApp  # noqa: PLC0415
    from .source import make_source  # noqa: PLC0415

    ObserveApp(make_source(connect, token, db), tz=tz).run()
    return 0
