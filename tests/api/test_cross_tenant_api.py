"""Two tenants side by side with look-alike data (same channel, same external ids).

Tenant B using tenant A's global ids gets exactly what it gets for an id that never existed,
and tenant A's rows stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.cursors import encode_cursor
from omni_store.persistence.tenancy import TenantId
from tests.api.conftest import GraphQLClient
from tests.api.operations import (
    ADD_ATTACHMENTS,
    BASE_TIME,
    PERSIST,
    UPSERT_CONTACT,
    UPSERT_CONVERSATION,
    at,
    data_of,
    inbound,
    missing_id,
    outbound,
    persisted,
    register_account,
    tenant_snapshot,
)
from tests.conftest import row_counts


@dataclass(frozen=True)
class Tenant:
    """The global ids of one tenant's look-alike data."""

    account: str
    contact: str
    conversation: str
    message: str
    attachment: str
    timeline_cursor: str

    def of(self, type_name: str) -> str:
        return {
            "ChannelAccount": self.account,
            "Contact": self.contact,
            "Conversation": self.conversation,
            "Message": self.message,
            "Attachment": self.attachment,
        }[type_name]


TYPES = ("ChannelAccount", "Contact", "Conversation", "Message", "Attachment")


async def lookalike(gql: GraphQLClient) -> Tenant:
    """The same LINE OA, customer, thread and message ids in whichever tenant calls."""
    account = await register_account(gql, channel="LINE", external_account_id="oa-1")
    first = await persisted(
        gql,
        inbound(
            account,
            external_message_id="line-1",
            when=at(0),
            attachments=[{"kind": "IMAGE", "externalId": "content-1"}],
        ),
    )
    await persisted(gql, outbound(account, conversation=first["conversation"]["id"], when=at(1)))
    assert first["deduplicated"] is False  # the other tenant's identical key is not a replay
    return Tenant(
        account=account,
        contact=first["contact"]["id"],
        conversation=first["conversation"]["id"],
        message=first["message"]["id"],
        attachment=first["message"]["attachments"][0]["id"],
        timeline_cursor=first["messageEdge"]["cursor"],
    )


@dataclass(frozen=True)
class Tenants:
    a: Tenant  # tenant (gql): the one whose ids are used
    b: Tenant  # other_tenant (other_gql): the caller


@pytest.fixture
async def tenants(gql: GraphQLClient, other_gql: GraphQLClient) -> Tenants:
    return Tenants(a=await lookalike(gql), b=await lookalike(other_gql))


def without_ids(value: Any) -> Any:
    """A response with every ``id`` removed: what is left must not depend on whose id it was."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


async def assert_same_as_missing(
    other_gql: GraphQLClient,
    document: str,
    foreign: dict[str, Any],
    missing: dict[str, Any],
) -> dict[str, Any]:
    """B's answer with A's ids equals its answer with ids that never existed; that answer."""
    with_foreign = await other_gql(document, foreign)
    with_missing = await other_gql(document, missing)
    assert without_ids(with_foreign) == without_ids(with_missing)
    return with_foreign


@pytest.fixture
async def rows_of_a(engine: AsyncEngine, tenant: TenantId, tenants: Tenants) -> Any:
    """Checks, after the test, that nothing of tenant A changed."""
    before = await tenant_snapshot(engine, tenant)
    yield
    assert await tenant_snapshot(engine, tenant) == before


NODE = """
query($id: ID!) {
  node(id: $id) {
    id
    ... on Message { content { text } conversation { id } }
    ... on Conversation { messages { edges { node { id } } } }
    ... on Contact { externalUserId }
    ... on ChannelAccount { externalAccountId }
    ... on Attachment { externalId }
  }
}"""


@pytest.mark.usefixtures("rows_of_a")
@pytest.mark.parametrize("type_name", TYPES)
async def test_node_with_the_other_tenants_id_is_null(
    other_gql: GraphQLClient, tenants: Tenants, type_name: str
) -> None:
    a = tenants.a

    body = await assert_same_as_missing(
        other_gql, NODE, {"id": a.of(type_name)}, {"id": missing_id(type_name)}
    )

    assert body == {"data": {"node": None}}


@pytest.mark.usefixtures("rows_of_a")
async def test_nodes_with_the_other_tenants_ids_are_null_and_own_ids_resolve(
    other_gql: GraphQLClient, tenants: Tenants
) -> None:
    a, b = tenants.a, tenants.b
    document = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"

    body = await assert_same_as_missing(
        other_gql,
        document,
        {"ids": [a.of(t) for t in TYPES] + [b.message]},
        {"ids": [missing_id(t) for t in TYPES] + [b.message]},
    )

    assert body == {"data": {"nodes": [None] * len(TYPES) + [{"id": b.message}]}}


@pytest.mark.usefixtures("rows_of_a")
async def test_conversation_with_the_other_tenants_id_is_null(
    other_gql: GraphQLClient, tenants: Tenants
) -> None:
    a = tenants.a
    document = "query($id: ID!) { conversation(id: $id) { id messages { edges { cursor } } } }"

    body = await assert_same_as_missing(
        other_gql, document, {"id": a.conversation}, {"id": missing_id("Conversation")}
    )

    assert body == {"data": {"conversation": None}}


CONVERSATIONS = """
query($channel: Channel, $account: ID) {
  conversations(channel: $channel, channelAccountId: $account) {
    edges { cursor node { id } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""


@pytest.mark.usefixtures("rows_of_a")
@pytest.mark.parametrize("channel", [None, "LINE"])
async def test_conversations_filtered_by_the_other_tenants_account_are_empty(
    other_gql: GraphQLClient, tenants: Tenants, channel: str | None
) -> None:
    a = tenants.a

    body = await assert_same_as_missing(
        other_gql,
        CONVERSATIONS,
        {"channel": channel, "account": a.account},
        {"channel": channel, "account": missing_id("ChannelAccount")},
    )

    assert body == {
        "data": {
            "conversations": {
                "edges": [],
                "pageInfo": {
                    "hasNextPage": False,
                    "hasPreviousPage": False,
                    "startCursor": None,
                    "endCursor": None,
                },
            }
        }
    }


@pytest.mark.usefixtures("rows_of_a")
@pytest.mark.parametrize("channel", [None, "LINE"])
async def test_conversations_list_only_the_callers_own(
    other_gql: GraphQLClient, tenants: Tenants, channel: str | None
) -> None:
    b = tenants.b

    body = await other_gql(CONVERSATIONS, {"channel": channel, "account": None})

    assert [e["node"]["id"] for e in data_of(body, "conversations")["edges"]] == [b.conversation]


@pytest.mark.usefixtures("rows_of_a")
async def test_channel_accounts_list_only_the_callers_own(
    other_gql: GraphQLClient, tenants: Tenants
) -> None:
    b = tenants.b

    body = await other_gql("{ channelAccounts { edges { node { id externalAccountId } } } }")

    assert data_of(body, "channelAccounts")["edges"] == [
        {"node": {"id": b.account, "externalAccountId": "oa-1"}}
    ]


@pytest.mark.usefixtures("rows_of_a")
async def test_a_timeline_cursor_of_the_other_tenant_is_refused_like_a_forged_one(
    other_gql: GraphQLClient, tenants: Tenants
) -> None:
    a, b = tenants.a, tenants.b
    document = """
    query($id: ID!, $after: String) {
      conversation(id: $id) { messages(after: $after) { edges { node { id } } } }
    }"""
    forged = encode_cursor("messages", 2**62, (BASE_TIME, 1))

    body = await assert_same_as_missing(
        other_gql,
        document,
        {"id": b.conversation, "after": a.timeline_cursor},
        {"id": b.conversation, "after": forged},
    )

    assert body["data"] == {"conversation": None}
    assert [(e["path"], e["extensions"]) for e in body["errors"]] == [
        (
            ["conversation", "messages"],
            {"code": "BAD_USER_INPUT", "field": ["after"], "reason": "INVALID"},
        )
    ]


# --- mutations ---------------------------------------------------------------------------------


async def _mutate(
    other_gql: GraphQLClient,
    engine: AsyncEngine,
    document: str,
    field: str,
    foreign: dict[str, Any],
    missing: dict[str, Any],
) -> dict[str, Any]:
    counts = await row_counts(engine)
    body = await assert_same_as_missing(other_gql, document, {"input": foreign}, {"input": missing})
    assert await row_counts(engine) == counts
    payload: dict[str, Any] = data_of(body, field)
    return payload


@pytest.mark.usefixtures("rows_of_a")
async def test_persist_into_the_other_tenants_channel_account_is_not_found(
    other_gql: GraphQLClient, engine: AsyncEngine, tenants: Tenants
) -> None:
    a = tenants.a
    message = inbound("<account>", external_message_id="line-2", when=at(2))

    payload = await _mutate(
        other_gql,
        engine,
        PERSIST,
        "persistMessage",
        {**message, "channelAccountId": a.account},
        {**message, "channelAccountId": missing_id("ChannelAccount")},
    )

    assert payload["userErrors"] == [
        {
            "field": ["channelAccountId"],
            "code": "NOT_FOUND",
            "message": "This channel account does not exist.",
        }
    ]
    assert payload["message"] is None


@pytest.mark.usefixtures("rows_of_a")
async def test_a_reply_into_the_other_tenants_conversation_is_not_found(
    other_gql: GraphQLClient, engine: AsyncEngine, tenants: Tenants
) -> None:
    a, b = tenants.a, tenants.b
    reply = outbound(b.account, idempotency_key="reply-x", when=at(2))

    payload = await _mutate(
        other_gql,
        engine,
        PERSIST,
        "persistMessage",
        {**reply, "conversationId": a.conversation},
        {**reply, "conversationId": missing_id("Conversation")},
    )

    assert payload["userErrors"] == [
        {
            "field": ["conversationId"],
            "code": "NOT_FOUND",
            "message": "This conversation does not exist.",
        }
    ]
    assert payload["message"] is None


BATCH = """
mutation($input: PersistMessagesInput!) {
  persistMessages(input: $input) {
    results { index messageId conversationId deduplicated message { id } userErrors { field code } }
    userErrors { code }
  }
}"""


@pytest.mark.usefixtures("rows_of_a")
async def test_a_batch_naming_the_other_tenants_account_or_conversation_is_not_found(
    other_gql: GraphQLClient, engine: AsyncEngine, tenants: Tenants
) -> None:
    a, b = tenants.a, tenants.b
    message = inbound("<account>", external_message_id="line-1", when=at(2))
    reply = outbound(b.account, idempotency_key="reply-x", when=at(2))

    payload = await _mutate(
        other_gql,
        engine,
        BATCH,
        "persistMessages",
        {
            "messages": [
                {**message, "channelAccountId": a.account},
                {**reply, "conversationId": a.conversation},
            ]
        },
        {
            "messages": [
                {**message, "channelAccountId": missing_id("ChannelAccount")},
                {**reply, "conversationId": missing_id("Conversation")},
            ]
        },
    )

    assert payload == {
        "results": [
            {
                "index": 0,
                "messageId": None,
                "conversationId": None,
                "deduplicated": False,
                "message": None,
                "userErrors": [{"field": ["channelAccountId"], "code": "NOT_FOUND"}],
            },
            {
                "index": 1,
                "messageId": None,
                "conversationId": None,
                "deduplicated": False,
                "message": None,
                "userErrors": [{"field": ["conversationId"], "code": "NOT_FOUND"}],
            },
        ],
        "userErrors": [],
    }


@pytest.mark.usefixtures("rows_of_a")
async def test_upsert_contact_on_the_other_tenants_account_is_not_found(
    other_gql: GraphQLClient, engine: AsyncEngine, tenants: Tenants
) -> None:
    a = tenants.a
    contact = {"externalUserId": "U-1", "displayName": "Hijacked"}

    payload = await _mutate(
        other_gql,
        engine,
        UPSERT_CONTACT,
        "upsertContact",
        {**contact, "channelAccountId": a.account},
        {**contact, "channelAccountId": missing_id("ChannelAccount")},
    )

    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        (["channelAccountId"], "NOT_FOUND")
    ]
    assert payload["contact"] is None


@pytest.mark.usefixtures("rows_of_a")
async def test_upsert_conversation_on_the_other_tenants_account_is_not_found(
    other_gql: GraphQLClient, engine: AsyncEngine, tenants: Tenants
) -> None:
    a = tenants.a
    conversation = {
        "externalThreadId": "thread-1",
        "contact": {"externalUserId": "U-1"},
        "channelTimestamp": at(3),
    }

    payload = await _mutate(
        other_gql,
        engine,
        UPSERT_CONVERSATION,
        "upsertConversation",
        {**conversation, "channelAccountId": a.account},
        {**conversation, "channelAccountId": missing_id("ChannelAccount")},
    )

    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        (["channelAccountId"], "NOT_FOUND")
    ]
    assert payload["conversation"] is None


@pytest.mark.usefixtures("rows_of_a")
async def test_add_attachments_to_the_other_tenants_message_is_not_found(
    other_gql: GraphQLClient, engine: AsyncEngine, tenants: Tenants
) -> None:
    a = tenants.a
    attachments = [{"kind": "FILE", "url": "https://cdn.example.com/invoice.pdf"}]

    payload = await _mutate(
        other_gql,
        engine,
        ADD_ATTACHMENTS,
        "addAttachments",
        {"messageId": a.message, "attachments": attachments},
        {"messageId": missing_id("Message"), "attachments": attachments},
    )

    assert payload["userErrors"] == [
        {"field": ["messageId"], "code": "NOT_FOUND", "message": "This message does not exist."}
    ]
    assert payload["attachments"] == []


async def test_the_same_external_ids_in_two_tenants_are_separate_rows(
    gql: GraphQLClient,
    other_gql: GraphQLClient,
    engine: AsyncEngine,
    tenant: TenantId,
    other_tenant: TenantId,
) -> None:
    before = await row_counts(engine)

    a, b = await lookalike(gql), await lookalike(other_gql)

    assert {t: len(rows) for t, rows in (await tenant_snapshot(engine, tenant)).items()} == {
        "channel_accounts": 1,
        "contacts": 1,
        "conversations": 1,
        "messages": 2,
        "attachments": 1,
    }
    assert await tenant_snapshot(engine, other_tenant) != await tenant_snapshot(engine, tenant)
    assert {t: n - before[t] for t, n in (await row_counts(engine)).items()} == {
        "channel_accounts": 2,
        "contacts": 2,
        "conversations": 2,
        "messages": 4,
        "attachments": 2,
    }
    assert not {a.account, a.contact, a.conversation, a.message} & {
        b.account,
        b.contact,
        b.conversation,
        b.message,
    }
