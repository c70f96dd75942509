"""Test harness: a real PostgreSQL, migrated once per session.

With ``DATABASE_URL`` set, that server and database are used (CI creates a fresh database per
run). Without it, an embedded PostgreSQL is started in a temporary directory and deleted
afterwards. Tests isolate by tenant: each test gets fresh tenant ids, so nothing is truncated
between tests, and row counts of whole tables are still exact because tests run one at a time.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.database import Database, create_engine
from omni_store.persistence.embedded import start_embedded
from omni_store.persistence.migrate import upgrade
from omni_store.persistence.roles import app_url, enable_app_login
from omni_store.persistence.tables import TENANT_TABLES
from omni_store.persistence.tenancy import TenantId

# Hypothesis keeps caches in ./.hypothesis by default; at the project root that directory trips
# pytest's collection (norecursedirs is set, warnings are errors), so keep them elsewhere.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="omni-store-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="omni-store-test-") as tmp:
        os.chmod(tmp, 0o755)  # the embedded server runs as its own system user when root
        yield start_embedded(Path(tmp) / "pgdata", cleanup="delete")


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The owner's engine: migrations, row counts, fault injection. Bypasses row-level
    security (superuser); never what the service connects as."""
    # Setup work (migrations, bulk data sets) is not under the service's statement timeout.
    engine = create_engine(database_url, pool_size=5, statement_timeout_ms=0)
    await upgrade(engine)
    await enable_app_login(engine)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def app_engine(engine: AsyncEngine, database_url: str) -> AsyncIterator[AsyncEngine]:
    """What the service connects as: omni_app, bound by row-level security."""
    app_engine = create_engine(app_url(database_url), pool_size=25)
    yield app_engine
    await app_engine.dispose()


@pytest.fixture
async def single(engine: AsyncEngine, database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of the service's role with one pooled connection: what one unit of work
    leaves on it, the next one gets. (After ``engine``: the schema and the role exist.)"""
    single = create_engine(app_url(database_url), pool_size=1)
    yield single
    await single.dispose()


@pytest.fixture
def db(app_engine: AsyncEngine) -> Database:
    return Database(app_engine)


@pytest.fixture
def tenant() -> TenantId:
    return TenantId(uuid.uuid4())


@pytest.fixture
def other_tenant() -> TenantId:
    return TenantId(uuid.uuid4())


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    """Rows of every table of the store, all tenants together."""
    async with engine.connect() as connection:
        return {
            table.name: (
                await connection.execute(select(func.count()).select_from(table))
            ).scalar_one()
            for table in TENANT_TABLES
        }


def row_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The rows each table gained (or lost) between two :func:`row_counts`, for the tables
    that changed only: ``{}`` when nothing was written."""
    return {
        table: after[table] - before[table] for table in before if after[table] != before[table]
    }
