"""Run the benchmark against a generated data set: the service, the raw-SQL limit and the peer.

    python -m tests.bench.run --messages 1M --repeat 2
        # generates the data set first if missing (python -m tests.bench.generate), then
        # writes tests/bench/results/1M.{md,png,json}

For one scale:

1. A measurement pass, in process (the real ASGI app over httpx, no network): every request of
   every workload once over the same sample, with a listener of the units of work
   (``omni_store.persistence.database.listen``) capturing each SQL statement (text, bound
   parameters, first value returned) and the unit of work (transaction) it ran in. It
   gives the SQL statements per request (also at several page sizes), and the recordings that
   the raw-SQL limit replays.
2. Then each workload runs on each target back to back (``--repeat`` times, alternating; the
   best run is reported), all targets started beforehand and idle when not loaded:
   - the service: ``python -m tests.bench.serve`` (``omni-store serve`` equivalent, see
     there) in a subprocess on 127.0.0.1, loaded by this process's own asyncio HTTP/1.1
     keep-alive client with ``--concurrency`` connections for ``--duration`` seconds after
     ``--warmup``;
   - the limit: the same recorded SQL statements, in the same transactions, straight through
     an asyncpg pool of the service's size at the same concurrency, as the same role
     (``omni_app``, bound by row-level security); new events get fresh idempotency keys and
     the ids their inserts return, so they are new writes again;
   - the peer: PostGraphile 4 from npm (installed into tests/bench/.peer on first use), on
     the same database, timeline and conversation-list pages of the same shape. It connects
     as the owner and filters by tenant in its conditions: it cannot set ``app.tenant_id``
     per request from its command line, so row-level security does not bind it (a small
     advantage for the peer).

The CPU used by the server, PostgreSQL, the load driver and everything else on the machine is
recorded per run: other work on a shared machine shows up as "other".

Workloads (a "session" follows ``endCursor`` while ``hasNextPage``; every page is a request):
- ``timeline``: ``conversation.messages(first: 50)`` with sender, content and attachments, and
  up to 2 following pages, over conversations sampled in proportion to their size;
- ``conversations`` / ``conversations_channel``: ``conversations(first: 25)`` with contact,
  last message and channel account, then the next page; unfiltered / one channel of the tenant;
- ``persist_new``: ``persistMessage`` of new inbound (into an existing thread) and outbound
  (a reply by conversationId) messages, 15 % with attachments;
- ``persist_replay``: re-deliveries of messages stored by ``persist_new`` (deduplicated);
- ``persist_batch``: ``persistMessages`` of 100 new messages of one tenant (``--batch``), the
  same mix as ``persist_new``: a backfill;
- ``mixed``: an inbox: 35 % timeline sessions, 25 % conversation lists, 30 % new messages,
  10 % re-deliveries;
- ``floor``: ``{ __typename }`` with a tenant's token: no SQL at all, so what it costs is the
  stack's own floor per request (HTTP, Starlette, the token, Strawberry and graphql-core); the
  service only (no statements to replay, no page for the peer).

Everything the runs write is deleted afterwards (and ``last_message_at`` restored), so a data
set can be run again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil

from omni_store.graph.auth import ALL_SCOPES, authenticate, mint_token
from omni_store.graph.ids import to_global_id
from omni_store.persistence.database import begin_with_tenant, listen
from omni_store.persistence.tenancy import TenantId
from tests.bench.common import (
    BENCH_DIR,
    PEER_DIR,
    RESULTS_DIR,
    database_exists,
    database_name,
    libpq_url,
    parse_scale,
    scale_name,
    server_url,
    with_database,
)

REPO = BENCH_DIR.parent.parent
PAGE = 50
LIST_PAGE = 25
TIMELINE_PAGES = 3
LIST_PAGES = 2
PEER_VERSION = "^4.14.1"

# --- GraphQL documents -------------------------------------------------------------------------

TIMELINE = """query Timeline($id: ID!, $first: Int!, $after: String) {
  conversation(id: $id) {
    id
    messages(first: $first, after: $after) {
      edges { cursor node {
        id direction channelTimestamp status
        sender { type id displayName avatarUrl }
        content { type text struct }
        attachments { id position kind url mimeType sizeBytes fileName width height durationMs }
      } }
      pageInfo { hasNextPage hasPreviousPage endCursor }
    }
  }
}"""

CONVERSATIONS = """query Inbox($first: Int!, $after: String, $channel: Channel) {
  conversations(first: $first, after: $after, channel: $channel) {
    edges { cursor node {
      id channel lastMessageAt
      contact { id displayName avatarUrl }
      channelAccount { id channel displayName }
      lastMessage {
        id direction channelTimestamp
        content { type text }
        sender { type displayName }
      }
    } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}"""

PERSIST = """mutation Persist($input: PersistMessageInput!) {
  persistMessage(input: $input) {
    deduplicated
    message { id channelTimestamp }
    messageEdge { cursor }
    conversation { id lastMessageAt }
    userErrors { field code message }
  }
}"""

BATCH = """mutation Backfill($input: PersistMessagesInput!) {
  persistMessages(input: $input) {
    results { messageId deduplicated userErrors { field code message } }
    userErrors { field code message }
  }
}"""
BATCH_SIZE = 100

# The cheapest request the service answers with a tenant: the floor under every other one.
FLOOR = "query Floor { __typename }"

# PostGraphile 4's names for the same tables (composite keys lead with tenant_id).
PEER_TIMELINE = """query Timeline($tenant: UUID!, $id: BigInt!, $first: Int!, $after: Cursor) {
  conversationByTenantIdAndId(tenantId: $tenant, id: $id) {
    nodeId
    messagesByTenantIdAndConversationId(
      first: $first, after: $after, orderBy: [CHANNEL_TIMESTAMP_ASC, ID_ASC]
    ) {
      edges { cursor node {
        nodeId direction channelTimestamp status
        senderType senderExternalId senderDisplayName senderAvatarUrl
        contactByTenantIdAndContactId { nodeId displayName avatarUrl }
        contentType contentText contentStruct
        attachmentsByTenantIdAndMessageId(orderBy: POSITION_ASC) { nodes {
          nodeId position kind url mimeType sizeBytes fileName width height durationMs
        } }
      } }
      pageInfo { hasNextPage hasPreviousPage endCursor }
    }
  }
}"""

PEER_CONVERSATIONS = """query Inbox($tenant: UUID!, $first: Int!, $after: Cursor%(var)s) {
  allConversations(
    condition: {tenantId: $tenant%(cond)s}, orderBy: [LAST_MESSAGE_AT_DESC, ID_DESC],
    first: $first, after: $after
  ) {
    edges { cursor node {
      nodeId channel lastMessageAt
      contactByTenantIdAndContactId { nodeId displayName avatarUrl }
      channelAccountByTenantIdAndChannelAccountId { nodeId channel displayName }
      messagesByTenantIdAndConversationId(first: 1, orderBy: [CHANNEL_TIMESTAMP_DESC, ID_DESC]) {
        nodes {
          nodeId direction channelTimestamp contentType contentText
          senderType senderDisplayName contactByTenantIdAndContactId { displayName }
        }
      }
    } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}"""
PEER_CONVERSATIONS_ALL = PEER_CONVERSATIONS % {"var": "", "cond": ""}
PEER_CONVERSATIONS_CHANNEL = PEER_CONVERSATIONS % {
    "var": ", $channel: String!",
    "cond": ", channel: $channel",
}

THAI = ["สวัสดีค่ะ สนใจสินค้าตัวนี้ค่ะ", "โอนเงินแล้วนะคะ", "ขอบคุณมากครับ", "ส่งของวันไหนคะ"]
ENGLISH = ["Is this still available?", "Thanks, order confirmed!", "Your parcel has shipped."]

WORKLOADS: dict[str, dict[str, int]] = {
    "timeline": {"timeline": 1},
    "conversations": {"conversations": 1},
    "conversations_channel": {"conversations_channel": 1},
    "persist_new": {"persist_inbound": 1, "persist_outbound": 1},
    "persist_replay": {"persist_replay": 1},
    "persist_batch": {"persist_batch": 1},
    "mixed": {
        "timeline": 35,
        "conversations": 15,
        "conversations_channel": 10,
        "persist_inbound": 15,
        "persist_outbound": 15,
        "persist_replay": 10,
    },
    "floor": {"floor": 1},
}
READS = ("timeline", "conversations", "conversations_channel", "floor")
PEER_WORKLOADS = READS[:3]
RAW_WORKLOADS = tuple(w for w in WORKLOADS if w != "floor")

# --- the sample of the data set that every target works on ------------------------------------


@dataclass
class Sample:
    accounts: dict[uuid.UUID, list[tuple[int, str]]]
    timeline: list[tuple[uuid.UUID, int]]
    threads: list[dict[str, Any]]
    list_sessions: list[tuple[uuid.UUID, str]]
    max_message_id: int
    counts: dict[str, int]


async def load_sample(url: str, seed: int, size: int) -> Sample:
    rng = random.Random(seed)
    conn = await asyncpg.connect(url)
    try:
        counts = {
            t: int(await conn.fetchval(f"SELECT count(*) FROM {t}"))
            for t in ("channel_accounts", "contacts", "conversations", "messages", "attachments")
        }
        accounts: dict[uuid.UUID, list[tuple[int, str]]] = defaultdict(list)
        for r in await conn.fetch(
            "SELECT tenant_id, id, channel FROM channel_accounts ORDER BY 1, 2"
        ):
            accounts[r["tenant_id"]].append((r["id"], r["channel"]))
        # Pages of the heap hold messages of many conversations (they are stored in arrival
        # order): sampling pages picks conversations in proportion to their size, as an inbox
        # opens busy conversations more often than one-message ones.
        pct = min(100.0, 100.0 * 30 * size / max(counts["messages"], 1))
        rows = await conn.fetch(
            f"SELECT DISTINCT tenant_id, conversation_id FROM messages "
            f"TABLESAMPLE SYSTEM ({pct:.6f}) REPEATABLE ({seed}) ORDER BY 1, 2"
        )
        timeline = [(r["tenant_id"], r["conversation_id"]) for r in rows]
        rng.shuffle(timeline)
        # Conversations by id drawn from the seed (not TABLESAMPLE: the writes of earlier runs
        # move updated rows around the heap, which would change a block sample).
        top = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM conversations"))
        ids = rng.sample(range(1, top + 1), min(top, 4 * size))
        rows = await conn.fetch(
            """
            SELECT c.tenant_id, c.id, c.channel_account_id, c.external_thread_id,
                   ct.external_user_id, ct.display_name
            FROM conversations c
            JOIN contacts ct ON ct.tenant_id = c.tenant_id AND ct.id = c.contact_id
            WHERE c.id = ANY($1::bigint[]) AND c.external_thread_id IS NOT NULL
            ORDER BY c.tenant_id, c.id
            """,
            ids,
        )
        threads = [dict(r) for r in rows]
        rng.shuffle(threads)
        tenants = sorted(accounts)
        list_sessions = []
        for i in range(size):
            tenant = tenants[i % len(tenants)]
            list_sessions.append((tenant, rng.choice(accounts[tenant])[1]))
        max_id = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM messages"))
    finally:
        await conn.close()
    return Sample(accounts, timeline[:size], threads[:size], list_sessions, max_id, counts)


async def delete_written(url: str, after_id: int) -> int:
    """Delete the messages (and attachments) with ids above ``after_id`` and move the touched
    conversations' last_message_at back to their latest remaining message."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM attachments WHERE message_id > $1", after_id)
            rows = await conn.fetch(
                "WITH gone AS (DELETE FROM messages WHERE id > $1 "
                "RETURNING tenant_id, conversation_id) "
                "SELECT DISTINCT tenant_id, conversation_id FROM gone",
                after_id,
            )
            await conn.execute(
                """
                UPDATE conversations c SET last_message_at = (
                    SELECT max(m.channel_timestamp) FROM messages m
                    WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id)
                FROM unnest($1::uuid[], $2::bigint[]) AS t(tenant_id, id)
                WHERE c.tenant_id = t.tenant_id AND c.id = t.id
                """,
                [r["tenant_id"] for r in rows],
                [r["conversation_id"] for r in rows],
            )
        await conn.execute("VACUUM messages, attachments, conversations, contacts")
        return len(rows)
    finally:
        await conn.close()


# --- a small HTTP/1.1 keep-alive client (cheap enough not to be what is measured) ---------------


class Http:
    def __init__(self, port: int, path: str = "/graphql") -> None:
        self.port = port
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, limit=1 << 20
        )

    async def post(self, body: bytes, token: str | None) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        assert self.reader is not None
        assert self.writer is not None
        auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
        self.writer.write(b"%s%sContent-Length: %d\r\n\r\n%s" % (self.head, auth, len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at + 2)
            data = await self.reader.readexactly(int(lower[at + 17 : end]))
        elif b"transfer-encoding: chunked" in lower:
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            data = b"".join(chunks)
        else:
            data = await self.reader.read()
        if b"connection: close" in lower:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


Post = Callable[[bytes, str | None], Awaitable[tuple[int, bytes]]]

# --- statistics --------------------------------------------------------------------------------


class Stats:
    """Latencies of the requests that completed inside the measured window, by kind."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.first_errors: dict[str, str] = {}

    def add(self, kind: str, began: float, ok: bool, detail: str = "") -> None:
        now = time.perf_counter()
        if not self.start <= now <= self.end:
            return
        if ok:
            self.latencies[kind].append(now - began)
        else:
            self.errors[kind] += 1
            self.first_errors.setdefault(kind, detail[:500])

    def summary(self) -> dict[str, Any]:
        seconds = self.end - self.start
        every = sorted(x for v in self.latencies.values() for x in v)
        out = {"all": _summary(every, sum(self.errors.values()), seconds)}
        for kind, values in self.latencies.items():
            out[kind] = _summary(sorted(values), self.errors[kind], seconds)
        for kind in self.errors:
            out.setdefault(kind, _summary([], self.errors[kind], seconds))
        if self.first_errors:
            out["first_errors"] = self.first_errors
        return out


def _summary(values: list[float], errors: int, seconds: float) -> dict[str, float]:
    def pct(p: float) -> float:
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(p * len(values)))] * 1000

    return {
        "requests": len(values),
        "errors": errors,
        "rps": len(values) / seconds,
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
    }


def _errors_of(data: bytes) -> str | None:
    """None when a GraphQL response is clean; else what went wrong."""
    if data[:1] != b"{":
        return data[:300].decode(errors="replace")
    body = orjson.loads(data)
    if body.get("errors"):
        return orjson.dumps(body["errors"][:2]).decode()
    return None


# --- the actions of the service and of the peer ------------------------------------------------


class Actions:
    """What one client of a workload does: sessions of pages, persists. ``post`` sends one
    GraphQL request; ``stats`` records it."""

    peer = False

    def __init__(self, sample: Sample, secret: str | None, run_id: str) -> None:
        self.sample = sample
        self.tokens = (
            {
                t: mint_token(secret, tenant=t, scopes=list(ALL_SCOPES), ttl_seconds=7 * 86400)
                for t in sample.accounts
            }
            if secret
            else {}
        )
        self.run_id = run_id
        self.counter = itertools.count()
        self.timeline_items = itertools.cycle(sample.timeline)
        self.list_items = itertools.cycle(sample.list_sessions)
        self.thread_items = itertools.cycle(sample.threads)
        threads_of: dict[Any, list[dict[str, Any]]] = {}
        for thread in sample.threads:
            threads_of.setdefault(thread["tenant_id"], []).append(thread)
        # A batch is one tenant's: its messages go to that tenant's threads in turn.
        self.tenant_threads = {t: itertools.cycle(threads) for t, threads in threads_of.items()}
        self.sent: list[tuple[uuid.UUID, bytes]] = []
        self.replay_at = itertools.count()
        self.page = PAGE
        self.list_page = LIST_PAGE
        self.batch_size = BATCH_SIZE

    # Each returns nothing; requests go through `request`, which times and checks them.
    async def request(
        self, post: Post, stats: Stats, kind: str, body: bytes, token: str | None
    ) -> dict[str, Any] | None:
        began = time.perf_counter()
        try:
            status, data = await post(body, token)
        except (OSError, asyncio.IncompleteReadError) as error:
            stats.add(kind, began, False, repr(error))
            return None
        problem = f"HTTP {status}: {data[:300]!r}" if status != 200 else _errors_of(data)
        if problem:
            stats.add(kind, began, False, problem)
            return None
        stats.add(kind, began, True)
        return orjson.loads(data)["data"]  # type: ignore[no-any-return]

    async def timeline(self, post: Post, stats: Stats) -> None:
        tenant, conversation = next(self.timeline_items)
        after = None
        for _ in range(TIMELINE_PAGES):
            body, token = self.timeline_body(tenant, conversation, after)
            data = await self.request(post, stats, "timeline", body, token)
            info = self.timeline_page_info(data) if data else None
            if not info or not info["hasNextPage"]:
                return
            after = info["endCursor"]

    async def _list(self, post: Post, stats: Stats, kind: str, channel: str | None) -> None:
        tenant, tenant_channel = next(self.list_items)
        after = None
        for _ in range(LIST_PAGES):
            body, token = self.list_body(tenant, tenant_channel if channel else None, after)
            data = await self.request(post, stats, kind, body, token)
            info = self.list_page_info(data) if data else None
            if not info or not info["hasNextPage"]:
                return
            after = info["endCursor"]

    async def conversations(self, post: Post, stats: Stats) -> None:
        await self._list(post, stats, "conversations", None)

    async def conversations_channel(self, post: Post, stats: Stats) -> None:
        await self._list(post, stats, "conversations_channel", "channel")

    async def floor(self, post: Post, stats: Stats) -> None:
        tenant, _ = next(self.list_items)
        data = await self.request(post, stats, "floor", self._body(FLOOR, {}), self.tokens[tenant])
        if data is not None and data != {"__typename": "Query"}:
            stats.errors["floor"] += 1
            stats.first_errors.setdefault("floor", orjson.dumps(data).decode())

    # --- the service's documents ----------------------------------------------------------

    def _body(self, query: str, variables: dict[str, Any]) -> bytes:
        return orjson.dumps({"query": query, "variables": variables})

    def timeline_body(
        self, tenant: uuid.UUID, conversation: int, after: str | None
    ) -> tuple[bytes, str | None]:
        variables = {"id": to_global_id("Conversation", conversation), "first": self.page}
        if after:
            variables["after"] = after
        return self._body(TIMELINE, variables), self.tokens[tenant]

    def timeline_page_info(self, data: dict[str, Any]) -> dict[str, Any] | None:
        conversation = data["conversation"]
        return conversation["messages"]["pageInfo"] if conversation else None

    def list_body(
        self, tenant: uuid.UUID, channel: str | None, after: str | None
    ) -> tuple[bytes, str | None]:
        variables: dict[str, Any] = {"first": self.list_page}
        if after:
            variables["after"] = after
        if channel:
            variables["channel"] = channel
        return self._body(CONVERSATIONS, variables), self.tokens[tenant]

    def list_page_info(self, data: dict[str, Any]) -> dict[str, Any]:
        return data["conversations"]["pageInfo"]  # type: ignore[no-any-return]

    def new_message(
        self, inbound: bool, thread: dict[str, Any] | None = None
    ) -> tuple[uuid.UUID, dict[str, Any]]:
        n = next(self.counter)
        if thread is None:
            thread = next(self.thread_items)
        rng = random.Random(n)
        at = datetime.now(UTC) - timedelta(seconds=rng.randrange(0, 600))
        text = rng.choice(THAI if rng.random() < 0.6 else ENGLISH)
        message: dict[str, Any] = {
            "channelAccountId": to_global_id("ChannelAccount", thread["channel_account_id"]),
            "direction": "INBOUND" if inbound else "OUTBOUND",
            "channelTimestamp": at.isoformat(),
            "content": {"type": "TEXT", "text": text},
        }
        key = f"bench-{self.run_id}-{n}"
        if inbound:
            message["externalMessageId"] = key
            message["externalThreadId"] = thread["external_thread_id"]
            message["contact"] = {
                "externalUserId": thread["external_user_id"],
                "displayName": thread["display_name"],
            }
        else:
            message["idempotencyKey"] = key
            message["conversationId"] = to_global_id("Conversation", thread["id"])
            message["sender"] = {"type": "AGENT", "displayName": "Agent Nok", "externalId": "a-7"}
        if rng.random() < 0.15:
            message["content"] = {"type": "IMAGE", "text": None}
            message["attachments"] = [
                {
                    "kind": "IMAGE",
                    "url": f"https://cdn.example.com/bench/{key}/{i}.jpg",
                    "mimeType": "image/jpeg",
                    "sizeBytes": 120_000 + i,
                    "width": 1080,
                    "height": 720,
                    "externalId": f"{key}-{i}",
                }
                for i in range(rng.randint(1, 2))
            ]
        return thread["tenant_id"], message

    async def _persist(self, post: Post, stats: Stats, kind: str, inbound: bool) -> None:
        tenant, message = self.new_message(inbound)
        body = self._body(PERSIST, {"input": message})
        data = await self.request(post, stats, kind, body, self.tokens[tenant])
        if data is not None:
            payload = data["persistMessage"]
            if payload["userErrors"] or payload["deduplicated"]:
                stats.errors[kind] += 1
                stats.first_errors.setdefault(kind, orjson.dumps(payload).decode())
            self.sent.append((tenant, body))

    async def persist_inbound(self, post: Post, stats: Stats) -> None:
        await self._persist(post, stats, "persist_inbound", True)

    async def persist_outbound(self, post: Post, stats: Stats) -> None:
        await self._persist(post, stats, "persist_outbound", False)

    async def persist_batch(self, post: Post, stats: Stats) -> None:
        # Built for the tenant's threads only: drawing from all tenants' threads and keeping
        # one tenant's messages made ten messages per one sent, and the driver then took 0.6
        # of the machine's two cores from the service during batches.
        tenant, first = self.new_message(True)
        threads = self.tenant_threads[tenant]
        messages = [first]
        while len(messages) < self.batch_size:
            messages.append(self.new_message(len(messages) % 2 == 0, next(threads))[1])
        body = self._body(BATCH, {"input": {"messages": messages}})
        data = await self.request(post, stats, "persist_batch", body, self.tokens[tenant])
        if data is not None:
            payload = data["persistMessages"]
            refused = [r for r in payload["results"] if r["userErrors"] or r["deduplicated"]]
            if refused or payload["userErrors"] or len(payload["results"]) != len(messages):
                stats.errors["persist_batch"] += 1
                stats.first_errors.setdefault(
                    "persist_batch", orjson.dumps(refused[:1] or payload).decode()[:500]
                )

    async def persist_replay(self, post: Post, stats: Stats) -> None:
        if not self.sent:
            await self.persist_inbound(post, stats)
            return
        tenant, body = self.sent[next(self.replay_at) % len(self.sent)]
        data = await self.request(post, stats, "persist_replay", body, self.tokens[tenant])
        if data is not None and not data["persistMessage"]["deduplicated"]:
            stats.errors["persist_replay"] += 1
            stats.first_errors.setdefault("persist_replay", "not deduplicated")


class PeerActions(Actions):
    """The same pages from PostGraphile 4 (no auth: tenant as a condition argument)."""

    peer = True

    def timeline_body(
        self, tenant: uuid.UUID, conversation: int, after: str | None
    ) -> tuple[bytes, str | None]:
        variables = {"tenant": str(tenant), "id": str(conversation), "first": self.page}
        if after:
            variables["after"] = after
        return self._body(PEER_TIMELINE, variables), None

    def timeline_page_info(self, data: dict[str, Any]) -> dict[str, Any] | None:
        conversation = data["conversationByTenantIdAndId"]
        if not conversation:
            return None
        return conversation["messagesByTenantIdAndConversationId"]["pageInfo"]  # type: ignore[no-any-return]

    def list_body(
        self, tenant: uuid.UUID, channel: str | None, after: str | None
    ) -> tuple[bytes, str | None]:
        variables: dict[str, Any] = {"tenant": str(tenant), "first": self.list_page}
        if after:
            variables["after"] = after
        if channel:
            variables["channel"] = channel
        query = PEER_CONVERSATIONS_CHANNEL if channel else PEER_CONVERSATIONS_ALL
        return self._body(query, variables), None

    def list_page_info(self, data: dict[str, Any]) -> dict[str, Any]:
        return data["allConversations"]["pageInfo"]  # type: ignore[no-any-return]


async def drive(
    actions: Actions,
    weights: dict[str, int],
    open_post: Callable[[], Awaitable[tuple[Post, Callable[[], Awaitable[None]]]]],
    *,
    concurrency: int,
    duration: float,
    warmup: float,
) -> Stats:
    start = time.perf_counter() + warmup
    stats = Stats(start, start + duration)
    kinds, cum = list(weights), list(itertools.accumulate(weights.values()))

    async def client(i: int) -> None:
        rng = random.Random(i)
        post, close = await open_post()
        try:
            while time.perf_counter() < stats.end:
                kind = rng.choices(kinds, cum_weights=cum)[0]
                await getattr(actions, kind)(post, stats)
        finally:
            await close()

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return stats


def http_opener(port: int) -> Callable[[], Awaitable[tuple[Post, Callable[[], Awaitable[None]]]]]:
    async def open_post() -> tuple[Post, Callable[[], Awaitable[None]]]:
        http = Http(port)
        return http.post, http.close

    return open_post


# --- measurement pass: statements per request, and the recordings of the raw-SQL limit --------


@dataclass
class Recorded:
    """The SQL of one request: transactions of (statement, parameters, first value returned)."""

    kind: str
    transactions: list[list[tuple[str, list[Any], Any]]]
    keys: list[str] = field(default_factory=list)  # of new messages: fresh on each replay
    # The caller's tenant: as in the service, it goes out with each transaction's BEGIN.
    tenant: TenantId | None = None
    # Whether each transaction ran generic plans (the service's reads do): its BEGIN says so.
    generic_plans: list[bool] = field(default_factory=list)

    @property
    def statements(self) -> int:
        return sum(len(t) for t in self.transactions)


class Capture:
    def __init__(self, engine: Any) -> None:
        self.active = False
        self.current: list[list[tuple[str, list[Any], Any]]] = []
        self.generic_plans: list[bool] = []
        self.unit_of_work: object | None = None

        def after(uow: object, statement: str, params: Any, rows: Any) -> None:
            if not self.active:
                return
            if uow is not self.unit_of_work or not self.current:
                self.unit_of_work = uow
                self.current.append([])
                self.generic_plans.append(uow.generic_plans)  # type: ignore[attr-defined]
            first = rows[0][0] if rows else None
            self.current[-1].append((statement, list(params or ()), first))

        listen(engine, after)

    def start(self) -> None:
        self.current = []
        self.generic_plans = []
        self.unit_of_work = None
        self.active = True

    def stop(self) -> tuple[list[list[tuple[str, list[Any], Any]]], list[bool]]:
        """The transactions captured (each one's statements), and whether each ran generic
        plans."""
        self.active = False
        return self.current, self.generic_plans


Sessions = dict[str, list[list[Recorded]]]


async def measurement_pass(
    url: str, sample: Sample, run_id: str, pool_size: int
) -> tuple[Sessions, dict[str, dict[str, float]], dict[str, dict[int, float]]]:
    """Every request kind over the sample, in process, each statement captured. A session
    (the pages of one timeline or list, or one persist) is kept together for the replay."""
    import httpx

    from omni_store.graph.app import create_app
    from omni_store.persistence.database import Database, create_engine

    secret = secrets.token_urlsafe(32)
    engine = create_engine(url, pool_size=pool_size)
    capture = Capture(engine)
    app = create_app(Database(engine), jwt_secret=secret, dispose_on_shutdown=False)
    actions = Actions(sample, secret, run_id + "m")
    sessions: Sessions = defaultdict(list)
    current: list[Recorded] = []
    by_size: dict[str, dict[int, float]] = {}
    stats = Stats(0, float("inf"))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench.local"
        ) as client:

            async def post(body: bytes, token: str | None) -> tuple[int, bytes]:
                capture.start()
                response = await client.post(
                    "/graphql",
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": f"Bearer {token}",
                    },
                )
                given = orjson.loads(body)["variables"].get("input") or {}
                keys = [
                    m.get("idempotencyKey") or m.get("externalMessageId")
                    for m in given.get("messages", [given])
                ]
                tenant = authenticate(f"Bearer {token}", secret).tenant if token else None
                transactions, generic_plans = capture.stop()
                current.append(
                    Recorded("", transactions, [k for k in keys if k], tenant, generic_plans)
                )
                return response.status_code, response.content

            async def run(kind: str, times: int) -> list[list[Recorded]]:
                done = []
                for _ in range(times):
                    current.clear()
                    await getattr(actions, kind)(post, stats)
                    for r in current:
                        r.kind = kind
                        if kind == "persist_replay":
                            r.keys = []  # replayed as they are: the same key again
                    done.append(list(current))
                return done

            n = len(sample.timeline)
            for kind in (
                "timeline",
                "conversations",
                "conversations_channel",
                "persist_inbound",
                "persist_outbound",
                "persist_replay",
                "persist_batch",
                "floor",
            ):
                sessions[kind] = await run(kind, n if kind != "persist_batch" else 10)
            # Constant statements whatever the page size: the same requests at other sizes.
            for label, sizes in (
                ("timeline", (1, 10, 50, 100)),
                ("conversations", (1, 10, 25, 100)),
            ):
                by_size[label] = {}
                for size in sizes:
                    actions.page = actions.list_page = size
                    fresh = [r for session in await run(label, 20) for r in session]
                    # The most any request needed (fewer when, say, no message on the page
                    # has a contact sender): what must not grow with the page size.
                    by_size[label][size] = max(r.statements for r in fresh)
            actions.page, actions.list_page = PAGE, LIST_PAGE
    finally:
        await engine.dispose()
    if stats.errors:
        raise SystemExit(f"the measurement pass failed: {dict(stats.first_errors)}")
    per_request = {}
    for kind, items in sessions.items():
        requests = [r for session in items for r in session]
        per_request[kind] = {
            "mean": sum(r.statements for r in requests) / len(requests),
            "min": min(r.statements for r in requests),
            "max": max(r.statements for r in requests),
            "transactions": sum(len(r.transactions) for r in requests) / len(requests),
            "requests": len(requests),
        }
    return sessions, per_request, by_size


# --- the raw-SQL limit -------------------------------------------------------------------------


async def _init_connection(conn: asyncpg.Connection) -> None:
    """The JSON codecs SQLAlchemy's asyncpg dialect installs, so parameters and results are
    handled the same way."""
    await conn.set_type_codec(
        "json",
        encoder=str.encode,
        decoder=lambda b: json.loads(b.decode()),
        schema="pg_catalog",
        format="binary",
    )
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda s: b"\x01" + s.encode(),
        decoder=lambda b: json.loads(b[1:].decode()),
        schema="pg_catalog",
        format="binary",
    )


def _substitute(value: Any, mapping: dict[Any, Any]) -> Any:
    if not mapping:
        return value
    if isinstance(value, list):
        return [_substitute(v, mapping) for v in value]
    if isinstance(value, str | int) and not isinstance(value, bool):
        return mapping.get(value, value)
    return value


class RawActions:
    """Replays the recorded statements of each session through an asyncpg pool; each request
    of a session (a page, a persist) is timed on its own, as over HTTP."""

    def __init__(self, pool: asyncpg.Pool, sessions: Sessions, run_id: str):
        self.pool = pool
        self.cycles = {kind: itertools.cycle(items) for kind, items in sessions.items()}
        self.run_id = run_id
        self.counter = itertools.count()

    async def _replay(self, stats: Stats, kind: str, fresh: bool) -> None:
        for request in next(self.cycles[kind]):
            await self._request(stats, kind, request, fresh)

    async def _request(self, stats: Stats, kind: str, request: Recorded, fresh: bool) -> None:
        mapping: dict[Any, Any] = {}
        if fresh:
            for key in request.keys:
                mapping[key] = f"raw-{self.run_id}-{next(self.counter)}"
        began = time.perf_counter()
        try:
            for transaction, generic in zip(
                request.transactions, request.generic_plans, strict=True
            ):
                assert request.tenant is not None, "a transaction is always a tenant's"
                begin = begin_with_tenant(request.tenant, generic_plans=generic)
                async with self.pool.acquire() as conn:
                    await self._transaction(conn, begin, transaction, mapping, fresh)
        except asyncpg.PostgresError as error:
            stats.add(kind, began, False, repr(error))
            return
        stats.add(kind, began, True)

    @staticmethod
    async def _transaction(
        conn: Any,
        begin: str,
        transaction: list[tuple[str, list[Any], Any]],
        mapping: dict[Any, Any],
        fresh: bool,
    ) -> None:
        # As the service sends them: the tenant with BEGIN, the statements, COMMIT.
        await conn.execute(begin)
        try:
            for sql, params, first in transaction:
                rows = await conn.fetch(sql, *[_substitute(p, mapping) for p in params])
                got = rows[0][0] if rows else None
                if fresh and isinstance(first, int) and got != first and first > 1000:
                    mapping[first] = got
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")

    async def timeline(self, post: Any, stats: Stats) -> None:
        await self._replay(stats, "timeline", False)

    async def conversations(self, post: Any, stats: Stats) -> None:
        await self._replay(stats, "conversations", False)

    async def conversations_channel(self, post: Any, stats: Stats) -> None:
        await self._replay(stats, "conversations_channel", False)

    async def persist_inbound(self, post: Any, stats: Stats) -> None:
        await self._replay(stats, "persist_inbound", True)

    async def persist_outbound(self, post: Any, stats: Stats) -> None:
        await self._replay(stats, "persist_outbound", True)

    async def persist_replay(self, post: Any, stats: Stats) -> None:
        await self._replay(stats, "persist_replay", False)

    async def persist_batch(self, post: Any, stats: Stats) -> None:
        await self._replay(stats, "persist_batch", True)


async def _no_http() -> tuple[Post, Callable[[], Awaitable[None]]]:
    async def nothing() -> None:
        return None

    return None, nothing  # type: ignore[return-value]


# --- processes: the service, the peer, resource sampling ---------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A server in a subprocess, its process tree sampled for RSS and CPU."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path):
        self.name = name
        self.log = log
        self.handle = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.peak_rss = 0
        self._sampler: asyncio.Task[None] | None = None

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    async def wait_ready(self, port: int, path: str, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: see {self.log}")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                line = await reader.readline()
                writer.close()
                if line[9:12] in (b"200", b"400", b"404", b"405"):
                    break
            except OSError:
                pass
            await asyncio.sleep(0.2)
        else:
            raise SystemExit(f"{self.name} did not start: see {self.log}")
        self._sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, self.rss())
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self._sampler:
            self._sampler.cancel()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.handle.close()


def postgres_cpu(data_directory: str | None) -> float | None:
    """CPU seconds the PostgreSQL server has used so far, when it runs on this machine and we
    can see it: its live processes, and those that have exited. Autovacuum workers (after the
    deletions between runs) and parallel workers come and go within a run; when one exits,
    the kernel adds its CPU to the postmaster's children times, which count here. Summing the
    live processes only, as before, showed their CPU as "other" work on the machine."""
    if not data_directory:
        return None
    pidfile = Path(data_directory) / "postmaster.pid"
    try:
        root = psutil.Process(int(pidfile.read_text().split()[0]))
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                t = child.cpu_times()
                total += t.user + t.system
    except (OSError, ValueError, psutil.Error):
        return None
    return total


def ensure_peer() -> Path | None:
    """PostGraphile 4 under tests/bench/.peer (npm install on first use); None if impossible."""
    binary = PEER_DIR / "node_modules" / ".bin" / "postgraphile"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if not npm:
        print("npm not found: no peer")
        return None
    PEER_DIR.mkdir(parents=True, exist_ok=True)
    print(f"installing postgraphile@{PEER_VERSION} into {PEER_DIR} …", flush=True)
    done = subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(PEER_DIR),
            f"postgraphile@{PEER_VERSION}",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not binary.exists():
        print(f"could not install PostGraphile: {done.stderr[-500:]}")
        return None
    return binary


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Options:
    messages: int
    url: str
    concurrency: int
    duration: float
    warmup: float
    sample: int
    workloads: list[str]
    targets: list[str]
    pool_size: int
    serve_args: list[str]
    peer_workers: int
    label: str | None
    seed: int
    repeat: int
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def app_url(self) -> str:
        """What the service connects as: omni_app, bound by row-level security."""
        from omni_store.persistence.roles import app_url

        return app_url(self.url)


async def run(opts: Options) -> dict[str, Any]:
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"sampling the data set ({scale_name(opts.messages)}) …", flush=True)
    sample = await load_sample(opts.url, opts.seed, opts.sample)
    print(
        f"  {sample.counts['messages']:,} messages, {len(sample.timeline)} timeline "
        f"conversations, {len(sample.threads)} threads for new messages",
        flush=True,
    )
    async with _pg(opts.url) as conn:
        # As the tests and the embedded server do: the service's role may log in.
        await conn.execute("ALTER ROLE omni_app LOGIN")
        server_version = await conn.fetchval("SHOW server_version")
        data_directory = None
        with contextlib.suppress(asyncpg.PostgresError):
            data_directory = await conn.fetchval("SHOW data_directory")
        db_size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
    pg_cpu = lambda: postgres_cpu(data_directory)  # noqa: E731

    results: dict[str, Any] = {
        "scale": scale_name(opts.messages),
        "label": opts.label,
        "counts": sample.counts,
        "database_size": db_size,
        "server_version": server_version,
        "batch_size": BATCH_SIZE,
        "runs": {},
    }
    written_after = sample.max_message_id
    sessions: Sessions = {}
    if "raw" in opts.targets:  # lever comparisons (service against service) skip it
        print("measurement pass (in process, statements captured) …", flush=True)
        t = time.monotonic()
        sessions, per_request, by_size = await measurement_pass(
            opts.app_url, sample, opts.run_id, opts.pool_size
        )
        results["statements"] = per_request
        results["statements_by_page_size"] = by_size
        print(f"  done in {time.monotonic() - t:.0f}s: {json.dumps(per_request)}", flush=True)
    async with _pg(opts.url) as conn:
        after_measurement = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM messages"))

    async def measure(
        target: str, workload: str, actions: Any, opener: Any, proc: Process | None
    ) -> None:
        if proc:
            proc.peak_rss = proc.rss()
        pg_before = pg_cpu()
        proc_before = proc.cpu_seconds() if proc else 0.0
        self_before = sum(os.times()[:2])
        machine_before = psutil.cpu_times()
        stats = await drive(
            actions,
            WORKLOADS[workload],
            opener,
            concurrency=opts.concurrency,
            duration=opts.duration,
            warmup=opts.warmup,
        )
        elapsed = opts.duration + opts.warmup
        summary = stats.summary()
        pg_after = pg_cpu()
        machine_after = psutil.cpu_times()
        idle = (machine_after.idle - machine_before.idle) + (
            machine_after.iowait - machine_before.iowait
        )
        busy = sum(machine_after) - sum(machine_before) - idle
        cpu: dict[str, float | None] = {
            "server": ((proc.cpu_seconds() - proc_before) / elapsed) if proc else None,
            "postgres": (pg_after - pg_before) / elapsed
            if pg_after is not None and pg_before is not None
            else None,
            "driver": (sum(os.times()[:2]) - self_before) / elapsed,
        }
        # What else ran on the machine meanwhile (other people's work, not this benchmark).
        cpu["other"] = max(0.0, busy / elapsed - sum(v or 0.0 for v in cpu.values()))
        summary["cpu"] = cpu
        if proc:
            summary["peak_rss_mb"] = proc.peak_rss / 2**20
        runs = results["runs"].setdefault(workload, {})
        best = runs.get(target)
        summary["repeats_rps"] = [*(best or {}).get("repeats_rps", []), summary["all"]["rps"]]
        if best is None or summary["all"]["rps"] >= best["all"]["rps"]:
            runs[target] = summary  # best of the repeats
        else:
            best["repeats_rps"] = summary["repeats_rps"]
        a = summary["all"]
        print(
            f"  {target:7} {workload:22} {a['rps']:8.1f} req/s  p50 {a['p50']:7.1f}  "
            f"p95 {a['p95']:7.1f}  p99 {a['p99']:7.1f} ms  errors {a['errors']}  "
            f"cpu {' '.join(f'{k} {v:.2f}' for k, v in cpu.items() if v is not None)}"
            + (f"  first: {summary['first_errors']}" if summary.get("first_errors") else ""),
            flush=True,
        )

    logs = RESULTS_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    reads = [w for w in opts.workloads if w in READS]
    writes = [w for w in opts.workloads if w not in READS]
    service = peer = lever = None
    pool = None
    # Every target is started first and stays up (idle when not loaded), so that each workload
    # runs on the targets back to back: the comparisons are made minutes apart at most.
    try:
        if "service" in opts.targets:
            secret = secrets.token_urlsafe(32)
            service_port = free_port()
            env = {
                **os.environ,
                "DATABASE_URL": opts.app_url,
                "OMNI_STORE_JWT_SECRET": secret,
                "OMNI_STORE_POOL_SIZE": str(opts.pool_size),
                "PYTHONPATH": str(REPO),
            }
            # With a "lever" target, the lever's options go to a second service and the first
            # runs with the defaults: an A/B comparison, side by side.
            serve_args = [] if "lever" in opts.targets else opts.serve_args
            argv = [sys.executable, "-m", "tests.bench.serve", "--port", str(service_port)]
            service = Process("service", argv + serve_args, env, REPO, logs / "service.log")
            await service.wait_ready(service_port, "/healthz")
            results["service_command"] = " ".join(["python -m tests.bench.serve", *serve_args])
            service_actions = Actions(sample, secret, opts.run_id + "s")
            if "lever" in opts.targets:
                lever_port = free_port()
                argv = [sys.executable, "-m", "tests.bench.serve", "--port", str(lever_port)]
                lever = Process("lever", argv + opts.serve_args, env, REPO, logs / "lever.log")
                await lever.wait_ready(lever_port, "/healthz")
                results["lever_command"] = " ".join(
                    ["python -m tests.bench.serve", *opts.serve_args]
                )
                lever_actions = Actions(sample, secret, opts.run_id + "l")
        if "raw" in opts.targets:
            pool = await asyncpg.create_pool(
                opts.app_url,
                min_size=opts.pool_size,
                max_size=opts.pool_size,
                init=_init_connection,
                server_settings={"application_name": "omni-bench-raw"},
            )
            raw = RawActions(pool, sessions, opts.run_id + "r")
        binary = ensure_peer() if "peer" in opts.targets and reads else None
        if binary:
            peer_port = free_port()
            argv = [
                str(binary),
                "-c",
                libpq_url(opts.url),
                "--schema",
                "public",
                "--host",
                "127.0.0.1",
                "--port",
                str(peer_port),
                "--disable-query-log",
                "--dynamic-json",
                "--disable-graphiql",
                "--max-pool-size",
                str(opts.pool_size),
            ]
            if opts.peer_workers > 1:
                # Node's cluster: the primary accepts and deals connections out in turn.
                argv += ["--cluster-workers", str(opts.peer_workers)]
            peer = Process("peer", argv, dict(os.environ), PEER_DIR, logs / "peer.log")
            await peer.wait_ready(peer_port, "/graphql", within=90)
            results["peer_version"] = _peer_version()
            peer_actions = PeerActions(sample, None, opts.run_id + "p")

        for workload in reads:
            for _ in range(opts.repeat):
                if service:
                    await measure(
                        "service", workload, service_actions, http_opener(service_port), service
                    )
                if lever:
                    await measure("lever", workload, lever_actions, http_opener(lever_port), lever)
                if pool and workload in RAW_WORKLOADS:
                    await measure("raw", workload, raw, _no_http, None)
                if peer and workload in PEER_WORKLOADS:
                    await measure("peer", workload, peer_actions, http_opener(peer_port), peer)
        # Writes: new messages, then re-deliveries of those, then everything written is
        # deleted again before the next target, so every target writes into the same data.
        groups = [[w for w in writes if w != "mixed"], ["mixed"] if "mixed" in writes else []]
        for group in [g for g in groups if g]:
            for _ in range(opts.repeat):
                if service:
                    for workload in group:
                        await measure(
                            "service",
                            workload,
                            service_actions,
                            http_opener(service_port),
                            service,
                        )
                    await delete_written(opts.url, after_measurement)
                    service_actions.sent.clear()
                if lever:
                    for workload in group:
                        await measure(
                            "lever", workload, lever_actions, http_opener(lever_port), lever
                        )
                    await delete_written(opts.url, after_measurement)
                    lever_actions.sent.clear()
                if pool:
                    for workload in group:
                        await measure("raw", workload, raw, _no_http, None)
                    await delete_written(opts.url, after_measurement)
        if service:
            results["service_peak_rss_mb"] = max(
                r["service"].get("peak_rss_mb", 0)
                for r in results["runs"].values()
                if "service" in r
            )
        if peer:
            results["peer_peak_rss_mb"] = max(
                r["peer"].get("peak_rss_mb", 0) for r in results["runs"].values() if "peer" in r
            )
    finally:
        for proc in (service, lever, peer):
            if proc:
                proc.stop()
        if pool:
            await pool.close()
        await delete_written(opts.url, written_after)
    results["environment"] = environment(opts, loop_name, server_version)
    return results


@contextlib.asynccontextmanager
async def _pg(url: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


def _peer_version() -> str:
    try:
        package = PEER_DIR / "node_modules" / "postgraphile" / "package.json"
        return str(json.loads(package.read_text())["version"])
    except (OSError, KeyError, ValueError):
        return "?"


def environment(opts: Options, loop_name: str, server_version: str) -> dict[str, Any]:
    from importlib.metadata import version

    import sqlalchemy
    import strawberry  # noqa: F401
    import uvicorn

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    node = shutil.which("node")
    node_version = (
        subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        if node
        else None
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "strawberry": version("strawberry-graphql"),
        "sqlalchemy": sqlalchemy.__version__,
        "asyncpg": asyncpg.__version__,
        "uvicorn": uvicorn.__version__,
        "postgresql": server_version,
        "node": node_version,
        "driver_loop": loop_name,
        "concurrency": opts.concurrency,
        "duration": opts.duration,
        "warmup": opts.warmup,
        "pool_size": opts.pool_size,
        "peer_workers": opts.peer_workers,
        "serve_args": opts.serve_args,
        "repeat": opts.repeat,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", default="100k", help="scale of a generated data set")
    parser.add_argument("--database-url", help="the server the data set was generated on")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds before measuring")
    parser.add_argument("--sample", type=int, default=200, help="sessions in the sample")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument(
        "--targets",
        default="service,raw,peer",
        help="service, raw, peer; and lever: a second service with the --serve options, "
        "run side by side with the default one",
    )
    parser.add_argument("--pool-size", type=int, default=10, help="service's, raw's and peer's")
    parser.add_argument(
        "--batch", type=int, default=100, help="messages per persistMessages request"
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="generate the data set anew (it is generated anyway when missing)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per workload and target, alternating targets; the best is reported",
    )
    parser.add_argument(
        "--label", help="a lever experiment: results go to results/<scale>-<label>.*"
    )
    parser.add_argument(
        "--peer-workers",
        type=int,
        default=1,
        help="PostGraphile processes (its --cluster-workers), to compare with --workers N",
    )
    parser.add_argument(
        "--serve",
        default="",
        help="extra options of tests.bench.serve (levers), e.g. '--loop asyncio --http h11'",
    )
    args = parser.parse_args(argv)
    global BATCH_SIZE  # read by every Actions built below
    BATCH_SIZE = args.batch
    messages = parse_scale(args.messages)
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"unknown workloads: {sorted(unknown)}; known: {list(WORKLOADS)}")
    server = server_url(args.database_url)
    name = database_name(messages)
    if args.regenerate or not asyncio.run(database_exists(server, name)):
        # One command per scale: the data set is generated on first use (same seed).
        from tests.bench import generate

        generate_args = ["--messages", scale_name(messages), "--seed", str(args.seed)]
        if args.database_url:
            generate_args += ["--database-url", args.database_url]
        generate.main(generate_args)
    opts = Options(
        messages=messages,
        url=with_database(server, name),
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        sample=args.sample,
        workloads=workloads,
        targets=[t for t in args.targets.split(",") if t],
        pool_size=args.pool_size,
        serve_args=args.serve.split(),
        peer_workers=args.peer_workers,
        label=args.label,
        seed=args.seed,
        repeat=args.repeat,
    )
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    results = runner(run(opts))
    from tests.bench.report import write_report

    stem = scale_name(messages) + (f"-{args.label}" if args.label else "")
    paths = write_report(results, RESULTS_DIR, stem)
    print("\n".join(f"wrote {p.relative_to(REPO)}" for p in paths))


if __name__ == "__main__":
    main()
