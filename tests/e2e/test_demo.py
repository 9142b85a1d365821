"""README command 1: `pdp-observe demo` runs a real Prisma 7 stack through the sidecar."""

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def test_demo_shows_decoded_captures_and_cleans_up(tmp_path):
    db = tmp_path / "demo.db"
    res = run_cli("demo", "--db", str(db))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for needle in ("User.createOne", "User.findMany", "tx_start", "tx_commit", "tx_rollback", "P2002",
                   "committed", "rolled_back", 'INSERT INTO "public"."User"'):
        assert needle in out, needle
    assert "13 exchanges recorded" in out
    assert "api_key=" not in out and "Bearer ey" not in out  # the prisma dev key stays off the screen
    ls = run_cli("ls", "--db", str(db), "--code", "P2002", "--json")
    assert ls.returncode == 0 and '"error_code":"P2002"' in ls.stdout
