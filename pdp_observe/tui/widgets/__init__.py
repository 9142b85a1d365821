"""Widgets of the TUI: the virtualised exchange list, the filter bar, the pool panel."""
