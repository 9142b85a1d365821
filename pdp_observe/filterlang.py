"""The filter language shared by ``pdp-observe ls --filter``, the TUI and the management API.

One small query language, compiled two ways from one parse: to a SQLite expression over the
``exchanges`` table (the store narrows millions of rows with its indexes) and to a Python
predicate over a row dict (the live feed filters exchanges that are not stored yet). The two
must never disagree, or a live view would show rows the stored view hides; so every atom is
written to yield 0/1 and never NULL in SQL (``NOT NULL`` is NULL, while Python's ``not None``
is ``True``), text is lowered by the same ASCII-only rule on both sides, and globs escape
``[`` so SQLite's GLOB and the Python matcher accept the same strings.

Pure functions, no I/O: the store, the CLI and the TUI import this module, never the reverse.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_LENGTH = 2000
"""Longest filter text accepted: a filter is typed by a person, not generated."""
MAX_DEPTH = 32
"""Deepest nesting of parentheses and negations (keeps parsing and evaluation shallow)."""
MAX_TERMS = 100
"""Most ``field:value`` terms in one filter; keeps the SQL under SQLite's parameter limit."""
SQL_TEXT_MAX = 8192
"""The store keeps this many characters of an exchange's SQL for ``sql:`` and ``text:``."""
ERROR_MESSAGE_MAX = 1024
"""The store keeps this many characters of an exchange's error message for ``text:``."""


class FilterError(ValueError):
    """A filter a person must fix: what is wrong and where (0-based offset into the text).

    ``message`` is self-contained (it includes any did-you-mean hint) so callers can show
    ``filter error at {position}: {message}``; ``str()`` puts the position in the sentence.
    """

    def __init__(self, detail: str, position: int, hint: str | None = None) -> None:
        self.detail = detail
        self.hint = hint
        self.position = position
        self.message = f"{detail} ({hint})" if hint else detail
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.detail} at {self.position}" + (f" ({self.hint})" if self.hint else "")


# --- fields -------------------------------------------------------------------------------

NUMERIC_FIELDS: dict[str, str] = {
    "status": "status", "ms": "duration_ms", "engine": "engine_ms", "sqls": "sql_count",
    "bytes": "resp_bytes",
}
EXACT_FIELDS: dict[str, str] = {
    "model": "model", "action": "action", "code": "error_code", "txn": "txn", "fp": "fingerprint",
    "method": "method", "path": "path", "protocol": "protocol", "kind": "kind", "id": "id",
    "trace": "trace_id", "failure": "failure",
}
UPPER_FIELDS = frozenset({"code", "method"})
"""Values people type in any case but that are stored upper-case (P2002, POST)."""
SUBSTRING_FIELDS: dict[str, tuple[str, ...]] = {
    "sql": ("sql_text",),
    "text": ("path", "model", "action", "error_code", "error_message", "sql_text"),
}
IS_VALUES = ("error", "txn")

FIELDS: dict[str, str] = {
    "text": "substring of path, model, action, error code, error message or SQL (a bare word)",
    "model": "Prisma model, exact or glob (model:User, model:Us*)",
    "action": "Prisma action, exact or glob (action:findMany, action:*Many)",
    "code": "Prisma error code, exact or glob, any case (code:P2002, code:P20*)",
    "status": "HTTP status: 500, >=400, !=200, 4xx, 5xx",
    "ms": "duration on the hop in milliseconds: >250, <=10, =0",
    "engine": "time the engine reported in milliseconds (engine:>100)",
    "sqls": "number of SQL statements (sqls:>5)",
    "bytes": "response size in bytes (bytes:>=1000000)",
    "sql": "substring of the SQL, any case (sql:\"join\")",
    "txn": "interactive transaction id, exact or glob (txn:3f2a*)",
    "fp": "query fingerprint, exact or glob",
    "method": "HTTP method, any case (method:post)",
    "path": "request path with query string, exact or glob (path:/*/graphql)",
    "protocol": "wire protocol: qpe, engine-json, engine-graphql, engine, dataproxy, unknown",
    "kind": "request kind: query, batch, raw, tx_start, tx_commit, tx_rollback, ...",
    "id": "exchange id, exact or glob (id:0193ab*)",
    "trace": "W3C trace id, exact or glob",
    "failure": "hop failure: upstream_refused, upstream_read_timeout, client_abort, ...",
    "is": "is:error (status >= 400, a Prisma error code or a hop failure), is:txn (in a transaction)",
}

FILTER_HELP = """\
Filter language (--filter EXPR; full reference: docs/filter-language.md)
  terms are field:value; terms side by side must all hold; also and, or, not, -term,
  ( ); not binds tighter than and, and tighter than or. A bare word searches text:.
  Values: a word or "a quoted string" (\\" and \\\\ inside quotes).
  numbers   status ms engine sqls bytes: >=N <=N >N <N =N !=N N; status also 4xx, 5xx
            e.g. ms:>250  status:>=400  status:5xx  sqls:>10
  exact     model action code txn fp method path protocol kind id trace failure:
            case-sensitive (code, method: any case); * and ? are wildcards
            e.g. model:User  action:*Many  code:P2002  path:/*/graphql  txn:3f2a*
  contains  sql, text (path, model, action, code, error message, SQL): any case
            e.g. sql:"left join"  text:timeout  deadlock
  is:error  status >= 400, a Prisma error code, or a hop failure;  is:txn  in a transaction
  examples  model:User ms:>250 -is:error     (code:P2002 or code:P2025) action:create*
"""

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def ascii_lower(s: str) -> str:
    """Lower A-Z only: exactly what SQLite's built-in ``lower()`` does, so both sides agree."""
    return s.translate(_ASCII_LOWER)


# --- tokens -------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_NUMERIC_OPS = (">=", "<=", "!=", ">", "<", "=")
_KEYWORDS = {"and", "or", "not"}
_SPACE = " \t\r\n"


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "(", ")", "and", "or", "not", "-", "term"
    pos: int
    field: str | None = None  # term: lower-cased field name, None for a bare word
    field_pos: int = 0
    value: str = ""
    value_pos: int = 0
    node: _Node | None = None  # term: compiled while lexing, so errors come left to right


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The string starting at the quote ``text[i]``; returns (value, index after it)."""
    out: list[str] = []
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\\" and j + 1 < n and text[j + 1] in '"\\':
            out.append(text[j + 1])
            j += 2
            continue
        if c == '"':
            return "".join(out), j + 1
        out.append(c)
        j += 1
    raise FilterError("unterminated quoted string", i, 'close it with "')


def _bare(text: str, i: int) -> int:
    """End of the bare word starting at ``i`` (stops at space, parentheses, quotes)."""
    n = len(text)
    while i < n and text[i] not in _SPACE and text[i] not in '()"':
        i += 1
    return i


def _tokens(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
        elif c in "()":
            toks.append(_Tok(c, i))
            i += 1
        elif c == "-" and i + 1 < n and text[i + 1] not in _SPACE and text[i + 1] != ")":
            toks.append(_Tok("-", i))
            i += 1
        elif c == "-":
            raise FilterError("'-' needs a term right after it", i, "write -model:User, not - model:User")
        elif c == '"':
            value, end = _quoted(text, i)
            toks.append(_term(None, i, value, i, quoted=True))
            i = end
        else:
            end = _bare(text, i)
            word = text[i:end]
            colon = word.find(":")
            if colon < 0:
                if word.lower() in _KEYWORDS:
                    toks.append(_Tok(word.lower(), i))
                else:
                    toks.append(_term(None, i, word, i))
                i = end
                continue
            name = word[:colon]
            vpos = i + colon + 1
            if not name:
                raise FilterError("missing field name before ':'", i,
                                  'write field:value, or quote the text: ":..."')
            if vpos < n and text[vpos] == '"':
                value, end = _quoted(text, vpos)
                toks.append(_term(name, i, value, vpos, quoted=True))
            else:
                value = text[vpos:end]
                toks.append(_term(name, i, value, vpos))
            i = end
    return toks


def _term(name: str | None, pos: int, value: str, vpos: int, quoted: bool = False) -> _Tok:
    field_name = None if name is None else name.lower()
    if field_name is not None and field_name not in FIELDS:
        close = difflib.get_close_matches(field_name, FIELDS, n=1, cutoff=0.6)
        hint = (f"did you mean {close[0]}?" if close
                else 'fields: ' + ", ".join(FIELDS) + '; to search for the text, quote it')
        raise FilterError(f"unknown field {name!r}", pos, hint)
    if not value and quoted:
        raise FilterError("empty quoted string", vpos, "put the text to look for between the quotes")
    if not value:
        raise FilterError(f"missing value for {field_name}", vpos,
                          f"e.g. {field_name}:{_EXAMPLE.get(field_name or '', 'value')}")
    tok = _Tok("term", pos, field_name, pos, value, vpos)
    return _Tok("term", pos, field_name, pos, value, vpos, _atom(tok))


_EXAMPLE = {"status": ">=400", "ms": ">250", "engine": ">100", "sqls": ">5", "bytes": ">1000",
            "model": "User", "action": "findMany", "code": "P2002", "is": "error", "sql": "join",
            "method": "POST", "kind": "batch", "protocol": "qpe"}


# --- the tree -----------------------------------------------------------------------------

Row = Mapping[str, Any]
Pred = Callable[[Row], bool]


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled piece: its SQL (0/1, never NULL), parameters and the same test in Python."""

    sql: str
    params: tuple[Any, ...]
    test: Pred


def _get(row: Row, col: str) -> Any:
    try:
        return row[col]
    except (KeyError, IndexError):
        return None


def _atom_numeric(tok: _Tok) -> _Node:
    col = NUMERIC_FIELDS[tok.field or ""]
    v = tok.value
    if tok.field == "status" and len(v) == 3 and v[0] in "12345" and v[1:].lower() == "xx":
        lo = int(v[0]) * 100
        hi = lo + 100
        return _Node(f"({col} IS NOT NULL AND {col} >= ? AND {col} < ?)", (lo, hi),
                     lambda r: (x := _get(r, col)) is not None and lo <= x < hi)
    op = next((o for o in _NUMERIC_OPS if v.startswith(o)), "")
    num_text = v[len(op):]
    if not num_text:
        raise FilterError(f"{tok.field}: missing number after {op!r}", tok.value_pos + len(op),
                          f"e.g. {tok.field}:{op}{_EXAMPLE[tok.field or ''].lstrip('<>=!')}")
    if not _NUMBER.fullmatch(num_text):
        forms = ">=N, <=N, >N, <N, =N, !=N or N" + (", 4xx or 5xx" if tok.field == "status" else "")
        raise FilterError(f"{tok.field}: {num_text or v!r} is not a number", tok.value_pos + len(op),
                          f"{tok.field} takes {forms}")
    num: int | float = float(num_text) if "." in num_text else int(num_text)
    op = op or "="
    compare: Callable[[Any], bool] = {
        ">=": lambda x: x >= num, "<=": lambda x: x <= num, ">": lambda x: x > num,
        "<": lambda x: x < num, "=": lambda x: x == num, "!=": lambda x: x != num,
    }[op]
    return _Node(f"({col} IS NOT NULL AND {col} {op} ?)", (num,),
                 lambda r: (x := _get(r, col)) is not None and compare(x))


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``*``/``?`` as in SQLite GLOB (every other character literal, newlines included)."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL)


def _atom_exact(tok: _Tok) -> _Node:
    name = tok.field or ""
    col = EXACT_FIELDS[name]
    value = tok.value.translate(_ASCII_UPPER) if name in UPPER_FIELDS else tok.value
    if "*" not in value and "?" not in value:
        # plain equality so SQLite can use the column's index
        return _Node(f"({col} IS NOT NULL AND {col} = ?)", (value,),
                     lambda r: (x := _get(r, col)) is not None and x == value)
    # In GLOB, "[" opens a character class; "[[]" is a literal "[" (the Python side treats
    # every character but * and ? literally, which is what the escaped pattern means).
    glob = value.replace("[", "[[]")
    rx = _glob_regex(value)
    return _Node(f"({col} IS NOT NULL AND {col} GLOB ?)", (glob,),
                 lambda r: (x := _get(r, col)) is not None and rx.fullmatch(x) is not None)


def _atom_substring(tok: _Tok) -> _Node:
    cols = SUBSTRING_FIELDS[tok.field or "text"]
    needle = ascii_lower(tok.value)
    sql = " OR ".join(f"({c} IS NOT NULL AND instr(lower({c}), ?) > 0)" for c in cols)

    def test(r: Row) -> bool:
        for c in cols:
            x = _get(r, c)
            if x is not None and needle in ascii_lower(x):
                return True
        return False

    return _Node(f"({sql})" if len(cols) > 1 else sql, (needle,) * len(cols), test)


def _atom_is(tok: _Tok) -> _Node:
    v = tok.value.lower()
    if v == "error":
        return _Node("((status IS NOT NULL AND status >= 400) OR error_code IS NOT NULL "
                     "OR failure IS NOT NULL)", (),
                     lambda r: ((s := _get(r, "status")) is not None and s >= 400)
                     or _get(r, "error_code") is not None or _get(r, "failure") is not None)
    if v == "txn":
        return _Node("(txn IS NOT NULL)", (), lambda r: _get(r, "txn") is not None)
    close = difflib.get_close_matches(v, IS_VALUES, n=1, cutoff=0.5)
    hint = f"did you mean is:{close[0]}?" if close else "use is:error or is:txn"
    raise FilterError(f"unknown is: value {tok.value!r}", tok.value_pos, hint)


def _atom(tok: _Tok) -> _Node:
    f = tok.field or "text"
    if f == "is":
        return _atom_is(tok)
    if f in NUMERIC_FIELDS:
        return _atom_numeric(tok)
    if f in EXACT_FIELDS:
        return _atom_exact(tok)
    return _atom_substring(tok)


def _join(op: str, nodes: list[_Node]) -> _Node:
    """AND/OR of several nodes, nested as a balanced tree so SQLite's expression depth stays
    logarithmic (a flat ``a AND b AND ...`` is a left-deep tree in SQLite's parser)."""
    if len(nodes) == 1:
        return nodes[0]
    if len(nodes) > 4:
        mid = len(nodes) // 2
        nodes = [_join(op, nodes[:mid]), _join(op, nodes[mid:])]
    sql = "(" + f" {op} ".join(n.sql for n in nodes) + ")"
    params = tuple(p for n in nodes for p in n.params)
    tests = tuple(n.test for n in nodes)
    if op == "AND":
        return _Node(sql, params, lambda r: all(t(r) for t in tests))
    return _Node(sql, params, lambda r: any(t(r) for t in tests))


def _negate(node: _Node) -> _Node:
    test = node.test
    return _Node(f"(NOT {node.sql})", node.params, lambda r: not test(r))


# --- the parser -----------------------------------------------------------------------------

class _Parser:
    """Recursive descent: or := and ('or' and)*; and := unary (['and'] unary)*;
    unary := ('not' | '-') unary | '(' or ')' | term."""

    def __init__(self, toks: list[_Tok], end: int) -> None:
        self.toks = toks
        self.i = 0
        self.end = end  # position reported for "missing something at the end"
        self.depth = 0
        self.terms = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def parse(self) -> _Node:
        node = self.or_expr()
        tok = self.peek()
        if tok is not None:  # only a stray ")" can stop or_expr early
            raise FilterError("unmatched ')'", tok.pos, "remove it or add a '(' before it")
        return node

    def or_expr(self) -> _Node:
        nodes = [self.and_expr()]
        while (tok := self.peek()) is not None and tok.kind == "or":
            self.i += 1
            self._need_operand(tok)
            nodes.append(self.and_expr())
        return _join("OR", nodes)

    def and_expr(self) -> _Node:
        nodes = [self.unary()]
        while (tok := self.peek()) is not None and tok.kind not in ("or", ")"):
            if tok.kind == "and":
                self.i += 1
                self._need_operand(tok)
            nodes.append(self.unary())
        return _join("AND", nodes)

    def _need_operand(self, op: _Tok) -> None:
        nxt = self.peek()
        if nxt is None or nxt.kind in ("and", "or", ")"):
            raise FilterError(f"'{op.kind}' needs a term after it", op.pos,
                              None if op.kind in ("not", "-") else f"remove the dangling '{op.kind}'")

    def unary(self) -> _Node:
        tok = self.peek()
        if tok is None:
            raise FilterError("missing term", self.end)
        if tok.kind in ("and", "or"):
            raise FilterError(f"'{tok.kind}' needs a term before it", tok.pos,
                              f"remove the dangling '{tok.kind}'")
        if tok.kind == ")":
            raise FilterError("unmatched ')'", tok.pos, "remove it or add a '(' before it")
        if tok.kind in ("not", "-", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise FilterError(f"nested deeper than {MAX_DEPTH} levels", tok.pos)
            self.i += 1
            if tok.kind == "(":
                node = self.group(tok)
            else:
                self._need_operand(tok)
                node = _negate(self.unary())
            self.depth -= 1
            return node
        self.i += 1
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise FilterError(f"more than {MAX_TERMS} terms", tok.pos, "narrow the filter down")
        assert tok.node is not None
        return tok.node

    def group(self, open_tok: _Tok) -> _Node:
        nxt = self.peek()
        if nxt is not None and nxt.kind == ")":
            raise FilterError("empty parentheses", open_tok.pos, "put a term inside or remove them")
        if nxt is None:
            raise FilterError("unclosed '('", open_tok.pos, "add a ')'")
        node = self.or_expr()
        close = self.peek()
        if close is None or close.kind != ")":
            raise FilterError("unclosed '('", open_tok.pos, "add a ')'")
        self.i += 1
        return node


# --- the public face -----------------------------------------------------------------------

@dataclass(frozen=True)
class CompiledFilter:
    """A parsed filter: the same predicate as SQL (for the store) and as Python (live rows).

    Immutable and cheap to keep; :func:`compile_filter` caches them by text.
    """

    text: str
    _sql: str = field(default="1", repr=False, compare=False)
    _params: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    _test: Pred | None = field(default=None, repr=False, compare=False)

    def sql(self) -> tuple[str, list[Any]]:
        """A SQLite boolean expression over ``exchanges`` columns (no ``WHERE``) and its
        parameters; ``("1", [])`` for an empty filter. Never NULL, so it nests under NOT."""
        return self._sql, list(self._params)

    def matches(self, row: Mapping[str, Any]) -> bool:
        """The SQL's answer for one row given as ``{exchanges column: value}``; a missing
        key counts as NULL."""
        return True if self._test is None else self._test(row)

    @property
    def empty(self) -> bool:
        """True when the filter matches everything (no terms)."""
        return self._test is None


def compile_filter(text: str | None) -> CompiledFilter:
    """Parse ``text``; raises :class:`FilterError` (with a position) for anything malformed.

    ``None``, ``""`` and whitespace match everything.
    """
    return _compile(text or "")


@functools.lru_cache(maxsize=256)
def _compile(text: str) -> CompiledFilter:
    # Cached: the TUI recompiles on every keystroke and refresh; results are immutable.
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter longer than {MAX_LENGTH} characters", MAX_LENGTH)
    for i, c in enumerate(text):
        if (c < " " and c not in _SPACE) or c == "\x7f":
            raise FilterError(f"control character {c!r} in filter", i)
    toks = _tokens(text)
    if not toks:
        return CompiledFilter(text)
    node = _Parser(toks, len(text)).parse()
    return CompiledFilter(text, node.sql, node.params, node.test)
