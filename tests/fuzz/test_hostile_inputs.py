"""Hostile input through the API, over HTTP: each refused exactly (field path and code) with
nothing written, or stored verbatim and read back equal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.graph.ids import to_global_id
from omni_store.persistence.database import Database
from omni_store.persistence.tables import TENANT_TABLES
from omni_store.persistence.tenancy import TenantId
from tests.api.conftest import GraphQLClient
from tests.conftest import row_counts
from tests.factories import channel_account
from tests.fuzz.conftest import Seeded

PERSIST = """mutation($input: PersistMessageInput!) { persistMessage(input: $input) {
  message { id content { text struct } } userErrors { field code } } }"""

TIMELINE = """query($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  conversation(id: $id) { messages(first: $first, after: $after, last: $last, before: $before) {
    edges { cursor node { id content { text } } } } } }"""


def _input(account_id: int, key: str, **content: Any) -> dict[str, Any]:
    return {
        "channelAccountId": to_global_id("ChannelAccount", account_id),
        "direction": "INBOUND",
        "channelTimestamp": "2026-11-20T09:00:00Z",
        "externalMessageId": key,
        "externalThreadId": "thread-hostile",
        "contact": {"externalUserId": "U-hostile"},
        "content": {"type": "TEXT", "text": "hi", **content},
    }


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def _refused(
    gql: GraphQLClient, engine: AsyncEngine, variables: dict[str, Any]
) -> list[dict[str, Any]]:
    """The userErrors of a persistMessage that must be refused and write nothing."""
    before = await row_counts(engine)
    body = await gql(PERSIST, variables)
    assert await row_counts(engine) == before
    assert "errors" not in body, body
    payload = body["data"]["persistMessage"]
    assert payload["message"] is None
    errors: list[dict[str, Any]] = payload["userErrors"]
    return errors


@pytest.fixture
async def account_id(db: Database, tenant: TenantId) -> int:
    return (await channel_account(db, tenant, external_account_id="oa-hostile")).id


@pytest.mark.parametrize(
    ("content", "field", "code"),
    [
        ({"text": "x" * 50_001}, ["content", "text"], "TOO_LONG"),
        ({"struct": {"blob": "x" * (64 * 1024)}}, ["content", "struct"], "TOO_LARGE"),
        ({"struct": _nested(17)}, ["content", "struct"], "TOO_DEEP"),
        ({"text": "before\x00after"}, ["content", "text"], "INVALID_CHARACTER"),
        ({"struct": {"k\x00ey": 1}}, ["content", "struct"], "INVALID_CHARACTER"),
    ],
    ids=["text-50001", "json-over-64KiB", "json-17-deep", "nul-in-text", "nul-in-json-key"],
)
async def test_hostile_content_is_refused_and_nothing_written(
    gql: GraphQLClient,
    engine: AsyncEngine,
    account_id: int,
    content: dict[str, Any],
    field: list[str],
    code: str,
) -> None:
    errors = await _refused(gql, engine, {"input": _input(account_id, "hostile", **content)})

    assert errors == [{"field": field, "code": code}]


async def test_limits_themselves_are_accepted(
    gql: GraphQLClient, engine: AsyncEngine, account_id: int
) -> None:
    """The boundary values are stored: 50,000 characters, 16 levels."""
    body = await gql(
        PERSIST,
        {"input": _input(account_id, "edge", text="y" * 50_000, struct=_nested(16))},
    )

    payload = body["data"]["persistMessage"]
    assert payload["userErrors"] == []
    assert payload["message"]["content"] == {"text": "y" * 50_000, "struct": _nested(16)}


async def test_a_lone_surrogate_in_text_is_refused_and_nothing_written(
    gql: GraphQLClient, engine: AsyncEngine, account_id: int
) -> None:
    variables = {"input": _input(account_id, "surrogate", text="a\ud800b")}
    # json.dumps escapes it as "\ud800" (ASCII), valid JSON syntax but no Unicode scalar.
    body_bytes = json.dumps({"query": PERSIST, "variables": variables}).encode()
    assert b"\\ud800" in body_bytes
    before = await row_counts(engine)

    response = await gql.http.post(
        "/graphql",
        content=body_bytes,
        headers={"Authorization": f"Bearer {gql.token}", "Content-Type": "application/json"},
    )

    assert await row_counts(engine) == before
    assert response.status_code == 200, response.text
    assert response.json()["data"]["persistMessage"] == {
        "message": None,
        "userErrors": [{"field": ["content", "text"], "code": "INVALID_CHARACTER"}],
    }


async def test_invalid_utf8_in_the_body_is_refused_with_400_and_nothing_written(
    gql: GraphQLClient, engine: AsyncEngine, account_id: int
) -> None:
    variables = {"input": _input(account_id, "bad-utf8", text="MARK")}
    body_bytes = json.dumps({"query": PERSIST, "variables": variables}).encode()
    body_bytes = body_bytes.replace(b"MARK", b"\xff\xfe")
    before = await row_counts(engine)

    response = await gql.http.post(
        "/graphql",
        content=body_bytes,
        headers={"Authorization": f"Bearer {gql.token}", "Content-Type": "application/json"},
    )

    assert response.status_code == 400, response.text
    assert await row_counts(engine) == before


@pytest.mark.parametrize("when", ["1970-01-01T00:00:00Z", "3000-01-01T00:00:00Z"])
async def test_timestamps_far_away_are_out_of_range_and_nothing_written(
    gql: GraphQLClient, engine: AsyncEngine, account_id: int, when: str
) -> None:
    variables = {"input": {**_input(account_id, f"t-{when}"), "channelTimestamp": when}}

    errors = await _refused(gql, engine, variables)

    assert errors == [{"field": ["channelTimestamp"], "code": "OUT_OF_RANGE"}]


async def test_a_global_id_of_another_type_is_not_found_and_nothing_written(
    gql: GraphQLClient, engine: AsyncEngine, seeded: Seeded
) -> None:
    variables = {"input": _input(seeded.account_id, "other-type")}
    variables["input"]["channelAccountId"] = to_global_id("Conversation", seeded.conversation_id)

    errors = await _refused(gql, engine, variables)

    assert errors == [{"field": ["channelAccountId"], "code": "NOT_FOUND"}]
    body = await gql(
        "query($id: ID!) { conversation(id: $id) { id } }",
        {"id": to_global_id("Message", seeded.message_ids[0])},
    )
    assert body == {"data": {"conversation": None}}


def _codes(body: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [
        (e["extensions"]["code"], e["extensions"].get("field"), e["extensions"].get("reason"))
        for e in body["errors"]
    ]


@pytest.mark.parametrize("size", [101, 1_000_000, -1, -(2**31)])
@pytest.mark.parametrize("argument", ["first", "last"])
async def test_huge_and_negative_page_sizes_are_refused(
    gql: GraphQLClient, engine: AsyncEngine, seeded: Seeded, argument: str, size: int
) -> None:
    before = await row_counts(engine)
    conversation = to_global_id("Conversation", seeded.conversation_id)

    timeline = await gql(TIMELINE, {"id": conversation, argument: size})
    conversations = await gql(
        f"query($n: Int) {{ conversations({argument}: $n) {{ edges {{ cursor }} }} }}",
        {"n": size},
    )

    assert timeline["data"] == {"conversation": None}
    assert _codes(timeline) == [("BAD_USER_INPUT", [argument], "OUT_OF_RANGE")]
    assert conversations["data"] is None
    assert _codes(conversations) == [("BAD_USER_INPUT", [argument], "OUT_OF_RANGE")]
    assert await row_counts(engine) == before


async def test_a_page_size_beyond_32_bits_is_refused_before_anything_runs(
    gql: GraphQLClient, seeded: Seeded
) -> None:
    body = await gql("{ conversations(first: 99999999999) { edges { cursor } } }")

    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["GRAPHQL_VALIDATION_FAILED"]


async def _cursors(gql: GraphQLClient, conversation_id: int) -> list[str]:
    body = await gql(TIMELINE, {"id": to_global_id("Conversation", conversation_id)})
    return [e["cursor"] for e in body["data"]["conversation"]["messages"]["edges"]]


@pytest.mark.parametrize(
    "forge",
    [
        lambda c: "not-a-cursor",
        lambda c: c[:-4],  # truncated
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # tampered
        lambda c: "x" * 10_000,
        lambda c: "'); DROP TABLE messages; --",
    ],
    ids=["garbage", "truncated", "tampered", "long", "sql"],
)
@pytest.mark.parametrize("argument", ["after", "before"])
async def test_forged_and_truncated_cursors_are_refused(
    gql: GraphQLClient, seeded: Seeded, argument: str, forge: Any
) -> None:
    [first, *_] = await _cursors(gql, seeded.conversation_id)
    conversation = to_global_id("Conversation", seeded.conversation_id)

    body = await gql(TIMELINE, {"id": conversation, argument: forge(first)})

    assert body["data"] == {"conversation": None}
    assert _codes(body) == [("BAD_USER_INPUT", [argument], "INVALID")]


@pytest.mark.parametrize("argument", ["after", "before"])
async def test_an_empty_cursor_is_refused(
    gql: GraphQLClient, seeded: Seeded, argument: str
) -> None:
    conversation = to_global_id("Conversation", seeded.conversation_id)

    body = await gql(TIMELINE, {"id": conversation, argument: ""})

    assert body["data"] == {"conversation": None}
    assert _codes(body) == [("BAD_USER_INPUT", [argument], "INVALID")]


async def test_a_cursor_of_another_tenants_conversation_returns_nothing(
    gql: GraphQLClient, other_gql: GraphQLClient, engine: AsyncEngine, seeded: Seeded
) -> None:
    # The other tenant: look-alike data (same external ids), through the API.
    other_account = await other_gql(
        """mutation { registerChannelAccount(input: {channel: LINE, externalAccountId: "oa-1"})
        { channelAccount { id } userErrors { code } } }"""
    )
    account = other_account["data"]["registerChannelAccount"]["channelAccount"]["id"]
    for key in ("m-a", "m-b"):
        stored = await other_gql(
            PERSIST,
            {
                "input": {
                    **_input(1, key),
                    "channelAccountId": account,
                    "externalThreadId": "thread-1",
                }
            },
        )
        assert stored["data"]["persistMessage"]["userErrors"] == []
        conversation = stored["data"]["persistMessage"]["message"]["id"]
    theirs = await other_gql(
        "query($id: ID!) { node(id: $id) { ... on Message { conversation { id } } } }",
        {"id": conversation},
    )
    their_conversation = theirs["data"]["node"]["conversation"]["id"]
    their_body = await other_gql(TIMELINE, {"id": their_conversation})
    their_cursor = their_body["data"]["conversation"]["messages"]["edges"][0]["cursor"]
    before = await row_counts(engine)

    mine = await gql(
        TIMELINE,
        {"id": to_global_id("Conversation", seeded.conversation_id), "after": their_cursor},
    )
    stolen = await gql(TIMELINE, {"id": their_conversation, "after": their_cursor})

    assert mine["data"] == {"conversation": None}
    assert _codes(mine) == [("BAD_USER_INPUT", ["after"], "INVALID")]
    assert stolen == {"data": {"conversation": None}}
    assert await row_counts(engine) == before


SQL_LOOKING = ["'); DROP TABLE messages; --", "1 OR 1=1", '" OR ""="', "$$; SELECT 1; $$"]


async def test_sql_looking_strings_are_stored_verbatim_and_never_executed(
    gql: GraphQLClient, engine: AsyncEngine, account_id: int
) -> None:
    tables_before = await row_counts(engine)
    conversation = None
    for i, value in enumerate(SQL_LOOKING):
        variables = {"input": _input(account_id, value, text=value, struct={value: value})}
        variables["input"]["contact"] = {"externalUserId": value, "displayName": value}
        variables["input"]["channelTimestamp"] = f"2026-11-20T09:0{i}:00Z"
        body = await gql(
            PERSIST.replace("message { id", "conversation { id } message { id externalMessageId"),
            variables,
        )
        payload = body["data"]["persistMessage"]
        assert payload["userErrors"] == []
        assert payload["message"]["externalMessageId"] == value
        assert payload["message"]["content"] == {"text": value, "struct": {value: value}}
        conversation = payload["conversation"]["id"]

    timeline = await gql(TIMELINE, {"id": conversation})

    texts = [
        e["node"]["content"]["text"] for e in timeline["data"]["conversation"]["messages"]["edges"]
    ]
    assert texts == SQL_LOOKING
    after = await row_counts(engine)  # every table still there and answering
    assert after["messages"] == tables_before["messages"] + len(SQL_LOOKING)
    async with engine.connect() as connection:
        for table in TENANT_TABLES:
            exists = await connection.execute(text("select to_regclass(:t)"), {"t": table.name})
            assert exists.scalar_one() is not None, table.name
