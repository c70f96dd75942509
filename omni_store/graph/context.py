"""The per-request context: who is calling, the database, the loaders and the read scope."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from strawberry.types import Info as StrawberryInfo

from omni_store.graph.auth import AuthError, Principal
from omni_store.graph.errors import PublicError
from omni_store.graph.loaders import Loaders
from omni_store.persistence.database import Database, UnitOfWork
from omni_store.persistence.tenancy import TenantId


@dataclass
class Context:
    db: Database
    principal: Principal | None
    auth_error: AuthError | None
    request_id: str
    loaders: Loaders = field(init=False)
    _stack: AsyncExitStack = field(init=False, default_factory=AsyncExitStack)
    _uow: UnitOfWork | None = field(init=False, default=None)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.loaders = Loaders.build(self.read_uow)

    def require(self, scope: str) -> TenantId:
        """The caller's tenant, if it holds ``scope``; a top-level error otherwise."""
        if self.principal is None:
            error = self.auth_error or AuthError("UNAUTHENTICATED", "Not authenticated.")
            raise PublicError(error.code, str(error))
        if scope not in self.principal.scopes:
            raise PublicError("FORBIDDEN", f"This operation needs the scope '{scope}'.")
        return self.principal.tenant

    @property
    def tenant(self) -> TenantId:
        assert self.principal is not None, "resolvers call require() before reading"
        return self.principal.tenant

    async def read_uow(self) -> UnitOfWork:
        """The request's read transaction, opened on first use and closed by close()."""
        async with self._lock:
            if self._uow is None:
                self._uow = await self._stack.enter_async_context(
                    self.db.transaction(self.tenant, generic_plans=True)
                )
            return self._uow

    async def close(self) -> None:
        """End the read transaction, once no loader is in the middle of a statement on it,
        and let go of what the loaders loaded."""
        try:
            async with self._lock:
                uow, self._uow = self._uow, None
                if uow is None:
                    await self._stack.aclose()
                else:
                    async with uow.exclusive():
                        await self._stack.aclose()
        finally:
            self.loaders.clear()


Info = StrawberryInfo[Context, None]
