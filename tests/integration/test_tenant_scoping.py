"""No cross-tenant leakage: every repository read and every service call made for tenant B
with tenant A's ids finds nothing (or raises NotFound), and tenant A's rows stay as they were.

Both tenants hold look-alike data (same channels, external account, user, thread and message
ids), so a query that forgot its tenant filter would find a plausible row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.contract import ContactInput
from omni_store.persistence.cursors import PageRequest
from omni_store.persistence.database import Database, UnitOfWork
from omni_store.persistence.enums import Channel, ErrorCode
from omni_store.persistence.errors import NotFound
from omni_store.persistence.repositories import (
    ChannelAccount,
    ContactRow,
    ConversationRow,
    MessageRow,
    PlacedRow,
    Relations,
    Thread,
)
from omni_store.persistence.service import (
    add_attachments,
    persist_message,
    persist_messages,
    upsert_contact,
    upsert_conversation,
)
from omni_store.persistence.tenancy import TenantId
from tests.conftest import row_counts
from tests.factories import at, attachment, channel_account, inbound, outbound, tenant_rows


@dataclass(frozen=True)
class World:
    """One tenant's look-alike data set."""

    tenant: TenantId
    account_ids: tuple[int, int]
    contact_id: int
    conversation_ids: tuple[int, int]
    message_ids: tuple[int, int, int]
    key: str


async def _world(db: Database, tenant: TenantId) -> World:
    line = await channel_account(db, tenant, external_account_id="oa-1")
    facebook = await channel_account(
        db, tenant, channel=Channel.FACEBOOK, external_account_id="page-1"
    )
    first = await persist_message(
        db,
        tenant,
        inbound(
            account_id=line.id,
            external_message_id="m-1",
            when=at(0),
            attachments=[attachment(external_id="media-1")],
        ),
    )
    reply = await persist_message(
        db,
        tenant,
        outbound(
            account_id=line.id,
            conversation_id=first.conversation_id,
            idempotency_key="send-1",
            when=at(1),
        ),
    )
    other = await persist_message(
        db,
        tenant,
        inbound(account_id=facebook.id, external_message_id="m-1", thread=None, when=at(2)),
    )
    assert first.contact_id is not None
    return World(
        tenant=tenant,
        account_ids=(line.id, facebook.id),
        contact_id=first.contact_id,
        conversation_ids=(first.conversation_id, other.conversation_id),
        message_ids=(first.message_id, reply.message_id, other.message_id),
        key="m-1",
    )


@pytest.fixture
async def worlds(db: Database, tenant: TenantId, other_tenant: TenantId) -> tuple[World, World]:
    """(A, B): tenant A's data, and tenant B's look-alike data."""
    return await _world(db, tenant), await _world(db, other_tenant)


# --- repository reads -------------------------------------------------------------------------

# Each case: (name, call under tenant B with A's ids, what B must get back).
ReadCase = Callable[[UnitOfWork, World, World], Awaitable[tuple[Any, Any]]]


async def _account_get(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    return await uow.channel_accounts.get(a.account_ids[0]), None


async def _account_get_many(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    found = await uow.channel_accounts.get_many([*a.account_ids, b.account_ids[0]])
    return sorted(found), [b.account_ids[0]]


async def _account_lock_many(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    found = await uow.channel_accounts.lock_many([*a.account_ids, b.account_ids[1]])
    return sorted(found), [b.account_ids[1]]


async def _account_list(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    page = await uow.channel_accounts.list(PageRequest(first=100))
    return [x.id for x in page.items], list(b.account_ids)


async def _contact_get(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    return await uow.contacts.get(a.contact_id), None


async def _contact_get_many(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    found = await uow.contacts.get_many([a.contact_id, b.contact_id])
    return sorted(found), [b.contact_id]


async def _contact_count(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    return await uow.contacts.count(), 2


async def _conversation_get(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    return await uow.conversations.get(a.conversation_ids[0]), None


async def _conversation_get_many(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    found = await uow.conversations.get_many([*a.conversation_ids, b.conversation_ids[1]])
    return sorted(found), [b.conversation_ids[1]]


async def _conversation_list(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    page = await uow.conversations.list(PageRequest(first=100))
    return [x.id for x in page.items], [b.conversation_ids[1], b.conversation_ids[0]]


async def _conversation_list_by_account(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    page = await uow.conversations.list(PageRequest(first=100), channel_account_id=a.account_ids[0])
    return [x.id for x in page.items], []


async def _conversation_list_by_channel(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    page = await uow.conversations.list(PageRequest(first=100), channel=Channel.LINE)
    return [x.id for x in page.items], [b.conversation_ids[0]]


async def _conversation_list_with_relations(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    listed = await uow.conversations.list_with(
        PageRequest(first=100), Relations(contact=True, last_message=True)
    )
    got = (
        [x.id for x in listed.page.items],
        {(c.id, c.tenant_id) for c in listed.contacts.values()},
        {k: (m.id, m.tenant_id) for k, m in listed.last_messages.items() if m is not None},
    )
    contacts = {(x.contact_id, b.tenant) for x in listed.page.items}
    assert (b.contact_id, b.tenant) in contacts
    return got, (
        [b.conversation_ids[1], b.conversation_ids[0]],
        contacts,
        {
            b.conversation_ids[1]: (b.message_ids[2], b.tenant),
            b.conversation_ids[0]: (b.message_ids[1], b.tenant),
        },
    )


async def _conversation_list_with_relations_by_account(
    uow: UnitOfWork, a: World, b: World
) -> tuple[Any, Any]:
    listed = await uow.conversations.list_with(
        PageRequest(first=100),
        Relations(contact=True, last_message=True),
        channel_account_id=a.account_ids[0],
    )
    return (listed.page.items, listed.contacts, listed.last_messages), ([], {}, {})


async def _message_get(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    return await uow.messages.get(a.message_ids[0]), None


async def _message_get_many(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    found = await uow.messages.get_many([*a.message_ids, b.message_ids[0]])
    return sorted(found), [b.message_ids[0]]


async def _message_timeline(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    page = await uow.messages.timeline(a.conversation_ids[0], PageRequest(first=100))
    return (page.items, page.has_previous_page, page.has_next_page), ([], False, False)


async def _message_timeline_backward(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    page = await uow.messages.timeline(a.conversation_ids[0], PageRequest(last=100))
    return (page.items, page.has_previous_page, page.has_next_page), ([], False, False)


async def _message_latest(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    found = await uow.messages.latest_by_conversations([*a.conversation_ids, b.conversation_ids[0]])
    return {c: m.id for c, m in found.items()}, {b.conversation_ids[0]: b.message_ids[1]}


async def _message_account_with_replay(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    return await uow.messages.account_with_replay(a.account_ids[0], a.key), (None, None)


async def _message_find_replays(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    found = await uow.messages.find_replays([(a.account_ids[0], a.key), (b.account_ids[0], b.key)])
    return {k: r.message_id for k, r in found.items()}, {
        (b.account_ids[0], b.key): b.message_ids[0]
    }


def _new_row(account_id: int, key: str) -> MessageRow:
    return MessageRow(
        channel_account_id=account_id,
        direction="INBOUND",
        sender_type="CONTACT",
        sender_external_id="U-1",
        sender_display_name=None,
        sender_avatar_url=None,
        content_type="TEXT",
        content_text="hello",
        content_struct=None,
        external_message_id=key,
        idempotency_key=key,
        reply_to_external_message_id=None,
        channel_timestamp=at(30),
        status="RECEIVED",
        content_hash=b"0" * 32,
        attachments=[attachment(external_id="x")],
    )


_THREAD_1 = Thread(ContactInput(external_user_id="U-1"), "t:thread-1", "thread-1")


async def _message_persist_on_their_account(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    # A new key on A's account, into the thread A has: neither is found, nothing is written.
    return await uow.messages.persist(_new_row(a.account_ids[0], "m-new"), _THREAD_1), None


async def _message_persist_their_key(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    # A's stored key on A's account: no replay of A's is shown.
    return await uow.messages.persist(_new_row(a.account_ids[0], a.key), _THREAD_1), None


async def _message_persist_into_their_conversation(
    uow: UnitOfWork, a: World, b: World
) -> tuple[Any, Any]:
    # B's own account, A's conversation by id: the account is found, the conversation is not,
    # and nothing is written.
    found = await uow.messages.persist(_new_row(b.account_ids[0], "m-new"), a.conversation_ids[0])
    assert found is not None
    return (found.account.id, found.replay, found.contact, found.conversation, found.stored), (
        b.account_ids[0],
        None,
        None,
        None,
        None,
    )


async def _message_with_relations(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    return await uow.messages.with_relations(a.message_ids[0]), None


async def _message_lock(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    return await uow.messages.lock(a.message_ids[0]), False


async def _attachments_by_messages(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    found = await uow.attachments.by_messages([a.message_ids[0], b.message_ids[0]])
    return {m: [x.external_id for x in xs] for m, xs in found.items()}, {
        b.message_ids[0]: ["media-1"]
    }


async def _attachments_stats(uow: UnitOfWork, a: World, b: World) -> tuple[Any, Any]:
    return await uow.attachments.stats(a.message_ids[0]), (0, 0)


READS: list[ReadCase] = [
    _account_get,
    _account_get_many,
    _account_lock_many,
    _account_list,
    _contact_get,
    _contact_get_many,
    _contact_count,
    _conversation_get,
    _conversation_get_many,
    _conversation_list,
    _conversation_list_by_account,
    _conversation_list_by_channel,
    _conversation_list_with_relations,
    _conversation_list_with_relations_by_account,
    _message_get,
    _message_get_many,
    _message_timeline,
    _message_timeline_backward,
    _message_latest,
    _message_account_with_replay,
    _message_find_replays,
    _message_persist_on_their_account,
    _message_persist_their_key,
    _message_persist_into_their_conversation,
    _message_with_relations,
    _message_lock,
    _attachments_by_messages,
    _attachments_stats,
]


@pytest.mark.parametrize("read", READS, ids=[r.__name__.lstrip("_") for r in READS])
async def test_repository_methods_under_another_tenant_see_nothing_of_it(
    db: Database, engine: AsyncEngine, worlds: tuple[World, World], read: ReadCase
) -> None:
    # Given tenants A and B with look-alike data
    a, b = worlds
    counts = await row_counts(engine)
    rows_a = await tenant_rows(engine, a.tenant)
    rows_b = await tenant_rows(engine, b.tenant)

    # When B's unit of work is asked about A's ids
    async with db.transaction(b.tenant) as uow:
        got, expected = await read(uow, a, b)

    # Then B gets nothing of A (only its own rows where a list is asked for), and no row of
    # either tenant changed
    assert got == expected
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, a.tenant) == rows_a
    assert await tenant_rows(engine, b.tenant) == rows_b


async def test_a_tenant_still_sees_its_own_rows_through_the_same_methods(
    db: Database, worlds: tuple[World, World]
) -> None:
    # Given tenants A and B (the control for the test above: the ids are real)
    a, _ = worlds

    # When A's unit of work reads A's ids
    async with db.transaction(a.tenant) as uow:
        account = await uow.channel_accounts.get(a.account_ids[0])
        contact = await uow.contacts.get(a.contact_id)
        conversation = await uow.conversations.get(a.conversation_ids[0])
        message = await uow.messages.get(a.message_ids[0])
        timeline = await uow.messages.timeline(a.conversation_ids[0], PageRequest(first=10))
        replay = (await uow.messages.find_replays([(a.account_ids[0], a.key)])).get(
            (a.account_ids[0], a.key)
        )
        attachments = await uow.attachments.by_messages([a.message_ids[0]])
        locked = await uow.messages.lock(a.message_ids[0])
        again = await uow.messages.persist(_new_row(a.account_ids[0], a.key), _THREAD_1)
        shown = await uow.messages.with_relations(a.message_ids[0])

    # Then everything is there
    assert account is not None
    assert account.tenant_id == a.tenant
    assert contact is not None
    assert contact.tenant_id == a.tenant
    assert conversation is not None
    assert conversation.tenant_id == a.tenant
    assert message is not None
    assert message.tenant_id == a.tenant
    assert [m.id for m in timeline.items] == [a.message_ids[0], a.message_ids[1]]
    assert replay is not None
    assert replay.message_id == a.message_ids[0]
    assert [x.external_id for x in attachments[a.message_ids[0]]] == ["media-1"]
    assert locked is True
    assert shown is not None
    assert shown[1:] == (conversation, contact)
    assert (shown[0].message, shown[0].attachments) == (message, attachments[a.message_ids[0]])
    assert again is not None
    assert again.account.id == a.account_ids[0]
    assert again.replay is not None
    assert (again.replay.message_id, again.conversation, again.stored) == (
        a.message_ids[0],
        None,
        None,
    )


async def test_a_cursor_of_another_tenants_conversation_reads_nothing(
    db: Database, worlds: tuple[World, World]
) -> None:
    # Given a cursor that tenant A obtained in its own timeline
    a, b = worlds
    async with db.transaction(a.tenant) as uow:
        page = await uow.messages.timeline(a.conversation_ids[0], PageRequest(first=1))
    assert page.has_next_page is True

    # When tenant B replays it against the same conversation id
    async with db.transaction(b.tenant) as uow:
        leaked = await uow.messages.timeline(
            a.conversation_ids[0], PageRequest(first=10, after=page.end_cursor)
        )

    # Then nothing comes back, not even the existence of earlier rows
    assert (leaked.items, leaked.has_previous_page, leaked.has_next_page) == ([], False, False)


# --- service calls ----------------------------------------------------------------------------

WriteCase = Callable[[Database, World, World], Awaitable[object]]


async def _persist_on_their_account(db: Database, a: World, b: World) -> object:
    return await persist_message(
        db, b.tenant, inbound(account_id=a.account_ids[0], external_message_id="m-new")
    )


async def _persist_without_thread_on_their_account(db: Database, a: World, b: World) -> object:
    # No thread id: the account is read before the write statement (for its window).
    return await persist_message(
        db,
        b.tenant,
        inbound(account_id=a.account_ids[0], external_message_id="m-new", thread=None),
    )


async def _replay_their_event(db: Database, a: World, b: World) -> object:
    # The very event A stored, account id included: must not come back as "deduplicated".
    return await persist_message(
        db,
        b.tenant,
        inbound(
            account_id=a.account_ids[0],
            external_message_id="m-1",
            when=at(0),
            attachments=[attachment(external_id="media-1")],
        ),
    )


async def _reply_into_their_conversation(db: Database, a: World, b: World) -> object:
    return await persist_message(
        db,
        b.tenant,
        outbound(account_id=b.account_ids[0], conversation_id=a.conversation_ids[0]),
    )


async def _reply_on_their_account(db: Database, a: World, b: World) -> object:
    return await persist_message(
        db,
        b.tenant,
        outbound(account_id=a.account_ids[0], conversation_id=a.conversation_ids[0]),
    )


async def _upsert_contact_on_their_account(db: Database, a: World, b: World) -> object:
    return await upsert_contact(
        db, b.tenant, a.account_ids[0], ContactInput(external_user_id="U-1", display_name="X")
    )


async def _upsert_conversation_on_their_account(db: Database, a: World, b: World) -> object:
    return await upsert_conversation(
        db,
        b.tenant,
        channel_account_id=a.account_ids[0],
        external_thread_id="thread-1",
        contact=ContactInput(external_user_id="U-1"),
        channel_timestamp=at(30),
    )


async def _add_attachments_to_their_message(db: Database, a: World, b: World) -> object:
    return await add_attachments(db, b.tenant, a.message_ids[0], [attachment(external_id="x")])


async def _batch_on_their_account_and_conversation(db: Database, a: World, b: World) -> object:
    outcomes = await persist_messages(
        db,
        b.tenant,
        [
            inbound(account_id=a.account_ids[0], external_message_id="m-new"),
            outbound(account_id=b.account_ids[0], conversation_id=a.conversation_ids[0]),
        ],
    )
    errors = [e for o in outcomes if isinstance(o, NotFound) for e in o.errors]
    assert len(errors) == len(outcomes) == 2
    raise NotFound(errors[:1])  # the first, as the other cases raise theirs


WRITES: list[tuple[WriteCase, tuple[str, ...]]] = [
    (_persist_on_their_account, ("channelAccountId",)),
    (_persist_without_thread_on_their_account, ("channelAccountId",)),
    (_replay_their_event, ("channelAccountId",)),
    (_reply_into_their_conversation, ("conversationId",)),
    (_reply_on_their_account, ("channelAccountId",)),
    (_upsert_contact_on_their_account, ("channelAccountId",)),
    (_upsert_conversation_on_their_account, ("channelAccountId",)),
    (_add_attachments_to_their_message, ("messageId",)),
    (_batch_on_their_account_and_conversation, ("channelAccountId",)),
]


@pytest.mark.parametrize(
    ("write", "field"), WRITES, ids=[w.__name__.lstrip("_") for w, _ in WRITES]
)
async def test_service_calls_under_another_tenant_are_not_found_and_write_nothing(
    db: Database,
    engine: AsyncEngine,
    worlds: tuple[World, World],
    write: WriteCase,
    field: tuple[str, ...],
) -> None:
    # Given tenants A and B with look-alike data
    a, b = worlds
    counts = await row_counts(engine)
    rows_a = await tenant_rows(engine, a.tenant)
    rows_b = await tenant_rows(engine, b.tenant)

    # When B calls a service with A's ids
    with pytest.raises(NotFound) as raised:
        await write(db, a, b)

    # Then A's objects do not exist for B, and nothing was written on either side
    assert [(e.field, e.code) for e in raised.value.errors] == [(field, ErrorCode.NOT_FOUND)]
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, a.tenant) == rows_a
    assert await tenant_rows(engine, b.tenant) == rows_b


# --- batch writes: the database refuses another tenant's references ------------------------


async def _contacts_upsert_many(uow: UnitOfWork, a: World) -> object:
    return await uow.contacts.upsert_many(
        [ContactRow(a.account_ids[0], ContactInput(external_user_id="U-1", display_name="X"))]
    )


async def _conversations_upsert_many(uow: UnitOfWork, a: World) -> object:
    theirs = ChannelAccount(a.tenant, a.account_ids[0], "LINE", "oa-1", None, 86400, at(0))
    return await uow.conversations.upsert_many(
        [ConversationRow(theirs, "t:thread-1", "thread-1", a.contact_id, at(30))]
    )


async def _messages_insert_many(uow: UnitOfWork, a: World) -> object:
    return await uow.messages.insert_many(
        [PlacedRow(_new_row(a.account_ids[0], "m-new"), a.conversation_ids[0], a.contact_id)]
    )


BATCH_WRITES = [_contacts_upsert_many, _conversations_upsert_many, _messages_insert_many]


@pytest.mark.parametrize("write", BATCH_WRITES, ids=[w.__name__.lstrip("_") for w in BATCH_WRITES])
async def test_batch_writes_naming_another_tenants_rows_are_refused_and_write_nothing(
    db: Database,
    engine: AsyncEngine,
    worlds: tuple[World, World],
    write: Callable[[UnitOfWork, World], Awaitable[object]],
) -> None:
    # Given tenants A and B with look-alike data
    a, b = worlds
    counts = await row_counts(engine)
    rows_a = await tenant_rows(engine, a.tenant)

    # When B's unit of work writes rows that name A's account (the service never does: it
    # finds A's ids missing first; this is the database's own line of defence)
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        async with db.transaction(b.tenant) as uow:
            await write(uow, a)

    # Then the foreign key (tenant, account) refuses them, and nothing was written
    assert refused.value.sqlstate == "23503"  # foreign_key_violation
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, a.tenant) == rows_a


async def test_look_alike_events_of_two_tenants_are_stored_apart(
    db: Database, engine: AsyncEngine, worlds: tuple[World, World]
) -> None:
    # Given tenants A and B, built from the very same events
    a, b = worlds

    # Then no id is shared, and each tenant holds the same shape of data
    assert set(a.account_ids).isdisjoint(b.account_ids)
    assert a.contact_id != b.contact_id
    assert set(a.conversation_ids).isdisjoint(b.conversation_ids)
    assert set(a.message_ids).isdisjoint(b.message_ids)
    rows_a = await tenant_rows(engine, a.tenant)
    rows_b = await tenant_rows(engine, b.tenant)
    assert {t: len(r) for t, r in rows_a.items()} == {
        "channel_accounts": 2,
        "contacts": 2,
        "conversations": 2,
        "messages": 3,
        "attachments": 1,
    }
    assert {t: len(r) for t, r in rows_b.items()} == {t: len(r) for t, r in rows_a.items()}
