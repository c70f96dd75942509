"""Deterministic contact and conversation upserts.

A contact is (tenant, channel account, external user id); a conversation is (tenant, channel
account, thread key), the key being the channel thread id or, without one, the external user
id plus the epoch-aligned bucket (the account's fallback window, default 24 h) of the event's
channel time. ``last_message_at`` only moves forward.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.contract import ContactInput
from omni_store.persistence.database import Database
from omni_store.persistence.enums import Channel
from omni_store.persistence.repositories import Conversation
from omni_store.persistence.service import (
    persist_message,
    upsert_contact,
    upsert_conversation,
)
from omni_store.persistence.tenancy import TenantId
from tests.conftest import row_counts
from tests.factories import at, channel_account, inbound, outbound

# 2026-11-21T00:00:00Z: a multiple of 86,400 s since the epoch, so a 24 h bucket boundary.
MIDNIGHT = datetime(2026, 11, 21, tzinfo=UTC)


async def _conversation(db: Database, tenant: TenantId, conversation_id: int) -> Conversation:
    async with db.transaction(tenant) as uow:
        conversation = await uow.conversations.get(conversation_id)
    assert conversation is not None
    return conversation


# --- contacts ---------------------------------------------------------------------------------


async def test_contact_upsert_returns_the_same_id_every_time(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a channel account
    account = await channel_account(db, tenant)
    before = await row_counts(engine)

    # When the same external user is upserted three times
    contact = ContactInput(external_user_id="U-1", display_name="Somchai")
    ids = [(await upsert_contact(db, tenant, account.id, contact)).id for _ in range(3)]

    # Then it is one contact
    assert len(set(ids)) == 1
    assert (await row_counts(engine))["contacts"] == before["contacts"] + 1
    async with db.transaction(tenant) as uow:
        assert await uow.contacts.count() == 1


async def test_contact_upsert_refreshes_the_profile_fields_given_and_keeps_those_omitted(
    db: Database, tenant: TenantId
) -> None:
    # Given a contact stored with a full profile
    account = await channel_account(db, tenant)
    created = await upsert_contact(
        db,
        tenant,
        account.id,
        ContactInput(
            external_user_id="U-1",
            display_name="Somchai",
            avatar_url="https://profile.line-scdn.net/old.jpg",
            profile={"language": "th", "tags": ["vip"]},
        ),
    )

    # When only the display name is given, then only the avatar, then only the profile
    renamed = await upsert_contact(
        db, tenant, account.id, ContactInput(external_user_id="U-1", display_name="Somchai J.")
    )
    new_avatar = await upsert_contact(
        db,
        tenant,
        account.id,
        ContactInput(external_user_id="U-1", avatar_url="https://profile.line-scdn.net/new.jpg"),
    )
    new_profile = await upsert_contact(
        db, tenant, account.id, ContactInput(external_user_id="U-1", profile={"language": "en"})
    )

    # Then each given field was refreshed, the omitted ones kept, and the id never changed
    assert (renamed.display_name, renamed.avatar_url, renamed.profile) == (
        "Somchai J.",
        "https://profile.line-scdn.net/old.jpg",
        {"language": "th", "tags": ["vip"]},
    )
    assert (new_avatar.display_name, new_avatar.avatar_url, new_avatar.profile) == (
        "Somchai J.",
        "https://profile.line-scdn.net/new.jpg",
        {"language": "th", "tags": ["vip"]},
    )
    assert (new_profile.display_name, new_profile.avatar_url, new_profile.profile) == (
        "Somchai J.",
        "https://profile.line-scdn.net/new.jpg",
        {"language": "en"},
    )
    assert {created.id, renamed.id, new_avatar.id, new_profile.id} == {created.id}
    async with db.transaction(tenant) as uow:
        stored = await uow.contacts.get(created.id)
    assert stored == new_profile
    assert stored.created_at == created.created_at
    assert stored.updated_at > created.updated_at


async def test_persist_refreshes_the_contact_it_upserts_with_the_same_id(
    db: Database, tenant: TenantId
) -> None:
    # Given a contact created by the service
    account = await channel_account(db, tenant)
    contact = await upsert_contact(
        db,
        tenant,
        account.id,
        ContactInput(external_user_id="U-1", display_name="Som", profile={"tier": "gold"}),
    )

    # When an inbound message of that user arrives with a new display name
    result = await persist_message(
        db, tenant, inbound(account_id=account.id, display_name="Somchai")
    )

    # Then the message is linked to the same contact, renamed, its profile kept
    assert result.contact_id == contact.id
    async with db.transaction(tenant) as uow:
        stored = await uow.contacts.get(contact.id)
        message = await uow.messages.get(result.message_id)
    assert stored is not None
    assert message is not None
    assert (stored.display_name, stored.profile) == ("Somchai", {"tier": "gold"})
    assert message.contact_id == contact.id


async def test_same_external_user_on_another_channel_account_is_another_contact(
    db: Database, tenant: TenantId
) -> None:
    # Given two accounts of one tenant (page-scoped user ids, e.g. two Facebook pages)
    page_a = await channel_account(db, tenant, channel=Channel.FACEBOOK, external_account_id="p1")
    page_b = await channel_account(db, tenant, channel=Channel.FACEBOOK, external_account_id="p2")

    # When the same external user id is upserted on each
    on_a = await upsert_contact(db, tenant, page_a.id, ContactInput(external_user_id="PSID-1"))
    on_b = await upsert_contact(db, tenant, page_b.id, ContactInput(external_user_id="PSID-1"))

    # Then they are two contacts, each stable on its account
    assert on_a.id != on_b.id
    assert (on_a.channel_account_id, on_b.channel_account_id) == (page_a.id, page_b.id)
    again = await upsert_contact(db, tenant, page_a.id, ContactInput(external_user_id="PSID-1"))
    assert again.id == on_a.id
    async with db.transaction(tenant) as uow:
        assert await uow.contacts.count() == 2


async def test_same_external_user_on_another_tenant_is_another_contact(
    db: Database, tenant: TenantId, other_tenant: TenantId
) -> None:
    # Given look-alike accounts on two tenants
    mine = await channel_account(db, tenant)
    theirs = await channel_account(db, other_tenant)

    # When the same external user is upserted on each
    for_mine = await upsert_contact(db, tenant, mine.id, ContactInput(external_user_id="U-1"))
    for_theirs = await upsert_contact(
        db, other_tenant, theirs.id, ContactInput(external_user_id="U-1")
    )

    # Then each tenant has its own contact
    assert for_mine.id != for_theirs.id
    assert (for_mine.tenant_id, for_theirs.tenant_id) == (tenant, other_tenant)
    async with db.transaction(tenant) as uow:
        assert list(await uow.contacts.get_many([for_mine.id, for_theirs.id])) == [for_mine.id]
        assert await uow.contacts.count() == 1


# --- conversations by thread ------------------------------------------------------------------


async def test_messages_of_one_thread_map_to_one_conversation_whatever_their_time(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a channel thread id and messages spread over several days
    account = await channel_account(db, tenant)
    before = await row_counts(engine)

    # When ten messages of that thread arrive
    results = [
        await persist_message(
            db, tenant, inbound(account_id=account.id, thread="chat-9", when=at(i * 600))
        )
        for i in range(10)
    ]

    # Then they all belong to one conversation, another thread gets its own
    assert len({r.conversation_id for r in results}) == 1
    other = await persist_message(db, tenant, inbound(account_id=account.id, thread="chat-10"))
    assert other.conversation_id != results[0].conversation_id
    assert other.contact_id == results[0].contact_id
    after = await row_counts(engine)
    assert after["conversations"] - before["conversations"] == 2
    assert after["messages"] - before["messages"] == 11
    conversation = await _conversation(db, tenant, results[0].conversation_id)
    assert conversation.external_thread_id == "chat-9"
    assert conversation.channel_account_id == account.id
    assert conversation.channel == "LINE"
    assert conversation.contact_id == results[0].contact_id


# --- conversations by the fallback rule -------------------------------------------------------


async def test_messages_without_thread_in_one_24h_bucket_map_to_one_conversation(
    db: Database, tenant: TenantId
) -> None:
    # Given an account with the default window and a user writing without a thread id
    account = await channel_account(db, tenant)
    first_instant = MIDNIGHT - timedelta(days=1)
    last_instant = MIDNIGHT - timedelta(microseconds=1)

    # When messages arrive at the very start, the middle and the very end of one UTC day
    results = [
        await persist_message(db, tenant, inbound(account_id=account.id, thread=None, when=when))
        for when in (first_instant, first_instant + timedelta(hours=12), last_instant)
    ]

    # Then they share one conversation
    assert len({r.conversation_id for r in results}) == 1
    conversation = await _conversation(db, tenant, results[0].conversation_id)
    assert conversation.external_thread_id is None
    assert conversation.last_message_at == last_instant


async def test_messages_without_thread_across_a_bucket_boundary_map_to_two_conversations(
    db: Database, tenant: TenantId
) -> None:
    # Given an account with the default (24 h, epoch-aligned) window
    account = await channel_account(db, tenant)

    # When one message arrives a microsecond before UTC midnight and one exactly at it
    before = await persist_message(
        db,
        tenant,
        inbound(account_id=account.id, thread=None, when=MIDNIGHT - timedelta(microseconds=1)),
    )
    after = await persist_message(
        db, tenant, inbound(account_id=account.id, thread=None, when=MIDNIGHT)
    )

    # Then they are two conversations of one contact
    assert before.conversation_id != after.conversation_id
    assert before.contact_id == after.contact_id


async def test_fallback_buckets_are_aligned_to_the_epoch_not_to_the_senders_offset(
    db: Database, tenant: TenantId
) -> None:
    # Given timestamps written in Bangkok time (+07:00) on both sides of UTC midnight
    account = await channel_account(db, tenant)
    bangkok = timezone(timedelta(hours=7))
    late_utc_day = (MIDNIGHT - timedelta(seconds=1)).astimezone(bangkok)  # 06:59:59+07:00
    early_utc_day = (MIDNIGHT - timedelta(hours=20)).astimezone(bangkok)  # previous 11:00+07
    next_utc_day = MIDNIGHT.astimezone(bangkok)  # 07:00:00+07:00

    # When they are persisted
    results = [
        await persist_message(db, tenant, inbound(account_id=account.id, thread=None, when=when))
        for when in (early_utc_day, late_utc_day, next_utc_day)
    ]

    # Then the bucket boundary is UTC midnight, whatever the offset the channel used
    assert results[0].conversation_id == results[1].conversation_id
    assert results[2].conversation_id != results[1].conversation_id


async def test_other_users_without_thread_in_one_bucket_get_their_own_conversations(
    db: Database, tenant: TenantId
) -> None:
    # Given two users writing without a thread id in the same bucket
    account = await channel_account(db, tenant)

    # When each sends a message
    one = await persist_message(
        db, tenant, inbound(account_id=account.id, thread=None, external_user_id="U-1")
    )
    two = await persist_message(
        db, tenant, inbound(account_id=account.id, thread=None, external_user_id="U-2")
    )

    # Then each user has a conversation of their own
    assert one.conversation_id != two.conversation_id
    assert one.contact_id != two.contact_id


async def _fallback_mapping(
    db: Database, tenant: TenantId, times: list[datetime], order: list[int], window: int | None
) -> list[int]:
    """Persist messages (no thread id) at ``times`` in the given arrival ``order``; return
    for each of ``times`` the index of its conversation in first-seen-by-time order."""
    account = await channel_account(db, tenant, fallback_window_seconds=window)
    conversation_of: dict[int, int] = {}
    for index in order:
        result = await persist_message(
            db,
            tenant,
            inbound(
                account_id=account.id,
                thread=None,
                external_message_id=f"m-{index}",
                when=times[index],
            ),
        )
        conversation_of[index] = result.conversation_id
    labels: dict[int, int] = {}
    return [labels.setdefault(conversation_of[i], len(labels)) for i in range(len(times))]


async def test_fallback_mapping_is_identical_whatever_order_events_arrive_in(
    db: Database, tenant: TenantId, other_tenant: TenantId
) -> None:
    # Given events of one user over three UTC days, with gaps that straddle midnights
    times = [
        MIDNIGHT - timedelta(hours=20),
        MIDNIGHT - timedelta(hours=2),
        MIDNIGHT - timedelta(seconds=1),
        MIDNIGHT,
        MIDNIGHT + timedelta(hours=1),
        MIDNIGHT + timedelta(hours=23, minutes=59),
        MIDNIGHT + timedelta(days=1, minutes=1),
    ]
    in_order = list(range(len(times)))
    late_first = list(reversed(in_order))
    shuffled = in_order[:]
    random.Random(7).shuffle(shuffled)

    # When they arrive in time order on one tenant, and late ones first on another
    chronological = await _fallback_mapping(db, tenant, times, in_order, None)
    reversed_arrival = await _fallback_mapping(db, other_tenant, times, late_first, None)

    # Then the mapping is the same: one conversation per UTC day
    assert chronological == [0, 0, 0, 1, 1, 1, 2]
    assert reversed_arrival == chronological


async def test_fallback_mapping_with_shuffled_arrival_matches_time_order(
    db: Database, tenant: TenantId, other_tenant: TenantId
) -> None:
    # Given events of one user within and across hour buckets (a 1 h window)
    base = MIDNIGHT + timedelta(hours=3)
    times = [base + timedelta(minutes=m) for m in (0, 30, 59, 60, 61, 119, 120, 300)]
    order = list(range(len(times)))
    shuffled = order[:]
    random.Random(38).shuffle(shuffled)

    # When they arrive in time order, and shuffled on another tenant
    in_order = await _fallback_mapping(db, tenant, times, order, 3600)
    out_of_order = await _fallback_mapping(db, other_tenant, times, shuffled, 3600)

    # Then both map the same way
    assert in_order == [0, 0, 0, 1, 1, 1, 2, 3]
    assert out_of_order == in_order


async def test_a_custom_fallback_window_on_the_account_is_honoured(
    db: Database, tenant: TenantId
) -> None:
    # Given an account whose fallback window is one hour (epoch-aligned hours)
    account = await channel_account(db, tenant, fallback_window_seconds=3600)
    assert account.fallback_window_seconds == 3600
    eleven = MIDNIGHT + timedelta(hours=11)

    # When messages arrive at 10:00, 10:59:59 and 11:00 UTC
    results = [
        await persist_message(db, tenant, inbound(account_id=account.id, thread=None, when=when))
        for when in (
            eleven - timedelta(hours=1),
            eleven - timedelta(seconds=1),
            eleven,
        )
    ]

    # Then the first two share a conversation and the third opens another
    assert results[0].conversation_id == results[1].conversation_id
    assert results[2].conversation_id != results[1].conversation_id


async def test_an_account_with_the_default_window_keeps_a_whole_day_together(
    db: Database, tenant: TenantId
) -> None:
    # Given an account registered without a window (default 24 h)
    account = await channel_account(db, tenant)
    assert account.fallback_window_seconds == 24 * 3600

    # When messages arrive at 10:00, 10:59:59 and 11:00 UTC (an hour boundary)
    eleven = MIDNIGHT + timedelta(hours=11)
    results = [
        await persist_message(db, tenant, inbound(account_id=account.id, thread=None, when=when))
        for when in (eleven - timedelta(hours=1), eleven - timedelta(seconds=1), eleven)
    ]

    # Then one conversation holds them all
    assert len({r.conversation_id for r in results}) == 1


# --- last_message_at --------------------------------------------------------------------------


async def test_last_message_at_only_moves_forward_and_is_the_latest_channel_time(
    db: Database, tenant: TenantId
) -> None:
    # Given a conversation whose latest message is at minute 10
    account = await channel_account(db, tenant)
    first = await persist_message(db, tenant, inbound(account_id=account.id, when=at(10)))
    assert (await _conversation(db, tenant, first.conversation_id)).last_message_at == at(10)

    # When a late event (minute 5) arrives
    late = await persist_message(db, tenant, inbound(account_id=account.id, when=at(5)))

    # Then last_message_at stays at minute 10
    assert late.conversation_id == first.conversation_id
    assert (await _conversation(db, tenant, first.conversation_id)).last_message_at == at(10)

    # And when a newer event (minute 20) arrives, it moves to minute 20
    await persist_message(db, tenant, inbound(account_id=account.id, when=at(20)))
    assert (await _conversation(db, tenant, first.conversation_id)).last_message_at == at(20)

    # And a late outbound reply (minute 15) addressed by conversation id does not move it back
    await persist_message(
        db,
        tenant,
        outbound(account_id=account.id, conversation_id=first.conversation_id, when=at(15)),
    )
    conversation = await _conversation(db, tenant, first.conversation_id)
    async with db.transaction(tenant) as uow:
        latest = await uow.messages.latest_by_conversations([first.conversation_id])
    assert conversation.last_message_at == at(20)
    assert latest[first.conversation_id].channel_timestamp == conversation.last_message_at


async def test_last_message_at_is_the_max_channel_time_whatever_the_arrival_order(
    db: Database, tenant: TenantId
) -> None:
    # Given events at scattered times, arriving shuffled
    account = await channel_account(db, tenant)
    minutes = [7, 3, 42, 15, 41, 0, 30]

    # When they are persisted
    results = [
        await persist_message(db, tenant, inbound(account_id=account.id, when=at(m)))
        for m in minutes
    ]

    # Then last_message_at is the latest channel time
    assert len({r.conversation_id for r in results}) == 1
    assert (await _conversation(db, tenant, results[0].conversation_id)).last_message_at == at(42)


# --- the upsert_conversation service ----------------------------------------------------------


async def test_upsert_conversation_returns_the_conversation_persist_uses_for_a_thread(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a message persisted in thread-1
    account = await channel_account(db, tenant)
    persisted = await persist_message(
        db, tenant, inbound(account_id=account.id, thread="thread-1", when=at(10))
    )
    counts = await row_counts(engine)

    # When the conversation of that thread is upserted (with an older time)
    conversation, contact = await upsert_conversation(
        db,
        tenant,
        channel_account_id=account.id,
        external_thread_id="thread-1",
        contact=ContactInput(external_user_id="U-1"),
        channel_timestamp=at(0),
    )

    # Then it is the same conversation and contact, unmoved, and nothing was added
    assert conversation.id == persisted.conversation_id
    assert contact is not None
    assert contact.id == persisted.contact_id
    assert conversation.last_message_at == at(10)
    assert await row_counts(engine) == counts


async def test_persist_lands_in_the_conversation_opened_by_upsert_conversation(
    db: Database, tenant: TenantId
) -> None:
    # Given conversations opened by the service: one by thread, one by the fallback rule
    account = await channel_account(db, tenant)
    by_thread, _ = await upsert_conversation(
        db,
        tenant,
        channel_account_id=account.id,
        external_thread_id="thread-7",
        contact=None,
        channel_timestamp=at(0),
    )
    by_fallback, contact = await upsert_conversation(
        db,
        tenant,
        channel_account_id=account.id,
        external_thread_id=None,
        contact=ContactInput(external_user_id="U-1", display_name="Somchai"),
        channel_timestamp=at(0),
    )

    # When messages of that thread and of that user (no thread, same day) are persisted
    in_thread = await persist_message(
        db, tenant, inbound(account_id=account.id, thread="thread-7", when=at(30))
    )
    no_thread = await persist_message(
        db, tenant, inbound(account_id=account.id, thread=None, when=at(60))
    )

    # Then they land in those conversations; the thread's conversation gets its contact
    assert in_thread.conversation_id == by_thread.id
    assert no_thread.conversation_id == by_fallback.id
    assert contact is not None
    assert no_thread.contact_id == contact.id
    assert by_thread.contact_id is None
    assert (await _conversation(db, tenant, by_thread.id)).contact_id == in_thread.contact_id
    assert (await _conversation(db, tenant, by_thread.id)).last_message_at == at(30)
