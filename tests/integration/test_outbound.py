"""Outbound messages (agents' and bots' replies) are persisted like inbound ones, linked to the
right conversation and channel account, and take their place in the timeline by channel time."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.cursors import PageRequest
from omni_store.persistence.database import Database
from omni_store.persistence.enums import Direction, ErrorCode, SenderType
from omni_store.persistence.errors import Mismatch, NotFound
from omni_store.persistence.service import persist_message
from omni_store.persistence.tenancy import TenantId
from tests.conftest import row_counts
from tests.factories import at, channel_account, inbound, outbound, tenant_rows


async def test_outbound_by_conversation_id_is_stored_as_outbound_and_linked_to_it(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a conversation opened by an inbound message at minute 0
    account = await channel_account(db, tenant)
    opened = await persist_message(db, tenant, inbound(account_id=account.id, when=at(0)))
    before = await row_counts(engine)

    # When the agent's reply (sent at minute 3) is persisted with the conversation id
    result = await persist_message(
        db,
        tenant,
        outbound(
            account_id=account.id,
            conversation_id=opened.conversation_id,
            idempotency_key="send-1",
            external_message_id="line-out-1",
            sender_name="Agent Nok",
            text="Thanks, your order ships today.",
            when=at(3),
        ),
    )

    # Then one outbound message is stored with its sender, in that conversation and account,
    # for the conversation's contact, and the conversation's activity moved to minute 3
    assert result.deduplicated is False
    assert result.conversation_id == opened.conversation_id
    assert result.contact_id == opened.contact_id
    after = await row_counts(engine)
    assert {t: after[t] - before[t] for t in after} == {
        "channel_accounts": 0,
        "contacts": 0,
        "conversations": 0,
        "messages": 1,
        "attachments": 0,
    }
    async with db.transaction(tenant) as uow:
        message = await uow.messages.get(result.message_id)
        conversation = await uow.conversations.get(opened.conversation_id)
    assert message is not None
    assert conversation is not None
    assert message.direction == Direction.OUTBOUND
    assert message.sender_type == SenderType.AGENT
    assert message.sender_display_name == "Agent Nok"
    assert message.sender_external_id == "agent-7"
    assert message.conversation_id == opened.conversation_id
    assert message.channel_account_id == account.id
    assert message.contact_id == opened.contact_id
    assert message.content_type == "TEXT"
    assert message.content_text == "Thanks, your order ships today."
    assert message.idempotency_key == "send-1"
    assert message.external_message_id == "line-out-1"
    assert message.status == "SENT"
    assert message.channel_timestamp == at(3)
    assert message.created_at != message.channel_timestamp
    assert conversation.last_message_at == at(3)


async def test_bot_reply_keeps_the_bot_sender_type_and_name(db: Database, tenant: TenantId) -> None:
    # Given a conversation
    account = await channel_account(db, tenant)
    opened = await persist_message(db, tenant, inbound(account_id=account.id))

    # When a bot's reply is persisted
    result = await persist_message(
        db,
        tenant,
        outbound(
            account_id=account.id,
            conversation_id=opened.conversation_id,
            sender_type=SenderType.BOT,
            sender_name="Order Bot",
        ),
    )

    # Then it is rendered as the bot, by name
    async with db.transaction(tenant) as uow:
        message = await uow.messages.get(result.message_id)
    assert message is not None
    assert (message.direction, message.sender_type, message.sender_display_name) == (
        "OUTBOUND",
        "BOT",
        "Order Bot",
    )


async def test_outbound_by_contact_and_thread_resolves_like_inbound(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given an inbound message of U-1 in thread-1
    account = await channel_account(db, tenant)
    opened = await persist_message(
        db, tenant, inbound(account_id=account.id, external_user_id="U-1", thread="thread-1")
    )
    before = await row_counts(engine)

    # When a reply is persisted by the contact's external user id and the thread id
    result = await persist_message(
        db,
        tenant,
        outbound(account_id=account.id, external_user_id="U-1", thread="thread-1", when=at(2)),
    )

    # Then it lands in the same conversation, for the same contact, and creates nothing else
    assert (result.conversation_id, result.contact_id) == (
        opened.conversation_id,
        opened.contact_id,
    )
    after = await row_counts(engine)
    assert {t: after[t] - before[t] for t in after}["messages"] == 1
    assert after["contacts"] == before["contacts"]
    assert after["conversations"] == before["conversations"]
    async with db.transaction(tenant) as uow:
        message = await uow.messages.get(result.message_id)
        contact = await uow.contacts.get(opened.contact_id or 0)
    assert message is not None
    assert contact is not None
    assert (message.direction, message.channel_account_id) == ("OUTBOUND", account.id)
    # The reply carried no profile: the contact's display name is kept.
    assert contact.display_name == "Somchai"


async def test_outbound_by_contact_without_thread_uses_the_fallback_rule_like_inbound(
    db: Database, tenant: TenantId
) -> None:
    # Given an inbound message of U-1 without thread id at minute 0 (same UTC day as minute 30)
    account = await channel_account(db, tenant)
    opened = await persist_message(
        db, tenant, inbound(account_id=account.id, thread=None, when=at(0))
    )

    # When a reply addressed to U-1 without a thread id is persisted at minute 30
    result = await persist_message(
        db,
        tenant,
        outbound(account_id=account.id, external_user_id="U-1", thread=None, when=at(30)),
    )

    # Then it joins the same conversation
    assert (result.conversation_id, result.contact_id) == (
        opened.conversation_id,
        opened.contact_id,
    )


async def test_outbound_to_a_new_contact_opens_its_conversation(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given an account where U-9 has never written
    account = await channel_account(db, tenant)
    before = await row_counts(engine)

    # When an agent's first message to U-9 is persisted
    result = await persist_message(
        db,
        tenant,
        outbound(account_id=account.id, external_user_id="U-9", thread="thread-9", when=at(1)),
    )

    # Then the contact and the conversation are created and the message linked to them
    after = await row_counts(engine)
    assert {t: after[t] - before[t] for t in after} == {
        "channel_accounts": 0,
        "contacts": 1,
        "conversations": 1,
        "messages": 1,
        "attachments": 0,
    }
    async with db.transaction(tenant) as uow:
        contact = await uow.contacts.get(result.contact_id or 0)
        conversation = await uow.conversations.get(result.conversation_id)
    assert contact is not None
    assert conversation is not None
    assert (contact.external_user_id, contact.display_name) == ("U-9", None)
    assert (conversation.external_thread_id, conversation.contact_id) == ("thread-9", contact.id)
    assert conversation.last_message_at == at(1)


async def test_inbound_and_outbound_interleave_in_the_timeline_by_channel_time(
    db: Database, tenant: TenantId
) -> None:
    # Given a conversation
    account = await channel_account(db, tenant)
    opened = await persist_message(
        db, tenant, inbound(account_id=account.id, external_message_id="in-0", when=at(0))
    )
    conversation_id = opened.conversation_id

    # When replies and further inbound messages arrive, some late
    await persist_message(
        db,
        tenant,
        outbound(
            account_id=account.id,
            conversation_id=conversation_id,
            idempotency_key="out-3",
            when=at(3),
        ),
    )
    await persist_message(
        db, tenant, inbound(account_id=account.id, external_message_id="in-4", when=at(4))
    )
    await persist_message(  # late: the customer's message at minute 2 arrives last but one
        db, tenant, inbound(account_id=account.id, external_message_id="in-2", when=at(2))
    )
    await persist_message(  # late reply, addressed by contact and thread
        db,
        tenant,
        outbound(
            account_id=account.id,
            external_user_id="U-1",
            thread="thread-1",
            idempotency_key="out-1",
            when=at(1),
        ),
    )

    # Then the timeline is in channel-time order, both directions together
    async with db.transaction(tenant) as uow:
        page = await uow.messages.timeline(conversation_id, PageRequest(first=10))
    assert [(m.idempotency_key, m.direction, m.sender_type) for m in page.items] == [
        ("in-0", "INBOUND", "CONTACT"),
        ("out-1", "OUTBOUND", "AGENT"),
        ("in-2", "INBOUND", "CONTACT"),
        ("out-3", "OUTBOUND", "AGENT"),
        ("in-4", "INBOUND", "CONTACT"),
    ]
    assert [m.channel_timestamp for m in page.items] == [at(i) for i in range(5)]
    assert (page.has_next_page, page.has_previous_page) == (False, False)


async def test_outbound_to_a_conversation_of_another_channel_account_is_a_mismatch(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a conversation on the shop account and a second account of the same tenant
    shop = await channel_account(db, tenant, external_account_id="oa-shop")
    support = await channel_account(db, tenant, external_account_id="oa-support")
    opened = await persist_message(db, tenant, inbound(account_id=shop.id, when=at(0)))
    counts = await row_counts(engine)
    stored = await tenant_rows(engine, tenant)

    # When a reply on the support account names the shop's conversation
    with pytest.raises(Mismatch) as raised:
        await persist_message(
            db,
            tenant,
            outbound(account_id=support.id, conversation_id=opened.conversation_id, when=at(5)),
        )

    # Then it is refused on conversationId and nothing was written (activity not moved)
    assert [(e.field, e.code) for e in raised.value.errors] == [
        (("conversationId",), ErrorCode.MISMATCH)
    ]
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, tenant) == stored


async def test_outbound_to_a_conversation_of_another_tenant_is_not_found(
    db: Database, engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    # Given a conversation of another tenant, and our own look-alike account
    theirs = await channel_account(db, other_tenant)
    their_conversation = await persist_message(
        db, other_tenant, inbound(account_id=theirs.id, when=at(0))
    )
    mine = await channel_account(db, tenant)
    counts = await row_counts(engine)
    stored = {t: await tenant_rows(engine, t) for t in (tenant, other_tenant)}

    # When we persist a reply naming their conversation
    with pytest.raises(NotFound) as raised:
        await persist_message(
            db,
            tenant,
            outbound(
                account_id=mine.id, conversation_id=their_conversation.conversation_id, when=at(5)
            ),
        )

    # Then it does not exist for us, and nothing was written on either side
    assert [(e.field, e.code) for e in raised.value.errors] == [
        (("conversationId",), ErrorCode.NOT_FOUND)
    ]
    assert await row_counts(engine) == counts
    assert {t: await tenant_rows(engine, t) for t in (tenant, other_tenant)} == stored


async def test_outbound_to_a_missing_conversation_is_not_found(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given an account with one conversation
    account = await channel_account(db, tenant)
    await persist_message(db, tenant, inbound(account_id=account.id))
    counts = await row_counts(engine)
    stored = await tenant_rows(engine, tenant)

    # When a reply names a conversation id that does not exist
    with pytest.raises(NotFound) as raised:
        await persist_message(db, tenant, outbound(account_id=account.id, conversation_id=2**62))

    # Then it is refused on conversationId and nothing was written
    assert [(e.field, e.code) for e in raised.value.errors] == [
        (("conversationId",), ErrorCode.NOT_FOUND)
    ]
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, tenant) == stored


async def test_outbound_on_a_channel_account_of_another_tenant_is_not_found(
    db: Database, engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    # Given another tenant's account and conversation
    theirs = await channel_account(db, other_tenant)
    their_conversation = await persist_message(db, other_tenant, inbound(account_id=theirs.id))
    counts = await row_counts(engine)
    stored = await tenant_rows(engine, other_tenant)

    # When we persist a reply on their account and conversation
    with pytest.raises(NotFound) as raised:
        await persist_message(
            db,
            tenant,
            outbound(account_id=theirs.id, conversation_id=their_conversation.conversation_id),
        )

    # Then their account does not exist for us, and nothing was written
    assert [(e.field, e.code) for e in raised.value.errors] == [
        (("channelAccountId",), ErrorCode.NOT_FOUND)
    ]
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, other_tenant) == stored
