"""The README's promises to a new user stay true: CI runs the test command it gives."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    first_screen = text.split("\n---\n", 1)[0]
    block = re.search(r"```bash\n(.*?)```", first_screen, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_first_screen_has_two_commands():
    assert len(readme_commands()) == 2


def test_ci_runs_the_readme_test_command():
    test_cmd = readme_commands()[1]
    assert "pytest" in test_cmd
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines
