"""Fuzzing harness: a tenant with some data, and its all-scopes client over HTTP."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from omni_store.persistence.database import Database
from omni_store.persistence.service import persist_message
from omni_store.persistence.tenancy import TenantId
from tests.factories import at, channel_account, inbound, outbound


@dataclass(frozen=True)
class Seeded:
    account_id: int
    conversation_id: int
    contact_id: int
    message_ids: tuple[int, ...]


@pytest.fixture
async def seeded(db: Database, tenant: TenantId) -> Seeded:
    """A channel account, one conversation, three messages (two inbound, one reply)."""
    account = await channel_account(db, tenant)
    first = await persist_message(db, tenant, inbound(account_id=account.id, when=at(0)))
    second = await persist_message(
        db, tenant, inbound(account_id=account.id, when=at(1), text="second")
    )
    reply = await persist_message(
        db,
        tenant,
        outbound(account_id=account.id, conversation_id=first.conversation_id, when=at(2)),
    )
    return Seeded(
        account_id=account.id,
        conversation_id=first.conversation_id,
        contact_id=first.contact_id or 0,
        message_ids=(first.message_id, second.message_id, reply.message_id),
    )


# The API harness's fixtures (the in-process app over HTTP, all-scopes clients).
from tests.api.conftest import app, gql, http, other_gql  # noqa: E402, F401
