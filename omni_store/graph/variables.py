"""Variables coerced by coercers made once per input type.

graphql-core coerces every variable value with ``coerce_input_value``, a function that asks
each value's type what it is (non-null? list? input object? leaf?) at every level, and
before that walks the whole value once more to bound its depth. For a persistMessages batch
of 100 messages that is 2.6 ms of CPU, an eighth of the request.

:func:`coerced_variables` does the same work with closures built once per input type (which
fields, which are required, how to coerce each), and skips the depth walk for types whose
nesting cannot reach graphql-core's limit (none of the service's input types is recursive).
It only ever answers for the values graphql-core would accept, with what graphql-core would
make of them: every rule of ``coerce_input_value`` (a list of one for a single value,
published defaults for absent fields, unknown fields refused, ``@oneOf``) is mirrored, and
leaves are coerced by their own type's ``coerce_input_value`` (an enum's names once, then
looked up: Strawberry's enum type makes the member anew from its value each time).
Anything else (a value it refuses, a variable with a default, a missing required variable,
an operation that cannot be told) answers None, and graphql-core's own coercion then runs
and reports the errors in its own words.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import cache
from typing import Any

from graphql import (
    DocumentNode,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLSchema,
    OperationDefinitionNode,
    Undefined,
    VariableDefinitionNode,
    is_input_object_type,
    is_list_type,
    is_non_null_type,
    is_required_input_field,
)
from graphql.execution.get_variable_signature import get_variable_signature
from graphql.execution.values import VariableValues, VariableValueSource
from graphql.language.parser import MAX_NESTING_DEPTH
from graphql.pyutils import is_iterable
from graphql.type.scalars import coerce_id, coerce_string
from graphql.utilities.coerce_input_value import coerce_default_value

Coercer = Callable[[Any], Any]  # a value to its coerced value, or Undefined if invalid


def select_operation(
    document: DocumentNode, operation_name: str | None
) -> OperationDefinitionNode | None:
    """The operation graphql-core's ``Executor.build`` would execute; None where it would
    answer with an error (none, several without a name, an unknown name)."""
    found: OperationDefinitionNode | None = None
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if operation_name is None:
            if found is not None:
                return None
            found = definition
        elif definition.name and definition.name.value == operation_name:
            found = definition
    return found


def coerced_variables(
    schema: GraphQLSchema,
    definitions: Collection[VariableDefinitionNode],
    inputs: dict[str, Any],
) -> VariableValues | None:
    """The operation's variables as graphql-core's ``get_variable_values`` coerces them, or
    None to let it coerce them itself (and report whatever is wrong)."""
    sources: dict[str, VariableValueSource] = {}
    coerced: dict[str, Any] = {}
    for definition in definitions:
        signature = get_variable_signature(schema, definition)
        if not isinstance(signature, tuple) or definition.default_value is not None:
            return None
        name, type_ = signature.name, signature.type
        value = inputs.get(name, Undefined)
        if value is Undefined:
            if is_non_null_type(type_):
                return None
            sources[name] = VariableValueSource(signature)
            continue  # a nullable variable not given is left out
        coerce = coercer(type_)
        if coerce is None:
            return None
        result = coerce(value)
        if result is Undefined:
            return None
        sources[name] = VariableValueSource(signature, value)
        coerced[name] = result
    return VariableValues(sources, coerced)


def coercer(type_: GraphQLInputType) -> Coercer | None:
    """``coerce_input_value(value, type_)`` as a function of ``value``; None for a type
    nested deeply enough for graphql-core's depth check to matter."""
    if _depth(type_) > MAX_NESTING_DEPTH:
        return None
    return _coercer(type_)


def _depth(type_: GraphQLInputType, seen: frozenset[GraphQLInputType] = frozenset()) -> int:
    """How many levels graphql-core's ``input_is_nested_too_deeply`` can walk into a value of
    ``type_`` (lists and input objects count); beyond the limit for a recursive type."""
    if is_non_null_type(type_):
        return _depth(type_.of_type, seen)
    if is_list_type(type_):
        return 1 + _depth(type_.of_type, seen)
    return _object_depth(type_, seen) if is_input_object_type(type_) else 0


@cache
def _object_depth(type_: GraphQLInputObjectType, seen: frozenset[GraphQLInputType]) -> int:
    if type_ in seen:
        return MAX_NESTING_DEPTH + 1
    inner = seen | {type_}
    return 1 + max((_depth(f.type, inner) for f in type_.fields.values()), default=0)


def _coercer(type_: GraphQLInputType) -> Coercer:
    if is_non_null_type(type_):
        return _non_null(_coercer(type_.of_type))
    if is_list_type(type_):
        return _list(_coercer(type_.of_type))
    if is_input_object_type(type_):
        return _input_object(type_)
    return _leaf(type_)


def _non_null(inner: Coercer) -> Coercer:
    def coerce(value: Any) -> Any:
        if value is None or value is Undefined:
            return Undefined
        return inner(value)

    return coerce


def _list(item: Coercer) -> Coercer:
    def coerce(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if type(value) is not list and not is_iterable(value):  # a single value: a list of one
            one = item(value)
            return Undefined if one is Undefined else [one]
        items = []
        for each in value:
            coerced = item(each)
            if coerced is Undefined:
                return Undefined
            items.append(coerced)
        return items

    return coerce


@cache
def _input_object(type_: GraphQLInputObjectType) -> Coercer:
    fields = type_.fields
    names = frozenset(fields)
    out_type = type_.out_type
    one_of = type_.is_one_of
    # (name, Python name, coercer, required, coerced default or Undefined), made on first use.
    plan: list[tuple[str, str, Coercer, bool, Any]] | None = None

    def coerce(value: Any) -> Any:
        nonlocal plan
        if value is None or value is Undefined:
            return None
        if not isinstance(value, dict):
            return Undefined
        if plan is None:  # field types may name input types not compiled yet
            plan = [
                (
                    name,
                    f.out_name or name,
                    _coercer(f.type),
                    is_required_input_field(f),
                    coerce_default_value(f),
                )
                for name, f in fields.items()
            ]
        if one_of or not value.keys() <= names:
            # Undefined values are left out before unknown names are refused.
            defined = 0
            for name, given in value.items():
                if given is Undefined:
                    continue
                defined += 1
                if name not in names:
                    return Undefined
        coerced = {}
        for name, out_name, coerce_field, required, default in plan:
            given = value.get(name, Undefined)
            if given is Undefined:
                if required:
                    return Undefined
                if default is not Undefined:
                    coerced[out_name] = default
            else:
                result = coerce_field(given)
                if result is Undefined:
                    return Undefined
                coerced[out_name] = result
        if one_of:
            keys = list(coerced)
            if defined != 1 or len(keys) != 1 or coerced[keys[0]] is None:
                return Undefined
        return out_type(coerced)

    return coerce


@cache
def _leaf(type_: Any) -> Coercer:
    coerce_leaf = type_.coerce_input_value
    # An enum's names coerce to the same value every time (Strawberry's enum type: the
    # member of its Python enum): look them up, as coerced by the type itself once.
    known: dict[str, Any] = {}
    if isinstance(type_, GraphQLEnumType):
        for name in type_.values:
            try:
                known[name] = coerce_leaf(name)
            except Exception:  # such a name keeps the type's own coercion
                continue

    # String and ID take a str as it is (graphql-core's coerce_string and coerce_id).
    text_as_is = coerce_leaf in (coerce_string, coerce_id)

    def coerce(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if type(value) is str:
            if text_as_is:
                return value
            found = known.get(value, Undefined)
            if found is not Undefined:
                return found
        try:
            return coerce_leaf(value)
        except Exception:  # graphql-core's rule: a leaf that fails to coerce is invalid
            return Undefined

    return coerce
