"""The tables of the message store.

Every table carries ``tenant_id`` and it leads every primary key, unique constraint, foreign
key and index, so that every lookup is bounded by one tenant and the schema can be
distributed by tenant (Citus, distribution column ``tenant_id``). Ids are bigint identities.

These definitions are the single source of truth for the migrations: a test runs Alembic's
autogenerate against a migrated database and fails when it would produce anything.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

from omni_store.persistence.enums import (
    AttachmentKind,
    Channel,
    ContentType,
    DeliveryStatus,
    Direction,
    SenderType,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TimestampTZ = TIMESTAMP(timezone=True)
# Python None is SQL NULL, not the JSON 'null' value: an omitted profile must not overwrite the
# stored one (upserts COALESCE with it), and "no struct" must be IS NULL.
OptionalJSONB = JSONB(none_as_null=True)


def _enum_check(column: str, values: type) -> CheckConstraint:
    """Enums are stored as text with a CHECK: adding a value later is a cheap migration."""
    allowed = ", ".join(f"'{member.value}'" for member in values)  # type: ignore[attr-defined]
    return CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_allowed")


def _created_at() -> Column[object]:
    return Column("created_at", TimestampTZ, nullable=False, server_default=func.now())


channel_accounts = Table(
    "channel_accounts",
    metadata,
    Column("tenant_id", Uuid, nullable=False),
    Column("id", BigInteger, Identity(always=False), nullable=False),
    Column("channel", Text, nullable=False),
    Column("external_account_id", Text, nullable=False),
    Column("display_name", Text, nullable=True),
    Column("fallback_window_seconds", Integer, nullable=False),
    _created_at(),
    PrimaryKeyConstraint("tenant_id", "id"),
    UniqueConstraint("tenant_id", "channel", "external_account_id"),
    _enum_check("channel", Channel),
    CheckConstraint("fallback_window_seconds > 0", name="fallback_window_seconds_positive"),
)

contacts = Table(
    "contacts",
    metadata,
    Column("tenant_id", Uuid, nullable=False),
    Column("id", BigInteger, Identity(always=False), nullable=False),
    Column("channel_account_id", BigInteger, nullable=False),
    Column("external_user_id", Text, nullable=False),
    Column("display_name", Text, nullable=True),
    Column("avatar_url", Text, nullable=True),
    Column("profile", OptionalJSONB, nullable=True),
    _created_at(),
    Column("updated_at", TimestampTZ, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "id"),
    UniqueConstraint("tenant_id", "channel_account_id", "external_user_id"),
    ForeignKeyConstraint(
        ["tenant_id", "channel_account_id"],
        ["channel_accounts.tenant_id", "channel_accounts.id"],
    ),
)

conversations = Table(
    "conversations",
    metadata,
    Column("tenant_id", Uuid, nullable=False),
    Column("id", BigInteger, Identity(always=False), nullable=False),
    Column("channel_account_id", BigInteger, nullable=False),
    # Copied from the channel account (which never changes channel) so that "one channel"
    # lists are an index range, not a join.
    Column("channel", Text, nullable=False),
    Column("thread_key", Text, nullable=False),
    Column("external_thread_id", Text, nullable=True),
    Column("contact_id", BigInteger, nullable=True),
    # Channel time of the latest message (or of the event that opened the conversation);
    # only ever moves forward.
    Column("last_message_at", TimestampTZ, nullable=False),
    _created_at(),
    PrimaryKeyConstraint("tenant_id", "id"),
    UniqueConstraint("tenant_id", "channel_account_id", "thread_key"),
    ForeignKeyConstraint(
        ["tenant_id", "channel_account_id"],
        ["channel_accounts.tenant_id", "channel_accounts.id"],
    ),
    ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"]),
    _enum_check("channel", Channel),
    # The conversation list, newest activity first: all channels, one channel, one account.
    Index(None, "tenant_id", "last_message_at", "id"),
    Index(None, "tenant_id", "channel", "last_message_at", "id"),
    # Named by hand: the convention's name has 64 characters, one over PostgreSQL's limit.
    Index(
        "ix_conversations_tenant_id_account_id_last_message_at_id",
        "tenant_id",
        "channel_account_id",
        "last_message_at",
        "id",
    ),
    # Conversations of a contact (foreign key lookups on contact deletes, "other threads").
    Index(None, "tenant_id", "contact_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("tenant_id", Uuid, nullable=False),
    Column("id", BigInteger, Identity(always=False), nullable=False),
    Column("channel_account_id", BigInteger, nullable=False),
    Column("conversation_id", BigInteger, nullable=False),
    Column("contact_id", BigInteger, nullable=True),
    Column("direction", Text, nullable=False),
    Column("sender_type", Text, nullable=False),
    Column("sender_external_id", Text, nullable=True),
    # Snapshot for agents, bots and system senders; contacts are rendered with their
    # current display name instead.
    Column("sender_display_name", Text, nullable=True),
    Column("sender_avatar_url", Text, nullable=True),
    Column("content_type", Text, nullable=False),
    Column("content_text", Text, nullable=True),
    Column("content_struct", OptionalJSONB, nullable=True),
    Column("external_message_id", Text, nullable=True),
    Column("idempotency_key", Text, nullable=False),
    Column("reply_to_external_message_id", Text, nullable=True),
    Column("channel_timestamp", TimestampTZ, nullable=False),
    _created_at(),
    Column("status", Text, nullable=False),
    # sha256 of the canonical message content: a replay with other content is a conflict.
    Column("content_hash", LargeBinary, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    UniqueConstraint("tenant_id", "channel_account_id", "idempotency_key"),
    ForeignKeyConstraint(
        ["tenant_id", "channel_account_id"],
        ["channel_accounts.tenant_id", "channel_accounts.id"],
    ),
    ForeignKeyConstraint(
        ["tenant_id", "conversation_id"], ["conversations.tenant_id", "conversations.id"]
    ),
    ForeignKeyConstraint(["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"]),
    _enum_check("direction", Direction),
    _enum_check("sender_type", SenderType),
    _enum_check("content_type", ContentType),
    _enum_check("status", DeliveryStatus),
    # The timeline: chronological by channel time, id as the tie-breaker.
    Index(None, "tenant_id", "conversation_id", "channel_timestamp", "id"),
    Index(None, "tenant_id", "contact_id"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("tenant_id", Uuid, nullable=False),
    Column("id", BigInteger, Identity(always=False), nullable=False),
    Column("message_id", BigInteger, nullable=False),
    Column("position", Integer, nullable=False),
    Column("kind", Text, nullable=False),
    Column("url", Text, nullable=True),
    Column("mime_type", Text, nullable=True),
    Column("size_bytes", BigInteger, nullable=True),
    Column("file_name", Text, nullable=True),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("duration_ms", BigInteger, nullable=True),
    Column("external_id", Text, nullable=True),
    Column("metadata", OptionalJSONB, nullable=True),
    _created_at(),
    PrimaryKeyConstraint("tenant_id", "id"),
    # Ordered per message; also the index the attachments-by-message loader reads.
    UniqueConstraint("tenant_id", "message_id", "position"),
    # Late metadata (addAttachments) is retried too: the same external id is stored once.
    UniqueConstraint("tenant_id", "message_id", "external_id"),
    ForeignKeyConstraint(["tenant_id", "message_id"], ["messages.tenant_id", "messages.id"]),
    _enum_check("kind", AttachmentKind),
)

TENANT_TABLES = (channel_accounts, contacts, conversations, messages, attachments)

__all__ = [
    "TENANT_TABLES",
    "attachments",
    "channel_accounts",
    "contacts",
    "conversations",
    "messages",
    "metadata",
]
