"""The service as the benchmark runs it: what ``omni-store serve`` does, with knobs for levers.

    DATABASE_URL=... OMNI_STORE_JWT_SECRET=... python -m tests.bench.serve --port 8765

Without options it is ``omni-store serve`` on an already migrated database: the same engine
(``omni_store.cli.service_engine``, settings from the same environment variables; DATABASE_URL
is the ``omni_app`` role, bound by row-level security), the same ``create_app``, uvicorn with
the same uvicorn options (``omni_store.cli.SERVER_OPTIONS``: uvloop, httptools, access log on).
One deliberate difference: no demo data is seeded.

The lever options change the service *here only*, by wrapping or patching it from outside, so
that each one can be measured in isolation before it is made in omni_store/:

- ``--loop asyncio --http h11``: uvicorn's pure-Python loop and parser (the service's before
  uvloop and httptools were adopted).
- ``--workers N``: N uvicorn worker processes (each with its own pool of ``--pool-size``).
- ``--pool-size N``: the SQLAlchemy pool (OMNI_STORE_POOL_SIZE).
- ``--stable-rules``: only the limiters' rule classes built once (see ``--caches``).
- ``--caches``: Strawberry's ParserCache and ValidationCache extensions (build_schema), with
  the depth and alias limiters' rule classes built once (else the validation cache misses).
- ``--no-access-log``: uvicorn without its per-request access log line.
- ``--gc-threshold N``: the garbage collector's first threshold (Python's default: 700).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Any

LEVERS_ENV = "OMNI_BENCH_LEVERS"


def _levers() -> dict[str, Any]:
    return json.loads(os.environ.get(LEVERS_ENV, "{}"))


def app_factory() -> Any:
    """The ASGI app, built in each worker process from the environment."""
    from omni_store.config import Settings
    from omni_store.graph import app as app_module
    from omni_store.persistence.database import Database, create_engine

    levers = _levers()
    if levers.get("gc_threshold"):
        import gc

        gc.set_threshold(levers["gc_threshold"], *gc.get_threshold()[1:])
    settings = Settings.from_env()
    assert settings.database_url, "DATABASE_URL is required"
    assert settings.jwt_secret, "OMNI_STORE_JWT_SECRET is required"

    if levers.get("caches") or levers.get("stable_rules"):
        from strawberry.extensions import AddValidationRules

        from omni_store.graph import schema as schema_module

        # QueryDepthLimiter and MaxAliasesLimiter build a new rule class per instance, and
        # build_schema makes an instance per request: the rule set, part of ValidationCache's
        # key, would differ on every request and the cache would never hit. Built once here.
        rules: dict[Any, Any] = {}

        def stable(limiter: Any) -> Any:
            def make(**kw: Any) -> Any:
                key = (limiter, tuple(sorted(kw.items())))
                if key not in rules:
                    rules[key] = list(limiter(**kw).validation_rules)
                return AddValidationRules(rules[key])

            return make

        schema_module.QueryDepthLimiter = stable(schema_module.QueryDepthLimiter)  # type: ignore[assignment]
        schema_module.MaxAliasesLimiter = stable(schema_module.MaxAliasesLimiter)  # type: ignore[assignment]
    if levers.get("caches"):
        from strawberry.extensions import ParserCache, ValidationCache

        original = app_module.build_schema

        def build_schema_with_caches(**kw: Any) -> Any:
            schema = original(**kw)
            schema.extensions = [
                *schema.extensions,
                lambda: ParserCache(maxsize=256),
                lambda: ValidationCache(maxsize=256),
            ]
            return schema

        app_module.build_schema = build_schema_with_caches  # type: ignore[assignment]
    try:
        from omni_store.cli import service_engine
    except ImportError:  # older trees
        service_engine = None
    if service_engine is not None:
        engine = service_engine(settings.database_url, settings)
    else:
        engine = create_engine(
            settings.database_url,
            pool_size=settings.pool_size,
            pool_timeout_seconds=settings.pool_timeout_seconds,
            statement_timeout_ms=settings.statement_timeout_ms,
        )
    return app_module.create_app(
        Database(engine),
        jwt_secret=settings.jwt_secret,
        graphiql=settings.graphiql,
        introspection=settings.introspection,
    )


def _server_options() -> Mapping[str, Any]:
    """``omni-store serve``'s uvicorn options; asyncio and h11 in trees older than them."""
    try:
        from omni_store.cli import SERVER_OPTIONS
    except ImportError:
        return {"loop": "asyncio", "http": "h11"}
    return SERVER_OPTIONS


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=1)
    served = _server_options()
    parser.add_argument("--loop", default=served["loop"], choices=["asyncio", "uvloop", "auto"])
    parser.add_argument("--http", default=served["http"], choices=["h11", "httptools", "auto"])
    parser.add_argument("--pool-size", type=int)
    parser.add_argument("--caches", action="store_true")
    parser.add_argument(
        "--stable-rules",
        action="store_true",
        help="only build the limiters' rule classes once (what --caches does besides adding the "
        "caches): enough for a ValidationCache that build_schema already has",
    )
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument(
        "--gc-threshold",
        type=int,
        help="the garbage collector's first threshold (allocations between young "
        "collections; Python's default is 700)",
    )
    parser.add_argument(
        "--shared-socket",
        action="store_true",
        help="with --workers N: uvicorn's own workers, sharing one socket (by default each "
        "worker has its own, as `omni-store serve --workers N` does)",
    )
    args = parser.parse_args()
    if args.pool_size:
        os.environ["OMNI_STORE_POOL_SIZE"] = str(args.pool_size)
    os.environ[LEVERS_ENV] = json.dumps(
        {
            "caches": args.caches,
            "stable_rules": args.stable_rules,
            "gc_threshold": args.gc_threshold,
        }
    )

    import uvicorn

    options: dict[str, Any] = {
        "log_level": "info",
        "timeout_graceful_shutdown": 30,
        **served,
        "factory": True,
        "loop": args.loop,
        "http": args.http,
        "access_log": not args.no_access_log,
    }
    if args.workers > 1 and not args.shared_socket:
        from omni_store.workers import serve_processes

        options.pop("factory")
        raise SystemExit(
            serve_processes(args.host, args.port, args.workers, app_factory, (), **options)
        )
    uvicorn.run(
        "tests.bench.serve:app_factory",
        host=args.host,
        port=args.port,
        workers=args.workers if args.workers > 1 else None,
        **options,
    )


if __name__ == "__main__":
    main()
