"""Opaque global ids: ``base64url("<Type>:<id>")``.

A global id says nothing about its tenant: every lookup is tenant-scoped, so another tenant's
id resolves to nothing, exactly like an id that never existed.
"""

from __future__ import annotations

import binascii
from functools import lru_cache

from omni_store.persistence.cursors import from_base64url, to_base64url
from omni_store.persistence.enums import ErrorCode
from omni_store.persistence.errors import FieldError

TYPES = ("ChannelAccount", "Contact", "Conversation", "Message", "Attachment")


def to_global_id(type_name: str, row_id: int) -> str:
    return to_base64url(f"{type_name}:{row_id}".encode())


def parse_global_id(value: str) -> tuple[str, int] | None:
    """(type, id), or None for anything that is not a global id of ours. Remembered for
    the texts of ids' length (a batch names the same account and conversations over and
    over); a longer text is worked out each time, so no request can fill the memory."""
    if len(value) > _CACHED_LENGTH:
        return _parse_global_id(value)
    return _cached_parse_global_id(value)


_CACHED_LENGTH = 64  # ours are at most 46 characters


def _parse_global_id(value: str) -> tuple[str, int] | None:
    try:
        raw = from_base64url(value).decode()
        type_name, _, number = raw.partition(":")
        row_id = int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if type_name not in TYPES or not 0 < row_id < 2**63 or number != str(row_id):
        return None
    return type_name, row_id


_cached_parse_global_id = lru_cache(maxsize=4096)(_parse_global_id)


class IdDecoder:
    """Decodes the ids of one mutation input, collecting the errors of all of them."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def decode(self, field: tuple[str, ...], value: str | None, type_name: str) -> int | None:
        if value is None:
            return None
        parsed = parse_global_id(value)
        if parsed is None:
            self.errors.append(FieldError(field, ErrorCode.INVALID, "Not a valid ID."))
            return None
        if parsed[0] != type_name:
            # Of another type: as good as missing.
            self.errors.append(FieldError(field, ErrorCode.NOT_FOUND, f"No such {type_name}."))
            return None
        return parsed[1]
