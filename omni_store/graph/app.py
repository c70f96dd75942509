"""The ASGI application: GraphQL (and GraphiQL) at /graphql, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
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

    async def execute_operation(  # type: ignore[override]
        self, request: Any, request_adapter: Any, request_data: Any, **kwargs: Any
    ) -> Any:
        """Run the operation once a slot is free (the request body has been read by then: a
        slow client never holds a slot); OVERLOADED if none frees up in time."""
        try:
            async with asyncio.timeout(self._admission_timeout):
                await self._slots.acquire()
        except TimeoutError:
            request_id = request.scope.get("state", {}).get("request_id", "-")
            return ExecutionResult(data=None, errors=[overloaded(request_id)])
        try:
            return await super().execute_operation(
                request=request,
                request_adapter=request_adapter,
                request_data=request_data,
                **kwargs,
            )
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
        principal, auth_error = None, None
        try:
            principal = self.tokens.authenticate(request.headers.get("authorization"))
        except AuthError as error:
            auth_error = error
        return Context(
            db=self.db,
            principal=principal,
            auth_error=auth_error,
            request_id=request.scope.get("state", {}).get("request_id", "-"),
        )

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        """Every error leaves with a code: one that escaped mask_internal_errors (raised while
        the operation's extensions closed, such as the commit of the read transaction on a
        dropped connection) is classified and masked here."""
        if result.errors:
            request_id = request.scope.get("state", {}).get("request_id", "-")
            result.errors = [
                error if (error.extensions or {}).get("code") else mask_escaped(error, request_id)
                for error in result.errors
            ]
        return await super().process_result(request, result)


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
