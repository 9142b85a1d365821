"""``pdp-observe tui`` on the command line, and the TUI's import boundaries."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, run_cli


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return set(out.split())


def test_missing_capture_file_is_one_line_and_status_2(tmp_path):
    res = run_cli("tui", "--db", str(tmp_path / "nope.db"))
    assert res.returncode == 2 and "no capture file" in res.stderr and "Traceback" not in res.stderr


def test_help_names_the_three_ways_in():
    res = run_cli("tui", "--help")
    assert res.returncode == 0 and all(flag in res.stdout for flag in ("--connect", "--token", "--db"))
    assert "PDP_ADMIN_TOKEN" in res.stdout


def test_cli_does_not_load_textual_and_tui_does_not_load_the_proxy():
    assert "textual" not in _modules_after("import pdp_observe.cli")
    loaded = _modules_after("import pdp_observe.tui.app")
    assert "textual" in loaded
    assert not {"pdp_observe.proxy", "pdp_observe.sidecar", "pdp_observe.hub", "pdp_observe.api"} & loaded
