"""Access: the tenant and scopes come only from a valid bearer token. A refused call gets one
top-level error with a code, and nothing is read (not a single SQL statement) or written."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.graph.auth import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE
from omni_store.persistence.tenancy import TenantId
from tests.api.conftest import SECRET, GraphQLClient, StatementCounter, token_for
from tests.api.operations import (
    at,
    inbound,
    persisted,
    plus,
    register_account,
    tenant_snapshot,
)
from tests.conftest import row_counts


@dataclass(frozen=True)
class Seeded:
    """One tenant's data: every read below would return some of it."""

    account: str
    conversation: str
    message: str


async def seed(gql: GraphQLClient) -> Seeded:
    account = await register_account(gql)
    stored = await persisted(gql, inbound(account))
    return Seeded(account, stored["conversation"]["id"], stored["message"]["id"])


@dataclass(frozen=True)
class Operation:
    field: str
    document: str
    variables: Any  # Seeded -> dict
    nullable: bool
    writes: dict[str, int]  # rows it adds when allowed
    scope: str

    def __str__(self) -> str:
        return self.field


QUERIES = [
    Operation(
        "node",
        "query($id: ID!) { node(id: $id) { id } }",
        lambda s: {"id": s.message},
        nullable=True,
        writes={},
        scope=SCOPE_READ,
    ),
    Operation(
        "nodes",
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
        lambda s: {"ids": [s.account, s.conversation, s.message]},
        nullable=False,
        writes={},
        scope=SCOPE_READ,
    ),
    Operation(
        "conversation",
        "query($id: ID!) { conversation(id: $id) { id messages { edges { cursor } } } }",
        lambda s: {"id": s.conversation},
        nullable=True,
        writes={},
        scope=SCOPE_READ,
    ),
    Operation(
        "conversations",
        "query($a: ID) { conversations(channel: LINE, channelAccountId: $a) "
        "{ edges { node { id } } } }",
        lambda s: {"a": s.account},
        nullable=False,
        writes={},
        scope=SCOPE_READ,
    ),
    Operation(
        "channelAccounts",
        "query { channelAccounts { edges { node { id } } } }",
        lambda s: {},
        nullable=False,
        writes={},
        scope=SCOPE_READ,
    ),
]

MUTATIONS = [
    Operation(
        "persistMessage",
        "mutation($input: PersistMessageInput!) { persistMessage(input: $input) "
        "{ message { id } userErrors { code } } }",
        lambda s: {"input": inbound(s.account, user="U-new", thread="T-new")},
        nullable=False,
        writes={"contacts": 1, "conversations": 1, "messages": 1},
        scope=SCOPE_WRITE,
    ),
    Operation(
        "persistMessages",
        "mutation($input: PersistMessagesInput!) { persistMessages(input: $input) "
        "{ results { messageId userErrors { code } } userErrors { code } } }",
        lambda s: {
            "input": {
                "messages": [
                    inbound(s.account, user="U-new", thread="T-new"),
                    inbound(s.account, user="U-new", thread="T-new"),
                ]
            }
        },
        nullable=False,
        writes={"contacts": 1, "conversations": 1, "messages": 2},
        scope=SCOPE_WRITE,
    ),
    Operation(
        "upsertContact",
        "mutation($input: UpsertContactInput!) { upsertContact(input: $input) "
        "{ contact { id } userErrors { code } } }",
        lambda s: {"input": {"channelAccountId": s.account, "externalUserId": "U-new"}},
        nullable=False,
        writes={"contacts": 1},
        scope=SCOPE_WRITE,
    ),
    Operation(
        "upsertConversation",
        "mutation($input: UpsertConversationInput!) { upsertConversation(input: $input) "
        "{ conversation { id } userErrors { code } } }",
        lambda s: {
            "input": {
                "channelAccountId": s.account,
                "externalThreadId": "T-new",
                "channelTimestamp": at(5),
            }
        },
        nullable=False,
        writes={"conversations": 1},
        scope=SCOPE_WRITE,
    ),
    Operation(
        "addAttachments",
        "mutation($input: AddAttachmentsInput!) { addAttachments(input: $input) "
        "{ attachments { id } userErrors { code } } }",
        lambda s: {
            "input": {
                "messageId": s.message,
                "attachments": [{"kind": "IMAGE", "url": "https://cdn.example.com/p.jpg"}],
            }
        },
        nullable=False,
        writes={"attachments": 1},
        scope=SCOPE_WRITE,
    ),
    Operation(
        "registerChannelAccount",
        "mutation($input: RegisterChannelAccountInput!) { registerChannelAccount(input: $input) "
        "{ channelAccount { id } userErrors { code } } }",
        lambda s: {"input": {"channel": "FACEBOOK", "externalAccountId": "page-new"}},
        nullable=False,
        writes={"channel_accounts": 1},
        scope=SCOPE_ADMIN,
    ),
]

OPERATIONS = QUERIES + MUTATIONS


def _encode(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def _claims(tenant_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    """Valid claims of ``tenant_id``, with ``changes`` (None removes a claim)."""
    now = int(time.time())
    claims = {
        "iss": "omni-store",
        "sub": "connector-line",
        "tenant": str(tenant_id),
        "scope": f"{SCOPE_READ} {SCOPE_WRITE} {SCOPE_ADMIN}",
        "iat": now,
        "exp": now + 600,
        **changes,
    }
    return {k: v for k, v in claims.items() if v is not None}


# name -> (Authorization header or None, expected message)
BAD_CREDENTIALS: dict[str, tuple[Any, str]] = {
    "no header": (lambda t: None, "Missing Authorization: Bearer token."),
    "empty header": (lambda t: "", "Missing Authorization: Bearer token."),
    "basic scheme": (
        lambda t: "Basic dXNlcjpwYXNz",
        "The Authorization header must be 'Bearer <token>'.",
    ),
    "bearer without token": (
        lambda t: "Bearer   ",
        "The Authorization header must be 'Bearer <token>'.",
    ),
    "raw token without scheme": (
        lambda t: token_for(t),
        "The Authorization header must be 'Bearer <token>'.",
    ),
    "not a jwt": (lambda t: "Bearer not.a.jwt", "The token is invalid."),
    "bad signature": (
        lambda t: f"Bearer {_encode(_claims(t), secret='another-secret-of-32-bytes-or-more!')}",
        "The token is invalid.",
    ),
    "tampered tenant": (
        lambda t: "Bearer " + _swap_payload(token_for(t), _claims(uuid.uuid4())),
        "The token is invalid.",
    ),
    "alg none": (
        lambda t: f"Bearer {jwt.encode(_claims(t), None, algorithm='none')}",
        "The token is invalid.",
    ),
    "expired": (
        lambda t: f"Bearer {token_for(t, ttl_seconds=-30)}",
        "The token has expired.",
    ),
    "no expiry": (lambda t: f"Bearer {_encode(_claims(t, exp=None))}", "The token is invalid."),
    "no tenant": (lambda t: f"Bearer {_encode(_claims(t, tenant=None))}", "The token is invalid."),
    "tenant not a uuid": (
        lambda t: f"Bearer {_encode(_claims(t, tenant='acme'))}",
        "The token's tenant is not a UUID.",
    ),
    "other issuer": (
        lambda t: f"Bearer {_encode(_claims(t, iss='someone-else'))}",
        "The token is invalid.",
    ),
}


def _swap_payload(token: str, claims: dict[str, Any]) -> str:
    """The token with its payload replaced and the original signature kept."""
    import base64
    import json

    header, _, signature = token.split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{payload}.{signature}"


async def assert_refused(
    gql: GraphQLClient,
    engine: AsyncEngine,
    tenant: TenantId,
    sql_statements: StatementCounter,
    operation: Operation,
    seeded: Seeded,
    *,
    headers: dict[str, str],
    code: str,
    message: str,
) -> None:
    counts = await row_counts(engine)
    rows = await tenant_snapshot(engine, tenant)
    sql_statements.reset()

    body = await gql(operation.document, operation.variables(seeded), token=None, headers=headers)

    assert sql_statements.count == 0, sql_statements.statements
    assert body == {
        "data": {operation.field: None} if operation.nullable else None,
        "errors": [
            {
                "message": message,
                "locations": body["errors"][0]["locations"],
                "path": [operation.field],
                "extensions": {"code": code},
            }
        ],
    }
    assert await row_counts(engine) == counts
    assert await tenant_snapshot(engine, tenant) == rows


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS)
@pytest.mark.parametrize("operation", OPERATIONS, ids=str)
async def test_bad_credentials_are_unauthenticated_and_nothing_is_read_or_written(
    gql: GraphQLClient,
    engine: AsyncEngine,
    tenant: TenantId,
    sql_statements: StatementCounter,
    operation: Operation,
    credentials: str,
) -> None:
    seeded = await seed(gql)
    header, message = BAD_CREDENTIALS[credentials]
    value = header(tenant)

    await assert_refused(
        gql,
        engine,
        tenant,
        sql_statements,
        operation,
        seeded,
        headers={} if value is None else {"Authorization": value},
        code="UNAUTHENTICATED",
        message=message,
    )


SCOPE_SETS = {
    "read only": [SCOPE_READ],
    "write only": [SCOPE_WRITE],
    "admin only": [SCOPE_ADMIN],
    "read and write": [SCOPE_READ, SCOPE_WRITE],
    "no scope": [],
}


FORBIDDEN_CASES = [
    (operation, scopes)
    for operation in OPERATIONS
    for scopes, held in SCOPE_SETS.items()
    if operation.scope not in held
]


@pytest.mark.parametrize(
    ("operation", "scopes"),
    FORBIDDEN_CASES,
    ids=[f"{operation}-{scopes}" for operation, scopes in FORBIDDEN_CASES],
)
async def test_a_missing_scope_is_forbidden_and_nothing_is_read_or_written(
    gql: GraphQLClient,
    engine: AsyncEngine,
    tenant: TenantId,
    sql_statements: StatementCounter,
    operation: Operation,
    scopes: str,
) -> None:
    held = SCOPE_SETS[scopes]
    seeded = await seed(gql)

    await assert_refused(
        gql,
        engine,
        tenant,
        sql_statements,
        operation,
        seeded,
        headers={"Authorization": f"Bearer {token_for(tenant, held)}"},
        code="FORBIDDEN",
        message=f"This operation needs the scope '{operation.scope}'.",
    )


@pytest.mark.parametrize("operation", MUTATIONS, ids=str)
async def test_the_same_mutation_with_its_scope_writes(
    gql: GraphQLClient, engine: AsyncEngine, tenant: TenantId, operation: Operation
) -> None:
    """The control of the refusals above: their inputs are valid and would be stored."""
    seeded = await seed(gql)
    counts = await row_counts(engine)

    body = await gql(
        operation.document,
        operation.variables(seeded),
        token=token_for(tenant, [operation.scope]),
    )

    assert "errors" not in body, body
    assert body["data"][operation.field]["userErrors"] == []
    assert await row_counts(engine) == plus(counts, **operation.writes)


@pytest.mark.parametrize("operation", QUERIES, ids=str)
async def test_the_same_query_with_its_scope_reads(
    gql: GraphQLClient, tenant: TenantId, operation: Operation
) -> None:
    seeded = await seed(gql)

    body = await gql(
        operation.document, operation.variables(seeded), token=token_for(tenant, [SCOPE_READ])
    )

    assert "errors" not in body, body
    assert body["data"][operation.field] not in (None, [], {"edges": []})


async def test_viewer_says_who_is_calling(gql: GraphQLClient, tenant: TenantId) -> None:
    body = await gql(
        "{ viewer { tenantId scopes } }", token=token_for(tenant, [SCOPE_WRITE, SCOPE_READ])
    )

    assert body == {
        "data": {"viewer": {"tenantId": str(tenant), "scopes": [SCOPE_READ, SCOPE_WRITE]}}
    }


async def test_viewer_without_a_valid_token_is_unauthenticated(gql: GraphQLClient) -> None:
    body = await gql("{ viewer { tenantId } }", token=None)

    assert body["data"] is None
    assert [e["extensions"] for e in body["errors"]] == [{"code": "UNAUTHENTICATED"}]


async def test_one_refused_field_does_not_hide_the_allowed_ones(
    gql: GraphQLClient, tenant: TenantId, sql_statements: StatementCounter
) -> None:
    seeded = await seed(gql)
    sql_statements.reset()

    body = await gql(
        "query($id: ID!) { viewer { tenantId } node(id: $id) { id } }",
        {"id": seeded.message},
        token=token_for(tenant, [SCOPE_WRITE]),
    )

    assert body["data"] == {"viewer": {"tenantId": str(tenant)}, "node": None}
    assert [(e["path"], e["extensions"]) for e in body["errors"]] == [
        (["node"], {"code": "FORBIDDEN"})
    ]
    assert sql_statements.count == 0
