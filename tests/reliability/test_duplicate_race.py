"""Two deliveries of one message that both find its key free, then race to insert it: one
stores it, the other waits for that commit, inserts nothing, rolls back whole and answers a
replay of the winner, with the winner's rows, read in the transaction that found it."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.contract import AttachmentInput
from omni_store.persistence.database import Database, listen
from omni_store.persistence.enums import AttachmentKind
from omni_store.persistence.service import persist_message
from omni_store.persistence.tenancy import TenantId
from tests.conftest import row_counts, row_delta
from tests.factories import channel_account, inbound
from tests.reliability.harness import fetch, gated


async def test_the_delivery_that_loses_the_race_replays_the_winner_with_its_rows(
    service: AsyncEngine, owner: AsyncEngine, app_name: str
) -> None:
    db = Database(service)
    tenant = TenantId(uuid.uuid4())
    account = await channel_account(db, tenant)
    photo = AttachmentInput(kind=AttachmentKind.IMAGE, url="https://cdn.example.com/race.jpg")
    message = inbound(account_id=account.id, external_message_id="race", attachments=[photo])
    statements: list[str] = []
    listen(service, lambda _uow, sql, *_: statements.append(sql.split(None, 1)[0]))
    before = await row_counts(owner)

    # Both deliveries find the key free: one waits at the gate before its insert, the other
    # behind it, for the contact row the first has written and not yet committed.
    async with gated(owner, "messages", tenant) as gate:
        deliveries = [asyncio.create_task(persist_message(db, tenant, message)) for _ in "ab"]
        assert await _waiting(owner, app_name) == [
            ("Lock", "transactionid"),
            ("Timeout", "PgSleep"),
        ]
        await gate.open()
        results = await asyncio.gather(*deliveries)

    assert sorted(r.deduplicated for r in results) == [False, True]
    new, replay = sorted(results, key=lambda r: r.deduplicated)
    assert (replay.message_id, replay.conversation_id, replay.contact_id) == (
        new.message_id,
        new.conversation_id,
        new.contact_id,
    )
    # The loser's payload rows are the winner's as stored, read in the loser's second
    # transaction: the persist statement of each delivery, then the account with the key and
    # the stored message with its relations.
    assert new.written is not None
    assert replay.written is not None
    assert replay.written == new.written
    assert [a.url for a in replay.written.attachments] == ["https://cdn.example.com/race.jpg"]
    assert len(statements) == 4
    assert row_delta(before, await row_counts(owner)) == {
        "contacts": 1,
        "conversations": 1,
        "messages": 1,
        "attachments": 1,
    }


async def _waiting(owner: AsyncEngine, application_name: str) -> list[tuple[str, str]]:
    """What the backends of ``application_name`` wait for, once two of them wait (polled, at
    most 10 s)."""
    waits: list[tuple[str, str]] = []
    for _ in range(400):
        rows = await fetch(
            owner,
            "SELECT wait_event_type AS kind, wait_event AS what FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = :app "
            # A backend between the messages of one statement waits on its client for a
            # moment (ClientRead): not a wait of the race.
            "AND state = 'active' AND wait_event IS NOT NULL AND wait_event_type <> 'Client' "
            "ORDER BY 1, 2",
            app=application_name,
        )
        waits = [(r.kind, r.what) for r in rows]
        if len(waits) >= 2:
            return waits
        await asyncio.sleep(0.025)
    return waits
