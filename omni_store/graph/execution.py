"""Cheaper execution of plain fields: most of a read page's fields are attributes of the
objects the resolvers built (``Message.direction``, ``Attachment.url``, ...), and executing
each one cost more in Strawberry's and graphql-core's generic machinery than the attribute
read itself. The relations (``Message.sender``, ...) are methods taking only ``self`` and
``info``, called through a chain built for resolvers with arguments and extensions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from functools import cached_property
from inspect import Parameter
from types import CoroutineType, GeneratorType
from typing import Any

import strawberry
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLLeafType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationDefinitionNode,
    Undefined,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.execution.executor import collect_iterator_awaitables
from graphql.execution.values import VariableValues
from graphql.pyutils import Path
from graphql.pyutils.gather_with_cancel import gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import CustomGraphQLEnumType
from strawberry.types import Info
from strawberry.types.field import StrawberryField

from omni_store.graph.variables import coerced_variables, select_operation


class PlainAttribute:
    """The resolver of a field that only reads an attribute of its source object.

    Strawberry resolves such a field through a wrapper of its own, which reaches
    ``StrawberryField.get_result`` and then the configured default resolver (``getattr``);
    this reads the attribute directly, with the same result and the same errors. It also
    tells :class:`PlainFieldExecutor` the field's scalar or enum type, if it has one, and how
    to coerce a value to it; or else, for an object type or a list, how to complete it."""

    __slots__ = ("coerce", "completion", "leaf_type", "nullable", "python_name", "settled")

    def __init__(
        self,
        python_name: str,
        leaf_type: GraphQLLeafType | None,
        nullable: bool,
        completion: Completion | None = None,
    ):
        self.python_name = python_name
        self.leaf_type = leaf_type
        self.nullable = nullable
        self.coerce = None if leaf_type is None else _output_coercion(leaf_type)
        self.completion = None if leaf_type is not None else completion
        self.settled = None if leaf_type is None else _settled_class(_python_class(leaf_type))

    def __call__(self, source: Any, info: GraphQLResolveInfo[Any]) -> Any:
        return getattr(source, self.python_name)


def _python_class(named_type: Any) -> Any:
    """The Python class of a Strawberry object type's values, or of a Strawberry enum's
    members; None for other types."""
    if isinstance(named_type, CustomGraphQLEnumType):
        return named_type.wrapped_cls
    definition = (getattr(named_type, "extensions", None) or {}).get("strawberry-definition")
    return getattr(definition, "origin", None) if is_object_type(named_type) else None


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
        member: Any
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


_LEAF, _OBJECT, _LIST = "leaf", "object", "list"

# Strawberry's own ``is_type_of`` (for object types with interfaces, such as Node) only asks
# the value's class; it never reads the resolve info, so the fast path can call it without
# building one. Any other ``is_type_of`` leaves its field to graphql-core.
_STRAWBERRY_IS_TYPE_OF = (
    "strawberry.schema.schema_converter",
    "GraphQLCoreConverter.from_object.<locals>._get_is_type_of.<locals>.is_type_of",
)


class Completion:
    """How :class:`PlainFieldExecutor` completes a value of one plain field's type, at one
    depth of its lists: a leaf, an object (not an interface or a union) or a list of them.

    The same as graphql-core's ``complete_value`` for that type, with the field's parent type
    and definition at hand to build the resolve info only when graphql-core's own
    completion needs it."""

    __slots__ = (
        "coerce",
        "field_def",
        "graphql_type",
        "is_type_of",
        "item",
        "kind",
        "named_type",
        "nullable",
        "parent_type",
        "settled",
    )

    def __init__(
        self,
        graphql_type: GraphQLOutputType,
        kind: str,
        named_type: Any,
        parent_type: GraphQLObjectType,
        field_def: GraphQLField,
    ) -> None:
        self.graphql_type = graphql_type
        self.nullable = not is_non_null_type(graphql_type)
        self.kind = kind
        self.named_type = named_type
        self.parent_type = parent_type
        self.field_def = field_def
        self.coerce = _output_coercion(named_type) if kind is _LEAF else None
        self.is_type_of = named_type.is_type_of if kind is _OBJECT else None
        self.item: Completion | None = None
        self.settled = _settled_class(_python_class(named_type))


def _completion(
    graphql_type: GraphQLOutputType, parent_type: GraphQLObjectType, field_def: GraphQLField
) -> Completion | None:
    """The :class:`Completion` of ``graphql_type`` (a field's type or the item type of its
    list), or None if its field must take graphql-core's path: an interface or a union, or
    an object type whose ``is_type_of`` may read the resolve info."""
    named = graphql_type.of_type if is_non_null_type(graphql_type) else graphql_type
    if is_list_type(named):
        item = _completion(named.of_type, parent_type, field_def)
        if item is None:
            return None
        completion = Completion(graphql_type, _LIST, named, parent_type, field_def)
        completion.item = item
        return completion
    if is_leaf_type(named):
        return Completion(graphql_type, _LEAF, named, parent_type, field_def)
    if not is_object_type(named):
        return None
    is_type_of = named.is_type_of
    if (
        is_type_of is not None
        and (
            getattr(is_type_of, "__module__", None),
            getattr(is_type_of, "__qualname__", None),
        )
        != _STRAWBERRY_IS_TYPE_OF
    ):
        return None
    return Completion(graphql_type, _OBJECT, named, parent_type, field_def)


class PlainMethod:
    """The resolver of a field whose own resolver takes ``self`` and possibly ``info``, and
    nothing else (``Message.sender``, ``Conversation.contact``, ...).

    Strawberry calls such a resolver through a chain built for the general case: it
    converts the (absent) arguments, sorts out which reserved parameters the resolver
    wants, wraps the call for field extensions (none here) and, for an async resolver,
    awaits it inside one more coroutine. This builds the same Strawberry ``Info`` and calls
    the resolver with the same arguments; an awaitable result is left to graphql-core."""

    __slots__ = ("completion", "field", "func", "info_class", "wants_info")

    def __init__(self, field: StrawberryField, info_class: type[Info], wants_info: bool) -> None:
        assert field.base_resolver is not None
        self.field = field
        # A plain function here: _method_resolver only takes resolvers with a self parameter.
        self.func: Callable[..., Any] = field.base_resolver.wrapped_func  # type: ignore[assignment]
        self.info_class = info_class
        self.wants_info = wants_info
        self.completion: Completion | None = None

    def __call__(self, source: Any, info: GraphQLResolveInfo[Any]) -> Any:
        if self.wants_info:
            return self.func(source, self.info_class(_raw_info=info, _field=self.field))
        return self.func(source)


class ContextFirstInfo(Info):
    """Strawberry's ``Info`` for a :class:`PlainMethod` resolver, with its context at hand
    and graphql-core's resolve info (16 values) built only if the resolver reads anything
    else. The relation resolvers read only ``info.context``, and a page calls a hundred."""

    def __init__(
        self,
        executor: PlainFieldExecutor,
        completion: Completion,
        field_details_list: FieldDetailsList,
        parent_type: GraphQLObjectType,
        path: Path,
        field: StrawberryField,
    ) -> None:
        self._field = field
        self._executor = executor
        self._where = (completion, field_details_list, parent_type, path)

    @property
    def context(self) -> Any:
        return self._executor.context_value

    @cached_property
    def _raw_info(self) -> GraphQLResolveInfo[Any]:  # type: ignore[override]
        completion, field_details_list, parent_type, path = self._where
        return self._executor.build_resolve_info(
            completion.field_def, _nodes(field_details_list), parent_type, path
        )


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
            completion = _completion(graphql_field.type, graphql_type, graphql_field)
            if field.is_basic_field and not field.arguments:
                nullable = not is_non_null_type(graphql_field.type)
                named = graphql_field.type if nullable else graphql_field.type.of_type
                leaf_type = named if is_leaf_type(named) else None
                graphql_field.resolve = PlainAttribute(
                    field.python_name, leaf_type, nullable, completion
                )
                installed += 1
            elif method := _method_resolver(field, schema.config.info_class):
                method.completion = completion
                graphql_field.resolve = method
                installed += 1
    return installed


class PlainFieldExecutor(StrawberryGraphQLCoreExecutionContext):
    """Executes the fields of :class:`PlainAttribute` and :class:`PlainMethod` resolvers
    without graphql-core's generic machinery, where their values are plain.

    For every field, graphql-core's ``execute_fields`` makes a response path and calls
    ``execute_field``, which builds a resolve info (Strawberry's, of 15 values), looks for
    arguments, calls the resolver, checks twice for an awaitable and walks
    ``complete_value`` through the non-null wrapper to ``complete_leaf_value``; then
    ``execute_fields`` checks the result for an awaitable once more. An object value goes
    on through ``complete_object_value``, ``collect_and_execute_subfields``,
    ``collect_subfields`` and ``execute_collected_subfields`` back to ``execute_fields``,
    and a list through ``complete_list_value``, ``complete_iterable_value`` (which looks
    for a ``@stream`` directive) and ``complete_list_item_value`` for each item.

    Here a plain attribute of a scalar or enum type is read and coerced in the loop of
    ``execute_fields``; a plain field of an object type, or of a list of objects or leaves,
    is completed by :meth:`complete_plain` (objects: ``is_type_of``, the memoized
    subfields, ``execute_fields``). Anything unusual (a null for a non-null field or item,
    an awaitable or an exception as the value, a coercion that fails or returns nothing,
    an object type refused by ``is_type_of``, ``@defer`` or ``@stream``, resolver
    middleware) goes to graphql-core's own method for that value, which then produces the
    value or the error exactly as before; errors are located and propagated by
    graphql-core's ``handle_field_error`` with the same type and path as on its path.

    ``execute_fields`` is graphql-core's own (3.3; the methods an executor uses internally
    are not its public API, and tests/unit/test_execution.py pins the version) with the
    plain fields completed in its loop; :meth:`execute_plain_field` mirrors
    ``execute_field`` and :meth:`complete_plain_list` ``complete_iterable_value``."""

    @classmethod
    def build(
        cls,
        schema: GraphQLSchema,
        document: DocumentNode,
        root_value: Any = None,
        context_value: Any = None,
        raw_variable_values: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> list[GraphQLError] | PlainFieldExecutor:
        """graphql-core's ``build``, with the operation's variables coerced by
        :func:`~omni_store.graph.variables.coerced_variables` where it can: graphql-core then
        builds the executor for the operation without its variable definitions (nothing left
        to coerce), and :meth:`__init__` puts back the operation and the coerced values.
        Where it cannot, graphql-core coerces them, and reports the errors, as ever."""
        operation = select_operation(document, operation_name)
        variables = None
        if operation is not None and operation.variable_definitions:
            variables = coerced_variables(
                schema, operation.variable_definitions, raw_variable_values or {}
            )
        if operation is None or variables is None:
            return super().build(  # type: ignore[return-value]
                schema,
                document,
                root_value,
                context_value,
                raw_variable_values,
                operation_name,
                *args,
                **kwargs,
            )
        without_variables = replace(operation, variable_definitions=())
        definitions = tuple(
            without_variables if d is operation else d for d in document.definitions
        )
        return super().build(  # type: ignore[return-value]
            schema,
            replace(document, definitions=definitions),
            root_value,
            context_value,
            None,
            operation_name,
            *args,
            **kwargs,
            coerced_operation=(operation, variables),
        )

    def __init__(
        self,
        *args: Any,
        coerced_operation: tuple[OperationDefinitionNode, VariableValues] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if coerced_operation is not None:
            self.operation, self.variable_values = coerced_operation
        manager = self.middleware_manager
        # Middleware (a schema extension's ``resolve`` hook) must see every field.
        self._plain_leaves = manager is None or not manager.middlewares
        # How to execute each field of a grouped field set for its parent type, by the set's
        # id (the set is kept alive with its plan: the id is not reused during the execution).
        self._plans: dict[int, tuple[GroupedFieldSet, GraphQLObjectType, list[_Planned]]] = {}
        self._subfields: dict[int, tuple[GraphQLObjectType, GroupedFieldSet | None]] = {}

    def execute_operation(self, *args: Any, **kwargs: Any) -> Any:
        """graphql-core's, then the executor's memos of the operation's field sets are let
        go. The executor and its resolve-info helpers refer to each other (bound methods), so
        what it holds is freed only by the cyclic garbage collector: emptied, a read page
        leaves it about 150 fewer objects (lists, tuples, ``FieldDetails``). A memo is only
        ever a shortcut: anything executed later (an incremental payload) makes it anew."""
        result = super().execute_operation(*args, **kwargs)
        if self.is_awaitable(result):
            return self._released_after(result)
        self._release()
        return result

    async def _released_after(self, result: Awaitable[Any]) -> Any:
        try:
            return await result
        finally:
            self._release()

    def _release(self) -> None:
        self._plans.clear()
        self._subfields.clear()
        self._relevant_sub_fields.clear()

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
        cached = self._plans.get(id(grouped_field_set))
        plan = (
            cached[2]
            if cached is not None and cached[0] is grouped_field_set and cached[1] is parent_type
            else self._plan(parent_type, grouped_field_set)
        )
        # Deferred execution passes its delivery groups down: only leaves go fast there.
        plain = position_context is None
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for response_name, field_details_list, mode, resolve in plan:
                if mode is _LEAF_FIELD:
                    # A plain leaf: read and coerced here, unless graphql-core's path must
                    # produce the value or the error (it raises again what this swallows, as
                    # a located field error).
                    try:
                        value = getattr(source_value, resolve.python_name)
                        if value is None:
                            if resolve.nullable:
                                results[response_name] = None
                                continue
                        elif (
                            type(value) in _NEVER_AWAITABLE
                            or (
                                type(value) is resolve.settled and "__await__" not in value.__dict__
                            )
                            or not (isinstance(value, Exception) or is_awaitable(value))
                        ):
                            value = resolve.coerce(value)
                            if value is not None and value is not Undefined:
                                results[response_name] = value
                                continue
                    except Exception:
                        pass
                field_path = _path(Path, (path, response_name, parent_type.name))
                if mode is _PLAIN_FIELD and plain:
                    result = self.execute_plain_field(
                        parent_type, source_value, field_details_list, field_path, resolve
                    )
                else:
                    result = self.execute_field(
                        parent_type, source_value, field_details_list, field_path, position_context
                    )
                    if result is Undefined:
                        continue
                results[response_name] = result
                if type(result) not in _NEVER_AWAITABLE and is_awaitable(result):
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

    def _plan(
        self, parent_type: GraphQLObjectType, grouped_field_set: GroupedFieldSet
    ) -> list[_Planned]:
        """How to execute each field of ``grouped_field_set`` (memoized)."""
        # A meta field (__typename) is not in ``fields``: the generic path handles it.
        fields = parent_type.fields
        plan: list[_Planned] = []
        for response_name, field_details_list in grouped_field_set.items():
            field_def = fields.get(field_details_list[0].node.name.value)
            resolve = None if field_def is None else field_def.resolve
            mode = _GENERIC_FIELD
            if type(resolve) is PlainAttribute and resolve.coerce is not None:
                mode = _LEAF_FIELD
            elif type(resolve) in (PlainAttribute, PlainMethod):
                completion = resolve.completion  # type: ignore[union-attr]
                if (
                    completion is not None
                    and completion.parent_type is parent_type
                    and not (completion.kind is _LIST and _streamed(field_details_list))
                ):
                    mode = _PLAIN_FIELD
            plan.append((response_name, field_details_list, mode, resolve))
        self._plans[id(grouped_field_set)] = (grouped_field_set, parent_type, plan)
        return plan

    def execute_plain_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        resolve: PlainAttribute | PlainMethod,
    ) -> Any:
        """graphql-core's ``execute_field`` for a field whose resolver is ``resolve``, with
        the resolve info built only if the resolver or graphql-core's completion needs it."""
        completion: Completion = resolve.completion  # type: ignore[assignment]
        info = None
        try:
            if isinstance(resolve, PlainAttribute):
                value = getattr(source, resolve.python_name)
            elif resolve.wants_info:
                if resolve.info_class is Info:
                    value = resolve.func(
                        source,
                        ContextFirstInfo(
                            self, completion, field_details_list, parent_type, path, resolve.field
                        ),
                    )
                else:  # a schema's own Info class: built in full, as Strawberry builds it
                    info = self.build_resolve_info(
                        completion.field_def, _nodes(field_details_list), parent_type, path
                    )
                    value = resolve.func(
                        source, resolve.info_class(_raw_info=info, _field=resolve.field)
                    )
            else:
                value = resolve.func(source)
            if not (
                type(value) is completion.settled and "__await__" not in value.__dict__
            ) and self.is_awaitable(value):
                if info is None:
                    info = self._info(completion, field_details_list, path)
                return self.complete_awaitable_value(
                    completion.graphql_type, field_details_list, info, path, value, None
                )
            completed = self.complete_plain(completion, field_details_list, path, value, info)
            if type(completed) not in _NEVER_AWAITABLE and self.is_awaitable(completed):
                return self._await_completed(
                    completed, completion.graphql_type, field_details_list, path
                )
        except Exception as raw_error:
            self.handle_field_error(raw_error, completion.graphql_type, field_details_list, path)
            return None
        return completed

    def complete_plain(
        self,
        completion: Completion,
        field_details_list: FieldDetailsList,
        path: Path,
        value: Any,
        info: GraphQLResolveInfo[Any] | None,
    ) -> Any:
        """graphql-core's ``complete_value`` of a value that is not awaitable, for the type
        of ``completion``: a plain object's subfields are executed, a list's items
        completed, a leaf coerced here; any other value goes to ``complete_value``."""
        kind = completion.kind
        if value is None:
            if completion.nullable:
                return None
        elif kind is _OBJECT:
            is_type_of = completion.is_type_of
            if (
                not isinstance(value, Exception)
                and value is not Undefined
                and (is_type_of is None or is_type_of(value, None) is True)
            ):
                object_type = completion.named_type
                subfields = self._subfields.get(id(field_details_list))
                if subfields is None or subfields[0] is not object_type:
                    subfields = self._collect_plain_subfields(object_type, field_details_list)
                if subfields[1] is not None:
                    return self.execute_fields(object_type, value, path, subfields[1], None)
        elif kind is _LIST:
            if type(value) is list:
                return self.complete_plain_list(completion, field_details_list, path, value, info)
        elif not isinstance(value, Exception) and value is not Undefined:
            coerced = completion.coerce(value)  # type: ignore[misc]
            if coerced is not None and coerced is not Undefined:
                return coerced
        if info is None:
            info = self._info(completion, field_details_list, path)
        return self.complete_value(
            completion.graphql_type, field_details_list, info, path, value, None
        )

    def complete_plain_list(
        self,
        completion: Completion,
        field_details_list: FieldDetailsList,
        path: Path,
        items: list[Any],
        info: GraphQLResolveInfo[Any] | None,
    ) -> Any:
        """graphql-core's ``complete_iterable_value`` of a list that is not streamed, with
        each item that is not awaitable completed by :meth:`complete_plain`."""
        item = completion.item
        assert item is not None
        item_type = item.graphql_type
        settled = item.settled
        is_awaitable = self.is_awaitable
        completed_results: list[Any] = []
        append_completed = completed_results.append
        awaitable_indices: list[int] = []
        iterator = iter(items)
        index = 0
        try:
            for value in iterator:
                item_path = _path(Path, (path, index, None))
                if not (
                    type(value) is settled and "__await__" not in value.__dict__
                ) and is_awaitable(value):
                    if info is None:
                        info = self._info(completion, field_details_list, path)
                    append_completed(
                        self.complete_awaitable_list_item_value(
                            value, item_type, field_details_list, info, item_path, None
                        )
                    )
                    awaitable_indices.append(index)
                else:
                    try:
                        completed = self.complete_plain(
                            item, field_details_list, item_path, value, info
                        )
                        if type(completed) not in _NEVER_AWAITABLE and is_awaitable(completed):
                            completed = self._await_completed(
                                completed, item_type, field_details_list, item_path
                            )
                            awaitable_indices.append(index)
                    except Exception as raw_error:
                        self.handle_field_error(raw_error, item_type, field_details_list, item_path)
                        completed = None
                    append_completed(completed)
                index += 1
        except Exception:
            # As graphql-core: settle the awaitables of the other items, and of the rest.
            maybe_awaitables = [completed_results[index] for index in awaitable_indices]
            maybe_awaitables.extend(collect_iterator_awaitables(iterator, is_awaitable))
            if maybe_awaitables:
                self.settle_in_background(maybe_awaitables)
            raise

        if not awaitable_indices:
            return completed_results

        async def get_completed_results() -> list[Any]:
            if len(awaitable_indices) == 1:
                index = awaitable_indices[0]
                completed_results[index] = await completed_results[index]
            else:
                awaited = await gather_with_cancel(
                    *(completed_results[index] for index in awaitable_indices)
                )
                for index, sub_result in zip(awaitable_indices, awaited, strict=True):
                    completed_results[index] = sub_result
            return completed_results

        return get_completed_results()

    def _collect_plain_subfields(
        self, object_type: GraphQLObjectType, field_details_list: FieldDetailsList
    ) -> tuple[GraphQLObjectType, GroupedFieldSet | None]:
        """graphql-core's memoized ``collect_subfields``, memoized once more by the field
        group alone (its object type is the field's): the subfields, or None if some are
        deferred."""
        collected = self.collect_subfields(object_type, field_details_list)
        subfields = (
            object_type,
            None if collected.new_defer_usages else collected.grouped_field_set,
        )
        # graphql-core's memo keeps the field group alive: its id is not reused.
        self._subfields[id(field_details_list)] = subfields
        return subfields

    async def _await_completed(
        self,
        completed: Any,
        return_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        path: Path,
    ) -> Any:
        """An awaitable completion, its error handled as graphql-core does."""
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None

    def _info(
        self, completion: Completion, field_details_list: FieldDetailsList, path: Path
    ) -> GraphQLResolveInfo[Any]:
        """The resolve info of the field being completed at ``path`` (or an item of it):
        the info's path is the field's, without the list indexes."""
        while isinstance(path.key, int):
            path = path.prev  # type: ignore[assignment]
        return self.build_resolve_info(
            completion.field_def, _nodes(field_details_list), completion.parent_type, path
        )


# How execute_fields runs a field: a plain leaf attribute inline, a plain field of another
# type by execute_plain_field, anything else by graphql-core's execute_field.
_LEAF_FIELD, _PLAIN_FIELD, _GENERIC_FIELD = "leaf", "plain", "generic"
_Planned = tuple[str, FieldDetailsList, str, Any]


def _streamed(field_details_list: FieldDetailsList) -> bool:
    """Whether the field has a ``@stream`` directive (graphql-core only looks at the first
    of its nodes), which only graphql-core's own list completion honours."""
    return any(d.name.value == "stream" for d in field_details_list[0].node.directives or ())


def _nodes(field_details_list: FieldDetailsList) -> list[FieldNode]:
    return [field_details.node for field_details in field_details_list]


# Exactly these types (not subclasses) are neither exceptions nor awaitable: their instances
# have no attributes of their own, so not an ``__await__`` either.
_NEVER_AWAITABLE = frozenset({str, int, float, bool, dict, list, datetime, type(None)})


def _settled_class(cls: Any) -> type | None:
    """``cls`` if an instance of exactly this class can only be an exception or awaitable
    (a coroutine, a generator-based coroutine or anything with an ``__await__``, as the
    executor's ``is_awaitable`` judges) by an ``__await__`` in its own ``__dict__``; None
    otherwise. For such a class, ``"__await__" not in value.__dict__`` answers what
    ``isinstance(value, Exception) or is_awaitable(value)`` would, without the call."""
    if not isinstance(cls, type) or not cls.__dictoffset__:
        return None
    if issubclass(cls, (BaseException, CoroutineType, GeneratorType)):
        return None
    special = ("__await__", "__getattr__", "__getattribute__", "__class__")
    for base in cls.__mro__:
        # These builtins look attributes up as object does.
        if base not in (object, str, int) and any(name in vars(base) for name in special):
            return None
    return cls


# ``Path(prev, key, typename)`` without the Python frame of the named tuple's ``__new__``:
# the same tuple, made once for every object field and list item.
_path = tuple.__new__
