"""Malformed objects and failures mid-transaction never leave anything behind.

Every rejection is checked twice: the exact errors, and the row counts of every table of the
store (all tenants) before and after. Failures are injected with PL/pgSQL triggers created by
the test itself (no hooks in production code); they fire only for this test's tenant and are
dropped in a ``finally``, so the shared database is left as it was.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select, text
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
    ContentType,
    ErrorCode,
    SenderType,
)
from omni_store.persistence.errors import FieldError, NotFound, ValidationFailed
from omni_store.persistence.service import (
    add_attachments,
    persist_message,
    register_channel_account,
    upsert_contact,
    upsert_conversation,
)
from omni_store.persistence.tables import contacts, conversations
from omni_store.persistence.tenancy import TenantId
from tests.conftest import row_counts
from tests.factories import at, channel_account, inbound, outbound

E = FieldError
REQUIRED = "This field is required."


def image(url: str = "https://cdn.example.com/a.jpg", **fields: Any) -> AttachmentInput:
    return AttachmentInput(kind=AttachmentKind.IMAGE, url=url, **fields)


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


# Each case: how to break a valid inbound message (of a real account), and the exact errors.
Change = dict[str, Any]

MALFORMED: list[Any] = [
    pytest.param(
        {"channel_account_id": None},
        [E(("channelAccountId",), ErrorCode.REQUIRED, REQUIRED)],
        id="missing-channelAccountId",
    ),
    pytest.param(
        {"direction": None}, [E(("direction",), ErrorCode.REQUIRED, REQUIRED)], id="no-direction"
    ),
    pytest.param(
        {"direction": "SIDEWAYS"},
        [E(("direction",), ErrorCode.INVALID, "Must be one of INBOUND, OUTBOUND.")],
        id="bad-direction",
    ),
    pytest.param(
        {"channel_timestamp": None},
        [E(("channelTimestamp",), ErrorCode.REQUIRED, REQUIRED)],
        id="missing-channelTimestamp",
    ),
    pytest.param(
        {"channel_timestamp": datetime(2026, 11, 20, 9, 0)},
        [E(("channelTimestamp",), ErrorCode.INVALID, "Must include a time zone offset.")],
        id="naive-timestamp",
    ),
    pytest.param(
        {"channel_timestamp": datetime(1999, 12, 31, tzinfo=UTC)},
        [
            E(
                ("channelTimestamp",),
                ErrorCode.OUT_OF_RANGE,
                "Must not be before 2000-01-01T00:00:00Z.",
            )
        ],
        id="timestamp-before-2000",
    ),
    pytest.param(
        {"channel_timestamp": datetime.now(UTC) + timedelta(hours=3)},
        [
            E(
                ("channelTimestamp",),
                ErrorCode.OUT_OF_RANGE,
                "Must not be more than 1 hour in the future.",
            )
        ],
        id="timestamp-in-the-future",
    ),
    pytest.param(
        {"content": None}, [E(("content",), ErrorCode.REQUIRED, REQUIRED)], id="missing-content"
    ),
    pytest.param(
        {"content": ContentInput(type=None, text="hi")},
        [E(("content", "type"), ErrorCode.REQUIRED, REQUIRED)],
        id="missing-content-type",
    ),
    pytest.param(
        {"content": ContentInput(type=ContentType.TEXT, text=None)},
        [E(("content", "text"), ErrorCode.REQUIRED, "A TEXT message needs text.")],
        id="text-without-text",
    ),
    pytest.param(
        {"external_message_id": None, "idempotency_key": None},
        [
            E(
                ("idempotencyKey",),
                ErrorCode.REQUIRED,
                "An idempotencyKey or an externalMessageId is required.",
            )
        ],
        id="no-key",
    ),
    pytest.param(
        {"idempotency_key": " "},
        [E(("idempotencyKey",), ErrorCode.REQUIRED, "Must not be blank.")],
        id="blank-key",
    ),
    pytest.param(
        {"external_message_id": "x" * 256},
        [E(("externalMessageId",), ErrorCode.TOO_LONG, "Must be at most 255 characters.")],
        id="long-externalMessageId",
    ),
    pytest.param(
        {"content": ContentInput(type=ContentType.TEXT, text="x" * 50_001)},
        [E(("content", "text"), ErrorCode.TOO_LONG, "Must be at most 50000 characters.")],
        id="long-text",
    ),
    pytest.param(
        {"content": ContentInput(type=ContentType.TEXT, text="a\x00b")},
        [E(("content", "text"), ErrorCode.INVALID_CHARACTER, "Must not contain NUL characters.")],
        id="text-nul",
    ),
    pytest.param(
        {"content": ContentInput(type=ContentType.TEXT, text="a\ud800b")},
        [E(("content", "text"), ErrorCode.INVALID_CHARACTER, "Must be valid Unicode text.")],
        id="text-lone-surrogate",
    ),
    pytest.param(
        {"content": ContentInput(type=ContentType.PRODUCT, struct={"sku\x00": "A"})},
        [
            E(
                ("content", "struct"),
                ErrorCode.INVALID_CHARACTER,
                "Must not contain NUL characters.",
            )
        ],
        id="struct-key-nul",
    ),
    pytest.param(
        {"content": ContentInput(type=ContentType.PRODUCT, struct={"name": ["\udfff"]})},
        [E(("content", "struct"), ErrorCode.INVALID_CHARACTER, "Must be valid Unicode text.")],
        id="struct-value-surrogate",
    ),
    pytest.param(
        {"content": ContentInput(type=ContentType.ORDER, struct=[1, 2])},
        [E(("content", "struct"), ErrorCode.INVALID, "Must be a JSON object.")],
        id="struct-not-object",
    ),
    pytest.param(
        {"content": ContentInput(type=ContentType.ORDER, struct=nested(17))},
        [E(("content", "struct"), ErrorCode.TOO_DEEP, "Must be nested at most 16 levels deep.")],
        id="struct-too-deep",
    ),
    pytest.param(
        {"content": ContentInput(type=ContentType.ORDER, struct={"b": "x" * 65_536})},
        [E(("content", "struct"), ErrorCode.TOO_LARGE, "Must be at most 65536 bytes as JSON.")],
        id="struct-too-large",
    ),
    pytest.param(
        {"content": ContentInput(type=ContentType.ORDER, struct={"total": float("nan")})},
        [E(("content", "struct"), ErrorCode.INVALID, "Numbers must be finite.")],
        id="struct-nan",
    ),
    pytest.param(
        {"contact": None},
        [
            E(
                ("contact", "externalUserId"),
                ErrorCode.REQUIRED,
                "An inbound message needs the contact's externalUserId.",
            )
        ],
        id="inbound-without-contact",
    ),
    pytest.param(
        {"contact": ContactInput(external_user_id="U-1", display_name="n" * 256)},
        [E(("contact", "displayName"), ErrorCode.TOO_LONG, "Must be at most 255 characters.")],
        id="long-contact-name",
    ),
    pytest.param(
        {"sender": SenderInput(type=SenderType.AGENT, display_name="Nok")},
        [E(("sender", "type"), ErrorCode.NOT_ALLOWED, "An inbound sender is the CONTACT.")],
        id="inbound-sender-agent",
    ),
    pytest.param(
        {"conversation_id": 1},
        [
            E(
                ("conversationId",),
                ErrorCode.NOT_ALLOWED,
                "Inbound messages are mapped to conversations by thread; omit conversationId.",
            )
        ],
        id="inbound-with-conversationId",
    ),
    pytest.param(
        {"attachments": tuple(image() for _ in range(21))},
        [E(("attachments",), ErrorCode.TOO_MANY, "A message holds at most 20 attachments.")],
        id="21-attachments",
    ),
    pytest.param(
        {"attachments": (image(), image(url="javascript:alert(1)"))},
        [
            E(
                ("attachments", "1", "url"),
                ErrorCode.INVALID,
                "Must be an absolute http or https URL.",
            )
        ],
        id="javascript-attachment-url",
    ),
    pytest.param(
        {"attachments": (AttachmentInput(kind=AttachmentKind.FILE),)},
        [
            E(
                ("attachments", "0", "url"),
                ErrorCode.REQUIRED,
                "An attachment needs a url or an externalId.",
            )
        ],
        id="attachment-without-url-or-externalId",
    ),
    pytest.param(
        {"attachments": (image(size_bytes=-1, mime_type="jpeg", metadata={"x": float("inf")}),)},
        [
            E(("attachments", "0", "mimeType"), ErrorCode.INVALID, "Must look like type/subtype."),
            E(
                ("attachments", "0", "sizeBytes"),
                ErrorCode.OUT_OF_RANGE,
                "Must be between 0 and 1099511627776.",
            ),
            E(("attachments", "0", "metadata"), ErrorCode.INVALID, "Numbers must be finite."),
        ],
        id="attachment-several-problems",
    ),
    pytest.param(
        {
            "channel_timestamp": None,
            "external_message_id": None,
            "contact": ContactInput(external_user_id="U-1", avatar_url="data:image/png;base64,AA"),
            "attachments": (AttachmentInput(kind=None, url="https://cdn.example.com/a.jpg"),),
        },
        [
            E(("channelTimestamp",), ErrorCode.REQUIRED, REQUIRED),
            E(
                ("idempotencyKey",),
                ErrorCode.REQUIRED,
                "An idempotencyKey or an externalMessageId is required.",
            ),
            E(
                ("contact", "avatarUrl"),
                ErrorCode.INVALID,
                "Must be an absolute http or https URL.",
            ),
            E(("attachments", "0", "kind"), ErrorCode.REQUIRED, REQUIRED),
        ],
        id="several-errors-at-once",
    ),
]


async def _rejected(
    engine: AsyncEngine, db: Database, tenant: TenantId, message: NormalizedMessage
) -> list[FieldError]:
    before = await row_counts(engine)
    with pytest.raises(ValidationFailed) as info:
        await persist_message(db, tenant, message)
    assert await row_counts(engine) == before
    return info.value.errors


@pytest.mark.parametrize(("change", "expected"), MALFORMED)
async def test_malformed_inbound_is_rejected_and_writes_nothing(
    engine: AsyncEngine,
    db: Database,
    tenant: TenantId,
    change: Change,
    expected: list[FieldError],
) -> None:
    account = await channel_account(db, tenant)
    message = dataclasses.replace(inbound(account_id=account.id, thread=None), **change)
    assert await _rejected(engine, db, tenant, message) == expected


OUTBOUND_MALFORMED: list[Any] = [
    pytest.param(
        {"sender": None},
        [E(("sender",), ErrorCode.REQUIRED, "An outbound message needs a sender.")],
        id="no-sender",
    ),
    pytest.param(
        {"sender": SenderInput(type=SenderType.CONTACT, display_name="Somchai")},
        [
            E(
                ("sender", "type"),
                ErrorCode.NOT_ALLOWED,
                "An outbound sender is an AGENT, a BOT or the SYSTEM.",
            )
        ],
        id="sender-contact",
    ),
    pytest.param(
        {"sender": SenderInput(type=SenderType.BOT)},
        [
            E(
                ("sender", "displayName"),
                ErrorCode.REQUIRED,
                "An outbound sender needs a displayName.",
            )
        ],
        id="sender-without-displayName",
    ),
    pytest.param(
        {"conversation_id": None, "contact": None},
        [
            E(
                ("conversationId",),
                ErrorCode.REQUIRED,
                "An outbound message needs a conversationId or the contact's externalUserId.",
            )
        ],
        id="neither-conversation-nor-contact",
    ),
]


@pytest.mark.parametrize(("change", "expected"), OUTBOUND_MALFORMED)
async def test_malformed_outbound_is_rejected_and_writes_nothing(
    engine: AsyncEngine,
    db: Database,
    tenant: TenantId,
    change: Change,
    expected: list[FieldError],
) -> None:
    account = await channel_account(db, tenant)
    opened = await persist_message(db, tenant, inbound(account_id=account.id))
    reply = outbound(account_id=account.id, conversation_id=opened.conversation_id)
    message = dataclasses.replace(reply, **change)
    assert await _rejected(engine, db, tenant, message) == expected


async def test_the_valid_baselines_of_the_cases_above_are_stored(
    engine: AsyncEngine, db: Database, tenant: TenantId
) -> None:
    """The cases above fail because of their one change, not because of their baseline."""
    account = await channel_account(db, tenant)
    before = await row_counts(engine)
    first = await persist_message(db, tenant, inbound(account_id=account.id, thread=None))
    reply = outbound(account_id=account.id, conversation_id=first.conversation_id)
    second = await persist_message(db, tenant, reply)
    assert (first.deduplicated, second.deduplicated) == (False, False)
    assert second.conversation_id == first.conversation_id
    after = await row_counts(engine)
    assert {name: after[name] - before[name] for name in after} == {
        "channel_accounts": 0,
        "contacts": 1,
        "conversations": 1,
        "messages": 2,
        "attachments": 0,
    }


async def test_unknown_channel_account_is_not_found_and_writes_nothing(
    engine: AsyncEngine, db: Database, tenant: TenantId, other_tenant: TenantId
) -> None:
    foreign = await channel_account(db, other_tenant)
    await channel_account(db, tenant)
    before = await row_counts(engine)
    not_found = [
        E(("channelAccountId",), ErrorCode.NOT_FOUND, "This channel account does not exist.")
    ]
    for account_id in (2**63 - 1, foreign.id):
        with pytest.raises(NotFound) as info:
            await persist_message(db, tenant, inbound(account_id=account_id))
        assert info.value.errors == not_found
        with pytest.raises(NotFound) as info:
            await persist_message(db, tenant, outbound(account_id=account_id, external_user_id="U"))
        assert info.value.errors == not_found
    assert await row_counts(engine) == before


async def test_other_write_operations_reject_malformed_input_and_write_nothing(
    engine: AsyncEngine, db: Database, tenant: TenantId
) -> None:
    account = await channel_account(db, tenant)
    stored = await persist_message(db, tenant, inbound(account_id=account.id))
    before = await row_counts(engine)

    with pytest.raises(ValidationFailed) as info:
        await register_channel_account(
            db, tenant, channel="MYSPACE", external_account_id=" ", fallback_window_seconds=1
        )
    assert info.value.errors == [
        E(
            ("channel",),
            ErrorCode.INVALID,
            "Must be one of LINE, FACEBOOK, INSTAGRAM, WHATSAPP, SHOPEE, LAZADA, TIKTOK_SHOP, "
            "EMAIL, WEBCHAT.",
        ),
        E(("externalAccountId",), ErrorCode.REQUIRED, "Must not be blank."),
        E(("fallbackWindowSeconds",), ErrorCode.OUT_OF_RANGE, "Must be between 60 and 7776000."),
    ]

    with pytest.raises(ValidationFailed) as info:
        await upsert_contact(
            db, tenant, account.id, ContactInput(external_user_id="U-9", profile={"a": "\x00"})
        )
    assert info.value.errors == [
        E(("profile",), ErrorCode.INVALID_CHARACTER, "Must not contain NUL characters.")
    ]

    with pytest.raises(ValidationFailed) as info:
        await upsert_conversation(
            db,
            tenant,
            channel_account_id=account.id,
            external_thread_id=None,
            contact=None,
            channel_timestamp=at(0),
        )
    assert info.value.errors == [
        E(
            ("externalThreadId",),
            ErrorCode.REQUIRED,
            "An externalThreadId or the contact's externalUserId is required.",
        )
    ]

    with pytest.raises(ValidationFailed) as info:
        await add_attachments(db, tenant, stored.message_id, [image(width=-1)])
    assert info.value.errors == [
        E(("attachments", "0", "width"), ErrorCode.OUT_OF_RANGE, "Must be between 0 and 100000.")
    ]
    assert await row_counts(engine) == before


# --- failures after some statements succeeded ---------------------------------------------------


@asynccontextmanager
async def failing_insert(
    engine: AsyncEngine, table: str, tenant: TenantId, condition: str
) -> AsyncIterator[str]:
    """A BEFORE INSERT trigger on ``table`` that raises for this tenant's rows matching
    ``condition`` (SQL on NEW); created and committed here, dropped whatever happens."""
    name = f"omni_test_fail_{table}_{uuid.uuid4().hex[:16]}"
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(
                f"""
                CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body$
                BEGIN
                    IF NEW.tenant_id = '{tenant}'::uuid AND ({condition}) THEN
                        RAISE EXCEPTION 'injected failure in {table}';
                    END IF;
                    RETURN NEW;
                END
                $body$
                """
            )
            await connection.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        yield name
    finally:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            await connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")


async def _leftovers(engine: AsyncEngine, name: str) -> tuple[int, int]:
    async with engine.connect() as connection:
        triggers = await connection.scalar(
            text("SELECT count(*) FROM pg_trigger WHERE tgname = :n"), {"n": name}
        )
        functions = await connection.scalar(
            text("SELECT count(*) FROM pg_proc WHERE proname = :n"), {"n": name}
        )
    return triggers, functions


def _injected(error: asyncpg.PostgresError, table: str) -> None:
    assert error.sqlstate == "P0001"
    assert f"injected failure in {table}" in str(error)


async def test_failing_conversation_insert_rolls_back_the_new_contact(
    engine: AsyncEngine, db: Database, tenant: TenantId
) -> None:
    account = await channel_account(db, tenant)
    message = inbound(account_id=account.id, thread="explode", external_user_id="U-new")
    before = await row_counts(engine)
    async with failing_insert(
        engine, "conversations", tenant, "NEW.thread_key = 't:explode'"
    ) as name:
        with pytest.raises(asyncpg.RaiseError) as info:
            await persist_message(db, tenant, message)
        _injected(info.value, "conversations")
        assert await row_counts(engine) == before
        async with engine.connect() as connection:
            stored_contacts = await connection.scalar(
                select(contacts.c.id).where(contacts.c.tenant_id == tenant).limit(1)
            )
        assert stored_contacts is None
        # Other threads of the same tenant are not affected by the trigger.
        elsewhere = await persist_message(
            db, tenant, inbound(account_id=account.id, thread="calm", external_user_id="U-2")
        )
        assert elsewhere.deduplicated is False
    assert await _leftovers(engine, name) == (0, 0)

    # Nothing of the failed attempt remains, not even its idempotency key: it stores anew.
    result = await persist_message(db, tenant, message)
    assert result.deduplicated is False
    after = await row_counts(engine)
    assert {name: after[name] - before[name] for name in after} == {
        "channel_accounts": 0,
        "contacts": 2,
        "conversations": 2,
        "messages": 2,
        "attachments": 0,
    }


async def test_failing_attachment_insert_rolls_back_the_message_and_the_refreshes(
    engine: AsyncEngine, db: Database, tenant: TenantId
) -> None:
    account = await channel_account(db, tenant)
    opened = await persist_message(
        db, tenant, inbound(account_id=account.id, display_name="Somchai", when=at(0))
    )
    poison = f"https://cdn.example.com/explode-{uuid.uuid4().hex}.jpg"
    message = inbound(
        account_id=account.id,
        display_name="Somchai Renamed",
        when=at(30),
        content_type=ContentType.IMAGE,
        text=None,
        attachments=(image(), image(url=poison)),
    )
    before = await row_counts(engine)
    async with failing_insert(engine, "attachments", tenant, f"NEW.url = '{poison}'") as name:
        with pytest.raises(asyncpg.RaiseError) as info:
            await persist_message(db, tenant, message)
        _injected(info.value, "attachments")
        assert await row_counts(engine) == before
        async with engine.connect() as connection:
            contact = (
                await connection.execute(
                    select(contacts.c.id, contacts.c.display_name).where(
                        contacts.c.tenant_id == tenant
                    )
                )
            ).one()
            conversation = (
                await connection.execute(
                    select(conversations.c.id, conversations.c.last_message_at).where(
                        conversations.c.tenant_id == tenant
                    )
                )
            ).one()
        # The contact refresh and the conversation's activity bump were rolled back too.
        assert tuple(contact) == (opened.contact_id, "Somchai")
        assert tuple(conversation) == (opened.conversation_id, at(0))
    assert await _leftovers(engine, name) == (0, 0)

    retried = await persist_message(db, tenant, message)
    assert (retried.deduplicated, retried.conversation_id) == (False, opened.conversation_id)
    after = await row_counts(engine)
    assert {name: after[name] - before[name] for name in after} == {
        "channel_accounts": 0,
        "contacts": 0,
        "conversations": 0,
        "messages": 1,
        "attachments": 2,
    }


async def test_failing_message_insert_does_not_move_the_conversation_forward(
    engine: AsyncEngine, db: Database, tenant: TenantId
) -> None:
    account = await channel_account(db, tenant)
    opened = await persist_message(db, tenant, inbound(account_id=account.id, when=at(0)))
    key = f"reply-explode-{uuid.uuid4().hex}"
    reply = outbound(
        account_id=account.id,
        conversation_id=opened.conversation_id,
        idempotency_key=key,
        when=at(45),
    )
    before = await row_counts(engine)
    async with failing_insert(engine, "messages", tenant, f"NEW.idempotency_key = '{key}'"):
        with pytest.raises(asyncpg.RaiseError) as info:
            await persist_message(db, tenant, reply)
        _injected(info.value, "messages")
        assert await row_counts(engine) == before
        async with engine.connect() as connection:
            last = await connection.scalar(
                select(conversations.c.last_message_at).where(
                    conversations.c.tenant_id == tenant,
                    conversations.c.id == opened.conversation_id,
                )
            )
        assert last == at(0)


async def test_a_failing_test_body_still_drops_its_trigger(
    engine: AsyncEngine, db: Database, tenant: TenantId
) -> None:
    account = await channel_account(db, tenant)
    names: list[str] = []

    async def failing_body() -> None:
        async with failing_insert(engine, "conversations", tenant, "true") as name:
            names.append(name)
            assert await _leftovers(engine, name) == (1, 1)
            raise RuntimeError("the test body failed")

    with pytest.raises(RuntimeError, match="the test body failed"):
        await failing_body()
    [name] = names
    assert name.startswith("omni_test_fail_conversations_")
    assert await _leftovers(engine, name) == (0, 0)
    stored = await persist_message(db, tenant, inbound(account_id=account.id))
    assert stored.deduplicated is False
