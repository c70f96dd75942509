"""Opaque keyset cursors and page requests.

A cursor encodes the sort key of one row (never an offset) and the connection it belongs to,
so inserting rows never shifts a page, and a cursor of one connection is refused by another.
Cursors are not secret: a forged one only addresses positions in the caller's own tenant,
because every query that reads one is tenant-scoped.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

import orjson

from omni_store.persistence.enums import ErrorCode
from omni_store.persistence.errors import FieldError, ValidationFailed

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
# Standard base64 to its URL-safe alphabet (what base64.urlsafe_b64encode does after encoding).
_BASE64URL = bytes.maketrans(b"+/", b"-_")

Keyset = tuple[datetime, int]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Relay arguments, checked: at most one of ``first`` and ``last``."""

    first: int | None = None
    after: str | None = None
    last: int | None = None
    before: str | None = None

    @property
    def forward(self) -> bool:
        return self.last is None

    @property
    def size(self) -> int:
        chosen = self.first if self.forward else self.last
        return DEFAULT_PAGE_SIZE if chosen is None else chosen

    def check(self) -> None:
        errors = []
        if self.first is not None and self.last is not None:
            errors.append(
                FieldError(("first",), ErrorCode.INVALID, "Pass first or last, not both.")
            )
        for name, value in (("first", self.first), ("last", self.last)):
            if value is not None and not 0 <= value <= MAX_PAGE_SIZE:
                errors.append(
                    FieldError(
                        (name,),
                        ErrorCode.OUT_OF_RANGE,
                        f"Must be between 0 and {MAX_PAGE_SIZE}.",
                    )
                )
        if errors:
            raise ValidationFailed(errors)


def to_base64url(raw: bytes) -> str:
    """``base64.urlsafe_b64encode(raw)`` without its padding, in half the time (binascii): the
    text form of cursors and global ids, of which a page encodes a hundred or more."""
    return binascii.b2a_base64(raw, newline=False).translate(_BASE64URL).rstrip(b"=").decode()


def from_base64url(text: str) -> bytes:
    """The bytes of :func:`to_base64url`'s text; binascii.Error (a ValueError) if it is not
    base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_cursor(kind: str, scope: int | None, key: Keyset) -> str:
    """``base64url(json.dumps([kind, scope, at.isoformat(), row_id], separators=(",", ":")))``
    without its padding, built with orjson: the same text in about 40 % of the time (a page
    encodes one cursor per row)."""
    at, row_id = key
    return to_base64url(orjson.dumps([kind, scope, at.isoformat(), row_id]))


def decode_cursor(cursor: str, *, kind: str, scope: int | None, field: str) -> Keyset:
    """The keyset in ``cursor``; ValidationFailed if it is not a cursor of this connection."""
    try:
        raw = from_base64url(cursor)
        got_kind, got_scope, at, row_id = json.loads(raw)
        if got_kind != kind or got_scope != scope:
            raise ValueError("cursor of another connection")
        if not isinstance(row_id, int) or isinstance(row_id, bool):
            raise ValueError("bad id")
        if not -(2**63) <= row_id < 2**63:
            raise ValueError("id out of bigint range")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("naive time")
        parsed.astimezone(UTC)  # OverflowError for times outside the range PostgreSQL binds
        return parsed, row_id
    except (
        ValueError,
        TypeError,
        OverflowError,
        RecursionError,
        binascii.Error,
        UnicodeDecodeError,
    ):
        raise ValidationFailed(
            [FieldError((field,), ErrorCode.INVALID, "Not a cursor of this connection.")]
        ) from None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page in the connection's order, with the exact neighbours' flags of Relay."""

    items: list[T]
    cursors: list[str]
    has_next_page: bool
    has_previous_page: bool

    @property
    def start_cursor(self) -> str | None:
        return self.cursors[0] if self.cursors else None

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None
