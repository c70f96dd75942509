"""Back-pressure: more concurrent requests than the pool holds get a retryable OVERLOADED
after the pool timeout (from OMNI_STORE_POOL_TIMEOUT_SECONDS), not a place in an unbounded
queue; statement and idle-in-transaction timeouts are set on every service connection; a slow
client never holds a transaction open."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.cli import service_engine
from omni_store.config import Settings
from omni_store.persistence.database import Database
from omni_store.persistence.tenancy import TenantId
from tests.factories import at, channel_account
from tests.reliability.harness import (
    CONVERSATIONS,
    PERSIST,
    RETRYABLE_MESSAGES,
    Event,
    app_for,
    asgi_client,
    call,
    fetch,
    gated,
    tenant_snapshot,
    token,
)

# Both connections held, then this many more requests at once.
EXTRA = 8


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("OMNI_STORE_POOL_SIZE", "2")
    monkeypatch.setenv("OMNI_STORE_POOL_TIMEOUT_SECONDS", "0.5")
    return Settings.from_env()


@pytest.fixture
async def small_pool(settings: Settings, service_url: str) -> AsyncIterator[AsyncEngine]:
    engine = service_engine(service_url, settings)
    yield engine
    await engine.dispose()


async def _show(engine: AsyncEngine, name: str) -> str:
    async with engine.connect() as connection:
        return str((await connection.execute(text(f"SHOW {name}"))).scalar_one())


@pytest.mark.parametrize(
    "admission",
    [None, 100],
    ids=["waiting for admission (as many operations as connections)", "waiting for the pool"],
)
async def test_requests_beyond_the_pool_get_overloaded_after_the_pool_timeout(
    small_pool: AsyncEngine, owner: AsyncEngine, settings: Settings, admission: int | None
) -> None:
    """By default the app admits as many operations as the pool has connections and the rest
    wait for admission; with more admitted (or a request that holds two connections) they
    wait for the pool. Either way: OVERLOADED after the pool timeout."""
    assert settings.pool_size == 2
    assert settings.pool_timeout_seconds == 0.5
    tenant = TenantId(uuid.uuid4())
    account = await channel_account(Database(small_pool), tenant)
    bearer = token(tenant)
    held = [Event(n, f"held-{n}", account.id, "INBOUND", f"U{n}", f"T{n}", at(n)) for n in (0, 1)]
    extra = [
        Event(n, f"extra-{n}", account.id, "INBOUND", f"U{n}", f"T{n}", at(n))
        for n in range(2, 2 + EXTRA // 2)
    ]
    app = app_for(small_pool, max_concurrent_operations=admission)
    async with asgi_client(app) as client, gated(owner, "messages", tenant) as gate:
        holders = [
            asyncio.create_task(call(client, bearer, PERSIST, {"input": e.input()})) for e in held
        ]
        assert len(await gate.wait_for("omni-store", 2)) == 2
        assert small_pool.pool.checkedout() == 2  # type: ignore[attr-defined]

        # Half writes, half reads: all wait, none gets its turn in time.
        waiting = [call(client, bearer, PERSIST, {"input": e.input()}) for e in extra] + [
            call(client, bearer, CONVERSATIONS, {"first": 5}) for _ in range(EXTRA - len(extra))
        ]
        rejected = await asyncio.gather(*waiting)
        assert [(o.kind, o.code) for o in rejected] == [("retryable", "OVERLOADED")] * EXTRA
        for outcome in rejected:
            assert outcome.body is not None
            assert outcome.body["data"] is None
            [error] = outcome.body["errors"]
            assert error["message"] == RETRYABLE_MESSAGES["OVERLOADED"]
            assert error["extensions"]["retryable"] is True
            assert error["extensions"]["requestId"]
        # The holders are still waiting: the rejected requests took nothing from them.
        assert not any(h.done() for h in holders)

        await gate.open()
        done = await asyncio.gather(*holders)
        assert [o.kind for o in done] == ["ok", "ok"]
        # Capacity is back: the same requests now succeed.
        again = await call(client, bearer, PERSIST, {"input": extra[0].input()})
        assert again.kind == "ok", again.detail

    stored = await fetch(
        owner, "SELECT idempotency_key FROM messages WHERE tenant_id = :t ORDER BY 1", t=tenant
    )
    assert [r.idempotency_key for r in stored] == ["extra-2", "held-0", "held-1"]


async def test_every_service_connection_has_statement_and_idle_transaction_timeouts(
    small_pool: AsyncEngine, service_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await _show(small_pool, "statement_timeout") == "5s"
    assert await _show(small_pool, "idle_in_transaction_session_timeout") == "10s"
    assert await _show(small_pool, "application_name") == "omni-store"

    monkeypatch.setenv("OMNI_STORE_STATEMENT_TIMEOUT_MS", "7500")
    engine = service_engine(service_url, Settings.from_env())
    try:
        assert await _show(engine, "statement_timeout") == "7500ms"
        assert await _show(engine, "idle_in_transaction_session_timeout") == "15s"
    finally:
        await engine.dispose()


async def test_a_statement_over_the_timeout_is_cancelled_and_rolled_back(
    service_url: str, owner: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNI_STORE_STATEMENT_TIMEOUT_MS", "300")
    engine = service_engine(service_url, Settings.from_env())
    try:
        tenant = TenantId(uuid.uuid4())
        account = await channel_account(Database(engine), tenant)
        bearer = token(tenant)
        event = Event(0, "stuck", account.id, "INBOUND", "U1", "T1", at(0))
        before = await tenant_snapshot(owner, tenant)
        async with asgi_client(app_for(engine)) as client:
            async with gated(owner, "conversations", tenant):  # never opened
                stuck = await call(client, bearer, PERSIST, {"input": event.input()})
            assert (stuck.kind, stuck.code) == ("retryable", "OVERLOADED")
            assert await tenant_snapshot(owner, tenant) == before
            retry = await call(client, bearer, PERSIST, {"input": event.input()})
            assert retry.kind == "ok", retry.detail
    finally:
        await engine.dispose()


@asynccontextmanager
async def serving(app: object) -> AsyncIterator[int]:
    """uvicorn on 127.0.0.1 (a free port) in this event loop; yields the port."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def _in_transaction(owner: AsyncEngine, app_name: str) -> list[str]:
    rows = await fetch(
        owner,
        "SELECT state FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = :app AND (state LIKE 'idle in transaction%' OR state = 'active')",
        app=app_name,
    )
    return [r.state for r in rows]


async def test_a_slow_client_never_holds_a_connection_or_transaction(
    service: AsyncEngine, owner: AsyncEngine, app_name: str
) -> None:
    tenant = TenantId(uuid.uuid4())
    account = await channel_account(Database(service), tenant)
    event = Event(0, "slow-client", account.id, "INBOUND", "U1", "T1", at(0))
    body = json.dumps({"query": PERSIST, "variables": {"input": event.input()}}).encode()
    head = (
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token(tenant)}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    async with serving(app_for(service)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            # Headers and half the body, then nothing for a while: no connection is drawn
            # from the pool and no transaction is opened on the client's behalf.
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            for _ in range(10):
                await asyncio.sleep(0.05)
                assert service.pool.checkedout() == 0  # type: ignore[attr-defined]
                assert await _in_transaction(owner, app_name) == []
            # The rest; then the client does not read its response: the transaction is
            # over before the response is written, the connection back in the pool.
            writer.write(body[len(body) // 2 :])
            await writer.drain()
            for _ in range(400):
                stored = await fetch(
                    owner,
                    "SELECT id FROM messages WHERE tenant_id = :t AND idempotency_key = :k",
                    t=tenant,
                    k="slow-client",
                )
                if stored:
                    break
                await asyncio.sleep(0.025)
            assert len(stored) == 1
            for _ in range(400):
                if service.pool.checkedout() == 0:  # type: ignore[attr-defined]
                    break
                await asyncio.sleep(0.025)
            assert service.pool.checkedout() == 0  # type: ignore[attr-defined]
            assert await _in_transaction(owner, app_name) == []
            status = await asyncio.wait_for(reader.readline(), 10)
            assert status.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()
            await writer.wait_closed()


async def test_an_operation_cancelled_while_waiting_for_a_slot_is_closed_unrun(
    service: AsyncEngine,
) -> None:
    """A request whose client goes away while it waits for admission: its operation never
    starts, and is closed (not left for the garbage collector to warn about)."""
    view = next(r.app for r in app_for(service, max_concurrent_operations=1).routes)
    ran: list[str] = []

    async def operation() -> None:
        ran.append("ran")

    await view._slots.acquire()  # the one slot, taken
    pending = operation()
    waiting = asyncio.create_task(view._admitted("cancelled-1", pending))
    await asyncio.sleep(0.05)
    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pending.cr_frame is None  # closed: it can never run
    assert ran == []
    view._slots.release()
    assert await view._admitted("after", operation()) is None
    assert ran == ["ran"]
