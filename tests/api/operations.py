"""GraphQL documents and input builders shared by the API tests.

Inputs are plain dicts in the API's own shape (camelCase, global ids, ISO date-times), so a
test reads like the request a connector or the inbox sends.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.graph.ids import to_global_id
from omni_store.persistence.tables import TENANT_TABLES
from omni_store.persistence.tenancy import TenantId
from tests.api.conftest import GraphQLClient

# Fixed channel times in the past (inputs more than an hour ahead of now are refused).
BASE_TIME = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_sequence = itertools.count(1)


def at(minutes: float) -> str:
    """An ISO channel time ``minutes`` after a fixed base, as a connector sends it."""
    return (BASE_TIME + timedelta(minutes=minutes)).isoformat()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_sequence)}"


def gid(type_name: str, row_id: int) -> str:
    return to_global_id(type_name, row_id)


def missing_id(type_name: str) -> str:
    """A well-formed global id of ``type_name`` that no row has (identities never get there)."""
    return to_global_id(type_name, 2**62 + next(_sequence))


def row_id(global_id: str) -> int:
    from omni_store.graph.ids import parse_global_id

    parsed = parse_global_id(global_id)
    assert parsed is not None, global_id
    return parsed[1]


# --- documents ---------------------------------------------------------------------------------

USER_ERRORS = "userErrors { field code message }"

ACCOUNT_FIELDS = "id channel externalAccountId displayName fallbackWindowSeconds createdAt"

CONTACT_FIELDS = "id externalUserId displayName avatarUrl profile createdAt updatedAt"

MESSAGE_FIELDS = """
  id direction channelTimestamp createdAt externalMessageId idempotencyKey
  replyToExternalMessageId status
  sender { type id displayName avatarUrl }
  content { type text struct }
  attachments {
    id position kind url mimeType sizeBytes fileName width height durationMs externalId metadata
  }
  conversation { id }
  channelAccount { id }
"""

CONVERSATION_FIELDS = """
  id channel threadKey externalThreadId lastMessageAt createdAt
  channelAccount { id }
  contact { id }
"""

REGISTER = f"""
mutation($input: RegisterChannelAccountInput!) {{
  registerChannelAccount(input: $input) {{
    clientMutationId created
    channelAccount {{ {ACCOUNT_FIELDS} }}
    {USER_ERRORS}
  }}
}}"""

PERSIST = f"""
mutation($input: PersistMessageInput!) {{
  persistMessage(input: $input) {{
    clientMutationId deduplicated
    message {{ {MESSAGE_FIELDS} }}
    messageEdge {{ cursor node {{ id }} }}
    conversation {{ {CONVERSATION_FIELDS} }}
    contact {{ {CONTACT_FIELDS} }}
    {USER_ERRORS}
  }}
}}"""

UPSERT_CONTACT = f"""
mutation($input: UpsertContactInput!) {{
  upsertContact(input: $input) {{
    clientMutationId
    contact {{ {CONTACT_FIELDS} channelAccount {{ id }} }}
    {USER_ERRORS}
  }}
}}"""

UPSERT_CONVERSATION = f"""
mutation($input: UpsertConversationInput!) {{
  upsertConversation(input: $input) {{
    clientMutationId
    conversation {{ {CONVERSATION_FIELDS} }}
    contact {{ {CONTACT_FIELDS} }}
    {USER_ERRORS}
  }}
}}"""

ADD_ATTACHMENTS = f"""
mutation($input: AddAttachmentsInput!) {{
  addAttachments(input: $input) {{
    clientMutationId
    message {{ id }}
    attachments {{
      id position kind url mimeType sizeBytes fileName width height durationMs externalId metadata
    }}
    {USER_ERRORS}
  }}
}}"""

# An attachment with every metadata field set.
PHOTO = {
    "kind": "IMAGE",
    "url": "https://cdn.example.com/media/photo.jpg",
    "mimeType": "image/jpeg",
    "sizeBytes": 48213,
    "fileName": "photo.jpg",
    "width": 1024,
    "height": 768,
    "externalId": "line-content-1",
    "metadata": {"previewUrl": "https://cdn.example.com/media/photo-s.jpg"},
}

PAGE_INFO = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor }"

TIMELINE = f"""
query($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {{
  conversation(id: $id) {{
    id
    messages(first: $first, after: $after, last: $last, before: $before) {{
      edges {{ cursor node {{ id content {{ text }} channelTimestamp }} }}
      {PAGE_INFO}
    }}
  }}
}}"""

CONVERSATIONS = f"""
query($channel: Channel, $channelAccountId: ID, $first: Int, $after: String, $last: Int,
      $before: String) {{
  conversations(channel: $channel, channelAccountId: $channelAccountId, first: $first,
                after: $after, last: $last, before: $before) {{
    edges {{ cursor node {{ id channel lastMessageAt channelAccount {{ id }} }} }}
    {PAGE_INFO}
  }}
}}"""


# --- inputs --------------------------------------------------------------------------------


def inbound(
    account: str,
    *,
    external_message_id: str | None = None,
    idempotency_key: str | None = None,
    user: str = "U-1",
    display_name: str | None = "Somchai",
    thread: str | None = "thread-1",
    text: str = "สวัสดีครับ hello",
    when: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A normalized inbound message (LINE-like) as a connector sends it."""
    if external_message_id is None and idempotency_key is None:
        external_message_id = unique("m")
    message: dict[str, Any] = {
        "channelAccountId": account,
        "direction": "INBOUND",
        "channelTimestamp": when or at(0),
        "externalThreadId": thread,
        "contact": {"externalUserId": user, "displayName": display_name},
        "content": {"type": "TEXT", "text": text},
    }
    if external_message_id is not None:
        message["externalMessageId"] = external_message_id
    if idempotency_key is not None:
        message["idempotencyKey"] = idempotency_key
    message.update(extra)
    return message


def outbound(
    account: str,
    *,
    conversation: str | None = None,
    idempotency_key: str | None = None,
    text: str = "Thanks, your order ships today.",
    when: str | None = None,
    sender_name: str = "Agent Nok",
    **extra: Any,
) -> dict[str, Any]:
    """An agent's reply, persisted after the channel accepted it."""
    message: dict[str, Any] = {
        "channelAccountId": account,
        "direction": "OUTBOUND",
        "channelTimestamp": when or at(1),
        "idempotencyKey": idempotency_key or unique("reply"),
        "sender": {"type": "AGENT", "displayName": sender_name, "externalId": "agent-7"},
        "content": {"type": "TEXT", "text": text},
    }
    if conversation is not None:
        message["conversationId"] = conversation
    message.update(extra)
    return message


# --- calls ---------------------------------------------------------------------------------


def data_of(body: dict[str, Any], field: str) -> Any:
    assert "errors" not in body, body
    return body["data"][field]


async def register_account(
    gql: GraphQLClient,
    *,
    channel: str = "LINE",
    external_account_id: str = "oa-1",
    display_name: str | None = "Shop OA",
    fallback_window_seconds: int | None = None,
) -> str:
    """Register a channel account through the API; its global id."""
    payload = data_of(
        await gql(
            REGISTER,
            {
                "input": {
                    "channel": channel,
                    "externalAccountId": external_account_id,
                    "displayName": display_name,
                    "fallbackWindowSeconds": fallback_window_seconds,
                }
            },
        ),
        "registerChannelAccount",
    )
    assert payload["userErrors"] == [], payload
    account_id: str = payload["channelAccount"]["id"]
    return account_id


async def persist(gql: GraphQLClient, message: dict[str, Any]) -> dict[str, Any]:
    """The persistMessage payload; the call must be answered without top-level errors."""
    payload: dict[str, Any] = data_of(await gql(PERSIST, {"input": message}), "persistMessage")
    return payload


async def persisted(gql: GraphQLClient, message: dict[str, Any]) -> dict[str, Any]:
    """Persist a message that must be accepted; its payload."""
    payload = await persist(gql, message)
    assert payload["userErrors"] == [], payload
    return payload


async def timeline(gql: GraphQLClient, conversation: str, **page: Any) -> dict[str, Any]:
    body = await gql(TIMELINE, {"id": conversation, **page})
    connection: dict[str, Any] = data_of(body, "conversation")["messages"]
    return connection


def user_errors(payload: dict[str, Any]) -> list[tuple[tuple[str, ...] | None, str]]:
    """(field path, code) of each user error, in order."""
    return [
        (None if e["field"] is None else tuple(e["field"]), e["code"])
        for e in payload["userErrors"]
    ]


# --- database snapshots --------------------------------------------------------------------


async def tenant_snapshot(
    engine: AsyncEngine, tenant: TenantId
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of one tenant, table by table, in id order: two equal snapshots prove that
    nothing of that tenant was written, values included."""
    async with engine.connect() as connection:
        return {
            table.name: [
                tuple(row)
                for row in await connection.execute(
                    select(table).where(table.c.tenant_id == tenant).order_by(table.c.id)
                )
            ]
            for table in TENANT_TABLES
        }


def plus(counts: dict[str, int], **added: int) -> dict[str, int]:
    """``counts`` with ``added`` rows in the named tables (the others unchanged)."""
    assert set(added) <= set(counts), added
    return {table: count + added.get(table, 0) for table, count in counts.items()}
