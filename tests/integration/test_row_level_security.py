"""Row-level security is a real second wall: even SQL that forgets the tenant filter, run on
the service's own connection, sees and writes only the transaction's tenant."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from omni_store.persistence.database import (
    Database,
    async_url,
    begin_with_tenant,
    listen,
)
from omni_store.persistence.roles import app_url, rls_bypass_reasons
from omni_store.persistence.service import persist_message
from omni_store.persistence.tenancy import TenantId
from tests.conftest import row_counts
from tests.factories import channel_account, inbound

UNSCOPED_COUNTS = text(
    "SELECT (SELECT count(*) FROM channel_accounts), (SELECT count(*) FROM contacts), "
    "(SELECT count(*) FROM conversations), (SELECT count(*) FROM messages), "
    "(SELECT count(*) FROM attachments)"
)


async def _two_tenants(db: Database, a: TenantId, b: TenantId) -> None:
    for tenant, n in ((a, 3), (b, 2)):
        account = await channel_account(db, tenant)
        for i in range(n):
            await persist_message(
                db, tenant, inbound(account_id=account.id, external_message_id=f"m-{i}")
            )


async def test_an_unscoped_query_on_the_service_connection_sees_only_its_tenant(
    db: Database, tenant: TenantId, other_tenant: TenantId
) -> None:
    await _two_tenants(db, tenant, other_tenant)

    async with db.transaction(tenant) as uow:
        mine = tuple((await uow.execute(UNSCOPED_COUNTS)).one())
    async with db.transaction(other_tenant) as uow:
        theirs = tuple((await uow.execute(UNSCOPED_COUNTS)).one())

    assert mine == (1, 1, 1, 3, 0)
    assert theirs == (1, 1, 1, 2, 0)


async def test_without_a_tenant_the_service_connection_sees_nothing(
    db: Database, tenant: TenantId, other_tenant: TenantId
) -> None:
    await _two_tenants(db, tenant, other_tenant)

    async with db.engine.connect() as connection:
        counts = tuple((await connection.execute(UNSCOPED_COUNTS)).one())

    assert counts == (0, 0, 0, 0, 0)


async def test_writing_a_row_of_another_tenant_is_refused(
    db: Database, engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    before = await row_counts(engine)

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with db.transaction(tenant) as uow:
            await uow.execute(
                text(
                    "INSERT INTO channel_accounts (tenant_id, channel, external_account_id, "
                    "fallback_window_seconds) VALUES (:t, 'LINE', 'smuggled', 60)"
                ),
                {"t": str(other_tenant)},
            )

    assert await row_counts(engine) == before


async def test_updating_another_tenants_rows_touches_nothing(
    db: Database, engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    await _two_tenants(db, tenant, other_tenant)

    async with db.transaction(tenant) as uow:
        updated = await uow.execute(
            text("UPDATE messages SET content_text = 'defaced' WHERE tenant_id = :t RETURNING id"),
            {"t": str(other_tenant)},
        )

    assert updated == []
    async with engine.connect() as owner:
        texts = (
            (
                await owner.execute(
                    text("SELECT DISTINCT content_text FROM messages WHERE tenant_id = :t"),
                    {"t": str(other_tenant)},
                )
            )
            .scalars()
            .all()
        )
    assert texts == ["สวัสดีครับ hello"]


async def test_moving_a_row_into_another_tenant_is_refused(
    db: Database, engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    await _two_tenants(db, tenant, other_tenant)

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with db.transaction(tenant) as uow:
            await uow.execute(text("UPDATE messages SET tenant_id = :t"), {"t": str(other_tenant)})

    async with engine.connect() as owner:
        counts = dict(
            (
                await owner.execute(
                    text(
                        "SELECT tenant_id::text, count(*) FROM messages "
                        "WHERE tenant_id IN (:a, :b) GROUP BY 1"
                    ),
                    {"a": str(tenant), "b": str(other_tenant)},
                )
            ).all()
        )
    assert counts == {str(tenant): 3, str(other_tenant): 2}


async def test_a_pooled_connection_carries_no_tenant_into_the_next_transaction(
    single: AsyncEngine, app_engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    await _two_tenants(Database(app_engine), tenant, other_tenant)
    db = Database(single)
    async with db.transaction(tenant) as uow:
        pid_a = (await uow.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        seen_a = tuple((await uow.execute(UNSCOPED_COUNTS)).one())
    async with db.transaction(other_tenant) as uow:
        pid_b = (await uow.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        seen_b = tuple((await uow.execute(UNSCOPED_COUNTS)).one())
        setting = (await uow.execute(text("SELECT current_setting('app.tenant_id')"))).scalar_one()
    async with single.connect() as connection:
        pid_after = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        seen_after = tuple((await connection.execute(UNSCOPED_COUNTS)).one())

    assert pid_a == pid_b == pid_after
    assert seen_a == (1, 1, 1, 3, 0)
    assert seen_b == (1, 1, 1, 2, 0)
    assert setting == str(other_tenant)
    assert seen_after == (0, 0, 0, 0, 0)


async def test_the_tenant_goes_out_with_begin_and_not_as_a_statement_of_its_own(
    single: AsyncEngine, app_engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    await _two_tenants(Database(app_engine), tenant, other_tenant)
    statements: list[str] = []
    sent: list[str] = []
    listen(single, lambda _uow, sql, *_: statements.append(sql))
    async with Database(single).transaction(tenant) as uow:
        uow._connection.add_query_logger(lambda query: sent.append(query.query))
        setting, *seen = (
            await uow.execute(
                text(
                    "SELECT current_setting('app.tenant_id'), "
                    "(SELECT count(*) FROM messages), (SELECT count(*) FROM contacts)"
                )
            )
        ).one()
    await asyncio.sleep(0)  # asyncpg calls its query loggers soon after, not in the call

    assert (setting, seen) == (str(tenant), [3, 1])
    assert len(statements) == 1
    assert "set_config" not in statements[0]
    # What went to the server: the tenant with BEGIN in one simple query, the statement, and
    # COMMIT, three round trips.
    assert sent == [
        f"BEGIN; SELECT set_config('app.tenant_id', '{tenant}', true);",
        statements[0],
        "COMMIT",
    ]


async def test_a_unit_of_work_that_ran_nothing_leaves_no_tenant_on_its_connection(
    single: AsyncEngine, app_engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    await _two_tenants(Database(app_engine), tenant, other_tenant)
    sent: list[str] = []
    async with Database(single).transaction(tenant) as uow:
        uow._connection.add_query_logger(lambda query: sent.append(query.query))
    with pytest.raises(RuntimeError, match="refused"):
        async with Database(single).transaction(tenant):
            raise RuntimeError("refused before any statement")
    await asyncio.sleep(0)  # asyncpg calls its query loggers soon after, not in the call
    sent_by_the_two = list(sent)
    async with single.begin() as connection:  # a BEGIN of another kind of caller
        setting = (
            await connection.execute(text("SELECT current_setting('app.tenant_id', true)"))
        ).scalar_one()
        seen_after = tuple((await connection.execute(UNSCOPED_COUNTS)).one())

    assert sent_by_the_two == []  # not even BEGIN, nor ROLLBACK
    assert setting is None  # never set on this connection at all
    assert seen_after == (0, 0, 0, 0, 0)


async def test_an_engine_made_elsewhere_binds_the_tenant_the_same_way(
    database_url: str, app_engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    await _two_tenants(Database(app_engine), tenant, other_tenant)
    plain = create_async_engine(async_url(app_url(database_url)), pool_size=1)
    statements: list[str] = []
    listen(plain, lambda _uow, sql, *_: statements.append(sql))
    try:
        async with Database(plain).transaction(other_tenant) as uow:
            seen = tuple((await uow.execute(UNSCOPED_COUNTS)).one())
    finally:
        await plain.dispose()

    assert seen == (1, 1, 1, 2, 0)
    assert len(statements) == 1


async def test_only_a_uuid_can_be_bound_as_the_tenant_of_a_begin(
    single: AsyncEngine, tenant: TenantId
) -> None:
    db = Database(single)
    refused = []
    for wrong in (str(tenant), "x'); DROP TABLE messages; --", 1):
        with pytest.raises(TypeError, match="a tenant is a UUID") as error:
            begin_with_tenant(wrong)  # type: ignore[arg-type]
        refused.append(str(error.value))
        with pytest.raises(TypeError, match="a tenant is a UUID"):
            async with db.transaction(wrong):  # type: ignore[arg-type]
                raise AssertionError("a unit of work of no tenant began")
    async with single.connect() as connection:
        setting = (
            await connection.execute(text("SELECT current_setting('app.tenant_id', true)"))
        ).scalar_one()

    assert refused == [
        "a tenant is a UUID, not str",
        "a tenant is a UUID, not str",
        "a tenant is a UUID, not int",
    ]
    assert setting is None


async def test_the_service_role_is_bound_by_rls_and_the_owner_is_not(
    app_engine: AsyncEngine, engine: AsyncEngine
) -> None:
    async with engine.connect() as connection:
        owner = (await connection.execute(text("SELECT current_user"))).scalar_one()

    assert await rls_bypass_reasons(app_engine) == []
    assert await rls_bypass_reasons(engine) == [
        f"role {owner} is a superuser",
        f"role {owner} has BYPASSRLS",
        f"role {owner} owns attachments, channel_accounts, contacts, conversations, messages",
    ]


async def test_the_service_role_cannot_delete_or_change_the_schema(
    db: Database, tenant: TenantId
) -> None:
    for statement in ("DELETE FROM messages", "ALTER TABLE messages DISABLE ROW LEVEL SECURITY"):
        with pytest.raises(
            asyncpg.InsufficientPrivilegeError, match=r"permission denied|must be owner"
        ):
            async with db.transaction(tenant) as uow:
                await uow.execute(text(statement))


def test_app_url_swaps_only_the_user() -> None:
    assert app_url("postgresql://postgres:secret@db.internal:5433/omni?sslmode=require") == (
        "postgresql://omni_app@db.internal:5433/omni?sslmode=require"
    )
    socket = make_url(app_url("postgresql://postgres:@/postgres?host=/run/pg"))
    assert (socket.username, socket.password, socket.database, dict(socket.query)) == (
        "omni_app",
        None,
        "postgres",
        {"host": "/run/pg"},
    )
