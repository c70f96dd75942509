"""The closed vocabularies of the message store, shared by validation, tables and the API."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


class Channel(StrEnum):
    LINE = "LINE"
    FACEBOOK = "FACEBOOK"
    INSTAGRAM = "INSTAGRAM"
    WHATSAPP = "WHATSAPP"
    SHOPEE = "SHOPEE"
    LAZADA = "LAZADA"
    TIKTOK_SHOP = "TIKTOK_SHOP"
    EMAIL = "EMAIL"
    WEBCHAT = "WEBCHAT"


class Direction(StrEnum):
    INBOUND = "INBOUND"
    OUTBOUND = "OUTBOUND"


class SenderType(StrEnum):
    CONTACT = "CONTACT"
    AGENT = "AGENT"
    BOT = "BOT"
    SYSTEM = "SYSTEM"


class ContentType(StrEnum):
    TEXT = "TEXT"
    IMAGE = "IMAGE"
    VIDEO = "VIDEO"
    AUDIO = "AUDIO"
    FILE = "FILE"
    STICKER = "STICKER"
    LOCATION = "LOCATION"
    PRODUCT = "PRODUCT"
    ORDER = "ORDER"
    TEMPLATE = "TEMPLATE"
    INTERACTIVE = "INTERACTIVE"
    UNSUPPORTED = "UNSUPPORTED"


class AttachmentKind(StrEnum):
    IMAGE = "IMAGE"
    VIDEO = "VIDEO"
    AUDIO = "AUDIO"
    FILE = "FILE"
    STICKER = "STICKER"


class DeliveryStatus(StrEnum):
    """Inbound messages are RECEIVED; outbound ones are persisted once the channel accepted them."""

    RECEIVED = "RECEIVED"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    READ = "READ"
    FAILED = "FAILED"


class ErrorCode(StrEnum):
    """Codes of business errors, reported with the path of the offending field."""

    REQUIRED = "REQUIRED"
    INVALID = "INVALID"
    TOO_LONG = "TOO_LONG"
    TOO_LARGE = "TOO_LARGE"
    TOO_MANY = "TOO_MANY"
    TOO_DEEP = "TOO_DEEP"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    INVALID_CHARACTER = "INVALID_CHARACTER"
    NOT_ALLOWED = "NOT_ALLOWED"
    NOT_FOUND = "NOT_FOUND"
    MISMATCH = "MISMATCH"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    ALREADY_EXISTS = "ALREADY_EXISTS"


def by_value(vocabulary: type[E]) -> Callable[[str], E]:
    """``vocabulary(value)`` as one dict lookup (KeyError for a value it does not have): a page
    turns a few hundred stored values into members, and ``Enum.__call__`` costs about 20 times
    the lookup."""
    return {member.value: member for member in vocabulary}.__getitem__
