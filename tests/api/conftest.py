"""API harness: the real ASGI app in process, over HTTP (httpx), on the real database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from omni_store.graph.app import create_app
from omni_store.graph.auth import ALL_SCOPES, mint_token
from omni_store.persistence.database import Database, listen

SECRET = "test-secret-not-for-production-0123456789"


@pytest.fixture
def app(db: Database) -> Starlette:
    return create_app(db, jwt_secret=SECRET, dispose_on_shutdown=False)


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://omni.test") as client:
        yield client


def token_for(
    tenant: uuid.UUID, scopes: list[str] | tuple[str, ...] = ALL_SCOPES, **kw: Any
) -> str:
    return mint_token(SECRET, tenant=tenant, scopes=list(scopes), **kw)


@dataclass
class GraphQLClient:
    http: httpx.AsyncClient
    token: str | None

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = ...,
        headers: dict[str, str] | None = None,  # type: ignore[assignment]
    ) -> httpx.Response:
        chosen = self.token if token is ... else token
        all_headers = dict(headers or {})
        if chosen is not None:
            all_headers["Authorization"] = f"Bearer {chosen}"
        return await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=all_headers
        )

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        """The JSON body of a query that must succeed at the HTTP level (status 200)."""
        response = await self.post(query, variables, **kw)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def gql(http: httpx.AsyncClient, tenant: uuid.UUID) -> GraphQLClient:
    """A client holding a token of ``tenant`` with every scope."""
    return GraphQLClient(http, token_for(tenant))


@pytest.fixture
def other_gql(http: httpx.AsyncClient, other_tenant: uuid.UUID) -> GraphQLClient:
    return GraphQLClient(http, token_for(other_tenant))


class StatementCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []
        # Whether each statement's unit of work ran generic plans (Database.transaction).
        self.generic_plans: list[bool] = []

    def reset(self) -> None:
        self.statements.clear()
        self.generic_plans.clear()

    @property
    def count(self) -> int:
        return len(self.statements)


@pytest.fixture
def sql_statements(app_engine: AsyncEngine) -> Iterator[StatementCounter]:
    """Every SQL statement the service's engine sends while the test runs (BEGIN/COMMIT
    excluded)."""
    counter = StatementCounter()

    def record(uow: Any, statement: str, *args: Any) -> None:
        counter.statements.append(statement)
        counter.generic_plans.append(uow.generic_plans)

    stop = listen(app_engine, record)
    try:
        yield counter
    finally:
        stop()
