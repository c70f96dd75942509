"""Schema extensions of the service."""

from __future__ import annotations

from collections.abc import AsyncIterator

from strawberry.extensions import SchemaExtension

from omni_store.graph.context import Context


class CloseReadScope(SchemaExtension):
    """Ends the request's read transaction (if one was opened) when the operation is done."""

    async def on_operation(self) -> AsyncIterator[None]:  # type: ignore[override]
        try:
            yield
        finally:
            context = self.execution_context.context
            if isinstance(context, Context):
                await context.close()
