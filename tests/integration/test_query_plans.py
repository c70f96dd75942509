"""Plan shape (never time) of the timeline and conversation-list queries.

The statements are the repositories' own (captured as they run, explained with the same
parameters, as ``omni_app`` under row-level security), on a data set made here in a second:
one tenant with 3 channel accounts, 3,000 conversations of Zipf-like sizes and 60,000 messages,
then ANALYZE. That is enough for the planner to mean it: each statement must use its intended
index and have no Sort and no Seq Scan node. The same checks run on a generated benchmark data
set with ``python -m tests.bench.plans --messages 1M``.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.enums import Channel
from omni_store.persistence.tenancy import TenantId
from tests.bench.plans import Case, plan_cases

CONTACTS = 1_500
CONVERSATIONS = 3_000
MESSAGES = 60_000


async def _make_data_set(engine: AsyncEngine, tenant: uuid.UUID) -> tuple[int, int]:
    """A moderate data set for one tenant, in a handful of set-based statements."""
    async with engine.begin() as conn:
        accounts = (
            await conn.execute(
                text(
                    "INSERT INTO channel_accounts "
                    "(tenant_id, channel, external_account_id, fallback_window_seconds) "
                    "SELECT :t, c, 'plan-' || c, 86400 "
                    "FROM unnest(ARRAY['LINE', 'FACEBOOK', 'SHOPEE']) AS c "
                    "RETURNING id, channel"
                ),
                {"t": tenant},
            )
        ).all()
        account_ids = [a.id for a in accounts]
        channels = [a.channel for a in accounts]
        await conn.execute(
            text(
                "INSERT INTO contacts (tenant_id, channel_account_id, external_user_id, "
                "display_name) "
                "SELECT :t, (CAST(:a AS bigint[]))[1 + g % 3], 'U' || g, 'Contact ' || g "
                "FROM generate_series(1, :n) AS g"
            ),
            {"t": tenant, "a": account_ids, "n": CONTACTS},
        )
        # Conversation g belongs to contact g % CONTACTS (so to that contact's account).
        await conn.execute(
            text(
                """
                INSERT INTO conversations (tenant_id, channel_account_id, channel, thread_key,
                                           external_thread_id, contact_id, last_message_at)
                SELECT :t, ct.channel_account_id, (CAST(:c AS text[]))[1 + (g % :nc) % 3],
                       't:plan-' || g, 'plan-' || g, ct.id, timestamptz '2026-01-01'
                FROM generate_series(1, :n) AS g
                JOIN contacts ct ON ct.tenant_id = :t AND ct.external_user_id = 'U' || (g % :nc + 1)
                """
            ),
            {"t": tenant, "c": channels, "n": CONVERSATIONS, "nc": CONTACTS},
        )
        # Zipf-like sizes: message g goes to the conversation of rank ~ u^3 (u uniform).
        await conn.execute(
            text(
                """
                WITH conv AS (
                    SELECT row_number() OVER (ORDER BY id) AS rank, id, channel_account_id,
                           contact_id
                    FROM conversations WHERE tenant_id = :t
                ), msg AS (
                    SELECT g, 1 + floor(:nconv * power((abs(hashtext(g::text)) % 10000)
                                                       / 10000.0, 3))::int AS rank
                    FROM generate_series(1, :n) AS g
                )
                INSERT INTO messages (tenant_id, channel_account_id, conversation_id, contact_id,
                    direction, sender_type, sender_external_id, content_type, content_text,
                    external_message_id, idempotency_key, channel_timestamp, status,
                    content_hash)
                SELECT :t, conv.channel_account_id, conv.id, conv.contact_id,
                       CASE WHEN g % 2 = 0 THEN 'INBOUND' ELSE 'OUTBOUND' END,
                       CASE WHEN g % 2 = 0 THEN 'CONTACT' ELSE 'AGENT' END,
                       'x-' || g, 'TEXT', 'สวัสดีค่ะ message ' || g, 'mid-' || g, 'mid-' || g,
                       timestamptz '2025-01-01' + g * interval '1 minute',
                       CASE WHEN g % 2 = 0 THEN 'RECEIVED' ELSE 'SENT' END,
                       sha256(convert_to('mid-' || g, 'UTF8'))
                FROM msg JOIN conv USING (rank)
                """
            ),
            {"t": tenant, "n": MESSAGES, "nconv": CONVERSATIONS - 1},
        )
        await conn.execute(
            text(
                "INSERT INTO attachments (tenant_id, message_id, position, kind, url) "
                "SELECT tenant_id, id, 0, 'IMAGE', 'https://cdn.example.com/' || id || '.jpg' "
                "FROM messages WHERE tenant_id = :t AND id % 7 = 0"
            ),
            {"t": tenant},
        )
        await conn.execute(
            text(
                "UPDATE conversations c SET last_message_at = m.at "
                "FROM (SELECT conversation_id, max(channel_timestamp) AS at FROM messages "
                "      WHERE tenant_id = :t GROUP BY 1) m "
                "WHERE c.tenant_id = :t AND c.id = m.conversation_id"
            ),
            {"t": tenant},
        )
        busiest = (
            await conn.execute(
                text(
                    "SELECT conversation_id FROM messages WHERE tenant_id = :t "
                    "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
                ),
                {"t": tenant},
            )
        ).scalar_one()
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(
            text("ANALYZE channel_accounts, contacts, conversations, messages, attachments")
        )
    return busiest, account_ids[0]


@pytest.fixture(scope="module")
async def planned(engine: AsyncEngine, app_engine: AsyncEngine) -> dict[str, Case]:
    tenant = TenantId(uuid.uuid4())
    busiest, account = await _make_data_set(engine, tenant)
    cases = await plan_cases(app_engine, tenant, busiest, Channel.LINE, account)
    return {case.name: case for case in cases}


FIRST_PAGES = [
    "timeline, first page",
    "last message of a page of conversations",
    "conversation list, first page",
    "conversation list, one channel, first page",
    "conversation list, one channel account, first page",
]
CURSOR_PAGES = [
    "timeline, page after a cursor",
    "conversation list, page after a cursor",
    "conversation list, one channel, page after a cursor",
    "conversation list, one channel account, page after a cursor",
]


def _check(case: Case) -> None:
    assert case.explained, f"{case.name}: no statement captured"
    for explained in case.explained:
        problems = case.problems(explained)
        assert not problems, f"{case.name}: {'; '.join(problems)}\n{explained.render()}"


@pytest.mark.parametrize("name", FIRST_PAGES)
def test_first_pages_use_their_index_without_sort_or_seq_scan(
    planned: dict[str, Case], name: str
) -> None:
    _check(planned[name])


@pytest.mark.parametrize("name", CURSOR_PAGES)
def test_pages_after_a_cursor_use_their_index_without_sort_or_seq_scan(
    planned: dict[str, Case], name: str
) -> None:
    _check(planned[name])


def test_the_page_after_a_cursor_is_read_from_its_index(planned: dict[str, Case]) -> None:
    """Whatever wraps it, the page itself is an index range from the cursor (no OFFSET)."""
    for name in CURSOR_PAGES:
        case = planned[name]
        for explained in case.explained:
            assert case.index in explained.indexes, f"{name}\n{explained.render()}"
            assert "OFFSET" not in explained.sql.upper(), name
