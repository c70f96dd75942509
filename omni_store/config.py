"""Settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if not raw:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data: the user's data directory."""
    return Path(platformdirs.user_data_dir("omni-store")) / "pgdata"


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None
    """What the service connects as; None means: start the embedded server."""
    migration_database_url: str | None
    """The tables' owner, for migrations; None means: DATABASE_URL."""
    allow_rls_bypass: bool
    """Serve even when the service's role is not bound by row-level security."""
    embedded_data_dir: Path
    jwt_secret: str | None
    pool_size: int
    pool_timeout_seconds: float
    """How long a request waits for a pooled connection before it fails with OVERLOADED."""
    statement_timeout_ms: int
    connect_timeout_seconds: float
    """How long opening a database connection may take before the request fails."""
    graphiql: bool
    introspection: bool
    workers: int
    """Processes serving requests (``omni-store serve --workers`` overrides it)."""

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = os.environ.get("OMNI_STORE_DATA_DIR")
        return cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            migration_database_url=os.environ.get("OMNI_STORE_MIGRATION_DATABASE_URL") or None,
            allow_rls_bypass=_bool("OMNI_STORE_ALLOW_RLS_BYPASS", False),
            embedded_data_dir=Path(data_dir) if data_dir else default_data_dir(),
            jwt_secret=os.environ.get("OMNI_STORE_JWT_SECRET") or None,
            pool_size=_int("OMNI_STORE_POOL_SIZE", 10),
            pool_timeout_seconds=_float("OMNI_STORE_POOL_TIMEOUT_SECONDS", 5),
            statement_timeout_ms=_int("OMNI_STORE_STATEMENT_TIMEOUT_MS", 5000),
            connect_timeout_seconds=_float("OMNI_STORE_CONNECT_TIMEOUT_SECONDS", 5),
            graphiql=_bool("OMNI_STORE_GRAPHIQL", True),
            introspection=_bool("OMNI_STORE_INTROSPECTION", True),
            workers=_int("OMNI_STORE_WORKERS", 1),
        )
