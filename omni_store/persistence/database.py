"""Engine, units of work and the tenant binding.

A :class:`UnitOfWork` is one transaction bound to one tenant: it sets ``app.tenant_id`` for
that transaction only (``set_config(..., true)``: a pooled connection never carries a tenant
into the next one), and it is the only way to get repositories. It commits in exactly one
place, when its ``async with`` block ends without an exception.

On the service's own engines (:func:`create_engine`) the tenant rides on the transaction's
BEGIN (:class:`TenantBoundConnection`): one round trip instead of two for every unit of work.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from sqlalchemy import Executable, Result, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from omni_store.persistence.repositories import (
    AttachmentRepository,
    ChannelAccountRepository,
    ContactRepository,
    ConversationRepository,
    MessageRepository,
)
from omni_store.persistence.tenancy import TenantId

_SET_TENANT = text("SELECT set_config('app.tenant_id', :tenant, true)")


class TenantBoundConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection whose next transaction binds a tenant as it begins.

    ``BEGIN`` and ``set_config('app.tenant_id', …, true)`` go to the server as one simple
    query, so a unit of work costs one round trip less (the set_config statement cost each
    request about as much CPU as any other statement). SQLAlchemy begins a transaction lazily,
    at the first statement of a unit of work, through asyncpg's ``Transaction.start()``, which
    sends ``BEGIN…;`` through :meth:`execute`; that is where the tenant is added.

    The tenant is a :class:`uuid.UUID`, whose text form is hex digits and dashes only: it is
    written into the query as a literal, quoted, and nothing else is. Should the hook ever not
    fire (another asyncpg), no tenant is set and row-level security shows nothing: it fails
    closed, and the tenant-isolation tests fail.
    """

    __slots__ = ("_tenant_on_begin",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tenant_on_begin: str | None = None

    def bind_tenant_on_begin(self, tenant: TenantId | None) -> None:
        """The tenant of the next BEGIN sent on this connection (None: none)."""
        if tenant is not None and not isinstance(tenant, uuid.UUID):
            raise TypeError(f"a tenant is a UUID, not {type(tenant).__name__}")
        self._tenant_on_begin = None if tenant is None else str(tenant)

    async def execute(
        self,
        query: str,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (asyncpg's own signature)
    ) -> str:
        tenant = self._tenant_on_begin
        if tenant is not None and not args and query.startswith("BEGIN"):
            self._tenant_on_begin = None
            query = f"{query} SELECT set_config('app.tenant_id', '{tenant}', true);"
        result: str = await super().execute(query, *args, timeout=timeout)
        return result


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
        "connection_class": TenantBoundConnection,
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
        # closed are discarded at checkout below, and any other disconnect invalidates the
        # whole pool on its first error (SQLAlchemy), so the service recovers by itself.
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


class UnitOfWork:
    """One tenant-bound transaction. Statements are serialized: dataloaders of one request may
    ask concurrently, and one connection runs one statement at a time."""

    def __init__(self, connection: AsyncConnection, tenant: TenantId) -> None:
        self.tenant = tenant
        self._connection = connection
        self._lock = asyncio.Lock()

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | list[Any] | None = None
    ) -> Result[*tuple[Any, ...]]:
        async with self._lock:
            return await self._connection.execute(statement, parameters)

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


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def transaction(self, tenant: TenantId) -> AsyncIterator[UnitOfWork]:
        """A unit of work for ``tenant``: commits when the block ends, rolls back on error."""
        async with self.engine.begin() as connection:
            driver: Any = (await connection.get_raw_connection()).driver_connection
            # Not isinstance(): asyncpg's metaclass answers True for any of its connections.
            if TenantBoundConnection not in type(driver).__mro__:  # an engine made elsewhere
                await connection.execute(_SET_TENANT, {"tenant": str(tenant)})
                yield UnitOfWork(connection, tenant)
                return
            # Nothing has been sent yet: SQLAlchemy's BEGIN goes out with the first statement.
            driver.bind_tenant_on_begin(tenant)
            try:
                yield UnitOfWork(connection, tenant)
            finally:
                # A unit of work that ran no statement never began: its tenant must not
                # stay on the connection for the next one.
                driver.bind_tenant_on_begin(None)

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
