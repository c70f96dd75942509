"""SQL-level levers, measured in isolation against what the repositories emit today.

    python -m tests.bench.levers --messages 1M keyset

``keyset``: a page read after a cursor. Until c48df17, ``_keyset_page``
(persistence/repositories.py) wrapped the page in ``SELECT page.*, EXISTS(... (key) <op>
cursor OR (key) = cursor) FROM (SELECT 1) one LEFT JOIN (page) ON true ORDER BY page.key``: a
Sort node over the page, and an OR of row comparisons that the planner may answer with a Seq
Scan or a BitmapOr over every row on the cursor's side. Since c48df17 it reads the page
straight from its index with the flag as an uncorrelated scalar subquery (an InitPlan,
computed once) on one inclusive row comparison (``(key) <= cursor``: a single index range that
stops at the first row); only an empty page needs a second statement for the flag. This
measures the two shapes against each other ("before" and "after"), as ``omni_app`` inside a
transaction with ``app.tenant_id`` set, exactly as the service runs them, on the same cursors:
page 2, and cursors in the middle of the connection ("deep").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from typing import Any

import asyncpg

from tests.bench.common import database_name, parse_scale, server_url, with_database

MESSAGE_COLUMNS = (
    "tenant_id, id, channel_account_id, conversation_id, contact_id, direction, sender_type, "
    "sender_external_id, sender_display_name, sender_avatar_url, content_type, content_text, "
    "content_struct, external_message_id, idempotency_key, reply_to_external_message_id, "
    "channel_timestamp, created_at, status"
)
CONVERSATION_COLUMNS = (
    "tenant_id, id, channel_account_id, channel, thread_key, external_thread_id, contact_id, "
    "last_message_at, created_at"
)

# The shape before c48df17 (as _keyset_page rendered it, column lists aside).
TIMELINE_BEFORE = f"""
SELECT page.*, EXISTS (
    SELECT 1 FROM messages WHERE tenant_id = $1 AND conversation_id = $2
      AND ((channel_timestamp, id) < ($3, $4) OR (channel_timestamp, id) = ($3, $4))
  ) AS beyond_cursor
FROM (SELECT 1 AS one) AS one LEFT OUTER JOIN (
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE tenant_id = $1 AND conversation_id = $2 AND (channel_timestamp, id) > ($3, $4)
    ORDER BY channel_timestamp ASC, id ASC LIMIT 51
) AS page ON true
ORDER BY page.channel_timestamp ASC, page.id ASC"""

TIMELINE_AFTER = f"""
SELECT {MESSAGE_COLUMNS}, (SELECT EXISTS (
    SELECT 1 FROM messages WHERE tenant_id = $1 AND conversation_id = $2
      AND (channel_timestamp, id) <= ($3, $4))) AS beyond_cursor
FROM messages
WHERE tenant_id = $1 AND conversation_id = $2 AND (channel_timestamp, id) > ($3, $4)
ORDER BY channel_timestamp ASC, id ASC LIMIT 51"""

LIST_BEFORE = f"""
SELECT page.*, EXISTS (
    SELECT 1 FROM conversations WHERE tenant_id = $1
      AND ((last_message_at, id) > ($2, $3) OR (last_message_at, id) = ($2, $3))
  ) AS beyond_cursor
FROM (SELECT 1 AS one) AS one LEFT OUTER JOIN (
    SELECT {CONVERSATION_COLUMNS} FROM conversations
    WHERE tenant_id = $1 AND (last_message_at, id) < ($2, $3)
    ORDER BY last_message_at DESC, id DESC LIMIT 26
) AS page ON true
ORDER BY page.last_message_at DESC, page.id DESC"""

LIST_AFTER = f"""
SELECT {CONVERSATION_COLUMNS}, (SELECT EXISTS (
    SELECT 1 FROM conversations WHERE tenant_id = $1
      AND (last_message_at, id) >= ($2, $3))) AS beyond_cursor
FROM conversations
WHERE tenant_id = $1 AND (last_message_at, id) < ($2, $3)
ORDER BY last_message_at DESC, id DESC LIMIT 26"""


def plan_nodes(plan: dict[str, Any]) -> list[str]:
    out, stack = [], [plan]
    while stack:
        node = stack.pop()
        label = node["Node Type"]
        if "Index Name" in node:
            label += f"({node['Index Name']})"
        out.append(label)
        stack.extend(node.get("Plans", []))
    return out


async def timed(
    pool: asyncpg.Pool, sql: str, cases: list[tuple[Any, ...]], seconds: float, concurrency: int
) -> dict[str, float]:
    """Throughput and latency of ``sql`` over ``cases`` (tenant first), each in its own
    transaction with the tenant set, from ``concurrency`` clients."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    picker = iter(range(10**9))

    async def client() -> None:
        while time.perf_counter() < end:
            case = cases[next(picker) % len(cases)]
            began = time.perf_counter()
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(case[0]))
                await conn.fetch(sql, *case)
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


async def keyset(owner_url: str, app_url: str, seconds: float, concurrency: int) -> None:
    rng = random.Random(6)
    conn = await asyncpg.connect(owner_url)
    try:
        # Timeline cursors: page 2 of busy conversations, and the middle of them.
        convs = await conn.fetch(
            "SELECT tenant_id, conversation_id, count(*) AS n FROM messages "
            "TABLESAMPLE SYSTEM (1) REPEATABLE (6) GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 200"
        )
        timeline: dict[str, list[tuple[Any, ...]]] = {"page 2": [], "deep": []}
        for c in convs:
            rows = await conn.fetch(
                "SELECT channel_timestamp, id FROM messages WHERE tenant_id = $1 "
                "AND conversation_id = $2 ORDER BY channel_timestamp, id",
                c["tenant_id"],
                c["conversation_id"],
            )
            if len(rows) > 100:
                for label, at in (("page 2", rows[49]), ("deep", rows[len(rows) // 2])):
                    timeline[label].append(
                        (c["tenant_id"], c["conversation_id"], at["channel_timestamp"], at["id"])
                    )
        lists: dict[str, list[tuple[Any, ...]]] = {"page 2": [], "deep": []}
        for t in await conn.fetch("SELECT DISTINCT tenant_id FROM channel_accounts"):
            rows = await conn.fetch(
                "SELECT last_message_at, id FROM conversations WHERE tenant_id = $1 "
                "ORDER BY last_message_at DESC, id DESC",
                t["tenant_id"],
            )
            if len(rows) > 100:
                lists["page 2"].append((t["tenant_id"], rows[24][0], rows[24][1]))
                for _ in range(20):
                    at = rows[rng.randrange(len(rows) // 4, 3 * len(rows) // 4)]
                    lists["deep"].append((t["tenant_id"], at[0], at[1]))
    finally:
        await conn.close()

    pool = await asyncpg.create_pool(app_url, min_size=10, max_size=10)
    results: dict[str, Any] = {}
    try:
        async with pool.acquire() as c, c.transaction():
            for name, sql, cases in (
                ("timeline, before", TIMELINE_BEFORE, timeline["page 2"]),
                ("timeline, after", TIMELINE_AFTER, timeline["page 2"]),
                ("list, before", LIST_BEFORE, lists["page 2"]),
                ("list, after", LIST_AFTER, lists["page 2"]),
            ):
                await c.execute("SELECT set_config('app.tenant_id', $1, true)", str(cases[0][0]))
                plan = json.loads(await c.fetchval("EXPLAIN (FORMAT JSON) " + sql, *cases[0]))
                print(f"{name}: {' > '.join(plan_nodes(plan[0]['Plan']))}")
                rows_now = await c.fetch(sql, *cases[0])
                results.setdefault("rows", {})[name] = len(rows_now)
        # Same rows, same order, same flag, on every cursor.
        async with pool.acquire() as c:
            for sqls, sets in (
                ((TIMELINE_BEFORE, TIMELINE_AFTER), timeline),
                ((LIST_BEFORE, LIST_AFTER), lists),
            ):
                for cases in sets.values():
                    for case in cases:
                        async with c.transaction():
                            await c.execute(
                                "SELECT set_config('app.tenant_id', $1, true)", str(case[0])
                            )
                            now = [tuple(r) for r in await c.fetch(sqls[0], *case)]
                            proposed = [tuple(r) for r in await c.fetch(sqls[1], *case)]
                        if now != proposed:
                            raise SystemExit(f"before and after differ on {case}")
        print("same rows and flags before and after on every cursor", flush=True)
        for what, sqls, sets in (
            ("timeline", (TIMELINE_BEFORE, TIMELINE_AFTER), timeline),
            ("conversation list", (LIST_BEFORE, LIST_AFTER), lists),
        ):
            for depth, cases in sets.items():
                if not cases:
                    continue
                now = await timed(pool, sqls[0], cases, seconds, concurrency)
                proposed = await timed(pool, sqls[1], cases, seconds, concurrency)
                print(
                    f"{what}, cursor at {depth} ({len(cases)} cursors): "
                    f"before {now['rps']:,.0f}/s p50 {now['p50_ms']:.2f} ms p99 "
                    f"{now['p99_ms']:.2f} ms; after {proposed['rps']:,.0f}/s p50 "
                    f"{proposed['p50_ms']:.2f} ms p99 {proposed['p99_ms']:.2f} ms; "
                    f"gain {proposed['rps'] / now['rps']:.2f}×",
                    flush=True,
                )
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    from omni_store.persistence.roles import app_url

    parser = argparse.ArgumentParser(prog="python -m tests.bench.levers", description=__doc__)
    parser.add_argument("lever", choices=["keyset"])
    parser.add_argument("--messages", default="1M")
    parser.add_argument("--database-url")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    server = server_url(args.database_url)
    owner = with_database(server, database_name(parse_scale(args.messages)))
    asyncio.run(keyset(owner, app_url(owner), args.seconds, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
