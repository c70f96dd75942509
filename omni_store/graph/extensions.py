"""Schema extensions of the service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from functools import lru_cache

from graphql import GraphQLError, parse
from strawberry.extensions import SchemaExtension

from omni_store.graph.context import Context


class CloseReadScope(SchemaExtension):
    """Ends the request's read transaction (if one was opened) when the operation is done."""

    async def on_operation(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            context = self.execution_context.context
            if isinstance(context, Context):
                await context.close()


PARSE_CACHE_SIZE = 256
_parse = lru_cache(maxsize=PARSE_CACHE_SIZE)(parse)


class CachedParse(SchemaExtension):
    """Parse each document text once (with the same options, such as the token limit).

    Strawberry's own ParserCache parses inside the hook, where a syntax or token-limit error
    escapes the operation's error handling; here a document that fails to parse is left to
    Strawberry, which parses it again inside that handling and answers with a coded error.
    Failures are not cached (lru_cache keeps only results)."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query and context.graphql_document is None:
            with suppress(GraphQLError):
                context.graphql_document = _parse(context.query, **context.parse_options)
        yield
