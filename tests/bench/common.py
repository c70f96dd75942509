"""What the generator, the runner and the plan checker share: scales, servers and databases."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / ".data"
PEER_DIR = BENCH_DIR / ".peer"
RESULTS_DIR = BENCH_DIR / "results"
EMBEDDED_DIR = DATA_DIR / "pg"

_SCALE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_scale(text: str) -> int:
    """``100k`` → 100000, ``1M`` → 1000000, ``2500`` → 2500."""
    match = _SCALE.match(text)
    if not match:
        raise ValueError(f"not a scale: {text!r} (try 100k, 1M or 10M)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * {"": 1, "k": 1_000, "m": 1_000_000}[unit])


def scale_name(messages: int) -> str:
    if messages % 1_000_000 == 0:
        return f"{messages // 1_000_000}M"
    if messages % 1_000 == 0:
        return f"{messages // 1_000}k"
    return str(messages)


def database_name(messages: int) -> str:
    return f"omni_bench_{scale_name(messages).lower()}"


def server_url(database_url: str | None) -> str:
    """The URL of the server to use: the one given, or the embedded one under .data/."""
    if database_url:
        return database_url
    from omni_store.persistence.embedded import start_embedded

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(DATA_DIR, 0o755)  # the embedded server runs as its own system user when root
    # Left running: the runner and the peer reuse it; `python -m tests.bench.generate --stop`
    # or a reboot stops it.
    return start_embedded(EMBEDDED_DIR, cleanup=None)


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database (query, e.g. a socket dir, is kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def libpq_url(url: str) -> str:
    """A URL node-postgres understands too: a Unix socket as ``?host=/dir`` with no host part."""
    parts = urlsplit(url)
    scheme = "postgresql"
    query = dict(parse_qsl(parts.query))
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode(query, safe="/")))


async def admin_connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(with_database(url, "postgres"))


async def recreate_database(url: str, name: str) -> None:
    conn = await admin_connect(url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def database_exists(url: str, name: str) -> bool:
    conn = await admin_connect(url)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()
