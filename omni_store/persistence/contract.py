"""The normalized message contract and its validation.

Connectors normalize each channel's webhook into a :class:`NormalizedMessage`; agents' replies
use the same shape with ``direction=OUTBOUND``. :func:`validate_message` checks the whole object
and reports every violation at once, with the path of the field (in the API's camelCase names,
so that internal callers and GraphQL clients see the same paths) and a code. Nothing is written
before an object has passed it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from omni_store.persistence.enums import (
    AttachmentKind,
    Channel,
    ContentType,
    Direction,
    ErrorCode,
    SenderType,
)
from omni_store.persistence.errors import FieldError, ValidationFailed
from omni_store.persistence.records import record_class

JSON = Any
Path = tuple[str, ...]

MAX_ID_LENGTH = 255
MAX_NAME_LENGTH = 255
MAX_URL_LENGTH = 2048
MAX_MIME_TYPE_LENGTH = 255
MAX_TEXT_LENGTH = 50_000
MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
MAX_ATTACHMENTS = 20
MAX_DIMENSION = 100_000
MAX_SIZE_BYTES = 1 << 40
MAX_DURATION_MS = 7 * 24 * 3600 * 1000
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
# Channels' clocks drift; a timestamp further ahead would pin a conversation to the top of the
# list (last_message_at never moves back).
MAX_CLOCK_SKEW = timedelta(hours=1)
MIN_FALLBACK_WINDOW_SECONDS = 60
MAX_FALLBACK_WINDOW_SECONDS = 90 * 24 * 3600
DEFAULT_FALLBACK_WINDOW_SECONDS = 24 * 3600


@record_class
class ContactInput:
    external_user_id: str | None = None
    display_name: str | None = None
    avatar_url: str | None = None
    profile: JSON | None = None


@record_class
class SenderInput:
    type: SenderType | str | None = None
    display_name: str | None = None
    external_id: str | None = None
    avatar_url: str | None = None


@record_class
class ContentInput:
    type: ContentType | str | None = None
    text: str | None = None
    struct: JSON | None = None


@record_class
class AttachmentInput:
    kind: AttachmentKind | str | None = None
    url: str | None = None
    mime_type: str | None = None
    # Floats as given: GraphQL carries these as Float (its Int is 32-bit), so 1.5 can arrive;
    # validation accepts whole numbers only (INVALID otherwise).
    size_bytes: int | float | None = None
    file_name: str | None = None
    width: int | None = None
    height: int | None = None
    duration_ms: int | float | None = None
    external_id: str | None = None
    metadata: JSON | None = None


@record_class
class NormalizedMessage:
    """One message as a connector (inbound) or the reply sender (outbound) hands it over."""

    channel_account_id: int | None
    direction: Direction | str | None
    channel_timestamp: datetime | None
    content: ContentInput | None
    external_message_id: str | None = None
    idempotency_key: str | None = None
    external_thread_id: str | None = None
    conversation_id: int | None = None
    contact: ContactInput | None = None
    sender: SenderInput | None = None
    attachments: Sequence[AttachmentInput] = field(default_factory=tuple)
    reply_to_external_message_id: str | None = None

    @property
    def key(self) -> str:
        """The idempotency key: the connector's own key, else the channel's message id."""
        key = self.idempotency_key if self.idempotency_key is not None else self.external_message_id
        if key is None:
            raise ValueError("an unvalidated message has no idempotency key")
        return key


class _Collector:
    """Collects every violation of one object, so a client can fix all of them at once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, path: Path, code: ErrorCode, message: str) -> None:
        self.errors.append(FieldError(path, code, message))

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)

    # --- scalars -------------------------------------------------------------------------

    def string(
        self,
        path: Path,
        value: object,
        *,
        required: bool = False,
        max_length: int = MAX_ID_LENGTH,
        blank: bool = False,
    ) -> None:
        """A string field; identifiers (the default) must not be blank when given."""
        if value is None:
            if required:
                self.add(path, ErrorCode.REQUIRED, "This field is required.")
            return
        if not isinstance(value, str):
            self.add(path, ErrorCode.INVALID, "Must be a string.")
            return
        if not blank and not value.strip():
            self.add(path, ErrorCode.REQUIRED, "Must not be blank.")
            return
        if len(value) > max_length:
            self.add(path, ErrorCode.TOO_LONG, f"Must be at most {max_length} characters.")
            return
        self._characters(path, value)

    def _characters(self, path: Path, value: str) -> None:
        # PostgreSQL text and jsonb cannot hold NUL, and lone surrogates are not UTF-8.
        if "\x00" in value:
            self.add(path, ErrorCode.INVALID_CHARACTER, "Must not contain NUL characters.")
            return
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.add(path, ErrorCode.INVALID_CHARACTER, "Must be valid Unicode text.")

    def url(self, path: Path, value: object) -> None:
        before = len(self.errors)
        self.string(path, value, max_length=MAX_URL_LENGTH)
        if value is None or len(self.errors) > before:
            return
        assert isinstance(value, str)
        parts = urlsplit(value)
        # Rendered by the inbox as links and images: no javascript:, data: or relative URLs.
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.add(path, ErrorCode.INVALID, "Must be an absolute http or https URL.")

    def integer(self, path: Path, value: object, *, minimum: int, maximum: int) -> None:
        if value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool):
            self.add(path, ErrorCode.INVALID, "Must be an integer.")
        elif not minimum <= value <= maximum:
            self.add(path, ErrorCode.OUT_OF_RANGE, f"Must be between {minimum} and {maximum}.")

    def identifier(self, path: Path, value: object, *, required: bool) -> None:
        if value is None:
            if required:
                self.add(path, ErrorCode.REQUIRED, "This field is required.")
            return
        self.integer(path, value, minimum=1, maximum=2**63 - 1)

    def enum(self, path: Path, value: object, enum: type, *, required: bool = True) -> bool:
        if value is None:
            if required:
                self.add(path, ErrorCode.REQUIRED, "This field is required.")
            return False
        if value not in enum._value2member_map_:  # type: ignore[attr-defined]
            allowed = ", ".join(enum._value2member_map_)  # type: ignore[attr-defined]
            self.add(path, ErrorCode.INVALID, f"Must be one of {allowed}.")
            return False
        return True

    def timestamp(self, path: Path, value: object, *, now: datetime) -> None:
        if value is None:
            self.add(path, ErrorCode.REQUIRED, "This field is required.")
        elif not isinstance(value, datetime):
            self.add(path, ErrorCode.INVALID, "Must be a date-time.")
        elif value.tzinfo is None or value.utcoffset() is None:
            self.add(path, ErrorCode.INVALID, "Must include a time zone offset.")
        elif value < EARLIEST_TIMESTAMP:
            self.add(path, ErrorCode.OUT_OF_RANGE, "Must not be before 2000-01-01T00:00:00Z.")
        elif value > now + MAX_CLOCK_SKEW:
            self.add(path, ErrorCode.OUT_OF_RANGE, "Must not be more than 1 hour in the future.")

    # --- JSON ----------------------------------------------------------------------------

    def json_object(self, path: Path, value: object) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping):
            self.add(path, ErrorCode.INVALID, "Must be a JSON object.")
            return
        for problem, code in _json_problems(value):
            self.add(path, code, problem)
            return
        if _json_size(value) > MAX_JSON_BYTES:
            self.add(path, ErrorCode.TOO_LARGE, f"Must be at most {MAX_JSON_BYTES} bytes as JSON.")


def _json_problems(value: object, depth: int = 1) -> Iterator[tuple[str, ErrorCode]]:
    """The first problem that would stop a value from being stored as jsonb, if any."""
    # Depth counts objects and arrays; the scalars inside the deepest one add no level.
    if isinstance(value, Mapping | list | tuple) and depth > MAX_JSON_DEPTH:
        yield f"Must be nested at most {MAX_JSON_DEPTH} levels deep.", ErrorCode.TOO_DEEP
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                yield "Object keys must be strings.", ErrorCode.INVALID
                return
            yield from _string_problems(key)
            yield from _json_problems(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _json_problems(item, depth + 1)
    elif isinstance(value, str):
        yield from _string_problems(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield "Numbers must be finite.", ErrorCode.INVALID
    elif value is not None and not isinstance(value, bool | int):
        yield f"{type(value).__name__} is not a JSON value.", ErrorCode.INVALID


def _string_problems(value: str) -> Iterator[tuple[str, ErrorCode]]:
    if "\x00" in value:
        yield "Must not contain NUL characters.", ErrorCode.INVALID_CHARACTER
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        yield "Must be valid Unicode text.", ErrorCode.INVALID_CHARACTER


def _json_size(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


# --- whole objects -----------------------------------------------------------------------


def _check_contact(c: _Collector, path: Path, contact: ContactInput, *, required: bool) -> None:
    c.string(path + ("externalUserId",), contact.external_user_id, required=required)
    c.string(path + ("displayName",), contact.display_name, max_length=MAX_NAME_LENGTH)
    c.url(path + ("avatarUrl",), contact.avatar_url)
    c.json_object(path + ("profile",), contact.profile)


def _check_attachment(c: _Collector, path: Path, a: AttachmentInput) -> None:
    c.enum(path + ("kind",), a.kind, AttachmentKind)
    c.url(path + ("url",), a.url)
    c.string(path + ("externalId",), a.external_id)
    if a.url is None and a.external_id is None:
        c.add(path + ("url",), ErrorCode.REQUIRED, "An attachment needs a url or an externalId.")
    before = len(c.errors)
    c.string(path + ("mimeType",), a.mime_type, max_length=MAX_MIME_TYPE_LENGTH)
    if len(c.errors) == before and isinstance(a.mime_type, str) and "/" not in a.mime_type:
        c.add(path + ("mimeType",), ErrorCode.INVALID, "Must look like type/subtype.")
    c.string(path + ("fileName",), a.file_name, max_length=MAX_NAME_LENGTH)
    c.integer(path + ("sizeBytes",), a.size_bytes, minimum=0, maximum=MAX_SIZE_BYTES)
    c.integer(path + ("width",), a.width, minimum=0, maximum=MAX_DIMENSION)
    c.integer(path + ("height",), a.height, minimum=0, maximum=MAX_DIMENSION)
    c.integer(path + ("durationMs",), a.duration_ms, minimum=0, maximum=MAX_DURATION_MS)
    c.json_object(path + ("metadata",), a.metadata)


def check_attachments(
    c: _Collector, path: Path, attachments: Sequence[AttachmentInput], *, already: int = 0
) -> None:
    if len(attachments) + already > MAX_ATTACHMENTS:
        c.add(path, ErrorCode.TOO_MANY, f"A message holds at most {MAX_ATTACHMENTS} attachments.")
        return
    for index, attachment in enumerate(attachments):
        _check_attachment(c, path + (str(index),), attachment)


def validate_message(message: NormalizedMessage, *, now: datetime | None = None) -> None:
    """Raise :class:`ValidationFailed` listing every violation of ``message``, or return."""
    now = now or datetime.now(UTC)
    c = _Collector()
    c.identifier(("channelAccountId",), message.channel_account_id, required=True)
    direction_ok = c.enum(("direction",), message.direction, Direction)
    c.timestamp(("channelTimestamp",), message.channel_timestamp, now=now)

    c.string(("idempotencyKey",), message.idempotency_key)
    c.string(("externalMessageId",), message.external_message_id)
    if message.idempotency_key is None and message.external_message_id is None:
        c.add(
            ("idempotencyKey",),
            ErrorCode.REQUIRED,
            "An idempotencyKey or an externalMessageId is required.",
        )
    c.string(("externalThreadId",), message.external_thread_id)
    c.string(("replyToExternalMessageId",), message.reply_to_external_message_id)
    c.identifier(("conversationId",), message.conversation_id, required=False)

    contact = message.contact
    if contact is not None:
        # A missing externalUserId is reported once, by the direction rules below.
        _check_contact(c, ("contact",), contact, required=False)

    content = message.content
    if content is None:
        c.add(("content",), ErrorCode.REQUIRED, "This field is required.")
    else:
        type_ok = c.enum(("content", "type"), content.type, ContentType)
        c.string(("content", "text"), content.text, max_length=MAX_TEXT_LENGTH, blank=True)
        c.json_object(("content", "struct"), content.struct)
        if type_ok and content.type == ContentType.TEXT and not (content.text or "").strip():
            c.add(("content", "text"), ErrorCode.REQUIRED, "A TEXT message needs text.")

    check_attachments(c, ("attachments",), message.attachments)

    sender = message.sender
    sender_type_ok = False
    if sender is not None:
        sender_type_ok = c.enum(("sender", "type"), sender.type, SenderType)
        c.string(("sender", "displayName"), sender.display_name, max_length=MAX_NAME_LENGTH)
        c.string(("sender", "externalId"), sender.external_id)
        c.url(("sender", "avatarUrl"), sender.avatar_url)

    if direction_ok and message.direction == Direction.INBOUND:
        if contact is None or contact.external_user_id is None:
            c.add(
                ("contact", "externalUserId"),
                ErrorCode.REQUIRED,
                "An inbound message needs the contact's externalUserId.",
            )
        if sender is not None and sender_type_ok and sender.type != SenderType.CONTACT:
            c.add(("sender", "type"), ErrorCode.NOT_ALLOWED, "An inbound sender is the CONTACT.")
        if message.conversation_id is not None:
            c.add(
                ("conversationId",),
                ErrorCode.NOT_ALLOWED,
                "Inbound messages are mapped to conversations by thread; omit conversationId.",
            )
    elif direction_ok:
        if sender is None:
            c.add(("sender",), ErrorCode.REQUIRED, "An outbound message needs a sender.")
        else:
            if sender.type == SenderType.CONTACT:
                c.add(
                    ("sender", "type"),
                    ErrorCode.NOT_ALLOWED,
                    "An outbound sender is an AGENT, a BOT or the SYSTEM.",
                )
            if sender.display_name is None:
                c.add(
                    ("sender", "displayName"),
                    ErrorCode.REQUIRED,
                    "An outbound sender needs a displayName.",
                )
        if message.conversation_id is None and (
            contact is None or contact.external_user_id is None
        ):
            c.add(
                ("conversationId",),
                ErrorCode.REQUIRED,
                "An outbound message needs a conversationId or the contact's externalUserId.",
            )
    c.raise_if_any()


def validate_contact(channel_account_id: object, contact: ContactInput) -> None:
    c = _Collector()
    c.identifier(("channelAccountId",), channel_account_id, required=True)
    _check_contact(c, (), contact, required=True)
    c.raise_if_any()


def validate_conversation(
    channel_account_id: object,
    external_thread_id: str | None,
    contact: ContactInput | None,
    channel_timestamp: datetime | None,
    *,
    now: datetime | None = None,
) -> None:
    c = _Collector()
    c.identifier(("channelAccountId",), channel_account_id, required=True)
    c.string(("externalThreadId",), external_thread_id)
    if contact is not None:
        _check_contact(c, ("contact",), contact, required=True)
    if external_thread_id is None and (contact is None or contact.external_user_id is None):
        c.add(
            ("externalThreadId",),
            ErrorCode.REQUIRED,
            "An externalThreadId or the contact's externalUserId is required.",
        )
    c.timestamp(("channelTimestamp",), channel_timestamp, now=now or datetime.now(UTC))
    c.raise_if_any()


def validate_channel_account(
    channel: object,
    external_account_id: object,
    display_name: object,
    fallback_window_seconds: object,
) -> None:
    c = _Collector()
    c.enum(("channel",), channel, Channel)
    c.string(("externalAccountId",), external_account_id, required=True)
    c.string(("displayName",), display_name, max_length=MAX_NAME_LENGTH)
    c.integer(
        ("fallbackWindowSeconds",),
        fallback_window_seconds,
        minimum=MIN_FALLBACK_WINDOW_SECONDS,
        maximum=MAX_FALLBACK_WINDOW_SECONDS,
    )
    c.raise_if_any()


def validate_attachments(
    message_id: object, attachments: Sequence[AttachmentInput], *, already: int = 0
) -> None:
    c = _Collector()
    c.identifier(("messageId",), message_id, required=True)
    if not attachments:
        c.add(("attachments",), ErrorCode.REQUIRED, "At least one attachment is required.")
    check_attachments(c, ("attachments",), attachments, already=already)
    c.raise_if_any()
