"""The service's own path for a POST of one JSON operation (``GraphQLApp.__call__``) answers
byte for byte as Strawberry's view does, and hands everything else to that view.

Each request is sent to two apps on the same database: the service as built, and the same
service whose /graphql route calls Strawberry's view directly. Status, headers and body must
be equal; a spy on the view's ``run`` tells which path served each request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL

from omni_store.graph.app import GraphQLApp, create_app
from omni_store.persistence.database import Database
from omni_store.persistence.tenancy import TenantId
from tests.api.conftest import SECRET, GraphQLClient, token_for
from tests.api.operations import (
    CONVERSATIONS,
    PERSIST,
    TIMELINE,
    inbound,
    persisted,
    register_account,
    tenant_snapshot,
)


@dataclass
class Apps:
    fast: httpx.AsyncClient
    classic: httpx.AsyncClient
    views: list[str] = field(default_factory=list)

    async def both(self, **request: Any) -> tuple[httpx.Response, httpx.Response, list[str]]:
        """The request sent to the service, then to Strawberry's view; and which of the two
        apps ran the view ("fast" for the service, "classic" for the other)."""
        self.views.clear()
        given = request.pop("headers", {})
        headers = [
            ("x-request-id", "same-id"),
            *(given.items() if isinstance(given, dict) else given),
        ]
        fast = await self.fast.request(url="/graphql", headers=headers, **request)
        self.views.append("|")
        classic = await self.classic.request(url="/graphql", headers=headers, **request)
        ran = "".join(self.views).split("|")
        return (
            fast,
            classic,
            [s for s, views in zip(("fast", "classic"), ran, strict=True) if views],
        )


def _graphql_route(app: Starlette) -> Route:
    return next(r for r in app.routes if isinstance(r, Route) and r.path == "/graphql")


def _classic(db: Database) -> Starlette:
    """The service, its /graphql route calling Strawberry's view instead of the service's."""
    app = create_app(db, jwt_secret=SECRET, dispose_on_shutdown=False)
    route = _graphql_route(app)
    view = route.app

    async def strawberry_view(scope: Any, receive: Any, send: Any) -> None:
        await GraphQL.__call__(view, scope, receive, send)  # type: ignore[arg-type]

    route.app = strawberry_view
    return app


@pytest.fixture
async def apps(db: Database, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Apps]:
    fast_app = create_app(db, jwt_secret=SECRET, dispose_on_shutdown=False)
    fast_view = _graphql_route(fast_app).app
    pair = Apps(httpx.AsyncClient(), httpx.AsyncClient())
    original_run = GraphQLApp.run

    async def spied_run(self: GraphQLApp, *args: Any, **kwargs: Any) -> Any:
        pair.views.append("f" if self is fast_view else "c")
        return await original_run(self, *args, **kwargs)

    monkeypatch.setattr(GraphQLApp, "run", spied_run)
    base = "http://omni.test"
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=fast_app), base_url=base) as fast,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_classic(db)), base_url=base
        ) as classic,
    ):
        pair.fast, pair.classic = fast, classic
        yield pair


def _json(document: str, variables: dict[str, Any] | None = None, **more: Any) -> bytes:
    return orjson.dumps({"query": document, "variables": variables, **more})


JSON = {"content-type": "application/json"}
TWO_OPERATIONS = (
    "query A { viewer { tenantId } } query B { conversations(first: 1) { edges { cursor } } }"
)


async def _assert_same(
    apps: Apps, served_by: list[str], **request: Any
) -> tuple[httpx.Response, httpx.Response]:
    fast, classic, ran_view = await apps.both(**request)
    assert (fast.status_code, fast.headers.multi_items(), fast.content) == (
        classic.status_code,
        classic.headers.multi_items(),
        classic.content,
    )
    assert ran_view == served_by
    return fast, classic


async def test_one_json_operation_is_served_without_the_view_as_the_view_serves_it(
    apps: Apps, gql: GraphQLClient, tenant: TenantId
) -> None:
    account = await register_account(gql)
    stored = await persisted(gql, inbound(account))
    bearer = {**JSON, "authorization": f"Bearer {gql.token}"}
    conversation = stored["conversation"]["id"]

    cases: list[dict[str, Any]] = [
        {"content": _json(CONVERSATIONS, {"first": 2})},
        {"content": _json(TIMELINE, {"id": conversation, "first": 1})},
        {"content": _json(TWO_OPERATIONS, operationName="B")},
        {"content": _json("{ conversations(first: 1) { nope } }")},  # validation error
        {"content": _json("{ conversations(first: ")},  # syntax error
        {"content": _json(TIMELINE, {"id": conversation, "first": "all"})},  # not an Int
        {"content": _json(CONVERSATIONS, {"first": 1}, extensions={"trace": True})},
        # Refused by execute_single: no operation of that name, or no name given for two.
        {"content": _json(TWO_OPERATIONS, operationName="C")},
        {"content": _json(TWO_OPERATIONS)},
        {"content": _json("subscription { viewer { tenantId } }")},
    ]
    answers = [
        (await _assert_same(apps, ["classic"], method="POST", headers=bearer, **case))[0]
        for case in cases
    ]
    assert [a.status_code for a in answers] == [200] * 7 + [400, 200, 200]
    assert answers[7].text == 'Unknown operation named "C".'
    errors = [
        len(orjson.loads(a.content).get("errors", [])) for i, a in enumerate(answers) if i != 7
    ]
    assert errors == [0, 0, 0, 1, 1, 1, 0, 0, 1]  # two operations, no name: Strawberry runs A

    # The content type with a charset, and a caller without token or with too few scopes.
    charset = {**bearer, "content-type": "application/json; charset=utf-8"}
    body = _json(CONVERSATIONS, {"first": 1})
    await _assert_same(apps, ["classic"], method="POST", headers=charset, content=body)
    await _assert_same(apps, ["classic"], method="POST", headers=JSON, content=body)
    reader = {**JSON, "authorization": f"Bearer {token_for(tenant, ['messages:write'])}"}
    fast, _ = await _assert_same(apps, ["classic"], method="POST", headers=reader, content=body)
    assert orjson.loads(fast.content)["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_mutations_on_the_service_path_answer_as_the_view_and_write_the_same(
    apps: Apps, gql: GraphQLClient, engine: AsyncEngine, tenant: TenantId
) -> None:
    account = await register_account(gql)
    message = inbound(account)
    first = await persisted(gql, message)
    bearer = {**JSON, "authorization": f"Bearer {gql.token}"}
    rows = await tenant_snapshot(engine, tenant)

    # A replay, and a message refused by validation: the same answers, nothing written.
    replay = _json(PERSIST, {"input": message})
    fast, _ = await _assert_same(apps, ["classic"], method="POST", headers=bearer, content=replay)
    answer = orjson.loads(fast.content)["data"]["persistMessage"]
    assert (answer["deduplicated"], answer["message"]["id"]) == (True, first["message"]["id"])
    refused = _json(PERSIST, {"input": {**inbound(account), "channelTimestamp": "yesterday"}})
    fast, _ = await _assert_same(apps, ["classic"], method="POST", headers=bearer, content=refused)
    assert orjson.loads(fast.content)["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert await tenant_snapshot(engine, tenant) == rows


@pytest.mark.parametrize(
    "request_",
    [
        {"method": "GET", "params": {"query": "{ viewer { tenantId } }"}},
        {"method": "GET", "headers": {"accept": "text/html"}},  # GraphiQL
        {"method": "POST", "headers": JSON, "content": b'[{"query": "{ viewer { tenantId } }"}]'},
        {"method": "POST", "headers": JSON, "content": b'{"query": "{ viewer { tenantId } }"'},
        {"method": "POST", "headers": JSON, "content": b'{"query": "\xff"}'},  # not UTF-8
        {"method": "POST", "headers": JSON, "content": b'{"query": 12}'},
        {"method": "POST", "headers": JSON, "content": b'{"query": ""}'},
        {"method": "POST", "headers": JSON, "content": b'{"query": null}'},
        {"method": "POST", "headers": JSON, "content": b'{"variables": {}}'},
        {"method": "POST", "headers": JSON, "content": b'{"query": "{ a }", "variables": []}'},
        {"method": "POST", "headers": JSON, "content": b'{"query": "{ a }", "extensions": 1}'},
        {"method": "POST", "headers": JSON, "content": b'{"query": "{ a }", "operationName": 1}'},
        {
            "method": "POST",
            "headers": {"content-type": "Application/JSON"},  # Strawberry: 400
            "content": b'{"query": "{ viewer { tenantId } }"}',
        },
        {
            "method": "POST",
            "headers": {"content-type": "text/plain"},
            "content": b'{"query": "{ viewer { tenantId } }"}',
        },
        {"method": "POST", "content": b'{"query": "{ viewer { tenantId } }"}'},
        {
            "method": "POST",
            "headers": {**JSON, "accept": "multipart/mixed"},
            "content": b'{"query": "{ viewer { tenantId } }"}',
        },
    ],
    ids=[
        "GET",
        "GraphiQL",
        "batch",
        "broken JSON",
        "not UTF-8",
        "query a number",
        "empty query",
        "null query",
        "no query",
        "variables a list",
        "extensions a number",
        "operation name a number",
        "JSON in capitals",
        "text/plain",
        "no content type",
        "multipart accepted",
    ],
)
async def test_any_other_request_goes_to_the_view_whole(
    apps: Apps, tenant: TenantId, request_: dict[str, Any]
) -> None:
    headers = {**request_.get("headers", {}), "authorization": f"Bearer {token_for(tenant)}"}
    await _assert_same(apps, ["fast", "classic"], **{**request_, "headers": headers})


async def test_a_header_sent_twice_is_left_to_the_view(apps: Apps, tenant: TenantId) -> None:
    """Strawberry's view reads the first of each; the service's path does not guess."""
    body = b'{"query": "{ viewer { tenantId } }"}'
    token = ("authorization", f"Bearer {token_for(tenant)}")
    two_types = [("content-type", "text/plain"), ("content-type", "application/json"), token]
    two_tokens = [*JSON.items(), ("authorization", "Bearer not-a-token"), token]

    fast, _ = await _assert_same(
        apps, ["fast", "classic"], method="POST", headers=two_types, content=body
    )
    assert (fast.status_code, fast.text) == (400, "Unsupported content type")
    fast, _ = await _assert_same(
        apps, ["fast", "classic"], method="POST", headers=two_tokens, content=body
    )
    assert fast.status_code == 200
    assert orjson.loads(fast.content)["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("body", [b'"{ viewer { tenantId } }"', b"12", b"null", b"true"])
async def test_json_that_is_not_an_object_is_refused_with_400_and_nothing_written(
    apps: Apps, gql: GraphQLClient, engine: AsyncEngine, tenant: TenantId, body: bytes
) -> None:
    """Strawberry's view fails on these (a 500, AttributeError); the service refuses them."""
    await persisted(gql, inbound(await register_account(gql)))
    rows = await tenant_snapshot(engine, tenant)
    headers = {**JSON, "authorization": f"Bearer {gql.token}"}

    response = await apps.fast.post("/graphql", headers=headers, content=body)

    assert (response.status_code, response.text) == (400, "The request body must be a JSON object.")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert apps.views == []
    assert await tenant_snapshot(engine, tenant) == rows


async def test_a_request_body_is_read_whole_when_it_arrives_in_pieces(
    apps: Apps, gql: GraphQLClient
) -> None:
    await persisted(gql, inbound(await register_account(gql)))
    document = _json(CONVERSATIONS, {"first": 1})

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(document), 7):
            yield document[start : start + 7]

    headers = {**JSON, "authorization": f"Bearer {gql.token}"}
    for client in (apps.fast, apps.classic):
        response = await client.post("/graphql", headers=headers, content=pieces())
        assert response.status_code == 200
        edges = orjson.loads(response.content)["data"]["conversations"]["edges"]
        assert len(edges) == 1
    assert apps.views == ["c"]
