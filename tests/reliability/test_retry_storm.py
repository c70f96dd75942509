"""Retry storm: every event delivered several times at once, by many concurrent clients,
through the HTTP API. Exactly one message per key, whatever the interleaving.

Bounded form (CI): 200 events × 5 deliveries, 20 concurrent clients.
Full form (OMNI_STORE_FULL=1): 1,000 events × 5 deliveries, 50 concurrent clients.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.database import Database
from omni_store.persistence.tenancy import TenantId
from tests.factories import channel_account
from tests.reliability.harness import (
    BASE,
    PERSIST,
    UPSERT_CONVERSATION,
    Outcome,
    app_for,
    asgi_client,
    call,
    check_store,
    expected_contacts,
    expected_groups,
    gid,
    mixed_events,
    percentiles,
    report,
    row_id,
    scale,
    token,
)

pytestmark = pytest.mark.slow

EVENTS = scale(200, 1000)
DELIVERIES = 5
CONCURRENCY = scale(20, 50)
MAX_ATTEMPTS = 5  # per delivery, for retryable errors only (none are expected)


async def test_retry_storm_stores_each_event_exactly_once(
    service: AsyncEngine, owner: AsyncEngine
) -> None:
    tenant = TenantId(uuid.uuid4())
    db = Database(service)
    line = await channel_account(db, tenant, external_account_id="storm-line")
    from omni_store.persistence.enums import Channel

    facebook = await channel_account(
        db, tenant, channel=Channel.FACEBOOK, external_account_id="storm-page"
    )
    accounts = [line.id, facebook.id]
    app = app_for(service)
    bearer = token(tenant)

    async with asgi_client(app) as client:
        # Conversations the outbound replies name by id, opened before the storm.
        known: list[tuple[int, int]] = []
        for n in range(6):
            account = accounts[n % 2]
            opened = await call(
                client,
                bearer,
                UPSERT_CONVERSATION,
                {
                    "input": {
                        "channelAccountId": gid("ChannelAccount", account),
                        "channelTimestamp": BASE.isoformat(),
                        "externalThreadId": f"known-{n}",
                        "contact": {"externalUserId": f"K{n}"},
                    }
                },
                field_name="upsertConversation",
            )
            assert opened.kind == "ok", opened.detail
            assert opened.body is not None
            conversation = opened.body["data"]["upsertConversation"]["conversation"]
            known.append((account, row_id(conversation["id"])))

        events = mixed_events(EVENTS, accounts, prefix="storm", known_conversations=known)
        # The deliveries of one event are queued next to each other, so that several workers
        # pick them up at the same moment; a little shuffling mixes neighbours.
        rng = random.Random(11)
        queue: list[tuple[int, int]] = [(e.index, d) for e in events for d in range(DELIVERIES)]
        window = DELIVERIES * 3
        for start in range(0, len(queue), window):
            chunk = queue[start : start + window]
            rng.shuffle(chunk)
            queue[start : start + window] = chunk
        pending = asyncio.Queue[tuple[int, int]]()
        for item in queue:
            pending.put_nowait(item)

        final: dict[tuple[int, int], Outcome] = {}
        retried: Counter[str] = Counter()

        async def worker() -> None:
            while not pending.empty():
                index, delivery = pending.get_nowait()
                variables = {"input": events[index].input(delivery)}
                for _attempt in range(MAX_ATTEMPTS):
                    outcome = await call(
                        client, bearer, PERSIST, variables, field_name="persistMessage"
                    )
                    if outcome.kind != "retryable":
                        break
                    retried[outcome.code or ""] += 1
                    await asyncio.sleep(0.05)
                final[index, delivery] = outcome

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.monotonic() - started

    failures = [(k, o.kind, o.code, o.detail) for k, o in final.items() if o.kind != "ok"]
    assert failures == []
    assert len(final) == EVENTS * DELIVERIES

    # Every delivery of an event got the same message id; one of them stored it.
    ids: dict[int, set[str]] = {}
    fresh: Counter[int] = Counter()
    for (index, _), outcome in final.items():
        assert outcome.body is not None
        payload = outcome.body["data"]["persistMessage"]
        ids.setdefault(index, set()).add(payload["message"]["id"])
        fresh[index] += not payload["deduplicated"]
    assert {i: len(s) for i, s in ids.items() if len(s) != 1} == {}
    if not retried:
        assert {i: n for i, n in fresh.items() if n != 1} == {}
        assert sum(fresh.values()) == EVENTS

    # The store: one message per key, with the id every delivery was told.
    check = await check_store(owner, tenant, events, seeded_at=BASE)
    assert check.keys_stored_twice == []
    assert check.missing == []
    assert check.messages == EVENTS
    assert {e.key: gid("Message", check.ids_by_key[e.key]) for e in events} == {
        e.key: next(iter(ids[e.index])) for e in events
    }
    # One contact per (account, external user), one conversation per thread key.
    assert check.contacts == expected_contacts(events) + len(known)
    assert {g: c for g, c in check.group_to_conversation.items() if len(c) != 1} == {}
    assert len({next(iter(c)) for c in check.group_to_conversation.values()}) == len(
        check.group_to_conversation
    )
    assert check.conversations == len(expected_groups(events)) + len(known)
    # last_message_at is the latest channel time among the conversation's messages.
    assert check.stale_last_message_at == []
    assert check.expected_last_message_at_mismatch == []
    assert check.attachments == sum(e.attachments for e in events)

    latencies = [o.latency for o in final.values()]
    report(
        "retry storm",
        events=EVENTS,
        deliveries=DELIVERIES,
        requests=len(final),
        concurrency=CONCURRENCY,
        seconds=round(elapsed, 1),
        requests_per_second=round(len(final) / elapsed),
        retried=dict(retried),
        stored=check.messages,
        conversations=check.conversations,
        contacts=check.contacts,
        **percentiles(latencies),
    )
