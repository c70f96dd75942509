"""Tenant-scoped repositories: every statement of the message store lives here.

A repository is built from a :class:`~omni_store.persistence.database.UnitOfWork`, which is
bound to one tenant; every statement below filters on (or writes) that tenant's id, so no
method can run unscoped. Repositories never commit: the unit of work does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    Table,
    TextualSelect,
    and_,
    bindparam,
    column,
    func,
    literal,
    literal_column,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert

from omni_store.persistence.contract import (
    DEFAULT_FALLBACK_WINDOW_SECONDS,
    AttachmentInput,
    ContactInput,
)
from omni_store.persistence.cursors import (
    Keyset,
    Page,
    PageRequest,
    decode_cursor,
    encode_cursor,
)
from omni_store.persistence.enums import Channel
from omni_store.persistence.records import record_class
from omni_store.persistence.tables import (
    TimestampTZ,
    attachments,
    channel_accounts,
    contacts,
    conversations,
    messages,
)

if TYPE_CHECKING:
    from omni_store.persistence.database import UnitOfWork

R = TypeVar("R")
_IDS = ARRAY(BigInteger)  # a list of ids, bound as one parameter


# --- records -------------------------------------------------------------------------------


@record_class
class ChannelAccount:
    tenant_id: Any
    id: int
    channel: str
    external_account_id: str
    display_name: str | None
    fallback_window_seconds: int
    created_at: datetime


@record_class
class Contact:
    tenant_id: Any
    id: int
    channel_account_id: int
    external_user_id: str
    display_name: str | None
    avatar_url: str | None
    profile: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@record_class
class Conversation:
    tenant_id: Any
    id: int
    channel_account_id: int
    channel: str
    thread_key: str
    external_thread_id: str | None
    contact_id: int | None
    last_message_at: datetime
    created_at: datetime


@record_class
class Message:
    tenant_id: Any
    id: int
    channel_account_id: int
    conversation_id: int
    contact_id: int | None
    direction: str
    sender_type: str
    sender_external_id: str | None
    sender_display_name: str | None
    sender_avatar_url: str | None
    content_type: str
    content_text: str | None
    content_struct: dict[str, Any] | None
    external_message_id: str | None
    idempotency_key: str
    reply_to_external_message_id: str | None
    channel_timestamp: datetime
    created_at: datetime
    status: str


@record_class
class Attachment:
    tenant_id: Any
    id: int
    message_id: int
    position: int
    kind: str
    url: str | None
    mime_type: str | None
    size_bytes: int | None
    file_name: str | None
    width: int | None
    height: int | None
    duration_ms: int | None
    external_id: str | None
    metadata: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Relations:
    """Which rows related to each conversation of a page to read with the page."""

    contact: bool = False
    last_message: bool = False


@dataclass(frozen=True, slots=True)
class ListedConversations:
    """A page of conversations and the related rows asked for (:class:`Relations`): the
    contacts by id, the last messages by conversation id (None for a conversation without
    one). A relation not asked for is empty."""

    page: Page[Conversation]
    contacts: dict[int, Contact]
    last_messages: dict[int, Message | None]


@record_class
class StoredMessage:
    """A message as its insert stored it, with its attachments in position order."""

    message: Message
    attachments: list[Attachment]


@record_class
class Replay:
    """What an earlier delivery of the same idempotency key stored."""

    message_id: int
    conversation_id: int
    contact_id: int | None
    content_hash: bytes


# --- rows of the batch writes ---------------------------------------------------------------


@record_class
class ContactRow:
    channel_account_id: int
    contact: ContactInput


@record_class
class ConversationRow:
    account: ChannelAccount
    thread_key: str
    external_thread_id: str | None
    contact_id: int | None
    at: datetime


@record_class
class MessageRow:
    """A message as stored (every column but the generated ones and the conversation and
    contact it is placed in), with its attachments."""

    channel_account_id: int
    direction: str
    sender_type: str
    sender_external_id: str | None
    sender_display_name: str | None
    sender_avatar_url: str | None
    content_type: str
    content_text: str | None
    content_struct: Any
    external_message_id: str | None
    idempotency_key: str
    reply_to_external_message_id: str | None
    channel_timestamp: datetime
    status: str
    content_hash: bytes
    attachments: Sequence[AttachmentInput] = ()


@record_class
class PlacedRow:
    """A message row with the conversation and contact a batch placed it in."""

    row: MessageRow
    conversation_id: int
    contact_id: int | None


@record_class
class Thread:
    """Where a new message that names no conversation goes: its contact (upserted) and the
    conversation of its thread key (upserted, the contact's if it had none)."""

    contact: ContactInput
    thread_key: str
    external_thread_id: str | None


@record_class
class Persisted:
    """What the statement of one new message found and wrote (see
    :meth:`MessageRepository.persist`)."""

    account: ChannelAccount
    replay: Replay | None  # an earlier delivery of the key: nothing was written
    contact: Contact | None  # the thread's contact (None for a conversation named by id)
    # None, with no replay: the conversation named by id is not this account's.
    conversation: Conversation | None
    # None, with a conversation: another delivery stored the key since the statement's
    # snapshot. The contact and conversation were upserted all the same: roll back.
    stored: StoredMessage | None


def _json_text(value: Any) -> str | None:
    """A JSON value as the text a batch statement casts to jsonb (None: SQL NULL)."""
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _attachment_arrays(items: Sequence[AttachmentInput], prefix: str = "") -> dict[str, Any]:
    """The attachment columns of the insert statements, one array each."""
    return {
        f"{prefix}kinds": [str(a.kind) for a in items],
        f"{prefix}urls": [a.url for a in items],
        f"{prefix}mime_types": [a.mime_type for a in items],
        f"{prefix}sizes": [a.size_bytes for a in items],
        f"{prefix}file_names": [a.file_name for a in items],
        f"{prefix}widths": [a.width for a in items],
        f"{prefix}heights": [a.height for a in items],
        f"{prefix}durations": [a.duration_ms for a in items],
        f"{prefix}external_ids": [a.external_id for a in items],
        f"{prefix}metadata": [_json_text(a.metadata) for a in items],
    }


def _select_list(alias: str, record: type) -> str:
    return ", ".join(f"{alias}.{f.name}" for f in fields(record))


def _names(record: type, prefix: str = "") -> list[str]:
    return [f"{prefix}{f.name}" for f in fields(record)]


def _rows_of(statement: str, names: Sequence[str]) -> TextualSelect:
    """A textual statement whose rows hold ``names``, in this order. Told the columns,
    SQLAlchemy describes the rows once per statement; a bare ``text()`` has its rows described
    anew from the cursor at every execution (a few per cent of a persist's CPU)."""
    return text(statement).columns(*(column(name) for name in names))


# The parts of the write statements that more than one of them holds: the batch statements and
# the one of a single message must insert, and refresh what exists, the same way.
_INSERT_CONTACT = """INSERT INTO contacts AS c
    (tenant_id, channel_account_id, external_user_id, display_name, avatar_url, profile)"""
_MERGE_CONTACT = """ON CONFLICT (tenant_id, channel_account_id, external_user_id) DO UPDATE SET
    display_name = COALESCE(EXCLUDED.display_name, c.display_name),
    avatar_url = COALESCE(EXCLUDED.avatar_url, c.avatar_url),
    profile = COALESCE(EXCLUDED.profile, c.profile),
    updated_at = now()"""
_INSERT_CONVERSATION = """INSERT INTO conversations AS c
    (tenant_id, channel_account_id, channel, thread_key, external_thread_id, contact_id,
     last_message_at)"""
# Stored values win over later ones, but the activity only moves forward.
_MERGE_CONVERSATION = """ON CONFLICT (tenant_id, channel_account_id, thread_key) DO UPDATE SET
    last_message_at = GREATEST(c.last_message_at, EXCLUDED.last_message_at),
    contact_id = COALESCE(c.contact_id, EXCLUDED.contact_id),
    external_thread_id = COALESCE(c.external_thread_id, EXCLUDED.external_thread_id)"""
_INSERT_MESSAGE = """INSERT INTO messages
    (tenant_id, channel_account_id, conversation_id, contact_id, direction, sender_type,
     sender_external_id, sender_display_name, sender_avatar_url, content_type,
     content_text, content_struct, external_message_id, idempotency_key,
     reply_to_external_message_id, channel_timestamp, status, content_hash)"""
# The database arbitrates concurrent deliveries of one key: the second inserts nothing.
_NEW_KEY_ONLY = "ON CONFLICT (tenant_id, channel_account_id, idempotency_key) DO NOTHING"
_INSERT_ATTACHMENT = """INSERT INTO attachments
    (tenant_id, message_id, position, kind, url, mime_type, size_bytes, file_name, width,
     height, duration_ms, external_id, metadata)"""
_ATTACHMENT_VALUES = """a.position, a.kind, a.url, a.mime_type, a.size, a.file_name, a.width,
       a.height, a.duration, a.external_id, CAST(a.metadata AS jsonb)"""
_NEW_ATTACHMENT_ONLY = "ON CONFLICT (tenant_id, message_id, external_id) DO NOTHING"
# (parameter, SQL type, name in the statement) of the arrays of _attachment_arrays.
_ATTACHMENT_ARRAYS = (
    ("kinds", "text", "kind"),
    ("urls", "text", "url"),
    ("mime_types", "text", "mime_type"),
    ("sizes", "bigint", "size"),
    ("file_names", "text", "file_name"),
    ("widths", "integer", "width"),
    ("heights", "integer", "height"),
    ("durations", "bigint", "duration"),
    ("external_ids", "text", "external_id"),
    ("metadata", "text", "metadata"),
)


def _attachments_unnested(prefix: str, *leading: tuple[str, str, str]) -> str:
    """The attachment arrays (after ``leading`` ones) as the rows of ``a``, in order ``a.n``."""
    arrays = [*leading, *_ATTACHMENT_ARRAYS]
    casts = ",\n            ".join(f"CAST(:{prefix}{p} AS {t}[])" for p, t, _ in arrays)
    names = ", ".join(name for _, _, name in arrays)
    return f"unnest({casts})\n     WITH ORDINALITY AS a({names}, n)"


_POSITIONS = ("positions", "integer", "position")


# The batch statements take one array per column and unnest them: the statement (and so its
# prepared plan) is the same whatever the batch size, and no batch nears the protocol's limit
# of 32,767 parameters. Every one is scoped by :tenant like the rest.
_UPSERT_CONTACTS = _rows_of(
    f"""
{_INSERT_CONTACT}
SELECT CAST(:tenant AS uuid), v.account_id, v.user_id, v.display_name, v.avatar_url,
       CAST(v.profile AS jsonb)
FROM unnest(CAST(:account_ids AS bigint[]), CAST(:user_ids AS text[]),
            CAST(:display_names AS text[]), CAST(:avatar_urls AS text[]),
            CAST(:profiles AS text[]))
     WITH ORDINALITY AS v(account_id, user_id, display_name, avatar_url, profile, n)
ORDER BY v.n
{_MERGE_CONTACT}
RETURNING {_select_list("c", Contact)}
""",
    _names(Contact),
)
_UPSERT_CONVERSATIONS = _rows_of(
    f"""
{_INSERT_CONVERSATION}
SELECT CAST(:tenant AS uuid), v.account_id, v.channel, v.thread_key, v.thread_id,
       v.contact_id, v.at
FROM unnest(CAST(:account_ids AS bigint[]), CAST(:channels AS text[]),
            CAST(:thread_keys AS text[]), CAST(:thread_ids AS text[]),
            CAST(:contact_ids AS bigint[]), CAST(:ats AS timestamptz[]))
     WITH ORDINALITY AS v(account_id, channel, thread_key, thread_id, contact_id, at, n)
ORDER BY v.n
{_MERGE_CONVERSATION}
RETURNING {_select_list("c", Conversation)}
""",
    _names(Conversation),
)
_FIND_REPLAYS = _rows_of(
    """
SELECT m.channel_account_id, m.idempotency_key, m.id, m.conversation_id, m.contact_id,
       m.content_hash
FROM unnest(CAST(:account_ids AS bigint[]), CAST(:keys AS text[])) AS k(account_id, key)
JOIN messages AS m
  ON m.tenant_id = CAST(:tenant AS uuid)
 AND m.channel_account_id = k.account_id
 AND m.idempotency_key = k.key
""",
    [
        "channel_account_id",
        "idempotency_key",
        "id",
        "conversation_id",
        "contact_id",
        "content_hash",
    ],
)


# A batch's messages and their attachments in one statement: the attachments find their
# message by its key among the rows the insert returned, so a message another delivery stored
# first (absent from them) gets no attachments from this one.
_INSERT_MESSAGES = _rows_of(
    f"""
WITH inserted AS (
    {_INSERT_MESSAGE}
    SELECT CAST(:tenant AS uuid), v.account_id, v.conversation_id, v.contact_id, v.direction,
           v.sender_type, v.sender_id, v.sender_name, v.sender_avatar, v.content_type, v.text,
           CAST(v.struct AS jsonb), v.external_id, v.key, v.reply_to, v.at, v.status, v.hash
    FROM unnest(CAST(:account_ids AS bigint[]), CAST(:conversation_ids AS bigint[]),
                CAST(:contact_ids AS bigint[]), CAST(:directions AS text[]),
                CAST(:sender_types AS text[]), CAST(:sender_ids AS text[]),
                CAST(:sender_names AS text[]), CAST(:sender_avatars AS text[]),
                CAST(:content_types AS text[]), CAST(:texts AS text[]),
                CAST(:structs AS text[]), CAST(:external_ids AS text[]),
                CAST(:keys AS text[]), CAST(:reply_tos AS text[]),
                CAST(:ats AS timestamptz[]), CAST(:statuses AS text[]),
                CAST(:hashes AS bytea[]))
         WITH ORDINALITY AS v(account_id, conversation_id, contact_id, direction, sender_type,
                              sender_id, sender_name, sender_avatar, content_type, text,
                              struct, external_id, key, reply_to, at, status, hash, n)
    ORDER BY v.n
    {_NEW_KEY_ONLY}
    RETURNING id, channel_account_id, idempotency_key
), files AS (
    {_INSERT_ATTACHMENT}
    SELECT CAST(:tenant AS uuid), i.id, {_ATTACHMENT_VALUES}
    FROM {
        _attachments_unnested(
            "a_", ("account_ids", "bigint", "account_id"), ("keys", "text", "key"), _POSITIONS
        )
    }
    JOIN inserted AS i ON i.channel_account_id = a.account_id AND i.idempotency_key = a.key
    ORDER BY a.n
    {_NEW_ATTACHMENT_ONLY}
)
SELECT id, channel_account_id, idempotency_key FROM inserted
""",
    ["id", "channel_account_id", "idempotency_key"],
)


# One new message in one statement: the first read of every persist (the account, and an
# earlier delivery of the key) and, when the key is new, every write: the thread's contact and
# conversation upserted (or the conversation named by id moved forward, if it is the
# account's), the message inserted unless its key is taken, then its attachments. Each write
# takes its ids from the one before (RETURNING), so rows are locked in the order the batch
# locks them: contact, conversation, message. The answer is one row per attachment (one, with
# NULLs, when there is none): account, replay, contact, conversation, message, attachment.
@cache
def _persist_one(threaded: bool) -> Any:
    if threaded:
        place = f"""contact AS (
    {_INSERT_CONTACT}
    SELECT CAST(:tenant AS uuid), a.id, CAST(:user_id AS text), CAST(:display_name AS text),
           CAST(:avatar_url AS text), CAST(:profile AS jsonb)
    FROM account AS a
    WHERE NOT EXISTS (SELECT FROM replay)
    {_MERGE_CONTACT}
    RETURNING {_select_list("c", Contact)}
), conversation AS (
    {_INSERT_CONVERSATION}
    SELECT CAST(:tenant AS uuid), a.id, a.channel, CAST(:thread_key AS text),
           CAST(:thread_id AS text), k.id, CAST(:at AS timestamptz)
    FROM account AS a CROSS JOIN contact AS k
    {_MERGE_CONVERSATION}
    RETURNING {_select_list("c", Conversation)}
)"""
        placed, contact_id = "conversation AS v CROSS JOIN contact AS k", "k.id"
        contact = _select_list("k", Contact)
        contact_join = "LEFT JOIN contact AS k ON true"
    else:
        place = f"""conversation AS (
    UPDATE conversations AS c
    SET last_message_at = GREATEST(c.last_message_at, CAST(:at AS timestamptz))
    FROM account AS a
    WHERE c.tenant_id = CAST(:tenant AS uuid) AND c.id = CAST(:conversation_id AS bigint)
      AND c.channel_account_id = a.id AND NOT EXISTS (SELECT FROM replay)
    RETURNING {_select_list("c", Conversation)}
)"""
        placed, contact_id = "conversation AS v", "v.contact_id"
        contact = ", ".join("NULL" for _ in fields(Contact))
        contact_join = ""
    return _rows_of(
        f"""
WITH account AS (
    SELECT {_select_list("a", ChannelAccount)}
    FROM channel_accounts AS a
    WHERE a.tenant_id = CAST(:tenant AS uuid) AND a.id = CAST(:account_id AS bigint)
), replay AS (
    SELECT m.id, m.conversation_id, m.contact_id, m.content_hash
    FROM messages AS m
    WHERE m.tenant_id = CAST(:tenant AS uuid) AND m.channel_account_id = CAST(:account_id AS bigint)
      AND m.idempotency_key = CAST(:key AS text)
), {place}, inserted AS (
    {_INSERT_MESSAGE}
    SELECT CAST(:tenant AS uuid), v.channel_account_id, v.id, {contact_id},
           CAST(:direction AS text), CAST(:sender_type AS text), CAST(:sender_id AS text),
           CAST(:sender_name AS text), CAST(:sender_avatar AS text),
           CAST(:content_type AS text), CAST(:text AS text), CAST(:struct AS jsonb),
           CAST(:external_id AS text), CAST(:key AS text), CAST(:reply_to AS text),
           CAST(:at AS timestamptz), CAST(:status AS text), CAST(:hash AS bytea)
    FROM {placed}
    {_NEW_KEY_ONLY}
    RETURNING {", ".join(f.name for f in fields(Message))}
), files AS (
    {_INSERT_ATTACHMENT}
    SELECT CAST(:tenant AS uuid), i.id, {_ATTACHMENT_VALUES}
    FROM {_attachments_unnested("a_", _POSITIONS)}
    CROSS JOIN inserted AS i
    ORDER BY a.n
    {_NEW_ATTACHMENT_ONLY}
    RETURNING {", ".join(f.name for f in fields(Attachment))}
)
SELECT {_select_list("a", ChannelAccount)}, r.id, r.conversation_id, r.contact_id, r.content_hash,
       {contact}, {_select_list("v", Conversation)},
       {_select_list("i", Message)}, {_select_list("f", Attachment)}
FROM account AS a
LEFT JOIN replay AS r ON true
{contact_join}
LEFT JOIN conversation AS v ON true
LEFT JOIN inserted AS i ON true
LEFT JOIN files AS f ON true
ORDER BY f.position
""",
        [
            *_names(ChannelAccount, "account_"),
            *("replay_id", "replay_conversation_id", "replay_contact_id", "replay_content_hash"),
            *_names(Contact, "contact_"),
            *_names(Conversation, "conversation_"),
            *_names(Message, "message_"),
            *_names(Attachment, "attachment_"),
        ],
    )


_INSERT_ATTACHMENTS = _rows_of(
    f"""
{_INSERT_ATTACHMENT}
SELECT CAST(:tenant AS uuid), :message_id, {_ATTACHMENT_VALUES}
FROM {_attachments_unnested("", _POSITIONS)}
ORDER BY a.n
{_NEW_ATTACHMENT_ONLY}
RETURNING {", ".join(f.name for f in fields(Attachment))}
""",
    _names(Attachment),
)


# A stored message with what its payload shows (its conversation, its contact and its
# attachments in position order), one row per attachment: a replay is shown from it.
_MESSAGE_WITH_RELATIONS = _rows_of(
    f"""
SELECT {_select_list("m", Message)}, {_select_list("v", Conversation)},
       {_select_list("k", Contact)}, {_select_list("f", Attachment)}
FROM messages AS m
JOIN conversations AS v ON v.tenant_id = m.tenant_id AND v.id = m.conversation_id
LEFT JOIN contacts AS k ON k.tenant_id = m.tenant_id AND k.id = m.contact_id
LEFT JOIN attachments AS f ON f.tenant_id = m.tenant_id AND f.message_id = m.id
WHERE m.tenant_id = CAST(:tenant AS uuid) AND m.id = CAST(:id AS bigint)
ORDER BY f.position
""",
    [
        *_names(Message, "message_"),
        *_names(Conversation, "conversation_"),
        *_names(Contact, "contact_"),
        *_names(Attachment, "attachment_"),
    ],
)


# --- statements built once ---------------------------------------------------------------------


@cache
def _account_with_replay() -> Any:
    m = messages
    return (
        select(
            *_columns(channel_accounts, ChannelAccount),
            m.c.id.label("message_id"),
            m.c.conversation_id,
            m.c.contact_id,
            m.c.content_hash,
        )
        .select_from(
            channel_accounts.outerjoin(
                m,
                (m.c.tenant_id == channel_accounts.c.tenant_id)
                & (m.c.channel_account_id == channel_accounts.c.id)
                & (m.c.idempotency_key == bindparam("key")),
            )
        )
        .where(
            channel_accounts.c.tenant_id == bindparam("tenant"),
            channel_accounts.c.id == bindparam("account_id"),
        )
    )


def _columns(table: Table, record: type) -> list[Any]:
    return [table.c[f.name] for f in fields(record)]


def _record(record: type[R], row: Any) -> R:
    key: type = record  # as `type`: mypy finds type[R] unhashable (python/mypy#11470)
    return record(*row[: _width(key)])


@cache
def _width(record: type) -> int:
    """How many fields a record has: dataclasses.fields() builds a tuple on every call, and
    a page converts up to a hundred rows."""
    return len(fields(record))


def _cut(row: Any, at: int, *records: type) -> tuple[list[Any], int]:
    """Consecutive records of a joined row, from its column ``at``: each None where its id (a
    record's second column) is NULL, as an outer join leaves it. Also the column after them."""
    found: list[Any] = []
    for record in records:
        width = _width(record)
        found.append(record(*row[at : at + width]) if row[at + 1] is not None else None)
        at += width
    return found, at


def _attachments_from(rows: Sequence[Any], at: int) -> list[Attachment]:
    """The attachments of rows joined one per row from column ``at`` (none: NULLs)."""
    return [Attachment(*r[at:]) for r in rows if r[at + 1] is not None]


def _persisted(rows: Sequence[Any]) -> Persisted:
    """The answer of :func:`_persist_one`, cut into its records: every row holds the account,
    the replay, the contact, the conversation and the message, and one attachment."""
    first = rows[0]
    at = _width(ChannelAccount)
    account = ChannelAccount(*first[:at])
    replay = None
    if first[at] is not None:
        replay = Replay(first[at], first[at + 1], first[at + 2], bytes(first[at + 3]))
    (contact, conversation, message), at = _cut(first, at + 4, Contact, Conversation, Message)
    stored = None if message is None else StoredMessage(message, _attachments_from(rows, at))
    return Persisted(account, replay, contact, conversation, stored)


_ACCOUNT_COLUMNS = _columns(channel_accounts, ChannelAccount)
_CONTACT_COLUMNS = _columns(contacts, Contact)
_CONVERSATION_COLUMNS = _columns(conversations, Conversation)
_MESSAGE_COLUMNS = _columns(messages, Message)
_ATTACHMENT_COLUMNS = _columns(attachments, Attachment)

_ACCOUNTS_IN_ID_ORDER = (
    select(*_ACCOUNT_COLUMNS)
    .where(
        channel_accounts.c.tenant_id == bindparam("tenant"),
        channel_accounts.c.id == func.any(bindparam("ids", type_=_IDS)),
    )
    .order_by(channel_accounts.c.id)
)
_SHARE_ACCOUNTS = _ACCOUNTS_IN_ID_ORDER.with_for_update(read=True)  # FOR SHARE
_LOCK_ACCOUNTS = _ACCOUNTS_IN_ID_ORDER.with_for_update(key_share=True)  # FOR NO KEY UPDATE
_LOCK_MESSAGE = (
    select(messages.c.id)
    .where(messages.c.tenant_id == bindparam("tenant"), messages.c.id == bindparam("id"))
    .with_for_update()
)
_ATTACHMENTS_OF_MESSAGES = (
    select(*_ATTACHMENT_COLUMNS)
    .where(
        attachments.c.tenant_id == bindparam("tenant"),
        attachments.c.message_id == func.any(bindparam("ids", type_=_IDS)),
    )
    .order_by(attachments.c.message_id, attachments.c.position)
)


def _last_message_of(tenant: Any, conversation_id: Any, name: str) -> Any:
    """A lateral subquery: the last message (by channel time, then id) of the conversation
    ``conversation_id`` of ``tenant``, one probe of the timeline index."""
    return (
        select(*_MESSAGE_COLUMNS)
        .where(messages.c.tenant_id == tenant, messages.c.conversation_id == conversation_id)
        .order_by(messages.c.channel_timestamp.desc(), messages.c.id.desc())
        .limit(1)
        .lateral(name)
    )


def _latest_messages() -> Any:
    """The last message of each conversation of ``:ids``, one index probe each."""
    ids = func.unnest(bindparam("ids", type_=_IDS)).table_valued("id").render_derived("c")
    latest = _last_message_of(bindparam("tenant"), ids.c.id, "m")
    return select(*latest.c).select_from(ids.join(latest, true()))


_LATEST_MESSAGES = _latest_messages()


@dataclass(frozen=True, slots=True)
class _Joined:
    """A row related to each row of a page, read with the page by an outer join: its record,
    where it comes from and how it is joined, and its columns (labelled ``<label>__<field>``,
    so that no name of the page's own columns is taken)."""

    record: type
    source: Any
    on: ColumnElement[bool]
    label: str

    def columns(self) -> list[Any]:
        return [self.source.c[f.name].label(f"{self.label}__{f.name}") for f in fields(self.record)]


# A conversation's related rows, joined to a page of conversations: the same tenant's (another
# tenant's rows never join; row-level security would hide them anyway).
_CONTACT_OF_CONVERSATION = _Joined(
    Contact,
    contacts,
    and_(
        contacts.c.tenant_id == conversations.c.tenant_id,
        contacts.c.id == conversations.c.contact_id,
    ),
    "contact",
)
_LAST_MESSAGE_OF_CONVERSATION = _Joined(
    Message,
    _last_message_of(conversations.c.tenant_id, conversations.c.id, "last_message"),
    true(),
    "last_message",
)


@cache
def _joined_relations(relations: Relations) -> tuple[_Joined, ...]:
    return tuple(
        each
        for wanted, each in (
            (relations.contact, _CONTACT_OF_CONVERSATION),
            (relations.last_message, _LAST_MESSAGE_OF_CONVERSATION),
        )
        if wanted
    )


# Statements are built once, with bind parameters, and executed with their values: building
# a Core statement costs more CPU than PostgreSQL spends running most of them (about 0.3 ms
# for an upsert), and every request runs several.
@cache
def _by_ids(table: Table, record: type) -> Select[Any]:
    """The rows of ``record`` with the ids ``:ids`` of the tenant ``:tenant``."""
    return select(*_columns(table, record)).where(
        table.c.tenant_id == bindparam("tenant"),
        table.c.id == func.any(bindparam("ids", type_=_IDS)),
    )


# --- keyset pagination -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Keyset:
    """How one connection is ordered: a (timestamp, id) key, ascending or descending."""

    kind: str
    table: Table
    at: Any
    id: Any
    descending: bool

    def key(self, row: Any) -> Keyset:
        return row[self.at.name], row[self.id.name]

    def _cmp(self, cursor: str, *, later: bool, inclusive: bool) -> ColumnElement[bool]:
        # One row comparison: PostgreSQL turns it into an index range on (at, id). The key
        # is bound as :<cursor>_at and :<cursor>_id.
        left = tuple_(self.at, self.id)
        right = tuple_(
            bindparam(f"{cursor}_at", type_=TimestampTZ),
            bindparam(f"{cursor}_id", type_=BigInteger),
        )
        if later != self.descending:
            return left >= right if inclusive else left > right
        return left <= right if inclusive else left < right

    def later_than(self, cursor: str, *, inclusive: bool = False) -> ColumnElement[bool]:
        return self._cmp(cursor, later=True, inclusive=inclusive)

    def earlier_than(self, cursor: str, *, inclusive: bool = False) -> ColumnElement[bool]:
        return self._cmp(cursor, later=False, inclusive=inclusive)

    def order(self, forward: bool, source: Any = None) -> list[Any]:
        """ORDER BY of a page read forward or backward, on the table or a subquery of it."""
        ascending = forward != self.descending
        cols = (
            (self.at, self.id)
            if source is None
            else (source.c[self.at.name], source.c[self.id.name])
        )
        return [c.asc() if ascending else c.desc() for c in cols]


Scope = tuple[tuple[Any, Any], ...]
"""(column, value) pairs a connection is restricted to, compared for equality."""


@cache
def _page_statements(
    ks: _Keyset,
    record: type,
    scope: tuple[Any, ...],
    *,
    after: bool,
    before: bool,
    forward: bool,
    joined: tuple[_Joined, ...] = (),
) -> tuple[Select[Any], Select[Any] | None]:
    """The page statement of one shape of request, and the statement that asks, for an empty
    page, whether anything lies behind its cursor (None without that cursor). The columns of
    the ``joined`` rows follow the page's own, in order."""
    where = [column == bindparam(f"scope_{i}") for i, column in enumerate(scope)]
    bounds = list(where)
    if after:
        bounds.append(ks.later_than("after"))
    if before:
        bounds.append(ks.earlier_than("before"))
    page = select(*_columns(ks.table, record))
    for each in joined:
        page = page.outerjoin(each.source, each.on).add_columns(*each.columns())
    page = page.where(*bounds).order_by(*ks.order(forward)).limit(bindparam("limit", type_=Integer))
    # The cursor on the side we came from: is anything there (its own row included)? Asked
    # once per statement (an InitPlan) as a column of the page itself; only an empty page
    # needs a statement of its own to ask it.
    behind = "after" if forward else "before"
    if not (after if forward else before):
        return page, None
    side = (
        ks.earlier_than(behind, inclusive=True)
        if forward
        else ks.later_than(behind, inclusive=True)
    )
    # The nearest row behind the cursor, walking the index away from it: ordered so that
    # only an index scan can answer it without a sort (a bare EXISTS let the planner pick a
    # Seq Scan when one tenant held most of a table).
    nearest = (
        select(ks.id)
        .where(*where, side)
        .order_by(*ks.order(not forward))
        .limit(1)
        .scalar_subquery()
    )
    probe = nearest.is_not(None)
    return page.add_columns(probe.label("beyond_cursor")), select(probe)


async def _keyset_page(
    uow: UnitOfWork,
    ks: _Keyset,
    record: type[R],
    scope: Scope,
    request: PageRequest,
    scope_id: int | None,
    joined: tuple[_Joined, ...] = (),
) -> tuple[Page[R], list[Any]]:
    """One statement per page, whatever its size: the page and, when a cursor is given, whether
    anything lies beyond the cursor on the other side (Relay's exact hasPrevious/hasNextPage).
    A page that comes back empty after a cursor costs a second, one-row statement. Also the
    page's rows in its order, for the ``joined`` rows they carry."""
    request.check()
    after = (
        decode_cursor(request.after, kind=ks.kind, scope=scope_id, field="after")
        if request.after is not None
        else None
    )
    before = (
        decode_cursor(request.before, kind=ks.kind, scope=scope_id, field="before")
        if request.before is not None
        else None
    )
    size = request.size
    forward = request.forward
    key: type = record  # as `type`: mypy finds type[R] unhashable (python/mypy#11470)
    page, empty_probe = _page_statements(
        ks,
        key,
        tuple(column for column, _ in scope),
        after=after is not None,
        before=before is not None,
        forward=forward,
        joined=joined,
    )
    params: dict[str, Any] = {f"scope_{i}": value for i, (_, value) in enumerate(scope)}
    params["limit"] = size + 1
    for name, keyset in (("after", after), ("before", before)):
        if keyset is not None:
            params[f"{name}_at"], params[f"{name}_id"] = keyset

    rows = list(await uow.execute(page, params))
    beyond_cursor = False
    if empty_probe is not None:
        if rows:
            beyond_cursor = bool(rows[0]["beyond_cursor"])
        else:
            beyond_cursor = bool((await uow.execute(empty_probe, params)).scalar_one())

    overflow = len(rows) > size
    rows = rows[:size]
    if not forward:
        rows.reverse()
    items = [_record(record, r) for r in rows]
    cursors = [encode_cursor(ks.kind, scope_id, ks.key(r)) for r in rows]
    if forward:
        has_next, has_previous = overflow, beyond_cursor
    else:
        has_next, has_previous = beyond_cursor, overflow
    # Relay: with `first`, hasNextPage is decided by the page alone; `before` only speaks
    # when `last` is not set, and vice versa, which is what the flags above encode.
    return Page(items, cursors, has_next_page=has_next, has_previous_page=has_previous), rows


# --- repositories ------------------------------------------------------------------------------


class _Repository:
    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow
        self._tenant = uow.tenant

    def _ids(self, ids: Sequence[int]) -> dict[str, Any]:
        return {"tenant": self._tenant, "ids": list(ids)}


class ChannelAccountRepository(_Repository):
    _keyset = _Keyset(
        "channel_accounts",
        channel_accounts,
        channel_accounts.c.created_at,
        channel_accounts.c.id,
        descending=False,
    )

    async def register(
        self,
        *,
        channel: Channel,
        external_account_id: str,
        display_name: str | None,
        fallback_window_seconds: int | None,
    ) -> tuple[ChannelAccount, bool]:
        """Create the account, or return the existing one with what was given refreshed.
        The flag says whether it was created."""
        stmt = insert(channel_accounts).values(
            tenant_id=self._tenant,
            channel=channel.value,
            external_account_id=external_account_id,
            display_name=display_name,
            fallback_window_seconds=fallback_window_seconds or DEFAULT_FALLBACK_WINDOW_SECONDS,
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "channel", "external_account_id"],
            set_={
                "display_name": func.coalesce(
                    stmt.excluded.display_name, channel_accounts.c.display_name
                ),
                "fallback_window_seconds": func.coalesce(
                    literal(fallback_window_seconds, Integer),
                    channel_accounts.c.fallback_window_seconds,
                ),
            },
        ).returning(*_ACCOUNT_COLUMNS, literal_column("xmax = 0").label("created"))
        row = (await self._uow.execute(upsert)).one()
        return _record(ChannelAccount, row), bool(row["created"])

    async def get(self, account_id: int) -> ChannelAccount | None:
        return (await self.get_many([account_id])).get(account_id)

    async def get_many(self, ids: Sequence[int]) -> dict[int, ChannelAccount]:
        rows = await self._uow.execute(_by_ids(channel_accounts, ChannelAccount), self._ids(ids))
        return {r["id"]: _record(ChannelAccount, r) for r in rows}

    async def lock_many(
        self, ids: Sequence[int], *, exclusive: bool = False
    ) -> dict[int, ChannelAccount]:
        """:meth:`get_many`, holding the accounts until the transaction ends, locked in id
        order: shared (``FOR SHARE``: batch writers of an account run side by side), or
        exclusive (``FOR NO KEY UPDATE``: one waits for all others to commit, and they for
        it). Neither blocks the key-share locks that inserts referencing the account take, so
        single messages are stored meanwhile."""
        statement = _LOCK_ACCOUNTS if exclusive else _SHARE_ACCOUNTS
        rows = await self._uow.execute(statement, self._ids(ids))
        return {r["id"]: _record(ChannelAccount, r) for r in rows}

    async def list(self, request: PageRequest) -> Page[ChannelAccount]:
        scope = ((channel_accounts.c.tenant_id, self._tenant),)
        page, _ = await _keyset_page(self._uow, self._keyset, ChannelAccount, scope, request, None)
        return page


class ContactRepository(_Repository):
    async def upsert(self, channel_account_id: int, contact: ContactInput) -> Contact:
        """The same row (same id) for the same (tenant, channel account, external user id);
        the profile fields given are refreshed, those omitted are kept."""
        assert contact.external_user_id is not None
        stored = await self.upsert_many([ContactRow(channel_account_id, contact)])
        return stored[(channel_account_id, contact.external_user_id)]

    async def upsert_many(self, rows: Sequence[ContactRow]) -> dict[tuple[int, str], Contact]:
        """:meth:`upsert` for many contacts in one statement, by (channel account, external
        user id). The rows must have distinct keys; they are written in key order, so that
        concurrent batches lock rows in the same order."""
        if not rows:
            return {}
        ordered = sorted(rows, key=lambda r: (r.channel_account_id, r.contact.external_user_id))
        result = await self._uow.execute(
            _UPSERT_CONTACTS,
            {
                "tenant": self._tenant,
                "account_ids": [r.channel_account_id for r in ordered],
                "user_ids": [r.contact.external_user_id for r in ordered],
                "display_names": [r.contact.display_name for r in ordered],
                "avatar_urls": [r.contact.avatar_url for r in ordered],
                "profiles": [_json_text(r.contact.profile) for r in ordered],
            },
        )
        stored = [_record(Contact, r) for r in result]
        return {(c.channel_account_id, c.external_user_id): c for c in stored}

    async def get(self, contact_id: int) -> Contact | None:
        return (await self.get_many([contact_id])).get(contact_id)

    async def get_many(self, ids: Sequence[int]) -> dict[int, Contact]:
        rows = await self._uow.execute(_by_ids(contacts, Contact), self._ids(ids))
        return {r["id"]: _record(Contact, r) for r in rows}

    async def count(self) -> int:
        stmt = select(func.count()).where(contacts.c.tenant_id == self._tenant)
        return int((await self._uow.execute(stmt)).scalar_one())


class ConversationRepository(_Repository):
    _keyset = _Keyset(
        "conversations",
        conversations,
        conversations.c.last_message_at,
        conversations.c.id,
        descending=True,
    )

    async def upsert(
        self,
        account: ChannelAccount,
        *,
        thread_key: str,
        external_thread_id: str | None,
        contact_id: int | None,
        at: datetime,
    ) -> Conversation:
        """The same row for the same thread key; ``last_message_at`` only moves forward."""
        row = ConversationRow(account, thread_key, external_thread_id, contact_id, at)
        return (await self.upsert_many([row]))[(account.id, thread_key)]

    async def upsert_many(
        self, rows: Sequence[ConversationRow]
    ) -> dict[tuple[int, str], Conversation]:
        """:meth:`upsert` for many threads in one statement, by (channel account, thread key).
        Distinct keys, written in key order (see :meth:`ContactRepository.upsert_many`)."""
        if not rows:
            return {}
        ordered = sorted(rows, key=lambda r: (r.account.id, r.thread_key))
        result = await self._uow.execute(
            _UPSERT_CONVERSATIONS,
            {
                "tenant": self._tenant,
                "account_ids": [r.account.id for r in ordered],
                "channels": [r.account.channel for r in ordered],
                "thread_keys": [r.thread_key for r in ordered],
                "thread_ids": [r.external_thread_id for r in ordered],
                "contact_ids": [r.contact_id for r in ordered],
                "ats": [r.at for r in ordered],
            },
        )
        stored = [_record(Conversation, r) for r in result]
        return {(c.channel_account_id, c.thread_key): c for c in stored}

    async def get(self, conversation_id: int) -> Conversation | None:
        return (await self.get_many([conversation_id])).get(conversation_id)

    async def get_many(self, ids: Sequence[int]) -> dict[int, Conversation]:
        rows = await self._uow.execute(_by_ids(conversations, Conversation), self._ids(ids))
        return {r["id"]: _record(Conversation, r) for r in rows}

    async def list(
        self,
        request: PageRequest,
        *,
        channel: Channel | None = None,
        channel_account_id: int | None = None,
    ) -> Page[Conversation]:
        """Newest activity first, (last_message_at, id) descending, keyset paginated."""
        listed = await self.list_with(
            request, Relations(), channel=channel, channel_account_id=channel_account_id
        )
        return listed.page

    async def list_with(
        self,
        request: PageRequest,
        relations: Relations,
        *,
        channel: Channel | None = None,
        channel_account_id: int | None = None,
    ) -> ListedConversations:
        """:meth:`list`, with the ``relations`` of its conversations read by the same
        statement instead of a batch each after it. Not the channel accounts: a tenant has a
        handful, whose table PostgreSQL reads whole when joined (a Seq Scan, which the plan
        tests refuse), and a batch of them by id costs little."""
        scope: list[tuple[Any, Any]] = [(conversations.c.tenant_id, self._tenant)]
        if channel is not None:
            scope.append((conversations.c.channel, channel.value))
        if channel_account_id is not None:
            scope.append((conversations.c.channel_account_id, channel_account_id))
        joined = _joined_relations(relations)
        page, rows = await _keyset_page(
            self._uow, self._keyset, Conversation, tuple(scope), request, None, joined
        )
        listed = ListedConversations(page, {}, {})
        records = [each.record for each in joined]
        for conversation, row in zip(page.items, rows, strict=True):
            found, _ = _cut(row, _width(Conversation), *records)
            for each, record in zip(joined, found, strict=True):
                if each is _LAST_MESSAGE_OF_CONVERSATION:
                    listed.last_messages[conversation.id] = record
                elif record is not None:
                    listed.contacts[record.id] = record
        return listed


class MessageRepository(_Repository):
    _keyset = _Keyset(
        "messages", messages, messages.c.channel_timestamp, messages.c.id, descending=False
    )

    async def account_with_replay(
        self, channel_account_id: int, idempotency_key: str
    ) -> tuple[ChannelAccount | None, Replay | None]:
        """The channel account and, if this key was stored before, what it stored, in one
        round trip: the first read of a persist without a thread id (its fallback thread key
        needs the account's window), and of a delivery that lost the race for its key."""
        values = {"tenant": self._tenant, "account_id": channel_account_id, "key": idempotency_key}
        row = (await self._uow.execute(_account_with_replay(), values)).one_or_none()
        if row is None:
            return None, None
        account = _record(ChannelAccount, row)
        if row["message_id"] is None:
            return account, None
        return account, Replay(
            row["message_id"], row["conversation_id"], row["contact_id"], bytes(row["content_hash"])
        )

    async def find_replays(self, keys: Sequence[tuple[int, str]]) -> dict[tuple[int, str], Replay]:
        """What earlier deliveries stored under any of these (channel account, key) pairs."""
        if not keys:
            return {}
        # (channel account, key, message, conversation, contact, content hash)
        result = await self._uow.execute(
            _FIND_REPLAYS,
            {
                "tenant": self._tenant,
                "account_ids": [account_id for account_id, _ in keys],
                "keys": [key for _, key in keys],
            },
        )
        return {
            (account_id, key): Replay(id_, conversation_id, contact_id, bytes(digest))
            for account_id, key, id_, conversation_id, contact_id, digest in result
        }

    async def persist(self, row: MessageRow, place: Thread | int) -> Persisted | None:
        """Store one new message in one statement, unless its key was stored before:
        the account and an earlier delivery of the key are read, and when there is none the
        message is placed (in a :class:`Thread`, or in the conversation of that id if it is
        the account's), inserted unless another delivery took its key, and its attachments
        with it. None when the account is not this tenant's."""
        values: dict[str, Any] = {
            "tenant": self._tenant,
            "account_id": row.channel_account_id,
            "key": row.idempotency_key,
            "direction": row.direction,
            "sender_type": row.sender_type,
            "sender_id": row.sender_external_id,
            "sender_name": row.sender_display_name,
            "sender_avatar": row.sender_avatar_url,
            "content_type": row.content_type,
            "text": row.content_text,
            "struct": _json_text(row.content_struct),
            "external_id": row.external_message_id,
            "reply_to": row.reply_to_external_message_id,
            "at": row.channel_timestamp,
            "status": row.status,
            "hash": row.content_hash,
            "a_positions": list(range(len(row.attachments))),
            **_attachment_arrays(row.attachments, prefix="a_"),
        }
        if isinstance(place, Thread):
            values |= {
                "user_id": place.contact.external_user_id,
                "display_name": place.contact.display_name,
                "avatar_url": place.contact.avatar_url,
                "profile": _json_text(place.contact.profile),
                "thread_key": place.thread_key,
                "thread_id": place.external_thread_id,
            }
        else:
            values["conversation_id"] = place
        rows = await self._uow.execute(_persist_one(isinstance(place, Thread)), values)
        if not rows:
            return None
        return _persisted(rows)

    async def with_relations(
        self, message_id: int
    ) -> tuple[StoredMessage, Conversation, Contact | None] | None:
        """A stored message with its attachments, its conversation and its contact, in one
        statement; None if the tenant has no such message."""
        rows = await self._uow.execute(
            _MESSAGE_WITH_RELATIONS, {"tenant": self._tenant, "id": message_id}
        )
        if not rows:
            return None
        (message, conversation, contact), at = _cut(rows[0], 0, Message, Conversation, Contact)
        return StoredMessage(message, _attachments_from(rows, at)), conversation, contact

    async def insert_many(self, rows: Sequence[PlacedRow]) -> dict[tuple[int, str], int]:
        """Insert messages and their attachments in one statement, each unless its idempotency
        key is taken (the database arbitrates concurrent deliveries). The ids of those
        inserted, by (channel account, key); a key another delivery stored first is absent.
        Distinct keys, inserted in key order (see :meth:`ContactRepository.upsert_many`)."""
        if not rows:
            return {}
        ordered = sorted(rows, key=lambda p: (p.row.channel_account_id, p.row.idempotency_key))
        files = [
            (p.row, position, a) for p in ordered for position, a in enumerate(p.row.attachments)
        ]
        values = {
            "tenant": self._tenant,
            "account_ids": [p.row.channel_account_id for p in ordered],
            "conversation_ids": [p.conversation_id for p in ordered],
            "contact_ids": [p.contact_id for p in ordered],
            "directions": [p.row.direction for p in ordered],
            "sender_types": [p.row.sender_type for p in ordered],
            "sender_ids": [p.row.sender_external_id for p in ordered],
            "sender_names": [p.row.sender_display_name for p in ordered],
            "sender_avatars": [p.row.sender_avatar_url for p in ordered],
            "content_types": [p.row.content_type for p in ordered],
            "texts": [p.row.content_text for p in ordered],
            "structs": [_json_text(p.row.content_struct) for p in ordered],
            "external_ids": [p.row.external_message_id for p in ordered],
            "keys": [p.row.idempotency_key for p in ordered],
            "reply_tos": [p.row.reply_to_external_message_id for p in ordered],
            "ats": [p.row.channel_timestamp for p in ordered],
            "statuses": [p.row.status for p in ordered],
            "hashes": [p.row.content_hash for p in ordered],
            "a_account_ids": [r.channel_account_id for r, _, _ in files],
            "a_keys": [r.idempotency_key for r, _, _ in files],
            "a_positions": [position for _, position, _ in files],
            **_attachment_arrays([a for _, _, a in files], prefix="a_"),
        }
        result = await self._uow.execute(_INSERT_MESSAGES, values)
        return {(account_id, key): id_ for id_, account_id, key in result}

    async def get(self, message_id: int) -> Message | None:
        return (await self.get_many([message_id])).get(message_id)

    async def get_many(self, ids: Sequence[int]) -> dict[int, Message]:
        rows = await self._uow.execute(_by_ids(messages, Message), self._ids(ids))
        return {r["id"]: _record(Message, r) for r in rows}

    async def timeline(self, conversation_id: int, request: PageRequest) -> Page[Message]:
        """Chronological by (channel_timestamp, id); cursors belong to this conversation."""
        scope = (
            (messages.c.tenant_id, self._tenant),
            (messages.c.conversation_id, conversation_id),
        )
        page, _ = await _keyset_page(
            self._uow, self._keyset, Message, scope, request, conversation_id
        )
        return page

    async def latest_by_conversations(self, conversation_ids: Sequence[int]) -> dict[int, Message]:
        """The last message of each conversation, one index probe each, in one statement."""
        rows = await self._uow.execute(_LATEST_MESSAGES, self._ids(conversation_ids))
        return {r["conversation_id"]: _record(Message, r) for r in rows}

    async def lock(self, message_id: int) -> bool:
        """Lock the message row (serializes appends to its attachments); False if absent."""
        found = await self._uow.execute(_LOCK_MESSAGE, {"tenant": self._tenant, "id": message_id})
        return found.scalar_one_or_none() is not None


class AttachmentRepository(_Repository):
    async def insert_many(
        self, message_id: int, items: Sequence[AttachmentInput], *, start_position: int = 0
    ) -> list[Attachment]:
        """Append metadata in order; an external id already stored on the message is skipped."""
        if not items:
            return []
        result = await self._uow.execute(
            _INSERT_ATTACHMENTS,
            {
                "tenant": self._tenant,
                "message_id": message_id,
                "positions": [start_position + index for index in range(len(items))],
                **_attachment_arrays(items),
            },
        )
        stored = [_record(Attachment, r) for r in result]
        return sorted(stored, key=lambda a: a.position)

    async def get_many(self, ids: Sequence[int]) -> dict[int, Attachment]:
        rows = await self._uow.execute(_by_ids(attachments, Attachment), self._ids(ids))
        return {r["id"]: _record(Attachment, r) for r in rows}

    async def by_messages(self, message_ids: Sequence[int]) -> dict[int, list[Attachment]]:
        grouped: dict[int, list[Attachment]] = {}
        for r in await self._uow.execute(_ATTACHMENTS_OF_MESSAGES, self._ids(message_ids)):
            grouped.setdefault(r["message_id"], []).append(_record(Attachment, r))
        return grouped

    async def stats(self, message_id: int) -> tuple[int, int]:
        """(how many the message has, the next free position)."""
        stmt = select(func.count(), func.coalesce(func.max(attachments.c.position) + 1, 0)).where(
            attachments.c.tenant_id == self._tenant, attachments.c.message_id == message_id
        )
        row = (await self._uow.execute(stmt)).one()
        count, next_position = row
        return int(count), int(next_position)


def timeline_cursor(message: Message) -> str:
    """The timeline cursor of a stored message (for an edge built outside a page)."""
    return encode_cursor(
        MessageRepository._keyset.kind,
        message.conversation_id,
        (message.channel_timestamp, message.id),
    )
