"""Attachment metadata: stored in order with every field, appended later by add_attachments
(retry-safe by external id), at most 20 per message."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.contract import AttachmentInput
from omni_store.persistence.database import Database
from omni_store.persistence.enums import AttachmentKind, ErrorCode
from omni_store.persistence.errors import NotFound, ValidationFailed
from omni_store.persistence.repositories import Attachment
from omni_store.persistence.service import add_attachments, persist_message
from omni_store.persistence.tenancy import TenantId
from tests.conftest import row_counts
from tests.factories import attachment, channel_account, inbound, tenant_rows


def _numbered(count: int, *, prefix: str = "media") -> list[AttachmentInput]:
    return [attachment(external_id=f"{prefix}-{i}") for i in range(count)]


async def _stored(db: Database, tenant: TenantId, message_id: int) -> list[Attachment]:
    async with db.transaction(tenant) as uow:
        return (await uow.attachments.by_messages([message_id])).get(message_id, [])


async def _message_with(db: Database, tenant: TenantId, attachments: list[AttachmentInput]) -> int:
    account = await channel_account(db, tenant)
    result = await persist_message(
        db, tenant, inbound(account_id=account.id, attachments=attachments)
    )
    return result.message_id


async def test_attachments_are_stored_in_order_with_every_metadata_field(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a message with a photo, a voice note and a PDF, fully described
    photo = attachment(
        kind=AttachmentKind.IMAGE,
        url="https://cdn.example.com/p/1.jpg",
        external_id="line-content-1",
        mime_type="image/jpeg",
        size_bytes=204_800,
        file_name="IMG_0001.jpg",
        width=1080,
        height=1920,
        metadata={"preview_url": "https://cdn.example.com/p/1_s.jpg", "exif": {"iso": 200}},
    )
    voice = attachment(
        kind=AttachmentKind.AUDIO,
        url="https://cdn.example.com/a/2.m4a",
        mime_type="audio/mp4",
        size_bytes=48_000,
        duration_ms=12_500,
    )
    document = attachment(
        kind=AttachmentKind.FILE,
        url=None,
        external_id="line-content-3",
        mime_type="application/pdf",
        file_name="ใบเสนอราคา.pdf",
        size_bytes=0,
    )
    before = await row_counts(engine)

    # When the message is persisted
    message_id = await _message_with(db, tenant, [photo, voice, document])

    # Then three attachments are stored, positions 0..2, every field as given
    after = await row_counts(engine)
    assert after["attachments"] - before["attachments"] == 3
    stored = await _stored(db, tenant, message_id)
    assert [
        (
            a.message_id,
            a.position,
            a.kind,
            a.url,
            a.mime_type,
            a.size_bytes,
            a.file_name,
            a.width,
            a.height,
            a.duration_ms,
            a.external_id,
            a.metadata,
            a.tenant_id,
        )
        for a in stored
    ] == [
        (
            message_id,
            0,
            "IMAGE",
            "https://cdn.example.com/p/1.jpg",
            "image/jpeg",
            204_800,
            "IMG_0001.jpg",
            1080,
            1920,
            None,
            "line-content-1",
            {"preview_url": "https://cdn.example.com/p/1_s.jpg", "exif": {"iso": 200}},
            tenant,
        ),
        (
            message_id,
            1,
            "AUDIO",
            "https://cdn.example.com/a/2.m4a",
            "audio/mp4",
            48_000,
            None,
            None,
            None,
            12_500,
            None,
            None,
            tenant,
        ),
        (
            message_id,
            2,
            "FILE",
            None,
            "application/pdf",
            0,
            "ใบเสนอราคา.pdf",
            None,
            None,
            None,
            "line-content-3",
            None,
            tenant,
        ),
    ]


async def test_a_message_without_attachments_has_none(db: Database, tenant: TenantId) -> None:
    # Given a text message
    message_id = await _message_with(db, tenant, [])

    # When its attachments are read
    async with db.transaction(tenant) as uow:
        grouped = await uow.attachments.by_messages([message_id])
        stats = await uow.attachments.stats(message_id)

    # Then there are none
    assert grouped == {}
    assert stats == (0, 0)


async def test_add_attachments_appends_after_the_existing_positions(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a message with two attachments
    message_id = await _message_with(db, tenant, _numbered(2))
    before = await row_counts(engine)

    # When two more arrive later (media processed after the message)
    returned = await add_attachments(
        db,
        tenant,
        message_id,
        [
            attachment(kind=AttachmentKind.VIDEO, external_id="late-0", duration_ms=3000),
            attachment(external_id="late-1"),
        ],
    )

    # Then they follow the first two, and the call returns all four in order
    assert [(a.position, a.external_id, a.kind) for a in returned] == [
        (0, "media-0", "IMAGE"),
        (1, "media-1", "IMAGE"),
        (2, "late-0", "VIDEO"),
        (3, "late-1", "IMAGE"),
    ]
    assert returned == await _stored(db, tenant, message_id)
    assert (await row_counts(engine))["attachments"] - before["attachments"] == 2
    async with db.transaction(tenant) as uow:
        assert await uow.attachments.stats(message_id) == (4, 4)


async def test_add_attachments_to_a_message_without_any_starts_at_position_zero(
    db: Database, tenant: TenantId
) -> None:
    # Given a text message
    message_id = await _message_with(db, tenant, [])

    # When attachments are added
    returned = await add_attachments(db, tenant, message_id, _numbered(2, prefix="late"))

    # Then they take positions 0 and 1
    assert [(a.position, a.external_id) for a in returned] == [(0, "late-0"), (1, "late-1")]


async def test_retrying_add_attachments_with_the_same_external_ids_stores_nothing_twice(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given attachments added once to a message
    message_id = await _message_with(db, tenant, _numbered(1))
    late = _numbered(2, prefix="late")
    first = await add_attachments(db, tenant, message_id, late)
    counts = await row_counts(engine)
    stored = await tenant_rows(engine, tenant)

    # When the same call is retried
    retried = await add_attachments(db, tenant, message_id, late)

    # Then nothing new is stored and the same list comes back
    assert retried == first
    assert [a.external_id for a in retried] == ["media-0", "late-0", "late-1"]
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, tenant) == stored


async def test_a_partly_repeated_add_stores_only_the_new_ones_without_gaps(
    db: Database, tenant: TenantId
) -> None:
    # Given a message with two attachments
    message_id = await _message_with(db, tenant, _numbered(2))

    # When an add repeats one of them and brings a new one
    returned = await add_attachments(
        db, tenant, message_id, [attachment(external_id="media-1"), attachment(external_id="new")]
    )

    # Then only the new one is stored, at the next position
    assert [(a.position, a.external_id) for a in returned] == [
        (0, "media-0"),
        (1, "media-1"),
        (2, "new"),
    ]


async def test_an_external_id_repeated_within_one_add_is_stored_once(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a message without attachments
    message_id = await _message_with(db, tenant, [])
    before = await row_counts(engine)

    # When one add carries the same external id twice
    returned = await add_attachments(
        db, tenant, message_id, [attachment(external_id="dup"), attachment(external_id="dup")]
    )

    # Then it is stored once, at position 0
    assert [(a.position, a.external_id) for a in returned] == [(0, "dup")]
    assert (await row_counts(engine))["attachments"] - before["attachments"] == 1


async def test_attachments_without_external_id_are_appended_each_time(
    db: Database, tenant: TenantId
) -> None:
    # Given a message with one attachment known only by url
    message_id = await _message_with(db, tenant, [attachment(url="https://cdn.example.com/1")])

    # When another url-only attachment is added
    returned = await add_attachments(
        db, tenant, message_id, [attachment(url="https://cdn.example.com/2")]
    )

    # Then both are kept, in order
    assert [(a.position, a.url) for a in returned] == [
        (0, "https://cdn.example.com/1"),
        (1, "https://cdn.example.com/2"),
    ]


async def test_adding_up_to_exactly_twenty_attachments_is_allowed(
    db: Database, tenant: TenantId
) -> None:
    # Given a message with 18 attachments
    message_id = await _message_with(db, tenant, _numbered(18))

    # When two more are added
    returned = await add_attachments(db, tenant, message_id, _numbered(2, prefix="late"))

    # Then it holds 20, positions 0..19
    assert [a.position for a in returned] == list(range(20))


async def test_adding_beyond_twenty_attachments_is_rejected_and_writes_nothing(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a message with 18 attachments
    message_id = await _message_with(db, tenant, _numbered(18))
    counts = await row_counts(engine)
    stored = await tenant_rows(engine, tenant)

    # When three more are added
    with pytest.raises(ValidationFailed) as raised:
        await add_attachments(db, tenant, message_id, _numbered(3, prefix="late"))

    # Then the add is refused whole: none of the three is stored
    assert [(e.field, e.code) for e in raised.value.errors] == [
        (("attachments",), ErrorCode.TOO_MANY)
    ]
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, tenant) == stored


async def test_a_message_with_more_than_twenty_attachments_is_rejected_and_writes_nothing(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given an account
    account = await channel_account(db, tenant)
    counts = await row_counts(engine)

    # When a message with 21 attachments is persisted
    with pytest.raises(ValidationFailed) as raised:
        await persist_message(db, tenant, inbound(account_id=account.id, attachments=_numbered(21)))

    # Then nothing at all is written
    assert [(e.field, e.code) for e in raised.value.errors] == [
        (("attachments",), ErrorCode.TOO_MANY)
    ]
    assert await row_counts(engine) == counts


async def test_retrying_an_add_that_filled_the_message_to_twenty_is_still_a_retry(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a message brought to exactly 20 attachments by an add
    message_id = await _message_with(db, tenant, _numbered(18))
    late = _numbered(2, prefix="late")
    first = await add_attachments(db, tenant, message_id, late)
    counts = await row_counts(engine)

    # When that add is retried (its attachments are already stored)
    retried = await add_attachments(db, tenant, message_id, late)

    # Then it succeeds like any retry: the same 20, nothing written
    assert retried == first
    assert len(retried) == 20
    assert await row_counts(engine) == counts


async def test_add_attachments_to_an_unknown_message_is_not_found(
    db: Database, engine: AsyncEngine, tenant: TenantId
) -> None:
    # Given a tenant with one message
    await _message_with(db, tenant, [])
    counts = await row_counts(engine)

    # When attachments are added to a message id that does not exist
    with pytest.raises(NotFound) as raised:
        await add_attachments(db, tenant, 2**62, _numbered(1))

    # Then it is refused on messageId and nothing is written
    assert [(e.field, e.code) for e in raised.value.errors] == [
        (("messageId",), ErrorCode.NOT_FOUND)
    ]
    assert await row_counts(engine) == counts


async def test_add_attachments_to_another_tenants_message_is_not_found(
    db: Database, engine: AsyncEngine, tenant: TenantId, other_tenant: TenantId
) -> None:
    # Given a message of another tenant, with one attachment
    their_message = await _message_with(db, other_tenant, _numbered(1))
    counts = await row_counts(engine)
    theirs = await tenant_rows(engine, other_tenant)

    # When we add attachments to it
    with pytest.raises(NotFound) as raised:
        await add_attachments(db, tenant, their_message, _numbered(1, prefix="evil"))

    # Then it does not exist for us; their message is untouched
    assert [(e.field, e.code) for e in raised.value.errors] == [
        (("messageId",), ErrorCode.NOT_FOUND)
    ]
    assert await row_counts(engine) == counts
    assert await tenant_rows(engine, other_tenant) == theirs
