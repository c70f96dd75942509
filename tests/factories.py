"""Keyword-only builders of normalized objects and stored fixtures, with sane defaults."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.contract import (
    AttachmentInput,
    ContactInput,
    ContentInput,
    NormalizedMessage,
    SenderInput,
)
from omni_store.persistence.database import Database
from omni_store.persistence.enums import (
    AttachmentKind,
    Channel,
    ContentType,
    Direction,
    SenderType,
)
from omni_store.persistence.repositories import ChannelAccount
from omni_store.persistence.service import register_channel_account
from omni_store.persistence.tables import TENANT_TABLES
from omni_store.persistence.tenancy import TenantId

BASE_TIME = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
_sequence = itertools.count(1)


def at(minutes: float) -> datetime:
    """A channel time, ``minutes`` after a fixed base."""
    return BASE_TIME + timedelta(minutes=minutes)


async def channel_account(
    db: Database,
    tenant: TenantId,
    *,
    channel: Channel = Channel.LINE,
    external_account_id: str = "oa-1",
    display_name: str | None = "Shop OA",
    fallback_window_seconds: int | None = None,
) -> ChannelAccount:
    account, _ = await register_channel_account(
        db,
        tenant,
        channel=channel,
        external_account_id=external_account_id,
        display_name=display_name,
        fallback_window_seconds=fallback_window_seconds,
    )
    return account


def inbound(
    *,
    account_id: int | None,
    external_message_id: str | None = None,
    idempotency_key: str | None = None,
    external_user_id: str | None = "U-1",
    display_name: str | None = "Somchai",
    thread: str | None = "thread-1",
    text: str | None = "สวัสดีครับ hello",
    when: datetime | None = None,
    content_type: ContentType = ContentType.TEXT,
    struct: Any = None,
    attachments: Sequence[AttachmentInput] = (),
) -> NormalizedMessage:
    if external_message_id is None and idempotency_key is None:
        external_message_id = f"m-{next(_sequence)}"
    return NormalizedMessage(
        channel_account_id=account_id,
        direction=Direction.INBOUND,
        channel_timestamp=when or at(0),
        content=ContentInput(type=content_type, text=text, struct=struct),
        external_message_id=external_message_id,
        idempotency_key=idempotency_key,
        external_thread_id=thread,
        contact=ContactInput(external_user_id=external_user_id, display_name=display_name),
        attachments=tuple(attachments),
    )


def outbound(
    *,
    account_id: int | None,
    conversation_id: int | None = None,
    external_user_id: str | None = None,
    thread: str | None = None,
    idempotency_key: str | None = None,
    external_message_id: str | None = None,
    sender_type: SenderType = SenderType.AGENT,
    sender_name: str | None = "Agent Nok",
    text: str = "Thanks, your order ships today.",
    when: datetime | None = None,
) -> NormalizedMessage:
    if external_message_id is None and idempotency_key is None:
        idempotency_key = f"reply-{next(_sequence)}"
    return NormalizedMessage(
        channel_account_id=account_id,
        direction=Direction.OUTBOUND,
        channel_timestamp=when or at(1),
        content=ContentInput(type=ContentType.TEXT, text=text),
        external_message_id=external_message_id,
        idempotency_key=idempotency_key,
        external_thread_id=thread,
        conversation_id=conversation_id,
        contact=ContactInput(external_user_id=external_user_id) if external_user_id else None,
        sender=SenderInput(type=sender_type, display_name=sender_name, external_id="agent-7"),
    )


def attachment(
    *,
    kind: AttachmentKind = AttachmentKind.IMAGE,
    url: str | None = "https://cdn.example.com/media/photo.jpg",
    external_id: str | None = None,
    mime_type: str | None = None,
    size_bytes: int | None = None,
    file_name: str | None = None,
    width: int | None = None,
    height: int | None = None,
    duration_ms: int | None = None,
    metadata: Any = None,
) -> AttachmentInput:
    return AttachmentInput(
        kind=kind,
        url=url,
        mime_type=mime_type,
        size_bytes=size_bytes,
        file_name=file_name,
        width=width,
        height=height,
        duration_ms=duration_ms,
        external_id=external_id,
        metadata=metadata,
    )


async def tenant_rows(engine: AsyncEngine, tenant: TenantId) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row of one tenant, table by table, in id order: compare two snapshots to
    prove that an operation changed nothing (values included, not only counts)."""
    async with engine.connect() as connection:
        return {
            table.name: [
                tuple(row)
                for row in await connection.execute(
                    select(table).where(table.c.tenant_id == tenant).order_by(table.c.id)
                )
            ]
            for table in TENANT_TABLES
        }
