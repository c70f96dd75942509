"""The DateTime scalar, parsed by the standard library where the text has the common shape.

Strawberry parses every DateTime variable with ``dateutil.parser.isoparse``: about 35 µs
a value, a tenth of a persistMessages batch's CPU. Connectors send the shape of RFC 3339
(``2026-01-05T09:00:00.123+07:00``); for exactly that shape ``datetime.fromisoformat``
gives the same instant and offset in about 1 µs. Anything else (another shape, a value
``fromisoformat`` refuses, such as hour 24, which dateutil turns into the next day) goes to
Strawberry's own parser, which answers or refuses it exactly as before.

The offsets differ in type only: ``datetime.timezone`` here, dateutil's ``tzutc`` and
``tzoffset`` there; both compare, convert and print the same.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import datetime

from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.types.scalar import ScalarDefinition

# ASCII digits only (re's \d is any Unicode digit). Hours, minutes and seconds in range, so
# that fromisoformat is asked nothing dateutil would refuse; a day a month does not have
# fails in both, and falls back to dateutil for its message.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_generic_parse: Callable[[object], object] = DateTimeDefinition.parse_value  # type: ignore[assignment]


def parse_datetime(value: object) -> object:
    """The DateTime variable ``value`` as Strawberry's parser reads it, sooner."""
    if type(value) is str and _RFC3339.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass  # e.g. February 30th: dateutil refuses it, in its own words
    return _generic_parse(value)


DATETIME: ScalarDefinition = dataclasses.replace(
    DateTimeDefinition, parse_value=parse_datetime, implementation=None
)
