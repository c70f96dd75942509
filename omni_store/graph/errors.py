"""Errors that may reach clients. Everything else is masked and logged with a request id."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

from asyncpg import exceptions as asyncpg_exc
from graphql import GraphQLError
from sqlalchemy import exc as sa_exc

from omni_store.persistence.errors import ConcurrentWrites, ConnectionLost, UserInputError

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


_DID_YOU_MEAN = re.compile(r"\s*Did you mean [^?]*\?")


def _document_error_code(message: str) -> str:
    """Codes for errors in the request document itself (no resolver ran)."""
    if "more than" in message and "tokens" in message:
        return "TOO_MANY_TOKENS"
    if message.startswith("Variable "):
        return "BAD_USER_INPUT"
    if message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if "exceeds maximum operation depth" in message:
        return "QUERY_TOO_DEEP"
    if "aliases found" in message:
        return "TOO_MANY_ALIASES"
    if "introspection" in message.lower():
        return "INTROSPECTION_DISABLED"
    return "GRAPHQL_VALIDATION_FAILED"


def _with_code(error: GraphQLError, *, hide_suggestions: bool) -> GraphQLError:
    """A document error with a code, and without schema hints when introspection is off."""
    if (error.extensions or {}).get("code") and not hide_suggestions:
        return error
    message = _DID_YOU_MEAN.sub("", error.message) if hide_suggestions else error.message
    extensions = {**(error.extensions or {})}
    extensions.setdefault("code", _document_error_code(error.message))
    return GraphQLError(message, nodes=error.nodes, path=error.path, extensions=extensions)


def mask_internal_errors(result: Any, request_id: str | None, *, hide_suggestions: bool) -> None:
    """No SQL, stack or internal message reaches a client: each unexpected error of the
    operation's ``result`` becomes ``INTERNAL_SERVER_ERROR`` with the request id, and is
    logged with it. Errors of the document itself get a code."""
    if result is None or not result.errors:
        return
    masked = []
    for error in result.errors:
        # No original error, or no path: parsing, validation or variable coercion, all
        # about the request document itself; no resolver ran.
        if error.original_error is None or (
            error.path is None and not isinstance(error.original_error, PublicError)
        ):
            masked.append(_with_code(error, hide_suggestions=hide_suggestions))
            continue
        if isinstance(error.original_error, PublicError):
            masked.append(error)
            continue
        transient = retryable_error(error, request_id)
        if transient is not None:
            masked.append(transient)
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


# --- transient failures: the client should retry -----------------------------------------------

SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
OVERLOADED = "OVERLOADED"
_MESSAGES = {
    SERVICE_UNAVAILABLE: "The database is unavailable right now; retry the request.",
    OVERLOADED: "The service is overloaded right now; retry the request later.",
}
# SQLSTATEs (or their two-character classes) after which the same request may succeed.
_SQLSTATES = {
    "08": SERVICE_UNAVAILABLE,  # connection exception
    "57P01": SERVICE_UNAVAILABLE,  # admin shutdown (the server is stopping)
    "57P02": SERVICE_UNAVAILABLE,  # crash shutdown
    "57P03": SERVICE_UNAVAILABLE,  # cannot connect now (starting up, shutting down)
    "57P05": SERVICE_UNAVAILABLE,  # idle session timeout
    "25P03": SERVICE_UNAVAILABLE,  # idle in transaction timeout: the session was closed
    "40": SERVICE_UNAVAILABLE,  # transaction rollback: serialization failure, deadlock
    "53": OVERLOADED,  # insufficient resources, too many connections
    "57014": OVERLOADED,  # query canceled: statement_timeout
    "55P03": OVERLOADED,  # lock not available: lock_timeout
}


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps (SQLAlchemy's ``orig``, ``__cause__``, ``__context__``)."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending and len(seen) < 16:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for inner in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(inner, BaseException):
                pending.append(inner)


def transient_code(error: BaseException) -> str | None:
    """``SERVICE_UNAVAILABLE`` when the database cannot be reached or dropped the connection,
    ``OVERLOADED`` when the service ran out of time or capacity for the request (connection
    pool exhausted, statement timeout), None for everything else (not retryable as such)."""
    for cause in _causes(error):
        if isinstance(cause, sa_exc.TimeoutError):  # no pooled connection within pool_timeout
            return OVERLOADED
        if isinstance(cause, ConcurrentWrites):  # a batch kept losing races to other writers
            return OVERLOADED
        if isinstance(cause, ConnectionLost):
            return SERVICE_UNAVAILABLE
        # A disconnect SQLAlchemy saw (a connection opened by its pool, the readiness ping).
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return SERVICE_UNAVAILABLE
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            code = _SQLSTATES.get(sqlstate) or _SQLSTATES.get(sqlstate[:2])
            if code is not None:
                return code
        # Connect refused or timed out (asyncpg raises these unwrapped), a statement that
        # got no answer within command_timeout, a reset socket.
        if isinstance(cause, TimeoutError | OSError):
            return SERVICE_UNAVAILABLE
        # The server's goodbye (FATAL 57P01) was read but not yet its closed socket: asyncpg
        # waits for a ReadyForQuery that never comes, and refuses the next statement.
        if isinstance(cause, asyncpg_exc.InternalClientError):
            return SERVICE_UNAVAILABLE
    return None


def retryable_error(error: GraphQLError, request_id: str | None) -> GraphQLError | None:
    """The public form of a transient failure: a code, ``retryable: true`` and the request id;
    no internal text. None if ``error`` is not transient."""
    original = error.original_error
    code = None if original is None else transient_code(original)
    if code is None:
        return None
    assert original is not None
    log.warning(
        "%s in %s (request %s): %s: %s",
        code,
        ".".join(str(p) for p in error.path or []) or "operation",
        request_id,
        type(original).__name__,
        original,
    )
    return GraphQLError(
        _MESSAGES[code],
        nodes=error.nodes,
        path=error.path,
        extensions={"code": code, "retryable": True, "requestId": request_id},
    )


def overloaded(request_id: str | None) -> GraphQLError:
    """No capacity for the request within the wait allowed: retry later."""
    log.warning("%s before execution (request %s)", OVERLOADED, request_id)
    return GraphQLError(
        _MESSAGES[OVERLOADED],
        extensions={"code": OVERLOADED, "retryable": True, "requestId": request_id},
    )


def mask_escaped(error: GraphQLError, request_id: str | None) -> GraphQLError:
    """An error that reached the response without passing :func:`mask_internal_errors` (one
    raised while the operation's extensions were closing, e.g. the commit of the request's
    read transaction on a dropped connection): retryable if transient, masked otherwise."""
    transient = retryable_error(error, request_id)
    if transient is not None:
        return transient
    log.error("unexpected error (request %s)", request_id, exc_info=error.original_error)
    return GraphQLError(
        "Unexpected error.",
        nodes=error.nodes,
        path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
    )
