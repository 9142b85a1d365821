"""Query fingerprints: the same query shape gets the same short id, whatever its values.

Grouping "the same query with other values" is what turns thousands of exchanges into a
readable top-N (count, latency, errors per query), so the rules below decide what "the same"
means. They are applied to every protocol generation:

* every scalar value becomes ``?``; ``null`` stays ``null`` (Prisma turns it into
  ``IS NULL``, which is a different query);
* object keys are sorted (argument order means nothing to Prisma);
* an array's length is not shape: each distinct element shape is kept once, so
  ``in: [1, 2, 3]`` equals ``in: [7]`` and a nested ``create`` of 2 posts equals one of 4;
* tagged values keep their type (``$DateTime``); a ``FieldRef`` keeps the field it names;
* in a selection, ``true``/``false`` are shape (which fields are read or omitted);
* SQL (raw queries, Prisma 7 plans): literals and placeholders become ``?``, comments and
  whitespace runs collapse, a parenthesised list of placeholders becomes ``(...)`` and a run
  of such groups (multi-row ``VALUES``) becomes one.

The signature strings double as the human-readable ``details["shape"]``.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Any

import orjson

MAX_DEPTH = 48
"""Deeper structure is summarised as ``…``: bounds the cost of hostile input."""

SHAPE_LIMIT = 300
"""Longest ``details["shape"]`` string."""


def fingerprint(*parts: str | None) -> str:
    """16 hex chars (64 bits) of BLAKE2b over the parts: short enough to show, stable forever."""
    joined = "\x1f".join(p or "" for p in parts)
    data = joined.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def value_sig(value: Any, depth: int = 0) -> str:
    """Value-free signature of a JSON-protocol argument value (see the module rules).

    Scalar children are handled inline rather than by a call each: most nodes are leaves,
    and this walk is the recorder's largest cost per exchange on JSON-protocol traffic.
    """
    if value is None:
        return "null"
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return "{…}"
        tag = value.get("$type")
        if isinstance(tag, str):
            return _tagged_sig(tag, value.get("value"))
        d = depth + 1
        parts = []
        for k in sorted(value):
            v = value[k]
            if v is None:
                parts.append(f"{k}:null")
            elif isinstance(v, (dict, list)):
                parts.append(f"{k}:{value_sig(v, d)}")
            else:
                parts.append(f"{k}:?")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            return "[…]"
        d = depth + 1
        sigs = set()
        for v in value:
            if v is None:
                sigs.add("null")
            elif isinstance(v, (dict, list)):
                sigs.add(value_sig(v, d))
            else:
                sigs.add("?")
        return "[" + "|".join(sorted(sigs)) + "]"
    return "?"


def _tagged_sig(tag: str, value: Any) -> str:
    """``$DateTime`` etc.; a FieldRef compares against a column, so its target is shape."""
    if tag == "FieldRef" and isinstance(value, dict):
        return f"$FieldRef({value.get('_container')}.{value.get('_ref')})"
    return "$" + tag


def query_sig(query: Any, depth: int = 0) -> str:
    """Signature of a ``{arguments, selection}`` field query (JSON protocol or parsed GraphQL)."""
    if not isinstance(query, dict):
        return ""
    args = query.get("arguments")
    out = ""
    if isinstance(args, dict) and args:
        out = "(" + value_sig(args, depth)[1:-1] + ")"
    return out + selection_sig(query.get("selection"), depth)


def selection_sig(selection: Any, depth: int = 0) -> str:
    """``{a,b,!c,rel(args){…}}``: booleans select/omit, objects are nested field queries.

    A top-level selection comes from the application's code (``select``/``include``) and so
    repeats byte for byte across calls of one call site; its signature is cached under its
    exact serialisation (0.4 µs to make, ~9 µs of walking saved on a typical include tree).
    """
    if not isinstance(selection, dict) or not selection:
        return ""
    if depth == 0:
        try:
            key = orjson.dumps(selection)
        except (TypeError, orjson.JSONEncodeError):
            return _selection_sig(selection, 0)
        sig = _SELECTION_CACHE.get(key)
        if sig is None:
            if len(_SELECTION_CACHE) >= _SELECTION_CACHE_MAX:
                _SELECTION_CACHE.clear()
            sig = _SELECTION_CACHE[key] = _selection_sig(selection, 0)
        return sig
    return _selection_sig(selection, depth)


_SELECTION_CACHE: dict[bytes, str] = {}
_SELECTION_CACHE_MAX = 4096


def _selection_sig(selection: dict[str, Any], depth: int) -> str:
    if depth >= MAX_DEPTH:
        return "{…}"
    parts = []
    for key in sorted(selection):
        sub = selection[key]
        if sub is True:
            parts.append(key)
        elif sub is False:
            parts.append("!" + key)
        elif isinstance(sub, dict):
            parts.append(key + query_sig(sub, depth + 1))
        else:
            parts.append(key + "=?")
    return "{" + ",".join(parts) + "}"


_SQL_TOKEN = re.compile(
    r"""
      (?P<ident>"(?:[^"]|"")*(?:"|\Z)|`[^`]*(?:`|\Z))
    | (?P<comment>/\*.*?(?:\*/|\Z)|--[^\n]*)
    | (?P<value>'(?:[^']|'')*(?:'|\Z)|\$\d+|@P\d+|\?)
    | (?P<number>(?<![\w$.])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w$]))
    | (?P<space>\s+)
    """,
    re.X | re.S,
)
# An unterminated quote or comment runs to the end of the text instead of failing: a failed
# match would be retried at every later quote, which is quadratic on hostile input.
_PLACEHOLDER_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_GROUP_RUN = re.compile(r"\(\.\.\.\)(?:\s*,\s*\(\.\.\.\))+")
_SPACES = re.compile(r"  +")


def _literal_token(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "ident":
        return match.group()
    return "?" if kind in ("value", "number") else " "


def _compiled_token(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind in ("ident", "number"):
        return match.group()
    return "?" if kind == "value" else " "


def normalize_sql(sql: str, numbers: bool = True) -> str:
    """SQL with values, placeholders, comments and list lengths removed (module rules).

    ``numbers=False`` keeps numeric literals: SQL compiled by Prisma binds every value as a
    parameter, so its numbers are structure (``WHERE 1=1``), unlike a user's raw SQL.
    Compiled SQL repeats verbatim (its values are parameters), so results are cached: the
    regex passes cost ~15 µs per statement and an application has a few hundred shapes.
    """
    if len(sql) > _CACHE_SQL_MAX:
        return _normalize_sql(sql, numbers)
    return _normalize_cached(sql, numbers)


_CACHE_SQL_MAX = 16 * 1024


def _normalize_sql(sql: str, numbers: bool) -> str:
    out = _SQL_TOKEN.sub(_literal_token if numbers else _compiled_token, sql)
    out = _SPACES.sub(" ", out).strip()
    out = _PLACEHOLDER_LIST.sub("(...)", out)
    return _GROUP_RUN.sub("(...)", out)


_normalize_cached = lru_cache(maxsize=4096)(_normalize_sql)


def collapse_runs(items: list[str]) -> list[str]:
    """``[a, a, b, a]`` → ``[a, b, a]``: a batch of N same-shape calls is one shape."""
    return [item for i, item in enumerate(items) if i == 0 or item != items[i - 1]]


def shape_text(text: str) -> str:
    """Cap a signature for display in ``details["shape"]``."""
    return text if len(text) <= SHAPE_LIMIT else text[: SHAPE_LIMIT - 1] + "…"
