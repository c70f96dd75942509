"""Generate a benchmark data set: reproducible from a seed, bulk-loaded with COPY.

    python -m tests.bench.generate --messages 1M            # embedded PostgreSQL under .data/
    python -m tests.bench.generate --messages 100k --database-url postgresql://...

It (re)creates the database ``omni_bench_<scale>`` on the server, applies the migrations (and
lets ``omni_app``, the role the service connects as, log in, as the tests do),
loads tenants' channel accounts, contacts, conversations, messages and attachments with
``COPY`` (asyncpg ``copy_records_to_table``, never the API), moves the identity sequences past
the loaded ids, verifies the foreign keys and ``last_message_at``, and runs ``ANALYZE``.

Shapes:
- tenants of Zipf-like sizes, each with 2 to 4 channel accounts on distinct channels;
- conversation sizes Zipf-like (a few very long timelines, many short ones), capped;
- 70 % of conversations carry a channel thread id, the rest use the fallback thread key
  (contact + 24 h bucket, computed by the service's own ``thread_key``) and stay inside it;
- messages in global channel-time order (ids follow arrival, not conversation), Thai and
  English text, ~55 % inbound, attachments on ~15 %, marketplace ``content_struct`` on ~10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
import uuid
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from tqdm import tqdm

from omni_store.persistence.database import create_engine
from omni_store.persistence.enums import Channel
from omni_store.persistence.migrate import upgrade
from omni_store.persistence.roles import enable_app_login
from omni_store.persistence.threads import thread_key
from tests.bench.common import (
    database_name,
    parse_scale,
    recreate_database,
    scale_name,
    server_url,
    with_database,
)

# The data set's clock: a fixed year ending here, so a seed gives the same rows every time.
END = datetime(2026, 11, 1, tzinfo=UTC)
START = END - timedelta(days=365)
SPAN_MS = int((END - START).total_seconds() * 1000)
DAY_MS = 86_400_000
CONV_BITS = 20  # conversation index in the low bits of a message's sort key
BATCH = 20_000

THAI_PHRASES = [
    "สวัสดีค่ะ",
    "สวัสดีครับ",
    "สินค้านี้ยังมีอยู่ไหมคะ",
    "มีไซซ์ M ไหมครับ",
    "ส่งของวันไหนคะ",
    "โอนเงินแล้วนะคะ",
    "ขอบคุณมากค่ะ",
    "รบกวนเช็คเลขพัสดุให้หน่อยครับ",
    "ราคาเท่าไหร่คะ",
    "มีโปรโมชั่นไหมคะ",
    "ได้รับของแล้วค่ะ สวยมาก",
    "ขอเปลี่ยนสีได้ไหมครับ",
    "เก็บเงินปลายทางได้ไหมคะ",
    "รอสักครู่นะคะ กำลังตรวจสอบให้ค่ะ",
    "ทางร้านจัดส่งภายใน 2 วันค่ะ",
    "ยินดีให้บริการค่ะ",
]
ENGLISH_PHRASES = [
    "Hi there!",
    "Is this still available?",
    "Do you have it in size L?",
    "When will my order ship?",
    "I've paid, please check.",
    "Thanks a lot!",
    "Can I change the colour?",
    "What's the tracking number?",
    "Your order has been shipped.",
    "We'll get back to you shortly.",
    "Sorry for the delay.",
    "Cash on delivery is available.",
    "Here is the product link.",
    "Please send your address.",
]
FIRST_NAMES = ["Malee", "Somchai", "Nok", "Ploy", "Anan", "Kanya", "John", "Emma", "Wei", "Aom"]
THAI_NAMES = ["มาลี", "สมชาย", "นก", "พลอย", "อนันต์", "กัญญา", "ปิยะ", "อร"]
AGENTS = ["Agent Nok", "Agent Ploy", "Agent Max", "แอดมินเจ", "Agent Sam", "Agent Fah"]
BOTS = ["Order Bot", "FAQ Bot"]
ATTACHMENT_KINDS = [
    ("IMAGE", "image/jpeg", "jpg", 0.62),
    ("VIDEO", "video/mp4", "mp4", 0.1),
    ("AUDIO", "audio/m4a", "m4a", 0.08),
    ("FILE", "application/pdf", "pdf", 0.1),
    ("STICKER", "image/png", "png", 0.1),
]


def zipf_sizes(rng: random.Random, count: int, total: int, *, s: float, cap: int) -> list[int]:
    """``count`` sizes of Zipf-like shape (rank^-s, shuffled), each in [1, cap], summing to
    ``total`` exactly."""
    if count > total:
        raise ValueError("more conversations than messages")
    cap = max(cap, -(-total // count))
    weights = [r ** (-s) for r in range(1, count + 1)]
    rng.shuffle(weights)

    def sizes_for(factor: float) -> list[int]:
        return [min(cap, max(1, int(w * factor))) for w in weights]

    lo, hi = 0.0, float(total) / min(weights) + 1
    for _ in range(45):
        mid = (lo + hi) / 2
        if sum(sizes_for(mid)) > total:
            hi = mid
        else:
            lo = mid
    sizes = sizes_for(lo)
    missing = total - sum(sizes)
    while missing > 0:
        i = rng.randrange(count)
        if sizes[i] < cap:
            sizes[i] += 1
            missing -= 1
    return sizes


@dataclass
class Plan:
    """Everything but the messages themselves, planned up front (they are streamed)."""

    tenants: list[uuid.UUID]
    accounts: list[tuple[Any, ...]] = field(default_factory=list)
    contacts: list[tuple[Any, ...]] = field(default_factory=list)
    conversations: list[tuple[Any, ...]] = field(default_factory=list)
    # Per conversation index: tenant index, account id, contact id, conversation id.
    conv_tenant: array = field(default_factory=lambda: array("H"))
    conv_account: array = field(default_factory=lambda: array("q"))
    conv_contact: array = field(default_factory=lambda: array("q"))
    keys: list[int] = field(default_factory=list)


def external_user_id(contact_id: int) -> str:
    return f"U{contact_id:010d}"


def plan_dataset(seed: int, messages: int, tenants: int) -> Plan:
    rng = random.Random(seed)
    conversations = max(10, min(messages, messages // 20))
    if conversations >= 1 << CONV_BITS:
        raise SystemExit(f"at most {(1 << CONV_BITS) * 20:,} messages (widen CONV_BITS)")
    plan = Plan([uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(tenants)])
    tenant_weights = [(k + 1) ** -0.8 for k in range(tenants)]
    channels = list(Channel)

    tenant_accounts: list[list[tuple[int, str]]] = []
    account_id = 0
    for t, tenant in enumerate(plan.tenants):
        mine = []
        for channel in rng.sample(channels, rng.randint(2, 4)):
            account_id += 1
            created = START - timedelta(days=rng.randint(1, 300))
            plan.accounts.append(
                (
                    tenant,
                    account_id,
                    channel.value,
                    f"{channel.value.lower()}-{t}-{account_id}",
                    f"{channel.value.title()} shop {t}-{account_id}",
                    86_400,
                    created,
                )
            )
            mine.append((account_id, channel.value))
        tenant_accounts.append(mine)

    sizes = zipf_sizes(rng, conversations, messages, s=0.9, cap=max(200, messages // 500))
    contacts_of: dict[int, list[int]] = {}
    fallback_taken: set[tuple[int, int, int]] = set()
    contact_id = 0
    cum = list(_accumulate(tenant_weights))
    t_choices = rng.choices(range(tenants), cum_weights=cum, k=conversations)
    plan.keys = []
    for ci in tqdm(range(conversations), desc="plan", unit="conv", mininterval=0.5):
        t = t_choices[ci]
        tenant = plan.tenants[t]
        account, channel = rng.choice(tenant_accounts[t])
        n = sizes[ci]
        threaded = n > 200 or rng.random() < 0.7
        known = contacts_of.setdefault(account, [])
        reuse = known and rng.random() < (0.15 if threaded else 0.5)
        if reuse:
            contact = rng.choice(known)
        else:
            contact_id += 1
            contact = contact_id
            known.append(contact)
            thai = rng.random() < 0.6
            name = rng.choice(THAI_NAMES if thai else FIRST_NAMES)
            profile = (
                json.dumps({"language": "th" if thai else "en", "followed": True})
                if rng.random() < 0.5
                else None
            )
            first_seen = START + timedelta(milliseconds=rng.randrange(SPAN_MS))
            plan.contacts.append(
                (
                    tenant,
                    contact,
                    account,
                    external_user_id(contact),
                    name,
                    f"https://cdn.example.com/avatars/{contact}.jpg",
                    profile,
                    first_seen,
                    first_seen,
                )
            )
        if threaded:
            gap_ms = rng.expovariate(1 / 1_800_000)  # mean 30 min between messages
            duration = min(SPAN_MS - 1, int(n * gap_ms) + 1)
            begin = rng.randrange(SPAN_MS - duration)
            external_thread = f"th-{account}-{ci}"
            key = thread_key(
                external_thread_id=external_thread,
                external_user_id=None,
                channel_timestamp=END,
                window_seconds=86_400,
            )
        else:
            while True:
                bucket = rng.randrange(SPAN_MS // DAY_MS)
                if (account, contact, bucket) not in fallback_taken:
                    fallback_taken.add((account, contact, bucket))
                    break
            begin, duration = bucket * DAY_MS, DAY_MS - 1
            external_thread = None
            key = thread_key(
                external_thread_id=None,
                external_user_id=external_user_id(contact),
                channel_timestamp=START + timedelta(milliseconds=begin),
                window_seconds=86_400,
            )
        stamps = [begin + int(rng.random() * duration) for _ in range(n)]
        plan.keys.extend((ms << CONV_BITS) | ci for ms in stamps)
        first, last = min(stamps), max(stamps)
        plan.conversations.append(
            (
                tenant,
                ci + 1,
                account,
                channel,
                key,
                external_thread,
                contact,
                START + timedelta(milliseconds=last),
                START + timedelta(milliseconds=first),
            )
        )
        plan.conv_tenant.append(t)
        plan.conv_account.append(account)
        plan.conv_contact.append(contact)
    # Global arrival order: ids follow channel time across all conversations, as in production.
    plan.keys.sort()
    return plan


def _accumulate(values: list[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


MESSAGE_COLUMNS = [
    "tenant_id",
    "id",
    "channel_account_id",
    "conversation_id",
    "contact_id",
    "direction",
    "sender_type",
    "sender_external_id",
    "sender_display_name",
    "sender_avatar_url",
    "content_type",
    "content_text",
    "content_struct",
    "external_message_id",
    "idempotency_key",
    "reply_to_external_message_id",
    "channel_timestamp",
    "created_at",
    "status",
    "content_hash",
]
ATTACHMENT_COLUMNS = [
    "tenant_id",
    "id",
    "message_id",
    "position",
    "kind",
    "url",
    "mime_type",
    "size_bytes",
    "file_name",
    "width",
    "height",
    "duration_ms",
    "external_id",
    "metadata",
    "created_at",
]


class MessageFactory:
    """Builds message and attachment rows batch by batch, from its own seeded generator."""

    def __init__(self, seed: int, plan: Plan) -> None:
        self.rng = random.Random(seed + 1)
        self.plan = plan
        rng = self.rng
        self.texts = [
            " ".join(rng.choice(THAI_PHRASES) for _ in range(rng.randint(1, 3))) for _ in range(600)
        ] + [
            " ".join(rng.choice(ENGLISH_PHRASES) for _ in range(rng.randint(1, 3)))
            for _ in range(400)
        ]
        self.structs = [self._struct(i) for i in range(500)]
        self.attachment_id = 0
        self.kinds = [k for k in ATTACHMENT_KINDS]
        self.kind_weights = _accumulate([k[3] for k in ATTACHMENT_KINDS])

    def _struct(self, i: int) -> tuple[str, str]:
        rng = self.rng
        if i % 2:
            return "PRODUCT", json.dumps(
                {
                    "type": "product",
                    "marketplace": rng.choice(["SHOPEE", "LAZADA", "TIKTOK_SHOP"]),
                    "productId": str(rng.randrange(10**9)),
                    "name": rng.choice(["เสื้อยืด Oversize", "Running shoes", "กระเป๋าผ้า"]),
                    "price": {"amount": rng.randrange(99, 4999), "currency": "THB"},
                    "imageUrl": f"https://cdn.example.com/p/{i}.jpg",
                },
                ensure_ascii=False,
            )
        return "ORDER", json.dumps(
            {
                "type": "order",
                "orderId": f"2611{rng.randrange(10**8):08d}",
                "status": rng.choice(["TO_SHIP", "SHIPPED", "COMPLETED"]),
                "items": [{"sku": f"SKU-{rng.randrange(1000)}", "qty": rng.randint(1, 3)}],
                "total": {"amount": rng.randrange(99, 9999), "currency": "THB"},
            }
        )

    def batch(self, first_id: int, keys: list[int]) -> tuple[list[tuple], list[tuple]]:
        rng = self.rng
        plan = self.plan
        mask = (1 << CONV_BITS) - 1
        tenants = plan.tenants
        rows: list[tuple] = []
        attachments: list[tuple] = []
        random_ = rng.random
        for offset, key in enumerate(keys):
            mid = first_id + offset
            ci = key & mask
            at = START + timedelta(milliseconds=key >> CONV_BITS)
            created = at + timedelta(milliseconds=200 + int(random_() * 4000))
            tenant = tenants[plan.conv_tenant[ci]]
            account = plan.conv_account[ci]
            contact = plan.conv_contact[ci]
            inbound = random_() < 0.55
            roll = random_()
            text: str | None = None
            struct = None
            n_attach = 0
            if roll < 0.15:
                n_attach = 1 if random_() < 0.7 else (2 if random_() < 0.66 else rng.randint(3, 4))
                text = rng.choice(self.texts) if random_() < 0.3 else None
                content_type = ""  # from the first attachment's kind
            elif roll < 0.25:
                content_type, struct = self.structs[int(random_() * len(self.structs))]
                text = rng.choice(self.texts) if random_() < 0.4 else None
            else:
                content_type = "TEXT"
                text = self.texts[int(random_() * len(self.texts))]
            if n_attach:
                kinds = rng.choices(self.kinds, cum_weights=self.kind_weights, k=n_attach)
                content_type = kinds[0][0]
                for position, (kind, mime, ext, _) in enumerate(kinds):
                    self.attachment_id += 1
                    visual = kind in ("IMAGE", "VIDEO", "STICKER")
                    timed = kind in ("VIDEO", "AUDIO")
                    attachments.append(
                        (
                            tenant,
                            self.attachment_id,
                            mid,
                            position,
                            kind,
                            f"https://cdn.example.com/m/{mid}/{position}.{ext}",
                            mime,
                            rng.randrange(2_000, 20_000_000),
                            f"file-{mid}-{position}.{ext}",
                            rng.choice((640, 1080, 1280)) if visual else None,
                            rng.choice((480, 720, 1920)) if visual else None,
                            rng.randrange(1_000, 600_000) if timed else None,
                            f"att-{mid}-{position}",
                            None,
                            created,
                        )
                    )
            if inbound:
                sender = ("CONTACT", external_user_id(contact), None, None)
                status = "RECEIVED"
                external_id = f"mid-{mid}"
                key_ = external_id
            else:
                who = random_()
                if who < 0.8:
                    name = AGENTS[int(random_() * len(AGENTS))]
                    sender = ("AGENT", f"agent-{name.split()[-1].lower()}", name, None)
                elif who < 0.95:
                    name = BOTS[int(random_() * len(BOTS))]
                    sender = ("BOT", "bot-1", name, "https://cdn.example.com/bot.png")
                else:
                    sender = ("SYSTEM", None, "System", None)
                status = ("SENT", "DELIVERED", "READ")[int(random_() * 3)]
                external_id = f"mid-{mid}" if random_() < 0.9 else None
                key_ = f"reply-{mid}"
            rows.append(
                (
                    tenant,
                    mid,
                    account,
                    ci + 1,
                    contact,
                    "INBOUND" if inbound else "OUTBOUND",
                    *sender,
                    content_type,
                    text,
                    struct,
                    external_id,
                    key_,
                    None,
                    at,
                    created,
                    status,
                    hashlib.sha256(key_.encode()).digest(),
                )
            )
        return rows, attachments


async def load(url: str, seed: int, messages: int, tenants: int, verify: bool) -> None:
    t0 = time.monotonic()
    engine = create_engine(url, pool_size=1, statement_timeout_ms=0)
    try:
        await upgrade(engine)
        # The service connects as omni_app, bound by row-level security (as in the tests).
        await enable_app_login(engine)
    finally:
        await engine.dispose()
    print(f"migrated ({time.monotonic() - t0:.1f}s); planning {messages:,} messages", flush=True)

    plan = plan_dataset(seed, messages, tenants)
    print(
        f"planned {len(plan.tenants)} tenants, {len(plan.accounts)} channel accounts, "
        f"{len(plan.contacts):,} contacts, {len(plan.conversations):,} conversations "
        f"({time.monotonic() - t0:.1f}s)",
        flush=True,
    )
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.copy_records_to_table(
            "channel_accounts",
            records=plan.accounts,
            columns=[
                "tenant_id",
                "id",
                "channel",
                "external_account_id",
                "display_name",
                "fallback_window_seconds",
                "created_at",
            ],
        )
        await conn.copy_records_to_table(
            "contacts",
            records=plan.contacts,
            columns=[
                "tenant_id",
                "id",
                "channel_account_id",
                "external_user_id",
                "display_name",
                "avatar_url",
                "profile",
                "created_at",
                "updated_at",
            ],
        )
        for start in range(0, len(plan.conversations), 50_000):
            await conn.copy_records_to_table(
                "conversations",
                records=plan.conversations[start : start + 50_000],
                columns=[
                    "tenant_id",
                    "id",
                    "channel_account_id",
                    "channel",
                    "thread_key",
                    "external_thread_id",
                    "contact_id",
                    "last_message_at",
                    "created_at",
                ],
            )
        # The big tables load without their keys and indexes, which are rebuilt afterwards
        # from their own definitions: several times faster than maintaining them row by row.
        restore = await drop_keys_and_indexes(conn, ("messages", "attachments"))
        factory = MessageFactory(seed, plan)
        keys = plan.keys
        attachments = 0

        def make(i: int) -> tuple[list[tuple], list[tuple]]:
            return factory.batch(i + 1, keys[i : i + BATCH])

        with tqdm(total=len(keys), desc="messages", unit="msg", unit_scale=True) as bar:
            pending = asyncio.create_task(asyncio.to_thread(make, 0))
            for i in range(0, len(keys), BATCH):
                rows, attached = await pending
                if i + BATCH < len(keys):
                    # Build the next batch while PostgreSQL ingests this one.
                    pending = asyncio.create_task(asyncio.to_thread(make, i + BATCH))
                await conn.copy_records_to_table("messages", records=rows, columns=MESSAGE_COLUMNS)
                if attached:
                    await conn.copy_records_to_table(
                        "attachments", records=attached, columns=ATTACHMENT_COLUMNS
                    )
                attachments += len(attached)
                bar.update(len(rows))
        print(f"loaded {attachments:,} attachments ({time.monotonic() - t0:.1f}s)", flush=True)
        # Keys, unique constraints and indexes are rebuilt (a duplicate would fail here), and
        # every foreign key is validated by PostgreSQL itself.
        await restore_keys_and_indexes(conn, restore)
        print(
            f"rebuilt {len({name for name, _ in restore})} keys and indexes, "
            f"foreign keys validated ({time.monotonic() - t0:.1f}s)",
            flush=True,
        )

        for table in ("channel_accounts", "contacts", "conversations", "messages", "attachments"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        if verify:
            await verify_dataset(conn)
            print(f"verified ({time.monotonic() - t0:.1f}s)", flush=True)
        await conn.execute("VACUUM (ANALYZE)")
        print(f"vacuumed and analyzed ({time.monotonic() - t0:.1f}s)", flush=True)
        size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"done: database {size}, {time.monotonic() - t0:.0f}s in all")
    finally:
        await conn.close()


async def drop_keys_and_indexes(
    conn: asyncpg.Connection, tables: tuple[str, ...]
) -> list[tuple[str, str]]:
    """Drop the keys, unique constraints, indexes and foreign keys of ``tables`` (and the foreign
    keys pointing at them); return the statements that recreate them exactly, in order."""
    rows = await conn.fetch(
        """
        SELECT c.conrelid::regclass::text AS tbl, c.conname, c.contype::text AS contype,
               pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c
        WHERE (c.conrelid::regclass::text = ANY($1::text[]) AND c.contype IN ('p', 'u', 'f'))
           OR (c.confrelid::regclass::text = ANY($1::text[]) AND c.contype = 'f')
        """,
        list(tables),
    )
    indexes = await conn.fetch(
        """
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
        FROM pg_index i
        WHERE i.indrelid::regclass::text = ANY($1::text[])
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        """,
        list(tables),
    )
    constraints = sorted(rows, key=lambda r: r["contype"] == "f")  # keys before foreign keys
    for r in reversed(constraints):
        await conn.execute(f'ALTER TABLE {r["tbl"]} DROP CONSTRAINT "{r["conname"]}"')
    for r in indexes:
        await conn.execute(f'DROP INDEX "{r["name"]}"')
    restore = [
        (r["conname"], f'ALTER TABLE {r["tbl"]} ADD CONSTRAINT "{r["conname"]}" {r["def"]}')
        for r in constraints
        if r["contype"] != "f"
    ]
    restore += [(r["name"], r["def"]) for r in indexes]
    for r in constraints:
        if r["contype"] == "f":
            name, table = r["conname"], r["tbl"]
            restore.append(
                (name, f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {r["def"]} NOT VALID')
            )
            restore.append((name, f'ALTER TABLE {table} VALIDATE CONSTRAINT "{name}"'))
    return restore


async def restore_keys_and_indexes(
    conn: asyncpg.Connection, restore: list[tuple[str, str]]
) -> None:
    for name, statement in tqdm(restore, desc="keys and indexes", unit="stmt"):
        try:
            await conn.execute(statement)
        except asyncpg.PostgresError as error:
            raise SystemExit(f"rebuilding {name} failed: {error}") from error


async def verify_dataset(conn: asyncpg.Connection) -> None:
    """Each conversation's last_message_at is its latest message's channel time."""
    wrong = await conn.fetchval(
        "SELECT count(*) FROM conversations c WHERE c.last_message_at IS DISTINCT FROM "
        "(SELECT max(m.channel_timestamp) FROM messages m "
        " WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id)"
    )
    if wrong:
        raise SystemExit(f"{wrong} conversations have a wrong last_message_at")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.generate", description=__doc__)
    parser.add_argument("--messages", default="100k", help="scale: 100k, 1M, 10M or a number")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server (any database on it); default: the embedded server under "
        "tests/bench/.data",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the check of last_message_at"
    )
    args = parser.parse_args(argv)
    messages = parse_scale(args.messages)
    server = server_url(args.database_url)
    name = database_name(messages)
    asyncio.run(recreate_database(server, name))
    print(f"database {name} (scale {scale_name(messages)}) created", flush=True)
    asyncio.run(
        load(with_database(server, name), args.seed, messages, args.tenants, not args.no_verify)
    )


if __name__ == "__main__":
    sys.exit(main())
