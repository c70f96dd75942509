"""Cheaper execution of plain fields: most of a read page's fields are attributes of the
objects the resolvers built (``Message.direction``, ``Attachment.url``, ...), and executing
each one cost more in Strawberry's generic machinery than the attribute read itself."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLObjectType, GraphQLResolveInfo


class PlainAttribute:
    """The resolver of a field that only reads an attribute of its source object.

    Strawberry resolves such a field through a wrapper of its own, which reaches
    ``StrawberryField.get_result`` and then the configured default resolver (``getattr``);
    this reads the attribute directly, with the same result and the same errors."""

    __slots__ = ("python_name",)

    def __init__(self, python_name: str) -> None:
        self.python_name = python_name

    def __call__(self, source: Any, info: GraphQLResolveInfo) -> Any:
        return getattr(source, self.python_name)


def install_plain_attributes(schema: strawberry.Schema) -> int:
    """Give every field of ``schema`` that only reads an attribute a :class:`PlainAttribute`
    resolver; returns how many fields got one.

    Only Strawberry's "basic" fields qualify: no resolver of their own, no field extensions
    (permission classes are extensions) and no arguments, read with the configured default
    resolver, which must be ``getattr``. A schema with exception handlers is left alone (its
    fields may be wrapped to call them). The python name is read from the Strawberry field:
    the GraphQL name is its camelCase form (``display_name`` is ``displayName``)."""
    if schema.config.default_resolver is not getattr or schema.exception_handlers:
        return 0
    installed = 0
    for graphql_type in schema._schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type.name.startswith("__"):
            continue
        for name, graphql_field in graphql_type.fields.items():
            field = schema.get_field_for_type(name, graphql_type.name)
            if field is None or not field.is_basic_field or field.arguments:
                continue
            graphql_field.resolve = PlainAttribute(field.python_name)
            installed += 1
    return installed
