"""Compiled input objects build exactly what Strawberry's own conversion builds."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import pytest
from strawberry import Schema
from strawberry.types.arguments import convert_argument
from strawberry.types.base import StrawberryList, StrawberryOptional, has_object_definition

from omni_store.graph import inputs
from omni_store.graph.compiled_inputs import _NAMES
from omni_store.graph.schema import build_schema

INPUT_TYPES = [
    value
    for value in vars(inputs).values()
    if isinstance(value, type)
    and has_object_definition(value)
    and value.__strawberry_definition__.is_input
]
SCALARS: dict[Any, Any] = {
    str: "a value",
    int: 7,
    float: 120000.0,
    bool: True,
    datetime: datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
}


def sample(type_: Any, *, full: bool) -> Any:
    """A coerced GraphQL value of ``type_`` (as graphql-core hands it over): every field set
    when ``full``, else only the required ones and the published defaults (null)."""
    if isinstance(type_, StrawberryOptional):
        return sample(type_.of_type, full=full) if full else None
    if isinstance(type_, StrawberryList):
        return [sample(type_.of_type, full=full), sample(type_.of_type, full=full)]
    if has_object_definition(type_):
        return {
            _NAMES.from_field(f): sample(f.type, full=full)
            for f in type_.__strawberry_definition__.fields
        }
    if isinstance(type_, type) and issubclass(type_, enum.Enum):
        return list(type_)[-1]
    if type_ in SCALARS:
        return SCALARS[type_]
    return {"nested": ["json", 1, None]}  # JSON, ID and other scalars: passed through


@pytest.fixture(scope="module")
def schema() -> Schema:
    return build_schema()


def test_every_input_type_is_compiled() -> None:
    assert len(INPUT_TYPES) == 11
    assert all(t.__strawberry_definition__.from_input is not None for t in INPUT_TYPES)


@pytest.mark.parametrize("full", [True, False], ids=["every field", "required fields"])
@pytest.mark.parametrize("input_type", INPUT_TYPES, ids=lambda t: t.__name__)
def test_a_compiled_input_builds_what_strawberry_builds(
    input_type: type, full: bool, schema: Schema
) -> None:
    value = sample(input_type, full=full)
    definition = input_type.__strawberry_definition__

    scalars = schema.schema_converter.scalar_registry

    compiled = convert_argument(value, input_type, scalars, schema.config)
    hook, definition.from_input = definition.from_input, None
    try:
        generic = convert_argument(value, input_type, scalars, schema.config)
    finally:
        definition.from_input = hook

    assert type(compiled) is input_type
    assert compiled == generic
    assert vars(compiled) == vars(generic)
