"""Prisma's GraphQL protocol: root-field names and the document parser (pdp_observe.protocol.graphql)."""

from __future__ import annotations

import pytest

from pdp_observe.protocol.graphql import GraphQLError, parse, split_field


@pytest.mark.parametrize(
    ("field", "model", "action"),
    [
        ("findManyUser", "User", "findMany"),
        ("findUniqueUser", "User", "findUnique"),
        ("findUniqueTestModelOrThrow", "TestModel", "findUniqueOrThrow"),
        ("findFirstPostOrThrow", "Post", "findFirstOrThrow"),
        ("createOneUser", "User", "createOne"),
        ("createManyUserAndReturn", "User", "createManyAndReturn"),
        ("updateManyUserAndReturn", "User", "updateManyAndReturn"),
        ("deleteManyPost", "Post", "deleteMany"),
        ("upsertOneUser", "User", "upsertOne"),
        ("aggregateUser", "User", "aggregate"),
        ("groupByPost", "Post", "groupBy"),
        ("aggregateUserRaw", "User", "aggregateRaw"),
        ("findUserRaw", "User", "findRaw"),
        ("queryRaw", None, "queryRaw"),
        ("executeRaw", None, "executeRaw"),
        ("runCommandRaw", None, "runCommandRaw"),
        ("findMany", None, None),
        ("hello", None, None),
    ],
)
def test_split_field(field: str, model: str | None, action: str | None) -> None:
    assert split_field(field) == (model, action)


def test_parse_a_prisma_mutation() -> None:
    document = (
        'mutation {\n  createOneUser(data: {\n    email: "a@x"\n    posts: {create: [{title: "t\\"1"}, {title: """b"""}]}\n'
        "    age: -4, score: 1.5e2, ok: true, gone: null, role: ADMIN, v: $var\n  }) {\n    id\n    posts { id }\n  }\n}\n"
    )
    operation, fields = parse(document)
    assert operation == "mutation"
    ((name, query),) = fields
    assert name == "createOneUser"
    data = query["arguments"]["data"]
    assert data["posts"]["create"] == [{"title": 't"1'}, {"title": "b"}]
    assert (data["age"], data["score"], data["ok"], data["gone"], data["role"], data["v"]) == (-4, 150.0, True, None, "ADMIN", "$var")
    assert query["selection"] == {"id": True, "posts": {"arguments": {}, "selection": {"id": True}}}


def test_parse_shorthand_aliases_comments_and_variable_definitions() -> None:
    _, fields = parse("query Q($a: Int! = 1) @dir(x: 1) { # comment\n  u: findManyUser(take: 1) @skip(if: false) { id }, queryRaw(query: \"SELECT 1\") }")
    assert [name for name, _ in fields] == ["findManyUser", "queryRaw"]
    assert fields[1][1] == {"arguments": {"query": "SELECT 1"}, "selection": {}}
    _, bare = parse("{ findManyPerson { id } }")
    assert bare[0][0] == "findManyPerson"


@pytest.mark.parametrize(
    "document",
    [
        "",
        "query {",
        "{ findManyUser(where: {) }",
        "{ a } trailing",
        "{ ~ }",
        '{ a(x: "unterminated) }',
        '{ a(x: "\\q") }',
        "{ ...Fragment }",
        "{" * 200 + "}" * 200,
        "{ a(x: " + "[" * 200 + "]" * 200 + ") }",
    ],
)
def test_parse_rejects_what_prisma_never_sends(document: str) -> None:
    with pytest.raises(GraphQLError):
        parse(document)
