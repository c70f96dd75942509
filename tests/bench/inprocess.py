"""The service's own CPU per read page, in process: no network, no load driver, no peer.

    python -m tests.bench.inprocess --database-url postgresql://postgres@127.0.0.1:5432/omni_inproc
    python -m tests.bench.inprocess ... --profile 300        # and a cProfile top 30 by tottime
    python -m tests.bench.inprocess ... --save-bodies a.json # the response bodies, to diff

It (re)creates the database of the URL, migrates it as the tests do, stores one tenant's data
through the service's own write path (``service.persist_message``), then drives the real ASGI
app of :func:`omni_store.graph.app.create_app` with a minimal in-process ASGI caller (no httpx,
so the client's work is not counted), one request at a time, for the two read pages of the
benchmark: ``TIMELINE`` (``conversation.messages(first: 50)``) and ``CONVERSATIONS``
(``conversations(first: 25)``), the documents of tests/bench/run.py.

Reported per page, as the median (and the minimum) of ``--rounds`` rounds of ``--pages``
requests each:
- ``cpu``: this process's CPU time (``time.process_time``) per request: the service's Python
  work, without PostgreSQL's (another process) and without waiting for it;
- ``wall``: elapsed time per request, PostgreSQL round trips included.

The machine may be shared: compare medians of runs made close together, and repeat. Or count
instructions instead, which machine load does not change (same code, same count to 0.02 %):

    PYTHONHASHSEED=0 valgrind --tool=callgrind --toggle-collect=sys_call_tracing \
        --dump-after=sys_call_tracing --callgrind-out-file=cg.%p \
        python -m tests.bench.inprocess ... --keep-data --warmup 10 --pages 20 --callgrind
    grep ^totals cg.*.1 cg.*.2    # instructions of 20 timeline, then 20 conversation pages
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import itertools
import json
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import text

from omni_store.graph.app import create_app
from omni_store.graph.auth import ALL_SCOPES, mint_token
from omni_store.graph.ids import to_global_id
from omni_store.persistence import service
from omni_store.persistence.database import Database, create_engine
from omni_store.persistence.enums import AttachmentKind, Channel, ContentType, SenderType
from omni_store.persistence.migrate import upgrade
from omni_store.persistence.roles import app_url, enable_app_login
from omni_store.persistence.tenancy import TenantId
from tests import factories
from tests.bench.common import recreate_database, with_database
from tests.bench.run import BATCH, BATCH_SIZE, CONVERSATIONS, LIST_PAGE, PAGE, PERSIST, TIMELINE
from tests.garbage import cyclic_garbage

SECRET = "inprocess-bench-secret-0123456789abcdef"
CONVERSATION_COUNT = 30
TIMELINE_MESSAGES = 60


async def populate(db: Database, tenant: TenantId) -> int:
    """One tenant: two channel accounts, ``CONVERSATION_COUNT`` conversations of a few
    messages each, and one long timeline of ``TIMELINE_MESSAGES`` mixing inbound and outbound
    messages, attachments (~15 %) and structured content (~10 %), like the generated data set.
    Returns the id of the long conversation."""
    accounts = [
        await factories.channel_account(db, tenant, channel=Channel.LINE, external_account_id="oa"),
        await factories.channel_account(
            db, tenant, channel=Channel.SHOPEE, external_account_id="shop", display_name=None
        ),
    ]
    for i in range(CONVERSATION_COUNT):
        account = accounts[i % 2].id
        for j in range(3):
            await service.persist_message(
                db,
                tenant,
                factories.inbound(
                    account_id=account,
                    external_user_id=f"U-{i}",
                    display_name=f"Customer {i}",
                    thread=f"t-{i}",
                    when=factories.at(i * 10 + j),
                ),
            )
    long_thread = None
    for k in range(TIMELINE_MESSAGES):
        when = factories.at(10_000 + k)
        if k % 3 == 2:
            message = factories.outbound(
                account_id=accounts[0].id,
                thread="long",
                external_user_id="U-long",
                sender_type=SenderType.AGENT if k % 2 else SenderType.BOT,
                when=when,
            )
        else:
            message = factories.inbound(
                account_id=accounts[0].id,
                external_user_id="U-long",
                display_name="ลูกค้า Long",
                thread="long",
                when=when,
                content_type=ContentType.PRODUCT if k % 10 == 1 else ContentType.TEXT,
                struct={"productId": f"p-{k}", "price": {"amount": 199, "currency": "THB"}}
                if k % 10 == 1
                else None,
                attachments=[
                    factories.attachment(
                        kind=AttachmentKind.IMAGE,
                        external_id=f"img-{k}-{n}",
                        mime_type="image/jpeg",
                        size_bytes=12345,
                        width=640,
                        height=480,
                    )
                    for n in range(2)
                ]
                if k % 7 == 0
                else (),
            )
        result = await service.persist_message(db, tenant, message)
        long_thread = result.conversation_id
    assert long_thread is not None
    return long_thread


PERSIST_PAGE = "persist"
BATCH_PAGE = "batch"  # persistMessages of BATCH_SIZE new messages


def new_messages(account_id: int, conversation_id: int) -> Iterator[dict[str, Any]]:
    """New messages (keys unique to this run), as the benchmark's ``persist_new`` sends them:
    inbound into the long thread and outbound replies naming its conversation, in turn, ~15 %
    with one or two image attachments."""
    run = uuid.uuid4().hex[:8]
    account = to_global_id("ChannelAccount", account_id)
    conversation = to_global_id("Conversation", conversation_id)
    for n in itertools.count():
        key = f"inproc-{run}-{n}"
        message: dict[str, Any] = {
            "channelAccountId": account,
            "channelTimestamp": factories.at(10_000 + TIMELINE_MESSAGES + n / 1000).isoformat(),
            "content": {"type": "TEXT", "text": "ขอบคุณมากครับ" if n % 3 else "Thanks!"},
        }
        if n % 2 == 0:
            message |= {
                "direction": "INBOUND",
                "externalMessageId": key,
                "externalThreadId": "long",
                "contact": {"externalUserId": "U-long", "displayName": "ลูกค้า Long"},
            }
        else:
            message |= {
                "direction": "OUTBOUND",
                "idempotencyKey": key,
                "conversationId": conversation,
                "sender": {"type": "AGENT", "displayName": "Agent Nok", "externalId": "a-7"},
            }
        if n % 7 == 3:
            message["attachments"] = [
                {
                    "kind": "IMAGE",
                    "url": f"https://cdn.example.com/{key}/{i}.jpg",
                    "mimeType": "image/jpeg",
                    "sizeBytes": 120_000 + i,
                    "externalId": f"{key}-{i}",
                }
                for i in range(1 + n % 2)
            ]
        yield message


class AsgiCaller:
    """POSTs GraphQL bodies straight into an ASGI app, as an HTTP server would hand them."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str) -> None:
        self.app = app
        self.headers = [
            (b"host", b"omni.test"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
        ]

    async def post(self, body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "root_path": "",
            "query_string": b"",
            "headers": [*self.headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # no disconnect while the request runs
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


def body(query: str, variables: dict[str, Any]) -> bytes:
    return json.dumps({"query": query, "variables": variables}).encode()


async def measure(
    call: Callable[[], Awaitable[tuple[int, bytes]]], pages: int, rounds: int
) -> tuple[list[float], list[float]]:
    """(CPU ms, wall ms) per page, one of each per round."""
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(rounds):
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(pages):
            await call()
        c1, w1 = time.process_time(), time.perf_counter()
        cpu.append((c1 - c0) * 1000 / pages)
        wall.append((w1 - w0) * 1000 / pages)
    return cpu, wall


class Bench:
    """The database, the app and the two pages' request bodies, on one event loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.owner = create_engine(args.database_url, pool_size=2, statement_timeout_ms=0)
        self.app_engine = create_engine(app_url(args.database_url), pool_size=10)
        self.db = Database(self.app_engine)
        self.tenant = TenantId(uuid.UUID(int=0x5EED))
        self.pages: dict[str, bytes] = {}
        self.caller: AsgiCaller
        self.new_messages: Iterator[dict[str, Any]] = iter(())

    async def setup(self) -> None:
        args = self.args
        if not args.keep_data:
            name = args.database_url.rsplit("/", 1)[1]
            await recreate_database(with_database(args.database_url, "postgres"), name)
            await upgrade(self.owner)
            await enable_app_login(self.owner)
            long_thread = await populate(self.db, self.tenant)
        else:
            async with self.db.transaction(self.tenant) as uow:
                long_thread = (
                    await uow.execute(
                        text("SELECT id FROM conversations WHERE external_thread_id = 'long'")
                    )
                ).scalar_one()
        app = create_app(self.db, jwt_secret=SECRET, dispose_on_shutdown=False)
        token = mint_token(SECRET, tenant=self.tenant, scopes=list(ALL_SCOPES))
        self.caller = AsgiCaller(app, token)
        self.pages = {
            "timeline": body(
                TIMELINE, {"id": to_global_id("Conversation", long_thread), "first": PAGE}
            ),
            "conversations": body(CONVERSATIONS, {"first": LIST_PAGE}),
        }
        bodies: dict[str, Any] = {}
        for page, payload in self.pages.items():
            status, answer = await self.caller.post(payload)
            decoded = json.loads(answer)
            if status != 200 or "errors" in decoded:
                raise SystemExit(f"{page}: {status} {answer[:500]!r}")
            bodies[page] = decoded
        edges = {
            "timeline": len(bodies["timeline"]["data"]["conversation"]["messages"]["edges"]),
            "conversations": len(bodies["conversations"]["data"]["conversations"]["edges"]),
        }
        assert edges == {"timeline": PAGE, "conversations": LIST_PAGE}, edges
        account = await self._account_of(long_thread)
        self.new_messages = new_messages(account, long_thread)
        if args.save_bodies:
            text_out = json.dumps(bodies, indent=1, sort_keys=True, ensure_ascii=False)
            await asyncio.to_thread(Path(args.save_bodies).write_text, text_out + "\n")

    async def _account_of(self, conversation_id: int) -> int:
        async with self.db.transaction(self.tenant) as uow:
            conversation = await uow.conversations.get(conversation_id)
        assert conversation is not None
        return conversation.channel_account_id

    def call(self, page: str, times: int) -> Callable[[], Awaitable[tuple[int, bytes]]]:
        """A request of ``page``, for ``times`` requests: the same body each time, or for
        ``persist`` a new message each time (the bodies built before the clock starts)."""
        if page in (PERSIST_PAGE, BATCH_PAGE):
            if page == PERSIST_PAGE:
                bodies = [body(PERSIST, {"input": m}) for m in self.new_messages_of(times)]
            else:
                bodies = [
                    body(BATCH, {"input": {"messages": self.new_messages_of(BATCH_SIZE)}})
                    for _ in range(times)
                ]
            sent = iter(bodies)

            async def persist() -> tuple[int, bytes]:
                status, answer = await self.caller.post(next(sent))
                refused = b'"userErrors":[{' in answer or b'"deduplicated":true' in answer
                if status != 200 or refused or b'"errors"' in answer:
                    raise SystemExit(f"{page}: {status} {answer[:500]!r}")
                return status, answer

            return persist
        payload = self.pages[page]

        async def read() -> tuple[int, bytes]:
            return await self.caller.post(payload)

        return read

    def new_messages_of(self, count: int) -> list[dict[str, Any]]:
        return list(itertools.islice(self.new_messages, count))

    async def post(self, page: str, times: int) -> None:
        call = self.call(page, times)
        for _ in range(times):
            await call()

    async def measure(self, page: str) -> None:
        call = self.call(page, self.args.pages * self.args.rounds)

        cpu, wall = await measure(call, self.args.pages, self.args.rounds)
        print(
            f"{page:14s} cpu {statistics.median(cpu):6.2f} ms/page (min {min(cpu):6.2f})  "
            f"wall {statistics.median(wall):6.2f} ms/page  "
            f"({self.args.rounds} rounds x {self.args.pages} pages, median)",
            flush=True,
        )

    async def profile(self, page: str) -> None:
        args = self.args
        profiler = cProfile.Profile()
        profiler.enable()
        await self.post(page, args.profile)
        profiler.disable()
        text_out = io.StringIO()
        stats = pstats.Stats(profiler, stream=text_out)
        stats.sort_stats(args.sort).print_stats(*args.restrict, args.top)
        print(f"\n=== cProfile {page}: {args.profile} pages, top {args.top} by {args.sort}")
        print(text_out.getvalue())

    async def garbage(self, page: str) -> None:
        """What requests of ``page`` leave to the cyclic garbage collector: objects that
        reference counting could not free, per request, and their most common types."""
        requests = self.args.garbage
        with cyclic_garbage(lambda o: type(o).__qualname__) as kinds:
            await self.post(page, requests)
        total = sum(kinds.values())
        common = ", ".join(f"{name} {count / requests:.1f}" for name, count in kinds.most_common(8))
        print(f"{page:14s} cyclic garbage {total / requests:7.1f} objects/request ({common})")

    async def close(self) -> None:
        await self.app_engine.dispose()
        await self.owner.dispose()


def run(args: argparse.Namespace) -> None:
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        bench = Bench(args)
        try:
            runner.run(bench.setup())
            selected = [p for p in [*bench.pages, PERSIST_PAGE, BATCH_PAGE] if p in args.page]
            for page in selected:
                runner.run(bench.post(page, args.warmup))
                if args.callgrind:
                    # Under valgrind --tool=callgrind --toggle-collect=sys_call_tracing
                    # --dump-after=sys_call_tracing, only these requests are counted, one
                    # dump per page. call_tracing changes nothing when no tracer is set.
                    sys.call_tracing(runner.run, (bench.post(page, args.pages),))
                    print(f"{page}: {args.pages} pages counted", flush=True)
                else:
                    runner.run(bench.measure(page))
            if args.profile:
                for page in selected:
                    runner.run(bench.profile(page))
            if args.garbage:
                for page in selected:
                    runner.run(bench.garbage(page))
        finally:
            runner.run(bench.close())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.inprocess", description=__doc__)
    parser.add_argument(
        "--database-url",
        required=True,
        help="owner URL of a database to (re)create, e.g. postgresql://postgres@host/omni_x",
    )
    parser.add_argument("--keep-data", action="store_true", help="reuse the populated database")
    parser.add_argument(
        "--page", nargs="+", default=["timeline", "conversations"], help="also: persist, batch"
    )
    parser.add_argument("--pages", type=int, default=100, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--profile", type=int, default=0, help="pages to profile (0: none)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--garbage",
        type=int,
        default=0,
        help="requests per page for a census of their cyclic garbage (0: none)",
    )
    parser.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"])
    parser.add_argument(
        "--restrict", nargs="*", default=[], help="regexes on the profile's function names"
    )
    parser.add_argument("--save-bodies", help="write both pages' response bodies here (JSON)")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="after the warm-up, run --pages requests of each page inside sys.call_tracing, "
        "for valgrind --tool=callgrind --toggle-collect=sys_call_tracing "
        "--dump-after=sys_call_tracing (instructions per page, unaffected by machine load)",
    )
    parser.add_argument(
        "--loop",
        default="asyncio",
        choices=["asyncio", "uvloop"],
        help="event loop (the service's default, tests/bench/serve.py, is asyncio)",
    )
    args = parser.parse_args(argv)
    run(args)


if __name__ == "__main__":
    sys.exit(main())
