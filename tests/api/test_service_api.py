"""Serving: health endpoints, request ids, and unexpected errors masked for clients while logged
with the request id. The fault is real: the service is pointed at a database that does not
exist on the same server."""

from __future__ import annotations

import gc
import logging
import re
import uuid
import weakref
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from omni_store.graph.app import create_app
from omni_store.persistence.database import Database, create_engine
from omni_store.persistence.roles import app_url
from omni_store.persistence.tenancy import TenantId
from tests.api.conftest import SECRET, GraphQLClient, token_for
from tests.api.operations import inbound, missing_id, persisted, register_account

MISSING_DATABASE = f"omni_store_missing_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def broken_http(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the service whose database does not exist (same server, same role)."""
    url = make_url(app_url(database_url)).set(database=MISSING_DATABASE)
    engine = create_engine(url.render_as_string(hide_password=False), pool_size=1)
    app: Starlette = create_app(Database(engine), jwt_secret=SECRET, dispose_on_shutdown=False)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://omni.test") as client:
            yield client
    finally:
        await engine.dispose()


class _Cycle:
    """An object that only the cyclic garbage collector frees (it refers to itself)."""

    def __init__(self) -> None:
        self.itself = self


async def test_starting_the_app_freezes_the_heap_without_its_garbage(app: Starlette) -> None:
    # Given cyclic garbage, that only a collection frees, and nothing frozen yet
    gc.disable()
    try:
        garbage = _Cycle()
        collected = weakref.ref(garbage)
        del garbage
        assert collected() is not None
        assert gc.get_freeze_count() == 0

        # When the app starts (as a server runs its lifespan)
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
            # Then the garbage was collected first, and what lives was frozen
            assert collected() is None
            assert frozen > 0
    finally:
        gc.unfreeze()
        gc.enable()
    assert gc.get_freeze_count() == 0


async def test_healthz_answers_while_the_process_runs(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_answers_when_the_database_is_reachable(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_is_unavailable_when_the_database_is_not(
    broken_http: httpx.AsyncClient,
) -> None:
    healthz = await broken_http.get("/healthz")
    readyz = await broken_http.get("/readyz")

    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
    assert (readyz.status_code, readyz.json()) == (503, {"status": "unavailable"})
    assert MISSING_DATABASE not in readyz.text


async def test_every_response_carries_a_fresh_request_id(
    http: httpx.AsyncClient, gql: GraphQLClient
) -> None:
    responses = [
        await http.get("/healthz"),
        await http.get("/readyz"),
        await http.get("/graphql", headers={"Accept": "text/html"}),  # GraphiQL
        await gql.post("{ viewer { tenantId } }"),
        await gql.post("{ viewer { tenantId } }", token=None),  # refused
        await gql.post("{ nope }"),  # invalid document
        await http.post(
            "/graphql", content=b"{not json", headers={"Content-Type": "application/json"}
        ),
        await http.get("/no-such-page"),
    ]

    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 200, 400, 404]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i or "") for i in ids), ids
    assert len(set(ids)) == len(ids)


async def test_a_given_request_id_is_echoed(http: httpx.AsyncClient, gql: GraphQLClient) -> None:
    given = "req-7f3a-connector-line"

    health = await http.get("/healthz", headers={"X-Request-Id": given})
    graphql = await gql.post("{ viewer { tenantId } }", headers={"X-Request-Id": given})
    long = await http.get("/healthz", headers={"X-Request-Id": "x" * 100})

    assert health.headers["x-request-id"] == given
    assert graphql.headers["x-request-id"] == given
    assert long.headers["x-request-id"] == "x" * 64  # kept bounded in logs and headers
    assert health.headers.get_list("x-request-id") == [given]


LEAKS = (
    MISSING_DATABASE,
    "does not exist",
    "asyncpg",
    "sqlalchemy",
    "SELECT",
    "set_config",
    "Traceback",
    "InvalidCatalogName",
    "omni_app",
    ".py",
)


@pytest.mark.parametrize(
    ("document", "variables", "field"),
    [
        ("{ conversations { edges { cursor } } }", {}, "conversations"),
        ("query($id: ID!) { node(id: $id) { id } }", {"id": missing_id("Message")}, "node"),
        (
            "mutation($input: PersistMessageInput!) { persistMessage(input: $input) "
            "{ message { id } } }",
            {"input": inbound(missing_id("ChannelAccount"))},
            "persistMessage",
        ),
    ],
    ids=["query", "nullable query", "mutation"],
)
async def test_an_unexpected_error_is_masked_and_logged_with_the_request_id(
    broken_http: httpx.AsyncClient,
    tenant: TenantId,
    caplog: pytest.LogCaptureFixture,
    document: str,
    variables: dict[str, object],
    field: str,
) -> None:
    client = GraphQLClient(broken_http, token_for(tenant))

    with caplog.at_level(logging.ERROR, logger="omni_store.graph"):
        response = await client.post(document, variables)

    request_id = response.headers["x-request-id"]
    body = response.json()
    assert response.status_code == 200
    assert body == {
        "data": {field: None} if field == "node" else None,
        "errors": [
            {
                "message": "Unexpected error.",
                "locations": body["errors"][0]["locations"],
                "path": [field],
                "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
            }
        ],
    }
    leaked = [word for word in LEAKS if word.lower() in response.text.lower()]
    assert leaked == [], response.text
    # The log has what the client does not: the cause, under the same request id.
    logged = [r for r in caplog.records if r.name == "omni_store.graph"]
    assert [r.getMessage() for r in logged] == [
        f"unexpected error in {field} (request {request_id})"
    ]
    assert logged[0].exc_info is not None
    assert MISSING_DATABASE in str(logged[0].exc_info[1])


async def test_a_masked_error_carries_the_callers_request_id(
    broken_http: httpx.AsyncClient, tenant: TenantId
) -> None:
    client = GraphQLClient(broken_http, token_for(tenant))

    response = await client.post(
        "{ channelAccounts { edges { cursor } } }", headers={"X-Request-Id": "trace-42"}
    )

    assert response.headers["x-request-id"] == "trace-42"
    assert [e["extensions"] for e in response.json()["errors"]] == [
        {"code": "INTERNAL_SERVER_ERROR", "requestId": "trace-42"}
    ]


async def test_auth_errors_are_not_masked_when_the_database_is_down(
    broken_http: httpx.AsyncClient,
) -> None:
    client = GraphQLClient(broken_http, None)

    response = await client.post("{ conversations { edges { cursor } } }")

    assert [e["extensions"] for e in response.json()["errors"]] == [{"code": "UNAUTHENTICATED"}]


async def test_responses_are_utf8_json_even_with_integers_beyond_64_bits(
    gql: GraphQLClient,
) -> None:
    account = await register_account(gql)
    struct = {"orderId": 2**70, "price": 1.5, "title": "เสื้อยืด", "tags": [None, True, -(2**64)]}
    message = inbound(account, content={"type": "PRODUCT", "text": "ขอบคุณ", "struct": struct})
    stored = (await persisted(gql, message))["message"]["id"]

    response = await gql.post(
        "query($id: ID!) { node(id: $id) { ... on Message { content { text struct } } } }",
        {"id": stored},
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"data": {"node": {"content": {"text": "ขอบคุณ", "struct": struct}}}}
    # Text as UTF-8, not \u escapes; the big integers to the last digit
    assert "ขอบคุณ".encode() in response.content
    assert str(2**70).encode() in response.content
    assert str(-(2**64)).encode() in response.content


async def test_a_page_response_is_encoded_by_orjson(gql: GraphQLClient) -> None:
    account = await register_account(gql)
    await persisted(gql, inbound(account, text="สวัสดี"))

    response = await gql.post("{ conversations(first: 5) { edges { node { id } } } }")

    assert response.status_code == 200
    assert response.content == orjson.dumps(response.json())
