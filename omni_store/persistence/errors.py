"""Business errors of the persistence layer.

Each carries a list of :class:`FieldError` (the path of the offending input field, a code and
a message a person can act on). The API turns them into ``userErrors``; nothing in them is
internal (no SQL, no constraint names).
"""

from __future__ import annotations

from dataclasses import dataclass

from omni_store.persistence.enums import ErrorCode


@dataclass(frozen=True, slots=True)
class FieldError:
    field: tuple[str, ...]
    code: ErrorCode
    message: str


class UserInputError(Exception):
    """The input cannot be stored as given; nothing was written."""

    def __init__(self, errors: list[FieldError]) -> None:
        if not errors:
            raise ValueError("a UserInputError needs at least one FieldError")
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(e.field)}: {e.message}" for e in errors))


class ValidationFailed(UserInputError):
    """The normalized object is malformed; every violation is listed at once."""


class NotFound(UserInputError):
    """A referenced object does not exist for this tenant (or belongs to another one)."""

    @classmethod
    def of(cls, field: tuple[str, ...], what: str) -> NotFound:
        return cls([FieldError(field, ErrorCode.NOT_FOUND, f"{what} does not exist.")])


class Mismatch(UserInputError):
    """References that exist but do not belong together (a conversation of another account)."""


class AlreadyExists(UserInputError):
    """A create whose natural key is taken."""


class IdempotencyConflict(UserInputError):
    """The key was already used for a message with other content; the stored one is kept."""

    def __init__(self, existing_message_id: int, field: tuple[str, ...]) -> None:
        self.existing_message_id = existing_message_id
        super().__init__(
            [
                FieldError(
                    field,
                    ErrorCode.IDEMPOTENCY_CONFLICT,
                    "This idempotency key was already used for a message with different "
                    "content; the stored message was kept unchanged.",
                )
            ]
        )


class ConcurrentWrites(Exception):
    """Other deliveries kept storing keys of this batch while it was being written, on every
    attempt: nothing of it was written, and the client should send it again (each message that
    got stored meanwhile is then a replay)."""


class ConnectionLost(Exception):
    """The database connection of a unit of work closed under it (the server went away, or
    the network): nothing of the transaction was committed unless its COMMIT had answered."""
