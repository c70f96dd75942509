"""Generated queries and mutations from the schema, over HTTP, on the real database.

For every generated document: no 5xx, no unmasked or internal error, nothing SQL-ish in any
message, and when the answer refuses anything (errors or userErrors), every table's row count
is unchanged. Every generated query also answers exactly the same (data and errors) on the
service's executor and on Strawberry's and graphql-core's generic one.
``OMNI_STORE_FUZZ_CASES`` sets the number of cases (150 by default, for CI; the thorough run
is 1000); with ``CI`` set the run is derandomized, hence reproducible.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import graphql
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, nodes
from hypothesis_graphql import strategies as gql_st
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.cli import export_schema_sdl
from omni_store.graph.auth import ALL_SCOPES, Principal
from omni_store.graph.context import Context
from omni_store.graph.ids import to_global_id
from omni_store.graph.schema import build_schema
from omni_store.persistence.database import Database
from omni_store.persistence.tenancy import TenantId
from tests.api.conftest import GraphQLClient
from tests.conftest import row_counts
from tests.fuzz.conftest import Seeded

CASES = int(os.environ.get("OMNI_STORE_FUZZ_CASES", "150"))
SQLISH = ("SELECT", "INSERT", "asyncpg", "sqlalchemy", "Traceback", "constraint")
SDL = export_schema_sdl()

FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    derandomize=bool(os.environ.get("CI")),
    # No example database: its .hypothesis directory at the project root would trip pytest's
    # collection (norecursedirs is set, and warnings are errors). Failures print a blob.
    database=None,
    print_blob=True,
)

# --- custom scalars ----------------------------------------------------------------------------

_NOW = datetime.now(UTC)
_timestamps = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    ).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            (_NOW - timedelta(minutes=5)).isoformat(),
            "1970-01-01T00:00:00Z",
            "3000-01-01T00:00:00Z",
            "2026-01-01T00:00:00",  # no offset
            "2026-13-45T99:99:99Z",
            "",
            "yesterday",
        ]
    ),
    st.text(max_size=30),
)
_names = st.from_regex(r"\A[_A-Za-z][_0-9A-Za-z]{0,10}\Z")
_json_scalars = st.one_of(
    st.none().map(lambda _: graphql.NullValueNode()),
    st.booleans().map(nodes.Boolean),
    st.integers(min_value=-(2**31), max_value=2**31 - 1).map(nodes.Int),
    st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
    st.text(max_size=40).map(nodes.String),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(nodes.List),
        st.dictionaries(_names, inner, max_size=4).map(
            lambda d: nodes.Object(
                [
                    graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=v)
                    for k, v in d.items()
                ]
            )
        ),
    ),
    max_leaves=20,
)
CUSTOM_SCALARS = {"DateTime": _timestamps.map(nodes.String), "JSON": _json_values}


OPERATIONS = gql_st.from_schema(SDL, custom_scalars=CUSTOM_SCALARS, print_ast=lambda d: d)
QUERIES = gql_st.queries(SDL, custom_scalars=CUSTOM_SCALARS, print_ast=lambda d: d)
INVALID_OPERATIONS = gql_st.from_schema(
    SDL, custom_scalars=CUSTOM_SCALARS, mode=Mode.NEGATIVE, print_ast=lambda d: d
)


def _id_like(name: str) -> bool:
    return name in ("id", "ids") or name.endswith("Id")


def _with_real_ids(document: graphql.DocumentNode, draw: Any, ids: list[str]) -> str:
    """The document, with some of its generated id strings swapped for real global ids of
    the tenant (of every type), so that generated operations reach stored rows too."""

    class Swap(graphql.Visitor):
        def enter_argument(self, node: Any, *_: Any) -> Any:
            return self._swap(node)

        def enter_object_field(self, node: Any, *_: Any) -> Any:
            return self._swap(node)

        def _swap(self, node: Any) -> Any:
            if not _id_like(node.name.value):
                return None
            value = node.value
            if isinstance(value, graphql.StringValueNode) and draw(st.booleans()):
                return (
                    graphql.ArgumentNode(name=node.name, value=_real(value))
                    if isinstance(node, graphql.ArgumentNode)
                    else graphql.ObjectFieldNode(name=node.name, value=_real(value))
                )
            if isinstance(value, graphql.ListValueNode) and draw(st.booleans()):
                values = [
                    _real(v) if isinstance(v, graphql.StringValueNode) else v for v in value.values
                ]
                return type(node)(name=node.name, value=graphql.ListValueNode(values=tuple(values)))
            return None

    def _real(_: graphql.StringValueNode) -> graphql.StringValueNode:
        return graphql.StringValueNode(value=draw(st.sampled_from(ids)))

    return graphql.print_ast(graphql.visit(document, Swap()))


def _refused(value: Any) -> bool | None:
    """True if a root field's answer refused (null, or non-empty userErrors), False if it
    succeeded, None if the selection does not say."""
    if value is None:
        return True
    if isinstance(value, dict) and "userErrors" in value:
        return bool(value["userErrors"])
    return None


async def _check(gql: GraphQLClient, engine: AsyncEngine, document: str) -> None:
    before = await row_counts(engine)
    response = await gql.post(document)
    after = await row_counts(engine)
    context = f"document:\n{document}\nstatus {response.status_code}\n{response.text[:2000]}"

    assert response.status_code in (200, 400, 413), context
    body = response.json()
    errors = body.get("errors") or []
    for error in errors:
        code = (error.get("extensions") or {}).get("code")
        assert code, context
        assert code != "INTERNAL_SERVER_ERROR", context
    text = json.dumps(errors)
    for word in SQLISH:
        assert word.lower() not in text.lower(), context

    is_mutation = document.lstrip().startswith("mutation")
    if not is_mutation:
        assert after == before, context
        return
    data = body.get("data")
    answers = list(data.values()) if isinstance(data, dict) else []
    user_errors = any(isinstance(a, dict) and a.get("userErrors") for a in answers)
    if errors or user_errors:
        outcomes = [_refused(a) for a in answers]
        if all(outcome is True for outcome in outcomes):
            assert after == before, context


def _real_ids(seeded: Seeded) -> list[str]:
    return [
        to_global_id("ChannelAccount", seeded.account_id),
        to_global_id("Conversation", seeded.conversation_id),
        to_global_id("Contact", seeded.contact_id),
        *(to_global_id("Message", m) for m in seeded.message_ids),
    ]


@FUZZ
@given(document=OPERATIONS, data=st.data())
async def test_generated_operations(
    document: graphql.DocumentNode,
    data: st.DataObject,
    gql: GraphQLClient,
    engine: AsyncEngine,
    seeded: Seeded,
) -> None:
    await _check(gql, engine, _with_real_ids(document, data.draw, _real_ids(seeded)))


@settings(FUZZ, max_examples=max(CASES // 3, 10))
@given(document=INVALID_OPERATIONS, data=st.data())
async def test_generated_invalid_operations(
    document: graphql.DocumentNode,
    data: st.DataObject,
    gql: GraphQLClient,
    engine: AsyncEngine,
    seeded: Seeded,
) -> None:
    await _check(gql, engine, _with_real_ids(document, data.draw, _real_ids(seeded)))


SERVICE_SCHEMA = build_schema()
GENERIC_SCHEMA = build_schema(fast_paths=False)


@FUZZ
@given(document=QUERIES, data=st.data())
async def test_generated_queries_answer_the_same_on_the_generic_executor(
    document: graphql.DocumentNode,
    data: st.DataObject,
    db: Database,
    tenant: TenantId,
    seeded: Seeded,
) -> None:
    # omni_store/graph/execution.py completes most fields its own way: whatever the query,
    # its answer must be the generic executor's, to the last error path and location.
    query = _with_real_ids(document, data.draw, _real_ids(seeded))
    answers = []
    for schema in (SERVICE_SCHEMA, GENERIC_SCHEMA):
        principal = Principal(tenant, frozenset(ALL_SCOPES), "fuzz")
        context = Context(db=db, principal=principal, auth_error=None, request_id="fuzz")
        result = await schema.execute(query, context_value=context)
        answers.append((result.data, [error.formatted for error in result.errors or []]))

    assert answers[0] == answers[1], query


async def test_the_fixture_tenant_has_data(gql: GraphQLClient, seeded: Seeded) -> None:
    body = await gql("{ conversations { edges { node { messages { edges { node { id } } } } } } }")

    [conversation] = body["data"]["conversations"]["edges"]
    assert len(conversation["node"]["messages"]["edges"]) == len(seeded.message_ids)
