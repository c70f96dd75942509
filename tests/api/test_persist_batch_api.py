"""persistMessages: a backfill of up to 500 messages in one request, each stored (or refused)
on its own exactly as persistMessage would, with per-message results in the input's order."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.service import MAX_BATCH
from omni_store.persistence.tenancy import TenantId
from tests.api.conftest import GraphQLClient, StatementCounter
from tests.api.operations import (
    MESSAGE_FIELDS,
    PHOTO,
    at,
    data_of,
    gid,
    inbound,
    missing_id,
    outbound,
    persisted,
    plus,
    register_account,
    tenant_snapshot,
)
from tests.conftest import row_counts

BATCH = """
mutation($input: PersistMessagesInput!) {
  persistMessages(input: $input) {
    clientMutationId
    results {
      index messageId conversationId deduplicated
      userErrors { field code message }
    }
    userErrors { field code message }
  }
}"""

BATCH_WITH_MESSAGES = """
mutation($input: PersistMessagesInput!) {
  persistMessages(input: $input) {
    results {
      messageId
      message {
        id channelTimestamp idempotencyKey content { text }
        sender { type displayName } attachments { position externalId }
        conversation { id }
      }
    }
  }
}"""


async def batch(
    gql: GraphQLClient, messages: list[dict[str, Any]], document: str = BATCH, **input: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = data_of(
        await gql(document, {"input": {"messages": messages, **input}}), "persistMessages"
    )
    return payload


def codes(result: dict[str, Any]) -> list[tuple[tuple[str, ...] | None, str]]:
    return [
        (None if e["field"] is None else tuple(e["field"]), e["code"]) for e in result["userErrors"]
    ]


async def test_a_batch_stores_each_message_and_answers_in_order(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    # Given an account with a conversation, and a batch of history for it
    account = await register_account(gql)
    opened = await persisted(gql, inbound(account, external_message_id="first", when=at(0)))
    conversation = opened["conversation"]["id"]
    messages = [
        inbound(account, external_message_id="in-1", when=at(3)),
        outbound(account, conversation=conversation, idempotency_key="out-1", when=at(4)),
        inbound(
            account,
            external_message_id="in-2",
            user="U-2",
            thread="thread-2",
            when=at(5),
            attachments=[{"kind": "IMAGE", "externalId": "img-1"}],
        ),
    ]
    before = await row_counts(engine)

    # When it is sent in one request
    payload = await batch(gql, messages, clientMutationId="backfill-7")

    # Then each message has its result at its index, and exactly its rows were written
    results = payload["results"]
    assert payload["clientMutationId"] == "backfill-7"
    assert payload["userErrors"] == []
    assert [(r["index"], r["deduplicated"], r["userErrors"]) for r in results] == [
        (0, False, []),
        (1, False, []),
        (2, False, []),
    ]
    assert results[0]["conversationId"] == results[1]["conversationId"] == conversation
    assert results[2]["conversationId"] != conversation
    assert len({r["messageId"] for r in results}) == 3
    assert await row_counts(engine) == plus(
        before, contacts=1, conversations=1, messages=3, attachments=1
    )

    # And the messages read back as stored, with their original channel times
    body = await gql(
        "query($id: ID!) { conversation(id: $id) { lastMessageAt messages { edges { node {"
        " id channelTimestamp idempotencyKey sender { type } } } } } }",
        {"id": conversation},
    )
    timeline = data_of(body, "conversation")
    assert timeline["lastMessageAt"] == at(4)
    assert [e["node"] for e in timeline["messages"]["edges"]] == [
        {
            "id": opened["message"]["id"],
            "channelTimestamp": at(0),
            "idempotencyKey": "first",
            "sender": {"type": "CONTACT"},
        },
        {
            "id": results[0]["messageId"],
            "channelTimestamp": at(3),
            "idempotencyKey": "in-1",
            "sender": {"type": "CONTACT"},
        },
        {
            "id": results[1]["messageId"],
            "channelTimestamp": at(4),
            "idempotencyKey": "out-1",
            "sender": {"type": "AGENT"},
        },
    ]


async def test_the_stored_messages_can_be_selected_from_the_results(gql: GraphQLClient) -> None:
    account = await register_account(gql)
    messages = [
        inbound(
            account,
            external_message_id=f"batch-{i}",
            text=f"message {i}",
            when=at(i),
            attachments=[{"kind": "IMAGE", "externalId": f"img-{i}"}] if i == 1 else None,
        )
        for i in range(3)
    ]

    payload = await batch(gql, messages, BATCH_WITH_MESSAGES)

    results = payload["results"]
    assert [r["message"]["id"] for r in results] == [r["messageId"] for r in results]
    assert [
        (
            m["channelTimestamp"],
            m["idempotencyKey"],
            m["content"]["text"],
            m["sender"],
            m["attachments"],
        )
        for m in (r["message"] for r in results)
    ] == [
        (at(0), "batch-0", "message 0", {"type": "CONTACT", "displayName": "Somchai"}, []),
        (
            at(1),
            "batch-1",
            "message 1",
            {"type": "CONTACT", "displayName": "Somchai"},
            [{"position": 0, "externalId": "img-1"}],
        ),
        (at(2), "batch-2", "message 2", {"type": "CONTACT", "displayName": "Somchai"}, []),
    ]


BATCH_WITH_WHOLE_MESSAGES = f"""
mutation($input: PersistMessagesInput!) {{
  persistMessages(input: $input) {{
    results {{ messageId deduplicated message {{ {MESSAGE_FIELDS} }} }}
  }}
}}"""

READ_BACK = f"""
query($ids: [ID!]!) {{ nodes(ids: $ids) {{ ... on Message {{ {MESSAGE_FIELDS} }} }} }}"""


async def test_the_messages_of_a_batch_are_what_reading_them_back_gives(
    gql: GraphQLClient, sql_statements: StatementCounter
) -> None:
    # Given a batch of new inbound messages (with and without attachments), replies naming
    # their conversation, and a replay of a stored message
    account = await register_account(gql)
    stored = await persisted(gql, inbound(account, external_message_id="stored"))
    conversation = stored["conversation"]["id"]
    messages = [
        inbound(
            account,
            external_message_id=f"batch-{i}",
            user=f"U-{i % 3}",
            attachments=[PHOTO, {"kind": "STICKER", "externalId": f"st-{i}"}] if i % 2 else None,
        )
        for i in range(6)
    ]
    messages += [outbound(account, conversation=conversation) for _ in range(2)]
    messages.append(inbound(account, external_message_id="stored"))

    # When the batch selects its whole messages
    sql_statements.reset()
    payload = await batch(gql, messages, BATCH_WITH_WHOLE_MESSAGES)
    statements = sql_statements.count

    # Then each is the message as stored, to the last timestamp and attachment, as a read of
    # it afterwards gives
    results = payload["results"]
    assert [r["deduplicated"] for r in results] == [False] * 8 + [True]
    assert [len(r["message"]["attachments"]) for r in results] == [0, 2, 0, 2, 0, 2, 0, 0, 0]
    body = await gql(READ_BACK, {"ids": [r["messageId"] for r in results]})
    assert "errors" not in body, body
    assert body["data"]["nodes"] == [r["message"] for r in results]
    # And all of them were loaded at once after the batch's 6 statements, one statement per
    # type whatever the batch size: the messages, their contacts (senders), attachments,
    # conversations and channel accounts
    assert statements == 6 + 5, sql_statements.statements


async def test_a_batch_delivered_again_is_all_replays_and_writes_nothing(
    gql: GraphQLClient, engine: AsyncEngine, tenant: TenantId
) -> None:
    account = await register_account(gql)
    messages = [inbound(account, external_message_id=f"batch-{i}", when=at(i)) for i in range(5)]
    first = await batch(gql, messages)
    snapshot = await tenant_snapshot(engine, tenant)
    counts = await row_counts(engine)

    again = await batch(gql, messages[::-1])

    assert [(r["messageId"], r["deduplicated"], r["userErrors"]) for r in again["results"]] == [
        (r["messageId"], True, []) for r in first["results"][::-1]
    ]
    assert await row_counts(engine) == counts
    assert await tenant_snapshot(engine, tenant) == snapshot


async def test_a_message_also_delivered_alone_is_a_replay_in_the_batch(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    account = await register_account(gql)
    message = inbound(account, external_message_id="live-1")
    stored = await persisted(gql, message)
    counts = await row_counts(engine)

    payload = await batch(gql, [message, message])

    assert [(r["messageId"], r["deduplicated"]) for r in payload["results"]] == [
        (stored["message"]["id"], True),
        (stored["message"]["id"], True),
    ]
    assert await row_counts(engine) == counts


async def test_refused_messages_have_their_own_errors_and_block_no_other(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    # Given a batch mixing good messages with malformed ones and bad references
    account = await register_account(gql)
    other = await register_account(gql, external_account_id="oa-2")
    elsewhere = (await persisted(gql, inbound(other)))["conversation"]["id"]
    earlier = await persisted(gql, inbound(account, external_message_id="taken", text="first"))
    messages = [
        inbound(account, external_message_id="good-1", when=at(1)),
        inbound(account, external_message_id="blank", text="   "),
        inbound("not-a-global-id", external_message_id="bad-id"),
        inbound(gid("Conversation", 1), external_message_id="wrong-type"),
        inbound(missing_id("ChannelAccount"), external_message_id="missing"),
        outbound(account, conversation=elsewhere),
        outbound(account, conversation=missing_id("Conversation")),
        inbound(account, external_message_id="taken", text="other content"),
        {**inbound(account, external_message_id="late"), "channelTimestamp": "2999-01-01T00:00Z"},
        inbound(account, external_message_id="good-2", when=at(2)),
    ]
    before = await row_counts(engine)

    # When it is sent
    payload = await batch(gql, messages)

    # Then the two good messages were stored, and every other has its own errors
    results = payload["results"]
    assert [codes(r) for r in results] == [
        [],
        [(("content", "text"), "REQUIRED")],
        [(("channelAccountId",), "INVALID")],
        [(("channelAccountId",), "NOT_FOUND")],  # of another type: as good as missing
        [(("channelAccountId",), "NOT_FOUND")],
        [(("conversationId",), "MISMATCH")],
        [(("conversationId",), "NOT_FOUND")],
        [(("externalMessageId",), "IDEMPOTENCY_CONFLICT")],
        [(("channelTimestamp",), "OUT_OF_RANGE")],
        [],
    ]
    assert [r["messageId"] is not None for r in results] == [
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        True,  # the conflict names the stored message
        False,
        True,
    ]
    assert results[7]["messageId"] == earlier["message"]["id"]
    assert results[5]["userErrors"][0]["message"] == (
        "This conversation belongs to another channel account."
    )
    assert payload["userErrors"] == []
    assert await row_counts(engine) == plus(before, messages=2)


async def test_a_batch_over_the_limit_is_refused_whole(
    gql: GraphQLClient, engine: AsyncEngine, tenant: TenantId
) -> None:
    account = await register_account(gql)
    messages = [
        {
            "channelAccountId": account,
            "direction": "INBOUND",
            "channelTimestamp": at(0),
            "externalMessageId": f"batch-{i}",
            "contact": {"externalUserId": "U-1"},
            "content": {"type": "TEXT", "text": "hi"},
        }
        for i in range(MAX_BATCH + 1)
    ]
    snapshot = await tenant_snapshot(engine, tenant)
    counts = await row_counts(engine)

    payload = await batch(gql, messages)

    assert payload["results"] == []
    assert payload["userErrors"] == [
        {
            "field": ["messages"],
            "code": "TOO_MANY",
            "message": "A batch holds at most 500 messages; send the rest in another.",
        }
    ]
    assert await row_counts(engine) == counts
    assert await tenant_snapshot(engine, tenant) == snapshot


async def test_the_largest_batch_fits_in_a_request(gql: GraphQLClient, engine: AsyncEngine) -> None:
    account = await register_account(gql)
    messages = [
        {
            "channelAccountId": account,
            "direction": "INBOUND",
            "channelTimestamp": at(i / 60),
            "externalMessageId": f"line-message-{i:06d}",
            "externalThreadId": f"thread-{i % 40}",
            "contact": {"externalUserId": f"U-{i % 40}", "displayName": "ลูกค้า"},
            "content": {"type": "TEXT", "text": "สวัสดีค่ะ สนใจสินค้าตัวนี้ค่ะ"},
        }
        for i in range(MAX_BATCH)
    ]
    before = await row_counts(engine)

    payload = await batch(gql, messages)

    assert [r["index"] for r in payload["results"]] == list(range(MAX_BATCH))
    assert all(r["userErrors"] == [] and not r["deduplicated"] for r in payload["results"])
    assert await row_counts(engine) == plus(
        before, contacts=40, conversations=40, messages=MAX_BATCH
    )


@pytest.mark.parametrize("size", [1, 10, 100])
async def test_a_batch_costs_the_same_statements_whatever_its_size(
    gql: GraphQLClient, sql_statements: StatementCounter, size: int
) -> None:
    account = await register_account(gql)
    conversation = (await persisted(gql, inbound(account)))["conversation"]["id"]
    messages = [
        inbound(
            account,
            external_message_id=f"batch-{i}",
            user=f"U-{i}",
            thread=f"t-{i}",
            attachments=[{"kind": "IMAGE", "externalId": f"img-{i}"}],
        )
        if i % 2
        else outbound(account, conversation=conversation)
        for i in range(size + 1)
    ]

    sql_statements.reset()
    payload = await batch(gql, messages)

    assert [r["userErrors"] for r in payload["results"]] == [[]] * (size + 1)
    # Accounts (locked), replays, named conversations, contacts, conversations (by thread,
    # and the named ones moved forward), messages with their attachments; the tenant went out
    # with BEGIN.
    assert sql_statements.count == 6, sql_statements.statements


async def test_a_batch_persists_what_persist_message_persists(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    # The same message through both mutations stores the same row, but for its id and key.
    account = await register_account(gql)
    alone = inbound(
        account,
        external_message_id="alone",
        attachments=[{"kind": "FILE", "url": "https://cdn.example.com/a.pdf", "sizeBytes": 9e9}],
        replyToExternalMessageId="m-0",
    )
    batched = {**alone, "externalMessageId": "batched"}
    single = await persisted(gql, alone)
    payload = await batch(gql, [batched], BATCH_WITH_MESSAGES)

    def comparable(message: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if k not in ("id", "idempotencyKey")}

    stored = payload["results"][0]["message"]
    body = await gql(
        "query($id: ID!) { node(id: $id) { ... on Message { id channelTimestamp "
        "idempotencyKey content { text } sender { type displayName } "
        "attachments { position externalId } conversation { id } } } }",
        {"id": single["message"]["id"]},
    )
    assert comparable(stored) == comparable(data_of(body, "node"))
    assert stored["id"] != single["message"]["id"]
