"""The service's backend is killed (pg_terminate_backend) in the middle of a persist, at each
step of its transaction: nothing of it remains, the client gets a retryable error, and a retry
with the same key stores exactly one message."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.database import Database
from omni_store.persistence.tenancy import TenantId
from tests.factories import at, channel_account
from tests.reliability.harness import (
    PERSIST,
    RETRYABLE_MESSAGES,
    Event,
    app_for,
    asgi_client,
    call,
    fetch,
    gated,
    gid,
    tenant_snapshot,
    terminate,
    token,
)


@dataclass(frozen=True)
class Point:
    """Where the transaction is stopped: before a write to ``table`` (``events``), or at
    COMMIT; ``existing`` stores a first message so that the contact and the conversation
    already exist (their upserts take the UPDATE path)."""

    table: str
    events: str = "INSERT"
    at_commit: bool = False
    existing: bool = False
    outbound_by_id: bool = False


POINTS = {
    "new contact": Point("contacts"),
    "existing contact (upsert updates)": Point("contacts", "UPDATE", existing=True),
    "new conversation": Point("conversations"),
    "existing conversation (upsert updates)": Point("conversations", "UPDATE", existing=True),
    "reply into a conversation by id (touch)": Point(
        "conversations", "UPDATE", existing=True, outbound_by_id=True
    ),
    "message insert": Point("messages"),
    "attachments insert": Point("attachments"),
    "commit (deferred trigger)": Point("messages", at_commit=True),
}


@pytest.mark.parametrize("point", POINTS.values(), ids=POINTS.keys())
async def test_backend_killed_mid_persist_rolls_back_whole_and_retry_stores_once(
    point: Point, service: AsyncEngine, owner: AsyncEngine, app_name: str
) -> None:
    tenant = TenantId(uuid.uuid4())
    account = await channel_account(Database(service), tenant)
    bearer = token(tenant)
    app = app_for(service)
    first = Event(0, "first", account.id, "INBOUND", "U1", "T1", at(0))
    async with asgi_client(app) as client:
        conversation_id = None
        if point.existing:
            stored = await call(client, bearer, PERSIST, {"input": first.input()})
            assert stored.kind == "ok", stored.detail
            rows = await fetch(owner, "SELECT id FROM conversations WHERE tenant_id = :t", t=tenant)
            conversation_id = rows[0].id
        if point.outbound_by_id:
            event = Event(
                1, "victim", account.id, "OUTBOUND", "U1", None, at(5), conversation=conversation_id
            )
        else:
            event = Event(1, "victim", account.id, "INBOUND", "U1", "T1", at(5), attachments=2)
        variables = {"input": event.input()}
        before = await tenant_snapshot(owner, tenant)

        async with gated(
            owner, point.table, tenant, events=point.events, at_commit=point.at_commit
        ) as gate:
            request = asyncio.create_task(
                call(client, bearer, PERSIST, variables, request_id="killed-1")
            )
            pids = await gate.wait_for(app_name, 1)
            assert len(pids) == 1, "the persist never reached the gate"
            assert await terminate(owner, pids[0]) is True
            outcome = await request

        # The client is told to retry, with the request id and no internal text.
        assert outcome.kind == "retryable", outcome.detail
        assert outcome.body is not None
        assert outcome.body["data"] is None
        assert outcome.body["errors"] == [
            {
                "message": RETRYABLE_MESSAGES["SERVICE_UNAVAILABLE"],
                "locations": [{"line": 3, "column": 3}],
                "path": ["persistMessage"],
                "extensions": {
                    "code": "SERVICE_UNAVAILABLE",
                    "retryable": True,
                    "requestId": "killed-1",
                },
            }
        ]
        # Rolled back whole: not a row of the tenant changed (values compared, not counts).
        assert await tenant_snapshot(owner, tenant) == before

        # The retry (a fresh connection: the pool discarded the killed one) stores it once.
        retry = await call(client, bearer, PERSIST, variables)
        assert retry.kind == "ok", retry.detail
        assert retry.body is not None
        payload = retry.body["data"]["persistMessage"]
        assert payload["deduplicated"] is False
        again = await call(client, bearer, PERSIST, variables)
        assert again.body is not None
        assert again.body["data"]["persistMessage"]["deduplicated"] is True
        assert again.body["data"]["persistMessage"]["message"]["id"] == payload["message"]["id"]

    rows = await fetch(
        owner,
        "SELECT id FROM messages WHERE tenant_id = :t AND idempotency_key = 'victim'",
        t=tenant,
    )
    assert [gid("Message", r.id) for r in rows] == [payload["message"]["id"]]
    after = await tenant_snapshot(owner, tenant)
    assert len(after["messages"]) == len(before["messages"]) + 1
    assert len(after["attachments"]) == len(before["attachments"]) + event.attachments
    assert len(after["conversations"]) == 1
    assert len(after["contacts"]) == 1


async def test_idle_pooled_connections_killed_by_the_server_are_replaced_silently(
    service: AsyncEngine, owner: AsyncEngine, app_name: str
) -> None:
    """A DBA's pg_terminate_backend, an idle_session_timeout, a pooler's reaper: idle pooled
    connections closed by the server are replaced when drawn, not handed to a request."""
    tenant = TenantId(uuid.uuid4())
    account = await channel_account(Database(service), tenant)
    bearer = token(tenant)
    events = [
        Event(n, f"idle-{n}", account.id, "INBOUND", f"U{n}", f"T{n}", at(n)) for n in range(12)
    ]
    pooled: list[Any] = []

    def remember(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            pooled.append(dbapi_connection.driver_connection)

    async with asgi_client(app_for(service)) as client:
        event.listen(service.sync_engine.pool, "checkin", remember)
        try:
            warm = await asyncio.gather(
                *(call(client, bearer, PERSIST, {"input": e.input()}) for e in events[:6])
            )
        finally:
            event.remove(service.sync_engine.pool, "checkin", remember)
        assert [o.kind for o in warm] == ["ok"] * 6
        idle = await fetch(
            owner,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = :app AND state = 'idle'",
            app=app_name,
        )
        assert len(idle) == service.pool.checkedin() > 0  # type: ignore[attr-defined]
        assert [await terminate(owner, r.pid) for r in idle] == [True] * len(idle)
        for _ in range(200):  # the server closes them; wait until none is left (bounded)
            left = await fetch(
                owner,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = :app",
                app=app_name,
            )
            if left[0].n == 0:
                break
            await asyncio.sleep(0.025)
        assert left[0].n == 0
        # Over TCP the client learns of each close a moment after the server forgot the
        # backend (asyncpg first reads the server's FATAL message, then the EOF). "Killed long
        # ago" is the scenario: wait (bounded) until the client has seen every close.
        for _ in range(200):
            if all(c.is_closed() for c in pooled):
                break
            await asyncio.sleep(0.025)
        assert all(c.is_closed() for c in pooled)

        after = await asyncio.gather(
            *(call(client, bearer, PERSIST, {"input": e.input()}) for e in events[6:])
        )
        assert [(o.kind, o.detail) for o in after] == [("ok", "")] * 6
