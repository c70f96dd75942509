"""A batch (backfill) of messages: each stored exactly as persist_message would store it alone.

persist_messages writes a whole batch in one transaction with a handful of set-based
statements; these tests hold it to the single-message rules: idempotency per key (against
earlier deliveries and within the batch), contact and conversation upserts, original channel
timestamps, one refused message blocking none of the others, tenancy, and concurrent batches.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.contract import ContactInput, NormalizedMessage
from omni_store.persistence.database import Database
from omni_store.persistence.enums import AttachmentKind, ErrorCode
from omni_store.persistence.errors import (
    IdempotencyConflict,
    Mismatch,
    NotFound,
    UserInputError,
    ValidationFailed,
)
from omni_store.persistence.service import (
    MAX_BATCH,
    PersistResult,
    _persist,
    content_hash,
    persist_message,
    persist_messages,
)
from omni_store.persistence.tenancy import TenantId
from tests.conftest import row_counts, row_delta
from tests.factories import at, attachment, channel_account, inbound, outbound, tenant_rows


async def stored_view(engine: AsyncEngine, tenant: TenantId) -> dict[str, list[tuple[Any, ...]]]:
    """What a tenant has stored, without its generated ids and clock times (nor content
    hashes, which cover conversation ids): two tenants that stored the same events the same
    way have equal views."""
    queries = {
        "contacts": """
            SELECT a.external_account_id, c.external_user_id, c.display_name, c.avatar_url,
                   c.profile::text
            FROM contacts c JOIN channel_accounts a ON (a.tenant_id, a.id) = (c.tenant_id,
                 c.channel_account_id)
            WHERE c.tenant_id = :t ORDER BY 1, 2""",
        "conversations": """
            SELECT a.external_account_id, v.thread_key, v.external_thread_id, v.channel,
                   c.external_user_id, v.last_message_at
            FROM conversations v
            JOIN channel_accounts a ON (a.tenant_id, a.id) = (v.tenant_id, v.channel_account_id)
            LEFT JOIN contacts c ON (c.tenant_id, c.id) = (v.tenant_id, v.contact_id)
            WHERE v.tenant_id = :t ORDER BY 1, 2""",
        "messages": """
            SELECT a.external_account_id, m.idempotency_key, v.thread_key, c.external_user_id,
                   m.direction, m.sender_type, m.sender_external_id, m.sender_display_name,
                   m.sender_avatar_url, m.content_type, m.content_text, m.content_struct::text,
                   m.external_message_id, m.reply_to_external_message_id,
                   m.channel_timestamp, m.status
            FROM messages m
            JOIN channel_accounts a ON (a.tenant_id, a.id) = (m.tenant_id, m.channel_account_id)
            JOIN conversations v ON (v.tenant_id, v.id) = (m.tenant_id, m.conversation_id)
            LEFT JOIN contacts c ON (c.tenant_id, c.id) = (m.tenant_id, m.contact_id)
            WHERE m.tenant_id = :t ORDER BY 1, 2""",
        "attachments": """
            SELECT m.idempotency_key, f.position, f.kind, f.url, f.mime_type, f.size_bytes,
                   f.file_name, f.width, f.height, f.duration_ms, f.external_id,
                   f.metadata::text
            FROM attachments f
            JOIN messages m ON (m.tenant_id, m.id) = (f.tenant_id, f.message_id)
            WHERE f.tenant_id = :t ORDER BY 1, 2""",
    }
    async with engine.connect() as connection:
        return {
            name: [tuple(r) for r in await connection.execute(text(sql), {"t": tenant})]
            for name, sql in queries.items()
        }


def _codes(outcome: object) -> list[tuple[tuple[str, ...], ErrorCode]]:
    assert isinstance(outcome, UserInputError), outcome
    return [(e.field, e.code) for e in outcome.errors]


async def _events(db: Database, tenant: TenantId) -> list[NormalizedMessage]:
    """A realistic slice of history: two accounts, threads and fallback conversations,
    replies by conversation id and by contact, attachments, out of order."""
    line = await channel_account(db, tenant, external_account_id="oa-line")
    shop = await channel_account(db, tenant, external_account_id="shop-1", display_name="Shop")
    # An existing conversation that replies name by id.
    opened = await persist_message(
        db, tenant, inbound(account_id=line.id, external_message_id="old-1", when=at(-60))
    )
    events: list[NormalizedMessage] = []
    for i in range(40):
        account = line if i % 3 else shop
        user = f"U-{i % 5}"
        when = at(i * 7 % 90)  # out of order, across two fallback buckets at most
        if i % 4 == 0:
            events.append(
                inbound(
                    account_id=account.id,
                    external_message_id=f"in-{i}",
                    external_user_id=user,
                    display_name=f"Customer {i}",  # refreshed: the latest given wins
                    thread=None,  # fallback window
                    when=when,
                    attachments=[
                        attachment(external_id=f"f-{i}-{k}", size_bytes=1000 + k, metadata={"k": k})
                        for k in range(i % 3)
                    ],
                )
            )
        elif i % 4 == 1:
            events.append(
                inbound(
                    account_id=account.id,
                    external_message_id=f"in-{i}",
                    external_user_id=user,
                    display_name=None,  # omitted: kept
                    thread=f"thread-{i % 2}",
                    when=when,
                )
            )
        elif i % 4 == 2 and account is line:
            events.append(
                outbound(
                    account_id=line.id,
                    conversation_id=opened.conversation_id,
                    idempotency_key=f"reply-{i}",
                    when=when,
                )
            )
        else:
            events.append(
                outbound(
                    account_id=account.id,
                    external_user_id=user,
                    thread=f"thread-{i % 2}",
                    idempotency_key=f"reply-{i}",
                    when=when,
                )
            )
    return events


async def test_a_batch_stores_exactly_what_the_same_messages_one_by_one_store(
    db: Database, engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    # Given the same history for two tenants
    one_by_one = await _events(db, tenant)
    batched = await _events(db, other_tenant)
    before = await row_counts(engine)

    # When one tenant stores it message by message and the other as one batch
    singles = [await persist_message(db, tenant, m) for m in one_by_one]
    outcomes = await persist_messages(db, other_tenant, batched)

    # Then both stored the same rows, and the batch's outcomes line up with its input
    assert await stored_view(engine, other_tenant) == await stored_view(engine, tenant)
    assert len(outcomes) == len(batched) == 40
    assert all(isinstance(o, PersistResult) and not o.deduplicated for o in outcomes)
    assert [type(o) for o in outcomes] == [type(s) for s in singles]
    delta = row_delta(before, await row_counts(engine))
    assert sum(len(m.attachments) for m in batched) == 9
    # 9 contacts and 11 conversations per tenant besides those of "old-1".
    assert delta == {"contacts": 2 * 9, "conversations": 2 * 11, "messages": 80, "attachments": 18}
    rows = await tenant_rows(engine, other_tenant)
    by_id = {r[1]: r for r in rows["messages"]}
    for message, outcome in zip(batched, outcomes, strict=True):
        assert isinstance(outcome, PersistResult)
        row = by_id[outcome.message_id]
        assert row[14] == message.key  # idempotency_key
        assert row[3] == outcome.conversation_id
        assert row[4] == outcome.contact_id
        assert row[16] == message.channel_timestamp  # the original channel time, kept


async def test_a_batch_delivered_again_is_all_replays_and_writes_nothing(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a batch that was stored
    events = await _events(db, tenant)
    first = await persist_messages(db, tenant, events)
    stored = await tenant_rows(engine, tenant)
    counts = await row_counts(engine)

    # When the same batch arrives again, shuffled
    order = list(range(len(events)))
    random.Random(7).shuffle(order)
    second = await persist_messages(db, tenant, [events[i] for i in order])

    # Then every message is a replay of what the first stored, and nothing changed at all
    for position, i in enumerate(order):
        expected = first[i]
        assert isinstance(expected, PersistResult)
        assert second[position] == PersistResult(
            expected.message_id, expected.conversation_id, expected.contact_id, True
        )
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, tenant) == stored


async def test_a_key_twice_in_one_batch_is_stored_once(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a batch holding a message twice, and another key with two different contents
    account = await channel_account(db, tenant)
    event = inbound(account_id=account.id, external_message_id="m-1", text="hello")
    first_version = inbound(account_id=account.id, external_message_id="m-2", text="first")
    second_version = inbound(account_id=account.id, external_message_id="m-2", text="second")
    before = await row_counts(engine)

    # When it is stored
    outcomes = await persist_messages(db, tenant, [event, first_version, event, second_version])

    # Then the repeat is a replay of the first, the other content a conflict naming the stored
    # message, and each key has one row
    stored, version, replay, conflict = outcomes
    assert isinstance(stored, PersistResult)
    assert stored.deduplicated is False
    assert isinstance(version, PersistResult)
    assert version.deduplicated is False
    assert replay == PersistResult(
        stored.message_id, stored.conversation_id, stored.contact_id, True
    )
    assert isinstance(conflict, IdempotencyConflict)
    assert conflict.existing_message_id == version.message_id
    assert _codes(conflict) == [(("externalMessageId",), ErrorCode.IDEMPOTENCY_CONFLICT)]
    assert row_delta(before, await row_counts(engine)) == {
        "contacts": 1,
        "conversations": 1,
        "messages": 2,
    }
    view = await stored_view(engine, tenant)
    assert [(m[1], m[10]) for m in view["messages"]] == [("m-1", "hello"), ("m-2", "first")]


async def test_refused_messages_block_none_of_the_others(
    db: Database, engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    # Given a batch with good messages between malformed ones, unknown and foreign references
    account = await channel_account(db, tenant)
    second = await channel_account(db, tenant, external_account_id="oa-2")
    foreign_account = await channel_account(db, other_tenant)
    foreign = await persist_message(db, other_tenant, inbound(account_id=foreign_account.id))
    other_account_conversation = await persist_message(db, tenant, inbound(account_id=second.id))
    earlier = await persist_message(
        db, tenant, inbound(account_id=account.id, external_message_id="earlier", text="kept")
    )
    keyless = inbound(account_id=account.id)
    keyless = NormalizedMessage(**{**_fields(keyless), "external_message_id": None})
    keys_before = {m[1] for m in (await stored_view(engine, tenant))["messages"]}
    batch = [
        inbound(account_id=account.id, external_message_id="good-1", when=at(1)),
        inbound(account_id=account.id, external_message_id="bad", text=" ", when=at(2)),
        inbound(account_id=foreign_account.id, external_message_id="foreign-account"),
        outbound(account_id=account.id, conversation_id=foreign.conversation_id),
        outbound(account_id=account.id, conversation_id=other_account_conversation.conversation_id),
        outbound(account_id=account.id, conversation_id=2**62),
        keyless,
        NormalizedMessage(
            channel_account_id=account.id,
            direction="SIDEWAYS",
            channel_timestamp=at(3),
            content=None,
            external_message_id="garbage",
        ),
        inbound(account_id=account.id, external_message_id="earlier", text="changed"),
        inbound(account_id=account.id, external_message_id="good-2", when=at(4)),
    ]
    before = await row_counts(engine)
    foreign_rows = await tenant_rows(engine, other_tenant)

    # When it is stored
    outcomes = await persist_messages(db, tenant, batch)

    # Then each refused message has its own errors, and exactly the two good ones were written
    assert [type(o).__name__ for o in outcomes] == [
        "PersistResult",
        "ValidationFailed",
        "NotFound",
        "NotFound",
        "Mismatch",
        "NotFound",
        "ValidationFailed",
        "ValidationFailed",
        "IdempotencyConflict",
        "PersistResult",
    ]
    assert _codes(outcomes[1]) == [(("content", "text"), ErrorCode.REQUIRED)]
    assert _codes(outcomes[2]) == [(("channelAccountId",), ErrorCode.NOT_FOUND)]
    assert _codes(outcomes[3]) == [(("conversationId",), ErrorCode.NOT_FOUND)]
    assert isinstance(outcomes[4], Mismatch)
    assert _codes(outcomes[4]) == [(("conversationId",), ErrorCode.MISMATCH)]
    assert isinstance(outcomes[5], NotFound)
    assert _codes(outcomes[6]) == [(("idempotencyKey",), ErrorCode.REQUIRED)]
    assert _codes(outcomes[7]) == [
        (("direction",), ErrorCode.INVALID),
        (("content",), ErrorCode.REQUIRED),
    ]
    conflict = outcomes[8]
    assert isinstance(conflict, IdempotencyConflict)
    assert conflict.existing_message_id == earlier.message_id
    assert row_delta(before, await row_counts(engine)) == {"messages": 2}
    assert await tenant_rows(engine, other_tenant) == foreign_rows
    view = await stored_view(engine, tenant)
    assert {m[1] for m in view["messages"]} == keys_before | {"good-1", "good-2"}
    assert {m[1]: m[10] for m in view["messages"]}["earlier"] == "kept"


async def test_a_batch_over_the_limit_is_refused_whole(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    account = await channel_account(db, tenant)
    too_many = [
        inbound(account_id=account.id, external_message_id=f"m-{i}") for i in range(MAX_BATCH + 1)
    ]
    before = await row_counts(engine)

    with pytest.raises(ValidationFailed) as refused:
        await persist_messages(db, tenant, too_many)

    assert _codes(refused.value) == [(("messages",), ErrorCode.TOO_MANY)]
    assert await row_counts(engine) == before


async def test_the_largest_batch_is_stored_whole(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    account = await channel_account(db, tenant)
    batch = [
        inbound(
            account_id=account.id,
            external_message_id=f"m-{i}",
            external_user_id=f"U-{i % 50}",
            thread=None,
            when=at(i / 10),
            attachments=[attachment(external_id=f"f-{i}-{k}") for k in range(20 if i == 0 else 1)],
        )
        for i in range(MAX_BATCH)
    ]
    before = await row_counts(engine)

    outcomes = await persist_messages(db, tenant, batch)

    assert len({o.message_id for o in outcomes if isinstance(o, PersistResult)}) == MAX_BATCH
    assert row_delta(before, await row_counts(engine)) == {
        "contacts": 50,
        "conversations": 50,
        "messages": MAX_BATCH,
        "attachments": 20 + MAX_BATCH - 1,
    }


async def test_conversation_activity_is_the_latest_time_in_or_before_the_batch(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a thread whose latest message is at minute 50, and a reply target at minute 10
    account = await channel_account(db, tenant)
    thread = await persist_message(
        db, tenant, inbound(account_id=account.id, thread="t-1", when=at(50))
    )
    named = await persist_message(
        db, tenant, inbound(account_id=account.id, thread="t-2", when=at(10))
    )

    # When a batch brings older history to the first and newer and older replies to the second
    await persist_messages(
        db,
        tenant,
        [
            inbound(account_id=account.id, thread="t-1", when=at(5)),
            inbound(account_id=account.id, thread="t-1", when=at(40)),
            outbound(account_id=account.id, conversation_id=named.conversation_id, when=at(30)),
            outbound(account_id=account.id, conversation_id=named.conversation_id, when=at(20)),
            inbound(account_id=account.id, thread="t-3", when=at(7)),
            inbound(account_id=account.id, thread="t-3", when=at(3)),
        ],
    )

    # Then last_message_at only moved forward, to the latest of each conversation
    async with db.transaction(tenant) as uow:
        found = await uow.conversations.get_many([thread.conversation_id, named.conversation_id])
    assert found[thread.conversation_id].last_message_at == at(50)
    assert found[named.conversation_id].last_message_at == at(30)
    view = await stored_view(engine, tenant)
    assert [(c[1], c[5]) for c in view["conversations"]] == [
        ("t:t-1", at(50)),
        ("t:t-2", at(30)),
        ("t:t-3", at(7)),
    ]


async def test_a_contact_in_several_messages_of_a_batch_is_refreshed_in_order(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    account = await channel_account(db, tenant)
    await persist_message(db, tenant, inbound(account_id=account.id, display_name="Old name"))
    base = inbound(account_id=account.id)
    assert base.contact is not None

    def said(key: str, contact: ContactInput) -> NormalizedMessage:
        return NormalizedMessage(
            **{**_fields(base), "external_message_id": key, "contact": contact}
        )

    await persist_messages(
        db,
        tenant,
        [
            said("a", ContactInput(external_user_id="U-1", display_name="Somchai J.")),
            said("b", ContactInput(external_user_id="U-1", avatar_url="https://x.example/a.png")),
            said("c", ContactInput(external_user_id="U-1", profile={"tier": "gold"})),
        ],
    )

    view = await stored_view(engine, tenant)
    assert view["contacts"] == [
        ("oa-1", "U-1", "Somchai J.", "https://x.example/a.png", '{"tier": "gold"}')
    ]


def _fields(message: NormalizedMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__dataclass_fields__}


async def test_a_batch_cannot_reach_another_tenants_rows(
    db: Database, engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    # Given another tenant's account, conversation and stored key
    theirs = await channel_account(db, other_tenant)
    their_message = await persist_message(
        db, other_tenant, inbound(account_id=theirs.id, external_message_id="shared-key")
    )
    their_rows = await tenant_rows(engine, other_tenant)
    mine = await channel_account(db, tenant)
    before = await row_counts(engine)

    # When this tenant's batch names them, and uses the same key on its own account
    outcomes = await persist_messages(
        db,
        tenant,
        [
            inbound(account_id=theirs.id, external_message_id="shared-key"),
            outbound(account_id=mine.id, conversation_id=their_message.conversation_id),
            inbound(account_id=mine.id, external_message_id="shared-key"),
        ],
    )

    # Then their rows are neither seen nor touched; the same key is a new message here
    assert _codes(outcomes[0]) == [(("channelAccountId",), ErrorCode.NOT_FOUND)]
    assert _codes(outcomes[1]) == [(("conversationId",), ErrorCode.NOT_FOUND)]
    assert isinstance(outcomes[2], PersistResult)
    assert outcomes[2].deduplicated is False
    assert outcomes[2].message_id != their_message.message_id
    assert await tenant_rows(engine, other_tenant) == their_rows
    assert row_delta(before, await row_counts(engine)) == {
        "contacts": 1,
        "conversations": 1,
        "messages": 1,
    }


async def test_concurrent_overlapping_batches_store_each_message_once(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given 6 deliveries of overlapping, shuffled slices of one history, plus single retries
    account = await channel_account(db, tenant)
    history = [
        inbound(
            account_id=account.id,
            external_message_id=f"m-{i}",
            external_user_id=f"U-{i % 7}",
            thread=None if i % 2 else f"t-{i % 5}",
            when=at(i),
            attachments=[attachment(external_id=f"f-{i}")] if i % 4 == 0 else (),
        )
        for i in range(120)
    ]
    batches = []
    for n in range(6):
        rng = random.Random(n)
        part = rng.sample(history, 80)
        batches.append(part)
    before = await row_counts(engine)

    # When all arrive at once
    results = await asyncio.gather(
        *(persist_messages(db, tenant, b) for b in batches),
        *(persist_message(db, tenant, history[i]) for i in range(0, 120, 10)),
    )

    # Then each key has exactly one message, and every delivery of it got that message's id
    ids: dict[str, set[int]] = {}
    for batch, outcomes in zip(batches, results[:6], strict=True):
        for message, outcome in zip(batch, outcomes, strict=True):
            assert isinstance(outcome, PersistResult), outcome
            ids.setdefault(message.key, set()).add(outcome.message_id)
    for i, single in zip(range(0, 120, 10), results[6:], strict=True):
        assert isinstance(single, PersistResult)
        ids.setdefault(history[i].key, set()).add(single.message_id)
    assert all(len(found) == 1 for found in ids.values())
    delta = row_delta(before, await row_counts(engine))
    view = await stored_view(engine, tenant)
    assert delta["messages"] == len(ids) == len(view["messages"])
    assert delta["attachments"] == sum(1 for i in range(120) if i % 4 == 0 and f"m-{i}" in ids)
    assert delta["contacts"] == len({f"U-{int(k[2:]) % 7}" for k in ids}) == 7


async def test_a_batch_that_loses_a_race_stores_the_rest_and_replays_the_winner(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given another delivery of one of the batch's messages, inserted but not yet committed
    account = await channel_account(db, tenant)
    contested = inbound(account_id=account.id, external_message_id="contested", when=at(1))
    others = [
        inbound(account_id=account.id, external_message_id=f"m-{i}", when=at(2 + i))
        for i in range(3)
    ]
    before = await row_counts(engine)
    async with db.transaction(tenant) as uow:
        winner = await _persist(uow, contested, content_hash(contested))
        # When the batch runs meanwhile (it waits for that transaction on the key)
        batch = asyncio.create_task(persist_messages(db, tenant, [*others, contested]))
        await _waiting_on_a_lock(engine)
    outcomes = await batch

    # Then the batch rolled back, ran again, and got the winner's message as a replay
    assert outcomes[3] == PersistResult(
        winner.message_id, winner.conversation_id, winner.contact_id, True
    )
    assert all(isinstance(o, PersistResult) and not o.deduplicated for o in outcomes[:3])
    assert row_delta(before, await row_counts(engine)) == {
        "contacts": 1,
        "conversations": 1,
        "messages": 4,
    }


async def _waiting_on_a_lock(engine: AsyncEngine) -> None:
    for _ in range(500):
        async with engine.connect() as connection:
            waiting = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the batch never waited on the other delivery")


@asynccontextmanager
async def deadlocks(engine: AsyncEngine, tenant: TenantId, times: int) -> AsyncIterator[None]:
    """The next ``times`` inserts of this tenant's messages fail as a deadlock victim would."""
    name = f"omni_test_deadlock_{uuid.uuid4().hex[:16]}"
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f"CREATE SEQUENCE {name}_fuse")
            await connection.exec_driver_sql(
                f"""
                CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
                AS $body$
                BEGIN
                    IF NEW.tenant_id = '{tenant}'::uuid AND nextval('{name}_fuse') <= {times}
                    THEN
                        RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01';
                    END IF;
                    RETURN NEW;
                END
                $body$
                """
            )
            await connection.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE INSERT ON messages "
                f"FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        yield
    finally:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON messages")
            await connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")
            await connection.exec_driver_sql(f"DROP SEQUENCE IF EXISTS {name}_fuse")


async def test_a_deadlocked_batch_runs_again_by_itself(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    account = await channel_account(db, tenant)
    batch = [inbound(account_id=account.id, external_message_id=f"m-{i}") for i in range(3)]
    before = await row_counts(engine)

    async with deadlocks(engine, tenant, times=2):
        outcomes = await persist_messages(db, tenant, batch)

    assert all(isinstance(o, PersistResult) and not o.deduplicated for o in outcomes)
    assert row_delta(before, await row_counts(engine)) == {
        "contacts": 1,
        "conversations": 1,
        "messages": 3,
    }


async def test_a_batch_that_keeps_deadlocking_fails_whole_and_writes_nothing(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    account = await channel_account(db, tenant)
    batch = [inbound(account_id=account.id, external_message_id=f"m-{i}") for i in range(3)]
    before = await row_counts(engine)

    async with deadlocks(engine, tenant, times=3):
        with pytest.raises(asyncpg.DeadlockDetectedError) as failed:
            await persist_messages(db, tenant, batch)

    assert failed.value.sqlstate == "40P01"
    assert await row_counts(engine) == before


async def test_an_empty_batch_writes_nothing(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    before = await row_counts(engine)
    assert await persist_messages(db, tenant, []) == []
    assert await row_counts(engine) == before


async def test_attachments_of_a_batch_keep_their_order_and_fields(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    account = await channel_account(db, tenant)
    files = [
        attachment(
            kind=AttachmentKind.VIDEO,
            url=f"https://cdn.example.com/{k}.mp4",
            external_id=f"v-{k}",
            mime_type="video/mp4",
            size_bytes=2**40 - k,
            file_name=f"clip {k}.mp4",
            width=1920,
            height=1080,
            duration_ms=7 * 24 * 3600 * 1000 - k,
            metadata={"ช่อง": "ไลน์", "k": [k, None]},
        )
        for k in range(3)
    ]
    outcomes = await persist_messages(
        db, tenant, [inbound(account_id=account.id, attachments=files, when=at(0) + timedelta(0))]
    )

    stored = outcomes[0]
    assert isinstance(stored, PersistResult)
    async with db.transaction(tenant) as uow:
        rows = (await uow.attachments.by_messages([stored.message_id]))[stored.message_id]
    assert [
        (
            a.position,
            a.kind,
            a.url,
            a.external_id,
            a.mime_type,
            a.size_bytes,
            a.file_name,
            a.width,
            a.height,
            a.duration_ms,
            a.metadata,
        )
        for a in rows
    ] == [
        (
            k,
            "VIDEO",
            f"https://cdn.example.com/{k}.mp4",
            f"v-{k}",
            "video/mp4",
            2**40 - k,
            f"clip {k}.mp4",
            1920,
            1080,
            7 * 24 * 3600 * 1000 - k,
            {"ช่อง": "ไลน์", "k": [k, None]},
        )
        for k in range(3)
    ]


async def test_batches_share_an_account_until_one_takes_it_exclusively(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a batch writer holding its account shared
    account = await channel_account(db, tenant)
    async with db.transaction(tenant) as first:
        assert list(await first.channel_accounts.lock_many([account.id])) == [account.id]

        # Then another shares it at once, and a single message is stored meanwhile
        async with db.transaction(tenant) as second:
            assert list(await second.channel_accounts.lock_many([account.id])) == [account.id]
        single = await asyncio.wait_for(
            persist_message(db, tenant, inbound(account_id=account.id)), timeout=5
        )
        assert single.deduplicated is False

        # But an exclusive taker (a batch on its last attempt) waits for the sharer to commit
        async def exclusive() -> list[int]:
            async with db.transaction(tenant) as uow:
                return list(await uow.channel_accounts.lock_many([account.id], exclusive=True))

        taker = asyncio.create_task(exclusive())
        await _waiting_on_a_lock(engine)
        assert not taker.done()
    assert await asyncio.wait_for(taker, timeout=5) == [account.id]

    # And while it is held exclusively, single messages are still stored
    async with db.transaction(tenant) as holder:
        await holder.channel_accounts.lock_many([account.id], exclusive=True)
        single = await asyncio.wait_for(
            persist_message(db, tenant, inbound(account_id=account.id)), timeout=5
        )
        assert single.deduplicated is False


async def test_crossing_batches_do_not_deadlock(
    db: Database, engine: AsyncEngine, tenant: TenantId, caplog: pytest.LogCaptureFixture
) -> None:
    # Given two groups of conversations, and batches that each bring messages found by thread
    # to one group and replies naming the other, half of them in each direction
    account = await channel_account(db, tenant)
    groups = {
        name: [
            (
                await persist_message(
                    db, tenant, inbound(account_id=account.id, thread=t, external_user_id=f"U-{t}")
                )
            ).conversation_id
            for t in (f"{name}-{k}" for k in range(10))
        ]
        for name in ("p", "q")
    }

    def crossing(n: int, threads: str, replies: str) -> list[NormalizedMessage]:
        return [
            *(
                inbound(
                    account_id=account.id,
                    thread=f"{threads}-{k}",
                    external_user_id=f"U-{threads}-{k}",  # no contact shared across groups
                    when=at(n),
                )
                for k in range(10)
            ),
            *(
                outbound(account_id=account.id, conversation_id=c, when=at(n))
                for c in groups[replies]
            ),
        ]

    batches = [crossing(n, "p", "q") if n % 2 else crossing(n, "q", "p") for n in range(1, 21)]
    before = await row_counts(engine)

    # When they all run at once
    with caplog.at_level(logging.INFO, logger="omni_store.persistence.service"):
        results = await asyncio.gather(*(persist_messages(db, tenant, b) for b in batches))

    # Then all are stored, and PostgreSQL never had to break a deadlock between them
    assert all(isinstance(o, PersistResult) for outcomes in results for o in outcomes)
    assert row_delta(before, await row_counts(engine)) == {"messages": 400}
    assert [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()] == []
    async with db.transaction(tenant) as uow:
        found = await uow.conversations.get_many(groups["p"] + groups["q"])
    assert {c.last_message_at for c in found.values()} == {at(20)}
