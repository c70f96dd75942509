"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_accounts",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("external_account_id", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("fallback_window_seconds", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "channel IN ('LINE', 'FACEBOOK', 'INSTAGRAM', 'WHATSAPP', 'SHOPEE', 'LAZADA', 'TIKTOK_SHOP', 'EMAIL', 'WEBCHAT')",
            name=op.f("ck_channel_accounts_channel_allowed"),
        ),
        sa.CheckConstraint(
            "fallback_window_seconds > 0",
            name=op.f("ck_channel_accounts_fallback_window_seconds_positive"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_channel_accounts")),
        sa.UniqueConstraint(
            "tenant_id",
            "channel",
            "external_account_id",
            name=op.f("uq_channel_accounts_tenant_id_channel_external_account_id"),
        ),
    )
    op.create_table(
        "contacts",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("channel_account_id", sa.BigInteger(), nullable=False),
        sa.Column("external_user_id", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("avatar_url", sa.Text(), nullable=True),
        sa.Column("profile", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "channel_account_id"],
            ["channel_accounts.tenant_id", "channel_accounts.id"],
            name=op.f("fk_contacts_tenant_id_channel_account_id_channel_accounts"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_contacts")),
        sa.UniqueConstraint(
            "tenant_id",
            "channel_account_id",
            "external_user_id",
            name=op.f("uq_contacts_tenant_id_channel_account_id_external_user_id"),
        ),
    )
    op.create_table(
        "conversations",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("channel_account_id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("thread_key", sa.Text(), nullable=False),
        sa.Column("external_thread_id", sa.Text(), nullable=True),
        sa.Column("contact_id", sa.BigInteger(), nullable=True),
        sa.Column("last_message_at", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "channel IN ('LINE', 'FACEBOOK', 'INSTAGRAM', 'WHATSAPP', 'SHOPEE', 'LAZADA', 'TIKTOK_SHOP', 'EMAIL', 'WEBCHAT')",
            name=op.f("ck_conversations_channel_allowed"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "channel_account_id"],
            ["channel_accounts.tenant_id", "channel_accounts.id"],
            name=op.f("fk_conversations_tenant_id_channel_account_id_channel_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "contact_id"],
            ["contacts.tenant_id", "contacts.id"],
            name=op.f("fk_conversations_tenant_id_contact_id_contacts"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_conversations")),
        sa.UniqueConstraint(
            "tenant_id",
            "channel_account_id",
            "thread_key",
            name=op.f("uq_conversations_tenant_id_channel_account_id_thread_key"),
        ),
    )
    op.create_index(
        op.f("ix_conversations_tenant_id_account_id_last_message_at_id"),
        "conversations",
        ["tenant_id", "channel_account_id", "last_message_at", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_conversations_tenant_id_channel_last_message_at_id"),
        "conversations",
        ["tenant_id", "channel", "last_message_at", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_conversations_tenant_id_contact_id"),
        "conversations",
        ["tenant_id", "contact_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_conversations_tenant_id_last_message_at_id"),
        "conversations",
        ["tenant_id", "last_message_at", "id"],
        unique=False,
    )
    op.create_table(
        "messages",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("channel_account_id", sa.BigInteger(), nullable=False),
        sa.Column("conversation_id", sa.BigInteger(), nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=True),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("sender_type", sa.Text(), nullable=False),
        sa.Column("sender_external_id", sa.Text(), nullable=True),
        sa.Column("sender_display_name", sa.Text(), nullable=True),
        sa.Column("sender_avatar_url", sa.Text(), nullable=True),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("content_text", sa.Text(), nullable=True),
        sa.Column("content_struct", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("external_message_id", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("reply_to_external_message_id", sa.Text(), nullable=True),
        sa.Column("channel_timestamp", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "content_type IN ('TEXT', 'IMAGE', 'VIDEO', 'AUDIO', 'FILE', 'STICKER', 'LOCATION', 'PRODUCT', 'ORDER', 'TEMPLATE', 'INTERACTIVE', 'UNSUPPORTED')",
            name=op.f("ck_messages_content_type_allowed"),
        ),
        sa.CheckConstraint(
            "direction IN ('INBOUND', 'OUTBOUND')", name=op.f("ck_messages_direction_allowed")
        ),
        sa.CheckConstraint(
            "sender_type IN ('CONTACT', 'AGENT', 'BOT', 'SYSTEM')",
            name=op.f("ck_messages_sender_type_allowed"),
        ),
        sa.CheckConstraint(
            "status IN ('RECEIVED', 'SENT', 'DELIVERED', 'READ', 'FAILED')",
            name=op.f("ck_messages_status_allowed"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "channel_account_id"],
            ["channel_accounts.tenant_id", "channel_accounts.id"],
            name=op.f("fk_messages_tenant_id_channel_account_id_channel_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "contact_id"],
            ["contacts.tenant_id", "contacts.id"],
            name=op.f("fk_messages_tenant_id_contact_id_contacts"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "conversation_id"],
            ["conversations.tenant_id", "conversations.id"],
            name=op.f("fk_messages_tenant_id_conversation_id_conversations"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_messages")),
        sa.UniqueConstraint(
            "tenant_id",
            "channel_account_id",
            "idempotency_key",
            name=op.f("uq_messages_tenant_id_channel_account_id_idempotency_key"),
        ),
    )
    op.create_index(
        op.f("ix_messages_tenant_id_contact_id"),
        "messages",
        ["tenant_id", "contact_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_messages_tenant_id_conversation_id_channel_timestamp_id"),
        "messages",
        ["tenant_id", "conversation_id", "channel_timestamp", "id"],
        unique=False,
    )
    op.create_table(
        "attachments",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("mime_type", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("file_name", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('IMAGE', 'VIDEO', 'AUDIO', 'FILE', 'STICKER')",
            name=op.f("ck_attachments_kind_allowed"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "message_id"],
            ["messages.tenant_id", "messages.id"],
            name=op.f("fk_attachments_tenant_id_message_id_messages"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_attachments")),
        sa.UniqueConstraint(
            "tenant_id",
            "message_id",
            "external_id",
            name=op.f("uq_attachments_tenant_id_message_id_external_id"),
        ),
        sa.UniqueConstraint(
            "tenant_id",
            "message_id",
            "position",
            name=op.f("uq_attachments_tenant_id_message_id_position"),
        ),
    )


def downgrade() -> None:
    op.drop_table("attachments")
    op.drop_index(
        op.f("ix_messages_tenant_id_conversation_id_channel_timestamp_id"), table_name="messages"
    )
    op.drop_index(op.f("ix_messages_tenant_id_contact_id"), table_name="messages")
    op.drop_table("messages")
    op.drop_index(op.f("ix_conversations_tenant_id_last_message_at_id"), table_name="conversations")
    op.drop_index(op.f("ix_conversations_tenant_id_contact_id"), table_name="conversations")
    op.drop_index(
        op.f("ix_conversations_tenant_id_channel_last_message_at_id"), table_name="conversations"
    )
    op.drop_index(
        op.f("ix_conversations_tenant_id_account_id_last_message_at_id"),
        table_name="conversations",
    )
    op.drop_table("conversations")
    op.drop_table("contacts")
    op.drop_table("channel_accounts")
