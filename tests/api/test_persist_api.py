"""The story's acceptance criteria, end to end through GraphQL on the real database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.tenancy import TenantId
from tests.api.conftest import GraphQLClient
from tests.api.operations import (
    ADD_ATTACHMENTS,
    CONTACT_FIELDS,
    CONVERSATION_FIELDS,
    MESSAGE_FIELDS,
    PHOTO,
    REGISTER,
    UPSERT_CONTACT,
    UPSERT_CONVERSATION,
    at,
    data_of,
    gid,
    inbound,
    missing_id,
    outbound,
    persist,
    persisted,
    plus,
    register_account,
    row_id,
    tenant_snapshot,
    timeline,
    user_errors,
)
from tests.conftest import row_counts

# --- idempotency -------------------------------------------------------------------------------


async def test_first_delivery_stores_the_whole_normalized_message(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    account = await register_account(gql)
    before = await row_counts(engine)

    payload = await persisted(
        gql,
        inbound(
            account,
            external_message_id="line-msg-1",
            when="2026-01-05T16:00:00+07:00",
            content={
                "type": "PRODUCT",
                "text": "Is this in stock?",
                "struct": {"product": {"sku": "SKU-42", "shop": "shopee-77", "price": 199.0}},
            },
            attachments=[PHOTO],
            replyToExternalMessageId="line-msg-0",
            clientMutationId="delivery-1",
        ),
    )

    assert await row_counts(engine) == plus(
        before, contacts=1, conversations=1, messages=1, attachments=1
    )
    message = payload["message"]
    conversation = payload["conversation"]
    contact = payload["contact"]
    assert payload["clientMutationId"] == "delivery-1"
    assert payload["deduplicated"] is False
    assert payload["userErrors"] == []
    assert payload["messageEdge"]["node"] == {"id": message["id"]}
    assert {k: v for k, v in message.items() if k not in ("id", "createdAt", "attachments")} == {
        "direction": "INBOUND",
        # Stored as an instant: the connector's offset is not kept, the moment is.
        "channelTimestamp": "2026-01-05T09:00:00+00:00",
        "externalMessageId": "line-msg-1",
        "idempotencyKey": "line-msg-1",
        "replyToExternalMessageId": "line-msg-0",
        "status": "RECEIVED",
        "sender": {
            "type": "CONTACT",
            "id": contact["id"],
            "displayName": "Somchai",
            "avatarUrl": None,
        },
        "content": {
            "type": "PRODUCT",
            "text": "Is this in stock?",
            "struct": {"product": {"sku": "SKU-42", "shop": "shopee-77", "price": 199.0}},
        },
        "conversation": {"id": conversation["id"]},
        "channelAccount": {"id": account},
    }
    assert [{k: v for k, v in a.items() if k != "id"} for a in message["attachments"]] == [
        {"position": 0, **PHOTO, "durationMs": None}
    ]
    assert {k: conversation[k] for k in ("channel", "threadKey", "externalThreadId")} == {
        "channel": "LINE",
        "threadKey": "t:thread-1",
        "externalThreadId": "thread-1",
    }
    assert conversation["lastMessageAt"] == "2026-01-05T09:00:00+00:00"
    assert conversation["channelAccount"] == {"id": account}
    assert conversation["contact"] == {"id": contact["id"]}
    assert (contact["externalUserId"], contact["displayName"]) == ("U-1", "Somchai")


READ_BACK = f"""
query($message: ID!, $conversation: ID!, $contact: ID!) {{
  message: node(id: $message) {{ ... on Message {{ {MESSAGE_FIELDS} }} }}
  conversation: node(id: $conversation) {{ ... on Conversation {{ {CONVERSATION_FIELDS} }} }}
  contact: node(id: $contact) {{ ... on Contact {{ {CONTACT_FIELDS} }} }}
}}"""


@pytest.mark.parametrize("attachments", [[], [PHOTO, {"kind": "STICKER", "externalId": "st-1"}]])
async def test_the_payload_of_a_new_message_is_what_reading_it_back_gives(
    gql: GraphQLClient, attachments: list[dict[str, Any]]
) -> None:
    # The payload is built from the rows the write returned, not read back: it must be the
    # same, to the last timestamp, as the stored objects read afterwards.
    account = await register_account(gql)
    payload = await persisted(gql, inbound(account, attachments=attachments))

    body = await gql(
        READ_BACK,
        {
            "message": payload["message"]["id"],
            "conversation": payload["conversation"]["id"],
            "contact": payload["contact"]["id"],
        },
    )

    assert "errors" not in body, body
    assert body["data"] == {
        "message": payload["message"],
        "conversation": payload["conversation"],
        "contact": payload["contact"],
    }
    assert len(payload["message"]["attachments"]) == len(attachments)


@pytest.mark.parametrize("kind", ["inbound", "reply", "inbound without thread id"])
async def test_duplicate_delivery_returns_the_stored_message_and_writes_nothing(
    gql: GraphQLClient, engine: AsyncEngine, tenant: TenantId, kind: str
) -> None:
    # The replay's payload is read with the replay, not after it: it must show what the first
    # delivery's payload showed.
    account = await register_account(gql)
    thread = None if kind.endswith("without thread id") else "thread-1"
    event = inbound(account, external_message_id="line-msg-1", attachments=[PHOTO], thread=thread)
    if kind == "reply":
        # A reply names its conversation; its payload's contact is the conversation's.
        conversation = (await persisted(gql, event))["conversation"]["id"]
        second_photo = {**PHOTO, "externalId": "line-content-2", "fileName": "photo-2.jpg"}
        event = outbound(account, conversation=conversation, attachments=[PHOTO, second_photo])
    first = await persisted(gql, event)
    counts = await row_counts(engine)
    rows = await tenant_snapshot(engine, tenant)

    second = await persisted(gql, event)

    assert second["deduplicated"] is True
    assert first["contact"] is not None
    assert len(first["message"]["attachments"]) == (2 if kind == "reply" else 1)
    assert second["message"] == first["message"]
    assert second["conversation"] == first["conversation"]
    assert second["contact"] == first["contact"]
    assert second["messageEdge"] == first["messageEdge"]
    assert await row_counts(engine) == counts
    assert await tenant_snapshot(engine, tenant) == rows


async def test_a_replay_is_recognised_whatever_offset_and_profile_it_carries(
    gql: GraphQLClient, engine: AsyncEngine, tenant: TenantId
) -> None:
    account = await register_account(gql)
    first = await persisted(
        gql, inbound(account, idempotency_key="evt-1", when="2026-01-05T16:00:00+07:00")
    )
    rows = await tenant_snapshot(engine, tenant)

    # The same instant written in UTC, and a refreshed display name: still the same event.
    again = await persisted(
        gql,
        inbound(
            account,
            idempotency_key="evt-1",
            when="2026-01-05T09:00:00Z",
            display_name="Somchai (new name)",
        ),
    )

    assert again["deduplicated"] is True
    assert again["message"]["id"] == first["message"]["id"]
    assert await tenant_snapshot(engine, tenant) == rows


async def test_twenty_concurrent_deliveries_of_one_event_store_one_message(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    account = await register_account(gql)
    before = await row_counts(engine)
    event = inbound(account, external_message_id="line-retry-storm", attachments=[PHOTO])

    payloads = await asyncio.gather(*(persisted(gql, event) for _ in range(20)))

    assert await row_counts(engine) == plus(
        before, contacts=1, conversations=1, messages=1, attachments=1
    )
    assert len({p["message"]["id"] for p in payloads}) == 1
    assert len({p["conversation"]["id"] for p in payloads}) == 1
    assert len({p["contact"]["id"] for p in payloads}) == 1
    assert sorted(p["deduplicated"] for p in payloads) == [False] + [True] * 19


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ({"idempotencyKey": "evt-9", "externalMessageId": "line-9"}, "idempotencyKey"),
        ({"externalMessageId": "line-9"}, "externalMessageId"),
    ],
)
async def test_a_replay_with_other_content_is_a_conflict_and_keeps_the_stored_message(
    gql: GraphQLClient,
    engine: AsyncEngine,
    tenant: TenantId,
    key: dict[str, str],
    field: str,
) -> None:
    account = await register_account(gql)
    stored = await persisted(gql, inbound(account, text="original", **key))
    counts = await row_counts(engine)
    rows = await tenant_snapshot(engine, tenant)

    payload = await persist(gql, inbound(account, text="edited", **key))

    assert payload["userErrors"] == [
        {
            "field": [field],
            "code": "IDEMPOTENCY_CONFLICT",
            "message": "This idempotency key was already used for a message with different "
            "content; the stored message was kept unchanged.",
        }
    ]
    assert payload["message"] == stored["message"]
    assert payload["message"]["content"]["text"] == "original"
    assert payload["deduplicated"] is False
    assert (payload["conversation"], payload["contact"], payload["messageEdge"]) == (
        None,
        None,
        None,
    )
    assert await row_counts(engine) == counts
    assert await tenant_snapshot(engine, tenant) == rows


async def test_the_same_external_message_id_on_two_accounts_is_two_messages(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    line = await register_account(gql, external_account_id="oa-1")
    other_line = await register_account(gql, external_account_id="oa-2")
    before = await row_counts(engine)

    first = await persisted(gql, inbound(line, external_message_id="42"))
    second = await persisted(gql, inbound(other_line, external_message_id="42"))

    assert (first["deduplicated"], second["deduplicated"]) == (False, False)
    assert first["message"]["id"] != second["message"]["id"]
    assert await row_counts(engine) == plus(before, contacts=2, conversations=2, messages=2)


# --- contacts and conversations --------------------------------------------------------------


async def upsert_contact(gql: GraphQLClient, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = data_of(await gql(UPSERT_CONTACT, {"input": fields}), "upsertContact")
    return payload


async def upsert_conversation(gql: GraphQLClient, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = data_of(
        await gql(UPSERT_CONVERSATION, {"input": fields}), "upsertConversation"
    )
    return payload


async def test_contact_upsert_returns_the_same_contact_per_channel_account(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    account = await register_account(gql, external_account_id="oa-1")
    other_account = await register_account(gql, external_account_id="oa-2")
    before = await row_counts(engine)

    first = await upsert_contact(
        gql, channelAccountId=account, externalUserId="U-7", displayName="Nid"
    )
    second = await upsert_contact(
        gql,
        channelAccountId=account,
        externalUserId="U-7",
        avatarUrl="https://cdn.example.com/u7.png",
        profile={"language": "th"},
        clientMutationId="c-2",
    )
    elsewhere = await upsert_contact(gql, channelAccountId=other_account, externalUserId="U-7")
    by_message = await persisted(gql, inbound(account, user="U-7", display_name=None))

    assert first["userErrors"] == second["userErrors"] == elsewhere["userErrors"] == []
    contact = second["contact"]
    assert contact["id"] == first["contact"]["id"]
    assert by_message["contact"]["id"] == contact["id"]
    assert elsewhere["contact"]["id"] != contact["id"]
    assert second["clientMutationId"] == "c-2"
    # Given fields are refreshed, omitted ones kept.
    assert (contact["displayName"], contact["avatarUrl"], contact["profile"]) == (
        "Nid",
        "https://cdn.example.com/u7.png",
        {"language": "th"},
    )
    assert contact["channelAccount"] == {"id": account}
    assert elsewhere["contact"]["channelAccount"] == {"id": other_account}
    assert await row_counts(engine) == plus(before, contacts=2, conversations=1, messages=1)


async def test_messages_of_one_thread_map_to_the_conversation_upsert_returns(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    account = await register_account(gql)
    before = await row_counts(engine)

    opened = await upsert_conversation(
        gql,
        channelAccountId=account,
        externalThreadId="T-100",
        contact={"externalUserId": "U-1"},
        channelTimestamp=at(0),
    )
    again = await upsert_conversation(
        gql, channelAccountId=account, externalThreadId="T-100", channelTimestamp=at(1)
    )
    messages = [
        await persisted(gql, inbound(account, thread="T-100", when=at(minute)))
        for minute in (5, 2, 9)
    ]

    conversation = opened["conversation"]["id"]
    assert opened["userErrors"] == again["userErrors"] == []
    assert again["conversation"]["id"] == conversation
    assert again["contact"] is None
    assert [m["conversation"]["id"] for m in messages] == [conversation] * 3
    assert await row_counts(engine) == plus(before, contacts=1, conversations=1, messages=3)
    page = await timeline(gql, conversation)
    assert [e["node"]["channelTimestamp"] for e in page["edges"]] == [
        "2026-01-05T09:02:00+00:00",
        "2026-01-05T09:05:00+00:00",
        "2026-01-05T09:09:00+00:00",
    ]


async def test_without_a_thread_id_the_contact_and_time_window_pick_the_conversation(
    gql: GraphQLClient,
) -> None:
    # One-hour windows aligned to the epoch: 09:00-10:00 is one conversation, 10:00-11:00 the next.
    account = await register_account(gql, fallback_window_seconds=3600)

    opened = await upsert_conversation(
        gql,
        channelAccountId=account,
        contact={"externalUserId": "U-1", "displayName": "Somchai"},
        channelTimestamp=at(10),
    )
    early = await persisted(gql, inbound(account, thread=None, when=at(0)))
    next_window = await persisted(gql, inbound(account, thread=None, when=at(61)))
    # A late event of the first window still lands in the first conversation.
    late = await persisted(gql, inbound(account, thread=None, when=at(59)))
    other_user = await persisted(gql, inbound(account, thread=None, user="U-2", when=at(1)))

    first = opened["conversation"]["id"]
    assert opened["userErrors"] == []
    assert opened["conversation"]["threadKey"] == f"u:{1767603600}:U-1"
    assert opened["conversation"]["externalThreadId"] is None
    assert opened["contact"]["id"] == early["contact"]["id"]
    assert early["conversation"]["id"] == late["conversation"]["id"] == first
    assert next_window["conversation"]["id"] not in (first, other_user["conversation"]["id"])
    assert other_user["conversation"]["id"] != first
    # The late event does not move the conversation's activity backwards.
    assert late["conversation"]["lastMessageAt"] == "2026-01-05T09:59:00+00:00"
    assert early["conversation"]["lastMessageAt"] == "2026-01-05T09:10:00+00:00"


# --- outbound ----------------------------------------------------------------------------------


async def test_an_outbound_reply_is_linked_to_its_conversation_and_channel_account(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    account = await register_account(gql)
    question = await persisted(gql, inbound(account, when=at(0), text="Where is my order?"))
    conversation = question["conversation"]["id"]
    before = await row_counts(engine)

    reply = await persisted(
        gql,
        outbound(
            account,
            conversation=conversation,
            when=at(3),
            text="It ships today.",
            sender={
                "type": "AGENT",
                "displayName": "Agent Nok",
                "externalId": "agent-7",
                "avatarUrl": "https://cdn.example.com/agents/7.png",
            },
        ),
    )

    assert await row_counts(engine) == plus(before, messages=1)
    message = reply["message"]
    assert reply["deduplicated"] is False
    assert message["direction"] == "OUTBOUND"
    assert message["status"] == "SENT"
    assert message["conversation"] == {"id": conversation}
    assert message["channelAccount"] == {"id": account}
    assert message["sender"] == {
        "type": "AGENT",
        "id": "agent-7",
        "displayName": "Agent Nok",
        "avatarUrl": "https://cdn.example.com/agents/7.png",
    }
    assert reply["conversation"]["id"] == conversation
    assert reply["conversation"]["lastMessageAt"] == "2026-01-05T09:03:00+00:00"
    # The contact of a reply is the conversation's customer.
    assert reply["contact"]["id"] == question["contact"]["id"]
    page = await timeline(gql, conversation)
    assert [(e["node"]["id"], e["node"]["content"]["text"]) for e in page["edges"]] == [
        (question["message"]["id"], "Where is my order?"),
        (message["id"], "It ships today."),
    ]


async def test_an_outbound_message_without_conversation_id_follows_the_thread_rule(
    gql: GraphQLClient,
) -> None:
    account = await register_account(gql)
    question = await persisted(gql, inbound(account, thread="T-5", user="U-5"))

    reply = await persisted(
        gql,
        outbound(
            account,
            externalThreadId="T-5",
            contact={"externalUserId": "U-5"},
            sender={"type": "BOT", "displayName": "Order bot"},
        ),
    )

    assert reply["message"]["conversation"] == {"id": question["conversation"]["id"]}
    assert reply["message"]["sender"] == {
        "type": "BOT",
        "id": None,
        "displayName": "Order bot",
        "avatarUrl": None,
    }
    assert reply["contact"]["id"] == question["contact"]["id"]


async def test_the_message_edge_cursor_continues_the_timeline(gql: GraphQLClient) -> None:
    account = await register_account(gql)
    first = await persisted(gql, inbound(account, when=at(0), text="one"))
    second = await persisted(gql, inbound(account, when=at(1), text="two"))
    third = await persisted(gql, inbound(account, when=at(2), text="three"))
    conversation = first["conversation"]["id"]

    after_second = await timeline(gql, conversation, after=second["messageEdge"]["cursor"])
    before_second = await timeline(
        gql, conversation, last=5, before=second["messageEdge"]["cursor"]
    )

    assert [e["node"]["id"] for e in after_second["edges"]] == [third["message"]["id"]]
    assert after_second["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "startCursor": third["messageEdge"]["cursor"],
        "endCursor": third["messageEdge"]["cursor"],
    }
    assert [e["node"]["id"] for e in before_second["edges"]] == [first["message"]["id"]]
    assert before_second["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": first["messageEdge"]["cursor"],
        "endCursor": first["messageEdge"]["cursor"],
    }


# --- malformed input ---------------------------------------------------------------------------

ACCOUNT = "<account>"
CONVERSATION = "<conversation>"


def _without(message: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k not in keys}


def _inbound(**changes: Any) -> dict[str, Any]:
    return {**inbound(ACCOUNT), **changes}


def _outbound(**changes: Any) -> dict[str, Any]:
    return {**outbound(ACCOUNT), **changes}


MALFORMED_MESSAGES: list[tuple[str, dict[str, Any], list[tuple[tuple[str, ...], str]]]] = [
    (
        "no idempotency key nor external message id",
        _without(_inbound(), "externalMessageId"),
        [(("idempotencyKey",), "REQUIRED")],
    ),
    (
        "blank idempotency key",
        _inbound(idempotencyKey="   "),
        [(("idempotencyKey",), "REQUIRED")],
    ),
    (
        "inbound without a contact",
        _without(_inbound(), "contact"),
        [(("contact", "externalUserId"), "REQUIRED")],
    ),
    (
        "inbound contact without external user id",
        _inbound(contact={"displayName": "Somchai"}),
        [(("contact", "externalUserId"), "REQUIRED")],
    ),
    (
        "TEXT without text",
        _inbound(content={"type": "TEXT", "text": "  "}),
        [(("content", "text"), "REQUIRED")],
    ),
    (
        "time without offset",
        _inbound(channelTimestamp="2026-01-05T09:00:00"),
        [(("channelTimestamp",), "INVALID")],
    ),
    (
        "time before 2000",
        _inbound(channelTimestamp="1999-12-31T23:59:59Z"),
        [(("channelTimestamp",), "OUT_OF_RANGE")],
    ),
    (
        "time far in the future",
        _inbound(channelTimestamp="2999-01-01T00:00:00Z"),
        [(("channelTimestamp",), "OUT_OF_RANGE")],
    ),
    (
        "NUL in text",
        _inbound(content={"type": "TEXT", "text": "a\u0000b"}),
        [(("content", "text"), "INVALID_CHARACTER")],
    ),
    (
        "text too long",
        _inbound(content={"type": "TEXT", "text": "x" * 50_001}),
        [(("content", "text"), "TOO_LONG")],
    ),
    (
        "struct not an object",
        _inbound(content={"type": "LOCATION", "struct": [13.75, 100.5]}),
        [(("content", "struct"), "INVALID")],
    ),
    (
        "attachment without url nor external id",
        _inbound(attachments=[{"kind": "IMAGE"}]),
        [(("attachments", "0", "url"), "REQUIRED")],
    ),
    (
        "attachment with a script url and a fractional size",
        _inbound(
            attachments=[
                {"kind": "FILE", "url": "https://cdn.example.com/a.pdf"},
                {"kind": "FILE", "url": "javascript:alert(1)", "sizeBytes": 1.5},
            ]
        ),
        [
            (("attachments", "1", "url"), "INVALID"),
            (("attachments", "1", "sizeBytes"), "INVALID"),
        ],
    ),
    (
        "21 attachments",
        _inbound(attachments=[{"kind": "IMAGE", "externalId": f"x{i}"} for i in range(21)]),
        [(("attachments",), "TOO_MANY")],
    ),
    (
        "inbound with a conversation id",
        _inbound(conversationId=CONVERSATION),
        [(("conversationId",), "NOT_ALLOWED")],
    ),
    (
        "inbound sent by an agent",
        _inbound(sender={"type": "AGENT", "displayName": "Nok"}),
        [(("sender", "type"), "NOT_ALLOWED")],
    ),
    (
        "outbound without sender nor conversation",
        _without(_outbound(), "sender"),
        [(("sender",), "REQUIRED"), (("conversationId",), "REQUIRED")],
    ),
    (
        "outbound sent by the contact, without a name",
        _outbound(conversationId=CONVERSATION, sender={"type": "CONTACT"}),
        [(("sender", "type"), "NOT_ALLOWED"), (("sender", "displayName"), "REQUIRED")],
    ),
    (
        "everything wrong at once",
        {
            "channelAccountId": ACCOUNT,
            "direction": "INBOUND",
            "channelTimestamp": "2026-01-05T09:00:00",
            "externalThreadId": "",
            "content": {"type": "TEXT", "struct": {"a": "\u0000"}},
            "attachments": [{"kind": "IMAGE", "mimeType": "jpeg"}],
        },
        [
            (("channelTimestamp",), "INVALID"),
            (("idempotencyKey",), "REQUIRED"),
            (("externalThreadId",), "REQUIRED"),
            (("content", "struct"), "INVALID_CHARACTER"),
            (("content", "text"), "REQUIRED"),
            (("attachments", "0", "url"), "REQUIRED"),
            (("attachments", "0", "mimeType"), "INVALID"),
            (("contact", "externalUserId"), "REQUIRED"),
        ],
    ),
    (
        "garbage channel account id",
        _inbound(channelAccountId="not-an-id"),
        [(("channelAccountId",), "INVALID")],
    ),
    (
        "channel account id of another type, and no key",
        _without(_inbound(channelAccountId=gid("Contact", 1)), "externalMessageId"),
        [(("channelAccountId",), "NOT_FOUND"), (("idempotencyKey",), "REQUIRED")],
    ),
    (
        "channel account that does not exist",
        _inbound(channelAccountId=missing_id("ChannelAccount")),
        [(("channelAccountId",), "NOT_FOUND")],
    ),
    (
        "garbage conversation id",
        _outbound(conversationId="Q29udmVyc2F0aW9uOmFiYw"),  # "Conversation:abc"
        [(("conversationId",), "INVALID")],
    ),
    (
        "conversation id of another type",
        _outbound(conversationId=gid("Message", 1)),
        [(("conversationId",), "NOT_FOUND")],
    ),
    (
        "conversation that does not exist",
        _outbound(conversationId=missing_id("Conversation")),
        [(("conversationId",), "NOT_FOUND")],
    ),
]


@pytest.mark.parametrize(
    ("message", "expected"),
    [(m, e) for _, m, e in MALFORMED_MESSAGES],
    ids=[name for name, _, _ in MALFORMED_MESSAGES],
)
async def test_a_malformed_message_is_refused_with_every_error_and_nothing_written(
    gql: GraphQLClient,
    engine: AsyncEngine,
    message: dict[str, Any],
    expected: list[tuple[tuple[str, ...], str]],
) -> None:
    account = await register_account(gql)
    existing = await persisted(gql, inbound(account))
    conversation = existing["conversation"]["id"]
    placeholders = {ACCOUNT: account, CONVERSATION: conversation}
    message = {k: placeholders.get(v, v) if isinstance(v, str) else v for k, v in message.items()}
    before = await row_counts(engine)

    payload = await persist(gql, {**message, "clientMutationId": "bad-1"})

    assert user_errors(payload) == expected
    assert all(e["message"] for e in payload["userErrors"])
    assert payload["clientMutationId"] == "bad-1"
    assert (payload["message"], payload["messageEdge"], payload["conversation"]) == (
        None,
        None,
        None,
    )
    assert (payload["contact"], payload["deduplicated"]) == (None, False)
    assert await row_counts(engine) == before


async def test_user_errors_say_what_is_wrong_in_words(gql: GraphQLClient) -> None:
    account = await register_account(gql)

    payload = await persist(
        gql,
        {
            "channelAccountId": account,
            "direction": "OUTBOUND",
            "channelTimestamp": at(0),
            "content": {"type": "TEXT", "text": "hi"},
        },
    )

    assert payload["userErrors"] == [
        {
            "field": ["idempotencyKey"],
            "code": "REQUIRED",
            "message": "An idempotencyKey or an externalMessageId is required.",
        },
        {
            "field": ["sender"],
            "code": "REQUIRED",
            "message": "An outbound message needs a sender.",
        },
        {
            "field": ["conversationId"],
            "code": "REQUIRED",
            "message": "An outbound message needs a conversationId or the contact's "
            "externalUserId.",
        },
    ]


async def test_a_reply_into_a_conversation_of_another_account_is_a_mismatch(
    gql: GraphQLClient, engine: AsyncEngine, tenant: TenantId
) -> None:
    line = await register_account(gql, external_account_id="oa-1")
    facebook = await register_account(gql, channel="FACEBOOK", external_account_id="page-1")
    conversation = (await persisted(gql, inbound(line)))["conversation"]["id"]
    rows = await tenant_snapshot(engine, tenant)

    payload = await persist(gql, outbound(facebook, conversation=conversation))

    assert payload["userErrors"] == [
        {
            "field": ["conversationId"],
            "code": "MISMATCH",
            "message": "This conversation belongs to another channel account.",
        }
    ]
    assert await tenant_snapshot(engine, tenant) == rows


async def test_an_unparseable_date_time_is_a_request_error_not_a_fault(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    account = await register_account(gql)
    before = await row_counts(engine)

    body = await gql(
        "mutation($input: PersistMessageInput!) { persistMessage(input: $input) { deduplicated } }",
        {"input": inbound(account, when="yesterday")},
    )

    assert body["data"] is None
    assert [(e["message"].split(". Expected")[0], e["extensions"]) for e in body["errors"]] == [
        (
            "Variable '$input' has invalid value at .channelTimestamp: "
            'Value cannot represent a DateTime: "yesterday"',
            {"code": "BAD_USER_INPUT"},
        )
    ]
    assert await row_counts(engine) == before


MALFORMED_CONTACTS: list[tuple[str, dict[str, Any], list[tuple[tuple[str, ...], str]]]] = [
    ("blank user id", {"externalUserId": " "}, [(("externalUserId",), "REQUIRED")]),
    (
        "relative avatar and a list as profile",
        {"externalUserId": "U-1", "avatarUrl": "/me.png", "profile": ["th"]},
        [(("avatarUrl",), "INVALID"), (("profile",), "INVALID")],
    ),
    (
        "garbage account id",
        {"channelAccountId": "%%%", "externalUserId": ""},
        [(("channelAccountId",), "INVALID"), (("externalUserId",), "REQUIRED")],
    ),
    (
        "account id of another type",
        {"channelAccountId": gid("Conversation", 1), "externalUserId": "U-1"},
        [(("channelAccountId",), "NOT_FOUND")],
    ),
    (
        "account that does not exist",
        {"channelAccountId": missing_id("ChannelAccount"), "externalUserId": "U-1"},
        [(("channelAccountId",), "NOT_FOUND")],
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [(f, e) for _, f, e in MALFORMED_CONTACTS],
    ids=[name for name, _, _ in MALFORMED_CONTACTS],
)
async def test_a_malformed_contact_is_refused_and_nothing_written(
    gql: GraphQLClient,
    engine: AsyncEngine,
    fields: dict[str, Any],
    expected: list[tuple[tuple[str, ...], str]],
) -> None:
    account = await register_account(gql)
    before = await row_counts(engine)

    payload = await upsert_contact(gql, **{"channelAccountId": account, **fields})

    assert user_errors(payload) == expected
    assert payload["contact"] is None
    assert await row_counts(engine) == before


MALFORMED_CONVERSATIONS: list[tuple[str, dict[str, Any], list[tuple[tuple[str, ...], str]]]] = [
    ("no thread nor contact", {}, [(("externalThreadId",), "REQUIRED")]),
    (
        "contact without user id, no thread",
        {"contact": {"displayName": "Somchai"}},
        [(("contact", "externalUserId"), "REQUIRED"), (("externalThreadId",), "REQUIRED")],
    ),
    (
        "time without offset",
        {"externalThreadId": "T-1", "channelTimestamp": "2026-01-05T09:00:00"},
        [(("channelTimestamp",), "INVALID")],
    ),
    (
        "account id of another type",
        {"channelAccountId": gid("Message", 1), "externalThreadId": "T-1"},
        [(("channelAccountId",), "NOT_FOUND")],
    ),
    (
        "account that does not exist",
        {"channelAccountId": missing_id("ChannelAccount"), "externalThreadId": "T-1"},
        [(("channelAccountId",), "NOT_FOUND")],
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [(f, e) for _, f, e in MALFORMED_CONVERSATIONS],
    ids=[name for name, _, _ in MALFORMED_CONVERSATIONS],
)
async def test_a_malformed_conversation_is_refused_and_nothing_written(
    gql: GraphQLClient,
    engine: AsyncEngine,
    fields: dict[str, Any],
    expected: list[tuple[tuple[str, ...], str]],
) -> None:
    account = await register_account(gql)
    before = await row_counts(engine)

    payload = await upsert_conversation(
        gql, **{"channelAccountId": account, "channelTimestamp": at(0), **fields}
    )

    assert user_errors(payload) == expected
    assert (payload["conversation"], payload["contact"]) == (None, None)
    assert await row_counts(engine) == before


# --- channel accounts --------------------------------------------------------------------------


async def register(gql: GraphQLClient, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = data_of(
        await gql(REGISTER, {"input": fields}), "registerChannelAccount"
    )
    return payload


async def test_register_channel_account_creates_then_refreshes(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    before = await row_counts(engine)

    created = await register(
        gql,
        channel="SHOPEE",
        externalAccountId="shop-77",
        displayName="Shop 77",
        fallbackWindowSeconds=7200,
        clientMutationId="r-1",
    )
    refreshed = await register(
        gql, channel="SHOPEE", externalAccountId="shop-77", displayName="Shop 77 Official"
    )
    other_channel = await register(gql, channel="LAZADA", externalAccountId="shop-77")

    account = created["channelAccount"]
    assert (created["created"], created["clientMutationId"], created["userErrors"]) == (
        True,
        "r-1",
        [],
    )
    assert {k: v for k, v in account.items() if k not in ("id", "createdAt")} == {
        "channel": "SHOPEE",
        "externalAccountId": "shop-77",
        "displayName": "Shop 77",
        "fallbackWindowSeconds": 7200,
    }
    assert (refreshed["created"], refreshed["userErrors"]) == (False, [])
    assert refreshed["channelAccount"] == {
        **account,
        "displayName": "Shop 77 Official",  # refreshed
        "fallbackWindowSeconds": 7200,  # omitted: kept
    }
    assert other_channel["created"] is True
    assert other_channel["channelAccount"]["id"] != account["id"]
    assert other_channel["channelAccount"]["fallbackWindowSeconds"] == 86400
    assert await row_counts(engine) == plus(before, channel_accounts=2)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"externalAccountId": " "}, [(("externalAccountId",), "REQUIRED")]),
        (
            {"externalAccountId": "oa-1", "fallbackWindowSeconds": 59, "displayName": "x" * 256},
            [(("displayName",), "TOO_LONG"), (("fallbackWindowSeconds",), "OUT_OF_RANGE")],
        ),
    ],
    ids=["blank external id", "name too long and window too short"],
)
async def test_a_malformed_channel_account_is_refused_and_nothing_written(
    gql: GraphQLClient,
    engine: AsyncEngine,
    fields: dict[str, Any],
    expected: list[tuple[tuple[str, ...], str]],
) -> None:
    before = await row_counts(engine)

    payload = await register(gql, channel="LINE", **fields)

    assert user_errors(payload) == expected
    assert (payload["channelAccount"], payload["created"]) == (None, False)
    assert await row_counts(engine) == before


# --- attachments -------------------------------------------------------------------------------


async def add_attachments(gql: GraphQLClient, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = data_of(
        await gql(ADD_ATTACHMENTS, {"input": fields}), "addAttachments"
    )
    return payload


async def test_add_attachments_appends_in_order_and_is_retry_safe(
    gql: GraphQLClient, engine: AsyncEngine
) -> None:
    account = await register_account(gql)
    stored = await persisted(gql, inbound(account, attachments=[PHOTO]))
    message = stored["message"]["id"]
    video = {"kind": "VIDEO", "externalId": "line-content-2", "durationMs": 15000}
    audio = {"kind": "AUDIO", "url": "https://cdn.example.com/a.m4a", "durationMs": 4200}
    before = await row_counts(engine)

    added = await add_attachments(
        gql, messageId=message, attachments=[video, audio], clientMutationId="a-1"
    )
    after_add = await row_counts(engine)
    retried = await add_attachments(gql, messageId=message, attachments=[video])

    assert after_add == plus(before, attachments=2)
    assert added["userErrors"] == []
    assert added["clientMutationId"] == "a-1"
    assert added["message"] == {"id": message}
    assert [(a["position"], a["kind"], a["externalId"]) for a in added["attachments"]] == [
        (0, "IMAGE", "line-content-1"),
        (1, "VIDEO", "line-content-2"),
        (2, "AUDIO", None),
    ]
    assert added["attachments"][1]["durationMs"] == 15000
    # A retry of an attachment already stored (same externalId) adds nothing.
    assert retried["userErrors"] == []
    assert retried["attachments"] == added["attachments"]
    assert await row_counts(engine) == after_add
    page = await gql(
        "query($id: ID!) { node(id: $id) { ... on Message { attachments { id } } } }",
        {"id": message},
    )
    assert data_of(page, "node")["attachments"] == [{"id": a["id"]} for a in added["attachments"]]


@pytest.mark.parametrize(
    ("message", "attachments", "expected"),
    [
        ("<message>", [], [(("attachments",), "REQUIRED")]),
        ("<message>", [{"kind": "FILE"}], [(("attachments", "0", "url"), "REQUIRED")]),
        (
            "<message>",
            [{"kind": "IMAGE", "externalId": f"more-{i}"} for i in range(20)],
            [(("attachments",), "TOO_MANY")],  # the message already holds one
        ),
        ("bad id", [{"kind": "FILE", "externalId": "f"}], [(("messageId",), "INVALID")]),
        (
            "<conversation>",
            [{"kind": "FILE", "externalId": "f"}],
            [(("messageId",), "NOT_FOUND")],
        ),
        (
            missing_id("Message"),
            [{"kind": "FILE", "externalId": "f"}],
            [(("messageId",), "NOT_FOUND")],
        ),
    ],
    ids=["none", "no url", "over 20 in all", "garbage id", "id of a conversation", "missing"],
)
async def test_malformed_attachments_are_refused_and_nothing_written(
    gql: GraphQLClient,
    engine: AsyncEngine,
    message: str,
    attachments: list[dict[str, Any]],
    expected: list[tuple[tuple[str, ...], str]],
) -> None:
    account = await register_account(gql)
    stored = await persisted(gql, inbound(account, attachments=[PHOTO]))
    message = {
        "<message>": stored["message"]["id"],
        "<conversation>": stored["conversation"]["id"],
    }.get(message, message)
    before = await row_counts(engine)

    payload = await add_attachments(gql, messageId=message, attachments=attachments)

    assert user_errors(payload) == expected
    assert (payload["message"], payload["attachments"]) == (None, [])
    assert await row_counts(engine) == before


def test_global_ids_round_trip() -> None:
    assert row_id(gid("Message", 123)) == 123
