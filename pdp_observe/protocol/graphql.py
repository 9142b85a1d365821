"""Prisma's GraphQL protocol (Prisma ≤ 4.x): turn the document into the JSON-protocol shape.

Prisma 4 sends one GraphQL *document* per operation with every value inlined as a literal
(``findManyUser(where: {email: {endsWith: "@x"}}) { id posts { id } }``; ``variables`` is
always ``{}``). Converting it to the JSON protocol's ``{arguments, selection}`` lets the
fingerprint and raw-SQL code treat both engine protocols alike. Only the subset Prisma emits
matters, but any input must end in a :class:`GraphQLError`, never a loop, a crash or deep
recursion (nesting is capped at :data:`MAX_DEPTH`).
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64

_TOKEN = re.compile(
    r'''
      (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
    | (?P<block>"""(?:[^"\\]|\\.|"(?!""))*""")
    | (?P<string>"(?:[^"\\\n\r]|\\.)*")
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
    | (?P<punct>\.\.\.|[!$&()\[\]{}:=@|])
    ''',
    re.X,
)
_LITERALS = {"true": True, "false": False, "null": None}

# JSON-protocol actions as GraphQL root-field prefixes (``findManyUser``) and suffixes
# (``findUniqueUserOrThrow``, ``createManyUserAndReturn``).
_PREFIXES = (
    "findUnique", "findFirst", "findMany", "createOne", "createMany", "updateOne",
    "updateMany", "deleteOne", "deleteMany", "upsertOne", "groupBy", "aggregate",
)
_SUFFIXES = ("OrThrow", "AndReturn")
RAW_FIELDS = frozenset({"queryRaw", "executeRaw", "runCommandRaw"})


class GraphQLError(ValueError):
    """The document is not something Prisma would send (or not GraphQL at all)."""


def split_field(name: str) -> tuple[str | None, str | None]:
    """``findManyUser`` → ``("User", "findMany")``; raw fields have no model; unknown → Nones.

    Also used on engine *response* keys, which follow the same ``<action><Model>`` rule.
    """
    if name in RAW_FIELDS:
        return None, name
    for prefix in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            model, action = name[len(prefix):], prefix
            if prefix == "aggregate" and model.endswith("Raw") and len(model) > 3:
                return model[:-3], "aggregateRaw"
            for suffix in _SUFFIXES:
                if model.endswith(suffix) and len(model) > len(suffix):
                    model, action = model[: -len(suffix)], action + suffix
            return model, action
    if name.startswith("find") and name.endswith("Raw") and len(name) > 7:
        return name[4:-3], "findRaw"
    return None, None


def tokenize(document: str) -> list[tuple[str, str]]:
    """``(kind, text)`` tokens without whitespace, commas and comments."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    for match in _TOKEN.finditer(document):
        if match.start() != pos:
            raise GraphQLError(f"unexpected character at offset {pos}")
        pos = match.end()
        if match.lastgroup != "skip":
            tokens.append((match.lastgroup or "", match.group()))
    if pos != len(document):
        raise GraphQLError(f"unexpected character at offset {pos}")
    return tokens


def parse(document: str) -> tuple[str, list[tuple[str, Any]]]:
    """``(operation type, [(root field name, {arguments, selection} | True), ...])``."""
    return _Parser(tokenize(document)).document()


class _Parser:
    """Recursive descent over the token list; ``depth`` bounds every recursion."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def next(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise GraphQLError("unexpected end of document")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expect(self, text: str) -> None:
        if self.next()[1] != text:
            raise GraphQLError(f"expected {text!r}")

    def name(self) -> str:
        kind, text = self.next()
        if kind != "name":
            raise GraphQLError(f"expected a name, got {text!r}")
        return text

    def document(self) -> tuple[str, list[tuple[str, Any]]]:
        operation = "query"
        if self.peek() in ("query", "mutation", "subscription"):
            operation = self.name()
            if self.peek() not in ("{", "(", "@", None):
                self.name()
            if self.peek() == "(":
                self.skip_group()  # variable definitions: Prisma sends none
            self.directives()
        fields = self.selection_set(0)
        if self.pos != len(self.tokens):
            raise GraphQLError("trailing tokens after the operation")
        return operation, fields

    def selection_set(self, depth: int) -> list[tuple[str, Any]]:
        if depth > MAX_DEPTH:
            raise GraphQLError("document nested too deeply")
        self.expect("{")
        fields = []
        while self.peek() != "}":
            fields.append(self.field(depth))
        self.expect("}")
        return fields

    def field(self, depth: int) -> tuple[str, Any]:
        name = self.name()
        if self.peek() == ":":  # alias: keep the real field name
            self.next()
            name = self.name()
        args = self.arguments(depth) if self.peek() == "(" else {}
        self.directives()
        if self.peek() == "{":
            selection = dict(self.selection_set(depth + 1))
            return name, {"arguments": args, "selection": selection}
        return name, ({"arguments": args, "selection": {}} if args else True)

    def arguments(self, depth: int) -> dict[str, Any]:
        self.expect("(")
        args: dict[str, Any] = {}
        while self.peek() != ")":
            key = self.name()
            self.expect(":")
            args[key] = self.value(depth + 1)
        self.expect(")")
        return args

    def skip_group(self) -> None:
        """Skip a balanced ``( ... )`` without recursing."""
        level = 0
        while True:
            text = self.next()[1]
            level += (text == "(") - (text == ")")
            if level == 0:
                return

    def directives(self) -> None:
        while self.peek() == "@":
            self.next()
            self.name()
            if self.peek() == "(":
                self.arguments(0)

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise GraphQLError("value nested too deeply")
        kind, text = self.next()
        if kind in ("string", "block"):
            return _string(kind, text)
        if kind == "number":
            return _number(text)
        if kind == "name":
            return _LITERALS[text] if text in _LITERALS else text
        if text == "$":
            return "$" + self.name()
        if text == "[":
            return self._list(depth)
        if text == "{":
            return self._object(depth)
        raise GraphQLError(f"unexpected {text!r} in a value")

    def _list(self, depth: int) -> list[Any]:
        items = []
        while self.peek() != "]":
            items.append(self.value(depth + 1))
        self.expect("]")
        return items

    def _object(self, depth: int) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        while self.peek() != "}":
            key = self.name()
            self.expect(":")
            obj[key] = self.value(depth + 1)
        self.expect("}")
        return obj


def _number(text: str) -> int | float | str:
    """A numeric literal; one too long for ``int()`` (over 4300 digits) stays text."""
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text


def _string(kind: str, text: str) -> str:
    """GraphQL string escapes are a subset of JSON's; block strings are taken verbatim."""
    if kind == "block":
        return text[3:-3]
    try:
        return str(json.loads(text, strict=False))
    except ValueError as exc:
        raise GraphQLError("bad string escape") from exc
