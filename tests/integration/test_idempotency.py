"""Idempotent message insert: a webhook delivered twice (or twenty times at once) is one message.

Key = ``idempotencyKey`` when given, else ``externalMessageId``; scope = (tenant, channel
account, key). A replay writes nothing and returns the stored ids with ``deduplicated=True``;
a replay with other content is an :class:`IdempotencyConflict` carrying the stored id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from datetime import timedelta, timezone

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.contract import ContactInput, ContentInput, NormalizedMessage
from omni_store.persistence.cursors import PageRequest
from omni_store.persistence.database import Database
from omni_store.persistence.enums import AttachmentKind, ContentType, ErrorCode
from omni_store.persistence.errors import IdempotencyConflict
from omni_store.persistence.service import PersistResult, persist_message
from omni_store.persistence.tenancy import TenantId
from tests.conftest import row_counts, row_delta
from tests.factories import at, attachment, channel_account, inbound, outbound, tenant_rows


async def test_same_event_twice_stores_one_message_and_the_replay_writes_nothing(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given an inbound event that was stored once
    account = await channel_account(db, tenant)
    event = inbound(
        account_id=account.id,
        external_message_id="line-msg-1",
        attachments=[attachment(external_id="media-1")],
    )
    before_first = await row_counts(engine)
    first = await persist_message(db, tenant, event)
    after_first = await row_counts(engine)
    stored = await tenant_rows(engine, tenant)

    # When the channel delivers the same event again
    second = await persist_message(db, tenant, event)

    # Then the second delivery returns the stored ids, flagged as a replay, and writes nothing
    assert first.deduplicated is False
    assert second == PersistResult(
        message_id=first.message_id,
        conversation_id=first.conversation_id,
        contact_id=first.contact_id,
        deduplicated=True,
    )
    assert row_delta(before_first, after_first) == {
        "contacts": 1,
        "conversations": 1,
        "messages": 1,
        "attachments": 1,
    }
    assert await row_counts(engine) == after_first
    assert await tenant_rows(engine, tenant) == stored
    async with db.transaction(tenant) as uow:
        page = await uow.messages.timeline(first.conversation_id, PageRequest(first=10))
    assert [m.id for m in page.items] == [first.message_id]


async def test_replay_with_refreshed_contact_profile_is_still_a_replay_and_writes_nothing(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a stored event
    account = await channel_account(db, tenant)
    event = inbound(account_id=account.id, external_message_id="line-msg-1", display_name="Som")
    first = await persist_message(db, tenant, event)
    counts = await row_counts(engine)
    stored = await tenant_rows(engine, tenant)

    # When it is re-delivered with another profile name and the same instant in another offset
    bangkok = timezone(timedelta(hours=7))
    assert event.channel_timestamp is not None
    replay = dataclasses.replace(
        event,
        contact=ContactInput(external_user_id="U-1", display_name="Somchai J."),
        channel_timestamp=event.channel_timestamp.astimezone(bangkok),
    )
    second = await persist_message(db, tenant, replay)

    # Then it is the same message (profile data is not part of the message) and nothing changed
    assert second == dataclasses.replace(first, deduplicated=True)
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, tenant) == stored


async def test_twenty_concurrent_deliveries_of_one_event_store_exactly_one_message(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a new contact's event, delivered 20 times at once (channel retries racing)
    account = await channel_account(db, tenant)
    event = inbound(account_id=account.id, external_message_id="line-msg-burst")
    before = await row_counts(engine)

    # When all deliveries are persisted concurrently
    results = await asyncio.gather(*(persist_message(db, tenant, event) for _ in range(20)))

    # Then exactly one message (and one contact and conversation) exists, every delivery got
    # its id, and exactly one of them is the delivery that stored it
    assert len(results) == 20
    assert len({r.message_id for r in results}) == 1
    assert len({r.conversation_id for r in results}) == 1
    assert len({r.contact_id for r in results}) == 1
    assert [r.deduplicated for r in results].count(False) == 1
    assert row_delta(before, await row_counts(engine)) == {
        "contacts": 1,
        "conversations": 1,
        "messages": 1,
    }
    async with db.transaction(tenant) as uow:
        message = await uow.messages.get(results[0].message_id)
    assert message is not None
    assert message.external_message_id == "line-msg-burst"
    assert message.conversation_id == results[0].conversation_id


async def test_concurrent_retries_of_several_events_of_one_contact_and_thread(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given 6 distinct events of one contact in one thread (3 of them also without a thread id,
    # i.e. by the fallback rule, all in one time bucket), each delivered 4 times
    account = await channel_account(db, tenant)
    threaded = [
        inbound(account_id=account.id, external_message_id=f"t-{i}", when=at(i), text=f"t{i}")
        for i in range(3)
    ]
    unthreaded = [
        inbound(
            account_id=account.id,
            external_message_id=f"u-{i}",
            thread=None,
            when=at(10 + i),
            text=f"u{i}",
        )
        for i in range(3)
    ]
    events = threaded + unthreaded
    deliveries = [event for event in events for _ in range(4)]
    random.Random(38).shuffle(deliveries)
    before = await row_counts(engine)

    # When all 24 deliveries race
    results = await asyncio.gather(*(persist_message(db, tenant, e) for e in deliveries))

    # Then each event is one message, reported once as new; one contact; one conversation for
    # the thread and one for the fallback bucket
    by_event: dict[str, list[PersistResult]] = {}
    for event, result in zip(deliveries, results, strict=True):
        assert event.external_message_id is not None
        by_event.setdefault(event.external_message_id, []).append(result)
    assert sorted(by_event) == ["t-0", "t-1", "t-2", "u-0", "u-1", "u-2"]
    for outcomes in by_event.values():
        assert len({r.message_id for r in outcomes}) == 1
        assert [r.deduplicated for r in outcomes].count(False) == 1
    message_ids = {outcomes[0].message_id for outcomes in by_event.values()}
    assert len(message_ids) == 6
    assert len({r.contact_id for r in results}) == 1
    assert len({by_event[f"t-{i}"][0].conversation_id for i in range(3)}) == 1
    assert len({by_event[f"u-{i}"][0].conversation_id for i in range(3)}) == 1
    assert by_event["t-0"][0].conversation_id != by_event["u-0"][0].conversation_id
    assert row_delta(before, await row_counts(engine)) == {
        "contacts": 1,
        "conversations": 2,
        "messages": 6,
    }
    async with db.transaction(tenant) as uow:
        conversations = await uow.conversations.get_many(
            [by_event["t-0"][0].conversation_id, by_event["u-0"][0].conversation_id]
        )
        thread_page = await uow.messages.timeline(
            by_event["t-0"][0].conversation_id, PageRequest(first=10)
        )
    assert [m.external_message_id for m in thread_page.items] == ["t-0", "t-1", "t-2"]
    assert conversations[by_event["t-0"][0].conversation_id].last_message_at == at(2)
    assert conversations[by_event["u-0"][0].conversation_id].last_message_at == at(12)


async def test_concurrent_deliveries_with_conflicting_content_store_one_and_report_the_rest(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given two different contents under one key, each delivered 5 times at once
    account = await channel_account(db, tenant)
    one = inbound(account_id=account.id, external_message_id="dup", text="first text")
    other = dataclasses.replace(one, content=ContentInput(type=ContentType.TEXT, text="other text"))
    deliveries = [one, other] * 5
    before = await row_counts(engine)

    # When they race
    outcomes = await asyncio.gather(
        *(persist_message(db, tenant, e) for e in deliveries), return_exceptions=True
    )

    # Then one message is stored; the deliveries of its content got its id (one of them as
    # new), those of the other content an IdempotencyConflict carrying that same id
    assert row_delta(before, await row_counts(engine)) == {
        "contacts": 1,
        "conversations": 1,
        "messages": 1,
    }
    results = [o for o in outcomes if isinstance(o, PersistResult)]
    conflicts = [o for o in outcomes if isinstance(o, IdempotencyConflict)]
    assert len(results) == 5
    assert len(conflicts) == 5
    stored_id = results[0].message_id
    assert {r.message_id for r in results} == {stored_id}
    assert [r.deduplicated for r in results].count(False) == 1
    assert {c.existing_message_id for c in conflicts} == {stored_id}
    async with db.transaction(tenant) as uow:
        message = await uow.messages.get(stored_id)
    assert message is not None
    winner = deliveries[outcomes.index(results[0])]
    assert winner.content is not None
    assert message.content_text == winner.content.text


def _other_text(m: NormalizedMessage) -> NormalizedMessage:
    return dataclasses.replace(m, content=ContentInput(type=ContentType.TEXT, text="edited text"))


def _other_time(m: NormalizedMessage) -> NormalizedMessage:
    return dataclasses.replace(m, channel_timestamp=at(5))


def _other_thread(m: NormalizedMessage) -> NormalizedMessage:
    return dataclasses.replace(m, external_thread_id="thread-2")


def _other_user(m: NormalizedMessage) -> NormalizedMessage:
    return dataclasses.replace(m, contact=ContactInput(external_user_id="U-2"))


def _other_attachments(m: NormalizedMessage) -> NormalizedMessage:
    return dataclasses.replace(m, attachments=(attachment(kind=AttachmentKind.FILE),))


@pytest.mark.parametrize(
    "change", [_other_text, _other_time, _other_thread, _other_user, _other_attachments]
)
async def test_replay_with_different_content_is_a_conflict_and_changes_nothing(
    db: Database,
    engine: AsyncEngine,
    tenant: TenantId,
    change: Callable[[NormalizedMessage], NormalizedMessage],
) -> None:
    # Given a stored event
    account = await channel_account(db, tenant)
    event = inbound(account_id=account.id, external_message_id="line-msg-1", when=at(0))
    first = await persist_message(db, tenant, event)
    counts = await row_counts(engine)
    stored = await tenant_rows(engine, tenant)

    # When the same key comes back with other content
    with pytest.raises(IdempotencyConflict) as raised:
        await persist_message(db, tenant, change(event))

    # Then the conflict carries the stored id and the key's field, and nothing changed
    assert raised.value.existing_message_id == first.message_id
    assert [(e.field, e.code) for e in raised.value.errors] == [
        (("externalMessageId",), ErrorCode.IDEMPOTENCY_CONFLICT)
    ]
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, tenant) == stored


async def test_outbound_replay_is_deduplicated_and_a_conflict_names_the_idempotency_key(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given an agent's reply stored under the sender's idempotency key
    account = await channel_account(db, tenant)
    opened = await persist_message(db, tenant, inbound(account_id=account.id))
    reply = outbound(
        account_id=account.id, conversation_id=opened.conversation_id, idempotency_key="send-1"
    )
    first = await persist_message(db, tenant, reply)
    counts = await row_counts(engine)
    stored = await tenant_rows(engine, tenant)

    # When the same reply is persisted again, then with another text
    again = await persist_message(db, tenant, reply)
    with pytest.raises(IdempotencyConflict) as raised:
        await persist_message(db, tenant, _other_text(reply))

    # Then the first is a replay and the second a conflict on idempotencyKey; nothing changed
    assert again == dataclasses.replace(first, deduplicated=True)
    assert raised.value.existing_message_id == first.message_id
    assert [(e.field, e.code) for e in raised.value.errors] == [
        (("idempotencyKey",), ErrorCode.IDEMPOTENCY_CONFLICT)
    ]
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, tenant) == stored


async def test_key_is_the_idempotency_key_when_given_else_the_external_message_id(
    db: Database, tenant: TenantId
) -> None:
    # Given one event with both ids and one with only the channel's message id
    account = await channel_account(db, tenant)
    keyed = inbound(account_id=account.id, idempotency_key="hook-1", external_message_id="m-1")
    plain = inbound(account_id=account.id, external_message_id="m-2")

    # When both are stored
    keyed_result = await persist_message(db, tenant, keyed)
    plain_result = await persist_message(db, tenant, plain)

    # Then the stored keys are the idempotency key and the external message id respectively
    async with db.transaction(tenant) as uow:
        stored = await uow.messages.get_many([keyed_result.message_id, plain_result.message_id])
        found = await uow.messages.find_replays([(account.id, "hook-1"), (account.id, "m-1")])
        by_idempotency_key = found.get((account.id, "hook-1"))
        by_external_id = found.get((account.id, "m-1"))
    assert (stored[keyed_result.message_id].idempotency_key,) == ("hook-1",)
    assert stored[keyed_result.message_id].external_message_id == "m-1"
    assert stored[plain_result.message_id].idempotency_key == "m-2"
    assert stored[plain_result.message_id].external_message_id == "m-2"
    assert by_idempotency_key is not None
    assert by_idempotency_key.message_id == keyed_result.message_id
    assert by_external_id is None


async def test_same_external_message_id_under_different_idempotency_keys_is_two_messages(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given two events whose connector keys differ but whose channel message id is the same
    account = await channel_account(db, tenant)
    one = inbound(account_id=account.id, idempotency_key="hook-1", external_message_id="m-1")
    two = dataclasses.replace(one, idempotency_key="hook-2")
    before = await row_counts(engine)

    # When both are stored
    first = await persist_message(db, tenant, one)
    second = await persist_message(db, tenant, two)

    # Then the idempotency key decides: two messages
    assert (first.deduplicated, second.deduplicated) == (False, False)
    assert first.message_id != second.message_id
    assert row_delta(before, await row_counts(engine))["messages"] == 2


async def test_same_external_message_id_on_two_channel_accounts_of_one_tenant_is_two_messages(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given two accounts of one tenant (two LINE OAs) and one channel message id on both
    shop = await channel_account(db, tenant, external_account_id="oa-shop")
    support = await channel_account(db, tenant, external_account_id="oa-support")
    before = await row_counts(engine)

    # When each account receives an event with that id
    on_shop = await persist_message(
        db, tenant, inbound(account_id=shop.id, external_message_id="m-1")
    )
    on_support = await persist_message(
        db, tenant, inbound(account_id=support.id, external_message_id="m-1")
    )

    # Then they are two messages, in two conversations of two contacts
    assert (on_shop.deduplicated, on_support.deduplicated) == (False, False)
    assert on_shop.message_id != on_support.message_id
    assert on_shop.conversation_id != on_support.conversation_id
    assert on_shop.contact_id != on_support.contact_id
    assert row_delta(before, await row_counts(engine)) == {
        "contacts": 2,
        "conversations": 2,
        "messages": 2,
    }
    async with db.transaction(tenant) as uow:
        stored = await uow.messages.get_many([on_shop.message_id, on_support.message_id])
    assert stored[on_shop.message_id].channel_account_id == shop.id
    assert stored[on_support.message_id].channel_account_id == support.id


async def test_same_external_message_id_on_two_tenants_is_two_messages(
    db: Database, engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    # Given two tenants with look-alike accounts receiving the very same event
    mine = await channel_account(db, tenant)
    theirs = await channel_account(db, other_tenant)
    before = await row_counts(engine)

    # When each tenant stores it
    for_mine = await persist_message(
        db, tenant, inbound(account_id=mine.id, external_message_id="m-1")
    )
    for_theirs = await persist_message(
        db, other_tenant, inbound(account_id=theirs.id, external_message_id="m-1")
    )

    # Then each tenant has its own message
    assert (for_mine.deduplicated, for_theirs.deduplicated) == (False, False)
    assert for_mine.message_id != for_theirs.message_id
    assert row_delta(before, await row_counts(engine)) == {
        "contacts": 2,
        "conversations": 2,
        "messages": 2,
    }
    async with db.transaction(tenant) as uow:
        assert list(await uow.messages.get_many([for_mine.message_id, for_theirs.message_id])) == [
            for_mine.message_id
        ]
    async with db.transaction(other_tenant) as uow:
        assert list(await uow.messages.get_many([for_mine.message_id, for_theirs.message_id])) == [
            for_theirs.message_id
        ]
