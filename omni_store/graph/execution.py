"""Cheaper execution of plain fields: most of a read page's fields are attributes of the
objects the resolvers built (``Message.direction``, ``Attachment.url``, ...), and executing
each one cost more in Strawberry's and graphql-core's generic machinery than the attribute
read itself. The relations (``Message.sender``, ...) are methods taking only ``self`` and
``info``, called through a chain built for resolvers with arguments and extensions."""

from __future__ import annotations

from collections.abc import Callable
from inspect import Parameter
from typing import Any

import strawberry
from graphql import (
    GraphQLLeafType,
    GraphQLObjectType,
    GraphQLResolveInfo,
    Undefined,
    is_leaf_type,
    is_non_null_type,
)
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import CustomGraphQLEnumType
from strawberry.types import Info
from strawberry.types.field import StrawberryField


class PlainAttribute:
    """The resolver of a field that only reads an attribute of its source object.

    Strawberry resolves such a field through a wrapper of its own, which reaches
    ``StrawberryField.get_result`` and then the configured default resolver (``getattr``);
    this reads the attribute directly, with the same result and the same errors. It also
    tells :class:`PlainFieldExecutor` the field's scalar or enum type, if it has one, and how
    to coerce a value to it."""

    __slots__ = ("coerce", "leaf_type", "nullable", "python_name")

    def __init__(self, python_name: str, leaf_type: GraphQLLeafType | None, nullable: bool):
        self.python_name = python_name
        self.leaf_type = leaf_type
        self.nullable = nullable
        self.coerce = None if leaf_type is None else _output_coercion(leaf_type)

    def __call__(self, source: Any, info: GraphQLResolveInfo) -> Any:
        return getattr(source, self.python_name)


def _output_coercion(leaf_type: GraphQLLeafType) -> Callable[[Any], Any]:
    """``leaf_type.coerce_output_value``, but for a member of a Strawberry enum's Python enum
    a dict lookup: Strawberry's enum type compares the member's value with each of the
    enum's values in turn, for every value of every page. The first matching name wins, as
    in Strawberry's loop; anything else (a plain value, a failure) goes to the type."""
    generic = leaf_type.coerce_output_value
    if not isinstance(leaf_type, CustomGraphQLEnumType):
        return generic
    wrapped = leaf_type.wrapped_cls
    names: dict[Any, str] = {}
    for name, value in leaf_type.values.items():
        for member in wrapped:
            if member.value == value.value:
                names.setdefault(member, name)

    def coerce(value: Any) -> Any:
        # Only members take the shortcut (an enum with members has no subclasses); a str
        # equal to a StrEnum member keeps the type's own rules.
        if type(value) is wrapped and value in names:
            return names[value]
        return generic(value)

    return coerce


class PlainMethod:
    """The resolver of a field whose own resolver takes ``self`` and possibly ``info``, and
    nothing else (``Message.sender``, ``Conversation.contact``, ...).

    Strawberry calls such a resolver through a chain built for the general case: it
    converts the (absent) arguments, sorts out which reserved parameters the resolver
    wants, wraps the call for field extensions (none here) and, for an async resolver,
    awaits it inside one more coroutine. This builds the same Strawberry ``Info`` and calls
    the resolver with the same arguments; an awaitable result is left to graphql-core."""

    __slots__ = ("field", "func", "info_class", "wants_info")

    def __init__(self, field: StrawberryField, info_class: type[Info], wants_info: bool) -> None:
        assert field.base_resolver is not None
        self.field = field
        self.func = field.base_resolver.wrapped_func
        self.info_class = info_class
        self.wants_info = wants_info

    def __call__(self, source: Any, info: GraphQLResolveInfo) -> Any:
        if self.wants_info:
            return self.func(source, self.info_class(_raw_info=info, _field=self.field))
        return self.func(source)


def _method_resolver(field: StrawberryField, info_class: type[Info]) -> PlainMethod | None:
    """A :class:`PlainMethod` for ``field`` if its resolver is a plain method taking ``self``
    and, as its second positional parameter, ``info``; None otherwise."""
    resolver = field.base_resolver
    if resolver is None or field.extensions or field.arguments:
        return None
    if resolver.self_parameter is None or resolver.parent_parameter or resolver.root_parameter:
        return None
    parameters = list(resolver.signature.parameters.values())
    positional = (Parameter.POSITIONAL_ONLY, Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind not in positional for p in parameters):
        return None
    if parameters == [resolver.self_parameter]:
        return PlainMethod(field, info_class, wants_info=False)
    if parameters == [resolver.self_parameter, resolver.info_parameter]:
        return PlainMethod(field, info_class, wants_info=True)
    return None


def install_plain_attributes(schema: strawberry.Schema) -> int:
    """Give every field of ``schema`` that only reads an attribute a :class:`PlainAttribute`
    resolver, and every field whose resolver only takes ``self`` (and ``info``) a
    :class:`PlainMethod`; returns how many fields got one.

    Only fields without field extensions (permission classes are extensions) and without
    arguments qualify; attributes must be read with the configured default resolver, which
    must be ``getattr``. A schema with exception handlers is left alone (its fields may be
    wrapped to call them). The python name is read from the Strawberry field: the GraphQL
    name is its camelCase form (``display_name`` is ``displayName``)."""
    if schema.config.default_resolver is not getattr or schema.exception_handlers:
        return 0
    installed = 0
    for graphql_type in schema._schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type.name.startswith("__"):
            continue
        for name, graphql_field in graphql_type.fields.items():
            field = schema.get_field_for_type(name, graphql_type.name)
            if field is None:
                continue
            if field.is_basic_field and not field.arguments:
                nullable = not is_non_null_type(graphql_field.type)
                named = graphql_field.type if nullable else graphql_field.type.of_type  # type: ignore[attr-defined]
                leaf_type = named if is_leaf_type(named) else None
                graphql_field.resolve = PlainAttribute(field.python_name, leaf_type, nullable)
                installed += 1
            elif method := _method_resolver(field, schema.config.info_class):
                graphql_field.resolve = method
                installed += 1
    return installed


class PlainFieldExecutor(StrawberryGraphQLCoreExecutionContext):
    """Executes a :class:`PlainAttribute` field of a scalar or enum type as what it is: an
    attribute read and the type's ``coerce_output_value``.

    graphql-core's ``execute_field`` builds a resolve info for every field (Strawberry's, of
    15 values), looks for arguments, calls the resolver, checks twice for an awaitable and
    walks ``complete_value`` through the non-null wrapper to ``complete_leaf_value``: about
    three quarters of a page's fields are such leaves. Anything unusual (a null for a
    non-null field, an awaitable or an exception as the value, a coercion that fails or
    returns nothing, resolver middleware) takes graphql-core's own path, which then produces
    the value or the error exactly as before."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        # Middleware (a schema extension's ``resolve`` hook) must see every field.
        self._plain_leaves = manager is None or not manager.middlewares

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        if self._plain_leaves:
            # A meta field (__typename) is not in ``fields``: the generic path handles it.
            field_def = parent_type.fields.get(field_details_list[0].node.name.value)
            resolve = None if field_def is None else field_def.resolve
            if type(resolve) is PlainAttribute and resolve.leaf_type is not None:
                value = _leaf_value(resolve, source, self.is_awaitable)
                if value is not _GENERIC:
                    return value
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )


_GENERIC = object()


def _leaf_value(field: PlainAttribute, source: Any, is_awaitable: Callable[[Any], bool]) -> Any:
    """The completed value of a plain leaf field, or ``_GENERIC`` when graphql-core's path
    must produce it (or the error: it raises again what this swallowed, as a located
    field error)."""
    try:
        value = getattr(source, field.python_name)
        if value is None:
            return None if field.nullable else _GENERIC
        if isinstance(value, Exception) or is_awaitable(value):
            return _GENERIC
        coerced = field.coerce(value)  # type: ignore[misc]
    except Exception:
        return _GENERIC
    return _GENERIC if coerced is None or coerced is Undefined else coerced
