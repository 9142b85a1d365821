"""``pdp-observe ls --filter`` on a real capture file, and a v4 file migrated to v5."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

from pdp_observe.capture import RawCapture
from pdp_observe.cli import main
from pdp_observe.exchange import Exchange
from pdp_observe.filterlang import compile_filter
from pdp_observe.hub import Recorder
from pdp_observe.pipeline import DecodeOperations
from pdp_observe.redact import Redactor
from pdp_observe.store import SCHEMA_VERSION, RowBuilder, StoreReader, StoreWriter, filter_row, migrate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "tests" / "fixtures" / "examples"
TXN = "6720aa3f-ef49-4b79-b585-22af27d294ab"
QPE_FIND_USER = (EXAMPLES / "constructed" / "qpe-query-request.json").read_bytes()
QPE_CREATE_USER = json.dumps({
    "model": "User", "operation": "createOne", "params": {},
    "plan": {"type": "execute", "args": {"type": "rawSql", "sql": 'INSERT INTO "public"."User" ("email") VALUES ($1)',
                                         "args": ["a@b.c"]}},
}).encode()
QPE_FIND_POST = QPE_FIND_USER.replace(b'"model": "User"', b'"model": "Post"')
P2002 = (EXAMPLES / "constructed" / "qpe-error-user-facing-400.json").read_bytes()
RAW_QUERY = (EXAMPLES / "jsonproto-queryraw-request.json").read_bytes()


def capture(i: int, method: str, path: str, body: bytes, status: int, resp: bytes, ms: float) -> RawCapture:
    now = time.perf_counter()
    cap = RawCapture(1_700_000_000.0 + i, now, method, path, "1.1", "127.0.0.1", "http://u",
                     [(b"Content-Type", b"application/json")])
    cap.req_body, cap.req_size = body, len(body)
    cap.status, cap.reason = status, "X"
    cap.resp_headers = [(b"Content-Type", b"application/json")]
    cap.resp_body, cap.resp_size = resp, len(resp)
    cap.t_first_byte = cap.t_done = now + ms / 1000
    return cap


CAPTURES = [  # (label, capture)
    ("find_user_slow", capture(0, "POST", "/query", QPE_FIND_USER, 200, b'{"data":[]}', 300.0)),
    ("create_user_p2002", capture(1, "POST", "/query", QPE_CREATE_USER, 400, P2002, 12.0)),
    ("raw_engine", capture(2, "POST", "/", RAW_QUERY, 200, b'{"data":{"queryRaw":[]}}', 5.0)),
    ("health", capture(3, "GET", "/health", b"", 200, b'{"status":"ok"}', 1.0)),
    ("find_post_in_txn", capture(4, "POST", f"/transaction/{TXN}/query", QPE_FIND_POST, 200, b'{"data":[]}', 40.0)),
]


def decoded(caps: list[RawCapture]) -> list[Exchange]:
    rec = Recorder(None, redactor=Redactor(), body_limit=1 << 20)
    rec.processors.append(DecodeOperations())
    return rec.process(caps)


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, dict[str, str], list[Exchange]]:
    """A capture file written by the real writer: its path, {label: exchange id}, the exchanges."""
    path = str(tmp_path / "c.db")
    exchanges = decoded([c for _, c in CAPTURES])
    w = StoreWriter(path)
    w.write(exchanges)
    w.close()
    return path, {label: ex.id for (label, _), ex in zip(CAPTURES, exchanges)}, exchanges


def ls(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["ls", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def ids(capsys: pytest.CaptureFixture[str], db: str, expr: str, *more: str) -> list[str]:
    code, out, err = ls(capsys, "--db", db, "--json", "--last", "0", f"--filter={expr}", *more)
    assert code == 0, err
    return [json.loads(line)["id"] for line in out.splitlines()]


@pytest.mark.parametrize(("expr", "expected"), [
    ("model:User ms:>250", ["find_user_slow"]),
    ("model:User", ["find_user_slow", "create_user_p2002"]),
    ("is:error", ["create_user_p2002"]),
    ("-is:error protocol:qpe", ["find_user_slow", "health", "find_post_in_txn"]),
    ('text:"unique constraint"', ["create_user_p2002"]),  # the stored error message
    ("code:p2002", ["create_user_p2002"]),
    ("sql:insert", ["create_user_p2002"]),
    ('sql:"select ?"', ["raw_engine"]),
    ('sql:"from \\"public\\".\\"user\\""', ["find_user_slow", "find_post_in_txn"]),  # same plan SQL
    ("is:txn", ["find_post_in_txn"]),
    (f"txn:{TXN[:4]}*", ["find_post_in_txn"]),
    ("status:2xx ms:<10", ["raw_engine", "health"]),
    ("action:find* or kind:health", ["find_user_slow", "health", "find_post_in_txn"]),
    ("not (model:User or model:Post)", ["raw_engine", "health"]),
    ("path:/transaction/*", ["find_post_in_txn"]),
    ("queryraw", ["raw_engine"]),  # a bare word searches the text fields (action here)
    ("model:Comment", []),
])
def test_ls_filter_picks_the_right_exchanges(capsys, db, expr: str, expected: list[str]) -> None:
    path, by_label, exchanges = db
    assert ids(capsys, path, expr) == [by_label[label] for label in expected]
    # a live feed filters exchanges before they are stored: same answer from filter_row()
    live = compile_filter(expr)
    assert [ex.id for ex in exchanges if live.matches(filter_row(ex))] == [by_label[label] for label in expected]


def test_filter_is_anded_with_the_other_flags(capsys, db) -> None:
    path, by_label, _ = db
    assert ids(capsys, path, "-is:error", "--model", "User") == [by_label["find_user_slow"]]
    assert ids(capsys, path, "model:User", "--last", "1") == [by_label["create_user_p2002"]]


def test_ls_filter_table_says_how_many_matched(capsys, db) -> None:
    path, by_label, _ = db
    code, out, _ = ls(capsys, "--db", path, "--filter", "is:error")
    lines = out.splitlines()
    assert code == 0 and lines[-1] == f"1 of 5 exchanges in {path}"
    assert lines[1].startswith(by_label["create_user_p2002"][-8:]) and "P2002" in lines[1]


def test_bad_filter_exits_2_with_one_line(capsys, db) -> None:
    path, _, _ = db
    code, out, err = ls(capsys, "--db", path, "--filter", "model:User stauts:500")
    assert (code, out) == (2, "")
    assert err == "pdp-observe ls: filter error at 11: unknown field 'stauts' (did you mean status?)\n"
    code, _, err = ls(capsys, "--db", path, "--filter", "(is:error")
    assert code == 2 and err == "pdp-observe ls: filter error at 0: unclosed '(' (add a ')')\n"


def test_bad_filter_is_reported_before_the_file_is_opened(capsys, tmp_path) -> None:
    code, _, err = ls(capsys, "--db", str(tmp_path / "none.db"), "--filter", "ms:>fast")
    assert code == 2 and err.startswith("pdp-observe ls: filter error at 4: ms: 'fast' is not a number")
    assert not (tmp_path / "none.db").exists()


def test_ls_help_summarises_the_language(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ls", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "--filter EXPR" in out and "docs/filter-language.md" in out
    assert "model:User ms:>250" in out and "is:error" in out and "status:5xx" in out


def test_the_docs_error_examples_are_what_ls_prints(capsys, db) -> None:
    path, _, _ = db
    doc = (ROOT / "docs" / "filter-language.md").read_text()
    examples = re.findall(r"^\$ pdp-observe ls --filter '([^']*)'\n(.*)$", doc, re.MULTILINE)
    assert len(examples) >= 2
    for expr, printed in examples:
        code, _, err = ls(capsys, "--db", path, "--filter", expr)
        assert code == 2 and err.strip() == printed


def test_search_columns_are_capped(tmp_path) -> None:
    body = json.loads(QPE_CREATE_USER)
    body["plan"] = {"type": "seq", "args": [
        {"type": "execute", "args": {"type": "rawSql", "sql": f"UPDATE t{i} SET a = 1 " + "x" * 500, "args": []}}
        for i in range(100)]}
    exchanges = decoded([capture(0, "POST", "/query", json.dumps(body).encode(), 500, b'{"error":"x"}', 1.0)])
    assert len(exchanges[0].operation.sql) == 100
    exchanges[0].operation.error_message = "E" * 5000  # decoders cap at 1000 today; the store never relies on it
    w = StoreWriter(str(tmp_path / "big.db"))
    w.write(exchanges)
    sql_text, message = w.conn.execute("SELECT sql_text, error_message FROM exchanges").fetchone()
    w.close()
    assert len(sql_text) == 8192 and sql_text.startswith("UPDATE t0 SET a = 1 x") and "\nUPDATE t1 " in sql_text
    assert message == "E" * 1024


V4_COLUMNS = ("id, ts, method, path, status, duration_ms, req_bytes, resp_bytes, failure, truncated, record, "
              "req_body, resp_body, protocol, kind, model, action, fingerprint, txn, error_code, sql_count, "
              "engine_ms, trace_id")


def test_a_v4_file_migrates_forward_and_filters(capsys, tmp_path) -> None:
    path = str(tmp_path / "v4.db")
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, upto=4) == 4
    w = RowBuilder(train_after=0)  # rows as a v4 writer wrote them: the v4 columns only
    old = decoded([c for _, c in CAPTURES[:3]])
    conn.executemany(f"INSERT INTO exchanges ({V4_COLUMNS}) VALUES ({','.join('?' * 23)})",
                     [w._row(ex)[:23] for ex in old])
    conn.close()

    # ls opens (and so migrates) the file; the indexed columns filter old rows as before
    assert ids(capsys, path, "is:error") == [old[1].id]
    assert ids(capsys, path, "model:User ms:>250") == [old[0].id]
    reader = StoreReader(path)
    assert reader.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == SCHEMA_VERSION == 6
    assert reader.check() == []
    assert reader.conn.execute("SELECT COUNT(*) FROM exchanges WHERE sql_text IS NULL "
                               "AND error_message IS NULL").fetchone()[0] == 3
    reader.close()
    # old rows have no SQL text (documented); rows written after the upgrade do
    assert ids(capsys, path, "sql:insert") == []
    new = decoded([capture(10, "POST", "/query", QPE_CREATE_USER, 400, P2002, 3.0)])
    w = StoreWriter(path)
    w.write(new)
    w.close()
    assert ids(capsys, path, "sql:insert") == [new[0].id]
    assert ids(capsys, path, "code:P2002") == [old[1].id, new[0].id]
    assert ids(capsys, path, "unique") == [new[0].id]
