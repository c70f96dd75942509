"""VerifiedTokens: a token's signature and claims are checked once, its time window on every
use, exactly as a full verification would decide it. No database: pure."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from omni_store.graph import auth
from omni_store.graph.auth import (
    ALGORITHM,
    ISSUER,
    AuthError,
    Principal,
    VerifiedTokens,
    authenticate,
    mint_token,
)
from omni_store.persistence.tenancy import TenantId

SECRET = "unit-test-secret-0123456789abcdef0123"
TENANT = TenantId(uuid.UUID(int=7))


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens that went through a full verification (PyJWT's decode)."""
    seen: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(auth.jwt, "decode", counting)
    return seen


def token(**claims: Any) -> str:
    now = int(time.time())
    base = {"iss": ISSUER, "sub": "s", "tenant": str(TENANT), "scope": "inbox:read"}
    return jwt.encode(base | {"iat": now, "exp": now + 60} | claims, SECRET, algorithm=ALGORITHM)


def refusal(tokens: VerifiedTokens, value: str) -> str:
    with pytest.raises(AuthError) as raised:
        tokens.authenticate(f"Bearer {value}")
    assert raised.value.code == "UNAUTHENTICATED"
    return str(raised.value)


def test_a_token_is_verified_once_and_then_recognised(decodes: list[str]) -> None:
    tokens = VerifiedTokens(SECRET)
    value = mint_token(SECRET, tenant=TENANT, scopes=["inbox:read", "admin"], subject="agent-7")

    first = tokens.authenticate(f"Bearer {value}")
    again = [tokens.authenticate(f"bearer  {value} ") for _ in range(3)]

    expected = Principal(TENANT, frozenset({"inbox:read", "admin"}), "agent-7")
    assert first == expected
    assert again == [expected] * 3
    assert decodes == [value]
    assert authenticate(f"Bearer {value}", SECRET) == expected


def test_a_remembered_token_expires_at_its_exp_and_is_then_forgotten(decodes: list[str]) -> None:
    clock = Clock()
    tokens = VerifiedTokens(SECRET, clock=clock)
    value = token(exp=int(clock.now) + 30)
    tokens.authenticate(f"Bearer {value}")

    clock.now = int(clock.now) + 29.999
    assert tokens.authenticate(f"Bearer {value}").tenant == TENANT
    clock.now += 0.001  # exactly exp: PyJWT says expired too

    assert refusal(tokens, value) == "The token has expired."
    # Forgotten: the next use is verified in full (and PyJWT, on the real clock, still accepts
    # it, which is why the window above was checked on the service's own clock)
    assert decodes == [value]
    tokens.authenticate(f"Bearer {value}")
    assert decodes == [value, value]


def test_a_token_not_yet_valid_is_refused_and_not_remembered(decodes: list[str]) -> None:
    tokens = VerifiedTokens(SECRET)
    early = [token(iat=int(time.time()) + 600), token(nbf=int(time.time()) + 600)]

    messages = [refusal(tokens, value) for value in early + early]

    assert messages == ["The token is invalid."] * 4
    assert decodes == early + early


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: "not-a-jwt", "The token is invalid."),
        (
            lambda: jwt.encode({"iss": ISSUER}, "another-secret-0123456789abcdef012", "HS256"),
            "The token is invalid.",
        ),
        (lambda: token(exp=int(time.time()) - 1), "The token has expired."),
        (lambda: token(tenant="acme"), "The token's tenant is not a UUID."),
    ],
    ids=["garbage", "other secret", "expired", "tenant not a uuid"],
)
def test_a_refused_token_is_refused_every_time(
    decodes: list[str], make: Callable[[], str], message: str
) -> None:
    tokens = VerifiedTokens(SECRET)
    value = make()  # made now: a token made at collection could expire before the test runs

    messages = [refusal(tokens, value), refusal(tokens, value)]

    assert messages == [message] * 2
    assert decodes == [value, value]


def test_one_changed_byte_is_another_token_verified_in_full(decodes: list[str]) -> None:
    tokens = VerifiedTokens(SECRET)
    value = token()
    tokens.authenticate(f"Bearer {value}")
    body, signature = value.rsplit(".", 1)
    forged = f"{body}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"

    assert refusal(tokens, forged) == "The token is invalid."
    assert decodes == [value, forged]


def test_at_most_size_tokens_are_remembered_the_oldest_forgotten_first(
    decodes: list[str],
) -> None:
    tokens = VerifiedTokens(SECRET, size=2)
    a, b, c = (token(sub=name) for name in "abc")

    for value in (a, b, c, c, b, a):
        tokens.authenticate(f"Bearer {value}")

    # a was forgotten when c came (the oldest of a, b); then b, c were known; a again evicts b
    assert decodes == [a, b, c, a]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Missing Authorization: Bearer token."),
        ("", "Missing Authorization: Bearer token."),
        ("Basic abc", "The Authorization header must be 'Bearer <token>'."),
        ("Bearer   ", "The Authorization header must be 'Bearer <token>'."),
    ],
)
def test_a_missing_or_malformed_header_is_refused_before_any_verification(
    decodes: list[str], header: str | None, message: str
) -> None:
    with pytest.raises(AuthError, match=message.replace("(", r"\(")) as raised:
        VerifiedTokens(SECRET).authenticate(header)

    assert raised.value.code == "UNAUTHENTICATED"
    assert decodes == []
