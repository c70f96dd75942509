"""The write operations of the message store, each one transaction.

:func:`persist_message` is the hottest path: validate the whole normalized object first
(nothing is written if anything is wrong), then in one transaction upsert the contact, resolve
the conversation, insert the message idempotently, insert its attachments and move the
conversation's activity forward. Either all of it is stored or none of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import field
from datetime import UTC, datetime

import asyncpg
import orjson

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
    ConcurrentWrites,
    FieldError,
    IdempotencyConflict,
    Mismatch,
    NotFound,
    UserInputError,
    ValidationFailed,
)
from omni_store.persistence.records import record_class
from omni_store.persistence.repositories import (
    Attachment,
    ChannelAccount,
    Contact,
    ContactRow,
    Conversation,
    ConversationRow,
    Message,
    MessageRow,
    PlacedRow,
    Replay,
    Thread,
)
from omni_store.persistence.tenancy import TenantId
from omni_store.persistence.threads import thread_key

log = logging.getLogger(__name__)


@record_class
class Written:
    """The rows a message's transaction wrote or touched (a replay's: read), as the
    statements returned them: what a caller shows back needs no read after the write."""

    account: ChannelAccount
    message: Message
    conversation: Conversation
    contact: Contact | None  # None when the message named its conversation
    attachments: list[Attachment]


@record_class
class PersistResult:
    message_id: int
    conversation_id: int
    contact_id: int | None
    deduplicated: bool
    written: Written | None = field(default=None, compare=False, repr=False)


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
    free = [content.struct]
    for a in message.attachments:
        free += (a.metadata, a.size_bytes, a.duration_ms, a.width, a.height)
    return hashlib.sha256(_canonical_json(canonical, free)).digest()


def _canonical_json(value: object, free: Sequence[object]) -> bytes:
    """``value`` as the standard library encodes it (keys sorted, text as UTF-8, no spaces):
    stored digests were made of that text, and a replay must hash the same.

    orjson writes the same bytes three times faster, except for a float (7e-05 is 0.00007
    there) and an integer beyond 64 bits (which it refuses). Only the ``free`` values (JSON
    objects and the attachments' numbers) can hold a float: when one does, or orjson refuses
    the value, the standard library encodes it."""
    if not any(_holds_float(v) for v in free):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode()


def _holds_float(value: object) -> bool:
    if value is None or isinstance(value, str | int):
        return False
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_holds_float(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_float(v) for v in value)
    return True  # anything else: let the standard library say what it makes of it


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
        # The transaction was rolled back whole: this delivery wrote nothing. The winner's
        # message is shown as any replay is, from rows read in the transaction that finds it.
        assert message.channel_account_id is not None
        async with db.transaction(tenant) as uow:
            account, replay = await uow.messages.account_with_replay(
                message.channel_account_id, message.key
            )
            assert account is not None and replay is not None, (
                "a conflicting key must be visible once its writer committed"
            )
            return await _shown_replay(uow, account, message, digest, replay)


async def _persist(uow: UnitOfWork, message: NormalizedMessage, digest: bytes) -> PersistResult:
    assert message.channel_account_id is not None and message.channel_timestamp is not None
    place: Thread | int
    if message.conversation_id is not None:
        place = message.conversation_id
    else:
        assert message.contact is not None and message.contact.external_user_id is not None
        window = None
        if message.external_thread_id is None:
            # The fallback thread key depends on the account's window: read it first.
            account, replay = await uow.messages.account_with_replay(
                message.channel_account_id, message.key
            )
            if account is None:
                raise NotFound.of(("channelAccountId",), "This channel account")
            if replay is not None:
                return await _shown_replay(uow, account, message, digest, replay)
            window = account.fallback_window_seconds
        key = thread_key(
            external_thread_id=message.external_thread_id,
            external_user_id=message.contact.external_user_id,
            channel_timestamp=message.channel_timestamp,
            window_seconds=window,
        )
        place = Thread(message.contact, key, message.external_thread_id)

    persisted = await uow.messages.persist(_message_row(message, digest), place)
    if persisted is None:
        raise NotFound.of(("channelAccountId",), "This channel account")
    if persisted.replay is not None:
        return await _shown_replay(uow, persisted.account, message, digest, persisted.replay)
    conversation = persisted.conversation
    if conversation is None:
        # A conversation named by id that is not this account's: say why, as a batch would.
        assert message.conversation_id is not None
        refusal = _refusal(
            await uow.conversations.get(message.conversation_id), message.channel_account_id
        )
        assert refusal is not None
        raise refusal
    if persisted.stored is None:
        raise _DuplicateRace
    contact_id = persisted.stored.message.contact_id
    return PersistResult(
        persisted.stored.message.id,
        conversation.id,
        contact_id,
        False,
        Written(
            persisted.account,
            persisted.stored.message,
            conversation,
            persisted.contact,
            persisted.stored.attachments,
        ),
    )


async def _shown_replay(
    uow: UnitOfWork,
    account: ChannelAccount,
    message: NormalizedMessage,
    digest: bytes,
    replay: Replay,
) -> PersistResult:
    """A replay (or its conflict), with the rows its payload shows, read in the same
    transaction as the replay was found: no read after it."""
    result = _replayed(message, digest, replay)
    found = await uow.messages.with_relations(replay.message_id)
    assert found is not None, "a replay's message is in the transaction that found it"
    stored, conversation, contact = found
    written = Written(account, stored.message, conversation, contact, stored.attachments)
    return dataclasses.replace(result, written=written)


def _message_row(message: NormalizedMessage, digest: bytes) -> MessageRow:
    """The stored form of a validated message. Inbound, the sender is the contact; outbound,
    the agent, bot or system the reply sender named."""
    assert message.channel_account_id is not None and message.channel_timestamp is not None
    assert message.content is not None
    inbound = message.direction == Direction.INBOUND
    sender = message.sender
    return MessageRow(
        channel_account_id=message.channel_account_id,
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
        channel_timestamp=message.channel_timestamp,
        status=(DeliveryStatus.RECEIVED if inbound else DeliveryStatus.SENT).value,
        content_hash=digest,
        attachments=tuple(message.attachments),
    )


def _refusal(conversation: Conversation | None, channel_account_id: int) -> UserInputError | None:
    """Why a message naming ``conversation`` (None: absent or another tenant's) cannot be
    stored for this channel account; None when it can."""
    if conversation is None:
        return NotFound.of(("conversationId",), "This conversation")
    if conversation.channel_account_id != channel_account_id:
        return Mismatch(
            [
                FieldError(
                    ("conversationId",),
                    ErrorCode.MISMATCH,
                    "This conversation belongs to another channel account.",
                )
            ]
        )
    return None


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
    assert channel is not None and external_account_id is not None
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


# --- a batch (backfill) ------------------------------------------------------------------------

MAX_BATCH = 500
_BATCH_ATTEMPTS = 3
# Deadlock (two batches locking shared rows in another order) and serialization failure: the
# transaction was rolled back whole and can simply run again.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})

Outcome = PersistResult | UserInputError
"""What became of one message of a batch: stored (or deduplicated), or why it was refused."""


@record_class
class _Item:
    index: int
    message: NormalizedMessage
    digest: bytes

    @property
    def account_id(self) -> int:
        assert self.message.channel_account_id is not None
        return self.message.channel_account_id

    @property
    def key(self) -> tuple[int, str]:
        return (self.account_id, self.message.key)


def check_batch_size(count: int) -> None:
    """Raise :class:`ValidationFailed` for a batch of more than :data:`MAX_BATCH` messages."""
    if count > MAX_BATCH:
        raise ValidationFailed(
            [
                FieldError(
                    ("messages",),
                    ErrorCode.TOO_MANY,
                    f"A batch holds at most {MAX_BATCH} messages; send the rest in another.",
                )
            ]
        )


async def persist_messages(
    db: Database, tenant: TenantId, messages: Sequence[NormalizedMessage]
) -> list[Outcome]:
    """Store a batch of messages (a backfill) in one transaction, each exactly as
    :func:`persist_message` would: validated and idempotent on its own, with its original
    channel timestamp. A message that cannot be stored gets its error in its place and blocks
    none of the others; outcomes are in the order of ``messages``. Within the batch, a second
    message with the key of an earlier one is its replay (or its conflict).

    Set-based: two reads and four writes whatever the batch size, so a batch costs little more
    than the rows themselves.
    """
    check_batch_size(len(messages))
    outcomes: dict[int, Outcome] = {}
    items: list[_Item] = []
    now = datetime.now(UTC)
    for index, message in enumerate(messages):
        try:
            validate_message(message, now=now)
        except ValidationFailed as error:
            outcomes[index] = error
        else:
            items.append(_Item(index, message, content_hash(message)))
    for attempt in range(1, _BATCH_ATTEMPTS + 1):
        try:
            async with db.transaction(tenant) as uow:
                last = attempt == _BATCH_ATTEMPTS
                outcomes.update(await _persist_batch(uow, items, exclusive=last))
            return [outcomes[index] for index in range(len(messages))]
        except _DuplicateRace:
            # Rolled back whole; the next attempt sees what the other delivery stored as replays.
            log.info(
                "batch of %d rolled back (attempt %d): a key was stored meanwhile",
                len(items),
                attempt,
            )
            if attempt == _BATCH_ATTEMPTS:
                raise ConcurrentWrites from None
        except asyncpg.PostgresError as error:
            sqlstate = error.sqlstate
            if attempt == _BATCH_ATTEMPTS or sqlstate not in _RETRY_SQLSTATES:
                raise
            log.info(
                "batch of %d rolled back (attempt %d): SQLSTATE %s", len(items), attempt, sqlstate
            )
    raise AssertionError("unreachable")


async def _persist_batch(
    uow: UnitOfWork, items: Sequence[_Item], *, exclusive: bool
) -> dict[int, Outcome]:
    outcomes: dict[int, Outcome] = {}
    if not items:
        return outcomes

    # 1. What exists: the accounts, earlier deliveries, the conversations replies name.
    # Batches of one account run side by side, holding the account shared: their keys rarely
    # meet, and when another delivery stores a key between this one's read and its insert,
    # the caller rolls back and runs again. The last attempt holds the accounts exclusively
    # until commit, so no other batch can race it (only a single persistMessage, rarely).
    accounts = await uow.channel_accounts.lock_many(
        sorted({i.account_id for i in items}), exclusive=exclusive
    )
    known = [i for i in items if i.account_id in accounts]
    for item in items:
        if item.account_id not in accounts:
            outcomes[item.index] = NotFound.of(("channelAccountId",), "This channel account")
    replays = await uow.messages.find_replays(sorted({i.key for i in known}))
    fresh = [i for i in known if i.key not in replays]
    named = sorted({i.message.conversation_id for i in fresh if i.message.conversation_id})
    conversations = await uow.conversations.get_many(named) if named else {}

    # 2. Which message writes each key: the first that can be stored; later ones replay it.
    writers: dict[tuple[int, str], _Item] = {}
    followers: list[_Item] = []
    for item in known:
        replay = replays.get(item.key)
        if replay is not None:
            try:
                outcomes[item.index] = _replayed(item.message, item.digest, replay)
            except IdempotencyConflict as conflict:
                outcomes[item.index] = conflict
            continue
        conversation_id = item.message.conversation_id
        if conversation_id is not None:
            refusal = _refusal(conversations.get(conversation_id), item.account_id)
            if refusal is not None:
                outcomes[item.index] = refusal
                continue
        if item.key in writers:
            followers.append(item)
        else:
            writers[item.key] = item

    # 3. Contacts, then conversations, then messages with their attachments: each one
    # statement for the whole batch, rows in key order. The conversations replies name are
    # moved forward by the same upsert as those found by thread (they exist, so it only
    # updates them): every batch then locks conversation rows in one order, where an upsert
    # by thread followed by an update by id let two batches wait for each other.
    threaded = [i for i in writers.values() if i.message.conversation_id is None]
    contacts: dict[tuple[int, str], ContactInput] = {}
    for item in threaded:
        contact = item.message.contact
        assert contact is not None and contact.external_user_id is not None
        user = (item.account_id, contact.external_user_id)
        contacts[user] = _refreshed(contacts.get(user), contact)
    stored_contacts = await uow.contacts.upsert_many(
        [ContactRow(a, c) for (a, _), c in contacts.items()]
    )

    threads: dict[tuple[int, str], ConversationRow] = {}
    placed: dict[tuple[int, str], tuple[tuple[int, str], int | None]] = {}
    for key, item in writers.items():
        account = accounts[item.account_id]
        message = item.message
        assert message.channel_timestamp is not None
        if message.conversation_id is not None:
            conversation = conversations[message.conversation_id]
            thread = conversation.thread_key
            row = ConversationRow(account, thread, None, None, message.channel_timestamp)
            contact_id = conversation.contact_id
        else:
            assert message.contact is not None and message.contact.external_user_id is not None
            contact_id = stored_contacts[(account.id, message.contact.external_user_id)].id
            thread = thread_key(
                external_thread_id=message.external_thread_id,
                external_user_id=message.contact.external_user_id,
                channel_timestamp=message.channel_timestamp,
                window_seconds=account.fallback_window_seconds,
            )
            row = ConversationRow(
                account, thread, message.external_thread_id, contact_id, message.channel_timestamp
            )
        placed[key] = ((account.id, thread), contact_id)
        earlier = threads.get((account.id, thread))
        threads[(account.id, thread)] = (
            row
            if earlier is None
            else dataclasses.replace(
                earlier,
                # Stored values win over later ones, as in ConversationRepository.upsert.
                external_thread_id=earlier.external_thread_id or row.external_thread_id,
                contact_id=earlier.contact_id if earlier.contact_id is not None else row.contact_id,
                at=max(earlier.at, row.at),
            )
        )
    stored_conversations = await uow.conversations.upsert_many(list(threads.values()))

    inserted = await uow.messages.insert_many(
        [
            PlacedRow(
                _message_row(item.message, item.digest),
                conversation_id=stored_conversations[placed[key][0]].id,
                contact_id=placed[key][1],
            )
            for key, item in writers.items()
        ]
    )
    if len(inserted) != len(writers):
        raise _DuplicateRace

    for key, item in writers.items():
        conversation_key, contact_id = placed[key]
        outcomes[item.index] = PersistResult(
            inserted[key], stored_conversations[conversation_key].id, contact_id, False
        )
    for item in followers:
        stored = outcomes[writers[item.key].index]
        assert isinstance(stored, PersistResult)
        outcomes[item.index] = (
            dataclasses.replace(stored, deduplicated=True)
            if item.digest == writers[item.key].digest
            else IdempotencyConflict(stored.message_id, _key_field(item.message))
        )
    return outcomes


def _refreshed(earlier: ContactInput | None, later: ContactInput) -> ContactInput:
    """Two upserts of one contact in a row, as one: what the later gives wins."""
    if earlier is None:
        return later
    return ContactInput(
        external_user_id=later.external_user_id,
        display_name=later.display_name if later.display_name is not None else earlier.display_name,
        avatar_url=later.avatar_url if later.avatar_url is not None else earlier.avatar_url,
        profile=later.profile if later.profile is not None else earlier.profile,
    )
