"""EXPLAIN of the exact SQL the repositories emit for the timeline and the conversation list.

    python -m tests.bench.plans --messages 1M      # on a generated data set

The statements are captured from the repositories themselves (a listener of the units of work),
then explained with the same bound parameters on the same connection: what is checked is what
runs, as the role the service runs as (``omni_app``, row-level security on). Each plan must
use the intended index and contain no Sort, Seq Scan or parallel (Gather) node.
``tests/integration/test_query_plans.py`` runs the same checks on a moderate data set it makes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.cursors import PageRequest
from omni_store.persistence.database import Database, UnitOfWork, listen
from omni_store.persistence.enums import Channel
from omni_store.persistence.repositories import Relations
from omni_store.persistence.tenancy import TenantId

# The intended indexes, by their columns (names are the schema's business; these are not).
TIMELINE_INDEX = ("messages", ("tenant_id", "conversation_id", "channel_timestamp", "id"))
LIST_INDEX = ("conversations", ("tenant_id", "last_message_at", "id"))
CHANNEL_INDEX = ("conversations", ("tenant_id", "channel", "last_message_at", "id"))
ACCOUNT_INDEX = (
    "conversations",
    ("tenant_id", "channel_account_id", "last_message_at", "id"),
)
# A page of at most 101 rows never wants parallel workers: starting them costs more.
FORBIDDEN = ("Seq Scan", "Sort", "Incremental Sort", "Gather", "Gather Merge")
ALL_RELATIONS = Relations(contact=True, last_message=True)

_INDEX_BY_COLUMNS = text(
    """
    SELECT i.indexrelid::regclass::text
    FROM pg_index i
    WHERE i.indrelid = CAST(:table AS regclass)
      AND ARRAY(
          SELECT a.attname::text
          FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          ORDER BY k.ord
      ) = CAST(:columns AS text[])
    """
)


async def index_named(engine: AsyncEngine, table: str, columns: tuple[str, ...]) -> str:
    """The name of the index on exactly ``columns`` of ``table`` (in that order)."""
    async with engine.connect() as conn:
        names = (
            (await conn.execute(_INDEX_BY_COLUMNS, {"table": table, "columns": list(columns)}))
            .scalars()
            .all()
        )
    if not names:
        raise LookupError(f"no index on {table} ({', '.join(columns)})")
    return str(names[0])


@dataclass
class Explained:
    name: str
    sql: str
    plan: dict[str, Any]

    def nodes(self) -> Iterator[dict[str, Any]]:
        stack = [self.plan]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.get("Plans", []))

    @property
    def node_types(self) -> list[str]:
        return [n["Node Type"] for n in self.nodes()]

    @property
    def indexes(self) -> set[str]:
        return {n["Index Name"] for n in self.nodes() if "Index Name" in n}

    def problems(self, *indexes: str) -> list[str]:
        found = [
            f"does not use {index} (uses {sorted(self.indexes) or 'no index'})"
            for index in indexes
            if index not in self.indexes
        ]
        bad = [t for t in self.node_types if t in FORBIDDEN]
        if bad:
            found.append(f"has {', '.join(sorted(set(bad)))}")
        return found

    def render(self) -> str:
        def walk(node: dict[str, Any], depth: int) -> Iterator[str]:
            label = node["Node Type"]
            if "Index Name" in node:
                label += f" using {node['Index Name']}"
            if "Relation Name" in node and "Index Name" not in node:
                label += f" on {node['Relation Name']}"
            yield "  " * depth + "-> " + label
            for child in node.get("Plans", []):
                yield from walk(child, depth + 1)

        return "\n".join(walk(self.plan, 0))


async def explain_calls(
    engine: AsyncEngine,
    tenant: TenantId,
    call: Callable[[UnitOfWork], Awaitable[Any]],
    *,
    contains: str,
) -> list[Explained]:
    """Run ``call`` in a unit of work, capturing its statements; EXPLAIN those whose SQL
    contains ``contains``, with the very parameters they were run with. As the service's
    reads run them: prepared, and their generic plan (``Database.transaction``)."""
    captured: list[tuple[str, Any]] = []

    def record(uow: Any, statement: str, params: Any, rows: Any) -> None:
        captured.append((statement, params))

    stop = listen(engine, record)
    try:
        async with Database(engine).transaction(tenant, generic_plans=True) as uow:
            await call(uow)
    finally:
        stop()
    out = []
    # Explained as the service runs it: same role and tenant (row-level security), in a
    # transaction begun as its reads begin (generic plans, no parallel ones).
    async with Database(engine).transaction(tenant, generic_plans=True) as uow:
        for statement, params in captured:
            if contains not in statement:
                continue
            # A generic plan does not depend on the values: EXECUTE takes no parameters of
            # its own, so NULLs stand for them (EXPLAIN (GENERIC_PLAN) is PostgreSQL 16+).
            await uow.execute(text(f"PREPARE omni_explained AS {statement}"))
            nulls = ", ".join(["NULL"] * len(params or ()))
            result = await uow.execute(
                text(f"EXPLAIN (FORMAT JSON) EXECUTE omni_explained({nulls})")
            )
            await uow.execute(text("DEALLOCATE omni_explained"))
            raw = result.scalar_one()
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            out.append(Explained(contains, statement, plan))
    return out


@dataclass
class Case:
    name: str
    index: str
    explained: list[Explained]
    also: tuple[str, ...] = ()  # indexes its joins must use too

    def problems(self, explained: Explained) -> list[str]:
        return explained.problems(self.index, *self.also)


async def plan_cases(
    engine: AsyncEngine,
    tenant: TenantId,
    conversation_id: int,
    channel: Channel,
    channel_account_id: int,
) -> list[Case]:
    """The timeline and list statements of one tenant: first pages, and pages after a cursor
    (the keyset bound and the hasPreviousPage probe)."""
    cases: list[Case] = []
    timeline_index = await index_named(engine, *TIMELINE_INDEX)

    async def timeline(uow: UnitOfWork, after: str | None = None) -> Any:
        return await uow.messages.timeline(conversation_id, PageRequest(first=50, after=after))

    async with Database(engine).transaction(tenant) as uow:
        first = await timeline(uow)
    cases.append(
        Case(
            "timeline, first page",
            timeline_index,
            await explain_calls(engine, tenant, timeline, contains="FROM messages"),
        )
    )
    if first.end_cursor:
        cases.append(
            Case(
                "timeline, page after a cursor",
                timeline_index,
                await explain_calls(
                    engine,
                    tenant,
                    lambda uow: timeline(uow, first.end_cursor),
                    contains="FROM messages",
                ),
            )
        )
    cases.append(
        Case(
            "last message of a page of conversations",
            timeline_index,
            await explain_calls(
                engine,
                tenant,
                lambda uow: uow.messages.latest_by_conversations([conversation_id, 1, 2]),
                contains="FROM messages",
            ),
        )
    )
    for label, columns, kw in (
        ("conversation list", LIST_INDEX, {}),
        ("conversation list, one channel", CHANNEL_INDEX, {"channel": channel}),
        (
            "conversation list, one channel account",
            ACCOUNT_INDEX,
            {"channel_account_id": channel_account_id},
        ),
    ):
        index = await index_named(engine, *columns)

        async def listing(uow: UnitOfWork, after: str | None = None, kw: Any = kw) -> Any:
            # As the inbox reads it: with each conversation's contact and last message.
            listed = await uow.conversations.list_with(
                PageRequest(first=25, after=after), ALL_RELATIONS, **kw
            )
            return listed.page

        async with Database(engine).transaction(tenant) as uow:
            page = await listing(uow)
        cases.append(
            Case(
                f"{label}, first page",
                index,
                await explain_calls(engine, tenant, listing, contains="FROM conversations"),
                also=(timeline_index,),  # the last messages
            )
        )
        if page.end_cursor:
            cursor = page.end_cursor
            cases.append(
                Case(
                    f"{label}, page after a cursor",
                    index,
                    await explain_calls(
                        engine,
                        tenant,
                        lambda uow, cursor=cursor, listing=listing: listing(uow, cursor),
                        contains="FROM conversations",
                    ),
                    also=(timeline_index,),
                )
            )
    return cases


def report(cases: list[Case]) -> tuple[str, bool]:
    lines, ok = [], True
    for case in cases:
        for explained in case.explained:
            problems = case.problems(explained)
            ok = ok and not problems
            verdict = "ok" if not problems else "; ".join(problems)
            lines.append(f"{case.name}: {verdict}\n{explained.render()}\n")
    return "\n".join(lines), ok


async def _main(url: str) -> bool:
    import asyncpg

    from omni_store.persistence.database import create_engine
    from omni_store.persistence.roles import app_url

    conn = await asyncpg.connect(url)
    try:
        # The busiest tenant, its busiest conversation, its busiest channel and account.
        tenant = await conn.fetchval(
            "SELECT tenant_id FROM conversations GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        )
        conversation = await conn.fetchval(
            "SELECT conversation_id FROM messages WHERE tenant_id = $1 "
            "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
            tenant,
        )
        channel, account = await conn.fetchrow(
            "SELECT channel, channel_account_id FROM conversations WHERE tenant_id = $1 "
            "GROUP BY 1, 2 ORDER BY count(*) DESC LIMIT 1",
            tenant,
        )
    finally:
        await conn.close()
    engine = create_engine(app_url(url), pool_size=2)  # as the service: omni_app
    try:
        async with engine.connect() as c:
            await c.execute(text("SELECT 1"))
        cases = await plan_cases(engine, TenantId(tenant), conversation, Channel(channel), account)
    finally:
        await engine.dispose()
    text_, ok = report(cases)
    print(text_)
    print("all plans as intended" if ok else "SOME PLANS ARE NOT AS INTENDED")
    return ok


def main(argv: list[str] | None = None) -> int:
    from tests.bench.common import database_name, parse_scale, server_url, with_database

    parser = argparse.ArgumentParser(prog="python -m tests.bench.plans", description=__doc__)
    parser.add_argument("--messages", default="1M")
    parser.add_argument("--database-url")
    args = parser.parse_args(argv)
    server = server_url(args.database_url)
    url = with_database(server, database_name(parse_scale(args.messages)))
    return 0 if asyncio.run(_main(url)) else 1


if __name__ == "__main__":
    sys.exit(main())
