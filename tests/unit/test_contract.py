"""The normalized-message contract, thread keys, cursors and content hashes: pure, no database.

Every rejection is asserted as the full, ordered list of FieldError (path in the API's camelCase
names, code, message), so a duplicated, missing or reordered error fails the test.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from omni_store.graph.ids import (
    TYPES,
    _cached_parse_global_id,
    _parse_global_id,
    parse_global_id,
    to_global_id,
)
from omni_store.persistence.contract import (
    AttachmentInput,
    ContactInput,
    ContentInput,
    NormalizedMessage,
    SenderInput,
    validate_attachments,
    validate_channel_account,
    validate_contact,
    validate_conversation,
    validate_message,
)
from omni_store.persistence.cursors import decode_cursor, encode_cursor
from omni_store.persistence.enums import (
    AttachmentKind,
    Channel,
    ContentType,
    DeliveryStatus,
    Direction,
    ErrorCode,
    SenderType,
    by_value,
)
from omni_store.persistence.errors import FieldError, ValidationFailed
from omni_store.persistence.service import _canonical_json, content_hash
from omni_store.persistence.threads import thread_key

E = FieldError
REQUIRED = "This field is required."
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WHEN = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
BANGKOK = timezone(timedelta(hours=7))
IMAGE_URL = "https://cdn.example.com/a.jpg"


def long_url(length: int) -> str:
    prefix = "https://cdn.example.com/"
    return prefix + "a" * (length - len(prefix))


def image(**changes: Any) -> AttachmentInput:
    return dataclasses.replace(AttachmentInput(kind=AttachmentKind.IMAGE, url=IMAGE_URL), **changes)


def inbound(**changes: Any) -> NormalizedMessage:
    message = NormalizedMessage(
        channel_account_id=1,
        direction=Direction.INBOUND,
        channel_timestamp=WHEN,
        content=ContentInput(type=ContentType.TEXT, text="hello"),
        external_message_id="m-1",
        external_thread_id="th-1",
        contact=ContactInput(external_user_id="U-1", display_name="Somchai"),
    )
    return dataclasses.replace(message, **changes)


def outbound(**changes: Any) -> NormalizedMessage:
    message = NormalizedMessage(
        channel_account_id=1,
        direction=Direction.OUTBOUND,
        channel_timestamp=WHEN,
        content=ContentInput(type=ContentType.TEXT, text="Thanks!"),
        idempotency_key="reply-1",
        conversation_id=10,
        sender=SenderInput(type=SenderType.AGENT, display_name="Agent Nok", external_id="a-7"),
    )
    return dataclasses.replace(message, **changes)


def text(value: str | None, content_type: ContentType | str | None = ContentType.TEXT) -> Any:
    return {"content": ContentInput(type=content_type, text=value)}


def struct(value: Any) -> Any:
    return {"content": ContentInput(type=ContentType.LOCATION, struct=value)}


def contact(**fields: Any) -> Any:
    return {"contact": ContactInput(**{"external_user_id": "U-1", **fields})}


def attachment(**fields: Any) -> Any:
    return {"attachments": (image(**fields),)}


def nested(levels: int) -> dict[str, Any]:
    """``levels`` objects inside one another, the innermost holding a scalar."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def rejected(call: Any, *args: Any, **kwargs: Any) -> list[FieldError]:
    with pytest.raises(ValidationFailed) as info:
        call(*args, **kwargs)
    return info.value.errors


def message_errors(message: NormalizedMessage) -> list[FieldError]:
    return rejected(validate_message, message, now=NOW)


# --- validate_message: rejections -------------------------------------------------------------

TEXT = ("content", "text")
STRUCT = ("content", "struct")
A0 = ("attachments", "0")
TOO_LONG_ID = "Must be at most 255 characters."
NUL = "Must not contain NUL characters."
NOT_UNICODE = "Must be valid Unicode text."
NOT_HTTP = "Must be an absolute http or https URL."

MALFORMED = [
    # required fields
    pytest.param(
        inbound(channel_account_id=None),
        [E(("channelAccountId",), ErrorCode.REQUIRED, REQUIRED)],
        id="missing-channelAccountId",
    ),
    pytest.param(
        inbound(channel_account_id=0),
        [
            E(
                ("channelAccountId",),
                ErrorCode.OUT_OF_RANGE,
                "Must be between 1 and 9223372036854775807.",
            )
        ],
        id="channelAccountId-zero",
    ),
    pytest.param(
        inbound(channel_account_id="1"),
        [E(("channelAccountId",), ErrorCode.INVALID, "Must be an integer.")],
        id="channelAccountId-string",
    ),
    pytest.param(
        inbound(channel_account_id=True),
        [E(("channelAccountId",), ErrorCode.INVALID, "Must be an integer.")],
        id="channelAccountId-bool",
    ),
    pytest.param(
        inbound(direction=None),
        [E(("direction",), ErrorCode.REQUIRED, REQUIRED)],
        id="missing-direction",
    ),
    pytest.param(
        inbound(channel_timestamp=None),
        [E(("channelTimestamp",), ErrorCode.REQUIRED, REQUIRED)],
        id="missing-channelTimestamp",
    ),
    pytest.param(
        inbound(content=None),
        [E(("content",), ErrorCode.REQUIRED, REQUIRED)],
        id="missing-content",
    ),
    pytest.param(
        inbound(**text("hello", content_type=None)),
        [E(("content", "type"), ErrorCode.REQUIRED, REQUIRED)],
        id="missing-content-type",
    ),
    # invalid enum values
    pytest.param(
        inbound(direction="SIDEWAYS"),
        [E(("direction",), ErrorCode.INVALID, "Must be one of INBOUND, OUTBOUND.")],
        id="direction-unknown",
    ),
    pytest.param(
        inbound(direction="inbound"),
        [E(("direction",), ErrorCode.INVALID, "Must be one of INBOUND, OUTBOUND.")],
        id="direction-lowercase",
    ),
    pytest.param(
        inbound(**text("hello", content_type="GIF")),
        [
            E(
                ("content", "type"),
                ErrorCode.INVALID,
                "Must be one of TEXT, IMAGE, VIDEO, AUDIO, FILE, STICKER, LOCATION, PRODUCT, "
                "ORDER, TEMPLATE, INTERACTIVE, UNSUPPORTED.",
            )
        ],
        id="content-type-unknown",
    ),
    pytest.param(
        outbound(sender=SenderInput(type="ROBOT", display_name="R2")),
        [E(("sender", "type"), ErrorCode.INVALID, "Must be one of CONTACT, AGENT, BOT, SYSTEM.")],
        id="outbound-sender-type-unknown",
    ),
    pytest.param(
        inbound(sender=SenderInput(type="ROBOT")),
        [E(("sender", "type"), ErrorCode.INVALID, "Must be one of CONTACT, AGENT, BOT, SYSTEM.")],
        id="inbound-sender-type-unknown",
    ),
    pytest.param(
        outbound(sender=SenderInput(type=None, display_name="Agent Nok")),
        [E(("sender", "type"), ErrorCode.REQUIRED, REQUIRED)],
        id="outbound-sender-type-missing",
    ),
    pytest.param(
        inbound(attachments=(image(kind="GIF"),)),
        [
            E(
                (*A0, "kind"),
                ErrorCode.INVALID,
                "Must be one of IMAGE, VIDEO, AUDIO, FILE, STICKER.",
            )
        ],
        id="attachment-kind-unknown",
    ),
    # TEXT needs text
    pytest.param(
        inbound(**text(None)),
        [E(TEXT, ErrorCode.REQUIRED, "A TEXT message needs text.")],
        id="text-without-text",
    ),
    pytest.param(
        inbound(**text("")),
        [E(TEXT, ErrorCode.REQUIRED, "A TEXT message needs text.")],
        id="text-empty",
    ),
    pytest.param(
        inbound(**text(" \n\t ")),
        [E(TEXT, ErrorCode.REQUIRED, "A TEXT message needs text.")],
        id="text-whitespace",
    ),
    # idempotency key
    pytest.param(
        inbound(external_message_id=None, idempotency_key=None),
        [
            E(
                ("idempotencyKey",),
                ErrorCode.REQUIRED,
                "An idempotencyKey or an externalMessageId is required.",
            )
        ],
        id="no-key-at-all",
    ),
    pytest.param(
        inbound(external_message_id=None, idempotency_key="  "),
        [E(("idempotencyKey",), ErrorCode.REQUIRED, "Must not be blank.")],
        id="blank-idempotencyKey",
    ),
    pytest.param(
        inbound(external_message_id=""),
        [E(("externalMessageId",), ErrorCode.REQUIRED, "Must not be blank.")],
        id="blank-externalMessageId",
    ),
    pytest.param(
        inbound(external_thread_id=" "),
        [E(("externalThreadId",), ErrorCode.REQUIRED, "Must not be blank.")],
        id="blank-externalThreadId",
    ),
    pytest.param(
        inbound(**contact(external_user_id="   ")),
        [E(("contact", "externalUserId"), ErrorCode.REQUIRED, "Must not be blank.")],
        id="blank-externalUserId",
    ),
    pytest.param(
        outbound(
            idempotency_key=None,
            external_message_id="x",
            sender=SenderInput(type="AGENT", display_name="Nok", external_id=""),
        ),
        [E(("sender", "externalId"), ErrorCode.REQUIRED, "Must not be blank.")],
        id="blank-sender-externalId",
    ),
    # too long
    pytest.param(
        inbound(external_message_id="x" * 256),
        [E(("externalMessageId",), ErrorCode.TOO_LONG, TOO_LONG_ID)],
        id="externalMessageId-256",
    ),
    pytest.param(
        inbound(idempotency_key="k" * 256),
        [E(("idempotencyKey",), ErrorCode.TOO_LONG, TOO_LONG_ID)],
        id="idempotencyKey-256",
    ),
    pytest.param(
        inbound(external_thread_id="t" * 256),
        [E(("externalThreadId",), ErrorCode.TOO_LONG, TOO_LONG_ID)],
        id="externalThreadId-256",
    ),
    pytest.param(
        inbound(reply_to_external_message_id="r" * 256),
        [E(("replyToExternalMessageId",), ErrorCode.TOO_LONG, TOO_LONG_ID)],
        id="replyToExternalMessageId-256",
    ),
    pytest.param(
        inbound(**contact(external_user_id="u" * 256)),
        [E(("contact", "externalUserId"), ErrorCode.TOO_LONG, TOO_LONG_ID)],
        id="externalUserId-256",
    ),
    pytest.param(
        inbound(**text("ข" * 50_001)),
        [E(TEXT, ErrorCode.TOO_LONG, "Must be at most 50000 characters.")],
        id="text-50001",
    ),
    pytest.param(
        inbound(**contact(display_name="n" * 256)),
        [E(("contact", "displayName"), ErrorCode.TOO_LONG, TOO_LONG_ID)],
        id="contact-displayName-256",
    ),
    pytest.param(
        outbound(sender=SenderInput(type=SenderType.BOT, display_name="b" * 256)),
        [E(("sender", "displayName"), ErrorCode.TOO_LONG, TOO_LONG_ID)],
        id="sender-displayName-256",
    ),
    pytest.param(
        inbound(**contact(avatar_url=long_url(2049))),
        [E(("contact", "avatarUrl"), ErrorCode.TOO_LONG, "Must be at most 2048 characters.")],
        id="contact-avatarUrl-2049",
    ),
    pytest.param(
        outbound(
            sender=SenderInput(type=SenderType.AGENT, display_name="N", avatar_url=long_url(2049))
        ),
        [E(("sender", "avatarUrl"), ErrorCode.TOO_LONG, "Must be at most 2048 characters.")],
        id="sender-avatarUrl-2049",
    ),
    pytest.param(
        inbound(attachments=(image(url=long_url(2049)),)),
        [E((*A0, "url"), ErrorCode.TOO_LONG, "Must be at most 2048 characters.")],
        id="attachment-url-2049",
    ),
    pytest.param(
        inbound(attachments=(image(file_name="f" * 252 + ".jpg"),)),
        [E((*A0, "fileName"), ErrorCode.TOO_LONG, TOO_LONG_ID)],
        id="attachment-fileName-256",
    ),
    # characters PostgreSQL cannot store
    pytest.param(
        inbound(**text("hello\x00world")),
        [E(TEXT, ErrorCode.INVALID_CHARACTER, NUL)],
        id="text-nul",
    ),
    pytest.param(
        inbound(**text("broken \ud800 pair")),
        [E(TEXT, ErrorCode.INVALID_CHARACTER, NOT_UNICODE)],
        id="text-lone-surrogate",
    ),
    pytest.param(
        inbound(**text("\udfff", content_type=ContentType.STICKER)),
        [E(TEXT, ErrorCode.INVALID_CHARACTER, NOT_UNICODE)],
        id="sticker-text-lone-low-surrogate",
    ),
    pytest.param(
        inbound(external_message_id="m\x00"),
        [E(("externalMessageId",), ErrorCode.INVALID_CHARACTER, NUL)],
        id="externalMessageId-nul",
    ),
    pytest.param(
        inbound(**contact(display_name="Som\ud800chai")),
        [E(("contact", "displayName"), ErrorCode.INVALID_CHARACTER, NOT_UNICODE)],
        id="contact-displayName-surrogate",
    ),
    pytest.param(
        inbound(**struct({"ke\x00y": 1})),
        [E(STRUCT, ErrorCode.INVALID_CHARACTER, NUL)],
        id="struct-key-nul",
    ),
    pytest.param(
        inbound(**struct({"items": [{"sku": "A-1"}, {"sku": "B\x00"}]})),
        [E(STRUCT, ErrorCode.INVALID_CHARACTER, NUL)],
        id="struct-nested-value-nul",
    ),
    pytest.param(
        inbound(**struct({"\ud800": "x"})),
        [E(STRUCT, ErrorCode.INVALID_CHARACTER, NOT_UNICODE)],
        id="struct-key-surrogate",
    ),
    pytest.param(
        inbound(**struct({"order": {"note": ["ok", "\udc00"]}})),
        [E(STRUCT, ErrorCode.INVALID_CHARACTER, NOT_UNICODE)],
        id="struct-nested-value-surrogate",
    ),
    # JSON structs
    pytest.param(
        inbound(**struct(["not", "an", "object"])),
        [E(STRUCT, ErrorCode.INVALID, "Must be a JSON object.")],
        id="struct-list",
    ),
    pytest.param(
        inbound(**struct('{"a": 1}')),
        [E(STRUCT, ErrorCode.INVALID, "Must be a JSON object.")],
        id="struct-json-string",
    ),
    pytest.param(
        inbound(**struct({1: "a"})),
        [E(STRUCT, ErrorCode.INVALID, "Object keys must be strings.")],
        id="struct-int-key",
    ),
    pytest.param(
        inbound(**struct({"price": float("nan")})),
        [E(STRUCT, ErrorCode.INVALID, "Numbers must be finite.")],
        id="struct-nan",
    ),
    pytest.param(
        inbound(**struct({"prices": [1.5, float("-inf")]})),
        [E(STRUCT, ErrorCode.INVALID, "Numbers must be finite.")],
        id="struct-infinity",
    ),
    pytest.param(
        inbound(**struct({"at": WHEN})),
        [E(STRUCT, ErrorCode.INVALID, "datetime is not a JSON value.")],
        id="struct-datetime-value",
    ),
    pytest.param(
        inbound(**struct({"tags": {"a", "b"}})),
        [E(STRUCT, ErrorCode.INVALID, "set is not a JSON value.")],
        id="struct-set-value",
    ),
    pytest.param(
        inbound(**struct(nested(17))),
        [E(STRUCT, ErrorCode.TOO_DEEP, "Must be nested at most 16 levels deep.")],
        id="struct-17-objects-deep",
    ),
    pytest.param(
        inbound(**struct({"a": [[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]})),
        [E(STRUCT, ErrorCode.TOO_DEEP, "Must be nested at most 16 levels deep.")],
        id="struct-17-deep-with-arrays",
    ),
    pytest.param(
        # {"b":"…"} is 8 bytes around the string: 65 529 bytes in all.
        inbound(**struct({"b": "x" * (64 * 1024 - 7)})),
        [E(STRUCT, ErrorCode.TOO_LARGE, "Must be at most 65536 bytes as JSON.")],
        id="struct-65537-bytes",
    ),
    pytest.param(
        # 21 843 Thai characters of 3 UTF-8 bytes each: bytes count, not characters.
        inbound(**struct({"b": "ก" * 21_843})),
        [E(STRUCT, ErrorCode.TOO_LARGE, "Must be at most 65536 bytes as JSON.")],
        id="struct-large-in-utf8-bytes",
    ),
    pytest.param(
        inbound(**contact(profile={"tier": float("nan")})),
        [E(("contact", "profile"), ErrorCode.INVALID, "Numbers must be finite.")],
        id="contact-profile-nan",
    ),
    pytest.param(
        inbound(**contact(profile=["vip"])),
        [E(("contact", "profile"), ErrorCode.INVALID, "Must be a JSON object.")],
        id="contact-profile-list",
    ),
    # timestamps
    pytest.param(
        inbound(channel_timestamp=datetime(2026, 11, 20, 9, 0)),
        [E(("channelTimestamp",), ErrorCode.INVALID, "Must include a time zone offset.")],
        id="timestamp-naive",
    ),
    pytest.param(
        inbound(channel_timestamp="2026-11-20T09:00:00Z"),
        [E(("channelTimestamp",), ErrorCode.INVALID, "Must be a date-time.")],
        id="timestamp-string",
    ),
    pytest.param(
        inbound(channel_timestamp=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
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
        # Local new year in Bangkok is still 1999 in UTC.
        inbound(channel_timestamp=datetime(2000, 1, 1, 6, 59, tzinfo=BANGKOK)),
        [
            E(
                ("channelTimestamp",),
                ErrorCode.OUT_OF_RANGE,
                "Must not be before 2000-01-01T00:00:00Z.",
            )
        ],
        id="timestamp-before-2000-utc-with-offset",
    ),
    pytest.param(
        inbound(channel_timestamp=NOW + timedelta(hours=1, microseconds=1)),
        [
            E(
                ("channelTimestamp",),
                ErrorCode.OUT_OF_RANGE,
                "Must not be more than 1 hour in the future.",
            )
        ],
        id="timestamp-over-1h-ahead",
    ),
    # inbound rules
    pytest.param(
        inbound(contact=None),
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
        inbound(contact=ContactInput(display_name="Somchai")),
        [
            E(
                ("contact", "externalUserId"),
                ErrorCode.REQUIRED,
                "An inbound message needs the contact's externalUserId.",
            )
        ],
        id="inbound-contact-without-externalUserId",
    ),
    pytest.param(
        inbound(sender=SenderInput(type=SenderType.AGENT, display_name="Nok")),
        [E(("sender", "type"), ErrorCode.NOT_ALLOWED, "An inbound sender is the CONTACT.")],
        id="inbound-sender-agent",
    ),
    pytest.param(
        inbound(conversation_id=5),
        [
            E(
                ("conversationId",),
                ErrorCode.NOT_ALLOWED,
                "Inbound messages are mapped to conversations by thread; omit conversationId.",
            )
        ],
        id="inbound-with-conversationId",
    ),
    # outbound rules
    pytest.param(
        outbound(sender=None),
        [E(("sender",), ErrorCode.REQUIRED, "An outbound message needs a sender.")],
        id="outbound-without-sender",
    ),
    pytest.param(
        outbound(sender=SenderInput(type=SenderType.CONTACT, display_name="Somchai")),
        [
            E(
                ("sender", "type"),
                ErrorCode.NOT_ALLOWED,
                "An outbound sender is an AGENT, a BOT or the SYSTEM.",
            )
        ],
        id="outbound-sender-contact",
    ),
    pytest.param(
        outbound(sender=SenderInput(type=SenderType.AGENT)),
        [
            E(
                ("sender", "displayName"),
                ErrorCode.REQUIRED,
                "An outbound sender needs a displayName.",
            )
        ],
        id="outbound-sender-without-displayName",
    ),
    pytest.param(
        outbound(sender=SenderInput(type=SenderType.AGENT, display_name=" ")),
        [E(("sender", "displayName"), ErrorCode.REQUIRED, "Must not be blank.")],
        id="outbound-sender-blank-displayName",
    ),
    pytest.param(
        outbound(conversation_id=None),
        [
            E(
                ("conversationId",),
                ErrorCode.REQUIRED,
                "An outbound message needs a conversationId or the contact's externalUserId.",
            )
        ],
        id="outbound-neither-conversation-nor-contact",
    ),
    pytest.param(
        outbound(conversation_id=None, contact=ContactInput(display_name="Somchai")),
        [
            E(
                ("conversationId",),
                ErrorCode.REQUIRED,
                "An outbound message needs a conversationId or the contact's externalUserId.",
            )
        ],
        id="outbound-contact-without-externalUserId",
    ),
    pytest.param(
        outbound(conversation_id=-3),
        [
            E(
                ("conversationId",),
                ErrorCode.OUT_OF_RANGE,
                "Must be between 1 and 9223372036854775807.",
            )
        ],
        id="outbound-conversationId-negative",
    ),
    # attachments
    pytest.param(
        inbound(attachments=tuple(image() for _ in range(21))),
        [E(("attachments",), ErrorCode.TOO_MANY, "A message holds at most 20 attachments.")],
        id="attachments-21",
    ),
    pytest.param(
        inbound(attachments=(image(kind=None),)),
        [E((*A0, "kind"), ErrorCode.REQUIRED, REQUIRED)],
        id="attachment-missing-kind",
    ),
    pytest.param(
        inbound(attachments=(image(url=None),)),
        [E((*A0, "url"), ErrorCode.REQUIRED, "An attachment needs a url or an externalId.")],
        id="attachment-neither-url-nor-externalId",
    ),
    pytest.param(
        inbound(attachments=(image(), image(url=None, mime_type="image/png"))),
        [
            E(
                ("attachments", "1", "url"),
                ErrorCode.REQUIRED,
                "An attachment needs a url or an externalId.",
            )
        ],
        id="second-attachment-without-url",
    ),
    pytest.param(
        inbound(attachments=(image(url="javascript:alert(1)"),)),
        [E((*A0, "url"), ErrorCode.INVALID, NOT_HTTP)],
        id="attachment-javascript-url",
    ),
    pytest.param(
        inbound(attachments=(image(url="data:image/png;base64,iVBORw0KGgo="),)),
        [E((*A0, "url"), ErrorCode.INVALID, NOT_HTTP)],
        id="attachment-data-url",
    ),
    pytest.param(
        inbound(attachments=(image(url="/media/a.jpg"),)),
        [E((*A0, "url"), ErrorCode.INVALID, NOT_HTTP)],
        id="attachment-relative-url",
    ),
    pytest.param(
        inbound(attachments=(image(url="https:///a.jpg"),)),
        [E((*A0, "url"), ErrorCode.INVALID, NOT_HTTP)],
        id="attachment-url-without-host",
    ),
    pytest.param(
        inbound(**contact(avatar_url="ftp://files.example.com/a.png")),
        [E(("contact", "avatarUrl"), ErrorCode.INVALID, NOT_HTTP)],
        id="contact-avatar-ftp-url",
    ),
    pytest.param(
        inbound(attachments=(image(size_bytes=-1),)),
        [E((*A0, "sizeBytes"), ErrorCode.OUT_OF_RANGE, "Must be between 0 and 1099511627776.")],
        id="attachment-negative-size",
    ),
    pytest.param(
        inbound(attachments=(image(width=-640),)),
        [E((*A0, "width"), ErrorCode.OUT_OF_RANGE, "Must be between 0 and 100000.")],
        id="attachment-negative-width",
    ),
    pytest.param(
        inbound(attachments=(image(height=100_001),)),
        [E((*A0, "height"), ErrorCode.OUT_OF_RANGE, "Must be between 0 and 100000.")],
        id="attachment-height-too-large",
    ),
    pytest.param(
        inbound(attachments=(image(duration_ms=-5),)),
        [E((*A0, "durationMs"), ErrorCode.OUT_OF_RANGE, "Must be between 0 and 604800000.")],
        id="attachment-negative-duration",
    ),
    pytest.param(
        inbound(attachments=(image(width="640"),)),
        [E((*A0, "width"), ErrorCode.INVALID, "Must be an integer.")],
        id="attachment-width-string",
    ),
    pytest.param(
        inbound(attachments=(image(mime_type="jpeg"),)),
        [E((*A0, "mimeType"), ErrorCode.INVALID, "Must look like type/subtype.")],
        id="attachment-mimeType-without-slash",
    ),
    pytest.param(
        inbound(attachments=(image(mime_type="   "),)),
        [E((*A0, "mimeType"), ErrorCode.REQUIRED, "Must not be blank.")],
        id="attachment-mimeType-blank",
    ),
    pytest.param(
        inbound(attachments=(image(mime_type="x" * 256),)),
        [E((*A0, "mimeType"), ErrorCode.TOO_LONG, TOO_LONG_ID)],
        id="attachment-mimeType-too-long",
    ),
    pytest.param(
        inbound(attachments=(image(metadata=["exif"]),)),
        [E((*A0, "metadata"), ErrorCode.INVALID, "Must be a JSON object.")],
        id="attachment-metadata-list",
    ),
    pytest.param(
        inbound(attachments=(image(metadata={"ratio": float("inf")}),)),
        [E((*A0, "metadata"), ErrorCode.INVALID, "Numbers must be finite.")],
        id="attachment-metadata-infinity",
    ),
    pytest.param(
        inbound(attachments=(image(metadata={"caption": "\x00"}),)),
        [E((*A0, "metadata"), ErrorCode.INVALID_CHARACTER, NUL)],
        id="attachment-metadata-nul",
    ),
]


@pytest.mark.parametrize(("message", "expected"), MALFORMED)
def test_malformed_message_reports_exactly(
    message: NormalizedMessage, expected: list[FieldError]
) -> None:
    assert message_errors(message) == expected


def test_several_errors_are_reported_together_in_order() -> None:
    message = inbound(
        channel_account_id=None,
        channel_timestamp=datetime(2026, 11, 20, 9, 0),
        external_message_id=None,
        content=ContentInput(type=ContentType.TEXT, text="", struct={"n": float("nan")}),
        contact=None,
        attachments=(image(), image(kind=None, url="javascript:void(0)")),
        sender=SenderInput(type=SenderType.AGENT),
        conversation_id=3,
    )
    with pytest.raises(ValidationFailed) as info:
        validate_message(message, now=NOW)
    assert info.value.errors == [
        E(("channelAccountId",), ErrorCode.REQUIRED, REQUIRED),
        E(("channelTimestamp",), ErrorCode.INVALID, "Must include a time zone offset."),
        E(
            ("idempotencyKey",),
            ErrorCode.REQUIRED,
            "An idempotencyKey or an externalMessageId is required.",
        ),
        E(STRUCT, ErrorCode.INVALID, "Numbers must be finite."),
        E(TEXT, ErrorCode.REQUIRED, "A TEXT message needs text."),
        E(("attachments", "1", "kind"), ErrorCode.REQUIRED, REQUIRED),
        E(("attachments", "1", "url"), ErrorCode.INVALID, NOT_HTTP),
        E(
            ("contact", "externalUserId"),
            ErrorCode.REQUIRED,
            "An inbound message needs the contact's externalUserId.",
        ),
        E(("sender", "type"), ErrorCode.NOT_ALLOWED, "An inbound sender is the CONTACT."),
        E(
            ("conversationId",),
            ErrorCode.NOT_ALLOWED,
            "Inbound messages are mapped to conversations by thread; omit conversationId.",
        ),
    ]
    assert str(info.value).startswith(
        "channelAccountId: This field is required.; channelTimestamp: Must include a time zone"
    )


def test_outbound_errors_are_reported_together_in_order() -> None:
    message = outbound(
        direction="OUTBOUND",
        idempotency_key="k" * 256,
        conversation_id=None,
        content=ContentInput(type="CAROUSEL"),
        sender=SenderInput(type=SenderType.CONTACT, avatar_url="javascript:x"),
    )
    assert message_errors(message) == [
        E(("idempotencyKey",), ErrorCode.TOO_LONG, TOO_LONG_ID),
        E(
            ("content", "type"),
            ErrorCode.INVALID,
            "Must be one of TEXT, IMAGE, VIDEO, AUDIO, FILE, STICKER, LOCATION, PRODUCT, "
            "ORDER, TEMPLATE, INTERACTIVE, UNSUPPORTED.",
        ),
        E(("sender", "avatarUrl"), ErrorCode.INVALID, NOT_HTTP),
        E(
            ("sender", "type"),
            ErrorCode.NOT_ALLOWED,
            "An outbound sender is an AGENT, a BOT or the SYSTEM.",
        ),
        E(("sender", "displayName"), ErrorCode.REQUIRED, "An outbound sender needs a displayName."),
        E(
            ("conversationId",),
            ErrorCode.REQUIRED,
            "An outbound message needs a conversationId or the contact's externalUserId.",
        ),
    ]


# --- validate_message: what is accepted (the boundaries of the rejections above) -----------------

VALID = [
    pytest.param(inbound(), id="inbound"),
    pytest.param(outbound(), id="outbound-to-conversation"),
    pytest.param(
        outbound(conversation_id=None, contact=ContactInput(external_user_id="U-1")),
        id="outbound-to-contact",
    ),
    pytest.param(
        outbound(sender=SenderInput(type=SenderType.SYSTEM, display_name="System")),
        id="outbound-system",
    ),
    pytest.param(inbound(direction="INBOUND"), id="direction-as-plain-string"),
    pytest.param(inbound(sender=SenderInput(type=SenderType.CONTACT)), id="inbound-sender-contact"),
    pytest.param(inbound(external_thread_id=None), id="inbound-without-thread"),
    pytest.param(inbound(external_message_id=None, idempotency_key="k"), id="idempotencyKey-only"),
    pytest.param(inbound(external_message_id="x" * 255), id="externalMessageId-255"),
    pytest.param(inbound(**contact(display_name="n" * 255)), id="displayName-255"),
    pytest.param(inbound(**contact(avatar_url=long_url(2048))), id="avatarUrl-2048"),
    pytest.param(inbound(**text("ข" * 50_000)), id="text-50000"),
    pytest.param(inbound(**text("  padded  ")), id="text-with-surrounding-blanks"),
    pytest.param(inbound(**text("สวัสดี 👋🏽")), id="text-thai-and-emoji"),
    pytest.param(
        inbound(content=ContentInput(type=ContentType.IMAGE), attachments=(image(),)),
        id="image-without-text",
    ),
    pytest.param(inbound(**struct(nested(16))), id="struct-16-objects-deep"),
    pytest.param(inbound(**struct({"b": "x" * (64 * 1024 - 8)})), id="struct-65536-bytes"),
    pytest.param(
        inbound(**struct({"n": None, "t": True, "i": -(2**70), "f": 1.5, "l": [], "o": {}})),
        id="struct-all-json-types",
    ),
    pytest.param(inbound(channel_timestamp=datetime(2000, 1, 1, tzinfo=UTC)), id="at-2000"),
    pytest.param(inbound(channel_timestamp=NOW + timedelta(hours=1)), id="exactly-1h-ahead"),
    pytest.param(
        inbound(channel_timestamp=datetime(2026, 11, 27, 19, 0, tzinfo=BANGKOK)),
        id="1h-ahead-in-another-offset",
    ),
    pytest.param(inbound(attachments=tuple(image() for _ in range(20))), id="attachments-20"),
    pytest.param(
        inbound(
            attachments=(
                image(
                    url=None,
                    external_id="media-1",
                    mime_type="image/jpeg",
                    size_bytes=0,
                    width=0,
                    height=100_000,
                    duration_ms=7 * 24 * 3600 * 1000,
                    file_name="a.jpg",
                    metadata={"exif": {"iso": 100}},
                ),
            )
        ),
        id="attachment-by-externalId-with-limits",
    ),
]


@pytest.mark.parametrize("message", VALID)
def test_valid_message_passes(message: NormalizedMessage) -> None:
    assert validate_message(message, now=NOW) is None


def test_now_defaults_to_the_current_time() -> None:
    validate_message(inbound(channel_timestamp=datetime.now(UTC)))
    assert rejected(
        validate_message, inbound(channel_timestamp=datetime.now(UTC) + timedelta(hours=2))
    ) == [
        E(
            ("channelTimestamp",),
            ErrorCode.OUT_OF_RANGE,
            "Must not be more than 1 hour in the future.",
        )
    ]


def test_a_validated_message_has_a_key_and_an_unvalidated_one_does_not() -> None:
    assert inbound(idempotency_key="k-1").key == "k-1"
    assert inbound().key == "m-1"
    with pytest.raises(ValueError, match="no idempotency key"):
        _ = inbound(external_message_id=None).key


# --- the other validators ------------------------------------------------------------------------


def test_validate_contact() -> None:
    assert validate_contact(1, ContactInput(external_user_id="U-1")) is None
    assert rejected(validate_contact, None, ContactInput()) == [
        E(("channelAccountId",), ErrorCode.REQUIRED, REQUIRED),
        E(("externalUserId",), ErrorCode.REQUIRED, REQUIRED),
    ]
    assert rejected(
        validate_contact,
        -1,
        ContactInput(
            external_user_id="u" * 256,
            display_name="n\x00",
            avatar_url="javascript:alert(1)",
            profile={"bad": float("nan")},
        ),
    ) == [
        E(
            ("channelAccountId",),
            ErrorCode.OUT_OF_RANGE,
            "Must be between 1 and 9223372036854775807.",
        ),
        E(("externalUserId",), ErrorCode.TOO_LONG, TOO_LONG_ID),
        E(("displayName",), ErrorCode.INVALID_CHARACTER, NUL),
        E(("avatarUrl",), ErrorCode.INVALID, NOT_HTTP),
        E(("profile",), ErrorCode.INVALID, "Numbers must be finite."),
    ]
    assert rejected(
        validate_contact, 1, ContactInput(external_user_id="U", profile=nested(17))
    ) == [E(("profile",), ErrorCode.TOO_DEEP, "Must be nested at most 16 levels deep.")]


def test_validate_conversation() -> None:
    assert validate_conversation(1, "th-1", None, WHEN, now=NOW) is None
    assert validate_conversation(1, None, ContactInput(external_user_id="U"), WHEN, now=NOW) is None
    assert rejected(validate_conversation, 1, None, None, WHEN, now=NOW) == [
        E(
            ("externalThreadId",),
            ErrorCode.REQUIRED,
            "An externalThreadId or the contact's externalUserId is required.",
        )
    ]
    assert rejected(validate_conversation, 1, "th-1", ContactInput(), WHEN, now=NOW) == [
        E(("contact", "externalUserId"), ErrorCode.REQUIRED, REQUIRED)
    ]
    assert rejected(validate_conversation, None, " ", None, None, now=NOW) == [
        E(("channelAccountId",), ErrorCode.REQUIRED, REQUIRED),
        E(("externalThreadId",), ErrorCode.REQUIRED, "Must not be blank."),
        E(("channelTimestamp",), ErrorCode.REQUIRED, REQUIRED),
    ]
    assert rejected(validate_conversation, 1, "th-1", None, NOW + timedelta(hours=2), now=NOW) == [
        E(
            ("channelTimestamp",),
            ErrorCode.OUT_OF_RANGE,
            "Must not be more than 1 hour in the future.",
        )
    ]
    assert rejected(validate_conversation, 1, "t" * 256, None, WHEN.replace(tzinfo=None)) == [
        E(("externalThreadId",), ErrorCode.TOO_LONG, TOO_LONG_ID),
        E(("channelTimestamp",), ErrorCode.INVALID, "Must include a time zone offset."),
    ]


def test_validate_channel_account() -> None:
    assert validate_channel_account(Channel.LINE, "oa-1", None, None) is None
    assert validate_channel_account("SHOPEE", "shop-1", "Shop", 60) is None
    assert validate_channel_account("SHOPEE", "shop-1", "Shop", 90 * 24 * 3600) is None
    assert rejected(validate_channel_account, None, None, None, None) == [
        E(("channel",), ErrorCode.REQUIRED, REQUIRED),
        E(("externalAccountId",), ErrorCode.REQUIRED, REQUIRED),
    ]
    assert rejected(validate_channel_account, "MYSPACE", " ", "n" * 256, 59) == [
        E(
            ("channel",),
            ErrorCode.INVALID,
            "Must be one of LINE, FACEBOOK, INSTAGRAM, WHATSAPP, SHOPEE, LAZADA, TIKTOK_SHOP, "
            "EMAIL, WEBCHAT.",
        ),
        E(("externalAccountId",), ErrorCode.REQUIRED, "Must not be blank."),
        E(("displayName",), ErrorCode.TOO_LONG, TOO_LONG_ID),
        E(("fallbackWindowSeconds",), ErrorCode.OUT_OF_RANGE, "Must be between 60 and 7776000."),
    ]
    assert rejected(validate_channel_account, "LINE", "oa", None, 90 * 24 * 3600 + 1) == [
        E(("fallbackWindowSeconds",), ErrorCode.OUT_OF_RANGE, "Must be between 60 and 7776000.")
    ]
    assert rejected(validate_channel_account, "LINE", "oa", None, 3600.0) == [
        E(("fallbackWindowSeconds",), ErrorCode.INVALID, "Must be an integer.")
    ]


def test_validate_attachments() -> None:
    assert validate_attachments(1, [image()]) is None
    assert validate_attachments(1, [image(), image()], already=18) is None
    assert rejected(validate_attachments, None, []) == [
        E(("messageId",), ErrorCode.REQUIRED, REQUIRED),
        E(("attachments",), ErrorCode.REQUIRED, "At least one attachment is required."),
    ]
    assert rejected(validate_attachments, 1, [image(), image()], already=19) == [
        E(("attachments",), ErrorCode.TOO_MANY, "A message holds at most 20 attachments.")
    ]
    assert rejected(
        validate_attachments,
        1,
        [image(), image(kind="PDF", url=None, external_id=" "), image(width=-1, mime_type="x")],
    ) == [
        E(
            ("attachments", "1", "kind"),
            ErrorCode.INVALID,
            "Must be one of IMAGE, VIDEO, AUDIO, FILE, STICKER.",
        ),
        E(("attachments", "1", "externalId"), ErrorCode.REQUIRED, "Must not be blank."),
        E(("attachments", "2", "mimeType"), ErrorCode.INVALID, "Must look like type/subtype."),
        E(("attachments", "2", "width"), ErrorCode.OUT_OF_RANGE, "Must be between 0 and 100000."),
    ]


# --- thread keys ---------------------------------------------------------------------------------

DAY = 24 * 3600
NOV_20 = 1_795_132_800  # 2026-11-20T00:00:00Z
NOV_19 = NOV_20 - DAY


def key(at: datetime, *, user: str = "U-1", thread: str | None = None, window: int = DAY) -> str:
    return thread_key(
        external_thread_id=thread,
        external_user_id=user,
        channel_timestamp=at,
        window_seconds=window,
    )


def test_thread_id_wins_over_the_fallback() -> None:
    assert key(WHEN, thread="th-9") == "t:th-9"
    assert key(WHEN + timedelta(days=40), thread="th-9", window=60) == "t:th-9"
    assert thread_key(
        external_thread_id="th-9", external_user_id=None, channel_timestamp=WHEN, window_seconds=1
    ) == ("t:th-9")


def test_fallback_needs_a_user() -> None:
    with pytest.raises(ValueError, match="needs a thread id or an external user id"):
        thread_key(
            external_thread_id=None,
            external_user_id=None,
            channel_timestamp=WHEN,
            window_seconds=DAY,
        )


def test_a_thread_id_needs_no_window_and_the_fallback_does() -> None:
    # persistMessage keys a message with a thread id before it has read the account.
    assert thread_key(
        external_thread_id="th-9",
        external_user_id="U-1",
        channel_timestamp=WHEN,
        window_seconds=None,
    ) == ("t:th-9")
    with pytest.raises(ValueError, match="needs the account's window"):
        thread_key(
            external_thread_id=None,
            external_user_id="U-1",
            channel_timestamp=WHEN,
            window_seconds=None,
        )


def test_fallback_bucket_boundaries() -> None:
    assert int(datetime(2026, 11, 20, tzinfo=UTC).timestamp()) == NOV_20
    start = datetime(2026, 11, 20, tzinfo=UTC)
    assert key(start) == f"u:{NOV_20}:U-1"
    assert key(start + timedelta(hours=9)) == f"u:{NOV_20}:U-1"
    assert key(start + timedelta(days=1, microseconds=-1)) == f"u:{NOV_20}:U-1"
    assert key(start + timedelta(days=1)) == f"u:{NOV_20 + DAY}:U-1"
    assert key(start - timedelta(microseconds=1)) == f"u:{NOV_19}:U-1"


def test_fallback_buckets_are_aligned_to_the_epoch_not_to_the_local_day() -> None:
    # 06:59 in Bangkok is 23:59 UTC the day before; 07:00 in Bangkok starts the UTC day.
    assert key(datetime(2026, 11, 20, 6, 59, 59, tzinfo=BANGKOK)) == f"u:{NOV_19}:U-1"
    assert key(datetime(2026, 11, 20, 7, 0, tzinfo=BANGKOK)) == f"u:{NOV_20}:U-1"
    # The same instant in two offsets is the same bucket.
    assert key(datetime(2026, 11, 20, 16, 0, tzinfo=BANGKOK)) == key(
        datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    )


def test_fallback_with_a_custom_window() -> None:
    assert (
        key(WHEN + timedelta(minutes=59, seconds=59), window=3600) == f"u:{NOV_20 + 9 * 3600}:U-1"
    )
    assert key(WHEN + timedelta(minutes=60), window=3600) == f"u:{NOV_20 + 10 * 3600}:U-1"
    assert key(WHEN + timedelta(seconds=119), window=60) == f"u:{NOV_20 + 9 * 3600 + 60}:U-1"
    # A week from the epoch (a Thursday): 2026-11-19 00:00 UTC starts the week of the 20th.
    assert key(WHEN, window=7 * DAY) == f"u:{NOV_19}:U-1"
    assert key(datetime(2026, 11, 18, 23, 59, tzinfo=UTC), window=7 * DAY) == (
        f"u:{NOV_19 - 7 * DAY}:U-1"
    )
    # A window that does not divide a day: 90 minutes from the epoch.
    at = WHEN + timedelta(minutes=10)
    seconds = int(at.timestamp())
    assert key(at, window=5400) == f"u:{seconds - seconds % 5400}:U-1"
    assert (seconds - seconds % 5400) % 5400 == 0


def test_fallback_keys_of_users_with_colons_stay_distinct() -> None:
    assert key(WHEN, user="wa:66:812345678") == f"u:{NOV_20}:wa:66:812345678"
    keys = {
        key(WHEN, user="1:2"),
        key(WHEN, user="1"),
        key(WHEN, user=f"{NOV_20}:1"),
        key(WHEN + timedelta(days=1), user="1"),
        key(WHEN, user="x", thread=None),
        key(WHEN, thread=f"u:{NOV_20}:x"),
    }
    assert len(keys) == 6
    prefix, bucket, user = key(WHEN, user="a:b:c").split(":", 2)
    assert (prefix, bucket, user) == ("u", str(NOV_20), "a:b:c")


# --- cursors -------------------------------------------------------------------------------------

BAD_AFTER = [E(("after",), ErrorCode.INVALID, "Not a cursor of this connection.")]


def _raw_cursor(payload: Any) -> str:
    encoded = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.urlsafe_b64encode(encoded).decode().rstrip("=")


def test_cursor_roundtrip() -> None:
    at = datetime(2026, 11, 20, 9, 0, 0, 123456, tzinfo=UTC)
    cursor = encode_cursor("messages", 42, (at, 7))
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    decoded = decode_cursor(cursor, kind="messages", scope=42, field="after")
    assert decoded == (at, 7)
    assert decoded[0].utcoffset() == timedelta(0)

    local = datetime(2026, 11, 20, 16, 0, 0, 1, tzinfo=BANGKOK)
    assert decode_cursor(
        encode_cursor("conversations", None, (local, 2**63 - 1)),
        kind="conversations",
        scope=None,
        field="after",
    ) == (local, 2**63 - 1)


def test_cursor_of_another_connection_is_rejected() -> None:
    cursor = encode_cursor("messages", 42, (WHEN, 7))
    assert rejected(decode_cursor, cursor, kind="conversations", scope=42, field="after") == (
        BAD_AFTER
    )
    assert rejected(decode_cursor, cursor, kind="messages", scope=43, field="before") == [
        E(("before",), ErrorCode.INVALID, "Not a cursor of this connection.")
    ]
    assert rejected(decode_cursor, cursor, kind="messages", scope=None, field="after") == BAD_AFTER
    unscoped = encode_cursor("conversations", None, (WHEN, 7))
    assert rejected(decode_cursor, unscoped, kind="conversations", scope=0, field="after") == (
        BAD_AFTER
    )


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("", id="empty"),
        pytest.param("not a cursor!", id="not-base64"),
        pytest.param("YQ", id="base64-of-a"),
        pytest.param(_raw_cursor(b"\xff\xfe\x00"), id="not-utf8"),
        pytest.param(_raw_cursor(None), id="json-null"),
        pytest.param(_raw_cursor(5), id="json-number"),
        pytest.param(_raw_cursor({"kind": "messages"}), id="json-object"),
        pytest.param(_raw_cursor(["messages", 42, WHEN.isoformat()]), id="three-items"),
        pytest.param(_raw_cursor(["messages", 42, WHEN.isoformat(), 7, 8]), id="five-items"),
        pytest.param(_raw_cursor(["messages", 42, "yesterday", 7]), id="bad-time"),
        pytest.param(_raw_cursor(["messages", 42, 1795165200, 7]), id="numeric-time"),
        pytest.param(_raw_cursor(["messages", 42, "2026-11-20T09:00:00", 7]), id="naive-time"),
        pytest.param(_raw_cursor(["messages", 42, WHEN.isoformat(), "7"]), id="string-id"),
        pytest.param(_raw_cursor(["messages", 42, WHEN.isoformat(), 7.0]), id="float-id"),
        pytest.param(_raw_cursor(["messages", 42, WHEN.isoformat(), True]), id="bool-id"),
        pytest.param(_raw_cursor(["messages", 42, WHEN.isoformat(), None]), id="null-id"),
        pytest.param(_raw_cursor(["messages", 42, WHEN.isoformat(), 2**63]), id="id-over-bigint"),
        pytest.param(
            _raw_cursor(["messages", 42, "0001-01-01T00:00:00+01:00", 7]), id="time-before-year-1"
        ),
        pytest.param(
            _raw_cursor(["messages", 42, "9999-12-31T23:00:00-05:00", 7]), id="time-after-9999"
        ),
        pytest.param(_raw_cursor(b"[" * 100_000 + b"]" * 100_000), id="deeply-nested-json"),
    ],
)
def test_garbage_cursor_is_rejected(cursor: str) -> None:
    assert rejected(decode_cursor, cursor, kind="messages", scope=42, field="after") == BAD_AFTER


# --- content hash --------------------------------------------------------------------------------


def test_content_hash_is_a_sha256_digest() -> None:
    digest = content_hash(inbound())
    assert type(digest) is bytes
    assert len(digest) == 32
    assert content_hash(inbound()) == digest


def test_content_hash_ignores_the_offset_of_the_same_instant() -> None:
    utc = inbound(channel_timestamp=datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
    bangkok = inbound(channel_timestamp=datetime(2026, 11, 20, 16, 0, tzinfo=BANGKOK))
    assert content_hash(bangkok) == content_hash(utc)
    later = inbound(channel_timestamp=datetime(2026, 11, 20, 9, 0, 0, 1, tzinfo=UTC))
    assert content_hash(later) != content_hash(utc)


def test_content_hash_ignores_refreshed_contact_profile() -> None:
    base = content_hash(inbound())
    refreshed = inbound(
        contact=ContactInput(
            external_user_id="U-1",
            display_name="Somchai J.",
            avatar_url="https://cdn.example.com/new.png",
            profile={"tier": "gold"},
        )
    )
    assert content_hash(refreshed) == base
    assert content_hash(inbound(**contact(external_user_id="U-2"))) != base


def test_content_hash_changes_with_the_content() -> None:
    base = content_hash(inbound())
    assert content_hash(inbound(**text("hello!"))) != base
    assert content_hash(inbound(**text("hello", content_type=ContentType.TEMPLATE))) != base
    assert content_hash(inbound(attachments=(image(),))) != base
    assert content_hash(inbound(attachments=(image(width=10),))) != content_hash(
        inbound(attachments=(image(),))
    )
    reply = outbound()
    renamed = outbound(
        sender=SenderInput(type=SenderType.AGENT, display_name="Nok", external_id="a-7")
    )
    assert content_hash(renamed) != content_hash(reply)


# Digests of messages as the first definition (json.dumps of the canonical form) made them:
# replays of messages stored then must hash the same, whatever encodes the form now.
PINNED_DIGESTS = [
    (
        inbound(
            channel_timestamp=datetime(2026, 11, 20, 16, 0, tzinfo=BANGKOK),
            **text('สวัสดีครับ \u0001 "quoted" 😀'),
        ),
        "0343c8d5673d03c3c13ae5c5702229c70b185234e0d6e1d2a8c9dc371acf8faf",
    ),
    (
        outbound(
            channel_account_id=7,
            channel_timestamp=datetime(2026, 1, 5, 9, 0, 0, 123000, tzinfo=UTC),
            content=ContentInput(
                type=ContentType.LOCATION,
                struct={
                    "lat": 13.7563,
                    "lng": 100.5018,
                    "tiny": 7e-05,
                    "z": [1, "ไทย", None, True],
                },
            ),
            reply_to_external_message_id="m-0",
            sender=SenderInput(
                type=SenderType.AGENT,
                display_name="Agent Nok",
                external_id="a-7",
                avatar_url="https://x.example/a.png",
            ),
            attachments=(
                image(width=10, height=20, metadata={"b": 1, "a": {"é": "x"}}),
                AttachmentInput(
                    kind=AttachmentKind.VIDEO,
                    external_id="v-1",
                    duration_ms=1500.0,
                    size_bytes=2**40,
                ),
            ),
        ),
        "4898a3149f69bb753ba7454d2722ee79a589c2370065a01d5447f01f0ddff622",
    ),
    (
        inbound(
            channel_account_id=2,
            channel_timestamp=datetime(2026, 3, 1, tzinfo=UTC),
            content=ContentInput(
                type=ContentType.PRODUCT,
                struct={"sku": "A-1", "qty": 3, "nested": {"k": [{"deep": "\u2028"}]}},
            ),
            external_message_id="m-9",
            external_thread_id=None,
            contact=ContactInput(external_user_id="U-9"),
            attachments=(
                AttachmentInput(
                    kind=AttachmentKind.FILE,
                    url="https://cdn.example.com/f.pdf",
                    file_name="ใบเสร็จ.pdf",
                    metadata={"n": 2**63},
                ),
            ),
        ),
        "6522c3467583ff09b46aa18e82ec5d22ead727346c9771ccbb0cfce909eabf30",
    ),
]


@pytest.mark.parametrize(("message", "digest"), PINNED_DIGESTS)
def test_content_hash_of_a_stored_message_never_changes(
    message: NormalizedMessage, digest: str
) -> None:
    assert content_hash(message).hex() == digest


def _json_values(floats: bool) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8),
        *([st.floats(allow_nan=False, allow_infinity=False)] if floats else []),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(
                st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=6),
                inner,
                max_size=4,
            ),
        ),
        max_leaves=12,
    )


def _stdlib(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


@settings(max_examples=2000, deadline=None)
@given(_json_values(floats=False))
def test_the_canonical_text_without_floats_is_the_standard_librarys(value: Any) -> None:
    assert _canonical_json(value, []) == _stdlib(value)


@settings(max_examples=2000, deadline=None)
@given(_json_values(floats=True))
@example({"tiny": 7e-05})  # orjson writes 0.00007
@example([1e-07, 1e16, 1.5e300, -0.0])
def test_the_canonical_text_of_free_values_is_the_standard_librarys(value: Any) -> None:
    assert _canonical_json({"free": value, "text": "x"}, [value]) == _stdlib(
        {"free": value, "text": "x"}
    )


def _reference_cursor(kind: str, scope: int | None, at: datetime, row_id: int) -> str:
    """The cursor's text form as first defined: clients may hold cursors of this form."""
    payload = json.dumps([kind, scope, at.isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def test_cursors_keep_their_text_form_and_decode_back() -> None:
    rng = random.Random(38)
    checked = 0
    for _ in range(3000):
        at = WHEN + timedelta(
            seconds=rng.randrange(-(10**9), 10**9),
            microseconds=rng.choice([0, rng.randrange(10**6)]),
        )
        if rng.random() < 0.3:
            at = at.astimezone(timezone(timedelta(minutes=rng.randrange(-720, 840, 15))))
        row_id = rng.choice([1, rng.randrange(2**63), -rng.randrange(2**63), 2**63 - 1])
        for kind, scope in (("messages", rng.randrange(1, 2**62)), ("conversations", None)):
            cursor = encode_cursor(kind, scope, (at, row_id))
            assert cursor == _reference_cursor(kind, scope, at, row_id)
            assert decode_cursor(cursor, kind=kind, scope=scope, field="after") == (at, row_id)
            checked += 1
    assert checked == 6000


def test_global_ids_keep_their_text_form() -> None:
    rng = random.Random(38)
    ids = [1, 9, 10, 99, 2**62, 2**63 - 1, *(rng.randrange(1, 2**63) for _ in range(500))]
    for type_name in TYPES:
        for row_id in ids:
            expected = base64.urlsafe_b64encode(f"{type_name}:{row_id}".encode()).decode()
            global_id = to_global_id(type_name, row_id)
            assert global_id == expected.rstrip("=")
            assert parse_global_id(global_id) == (type_name, row_id)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="QWNvbnZlcnNhdGlvbjox=-_ \n", max_size=70),
        st.sampled_from([to_global_id(t, 2**63 - 1) for t in TYPES]).map(lambda g: g + "=="),
        st.text(max_size=80),
    )
)
def test_a_remembered_global_id_reads_as_one_worked_out(value: str) -> None:
    assert parse_global_id(value) == _parse_global_id(value)
    assert parse_global_id(value) == _parse_global_id(value)  # now remembered, if short


def test_only_global_ids_of_an_ids_length_are_remembered() -> None:
    known = to_global_id("Conversation", 12345)
    long = "Q" * 65
    before = _cached_parse_global_id.cache_info()

    assert [parse_global_id(known) for _ in range(3)] == [("Conversation", 12345)] * 3
    assert [parse_global_id(long) for _ in range(3)] == [None] * 3

    after = _cached_parse_global_id.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) in ((1, 2), (0, 3))
    assert after.currsize - before.currsize <= 1


@pytest.mark.parametrize(
    "vocabulary",
    [Channel, Direction, SenderType, ContentType, AttachmentKind, DeliveryStatus],
    ids=lambda v: v.__name__,
)
def test_by_value_gives_each_stored_value_its_member(vocabulary: type[StrEnum]) -> None:
    member_of = by_value(vocabulary)

    assert [member_of(str(m.value)) for m in vocabulary] == list(vocabulary)
    assert all(member_of(m.value) is vocabulary(m.value) for m in vocabulary)
    with pytest.raises(KeyError):
        member_of(next(iter(vocabulary)).value.lower())
