"""The DateTime scalar's parser reads every value as Strawberry's own (dateutil) does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import DateTimeDefinition

from omni_store.graph.scalars import parse_datetime
from omni_store.graph.schema import build_schema

generic_parse: Any = DateTimeDefinition.parse_value


def outcome(parse: Any, value: object) -> tuple[str, object, object, object]:
    """What a parser makes of ``value``: the instant, offset and text, or its error."""
    try:
        parsed = parse(value)
    except StrawberryInputCoercionError as error:
        return ("refused", str(error), None, None)
    return ("parsed", parsed, parsed.utcoffset(), parsed.isoformat())


def two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


# The shape the fast path takes, with every component also a little out of range.
RFC3339_LIKE = st.builds(
    lambda y, mo, d, h, mi, s, frac, sign, oh, om, z: (
        f"{y:04d}-{mo}-{d}T{h}:{mi}:{s}{frac}{'Z' if z else f'{sign}{oh}:{om}'}"
    ),
    st.integers(0, 9999),
    two(0, 13),
    two(0, 32),
    two(0, 25),
    two(0, 61),
    two(0, 61),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,8}", fullmatch=True)),
    st.sampled_from("+-"),
    two(0, 25),
    two(0, 61),
    st.booleans(),
)


@settings(max_examples=3000)
@given(RFC3339_LIKE)
@example("2026-01-05T24:00:00Z")  # dateutil: the next day; fromisoformat refuses
@example("2026-02-29T10:00:00+07:00")  # no such day
@example("2024-02-29T10:00:00-00:00")
@example("2026-01-05T09:00:00.1234567Z")  # seven digits: not the fast shape
@example("2026-01-05T09:00:00.5+05:30")
def test_rfc3339_shaped_text_parses_as_strawberrys_parser_does(value: str) -> None:
    assert outcome(parse_datetime, value) == outcome(generic_parse, value)


@settings(max_examples=1000)
@given(st.one_of(st.text(alphabet="0123456789-:T.Z+ zt,๑", max_size=32), st.text(max_size=8)))
@example("๒๐๒๖-01-05T09:00:00Z")  # Thai digits: re's \d would take them
@example("2026-01-05 09:00:00Z")
@example("2026-01-05T09:00:00")  # no offset: parsed, and refused later by the contract
@example("20260105T090000Z")
def test_any_other_text_parses_as_strawberrys_parser_does(value: str) -> None:
    assert outcome(parse_datetime, value) == outcome(generic_parse, value)


@pytest.mark.parametrize("value", [None, 20260105, 1.5, ["2026-01-05T09:00:00Z"], {"at": 1}])
def test_values_that_are_not_text_are_refused_in_the_same_words(value: object) -> None:
    assert outcome(parse_datetime, value)[0] == "refused"
    assert outcome(parse_datetime, value) == outcome(generic_parse, value)


def test_the_common_shape_is_read_by_the_standard_library() -> None:
    # dateutil would give tzoffset/tzutc: these types show the fast path was taken.
    assert parse_datetime("2026-01-05T09:00:00.123+07:00") == datetime(
        2026, 1, 5, 2, 0, 0, 123000, tzinfo=UTC
    )
    assert parse_datetime("2026-01-05T09:00:00.123+07:00").tzinfo == timezone(timedelta(hours=7))
    assert type(parse_datetime("2026-01-05T09:00:00Z").tzinfo) is timezone
    assert type(generic_parse("2026-01-05T09:00:00Z").tzinfo) is not timezone


def test_the_service_schema_parses_datetime_variables_with_it() -> None:
    fast = build_schema()._schema.get_type("DateTime")
    generic = build_schema(fast_paths=False)._schema.get_type("DateTime")

    assert fast.parse_value is parse_datetime  # type: ignore[union-attr]
    assert generic.parse_value is generic_parse  # type: ignore[union-attr]
    assert fast.description == generic.description == "Date with time (isoformat)"
