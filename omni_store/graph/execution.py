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
from graphql.execution.collect_fields import GroupedFieldSet
from graphql.pyutils import Path
from graphql.pyutils.gather_with_cancel import gather_with_cancel
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

    For every field, graphql-core's ``execute_fields`` makes a response path and calls
    ``execute_field``, which builds a resolve info (Strawberry's, of 15 values), looks for
    arguments, calls the resolver, checks twice for an awaitable and walks
    ``complete_value`` through the non-null wrapper to ``complete_leaf_value``; then
    ``execute_fields`` checks the result for an awaitable once more. About three quarters of
    a page's fields are such leaves. Anything unusual (a null for a non-null field, an
    awaitable or an exception as the value, a coercion that fails or returns nothing,
    resolver middleware) takes graphql-core's own path, which then produces the value or
    the error exactly as before.

    ``execute_fields`` is graphql-core's own (3.3; the methods an executor uses internally
    are not its public API, and tests/unit/test_execution.py pins the version) with the
    plain leaves completed in its loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        # Middleware (a schema extension's ``resolve`` hook) must see every field.
        self._plain_leaves = manager is None or not manager.middlewares

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: GroupedFieldSet,
        position_context: Any,
    ) -> Any:
        if not self._plain_leaves:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        # A meta field (__typename) is not in ``fields``: the generic path handles it.
        fields = parent_type.fields
        try:
            for response_name, field_details_list in grouped_field_set.items():
                field_def = fields.get(field_details_list[0].node.name.value)
                resolve = None if field_def is None else field_def.resolve
                if type(resolve) is PlainAttribute and resolve.coerce is not None:
                    value = _leaf_value(resolve, source_value, is_awaitable)
                    if value is not _GENERIC:
                        results[response_name] = value
                        continue
                result = self.execute_field(
                    parent_type,
                    source_value,
                    field_details_list,
                    Path(path, response_name, parent_type.name),
                    position_context,
                )
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                # Settle the awaitables of the other fields: they may fail too.
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise
        if not awaitable_fields:
            return results

        async def get_results() -> dict[str, Any]:
            if len(awaitable_fields) == 1:
                field = awaitable_fields[0]
                results[field] = await results[field]
            else:
                awaited = await gather_with_cancel(*(results[f] for f in awaitable_fields))
                results.update(zip(awaitable_fields, awaited, strict=True))
            return results

        return get_results()


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
