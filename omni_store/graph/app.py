"""The ASGI application: GraphQL (and GraphiQL) at /graphql, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import orjson
from cross_web import HTTPException  # Strawberry's own (a dependency of it): its view's 400s
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.types import ExecutionResult

from omni_store.graph.auth import AuthError, VerifiedTokens
from omni_store.graph.context import Context
from omni_store.graph.errors import mask_escaped, overloaded
from omni_store.graph.limits import MAX_BODY_BYTES, BodySizeLimit
from omni_store.graph.schema import build_schema
from omni_store.persistence.database import Database

log = logging.getLogger("omni_store")
REQUEST_ID_HEADER = "x-request-id"


class GraphQLApp(GraphQL[Context, None]):
    def __init__(
        self,
        db: Database,
        jwt_secret: str,
        *,
        graphiql: bool,
        introspection: bool,
        max_concurrent_operations: int | None = None,
        admission_timeout_seconds: float | None = None,
    ):
        super().__init__(
            build_schema(introspection=introspection),
            graphql_ide="graphiql" if graphiql else None,
            allow_queries_via_get=False,
        )
        self.db = db
        self.tokens = VerifiedTokens(jwt_secret)
        # Admission: at most as many operations run as the pool has connections (each holds
        # one at a time), and the others wait their turn in order, for at most the pool
        # timeout. The pool's own queue is not fair under load (a newcomer can take a
        # connection that was handed to a waiter), which let some requests wait past the
        # pool timeout while connections were held for 0.1-0.7 s.
        pool: Any = db.engine.pool
        if max_concurrent_operations is None:
            max_concurrent_operations = pool.size() if hasattr(pool, "size") else 10
        if admission_timeout_seconds is None:
            admission_timeout_seconds = float(pool.timeout()) if hasattr(pool, "timeout") else 5
        self._slots = asyncio.Semaphore(max_concurrent_operations)
        self._admission_timeout = admission_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A POST of one operation as a JSON object, what every client of the service sends,
        is served here; anything else (GraphiQL, GET, another content type, a batch, a body
        that is not such an object) by Strawberry's view, which gives the same answers for
        about 0.22M more instructions per request (6 % of a persistMessage, 1 % of a read page;
        tests/api/test_plain_post_api.py compares the two). A request this path turns down is
        handed over whole, its body replayed."""
        if scope["type"] == "http" and scope["method"] == "POST":
            authorization = _plain_json_post(scope["headers"])
            if authorization is not None:
                body = await _body_of(receive)
                try:
                    operation = self._operation_in(body)
                except HTTPException as refused:
                    await _plain_text(refused, scope, send)
                    return
                if operation is not None:
                    await self._serve(scope, send, operation, authorization)
                    return
                receive = _replaying(body, receive)
        await super().__call__(scope, receive, send)

    def _operation_in(self, body: bytes) -> GraphQLRequestData | None:
        """The operation of a body that is a JSON object naming a query (a string) and
        nothing Strawberry's view would refuse; None for Strawberry's view to answer (broken
        JSON, a batch, a member of the wrong type); a 400 for JSON that is not an object."""
        try:
            data = self.decode_json(body)
        except json.JSONDecodeError:
            return None
        if isinstance(data, list):  # a batch: Strawberry's view refuses it
            return None
        if not isinstance(data, dict):
            # Strawberry's view fails on these (AttributeError: a 500).
            raise HTTPException(400, "The request body must be a JSON object.")
        query, variables = data.get("query"), data.get("variables")
        name, extensions = data.get("operationName"), data.get("extensions")
        if (
            not isinstance(query, str)
            or not query
            or not isinstance(variables, dict | None)
            or not isinstance(name, str | None)
            or not isinstance(extensions, dict | None)
        ):
            return None
        return GraphQLRequestData(query, variables, name, extensions, protocol="http")

    async def _serve(
        self, scope: Scope, send: Send, operation: GraphQLRequestData, authorization: str
    ) -> None:
        """What Strawberry's view does for such a request, without its request and response
        objects: the same context, execution, errors, JSON and headers."""
        request_id = scope.get("state", {}).get("request_id", "-")
        context = self._context(authorization or None, request_id)
        try:
            result = await self._admitted(
                request_id,
                self.execute_single(
                    request=_UNUSED,
                    request_adapter=_POSTED,
                    sub_response=_UNUSED,
                    context=context,
                    root_value=None,
                    request_data=operation,
                ),
            )
        except HTTPException as refused:  # e.g. an operation name the document does not have
            await _plain_text(refused, scope, send)
            return
        answer = self.encode_json(self._processed(result, request_id))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def execute_operation(  # type: ignore[override]
        self, request: Any, request_adapter: Any, request_data: Any, **kwargs: Any
    ) -> Any:
        request_id = request.scope.get("state", {}).get("request_id", "-")
        return await self._admitted(
            request_id,
            super().execute_operation(
                request=request,
                request_adapter=request_adapter,
                request_data=request_data,
                **kwargs,
            ),
        )

    async def _admitted(self, request_id: str, operation: Coroutine[Any, Any, Any]) -> Any:
        """Run the operation once a slot is free (the request body has been read by then: a
        slow client never holds a slot); OVERLOADED if none frees up in time."""
        try:
            async with asyncio.timeout(self._admission_timeout):
                await self._slots.acquire()
        except TimeoutError:
            operation.close()
            return ExecutionResult(data=None, errors=[overloaded(request_id)])
        except BaseException:  # cancelled while waiting (the client went away)
            operation.close()
            raise
        try:
            return await operation
        finally:
            self._slots.release()

    def decode_json(self, data: str | bytes) -> object:
        try:
            return super().decode_json(data)
        except UnicodeDecodeError as error:
            # Strawberry answers JSONDecodeError with 400; bytes that are not UTF-8 are the
            # same kind of client mistake (json.loads raises UnicodeDecodeError for them).
            raise json.JSONDecodeError("request body is not UTF-8", "", error.start) from None

    def encode_json(self, data: object) -> bytes:
        """Responses are encoded with orjson: 6-8 % fewer instructions per read page than the
        standard library's encoder (callgrind). Text leaves as UTF-8, not as \\u escapes.
        What orjson refuses (an integer beyond 64 bits inside a stored JSON value) is encoded
        by the standard library instead, to the same JSON."""
        try:
            return orjson.dumps(data)
        except orjson.JSONEncodeError:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

    async def get_context(self, request: Any, response: Any) -> Context:
        return self._context(
            request.headers.get("authorization"),
            request.scope.get("state", {}).get("request_id", "-"),
        )

    def _context(self, authorization: str | None, request_id: str) -> Context:
        principal, auth_error = None, None
        try:
            principal = self.tokens.authenticate(authorization)
        except AuthError as error:
            auth_error = error
        return Context(
            db=self.db, principal=principal, auth_error=auth_error, request_id=request_id
        )

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        return self._processed(result, request.scope.get("state", {}).get("request_id", "-"))

    def _processed(self, result: ExecutionResult, request_id: str) -> GraphQLHTTPResponse:
        """Every error leaves with a code: one that escaped mask_internal_errors (raised while
        the operation's extensions closed, such as the commit of the read transaction on a
        dropped connection) is classified and masked here."""
        if result.errors:
            result.errors = [
                error if (error.extensions or {}).get("code") else mask_escaped(error, request_id)
                for error in result.errors
            ]
        return process_result(result)


class _Posted:
    """The one thing Strawberry's ``execute_single`` reads of a request adapter."""

    method = "POST"


_POSTED: Any = _Posted()
_UNUSED: Any = None  # execute_single passes its request and sub-response to nothing


def _plain_json_post(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The Authorization header ("" if none) of a request whose body is declared JSON and
    whose answer may be plain JSON (no streaming asked for in Accept); None otherwise, and
    when either header is sent twice (the view reads the first of each; left to it)."""
    content_type: bytes | None = None
    authorization: str | None = None
    for name, value in headers:
        if name == b"content-type":
            if content_type is not None:
                return None
            content_type = value
        elif name == b"authorization":
            if authorization is not None:
                return None
            authorization = value.decode("latin-1")
        elif name == b"accept" and (b"multipart/mixed" in value or b"text/event-stream" in value):
            return None
    if content_type is None or content_type.split(b";", 1)[0].strip() != b"application/json":
        return None
    return authorization or ""


async def _body_of(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` with ``body`` given back first, as one message."""
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


async def _plain_text(refused: HTTPException, scope: Scope, send: Send) -> None:
    """A refusal as Strawberry's view sends it."""
    await PlainTextResponse(refused.reason, status_code=refused.status_code)(
        scope, _nothing_more, send
    )


async def _nothing_more() -> Message:
    return {"type": "http.disconnect"}


class RequestIdMiddleware:
    """Every request gets an id (the caller's X-Request-Id, else a new one), echoed back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = given[:64] if given.isprintable() and given else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_id)


def freeze_startup_heap() -> None:
    """Keep what exists once the service has started (modules, the schema, SQLAlchemy's
    metadata and compiled statements: a few hundred thousand objects) out of the cyclic
    garbage collector's full collections, which otherwise walked all of it every few seconds
    under load: p99 at 16 clients went from 124-140 to 79-84 ms per timeline page and from
    93-104 to 48-50 ms per persistMessage, at the same throughput. The startup garbage is
    collected first; objects created later are collected as usual."""
    gc.collect()
    gc.freeze()


def create_app(
    db: Database,
    *,
    jwt_secret: str,
    graphiql: bool = True,
    introspection: bool = True,
    dispose_on_shutdown: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_concurrent_operations: int | None = None,
    admission_timeout_seconds: float | None = None,
) -> Starlette:
    """``max_concurrent_operations`` defaults to the pool size and
    ``admission_timeout_seconds`` to the pool timeout."""
    graphql = GraphQLApp(
        db,
        jwt_secret,
        graphiql=graphiql,
        introspection=introspection,
        max_concurrent_operations=max_concurrent_operations,
        admission_timeout_seconds=admission_timeout_seconds,
    )

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        try:
            await asyncio.wait_for(db.ping(), timeout=2)
        except Exception:  # any failure means: not ready
            log.warning("readiness check failed", exc_info=True)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        freeze_startup_heap()
        yield
        if dispose_on_shutdown:
            await db.dispose()

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
