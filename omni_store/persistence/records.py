"""Records: frozen for the type checker, plain slotted dataclasses at run time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform

R = TypeVar("R")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record_class(cls: type[R]) -> type[R]:
    """A value built in bulk (from each row a statement returns, for each message a write
    validates and stores): frozen for the type checker (mypy refuses an assignment to a
    field), a plain slotted dataclass at run time, hashed and compared by value as a frozen
    one is.

    A frozen dataclass's ``__init__`` stores each field through ``object.__setattr__``:
    1.3 µs for a message's 19 fields, against 0.13 µs for the plain stores of this one. A
    read page builds 75-120 row records; a new message, a dozen records on its way in."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
