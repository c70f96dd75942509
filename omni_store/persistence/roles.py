"""Database roles: migrations run as the owner, the service as ``omni_app``.

Row-level security binds only roles that neither own the tables nor are superusers nor have
BYPASSRLS; :func:`rls_bypass_reasons` tells whether the service's role is such a role.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.tables import TENANT_TABLES

APP_ROLE = "omni_app"


def app_url(owner_url: str, role: str = APP_ROLE) -> str:
    """The same server and database as ``owner_url``, logging in as ``role`` (no password:
    for servers that trust local connections, as the embedded one and CI's do)."""
    owner = make_url(owner_url)
    # URL.set(password=None) would keep the owner's password: build the URL anew.
    url = URL.create(
        owner.drivername,
        username=role,
        host=owner.host,
        port=owner.port,
        database=owner.database,
        query=owner.query,
    )
    return url.render_as_string(hide_password=False)


async def enable_app_login(owner: AsyncEngine, role: str = APP_ROLE) -> None:
    """Let the app role log in (the migration creates it NOLOGIN). Development and tests only:
    production roles are created by a DBA."""
    async with owner.begin() as connection:
        await connection.execute(text(f"ALTER ROLE {role} LOGIN"))


async def rls_bypass_reasons(engine: AsyncEngine) -> list[str]:
    """Why the role ``engine`` connects as would not be bound by row-level security."""
    names = [t.name for t in TENANT_TABLES]
    async with engine.connect() as connection:
        role = (
            await connection.execute(
                text(
                    "SELECT current_user AS name, rolsuper, rolbypassrls FROM pg_roles "
                    "WHERE rolname = current_user"
                )
            )
        ).one()
        owned: Sequence[str] = (
            (
                await connection.execute(
                    text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                        "AND tableowner = current_user AND tablename = ANY(:names) ORDER BY 1"
                    ),
                    {"names": names},
                )
            )
            .scalars()
            .all()
        )
    reasons = []
    if role.rolsuper:
        reasons.append(f"role {role.name} is a superuser")
    if role.rolbypassrls:
        reasons.append(f"role {role.name} has BYPASSRLS")
    if owned:
        reasons.append(f"role {role.name} owns {', '.join(owned)}")
    return reasons
