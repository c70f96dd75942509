"""The service's work around every operation, as one schema extension.

Strawberry runs each extension's hooks through a context manager of its own, made anew for
every request (an exit stack, a ``contextmanager`` around a bound method, per hook and per
extension). The service's six extensions (limits, error masking, the read scope, the parse
and validation caches) cost more in that machinery than in their own work, so they are one
:class:`OperationScope` with one hook per stage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from functools import lru_cache

from graphql import ASTValidationRule, GraphQLError, parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from omni_store.graph.context import Context
from omni_store.graph.errors import mask_internal_errors

PARSE_CACHE_SIZE = 256
VALIDATION_CACHE_SIZE = 256
_parse = lru_cache(maxsize=PARSE_CACHE_SIZE)(parse)
# Keyed by the schema, the document (parsed once, so the same object) and the rule classes.
_validate = lru_cache(maxsize=VALIDATION_CACHE_SIZE)(validate_document)


class OperationScope(SchemaExtension):
    """Around the operation: the document limits, then (once it is done) error masking and
    the end of the request's read transaction; each document text parsed and validated once.

    - ``rules``: validation rules added to Strawberry's (depth, aliases, no introspection),
      built once: each limiter makes a new rule class, and the rules are part of the
      validation cache's key.
    - ``max_tokens``: the parser's token limit.
    - ``hide_suggestions``: errors of the document carry no "Did you mean" schema hints.

    Parsing: a document that fails to parse is left to Strawberry, which parses it again
    inside the operation's error handling and answers with a coded error (Strawberry's own
    ParserCache would let the error escape); failures are not cached."""

    def __init__(
        self,
        *,
        rules: tuple[type[ASTValidationRule], ...],
        max_tokens: int,
        hide_suggestions: bool,
    ) -> None:
        self._rules = rules
        self._max_tokens = max_tokens
        self._hide_suggestions = hide_suggestions

    async def on_operation(self) -> AsyncIterator[None]:
        execution = self.execution_context
        execution.validation_rules = execution.validation_rules + self._rules
        execution.parse_options["max_tokens"] = self._max_tokens
        context = execution.context
        try:
            yield
            request_id = context.request_id if isinstance(context, Context) else None
            mask_internal_errors(
                execution.result, request_id, hide_suggestions=self._hide_suggestions
            )
        finally:
            if isinstance(context, Context):
                await context.close()

    def on_parse(self) -> Iterator[None]:
        execution = self.execution_context
        if execution.query and execution.graphql_document is None:
            with suppress(GraphQLError):
                execution.graphql_document = _parse(execution.query, **execution.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        execution = self.execution_context
        assert execution.graphql_document is not None
        execution.pre_execution_errors = _validate(
            execution.schema._schema, execution.graphql_document, execution.validation_rules
        )
        yield
