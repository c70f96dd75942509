from __future__ import annotations

from omni_store.persistence.database import Database
from omni_store.persistence.service import persist_message
from omni_store.persistence.tenancy import TenantId
from tests.factories import channel_account, inbound


async def test_persist_then_read_timeline(db: Database, tenant: TenantId) -> None:
    account = await channel_account(db, tenant)
    result = await persist_message(db, tenant, inbound(account_id=account.id))
    async with db.transaction(tenant) as uow:
        from omni_store.persistence.cursors import PageRequest

        page = await uow.messages.timeline(result.conversation_id, PageRequest(first=10))
    assert [m.id for m in page.items] == [result.message_id]
