"""Screens of the TUI: home (the live list), detail, transaction, operations, help, dialogs."""
