"""Input objects built from GraphQL values by a plan made once per type.

Strawberry builds an input object by walking its type's annotations for every field of every
value, every time (about 0.4 ms of CPU per message of a persistMessages batch: most of a
batch's cost in this service). graphql-core has already coerced and validated the value by
then: scalars are parsed (DateTime is a datetime, enums are members), required fields are
present and omitted ones hold their published default. What is left is to call the
dataclasses, which :func:`compiled` does from a plan of (GraphQL name, Python name, how to
build the value) resolved on first use, through Strawberry's own hook for integrations
(``StrawberryObjectDefinition.from_input``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, TypeVar

from strawberry.schema.name_converter import NameConverter
from strawberry.types.base import StrawberryList, StrawberryOptional, has_object_definition

T = TypeVar("T", bound=type)
Build = Callable[[Any], Any]
FromInput = Callable[[type, Mapping[str, Any], object], Any]
_NAMES = NameConverter()  # the schema's naming: strawberry.Schema's default config


def compiled(cls: T) -> T:
    """Give the Strawberry input type ``cls`` a :func:`compiled` ``from_input``."""
    _compile(cls)
    return cls


@cache
def _compile(cls: type) -> FromInput:
    """Install the compiled ``from_input`` of ``cls`` (once) and return it."""
    definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
    assert definition.is_input, f"{cls.__name__} is not an input type"
    plan: list[tuple[str, str, Build | None]] | None = None

    def from_input(target: type, value: Mapping[str, Any], context: object = None) -> Any:
        nonlocal plan
        if plan is None:  # annotations may name types declared after this one
            plan = [
                (_NAMES.from_field(f), f.python_name, _builder(f.type)) for f in definition.fields
            ]
        kwargs = {}
        for graphql_name, python_name, build in plan:
            if graphql_name in value:
                given = value[graphql_name]
                kwargs[python_name] = given if build is None or given is None else build(given)
        return target(**kwargs)

    definition.from_input = from_input
    return from_input


def _builder(type_: Any) -> Build | None:
    """How to build a value of ``type_`` from its coerced GraphQL value; None: as it is."""
    if isinstance(type_, StrawberryOptional):
        return _builder(type_.of_type)
    if isinstance(type_, StrawberryList):
        item = _builder(type_.of_type)
        if item is None:
            # A copy, as Strawberry makes: graphql-core hands every request that omits the
            # value the same default list.
            return list
        return lambda values: [None if v is None else item(v) for v in values]
    if has_object_definition(type_):
        # Its own from_input, which needs no Strawberry InputContext.
        from_input = _compile(type_)
        return lambda value: from_input(type_, value, None)
    return None  # scalars and enums: graphql-core has parsed them already
