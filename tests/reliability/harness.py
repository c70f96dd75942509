"""What the reliability tests share: the service as it is deployed (its own engine, the app
role, the default pool), an HTTP client that records every outcome, event builders, fault
injection on the database (triggers that stall or gate a transaction), latency summaries.

Bounded forms run by default (CI); ``OMNI_STORE_FULL=1`` selects the full forms.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.graph.app import create_app
from omni_store.graph.auth import ALL_SCOPES, mint_token
from omni_store.graph.ids import parse_global_id, to_global_id
from omni_store.persistence.database import Database, create_engine

FULL = os.environ.get("OMNI_STORE_FULL", "").strip().lower() in ("1", "true", "yes")
SECRET = "reliability-secret-not-for-production-0123456789"
BASE = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
# The codes a client may retry on, and their fixed public messages (no internal text).
RETRYABLE_MESSAGES = {
    "SERVICE_UNAVAILABLE": "The database is unavailable right now; retry the request.",
    "OVERLOADED": "The service is overloaded right now; retry the request later.",
}


def scale(bounded: int, full: int) -> int:
    return full if FULL else bounded


def token(tenant: uuid.UUID) -> str:
    return mint_token(SECRET, tenant=tenant, scopes=list(ALL_SCOPES))


def service_engine(url: str, *, name: str = "omni-store", **overrides: Any) -> AsyncEngine:
    """An engine configured as the service configures its own (defaults of Settings)."""
    options: dict[str, Any] = {
        "pool_size": 10,
        "pool_timeout_seconds": 5,
        "statement_timeout_ms": 5000,
        "connect_timeout_seconds": 5,
    }
    options.update(overrides)
    return create_engine(url, application_name=name, **options)


def app_for(engine: AsyncEngine, **options: Any) -> Any:
    """The service's ASGI app on ``engine``: one per simulated process (its admission limit
    is per app)."""
    return create_app(Database(engine), jwt_secret=SECRET, dispose_on_shutdown=False, **options)


@asynccontextmanager
async def asgi_client(app: Any, *, http_timeout: float = 60) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://omni.test", timeout=http_timeout
    ) as client:
        yield client


def gid(type_name: str, row_id: int) -> str:
    return to_global_id(type_name, row_id)


def row_id(global_id: str) -> int:
    parsed = parse_global_id(global_id)
    assert parsed is not None, global_id
    return parsed[1]


# --- GraphQL operations -----------------------------------------------------------------------

PERSIST = """
mutation Persist($input: PersistMessageInput!) {
  persistMessage(input: $input) {
    deduplicated
    message { id channelTimestamp }
    conversation { id lastMessageAt }
    contact { id }
    userErrors { field code message }
  }
}"""

CONVERSATIONS = """
query List($account: ID, $first: Int, $after: String) {
  conversations(channelAccountId: $account, first: $first, after: $after) {
    edges { cursor node { id lastMessageAt } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}"""

TIMELINE = """
query Timeline($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  conversation(id: $id) {
    messages(first: $first, after: $after, last: $last, before: $before) {
      edges { cursor node { id channelTimestamp } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}"""

UPSERT_CONVERSATION = """
mutation Open($input: UpsertConversationInput!) {
  upsertConversation(input: $input) {
    conversation { id }
    userErrors { field code message }
  }
}"""


# --- outcomes ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one HTTP request came back with, classified."""

    kind: str  # "ok", "retryable", "error" (anything else: a defect), "timeout" (no answer)
    started: float
    finished: float
    body: dict[str, Any] | None = None
    code: str | None = None
    detail: str = ""

    @property
    def latency(self) -> float:
        return self.finished - self.started


def classify(response: httpx.Response, field_name: str | None) -> tuple[str, str | None, str]:
    """(kind, error code, detail) of a GraphQL response."""
    if response.status_code != 200:
        return "error", None, f"HTTP {response.status_code}: {response.text[:300]}"
    body = response.json()
    errors = body.get("errors") or []
    if errors:
        codes = {(e.get("extensions") or {}).get("code") for e in errors}
        retryable = all(
            (e.get("extensions") or {}).get("retryable") is True
            and e.get("message") == RETRYABLE_MESSAGES.get((e.get("extensions") or {}).get("code"))
            and (e.get("extensions") or {}).get("requestId")
            for e in errors
        )
        code = sorted(c or "" for c in codes)[0]
        if retryable:
            return "retryable", code, ""
        return "error", code, str(errors)[:500]
    if field_name is not None:
        payload = (body.get("data") or {}).get(field_name)
        if isinstance(payload, dict) and payload.get("userErrors"):
            return "error", "USER_ERRORS", str(payload["userErrors"])[:500]
    return "ok", None, ""


async def call(
    client: httpx.AsyncClient,
    bearer: str,
    query: str,
    variables: dict[str, Any],
    *,
    field_name: str | None = None,
    bound: float = 60,
    request_id: str | None = None,
) -> Outcome:
    """One GraphQL request; never raises: a transport failure or no answer within ``bound``
    seconds is an outcome too."""
    headers = {"Authorization": f"Bearer {bearer}"}
    if request_id:
        headers["X-Request-Id"] = request_id
    started = time.monotonic()
    try:
        async with asyncio.timeout(bound):
            response = await client.post(
                "/graphql", json={"query": query, "variables": variables}, headers=headers
            )
    except TimeoutError:
        return Outcome("timeout", started, time.monotonic(), detail=f"no answer in {bound} s")
    except httpx.HTTPError as error:
        return Outcome("error", started, time.monotonic(), detail=repr(error))
    kind, code, detail = classify(response, field_name)
    body = response.json() if response.status_code == 200 else None
    return Outcome(kind, started, time.monotonic(), body, code, detail)


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One channel event: every delivery of it sends the same input (the timestamp may be
    written in another offset: the same instant is the same event)."""

    index: int
    key: str
    account: int
    direction: str
    user: str
    thread: str | None
    at: datetime
    conversation: int | None = None  # outbound replies into a known conversation
    attachments: int = 0

    def group(self, window_seconds: int = 86400) -> tuple[int, str]:
        """The conversation it belongs to, computed independently of the service."""
        if self.thread is not None:
            return self.account, f"thread:{self.thread}"
        epoch = int(self.at.timestamp())
        return self.account, f"user:{self.user}:{epoch - epoch % window_seconds}"

    def input(self, delivery: int = 0) -> dict[str, Any]:
        offset = timezone_for(delivery)
        value: dict[str, Any] = {
            "channelAccountId": gid("ChannelAccount", self.account),
            "direction": self.direction,
            "channelTimestamp": self.at.astimezone(offset).isoformat(),
            "content": {"type": "TEXT", "text": f"event {self.index} สวัสดี"},
            "clientMutationId": f"{self.key}/{delivery}",
        }
        if self.direction == "INBOUND":
            value["externalMessageId"] = self.key
            value["contact"] = {"externalUserId": self.user, "displayName": f"User {self.user}"}
        else:
            value["idempotencyKey"] = self.key
            value["sender"] = {"type": "AGENT", "displayName": "Agent Nok", "externalId": "a-7"}
            if self.conversation is None:
                value["contact"] = {"externalUserId": self.user}
        if self.conversation is not None:
            value["conversationId"] = gid("Conversation", self.conversation)
        elif self.thread is not None:
            value["externalThreadId"] = self.thread
        if self.attachments:
            value["attachments"] = [
                {
                    "kind": "IMAGE",
                    "url": f"https://cdn.example.com/{self.key}/{n}.jpg",
                    "externalId": f"{self.key}-att-{n}",
                }
                for n in range(self.attachments)
            ]
        return value


def timezone_for(delivery: int) -> Any:
    from datetime import timezone

    return [UTC, timezone(timedelta(hours=7)), timezone(timedelta(hours=-5, minutes=-30))][
        delivery % 3
    ]


def mixed_events(
    count: int,
    accounts: Sequence[int],
    *,
    prefix: str,
    known_conversations: Sequence[tuple[int, int]] = (),
    seed: int = 7,
) -> list[Event]:
    """Inbound and outbound events over a few accounts, users and threads: several events
    share each thread and each contact; some have no thread (the fallback rule groups them by
    user and day); some outbound replies name a known conversation (account, id)."""
    import random

    rng = random.Random(seed)
    users = max(4, count // 8)
    threads = max(3, count // 12)
    events = []
    for index in range(count):
        account = accounts[index % len(accounts)]
        user_n = rng.randrange(users)
        user = f"U{user_n}"
        roll = rng.random()
        at = BASE + timedelta(seconds=rng.randrange(3 * 86400))
        thread: str | None = f"T{user_n % threads}-{user_n}"
        conversation = None
        direction = "INBOUND"
        if roll < 0.25:
            thread = None  # fallback rule: user and day
        elif roll < 0.45:
            direction = "OUTBOUND"  # reply on the thread, contact named
        elif roll < 0.55 and known_conversations:
            direction = "OUTBOUND"
            account, conversation = known_conversations[index % len(known_conversations)]
            thread = None
        elif roll < 0.65:
            thread = f"G{user_n % 3}"  # a group thread: many users, one conversation
        events.append(
            Event(
                index=index,
                key=f"{prefix}-{index}",
                account=account,
                direction=direction,
                user=user,
                thread=thread,
                at=at,
                conversation=conversation,
                attachments=(index % 7 == 0) + (index % 14 == 0),
            )
        )
    return events


# --- database views (as the owner: counts across the tenant, bypassing row-level security) ----


async def tenant_snapshot(
    owner: AsyncEngine, tenant: uuid.UUID
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tenant, table by table, in id order."""
    tables = ("channel_accounts", "contacts", "conversations", "messages", "attachments")
    async with owner.connect() as connection:
        return {
            table: [
                tuple(row)
                for row in await connection.execute(
                    text(f"SELECT * FROM {table} WHERE tenant_id = :t ORDER BY id"),
                    {"t": tenant},
                )
            ]
            for table in tables
        }


async def fetch(owner: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with owner.connect() as connection:
        return list(await connection.execute(text(sql), params))


async def execute(owner: AsyncEngine, *statements: str) -> None:
    async with owner.begin() as connection:
        for statement in statements:
            await connection.execute(text(statement))


@dataclass
class StoreCheck:
    """The store's invariants for a set of events of one tenant, as exact counts."""

    messages: int
    keys_stored_twice: list[str]
    missing: list[str]
    ids_by_key: dict[str, int]
    conversations: int
    contacts: int
    attachments: int
    group_to_conversation: dict[tuple[int, str], set[int]] = field(default_factory=dict)
    stale_last_message_at: list[int] = field(default_factory=list)
    expected_last_message_at_mismatch: list[tuple[int, str]] = field(default_factory=list)


async def check_store(
    owner: AsyncEngine, tenant: uuid.UUID, events: Iterable[Event], *, seeded_at: datetime | None
) -> StoreCheck:
    events = list(events)
    rows = await fetch(
        owner,
        "SELECT idempotency_key, id, conversation_id, channel_timestamp FROM messages "
        "WHERE tenant_id = :t",
        t=tenant,
    )
    by_key: dict[str, list[Any]] = {}
    for row in rows:
        by_key.setdefault(row.idempotency_key, []).append(row)
    keys = {e.key for e in events}
    conversation_of: dict[str, int] = {k: v[0].conversation_id for k, v in by_key.items()}
    groups: dict[tuple[int, str], set[int]] = {}
    latest: dict[tuple[int, str], datetime] = {}
    for e in events:
        if e.key in conversation_of:
            group = e.group() if e.conversation is None else (e.account, f"conv:{e.conversation}")
            groups.setdefault(group, set()).add(conversation_of[e.key])
            latest[group] = max(latest.get(group, e.at), e.at)
    stale = await fetch(
        owner,
        "SELECT c.id FROM conversations c JOIN (SELECT conversation_id, max(channel_timestamp) m "
        "FROM messages WHERE tenant_id = :t GROUP BY 1) x ON x.conversation_id = c.id "
        "WHERE c.tenant_id = :t AND c.last_message_at <> x.m",
        t=tenant,
    )
    last = {
        r.id: r.last_message_at
        for r in await fetch(
            owner, "SELECT id, last_message_at FROM conversations WHERE tenant_id = :t", t=tenant
        )
    }
    mismatch = []
    for group, conversation_ids in groups.items():
        for conversation_id in conversation_ids:
            expected = latest[group]
            if seeded_at is not None and group[1].startswith("conv:"):
                expected = max(expected, seeded_at)
            if last[conversation_id] != expected:
                mismatch.append((conversation_id, group[1]))
    counts = (
        await fetch(
            owner,
            "SELECT (SELECT count(*) FROM conversations WHERE tenant_id = :t) AS conversations, "
            "(SELECT count(*) FROM contacts WHERE tenant_id = :t) AS contacts, "
            "(SELECT count(*) FROM attachments WHERE tenant_id = :t) AS attachments",
            t=tenant,
        )
    )[0]
    return StoreCheck(
        messages=len(rows),
        keys_stored_twice=sorted(k for k, v in by_key.items() if len(v) > 1),
        missing=sorted(keys - by_key.keys()),
        ids_by_key={k: v[0].id for k, v in by_key.items()},
        conversations=counts.conversations,
        contacts=counts.contacts,
        attachments=counts.attachments,
        group_to_conversation=groups,
        stale_last_message_at=[r.id for r in stale],
        expected_last_message_at_mismatch=mismatch,
    )


def expected_contacts(events: Iterable[Event]) -> int:
    return len({(e.account, e.user) for e in events if e.conversation is None})


def expected_groups(events: Iterable[Event]) -> set[tuple[int, str]]:
    return {e.group() for e in events if e.conversation is None}


# --- fault injection ----------------------------------------------------------------------------

GATE_TABLE = "reliability_gate"


async def install_gate(owner: AsyncEngine, app_role: str = "omni_app") -> None:
    """A table the test opens and closes, and a trigger function that waits (in pg_sleep
    steps, so the backend shows ``wait_event = 'PgSleep'``) until its gate is open."""
    await execute(
        owner,
        f"CREATE TABLE IF NOT EXISTS {GATE_TABLE} (name text PRIMARY KEY, open boolean NOT NULL)",
        f"GRANT SELECT ON {GATE_TABLE} TO {app_role}",
        f"""
        CREATE OR REPLACE FUNCTION reliability_wait_at_gate() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            WHILE NOT coalesce(
                (SELECT open FROM {GATE_TABLE} WHERE name = TG_ARGV[0]), true
            ) LOOP
                PERFORM pg_sleep(0.02);
            END LOOP;
            RETURN NEW;
        END
        $$
        """,
    )


@asynccontextmanager
async def gated(
    owner: AsyncEngine,
    table: str,
    tenant: uuid.UUID,
    *,
    events: str = "INSERT",
    at_commit: bool = False,
) -> AsyncIterator[Gate]:
    """A closed gate on ``table`` for ``tenant``'s rows: a transaction writing such a row
    waits there (before the write, or at COMMIT with ``at_commit``) until the gate opens.
    Dropped on exit, open or not."""
    await install_gate(owner)
    name = f"g{uuid.uuid4().hex[:12]}"
    condition = f"NEW.tenant_id = '{tenant}'::uuid"
    if at_commit:
        create = (
            f"CREATE CONSTRAINT TRIGGER {name} AFTER {events} ON {table} "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ({condition}) "
            f"EXECUTE FUNCTION reliability_wait_at_gate('{name}')"
        )
    else:
        create = (
            f"CREATE TRIGGER {name} BEFORE {events} ON {table} FOR EACH ROW "
            f"WHEN ({condition}) EXECUTE FUNCTION reliability_wait_at_gate('{name}')"
        )
    await execute(owner, f"INSERT INTO {GATE_TABLE} VALUES ('{name}', false)", create)
    try:
        yield Gate(owner, name)
    finally:
        # Nothing of the gate outlives the test (the schema stays the migrations' own).
        await execute(
            owner,
            f"DROP TRIGGER IF EXISTS {name} ON {table}",
            f"DROP TABLE IF EXISTS {GATE_TABLE}",
            "DROP FUNCTION IF EXISTS reliability_wait_at_gate()",
        )


@dataclass
class Gate:
    owner: AsyncEngine
    name: str

    async def open(self) -> None:
        await execute(self.owner, f"UPDATE {GATE_TABLE} SET open = true WHERE name = '{self.name}'")

    async def waiting(self, application_name: str) -> list[int]:
        """Backends of ``application_name`` (this database) sleeping in a gate."""
        rows = await fetch(
            self.owner,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = :app AND wait_event = 'PgSleep' ORDER BY pid",
            app=application_name,
        )
        return [r.pid for r in rows]

    async def wait_for(self, application_name: str, count: int, *, polls: int = 400) -> list[int]:
        """Poll (bounded: ``polls`` × 25 ms) until ``count`` backends wait at the gate."""
        pids: list[int] = []
        for _ in range(polls):
            pids = await self.waiting(application_name)
            if len(pids) >= count:
                return pids
            await asyncio.sleep(0.025)
        return pids


async def terminate(owner: AsyncEngine, pid: int) -> bool:
    rows = await fetch(owner, "SELECT pg_terminate_backend(:pid) AS done", pid=pid)
    return bool(rows[0].done)


# --- figures ----------------------------------------------------------------------------------


def percentiles(latencies: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (nearest rank)."""
    if not latencies:
        return {}
    ordered = sorted(latencies)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    return {
        "p50": round(rank(50), 1),
        "p95": round(rank(95), 1),
        "p99": round(rank(99), 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def report(title: str, **figures: Any) -> None:
    """Figures for the log (pytest -s, or -rA): printed, never asserted."""
    print(f"\n[reliability] {title}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
