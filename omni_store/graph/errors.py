"""Errors that may reach clients. Everything else is masked and logged with a request id."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from omni_store.persistence.errors import UserInputError

log = logging.getLogger("omni_store.graph")


class PublicError(Exception):
    """A top-level error whose message and code are meant for the client."""

    def __init__(self, code: str, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.extensions = {"code": code, **extensions}


def from_user_input(error: UserInputError) -> PublicError:
    """A business error raised where a payload cannot carry it (query arguments)."""
    first = error.errors[0]
    return PublicError(
        "BAD_USER_INPUT",
        " ".join(f"{'.'.join(e.field)}: {e.message}" for e in error.errors),
        field=list(first.field),
        reason=first.code.value,
    )


def _is_public(error: GraphQLError) -> bool:
    original = error.original_error
    if original is None:
        # Parse and validation errors of the document itself.
        return True
    return isinstance(original, PublicError)


class MaskInternalErrors(SchemaExtension):
    """No SQL, stack or internal message reaches a client: each unexpected error becomes
    ``INTERNAL_SERVER_ERROR`` with the request id, and is logged with it."""

    def __init__(self, request_id: Callable[[Any], str | None]) -> None:
        self._request_id = request_id

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is None or not getattr(result, "errors", None):
            return
        request_id = self._request_id(self.execution_context.context)
        masked = []
        for error in result.errors:
            if _is_public(error):
                masked.append(error)
                continue
            log.error(
                "unexpected error in %s (request %s)",
                ".".join(str(p) for p in error.path or []) or "operation",
                request_id,
                exc_info=error.original_error,
            )
            masked.append(
                GraphQLError(
                    "Unexpected error.",
                    nodes=error.nodes,
                    path=error.path,
                    extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
                )
            )
        result.errors = masked
