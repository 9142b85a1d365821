"""Test-side view of the real Prisma stacks: the harness (shipped in the package) plus the
recorded step logs the tests compare against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pdp_observe.stacks import harness as _harness

EXPECTED_DIR = Path(__file__).resolve().parent / "expected"


def expected_steps(stack: str) -> list[dict[str, Any]]:
    """The recorded client-side step log of ``stack`` (tests/stacks/expected/<stack>.steps.jsonl)."""
    path = EXPECTED_DIR / f"{stack}.steps.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


harness = _harness
