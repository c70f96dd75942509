"""A unit of work runs its statements on the pooled asyncpg connection: how it begins and ends
its transaction on every path out, how it compiles statements, and what it gives back."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from sqlalchemy import Numeric, bindparam, column, literal_column, select, text
from sqlalchemy.exc import MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.cursors import PageRequest
from omni_store.persistence.database import Database, Rows
from omni_store.persistence.errors import ConnectionLost
from omni_store.persistence.tenancy import TenantId
from tests.conftest import row_counts
from tests.factories import channel_account

PID = text("SELECT pg_backend_pid()")
INSERT_ACCOUNT = text(
    "INSERT INTO channel_accounts (tenant_id, channel, external_account_id, "
    "fallback_window_seconds) VALUES (:t, 'LINE', :name, 60) RETURNING id"
)


async def _owner_pids(engine: AsyncEngine) -> set[int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE usename = 'omni_app'")
        )
        return {pid for (pid,) in rows}


async def test_an_error_between_statements_rolls_back_and_keeps_the_connection(
    single: AsyncEngine, engine: AsyncEngine, tenant: TenantId
) -> None:
    db = Database(single)
    before = await row_counts(engine)
    pids: list[int] = []

    async def refused() -> None:
        async with db.transaction(tenant) as uow:
            pids.append((await uow.execute(PID)).scalar_one())
            await uow.execute(INSERT_ACCOUNT, {"t": tenant, "name": "rolled-back"})
            raise RuntimeError("refused after the insert")

    with pytest.raises(RuntimeError, match="refused after the insert"):
        await refused()
    async with db.transaction(tenant) as uow:
        pid_after = (await uow.execute(PID)).scalar_one()
        in_transaction = uow._connection.is_in_transaction()

    assert await row_counts(engine) == before
    assert pid_after == pids[0]  # the same connection, rolled back and reused
    assert in_transaction  # the next unit of work began its own transaction


async def test_a_refused_statement_rolls_back_what_came_before_it(
    single: AsyncEngine, engine: AsyncEngine, tenant: TenantId
) -> None:
    db = Database(single)
    before = await row_counts(engine)
    pids: list[int] = []

    async def twice() -> None:
        async with db.transaction(tenant) as uow:
            pids.append((await uow.execute(PID)).scalar_one())
            await uow.execute(INSERT_ACCOUNT, {"t": tenant, "name": "twice"})
            await uow.execute(INSERT_ACCOUNT, {"t": tenant, "name": "twice"})

    with pytest.raises(asyncpg.UniqueViolationError):
        await twice()
    async with db.transaction(tenant) as uow:
        pid_after = (await uow.execute(PID)).scalar_one()

    assert await row_counts(engine) == before
    assert pid_after == pids[0]


async def test_a_unit_of_work_cancelled_mid_statement_writes_nothing_and_drops_its_connection(
    single: AsyncEngine, engine: AsyncEngine, tenant: TenantId
) -> None:
    db = Database(single)
    before = await row_counts(engine)
    started = asyncio.Event()
    pids: list[int] = []

    async def slow() -> None:
        async with db.transaction(tenant) as uow:
            pids.append((await uow.execute(PID)).scalar_one())
            await uow.execute(INSERT_ACCOUNT, {"t": tenant, "name": "cancelled"})
            started.set()
            await uow.execute(text("SELECT pg_sleep(30)"))

    task = asyncio.create_task(slow())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.2)  # the sleep is on the server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.transaction(tenant) as uow:
        pid_after = (await uow.execute(PID)).scalar_one()
    for _ in range(100):  # the closed backend leaves pg_stat_activity shortly after
        if pids[0] not in await _owner_pids(engine):
            break
        await asyncio.sleep(0.05)

    assert await row_counts(engine) == before
    assert pid_after != pids[0]  # not reused: its transaction's end was unknown
    assert pids[0] not in await _owner_pids(engine)


async def test_a_connection_closed_under_a_unit_of_work_is_reported_as_lost(
    single: AsyncEngine, engine: AsyncEngine, tenant: TenantId
) -> None:
    db = Database(single)
    before = await row_counts(engine)
    pids: list[int] = []

    async def lost_midway() -> None:
        async with db.transaction(tenant) as uow:
            pids.append((await uow.execute(PID)).scalar_one())
            await uow.execute(INSERT_ACCOUNT, {"t": tenant, "name": "lost"})
            async with engine.connect() as owner:
                await owner.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
            await uow.execute(PID)

    with pytest.raises(ConnectionLost) as lost:
        await lost_midway()
    async with db.transaction(tenant) as uow:
        pid_after = (await uow.execute(PID)).scalar_one()

    # What asyncpg raised depends on how far it had read the server's goodbye (FATAL 57P01,
    # a closed socket, or a refusal while it waits for an answer that never comes).
    cause = lost.value.__cause__
    assert isinstance(
        cause, asyncpg.PostgresError | asyncpg.InterfaceError | asyncpg.InternalClientError
    )
    assert str(lost.value).startswith(type(cause).__name__ + ": ")
    assert await row_counts(engine) == before
    assert pid_after != pids[0]


async def test_a_commit_that_fails_is_not_taken_for_a_success(
    single: AsyncEngine, engine: AsyncEngine, tenant: TenantId
) -> None:
    # A deferred constraint trigger refuses this tenant's new accounts at COMMIT only.
    name = f"omni_test_commit_{uuid.uuid4().hex[:16]}"
    async with engine.begin() as owner:
        await owner.exec_driver_sql(
            f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body$
            BEGIN
                IF NEW.tenant_id = '{tenant}'::uuid THEN
                    RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'P0001';
                END IF;
                RETURN NEW;
            END
            $body$
            """
        )
        await owner.exec_driver_sql(
            f"CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON channel_accounts "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {name}()"
        )
    db = Database(single)
    inserted: list[int] = []
    before = await row_counts(engine)

    async def refused_at_commit() -> None:
        async with db.transaction(tenant) as uow:
            row = (await uow.execute(INSERT_ACCOUNT, {"t": tenant, "name": "late"})).one()
            inserted.append(row["id"])

    try:
        with pytest.raises(asyncpg.RaiseError, match="refused at commit"):
            await refused_at_commit()
        async with db.transaction(tenant) as uow:
            still_usable = (await uow.execute(text("SELECT 1"))).scalar_one()
    finally:
        async with engine.begin() as owner:
            await owner.exec_driver_sql(f"DROP TRIGGER {name} ON channel_accounts")
            await owner.exec_driver_sql(f"DROP FUNCTION {name}()")

    assert len(inserted) == 1  # the insert itself was accepted; the COMMIT was not
    assert await row_counts(engine) == before
    assert still_usable == 1


async def test_statements_are_compiled_once_with_the_values_they_carry(
    db: Database, tenant: TenantId
) -> None:
    carried = select(literal_column("1").label("one")).where(
        bindparam("wanted", 7, type_=Numeric) == 7
    )
    named = (
        select(column("x"))
        .select_from(text("(VALUES (1), (2), (3)) AS v(x)"))
        .where(column("x") >= bindparam("least"))
    )
    async with db.transaction(tenant) as uow:
        first = await uow.execute(carried)
        second = await uow.execute(carried, {"wanted": 8})
        rows = await uow.execute(named, {"least": 2})
        with pytest.raises(KeyError, match="no value for the parameter 'least'"):
            await uow.execute(named)

    assert [tuple(r) for r in first] == [(1,)]
    assert second == []
    assert [r["x"] for r in rows] == [2, 3]
    assert [r[0] for r in rows] == [2, 3]


async def test_a_type_that_needs_result_processing_is_refused_before_it_runs(
    db: Database, tenant: TenantId
) -> None:
    statement = select(literal_column("1.5", type_=Numeric(asdecimal=False)).label("n"))
    async with db.transaction(tenant) as uow:
        with pytest.raises(TypeError, match="needs result processing: not supported"):
            await uow.execute(statement)
        sent = uow.begun

    assert sent is False  # refused before anything went to the server


def test_rows_are_taken_one_or_none_as_asked() -> None:
    assert Rows([(1,)]).one() == (1,)
    assert Rows([(1,)]).scalar_one() == 1
    assert Rows([]).one_or_none() is None
    assert Rows([]).scalar_one_or_none() is None
    assert Rows([(2, "b")]).scalar_one_or_none() == 2
    with pytest.raises(NoResultFound, match="one row expected, 0 returned"):
        Rows([]).one()
    with pytest.raises(MultipleResultsFound, match="one row expected, 2 returned"):
        Rows([(1,), (2,)]).scalar_one()
    with pytest.raises(MultipleResultsFound, match="at most one row expected, 2 returned"):
        Rows([(1,), (2,)]).one_or_none()


async def test_a_unit_of_work_of_a_tenant_sees_only_that_tenant(
    db: Database, tenant: TenantId, other_tenant: TenantId
) -> None:
    mine = await channel_account(db, tenant, external_account_id="mine")
    await channel_account(db, other_tenant, external_account_id="theirs")
    async with db.transaction(tenant) as uow:
        ids = [r["id"] for r in await uow.execute(text("SELECT id FROM channel_accounts"))]
        setting = (await uow.execute(text("SELECT current_setting('app.tenant_id')"))).scalar_one()

    assert ids == [mine.id]
    assert uuid.UUID(setting) == tenant


PREPARED_PLANS = text(
    "SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0) "
    "FROM pg_prepared_statements WHERE statement LIKE 'SELECT conversations.%'"
)


@pytest.mark.parametrize("generic_plans", [True, False])
async def test_a_unit_of_work_with_generic_plans_never_plans_a_page_for_its_values(
    single: AsyncEngine, tenant: TenantId, generic_plans: bool
) -> None:
    """PostgreSQL plans a page statement (``LIMIT $n``) for its values at every execution by
    itself; a read transaction runs the generic plan made once instead."""
    db = Database(single)
    await channel_account(db, tenant)
    async with db.transaction(tenant, generic_plans=generic_plans) as uow:
        for _ in range(8):
            page = await uow.conversations.list(PageRequest(first=25))
            assert page.items == []
        generic, custom = (await uow.execute(PREPARED_PLANS)).one()
        parallel = (await uow.execute(text("SHOW max_parallel_workers_per_gather"))).scalar_one()
    async with db.transaction(tenant) as uow:
        after = (await uow.execute(text("SHOW max_parallel_workers_per_gather"))).scalar_one()

    # The setting lasts as long as the transaction (SET LOCAL): the next one has the server's
    # (2 by default, as on the servers the tests run on).
    assert after == "2"
    if generic_plans:
        # Never a parallel plan either: a page's generic plan once started workers.
        assert (generic, custom, parallel) == (8, 0, "0")
    else:
        assert parallel == after
        # PostgreSQL's own choice: custom plans for the first five executions at least.
        assert generic + custom == 8
        assert custom >= 5
