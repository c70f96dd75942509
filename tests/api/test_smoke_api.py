from __future__ import annotations

from omni_store.persistence.database import Database
from omni_store.persistence.tenancy import TenantId
from tests.api.conftest import GraphQLClient, StatementCounter
from tests.factories import channel_account

PERSIST = """
mutation($input: PersistMessageInput!) {
  persistMessage(input: $input) {
    clientMutationId deduplicated
    message { id direction sender { type displayName } content { text } }
    conversation { id }
    userErrors { field code message }
  }
}"""


async def test_persist_inbound_over_http_then_replay(
    gql: GraphQLClient, db: Database, tenant: TenantId, sql_statements: StatementCounter
) -> None:
    account = await channel_account(db, tenant)
    from omni_store.graph.ids import to_global_id

    variables = {
        "input": {
            "channelAccountId": to_global_id("ChannelAccount", account.id),
            "direction": "INBOUND",
            "channelTimestamp": "2026-11-20T09:00:00+07:00",
            "externalMessageId": "line-1",
            "externalThreadId": "T1",
            "contact": {"externalUserId": "U1", "displayName": "Somchai"},
            "content": {"type": "TEXT", "text": "hello"},
            "clientMutationId": "c-1",
        }
    }
    first = await gql(PERSIST, variables)
    second = await gql(PERSIST, variables)

    payload = first["data"]["persistMessage"]
    assert payload["userErrors"] == []
    assert payload["deduplicated"] is False
    assert payload["clientMutationId"] == "c-1"
    assert payload["message"]["sender"] == {"type": "CONTACT", "displayName": "Somchai"}
    assert second["data"]["persistMessage"]["deduplicated"] is True
    assert second["data"]["persistMessage"]["message"]["id"] == payload["message"]["id"]
