"""Every request limit answers with a clear code and writes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.graph.app import create_app
from omni_store.graph.ids import to_global_id
from omni_store.graph.schema import MAX_ALIASES, MAX_DEPTH, MAX_NODES, MAX_TOKENS
from omni_store.persistence.database import Database
from omni_store.persistence.tenancy import TenantId
from tests.api.conftest import SECRET, GraphQLClient, token_for
from tests.conftest import row_counts
from tests.factories import channel_account

PERSIST = """mutation($input: PersistMessageInput!) { persistMessage(input: $input) {
  message { id } userErrors { field code message } } }"""


def _codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body["errors"]]


async def _persist_input(db: Database, tenant: TenantId, key: str) -> dict[str, Any]:
    account = await channel_account(db, tenant)
    return {
        "channelAccountId": to_global_id("ChannelAccount", account.id),
        "direction": "INBOUND",
        "channelTimestamp": "2026-11-20T09:00:00Z",
        "externalMessageId": key,
        "contact": {"externalUserId": "U1"},
        "content": {"type": "TEXT", "text": "hi"},
    }


async def test_a_query_deeper_than_the_limit_is_refused(gql: GraphQLClient) -> None:
    inner = "id"
    for _ in range(MAX_DEPTH // 2):
        inner = f"conversation {{ lastMessage {{ {inner} }} }}"
    query = f'{{ node(id: "x") {{ ... on Message {{ {inner} }} }} }}'

    body = await gql(query)

    assert body["data"] is None
    assert _codes(body) == ["QUERY_TOO_DEEP"]


async def test_too_many_aliases_are_refused(gql: GraphQLClient) -> None:
    fields = " ".join(f"a{i}: viewer {{ tenantId }}" for i in range(MAX_ALIASES + 1))

    body = await gql(f"{{ {fields} }}")

    assert body["data"] is None
    assert _codes(body) == ["TOO_MANY_ALIASES"]


async def test_too_many_tokens_are_refused(gql: GraphQLClient) -> None:
    body = await gql("{ " + "viewer { tenantId } " * (MAX_TOKENS // 4 + 1) + "}")

    assert body["data"] is None
    assert _codes(body) == ["TOO_MANY_TOKENS"]


async def test_a_body_over_one_mebibyte_is_refused_and_nothing_written(
    gql: GraphQLClient, db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    variables = {"input": await _persist_input(db, tenant, "big")}
    variables["input"]["content"]["text"] = "x" * (1024 * 1024)
    before = await row_counts(engine)

    response = await gql.post(PERSIST, variables)

    assert response.status_code == 413
    assert response.json() == {
        "errors": [
            {
                "message": "The request body is larger than 1048576 bytes.",
                "extensions": {"code": "REQUEST_TOO_LARGE"},
            }
        ]
    }
    assert await row_counts(engine) == before


async def test_a_chunked_body_over_the_limit_is_refused(
    http: httpx.AsyncClient, tenant: TenantId
) -> None:
    async def chunks() -> Any:
        for _ in range(3):
            yield b" " * (512 * 1024)

    response = await http.post(
        "/graphql",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {token_for(tenant)}",
            "content-type": "application/json",
        },
    )

    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"] == {"code": "REQUEST_TOO_LARGE"}


async def test_batched_operations_are_refused_and_nothing_written(
    http: httpx.AsyncClient, db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    variables = {"input": await _persist_input(db, tenant, "batched")}
    before = await row_counts(engine)

    response = await http.post(
        "/graphql",
        json=[{"query": PERSIST, "variables": variables}] * 2,
        headers={"Authorization": f"Bearer {token_for(tenant)}"},
    )

    assert response.status_code == 400
    assert await row_counts(engine) == before


async def test_more_than_a_hundred_node_ids_are_refused(gql: GraphQLClient) -> None:
    ids = [to_global_id("Message", i) for i in range(1, MAX_NODES + 2)]

    body = await gql("query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": ids})

    assert body["data"] is None
    assert body["errors"][0]["message"] == "At most 100 ids."
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": ["ids"]}


@pytest.mark.parametrize("size", [101, -1, 2**31 - 1])
async def test_page_sizes_out_of_range_are_refused(gql: GraphQLClient, size: int) -> None:
    body = await gql(
        "query($n: Int) { conversations(first: $n) { edges { cursor } } }", {"n": size}
    )

    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {
        "code": "BAD_USER_INPUT",
        "field": ["first"],
        "reason": "OUT_OF_RANGE",
    }


async def test_with_introspection_off_the_schema_is_not_revealed(
    db: Database, tenant: TenantId
) -> None:
    app = create_app(
        db, jwt_secret=SECRET, graphiql=False, introspection=False, dispose_on_shutdown=False
    )
    headers = {"Authorization": f"Bearer {token_for(tenant)}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://omni.test"
    ) as client:
        introspection = (
            await client.post(
                "/graphql", json={"query": "{ __schema { types { name } } }"}, headers=headers
            )
        ).json()
        typo = (
            await client.post(
                "/graphql", json={"query": "{ conversatons { edges { cursor } } }"}, headers=headers
            )
        ).json()
        ide = await client.get("/graphql", headers={"accept": "text/html"})

    assert introspection["data"] is None
    assert [e["message"] for e in introspection["errors"]] == [
        "GraphQL introspection has been disabled, but the requested query contained the field "
        "'__schema'.",
        "GraphQL introspection has been disabled, but the requested query contained the field "
        "'types'.",
    ]
    assert _codes(introspection) == ["INTROSPECTION_DISABLED", "INTROSPECTION_DISABLED"]
    assert typo["errors"] == [
        {
            "message": "Cannot query field 'conversatons' on type 'Query'.",
            "locations": [{"line": 1, "column": 3}],
            "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
        }
    ]
    assert ide.status_code == 404


async def test_with_introspection_on_typos_get_suggestions(gql: GraphQLClient) -> None:
    body = await gql("{ conversatons { edges { cursor } } }")

    assert body["errors"][0]["message"] == (
        "Cannot query field 'conversatons' on type 'Query'. Did you mean 'conversations' or "
        "'conversation'?"
    )
    assert _codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
