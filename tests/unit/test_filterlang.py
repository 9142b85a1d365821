"""The filter language (pdp_observe.filterlang): what it means, how it fails, and that its SQL
and its Python predicate never disagree."""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest

from pdp_observe.filterlang import FIELDS, FILTER_HELP, CompiledFilter, FilterError, compile_filter
from pdp_observe.store import migrate


def row(**values: Any) -> dict[str, Any]:
    """A row of ``exchanges`` with every filterable column NULL unless given."""
    cols = ("id", "method", "path", "status", "duration_ms", "resp_bytes", "failure", "protocol",
            "kind", "model", "action", "fingerprint", "txn", "error_code", "sql_count", "engine_ms",
            "trace_id", "sql_text", "error_message")
    out: dict[str, Any] = dict.fromkeys(cols)
    out.update(values)
    return out


def m(text: str, r: dict[str, Any]) -> bool:
    return compile_filter(text).matches(r)


# --- meaning ---------------------------------------------------------------------------------

USER_FIND = row(model="User", action="findMany", status=200, duration_ms=300.0)
POST_CREATE = row(model="Post", action="createOne", status=200, duration_ms=5.0)
USER_FAIL = row(model="User", action="createOne", status=400, error_code="P2002", duration_ms=12.0,
                error_message="Unique constraint failed on the fields: (`email`)")


def test_empty_filter_matches_everything() -> None:
    for text in (None, "", "   \t\n"):
        f = compile_filter(text)
        assert f.sql() == ("1", []) and f.matches(row()) and f.matches(USER_FAIL)


def test_adjacent_terms_are_anded() -> None:
    assert m("model:User ms:>250", USER_FIND)
    assert not m("model:User ms:>250", USER_FAIL)
    assert m("model:User and ms:>250", USER_FIND) and not m("model:User AND ms:>250", POST_CREATE)


def test_precedence_not_then_and_then_or() -> None:
    # a or b c == a or (b and c): POST_CREATE matches a alone
    assert m("model:Post or model:User action:findMany", POST_CREATE)
    assert not m("(model:Post or model:User) action:findMany", POST_CREATE)
    assert m("(model:Post or model:User) action:findMany", USER_FIND)
    # not a b == (not a) and b
    assert m("not model:Post action:findMany", USER_FIND)
    assert not m("not model:Post action:createOne", POST_CREATE)
    assert m("not (model:Post action:findMany)", POST_CREATE)
    # a b or c == (a and b) or c
    assert m("model:User action:createOne or model:Post", POST_CREATE)
    assert not m("model:User action:createOne or model:Post", USER_FIND)


def test_keywords_in_any_case_and_dash_negation() -> None:
    assert m("model:Post OR model:User", USER_FIND)
    assert m("NOT model:Post", USER_FIND)
    assert m("-model:Post", USER_FIND) and not m("-model:User", USER_FIND)
    assert m("-(model:Post or action:createOne)", USER_FIND)
    assert not m("--model:Post", USER_FIND)  # double negation
    assert m("Model:User", USER_FIND)  # field names are case-insensitive


def test_quoted_values_and_escapes() -> None:
    r = row(path='/a b"c\\d', error_message='say "hi" now')
    assert m(r'path:"/a b\"c\\d"', r)
    assert m(r'"say \"hi\""', r)  # a bare quoted string is text:
    assert m('text:"and"', row(error_message="this AND that"))
    assert m('"and"', row(error_message="this AND that"))  # quoted: not the keyword
    assert not m('"and"', row(error_message="nothing"))
    f = compile_filter(r'path:"/a\nb"')  # other backslashes are kept as written
    assert f.sql()[1] == ["/a\\nb"]


def test_bare_word_is_text_search_any_ascii_case() -> None:
    assert m("unique", USER_FAIL) and m("UNIQUE", USER_FAIL) and m("p2002", USER_FAIL)
    assert m("findmany", USER_FIND) and not m("findmany", POST_CREATE)
    assert m("sql:\"LEFT JOIN\"", row(sql_text='SELECT 1\nFROM a left join b'))
    assert not m("sql:join", row(error_message="join"))  # sql: looks at SQL only
    # ASCII-only lowering, exactly like SQLite's lower(): É is not é
    assert not m("text:é", row(model="É")) and m("text:É", row(model="É"))


def test_numbers() -> None:
    r = row(status=404, duration_ms=250.0, engine_ms=7.5, sql_count=3, resp_bytes=2048)
    for text in ("status:404", "status:=404", "status:>=400", "status:<500", "status:4xx", "status:4XX",
                 "status:!=200", "ms:250", "ms:>=250", "ms:>249.5", "ms:<=250", "engine:>7",
                 "engine:<7.6", "sqls:3", "sqls:>2", "bytes:>=2048"):
        assert m(text, r), text
    for text in ("status:5xx", "status:>404", "ms:>250", "ms:!=250", "engine:>=8", "sqls:0", "bytes:<2048"):
        assert not m(text, r), text


def test_null_never_matches_a_comparison_and_not_inverts_exactly() -> None:
    empty = row()
    for text in ("ms:!=5", "status:<500", "model:User", "code:*", "sql:a", "text:a", "is:error", "is:txn"):
        assert not m(text, empty), text
        assert m(f"not {text}", empty), text


def test_exact_fields_and_globs() -> None:
    r = row(model="UserProfile", action="findMany", error_code="P2025", method="POST",
            path="/a[1]/graphql", txn="3f2a-77", fingerprint="ab12", id="0193ab", trace_id="4bf9",
            protocol="qpe", kind="query", failure="upstream_refused")
    assert not m("model:User", r) and m("model:User*", r) and not m("model:user*", r)
    assert m("action:*Many", r) and m("action:find????", r) and not m("action:find???", r)
    assert m("code:p2025", r) and m("code:P20*", r)  # code is upper-cased
    assert m("method:post", r)
    assert m('path:"/a[1]/*"', r) and not m("path:/a1/*", r)  # [ is literal, not a class
    assert m("txn:3f2a*", r) and m("fp:ab12", r) and m("id:0193*", r) and m("trace:4bf9", r)
    assert m("protocol:qpe kind:query failure:upstream_*", r)


def test_glob_sql_escapes_brackets_and_plain_values_use_equality() -> None:
    assert compile_filter("model:User").sql() == ("(model IS NOT NULL AND model = ?)", ["User"])
    assert compile_filter("path:/a[1]*").sql() == ("(path IS NOT NULL AND path GLOB ?)", ["/a[[]1]*"])
    assert compile_filter("code:p20*").sql()[1] == ["P20*"]


def test_is_error_and_is_txn() -> None:
    assert m("is:error", USER_FAIL) and not m("is:error", USER_FIND)
    assert m("is:error", row(status=200, error_code="P2028"))  # engines report errors with 200
    assert m("is:error", row(failure="upstream_refused"))
    assert m("is:ERROR", row(status=503))
    assert m("is:txn", row(txn="abc")) and not m("is:txn", USER_FIND)


def test_compiled_filter_contract() -> None:
    f = compile_filter("model:User")
    assert isinstance(f, CompiledFilter) and f.text == "model:User"
    assert compile_filter("model:User") == f
    _, params = f.sql()
    params.append("mutated")
    assert f.sql()[1] == ["User"]  # callers get a fresh list
    assert f.matches({"model": "User"})  # a missing key is NULL
    assert not f.matches({})


def test_help_documents_every_field() -> None:
    for name in FIELDS:
        assert name in FILTER_HELP, name
    assert "docs/filter-language.md" in FILTER_HELP


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "position", "message"), [
    ("modle:User", 0, "unknown field 'modle' (did you mean model?)"),
    ("model:User stauts:500", 11, "unknown field 'stauts' (did you mean status?)"),
    ("model:", 6, "missing value for model (e.g. model:User)"),
    ("ms:>fast", 4, "ms: 'fast' is not a number"),
    ("status:4x", 7, "status: '4x' is not a number"),
    ("ms:>=", 5, "ms: missing number after '>='"),
    ("ms:nan", 3, "ms: 'nan' is not a number"),
    ("(model:User", 0, "unclosed '(' (add a ')')"),
    ("model:User (a (b)", 11, "unclosed '('"),
    ("model:User)", 10, "unmatched ')'"),
    ("()", 0, "empty parentheses"),
    ('model:"User', 6, "unterminated quoted string"),
    ('a "b', 2, "unterminated quoted string"),
    ('sql:""', 4, "empty quoted string"),
    ("model:User and", 11, "'and' needs a term after it"),
    ("model:User or", 11, "'or' needs a term after it"),
    ("or model:User", 0, "'or' needs a term before it"),
    ("model:User and or x", 11, "'and' needs a term after it"),
    ("(a or) b", 3, "'or' needs a term after it"),
    ("a not", 2, "'not' needs a term after it"),
    ("a - b", 2, "'-' needs a term right after it"),
    ("is:eror", 3, "unknown is: value 'eror' (did you mean is:error?)"),
    ("is:slow", 3, "unknown is: value 'slow' (use is:error or is:txn)"),
    (":x", 0, "missing field name before ':'"),
    ("x" * 2001, 2000, "filter longer than 2000 characters"),
    ("(" * 33 + "a" + ")" * 33, 32, "nested deeper than 32 levels"),
    ("not " * 40 + "a", 128, "nested deeper than 32 levels"),
    (" ".join(["a"] * 101), 200, "more than 100 terms"),
    ("a\x00b", 1, "control character"),
])
def test_errors_say_what_and_where(text: str, position: int, message: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(text)
    assert info.value.position == position
    assert info.value.message.startswith(message)
    assert isinstance(info.value, ValueError)


def test_error_str_reads_as_a_sentence() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter("modle:User")
    assert str(info.value) == "unknown field 'modle' at 0 (did you mean model?)"


def test_errors_are_reported_left_to_right() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter('ms:>x model:"unterminated')
    assert info.value.position == 4


# --- SQL and Python agree -----------------------------------------------------------------------

PATHS = ["/", "/query", "/transaction/3f2a/query", "/graphql", "/a[1]/b", "/x*y?z", "/Ünïcode/É",
         "/health", "/QUERY?x=1", "/multi\nline", "/a]b"]
MODELS = [None, "User", "Post", "user", "UserProfile", "Ünïcode", "Us[er]"]
ACTIONS = [None, "findMany", "findUnique", "createOne", "createMany", "executeRaw", "aggregate"]
CODES = [None, None, None, "P2002", "P2025", "P2024", "P6000", "p2002"]
SQLS = [None, 'SELECT "public"."User"."id" FROM "public"."User" WHERE 1=1',
        'INSERT INTO "Post" ("title") VALUES ($1)\nSELECT 1',
        "select * from a LEFT JOIN b on a.id = b.a_id", "UPDATE t SET a = $1", "SELECT 'Ärger'",
        "SELECT [x] FROM y"]
MESSAGES = [None, None, "Unique constraint failed on the fields: (`email`)", "Timed out fetching a new connection",
            "deadlock detected", "Ärger im Paradies", "HTTP 500"]
TXNS = [None, None, None, "3f2a-0001", "3f2a-0002", "9c1e-0003"]


def seeded_rows(n: int = 300, seed: int = 20250505) -> list[dict[str, Any]]:
    rnd = random.Random(seed)

    def maybe(values: list[Any], p_null: float = 0.2) -> Any:
        return None if rnd.random() < p_null else rnd.choice(values)

    rows = []
    for i in range(n):
        rows.append({
            "id": f"{rnd.choice(['0193', '0194', 'ab00'])}{i:06x}", "ts": 1700000000.0 + i,
            "method": rnd.choice(["GET", "POST", "POST", "PUT"]), "path": rnd.choice(PATHS),
            "status": maybe([200, 200, 201, 204, 400, 404, 409, 422, 499, 500, 503]),
            "duration_ms": maybe([0.0, 1.5, 12.0, 249.999, 250.0, 250.001, 999.0, rnd.uniform(0, 1000)]),
            "req_bytes": rnd.randint(0, 5000), "resp_bytes": maybe([0, 10, 2048, 1 << 20]),
            "failure": rnd.choice([None] * 8 + ["upstream_refused", "client_abort", "upstream_read_timeout"]),
            "truncated": rnd.randint(0, 1), "record": b"",
            "protocol": maybe(["qpe", "engine-json", "engine-graphql", "dataproxy", "unknown"]),
            "kind": maybe(["query", "batch", "raw", "tx_start", "tx_commit"]),
            "model": rnd.choice(MODELS), "action": rnd.choice(ACTIONS),
            "fingerprint": maybe(["ab12", "ab13", "ffff", "00[1]"]), "txn": rnd.choice(TXNS),
            "error_code": rnd.choice(CODES), "sql_count": maybe([0, 1, 2, 5, 12]),
            "engine_ms": maybe([0.5, 7.0, 100.0, 150.25], 0.5),
            "trace_id": maybe(["4bf92f3577b34da6a3ce929d0e0e4736", "00000000000000000000000000000001"], 0.5),
            "sql_text": rnd.choice(SQLS), "error_message": rnd.choice(MESSAGES),
        })
    return rows


EXPRESSIONS = [
    "model:User", "model:user", "model:User*", "model:Us?r", "model:*", "model:Ünïcode", 'model:"Us[er]"',
    "model:Us[er]*", "action:find*", "action:*Many", "action:createOne", "code:P2002", "code:p2002",
    "code:P20*", "code:*", "txn:3f2a*", "txn:3f2a-0001", "fp:ab1?", 'fp:"00[1]"', "method:post",
    "method:GET", "path:/query", "path:/*", 'path:"/a[1]/b"', "path:/a]b", 'path:"/x*y?z"', "path:/x?y*",
    "path:*line", "path:/multi*", "protocol:engine-*", "kind:tx_*", "id:0193*", "id:ab00*",
    "trace:4bf9*", "failure:upstream_*", "failure:client_abort",
    "status:500", "status:>=400", "status:<300", "status:4xx", "status:5xx", "status:!=200",
    "ms:>250", "ms:>=250", "ms:250", "ms:<250.001", "ms:!=0", "engine:>7", "engine:!=100",
    "sqls:0", "sqls:>1", "bytes:>=2048", "bytes:<10",
    "sql:select", 'sql:"left join"', "sql:ärger", "sql:Ärger", "sql:[x]", "text:user", "text:P2002",
    "unique", "TIMED", "deadlock", "query", '"$1"', "é", "text:É",
    "is:error", "is:txn", "-is:error", "not is:txn",
    "model:User ms:>250", "model:User or model:Post", "(model:User or model:Post) -is:error",
    "not (status:5xx or failure:*)", "is:error code:P2002 or ms:>900", "-model:User -code:*",
    "not not model:User", "status:4xx and not code:P2002 or is:txn sql:select",
    "((model:User or action:find*) and (status:>=400 or ms:>250)) or -kind:query",
    "-ms:>250", "-status:4xx", "-sql:select", "-text:user", "not engine:>7",
]


@pytest.fixture(scope="module")
def seeded_db() -> tuple[sqlite3.Connection, list[dict[str, Any]]]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)  # the real schema, through every migration
    rows = seeded_rows()
    cols = list(rows[0])
    conn.executemany(f"INSERT INTO exchanges ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [tuple(r[c] for c in cols) for r in rows])
    conn.row_factory = sqlite3.Row
    stored = [dict(r) for r in conn.execute("SELECT * FROM exchanges ORDER BY seq")]  # as SQLite keeps them
    conn.row_factory = None
    return conn, stored


def sql_ids(conn: sqlite3.Connection, text: str) -> list[str]:
    sql, params = compile_filter(text).sql()
    return [r[0] for r in conn.execute(f"SELECT id FROM exchanges WHERE {sql} ORDER BY seq", params)]


def py_ids(rows: list[dict[str, Any]], text: str) -> list[str]:
    f = compile_filter(text)
    return [r["id"] for r in rows if f.matches(r)]


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_sql_and_python_agree(seeded_db, text: str) -> None:
    conn, rows = seeded_db
    assert sql_ids(conn, text) == py_ids(rows, text)


def test_agreement_is_not_vacuous(seeded_db) -> None:
    """Most expressions must pick some rows but not all, or the comparison proves little."""
    conn, rows = seeded_db
    counts = [len(sql_ids(conn, t)) for t in EXPRESSIONS]
    assert sum(0 < c < len(rows) for c in counts) >= 0.85 * len(EXPRESSIONS)


@pytest.mark.parametrize("text", [t for t in EXPRESSIONS if " " not in t and not t.startswith("-")])
def test_an_atom_and_its_negation_partition_the_rows(seeded_db, text: str) -> None:
    conn, rows = seeded_db
    yes, no = sql_ids(conn, text), sql_ids(conn, f"not {text}")
    assert sorted(yes + no) == sorted(r["id"] for r in rows)


def test_random_combinations_agree(seeded_db) -> None:
    conn, rows = seeded_db
    atoms = [t for t in EXPRESSIONS if " " not in t]
    rnd = random.Random(7)

    def expr(depth: int) -> str:
        if depth == 0 or rnd.random() < 0.3:
            return rnd.choice(atoms)
        a, b = expr(depth - 1), expr(depth - 1)
        form = rnd.choice(["{a} {b}", "{a} or {b}", "({a} or {b})", "not ({a})", "-({a}) {b}", "{a} and {b}"])
        return form.format(a=a, b=b)

    for _ in range(200):
        text = expr(4)
        assert sql_ids(conn, text) == py_ids(rows, text), text
