"""Bearer JWTs (HS256): the tenant and the scopes of a caller come only from here."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from omni_store.persistence.tenancy import TenantId, tenant_id

SCOPE_READ = "inbox:read"
SCOPE_WRITE = "messages:write"
SCOPE_ADMIN = "admin"
ALL_SCOPES = (SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN)
ALGORITHM = "HS256"
ISSUER = "omni-store"


class AuthError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: TenantId
    scopes: frozenset[str]
    subject: str | None


def mint_token(
    secret: str,
    *,
    tenant: uuid.UUID,
    scopes: list[str],
    ttl_seconds: int = 24 * 3600,
    subject: str = "dev",
) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "tenant": str(tenant),
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def authenticate(authorization: str | None, secret: str) -> Principal:
    """The principal of an ``Authorization`` header; AuthError(UNAUTHENTICATED) otherwise."""
    return _verify(_bearer(authorization), secret)[0]


class VerifiedTokens:
    """:func:`authenticate` for a service, remembering the tokens it has verified.

    Clients send the same token on every request; its signature and claims are checked once
    (about 40 µs), then only its time window, on each use, as PyJWT checks it: valid from
    ``iat`` (and ``nbf``, if given), up to but not including ``exp``. A token is remembered
    under its exact text, so a changed byte is a different token, verified in full. Only
    tokens that verified are remembered, at most ``size`` of them (the oldest go first).
    """

    def __init__(
        self, secret: str, *, size: int = 4096, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret
        self._size = size
        self._clock = clock
        self._verified: dict[str, tuple[Principal, int, int]] = {}

    def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        known = self._verified.get(token)
        if known is not None:
            principal, valid_from, valid_until = known
            now = self._clock()
            if valid_from <= now < valid_until:
                return principal
            del self._verified[token]
            if now >= valid_until:
                raise AuthError("UNAUTHENTICATED", "The token has expired.")
        principal, claims = _verify(token, self._secret)
        issued = int(claims["iat"])
        valid_from = max(issued, int(claims.get("nbf", issued)))
        if len(self._verified) >= self._size:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, valid_from, int(claims["exp"]))
        return principal


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("UNAUTHENTICATED", "Missing Authorization: Bearer token.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("UNAUTHENTICATED", "The Authorization header must be 'Bearer <token>'.")
    return token.strip()


def _verify(token: str, secret: str) -> tuple[Principal, dict[str, Any]]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "tenant", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("UNAUTHENTICATED", "The token has expired.") from None
    except jwt.InvalidTokenError:
        raise AuthError("UNAUTHENTICATED", "The token is invalid.") from None
    try:
        tenant = tenant_id(claims["tenant"])
    except ValueError:
        raise AuthError("UNAUTHENTICATED", "The token's tenant is not a UUID.") from None
    scope = claims.get("scope", "")
    scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
    subject = claims.get("sub")
    return Principal(tenant, scopes, subject if isinstance(subject, str) else None), claims


def dev_secret(data_dir: Path) -> str:
    """A per-machine development secret kept beside the embedded database (mode 0600)."""
    path = data_dir.parent / "jwt-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()
