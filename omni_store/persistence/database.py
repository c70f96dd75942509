"""Engine, units of work and the tenant binding.

A :class:`UnitOfWork` is one transaction bound to one tenant: it sets ``app.tenant_id`` for
that transaction only (``set_config(..., true)``: a pooled connection never carries a tenant
into the next one), and it is the only way to get repositories. It commits in exactly one
place, when its ``async with`` block ends without an exception.

SQLAlchemy builds the statements (Core, compiled once each for asyncpg) and keeps the pool;
a unit of work runs them on the pooled asyncpg connection itself (:meth:`UnitOfWork.execute`).
Through SQLAlchemy's ``AsyncConnection`` (a greenlet per call, execution contexts, result
objects), a transaction of one statement took about 640,000 instructions of this process;
this way, about 245,000. The statements, their parameters and the rows they return are the
same.

The tenant rides on the transaction's ``BEGIN``, sent with the unit of work's first statement
as one simple query (``BEGIN; SELECT set_config(...)``): no round trip of its own, and a unit
of work that runs nothing sends nothing.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from sqlalchemy import Executable, event, text
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.exc import DisconnectionError, MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from omni_store.persistence.errors import ConnectionLost
from omni_store.persistence.repositories import (
    AttachmentRepository,
    ChannelAccountRepository,
    ContactRepository,
    ConversationRepository,
    MessageRepository,
)
from omni_store.persistence.tenancy import TenantId


def begin_with_tenant(tenant: TenantId, *, generic_plans: bool = False) -> str:
    """The simple query that begins a unit of work of ``tenant``; with ``generic_plans``, its
    prepared statements run their generic plan, never a parallel one (see
    :meth:`Database.transaction`).

    The tenant is a :class:`uuid.UUID`, whose text form is hex digits and dashes only: it is
    written into the query as a literal, quoted, and nothing else is."""
    if not isinstance(tenant, uuid.UUID):
        raise TypeError(f"a tenant is a UUID, not {type(tenant).__name__}")
    plans = (
        " SET LOCAL plan_cache_mode = force_generic_plan;"
        " SET LOCAL max_parallel_workers_per_gather = 0;"
        if generic_plans
        else ""
    )
    return f"BEGIN; SELECT set_config('app.tenant_id', '{tenant}', true);{plans}"


def async_url(url: str) -> str:
    """``postgresql://…`` (as libpq and most tools write it) → SQLAlchemy's asyncpg URL."""
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        parts = parts._replace(scheme="postgresql+asyncpg")
    elif parts.scheme != "postgresql+asyncpg":
        raise ValueError(f"not a PostgreSQL URL: scheme {parts.scheme!r}")
    return urlunsplit(parts)


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    pool_timeout_seconds: float = 5,
    statement_timeout_ms: int = 5000,
    application_name: str = "omni-store",
    connect_timeout_seconds: float = 5,
) -> AsyncEngine:
    connect_args: dict[str, Any] = {
        # asyncpg waits 60 s by default for a server that does not answer.
        "timeout": connect_timeout_seconds,
        "server_settings": {
            "application_name": application_name,
            "statement_timeout": str(statement_timeout_ms),
            # A client that stalls mid-transaction must not hold locks for long.
            "idle_in_transaction_session_timeout": str(max(statement_timeout_ms * 2, 10000)),
        },
    }
    if statement_timeout_ms > 0:
        # statement_timeout is the server's to enforce; a server that cannot answer at all
        # (frozen, partitioned away) would leave the statement waiting for ever without this.
        connect_args["command_timeout"] = statement_timeout_ms / 1000 + connect_timeout_seconds
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout_seconds,
        # No ping per checkout (a round trip on the hottest path): connections the server
        # closed are discarded at checkout below, and a unit of work that could not end its
        # transaction invalidates its connection, so the service recovers by itself.
        pool_pre_ping=False,
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine, "checkout", _discard_closed_connection)
    return engine


def _discard_closed_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pooled connection whose server went away (restart, pg_terminate_backend, idle
    timeout) is replaced at checkout instead of failing the request that drew it. It costs no
    round trip: asyncpg already knows the socket was closed."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("connection closed by the server")


class Rows(list[Any]):
    """The rows a statement returned (asyncpg records: by position, slice or column name),
    with the few ways of taking them that the repositories use."""

    def one(self) -> Any:
        if len(self) != 1:
            raise (MultipleResultsFound if self else NoResultFound)(
                f"one row expected, {len(self)} returned"
            )
        return self[0]

    def one_or_none(self) -> Any:
        if len(self) > 1:
            raise MultipleResultsFound(f"at most one row expected, {len(self)} returned")
        return self[0] if self else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]


_DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]
_REQUIRED = object()


class _Compiled:
    """A statement compiled for asyncpg: its SQL and, in ``$n`` order, each parameter's name,
    default (a value the statement carries) and SQLAlchemy bind processor, if its type has
    one."""

    __slots__ = ("__weakref__", "parameters", "sql")

    def __init__(self, statement: Executable) -> None:
        compiled = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
        self.sql = str(compiled)
        parameters = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            impl = bind.type.dialect_impl(_DIALECT)
            default = _REQUIRED if bind.required else bind.effective_value
            parameters.append((name, default, impl.bind_processor(_DIALECT)))
        self.parameters = tuple(parameters)
        for column in getattr(statement, "selected_columns", None) or ():
            # asyncpg's codecs (and SQLAlchemy's, installed on each connection) give every type
            # the service selects its Python value; a type that needs SQLAlchemy's result
            # processing would be read wrong here.
            impl = column.type.dialect_impl(_DIALECT)
            try:
                needed = impl.result_processor(_DIALECT, None) is not None
            except Exception:  # it depends on the type the server returns: it has one
                needed = True
            if needed:
                raise TypeError(f"{column.type!r} needs result processing: not supported")

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        out = []
        for name, default, processor in self.parameters:
            value = values.get(name, default)
            if value is _REQUIRED:
                raise KeyError(f"no value for the parameter {name!r}")
            out.append(value if processor is None else processor(value))
        return out


# Statements are built once and compiled once: keyed by the statement object itself, held
# weakly (a statement built for one call is compiled for that call and then dropped).
_COMPILED: weakref.WeakKeyDictionary[Executable, _Compiled] = weakref.WeakKeyDictionary()


def _compiled(statement: Executable) -> _Compiled:
    found = _COMPILED.get(statement)
    if found is None:
        found = _COMPILED[statement] = _Compiled(statement)
    return found


Listener = Callable[["UnitOfWork", str, Sequence[Any], Sequence[Any] | None], None]
_LISTENERS: weakref.WeakKeyDictionary[AsyncEngine, list[Listener]] = weakref.WeakKeyDictionary()


def listen(engine: AsyncEngine, listener: Listener) -> Callable[[], None]:
    """Call ``listener(unit_of_work, sql, arguments, rows)`` after each statement a unit of
    work runs on ``engine``, for tests and the benchmark: ``rows`` is None if the statement
    failed. BEGIN, COMMIT and ROLLBACK are not statements here. Returns the function that
    removes the listener."""
    listeners = _LISTENERS.setdefault(engine, [])
    listeners.append(listener)
    return lambda: listeners.remove(listener)


class UnitOfWork:
    """One tenant-bound transaction on one pooled asyncpg connection. Statements are
    serialized: dataloaders of one request may ask concurrently, and one connection runs one
    statement at a time."""

    def __init__(
        self,
        connection: Any,
        tenant: TenantId,
        begin: str,
        listeners: Sequence[Listener],
        *,
        generic_plans: bool = False,
    ) -> None:
        self.tenant = tenant
        self.generic_plans = generic_plans  # what ``begin`` sets: for tests and the bench
        self._begin = begin
        self._connection = connection
        self._listeners = listeners
        self._lock = asyncio.Lock()
        self.begun = False

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Rows:
        compiled = _compiled(statement)
        arguments = compiled.arguments(parameters or {})
        rows = None
        async with self._lock:
            try:
                if not self.begun:
                    self.begun = True  # a BEGIN that failed is ended like any failed statement
                    await self._connection.execute(self._begin)
                rows = Rows(await self._connection.fetch(compiled.sql, *arguments))
            except Exception as error:
                raise self._lost(error) from error
            finally:
                for listener in self._listeners:
                    listener(self, compiled.sql, arguments, rows)
        return rows

    async def end(self, command: str) -> None:
        """COMMIT or ROLLBACK, if the transaction began. Not under the lock: the request's
        context ends its read transaction while holding it (:meth:`exclusive`), so that no
        dataloader's statement is cut in half."""
        if self.begun:
            try:
                await self._connection.execute(command)
            except Exception as error:
                raise self._lost(error) from error

    def _lost(self, error: Exception) -> Exception:
        """``error``, or :class:`ConnectionLost` if the connection closed under it (as
        SQLAlchemy decides a disconnect: by asking the connection) or the server ended the
        session (a FATAL error, such as 57P01 when the backend is terminated, which may be
        read before the socket is seen closed)."""
        if isinstance(error, ConnectionLost):
            return error
        if self._connection.is_closed() or getattr(error, "severity", None) == "FATAL":
            return ConnectionLost(f"{type(error).__name__}: {error}")
        return error

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """No statement runs while this is held: ending the transaction inside it cannot cut
        a statement of another task (a dataloader) in half."""
        async with self._lock:
            yield

    # Repositories are built here so that none can exist without a tenant.
    @property
    def channel_accounts(self) -> ChannelAccountRepository:
        return ChannelAccountRepository(self)

    @property
    def contacts(self) -> ContactRepository:
        return ContactRepository(self)

    @property
    def conversations(self) -> ConversationRepository:
        return ConversationRepository(self)

    @property
    def messages(self) -> MessageRepository:
        return MessageRepository(self)

    @property
    def attachments(self) -> AttachmentRepository:
        return AttachmentRepository(self)


def _answered(error: BaseException) -> bool:
    """Whether the connection is idle and in a known state after ``error``: an error the
    server answered with, or one raised by the service between statements. Not a
    cancellation, a timeout or a broken connection."""
    return isinstance(error, Exception) and not isinstance(
        error,
        TimeoutError
        | OSError
        | ConnectionLost
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError,
    )


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def transaction(
        self, tenant: TenantId, *, generic_plans: bool = False
    ) -> AsyncIterator[UnitOfWork]:
        """A unit of work for ``tenant``: commits when the block ends, rolls back on error.

        ``generic_plans``: its statements run the generic plan PostgreSQL made when each was
        prepared, instead of planning them again for their values. The read pages' statements
        (``LIMIT $n``) were planned anew at every execution: PostgreSQL estimates a generic
        ``LIMIT`` at a tenth of the rows and so never found the generic plan as cheap. The
        reads are built for one index each whatever their values (tenant first, then the
        keyset), and the plan tests check their generic plans. For the same estimate the
        generic plan of a first page of a large tenant's conversations was a parallel one
        (Gather Merge: workers started for every page of 25 rows, at 10M messages): parallel
        plans are off in these transactions."""
        # Before a connection is taken: it refuses a tenant that is not a UUID.
        begin = begin_with_tenant(tenant, generic_plans=generic_plans)
        pooled = await self.engine.raw_connection()
        driver: Any = pooled.driver_connection
        listeners = _LISTENERS.get(self.engine, ())
        uow = UnitOfWork(driver, tenant, begin, listeners, generic_plans=generic_plans)
        try:
            yield uow
            await uow.end("COMMIT")
        except BaseException as error:
            if _answered(error) and not driver.is_closed():
                try:
                    await uow.end("ROLLBACK")
                except BaseException:
                    pooled.invalidate()
            else:
                # A statement may still be in flight, or the server did not answer: closing
                # the connection ends the transaction without waiting on either.
                pooled.invalidate()
            raise
        finally:
            # SQLAlchemy's pool may close the connection on its return (a pool disposed of
            # meanwhile): that awaits, in SQLAlchemy's greenlet.
            await greenlet_spawn(pooled.close)

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
