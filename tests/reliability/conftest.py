"""Fixtures of the reliability tests: the service's own engine (as deployed: app role, default
pool and timeouts, a distinctive application_name so that its backends can be found), and the
owner's engine for checks and fault injection."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.roles import app_url
from tests.reliability.harness import service_engine


@pytest.fixture
def owner(engine: AsyncEngine) -> AsyncEngine:
    """The tables' owner (superuser in tests): counts across row-level security, triggers,
    pg_terminate_backend."""
    return engine


@pytest.fixture
def service_url(database_url: str) -> str:
    return app_url(database_url)


@pytest.fixture
def app_name() -> str:
    return f"omni-store-rel-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def service(service_url: str, app_name: str) -> AsyncIterator[AsyncEngine]:
    """The service's engine with the service's defaults (pool 10, pool timeout 5 s...)."""
    engine = service_engine(service_url, name=app_name)
    yield engine
    await engine.dispose()
