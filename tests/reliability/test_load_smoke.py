"""Load smoke test of the inbox reads: a realistic data set, a few thousand concurrent
timeline and conversation-list requests mixed with writes through the API. No request may
fail and every walk must be consistent: no gaps, no duplicates, strict order. Latency
percentiles are printed, never asserted.

Bounded form (CI): 400 conversations (~12,000 messages), 1,200 requests, 16 concurrent.
Full form (OMNI_STORE_FULL=1): 4,000 conversations (~200,000 messages), 20,000 requests,
50 concurrent.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.database import Database
from omni_store.persistence.enums import Channel
from omni_store.persistence.tenancy import TenantId
from tests.factories import channel_account
from tests.reliability.harness import (
    CONVERSATIONS,
    PERSIST,
    TIMELINE,
    Event,
    Outcome,
    app_for,
    asgi_client,
    call,
    execute,
    fetch,
    gid,
    percentiles,
    report,
    row_id,
    scale,
    token,
)

pytestmark = pytest.mark.slow

CONVERSATION_COUNT = scale(400, 4000)
REQUESTS = scale(1200, 20000)
CONCURRENCY = scale(16, 50)
HOT = scale(20, 100)  # conversations that receive writes during the run
HEAVY_EVERY = 50  # every 50th conversation is a long one
HEAVY_SIZE = scale(400, 1000)
LOAD_BASE = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Seeded:
    tenant: TenantId
    accounts: list[int]
    # conversation id -> (account, thread id, contact external id)
    conversations: dict[int, tuple[int, str, str]]
    # conversation id -> message ids in timeline order, as seeded
    timelines: dict[int, list[int]]
    hot: list[int]
    first_at: dict[int, datetime]


async def _seed(owner: AsyncEngine, service: AsyncEngine) -> Seeded:
    """Bulk insert (as the owner) of contacts, conversations and messages: sizes skewed (most
    conversations short, a few long), pairs of messages sharing a channel timestamp (the id
    breaks the tie) and rows inserted out of timeline order."""
    tenant = TenantId(uuid.uuid4())
    db = Database(service)
    accounts = [
        (await channel_account(db, tenant, channel=channel, external_account_id=f"load-{n}")).id
        for n, channel in enumerate((Channel.LINE, Channel.FACEBOOK, Channel.SHOPEE))
    ]
    channels = ["LINE", "FACEBOOK", "SHOPEE"]
    t = f"'{tenant}'::uuid"
    account_of = f"(ARRAY{accounts}::bigint[])[1 + i % 3]"
    channel_of = f"(ARRAY{channels}::text[])[1 + i % 3]"
    size_of = f"CASE WHEN i % {HEAVY_EVERY} = 0 THEN {HEAVY_SIZE} ELSE 3 + (i * 37) % 40 END"
    # Spread over weeks, all in the past (a channel time may not be in the future).
    start_of = f"timestamptz '{LOAD_BASE.isoformat()}' + i * interval '7 minutes'"
    await execute(
        owner,
        f"""INSERT INTO contacts (tenant_id, channel_account_id, external_user_id, display_name)
        SELECT {t}, {account_of}, 'LU-' || i, 'Load user ' || i
        FROM generate_series(1, {CONVERSATION_COUNT}) AS i""",
        f"""INSERT INTO conversations (tenant_id, channel_account_id, channel, thread_key,
            external_thread_id, contact_id, last_message_at)
        SELECT {t}, {account_of}, {channel_of}, 't:LT-' || i, 'LT-' || i, c.id,
            {start_of} + (({size_of}) - 1) / 2 * interval '1 second'
        FROM generate_series(1, {CONVERSATION_COUNT}) AS i
        JOIN contacts c ON c.tenant_id = {t} AND c.external_user_id = 'LU-' || i""",
        f"""INSERT INTO messages (tenant_id, channel_account_id, conversation_id, contact_id,
            direction, sender_type, sender_external_id, content_type, content_text,
            external_message_id, idempotency_key, channel_timestamp, status, content_hash)
        SELECT {t}, v.channel_account_id, v.id, v.contact_id, 'INBOUND', 'CONTACT',
            'LU-' || i, 'TEXT', 'message ' || j || ' of ' || i, 'lm-' || i || '-' || j,
            'lm-' || i || '-' || j, {start_of} + (j / 2) * interval '1 second', 'RECEIVED',
            sha256(convert_to('lm-' || i || '-' || j, 'UTF8'))
        FROM generate_series(1, {CONVERSATION_COUNT}) AS i
        JOIN conversations v ON v.tenant_id = {t} AND v.thread_key = 't:LT-' || i
        CROSS JOIN LATERAL generate_series(0, ({size_of}) - 1) AS j
        ORDER BY md5(i || '/' || j)""",
        "ANALYZE contacts, conversations, messages",
    )
    rows = await fetch(
        owner,
        "SELECT v.id, v.channel_account_id, v.external_thread_id, c.external_user_id, "
        "v.last_message_at FROM conversations v JOIN contacts c ON c.tenant_id = v.tenant_id "
        "AND c.id = v.contact_id WHERE v.tenant_id = :t",
        t=tenant,
    )
    conversations = {
        r.id: (r.channel_account_id, r.external_thread_id, r.external_user_id) for r in rows
    }
    timelines: dict[int, list[int]] = defaultdict(list)
    first_at: dict[int, datetime] = {}
    for r in await fetch(
        owner,
        "SELECT conversation_id, id, channel_timestamp FROM messages WHERE tenant_id = :t "
        "ORDER BY conversation_id, channel_timestamp, id",
        t=tenant,
    ):
        timelines[r.conversation_id].append(r.id)
        first_at.setdefault(r.conversation_id, r.channel_timestamp)
    hot = random.Random(3).sample(sorted(conversations), HOT)
    return Seeded(tenant, accounts, conversations, dict(timelines), hot, first_at)


@dataclass
class Tally:
    outcomes: dict[str, list[Outcome]] = field(default_factory=lambda: defaultdict(list))
    problems: list[str] = field(default_factory=list)
    requests: int = 0
    walks: Counter[str] = field(default_factory=Counter)
    written: dict[str, str] = field(default_factory=dict)  # key -> message id

    def record(self, kind: str, outcome: Outcome) -> bool:
        self.requests += 1
        self.outcomes[kind].append(outcome)
        if outcome.kind != "ok":
            self.problems.append(f"{kind}: {outcome.kind} {outcome.code} {outcome.detail}")
            return False
        return True


def _key(node: dict[str, Any]) -> tuple[datetime, int]:
    return datetime.fromisoformat(node["channelTimestamp"]), row_id(node["id"])


async def _walk_timeline(
    client: httpx.AsyncClient, bearer: str, seeded: Seeded, tally: Tally, rng: random.Random
) -> None:
    conversation = rng.choice(seeded.hot if rng.random() < 0.3 else sorted(seeded.conversations))
    forward = rng.random() < 0.7
    size = rng.choice([7, 20, 50, 100])
    seen: list[tuple[datetime, int]] = []
    cursor = None
    for _ in range(10_000):  # bounded: every page moves the cursor
        variables: dict[str, Any] = {"id": gid("Conversation", conversation)}
        if forward:
            variables.update(first=size, after=cursor)
        else:
            variables.update(last=size, before=cursor)
        outcome = await call(client, bearer, TIMELINE, variables)
        if not tally.record("timeline page", outcome):
            return
        assert outcome.body is not None
        page = outcome.body["data"]["conversation"]["messages"]
        keys = [_key(edge["node"]) for edge in page["edges"]]
        seen.extend(keys if forward else reversed(keys))
        more = page["pageInfo"]["hasNextPage" if forward else "hasPreviousPage"]
        if not more:
            break
        cursor = page["pageInfo"]["endCursor" if forward else "startCursor"]
    ordered = seen if forward else list(reversed(seen))
    ids = [i for _, i in ordered]
    tally.walks["timeline forward" if forward else "timeline backward"] += 1
    if len(set(ids)) != len(ids):
        tally.problems.append(f"timeline {conversation}: duplicates")
    if ordered != sorted(ordered) or any(a == b for a, b in itertools.pairwise(ordered)):
        tally.problems.append(f"timeline {conversation}: out of order")
    expected = seeded.timelines[conversation]
    if conversation in seeded.hot:
        # Written to during the walk: every seeded message exactly once, new ones at most once.
        missing = set(expected) - set(ids)
        if missing:
            tally.problems.append(f"timeline {conversation}: gap of {len(missing)}")
    elif ids != expected:
        tally.problems.append(f"timeline {conversation}: {len(ids)} ids, not the seeded ones")


async def _walk_conversations(
    client: httpx.AsyncClient, bearer: str, seeded: Seeded, tally: Tally, rng: random.Random
) -> None:
    account = rng.choice([None, *seeded.accounts])
    seen: list[tuple[datetime, int]] = []
    cursor = None
    for _ in range(10_000):
        variables: dict[str, Any] = {"first": rng.choice([25, 50, 100]), "after": cursor}
        if account is not None:
            variables["account"] = gid("ChannelAccount", account)
        outcome = await call(client, bearer, CONVERSATIONS, variables)
        if not tally.record("conversation page", outcome):
            return
        assert outcome.body is not None
        page = outcome.body["data"]["conversations"]
        seen.extend(
            (datetime.fromisoformat(e["node"]["lastMessageAt"]), row_id(e["node"]["id"]))
            for e in page["edges"]
        )
        if not page["pageInfo"]["hasNextPage"]:
            break
        cursor = page["pageInfo"]["endCursor"]
    tally.walks["conversation list"] += 1
    ids = [i for _, i in seen]
    if len(set(ids)) != len(ids):
        tally.problems.append(f"conversations {account}: duplicates")
    if seen != sorted(seen, reverse=True):
        tally.problems.append(f"conversations {account}: out of order")
    # A conversation written to during the walk may move ahead of the cursor (and be missed);
    # every other one must be there exactly once.
    cold = {c for c, (a, _, _) in seeded.conversations.items() if account in (None, a)} - set(
        seeded.hot
    )
    missing = cold - set(ids)
    if missing:
        tally.problems.append(f"conversations {account}: gap of {len(missing)}")


async def _write(
    client: httpx.AsyncClient,
    bearer: str,
    seeded: Seeded,
    tally: Tally,
    rng: random.Random,
    n: int,
) -> None:
    conversation = rng.choice(seeded.hot)
    account, thread, user = seeded.conversations[conversation]
    # Late events land among the seeded messages; the rest extend the conversation.
    at = seeded.first_at[conversation] + timedelta(seconds=rng.uniform(0, 900))
    event = Event(n, f"load-write-{n}", account, "INBOUND", user, thread, at)
    outcome = await call(
        client, bearer, PERSIST, {"input": event.input(n)}, field_name="persistMessage"
    )
    if tally.record("persist", outcome):
        assert outcome.body is not None
        payload = outcome.body["data"]["persistMessage"]
        if payload["conversation"]["id"] != gid("Conversation", conversation):
            tally.problems.append(f"write {n}: landed in another conversation")
        tally.written[event.key] = payload["message"]["id"]


async def test_timeline_and_conversation_reads_under_load_stay_consistent(
    service: AsyncEngine, owner: AsyncEngine
) -> None:
    seeding = time.monotonic()
    seeded = await _seed(owner, service)
    seed_seconds = time.monotonic() - seeding
    bearer = token(seeded.tenant)
    tally = Tally()
    writes = 0

    app = app_for(service)  # one service process, many clients

    async def worker(n: int) -> None:
        nonlocal writes
        rng = random.Random(n)
        async with asgi_client(app) as client:
            while tally.requests < REQUESTS and len(tally.problems) < 20:
                roll = rng.random()
                if roll < 0.25:
                    writes += 1
                    await _write(client, bearer, seeded, tally, rng, writes)
                elif roll < 0.4:
                    await _walk_conversations(client, bearer, seeded, tally, rng)
                else:
                    await _walk_timeline(client, bearer, seeded, tally, rng)

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
    elapsed = time.monotonic() - started

    assert tally.problems == []
    # Every acknowledged write is stored once, in its hot conversation.
    stored = await fetch(
        owner,
        "SELECT idempotency_key, id FROM messages WHERE tenant_id = :t "
        "AND idempotency_key LIKE 'load-write-%'",
        t=seeded.tenant,
    )
    assert {r.idempotency_key: gid("Message", r.id) for r in stored} == tally.written
    stale = await fetch(
        owner,
        "SELECT c.id FROM conversations c JOIN (SELECT conversation_id, max(channel_timestamp) m "
        "FROM messages WHERE tenant_id = :t GROUP BY 1) x ON x.conversation_id = c.id "
        "WHERE c.tenant_id = :t AND c.last_message_at <> x.m",
        t=seeded.tenant,
    )
    assert stale == []

    messages = sum(len(t) for t in seeded.timelines.values())
    report(
        "load smoke",
        conversations=len(seeded.conversations),
        messages=messages,
        seed_seconds=round(seed_seconds, 1),
        requests=tally.requests,
        concurrency=CONCURRENCY,
        seconds=round(elapsed, 1),
        requests_per_second=round(tally.requests / elapsed),
        walks=dict(tally.walks),
        writes=len(tally.written),
    )
    for kind, outcomes in sorted(tally.outcomes.items()):
        report(
            f"latency ms, {kind} ({len(outcomes)})", **percentiles([o.latency for o in outcomes])
        )
