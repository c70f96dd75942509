"""Variables coerced by omni_store/graph/variables.py come out exactly as graphql-core's own
coercion makes them, and wherever graphql-core would refuse them, its own path runs and
answers with its own errors."""

from __future__ import annotations

from typing import Any

import graphql
import pytest
import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    Undefined,
    get_named_type,
    is_input_object_type,
    is_list_type,
    is_non_null_type,
    parse,
)
from graphql.execution.values import get_variable_values
from graphql.utilities import coerce_input_value
from hypothesis import given, settings
from hypothesis import strategies as st

from omni_store.graph.execution import PlainFieldExecutor
from omni_store.graph.schema import build_schema
from omni_store.graph.variables import coerced_variables, coercer, select_operation

SCHEMA = build_schema()._schema
INPUT_TYPES = sorted(
    (t for t in SCHEMA.type_map.values() if is_input_object_type(t)), key=lambda t: t.name
)

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
LEAVES: dict[str, st.SearchStrategy[Any]] = {
    "String": st.text(max_size=12),
    "ID": st.one_of(st.text(max_size=12), st.integers()),
    "Int": st.integers(-(2**33), 2**33),
    "Float": st.one_of(st.floats(allow_nan=False), st.integers()),
    "Boolean": st.booleans(),
    "DateTime": st.sampled_from(
        ["2026-01-05T09:00:00Z", "2026-01-05T09:00:00.5+07:00", "2026-02-30T09:00:00Z", "soon"]
    ),
    "JSON": st.recursive(
        st.one_of(st.none(), st.integers(), st.text(max_size=4)),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=6,
    ),
}


def values(type_: GraphQLInputType, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values mostly of ``type_``'s shape, with nulls, junk, single values for lists,
    unknown and missing fields mixed in at every level."""
    if is_non_null_type(type_):
        return values(type_.of_type, depth)
    if is_list_type(type_):
        item = values(type_.of_type, depth + 1)
        return st.one_of(st.lists(item, max_size=3), item, st.none())
    named = get_named_type(type_)
    if is_input_object_type(named):
        fields = {name: values(f.type, depth + 1) for name, f in named.fields.items()}
        shaped = st.fixed_dictionaries({}, optional=fields)
        extra = st.dictionaries(st.sampled_from(["unknown", "x"]), JUNK, max_size=1)
        mixed = st.builds(lambda a, b: {**a, **b}, shaped, extra)
        return st.one_of(shaped, shaped, mixed, JUNK) if depth < 3 else JUNK
    if isinstance(named, GraphQLEnumType):
        return st.one_of(st.sampled_from(sorted(named.values)), JUNK)
    assert isinstance(named, GraphQLScalarType)
    return st.one_of(LEAVES[named.name], JUNK)


@pytest.mark.parametrize("named", INPUT_TYPES, ids=lambda t: t.name)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_input_type_coerces_as_graphql_core_does(
    named: GraphQLInputObjectType, data: st.DataObject
) -> None:
    for type_ in (named, GraphQLNonNull(named), GraphQLList(GraphQLNonNull(named))):
        value = data.draw(values(type_))
        compiled = coercer(type_)
        assert compiled is not None
        assert typed(compiled(value)) == typed(coerce_input_value(value, type_)), (type_, value)


def typed(value: Any) -> Any:
    """``value`` with the type of everything in it: a StrEnum member equals its text."""
    if isinstance(value, dict):
        return (type(value), {k: typed(v) for k, v in value.items()})
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value), value)


def test_the_generated_values_reach_both_answers() -> None:
    # A check on the test itself: valid values must come out, not only Undefined.
    type_ = SCHEMA.get_type("PersistMessageInput")
    assert isinstance(type_, GraphQLInputObjectType)
    valid = {
        "channelAccountId": "Q2hhbm5lbEFjY291bnQ6MQ",
        "direction": "INBOUND",
        "channelTimestamp": "2026-01-05T09:00:00Z",
        "content": {"type": "TEXT", "text": "hi"},
        "attachments": {"kind": "IMAGE", "url": "https://x.example/1.jpg"},  # a list of one
    }
    compiled = coercer(GraphQLNonNull(type_))
    assert compiled is not None
    coerced = compiled(valid)
    assert typed(coerced) == typed(coerce_input_value(valid, GraphQLNonNull(type_)))
    assert coerced["attachments"][0]["url"] == "https://x.example/1.jpg"
    assert coerced["content"]["struct"] is None  # a published default
    assert compiled({**valid, "unknown": 1}) is Undefined
    assert compiled({**valid, "direction": "SIDEWAYS"}) is Undefined
    assert compiled({k: v for k, v in valid.items() if k != "content"}) is Undefined


DOCUMENT = parse(
    """
    mutation Persist($input: PersistMessageInput!, $note: String) { __typename }
    mutation Other($input: PersistMessageInput = null) { __typename }
    """
)
INPUT = {
    "channelAccountId": "Q2hhbm5lbEFjY291bnQ6MQ",
    "direction": "OUTBOUND",
    "channelTimestamp": "2026-01-05T09:00:00+07:00",
    "content": {"type": "TEXT", "text": "hi"},
}


@pytest.mark.parametrize(
    "inputs",
    [
        {"input": INPUT},
        {"input": INPUT, "note": "x"},
        {"input": INPUT, "note": None},
        {"input": {**INPUT, "channelTimestamp": "yesterday"}},
        {"input": None},
        {},
        {"input": [INPUT]},
    ],
)
def test_the_variables_of_an_operation_are_graphql_cores_or_none(inputs: dict[str, Any]) -> None:
    operation = select_operation(DOCUMENT, "Persist")
    assert operation is not None
    generic = get_variable_values(SCHEMA, operation.variable_definitions, inputs)
    compiled = coerced_variables(SCHEMA, operation.variable_definitions, inputs)

    if isinstance(generic, list):  # errors: left to graphql-core
        assert compiled is None
    else:
        assert compiled is not None
        assert typed(compiled.coerced) == typed(generic.coerced)
        assert shown(compiled.sources) == shown(generic.sources)


def shown(sources: dict[str, Any]) -> dict[str, Any]:
    """Variable sources, comparable: a signature's type is a new wrapper object each time."""
    return {
        name: (s.signature.name, str(s.signature.type), s.signature.default, s.value)
        for name, s in sources.items()
    }


def test_a_variable_with_a_default_is_left_to_graphql_core() -> None:
    operation = select_operation(DOCUMENT, "Other")
    assert operation is not None
    assert coerced_variables(SCHEMA, operation.variable_definitions, {"input": INPUT}) is None


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("query A { __typename }", None, "A"),
        ("query A { __typename } query B { __typename }", "B", "B"),
        ("query A { __typename } query B { __typename }", None, None),
        ("query A { __typename }", "C", None),
        ("fragment F on Query { __typename }", None, None),
    ],
)
def test_the_operation_is_the_one_graphql_core_selects(
    text: str, name: str | None, expected: str | None
) -> None:
    operation = select_operation(parse(text), name)
    assert (operation.name.value if operation and operation.name else None) == expected


def test_a_recursive_input_type_keeps_graphql_cores_depth_check() -> None:
    node = GraphQLInputObjectType(
        "Node",
        lambda: {
            "next": graphql.GraphQLInputField(node),
            "n": graphql.GraphQLInputField(graphql.GraphQLInt),
        },
    )
    flat = GraphQLInputObjectType("Flat", {"n": graphql.GraphQLInputField(graphql.GraphQLInt)})

    assert coercer(node) is None
    assert coercer(GraphQLList(flat)) is not None


# --- through the executor ----------------------------------------------------------------


@strawberry.input
class Point:
    x: int
    label: str | None = "origin"


@strawberry.type
class Query:
    @strawberry.field
    def where(self, at: Point, scale: int | None = None) -> str:
        return f"{at.x}:{at.label}:{scale}"


FAST = strawberry.Schema(query=Query, execution_context_class=PlainFieldExecutor)
GENERIC = strawberry.Schema(query=Query)
WHERE = "query Where($at: Point!, $scale: Int) { where(at: $at, scale: $scale) }"


@pytest.mark.parametrize(
    "variables",
    [
        {"at": {"x": 3}},
        {"at": {"x": 3, "label": None}, "scale": 2},
        {"at": {"x": "three"}},
        {"at": {"x": 3, "y": 4}},
        {"at": None},
        {},
        {"at": {"x": 3}, "scale": 2**40},
    ],
)
async def test_answers_and_errors_are_the_generic_executors(
    variables: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    generic = await GENERIC.execute(WHERE, variable_values=variables)
    coercions = []
    original = graphql.execution.executor.get_variable_values

    def counted(*args: Any, **kwargs: Any) -> Any:
        coercions.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(graphql.execution.executor, "get_variable_values", counted)
    fast = await FAST.execute(WHERE, variable_values=variables)

    assert (fast.data, fast.errors) == (generic.data, generic.errors)
    valid = generic.errors is None
    # Valid variables never reach graphql-core's coercion; invalid ones are its to report.
    assert coercions == ([{}] if valid else [variables])
    if valid:
        assert fast.data == {
            "where": f"3:{variables['at'].get('label', 'origin')}:{variables.get('scale')}"
        }
