"""The write operations of the message store, each one transaction.

:func:`persist_message` is the hottest path: validate the whole normalized object first
(nothing is written if anything is wrong), then in one transaction upsert the contact, resolve
the conversation, insert the message idempotently, insert its attachments and move the
conversation's activity forward. Either all of it is stored or none of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from omni_store.persistence.contract import (
    AttachmentInput,
    ContactInput,
    NormalizedMessage,
    validate_attachments,
    validate_channel_account,
    validate_contact,
    validate_conversation,
    validate_message,
)
from omni_store.persistence.database import Database, UnitOfWork
from omni_store.persistence.enums import (
    Channel,
    DeliveryStatus,
    Direction,
    ErrorCode,
    SenderType,
)
from omni_store.persistence.errors import (
    FieldError,
    IdempotencyConflict,
    Mismatch,
    NotFound,
)
from omni_store.persistence.repositories import (
    Attachment,
    ChannelAccount,
    Contact,
    Conversation,
    Replay,
)
from omni_store.persistence.tenancy import TenantId
from omni_store.persistence.threads import thread_key


@dataclass(frozen=True, slots=True)
class PersistResult:
    message_id: int
    conversation_id: int
    contact_id: int | None
    deduplicated: bool


def content_hash(message: NormalizedMessage) -> bytes:
    """A digest of what makes the message this message: a replay under the same key must
    carry the same. Contact profile fields are not part of it (they are refreshed data)."""
    at = message.channel_timestamp
    assert at is not None
    content = message.content
    assert content is not None
    sender = message.sender
    canonical = {
        "direction": str(message.direction),
        "conversation": message.conversation_id,
        "thread": message.external_thread_id,
        "user": message.contact.external_user_id if message.contact else None,
        "sender": None
        if sender is None
        else [str(sender.type), sender.external_id, sender.display_name, sender.avatar_url],
        "content": [str(content.type), content.text, content.struct],
        "attachments": [
            [
                str(a.kind),
                a.url,
                a.mime_type,
                a.size_bytes,
                a.file_name,
                a.width,
                a.height,
                a.duration_ms,
                a.external_id,
                a.metadata,
            ]
            for a in message.attachments
        ],
        # The same instant in any offset is the same event.
        "at": at.astimezone(UTC).isoformat(),
        "external_id": message.external_message_id,
        "reply_to": message.reply_to_external_message_id,
    }
    encoded = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).digest()


class _DuplicateRace(Exception):
    """Another delivery of the same key committed between our first read and our insert."""


def _key_field(message: NormalizedMessage) -> tuple[str, ...]:
    return ("idempotencyKey",) if message.idempotency_key is not None else ("externalMessageId",)


def _replayed(message: NormalizedMessage, digest: bytes, replay: Replay) -> PersistResult:
    if replay.content_hash != digest:
        raise IdempotencyConflict(replay.message_id, _key_field(message))
    return PersistResult(replay.message_id, replay.conversation_id, replay.contact_id, True)


async def persist_message(
    db: Database, tenant: TenantId, message: NormalizedMessage
) -> PersistResult:
    """Store one normalized message exactly once per (tenant, channel account, key).

    A replay writes nothing and returns the stored ids with ``deduplicated=True``; a replay
    whose content differs raises :class:`IdempotencyConflict` carrying the stored id.
    """
    validate_message(message)
    digest = content_hash(message)
    try:
        async with db.transaction(tenant) as uow:
            return await _persist(uow, message, digest)
    except _DuplicateRace:
        # The transaction was rolled back whole: this delivery wrote nothing.
        async with db.transaction(tenant) as uow:
            replay = await uow.messages.find_replay(message.channel_account_id or 0, message.key)
        assert replay is not None, "a conflicting key must be visible once its writer committed"
        return _replayed(message, digest, replay)


async def _persist(uow: UnitOfWork, message: NormalizedMessage, digest: bytes) -> PersistResult:
    assert message.channel_account_id is not None and message.channel_timestamp is not None
    assert message.content is not None
    account, replay = await uow.messages.account_with_replay(
        message.channel_account_id, message.key
    )
    if account is None:
        raise NotFound.of(("channelAccountId",), "This channel account")
    if replay is not None:
        return _replayed(message, digest, replay)

    at = message.channel_timestamp
    contact: Contact | None = None
    if message.conversation_id is not None:
        conversation = await uow.conversations.touch(
            message.conversation_id, channel_account_id=account.id, at=at
        )
        if conversation is None:
            await _explain_missing_conversation(uow, message.conversation_id)
        assert conversation is not None
        contact_id = conversation.contact_id
    else:
        assert message.contact is not None and message.contact.external_user_id is not None
        contact = await uow.contacts.upsert(account.id, message.contact)
        contact_id = contact.id
        conversation = await uow.conversations.upsert(
            account,
            thread_key=thread_key(
                external_thread_id=message.external_thread_id,
                external_user_id=contact.external_user_id,
                channel_timestamp=at,
                window_seconds=account.fallback_window_seconds,
            ),
            external_thread_id=message.external_thread_id,
            contact_id=contact.id,
            at=at,
        )

    inbound = message.direction == Direction.INBOUND
    sender = message.sender
    message_id = await uow.messages.insert(
        channel_account_id=account.id,
        conversation_id=conversation.id,
        contact_id=contact_id,
        direction=str(message.direction),
        sender_type=SenderType.CONTACT.value if inbound else str(sender.type if sender else ""),
        sender_external_id=(sender.external_id if sender else None)
        or (message.contact.external_user_id if inbound and message.contact else None),
        sender_display_name=None if inbound or sender is None else sender.display_name,
        sender_avatar_url=None if inbound or sender is None else sender.avatar_url,
        content_type=str(message.content.type),
        content_text=message.content.text,
        content_struct=message.content.struct,
        external_message_id=message.external_message_id,
        idempotency_key=message.key,
        reply_to_external_message_id=message.reply_to_external_message_id,
        channel_timestamp=at,
        status=(DeliveryStatus.RECEIVED if inbound else DeliveryStatus.SENT).value,
        content_hash=digest,
    )
    if message_id is None:
        raise _DuplicateRace
    await uow.attachments.insert_many(message_id, message.attachments)
    return PersistResult(message_id, conversation.id, contact_id, False)


async def _explain_missing_conversation(uow: UnitOfWork, conversation_id: int) -> None:
    if await uow.conversations.get(conversation_id) is None:
        raise NotFound.of(("conversationId",), "This conversation")
    raise Mismatch(
        [
            FieldError(
                ("conversationId",),
                ErrorCode.MISMATCH,
                "This conversation belongs to another channel account.",
            )
        ]
    )


# --- the other write operations ---------------------------------------------------------------


async def register_channel_account(
    db: Database,
    tenant: TenantId,
    *,
    channel: Channel | str | None,
    external_account_id: str | None,
    display_name: str | None = None,
    fallback_window_seconds: int | None = None,
) -> tuple[ChannelAccount, bool]:
    """Create a channel account, or refresh and return the existing one (flag: created)."""
    validate_channel_account(channel, external_account_id, display_name, fallback_window_seconds)
    assert external_account_id is not None
    async with db.transaction(tenant) as uow:
        return await uow.channel_accounts.register(
            channel=Channel(channel),
            external_account_id=external_account_id,
            display_name=display_name,
            fallback_window_seconds=fallback_window_seconds,
        )


async def _account(uow: UnitOfWork, channel_account_id: int) -> ChannelAccount:
    account = await uow.channel_accounts.get(channel_account_id)
    if account is None:
        raise NotFound.of(("channelAccountId",), "This channel account")
    return account


async def upsert_contact(
    db: Database, tenant: TenantId, channel_account_id: int | None, contact: ContactInput
) -> Contact:
    validate_contact(channel_account_id, contact)
    assert channel_account_id is not None
    async with db.transaction(tenant) as uow:
        account = await _account(uow, channel_account_id)
        return await uow.contacts.upsert(account.id, contact)


async def upsert_conversation(
    db: Database,
    tenant: TenantId,
    *,
    channel_account_id: int | None,
    external_thread_id: str | None,
    contact: ContactInput | None,
    channel_timestamp: datetime | None,
) -> tuple[Conversation, Contact | None]:
    """Resolve (or open) the conversation of a thread, by the same rule persist uses."""
    validate_conversation(channel_account_id, external_thread_id, contact, channel_timestamp)
    assert channel_account_id is not None and channel_timestamp is not None
    async with db.transaction(tenant) as uow:
        account = await _account(uow, channel_account_id)
        stored = await uow.contacts.upsert(account.id, contact) if contact else None
        conversation = await uow.conversations.upsert(
            account,
            thread_key=thread_key(
                external_thread_id=external_thread_id,
                external_user_id=stored.external_user_id if stored else None,
                channel_timestamp=channel_timestamp,
                window_seconds=account.fallback_window_seconds,
            ),
            external_thread_id=external_thread_id,
            contact_id=stored.id if stored else None,
            at=channel_timestamp,
        )
        return conversation, stored


async def add_attachments(
    db: Database, tenant: TenantId, message_id: int | None, items: Sequence[AttachmentInput]
) -> list[Attachment]:
    """Append metadata that arrived after the message (media processed later). Retry-safe:
    an attachment whose externalId the message already has is not stored twice."""
    validate_attachments(message_id, items)
    assert message_id is not None
    async with db.transaction(tenant) as uow:
        if not await uow.messages.lock(message_id):
            raise NotFound.of(("messageId",), "This message")
        stored = (await uow.attachments.by_messages([message_id])).get(message_id, [])
        # A retry brings attachments the message already has: they are neither counted against
        # the limit nor given a position (which would leave a gap when the insert skips them).
        known = {a.external_id for a in stored if a.external_id is not None}
        fresh: list[AttachmentInput] = []
        for item in items:
            if item.external_id is None or item.external_id not in known:
                fresh.append(item)
                if item.external_id is not None:
                    known.add(item.external_id)
        if not fresh:
            return stored
        validate_attachments(message_id, fresh, already=len(stored))
        next_position = stored[-1].position + 1 if stored else 0
        await uow.attachments.insert_many(message_id, fresh, start_position=next_position)
        return (await uow.attachments.by_messages([message_id])).get(message_id, [])
