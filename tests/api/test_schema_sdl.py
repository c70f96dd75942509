"""schema.graphql is the API spec: exported from the code, committed, and described throughout."""

from __future__ import annotations

import difflib
from pathlib import Path

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    specified_scalar_types,
)
from graphql import build_schema as sdl_schema

from omni_store.cli import export_schema_sdl
from omni_store.graph.schema import build_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_the_committed_schema_is_the_one_the_code_serves() -> None:
    committed = SCHEMA_FILE.read_text()
    exported = export_schema_sdl()

    drift = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            exported.splitlines(keepends=True),
            "schema.graphql (committed)",
            "schema.graphql (from the code)",
        )
    )
    assert committed == exported, (
        "schema.graphql is out of date: run `omni-store export-schema` and commit it.\n" + drift
    )


def undescribed(schema: GraphQLSchema) -> list[str]:
    """Schema coordinates (Type, Type.field, Type.field(arg:), Enum.VALUE) without a
    description; introspection types and the built-in scalars are the spec's, not ours."""
    missing: list[str] = []

    def check(coordinate: str, description: str | None) -> None:
        if not (description or "").strip():
            missing.append(coordinate)

    for name, named in sorted(schema.type_map.items()):
        if name.startswith("__") or name in specified_scalar_types:
            continue
        check(name, named.description)
        if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
            for field_name, field in named.fields.items():
                check(f"{name}.{field_name}", field.description)
                for arg_name, arg in field.args.items():
                    check(f"{name}.{field_name}({arg_name}:)", arg.description)
        elif isinstance(named, GraphQLInputObjectType):
            for field_name, input_field in named.fields.items():
                check(f"{name}.{field_name}", input_field.description)
        elif isinstance(named, GraphQLEnumType):
            for value_name, value in named.values.items():
                check(f"{name}.{value_name}", value.description)
        else:
            assert isinstance(named, GraphQLScalarType), named
    return missing


def test_every_type_field_argument_and_enum_value_is_described() -> None:
    missing = undescribed(build_schema()._schema)

    assert missing == [], f"{len(missing)} schema elements have no description:\n" + "\n".join(
        missing
    )


def test_the_walk_finds_every_kind_of_undescribed_element() -> None:
    schema = sdl_schema(
        """
        "Described."
        type Query { node(id: ID!, "Described." first: Int): Thing  other: String }
        interface Thing { id: ID! }
        input Filter { channel: Kind  "Described." after: String }
        enum Kind { LINE  "Described." EMAIL }
        scalar Cursor
        """
    )

    assert undescribed(schema) == [
        "Cursor",
        "Filter",
        "Filter.channel",
        "Kind",
        "Kind.LINE",
        "Query.node",
        "Query.node(id:)",
        "Query.other",
        "Thing",
        "Thing.id",
    ]
