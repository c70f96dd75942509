"""The migrations and the table definitions agree, and the migrations can be reverted.

The drift check is Alembic's own autogenerate comparison: a migrated database compared with
``omni_store.persistence.tables.metadata`` must produce no operation at all. The downgrade
check runs on a scratch database created on the same server (and dropped afterwards), so the
shared test database is never reverted.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from omni_store.persistence.database import create_engine
from omni_store.persistence.migrate import alembic_config, downgrade, upgrade
from omni_store.persistence.tables import TENANT_TABLES, metadata

STORE_TABLES = ["attachments", "channel_accounts", "contacts", "conversations", "messages"]


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return compare_metadata(context, metadata)


async def _drift(connection: AsyncConnection) -> list[Any]:
    return await connection.run_sync(_diff)


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await _drift(connection) == []


def _model_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for table in TENANT_TABLES:
        found = {str(c.name) for c in table.constraints} | {str(i.name) for i in table.indexes}
        names[table.name] = found
    return names


def _stored_names(connection: Connection) -> dict[str, set[str]]:
    inspector = inspect(connection)
    names: dict[str, set[str]] = {}
    for table in STORE_TABLES:
        found = {inspector.get_pk_constraint(table)["name"]}
        found |= {c["name"] for c in inspector.get_unique_constraints(table)}
        found |= {c["name"] for c in inspector.get_foreign_keys(table)}
        found |= {c["name"] for c in inspector.get_check_constraints(table)}
        found |= {i["name"] for i in inspector.get_indexes(table)}
        names[table] = found
    return names


async def test_constraints_and_indexes_are_stored_under_their_model_names(
    engine: AsyncEngine,
) -> None:
    """PostgreSQL cuts identifiers at 63 bytes and SQLAlchemy then replaces the tail with a
    hash: a name over the limit would be stored under a name that appears nowhere in the code
    (and that raw SQL, monitoring and later migrations could not guess)."""
    model = _model_names()
    too_long = sorted(n for names in model.values() for n in names if len(n.encode()) > 63)
    assert too_long == []
    async with engine.connect() as connection:
        stored = await connection.run_sync(_stored_names)
    assert stored == model
    assert sum(len(names) for names in stored.values()) == 32


# --- downgrade on a scratch database ----------------------------------------------------------


def _url_of_database(url: str, database: str) -> str:
    """The same server (host, port, socket directory, user), another database."""
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme.startswith("postgres") else parts.scheme
    return urlunsplit(parts._replace(scheme=scheme, path=f"/{database}"))


@asynccontextmanager
async def scratch_database(database_url: str) -> AsyncIterator[str]:
    name = f"omni_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_url_of_database(database_url, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _url_of_database(database_url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _relations(engine: AsyncEngine) -> list[str]:
    """Every table, index, sequence and view of the public schema."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT relname FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace ORDER BY relname"
            )
        )
        return [r.relname for r in rows]


async def _tables(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return sorted(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def _versions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list(
            (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars()
        )


# Tables, their identity sequences, and the indexes of keys, unique constraints and indexes.
MIGRATED_RELATIONS = sorted(
    [
        "alembic_version",
        "alembic_version_pkc",
        *STORE_TABLES,
        *(f"{table}_id_seq" for table in STORE_TABLES),
        *(f"pk_{table}" for table in STORE_TABLES),
        "uq_attachments_tenant_id_message_id_external_id",
        "uq_attachments_tenant_id_message_id_position",
        "uq_channel_accounts_tenant_id_channel_external_account_id",
        "uq_contacts_tenant_id_channel_account_id_external_user_id",
        "uq_conversations_tenant_id_channel_account_id_thread_key",
        "uq_messages_tenant_id_channel_account_id_idempotency_key",
        "ix_conversations_tenant_id_account_id_last_message_at_id",
        "ix_conversations_tenant_id_channel_last_message_at_id",
        "ix_conversations_tenant_id_contact_id",
        "ix_conversations_tenant_id_last_message_at_id",
        "ix_messages_tenant_id_contact_id",
        "ix_messages_tenant_id_conversation_id_channel_timestamp_id",
    ]
)


async def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    # Newest first: every revision and the one it reverts to.
    steps = [(r.revision, r.down_revision) for r in script.walk_revisions()]
    assert steps[0][0] == head
    assert steps[-1][1] is None
    async with scratch_database(database_url) as url:
        engine = create_engine(url, pool_size=1)
        try:
            await upgrade(engine)
            assert await _tables(engine) == ["alembic_version", *STORE_TABLES]
            assert await _versions(engine) == [head]
            assert await _relations(engine) == MIGRATED_RELATIONS

            # One revision at a time, so that every downgrade() runs on its own.
            for revision, down_revision in steps:
                assert await _versions(engine) == [revision]
                await downgrade(engine, "-1")
                assert await _versions(engine) == ([down_revision] if down_revision else [])
            assert await _tables(engine) == ["alembic_version"]
            assert await _versions(engine) == []
            # No index, identity sequence or constraint index of the store is left behind.
            assert await _relations(engine) == ["alembic_version", "alembic_version_pkc"]

            await upgrade(engine, "head")
            await downgrade(engine, "base")
            assert await _relations(engine) == ["alembic_version", "alembic_version_pkc"]
            await upgrade(engine, "head")
            assert await _tables(engine) == ["alembic_version", *STORE_TABLES]
            assert await _versions(engine) == [head]
            assert await _relations(engine) == MIGRATED_RELATIONS
            async with engine.connect() as connection:
                assert await _drift(connection) == []
        finally:
            await engine.dispose()
