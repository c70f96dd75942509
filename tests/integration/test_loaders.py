"""The request's dataloaders: ``load_all`` (how a page's relations are loaded) fetches only
what is not loaded yet, in one tenant-scoped statement, and keeps it as ``load()`` does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.graph.loaders import Loaders
from omni_store.persistence.contract import ContactInput
from omni_store.persistence.database import Database, UnitOfWork, listen
from omni_store.persistence.repositories import Contact
from omni_store.persistence.tenancy import TenantId
from tests.factories import channel_account

MISSING = 2**62


async def _contacts(db: Database, tenant: TenantId, names: list[str]) -> list[Contact]:
    account = await channel_account(db, tenant)
    async with db.transaction(tenant) as uow:
        return [
            await uow.contacts.upsert(account.id, ContactInput(external_user_id=n, display_name=n))
            for n in names
        ]


@pytest.fixture
def statements(app_engine: AsyncEngine) -> Iterator[list[Any]]:
    """The parameters of every statement the service's engine sends (BEGIN/COMMIT aside)."""
    seen: list[Any] = []

    def record(uow: Any, statement: str, arguments: Any, rows: Any) -> None:
        seen.append(arguments)

    stop = listen(app_engine, record)
    yield seen
    stop()


async def test_load_all_fetches_only_what_is_not_loaded_in_one_statement(
    db: Database, tenant: TenantId, statements: list[Any]
) -> None:
    a, b, c = await _contacts(db, tenant, ["a", "b", "c"])
    async with db.transaction(tenant) as uow:

        async def open_uow() -> UnitOfWork:
            return uow

        loaders = Loaders.build(open_uow)
        first = await loaders.contact_by_id.load(a.id)
        statements.clear()

        values = await loaders.contact_by_id.load_all([b.id, a.id, MISSING, b.id, c.id])
        fetched = list(statements)
        statements.clear()
        again = await loaders.contact_by_id.load_all([c.id, b.id, MISSING])
        peeked = [loaders.contact_by_id.peek(key) for key in (a.id, b.id, c.id, MISSING)]
        loaded = await loaders.contact_by_id.load(b.id)

    assert first == a
    assert values == [b, a, None, b, c]
    assert len(fetched) == 1
    assert list(fetched[0][-1]) == [b.id, MISSING, c.id]  # the ids: missing ones only
    assert again == [c, b, None]
    assert statements == []  # everything came from what load_all kept
    assert peeked == [(True, a), (True, b), (True, c), (True, None)]
    assert loaded == b


async def test_load_all_waits_for_a_load_of_the_same_key_already_in_flight(
    db: Database, tenant: TenantId, statements: list[Any]
) -> None:
    a, b = await _contacts(db, tenant, ["a", "b"])
    async with db.transaction(tenant) as uow:

        async def open_uow() -> UnitOfWork:
            return uow

        loaders = Loaders.build(open_uow)
        statements.clear()
        pending = loaders.contact_by_id.load(a.id)  # queued, not dispatched yet

        together = await asyncio.gather(pending, loaders.contact_by_id.load_all([a.id, b.id]))

    assert together == [a, [a, b]]
    assert len(statements) == 2  # load()'s batch of [a] and load_all's of [b]: none twice
    assert sorted(list(p[-1]) for p in statements) == [[a.id], [b.id]]


async def test_load_all_sees_only_the_unit_of_works_tenant(
    db: Database, tenant: TenantId, other_tenant: TenantId
) -> None:
    (mine,) = await _contacts(db, tenant, ["mine"])
    (theirs,) = await _contacts(db, other_tenant, ["theirs"])
    async with db.transaction(tenant) as uow:

        async def open_uow() -> UnitOfWork:
            return uow

        loaders = Loaders.build(open_uow)
        values = await loaders.contact_by_id.load_all([theirs.id, mine.id])
        peeked = loaders.contact_by_id.peek(theirs.id)

    assert values == [None, mine]
    assert peeked == (True, None)
