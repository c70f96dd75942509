"""A document sent again is not parsed or validated again (that was most of a page's CPU)."""

from __future__ import annotations

import uuid

from omni_store.graph.extensions import _parse, _validate
from omni_store.graph.schema import MAX_TOKENS
from tests.api.conftest import GraphQLClient


async def test_a_repeated_document_is_validated_once(gql: GraphQLClient) -> None:
    cache = _validate
    document = f"# {uuid.uuid4()}\n{{ viewer {{ tenantId }} }}"
    before = cache.cache_info()

    first = await gql(document)
    second = await gql(document)

    after = cache.cache_info()
    assert first == second
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)


async def test_limits_still_apply_to_a_cached_document(gql: GraphQLClient) -> None:
    fields = " ".join(f"a{i}: viewer {{ tenantId }}" for i in range(31))
    document = f"# {uuid.uuid4()}\n{{ {fields} }}"

    answers = [await gql(document) for _ in range(2)]

    assert [[e["extensions"]["code"] for e in a["errors"]] for a in answers] == [
        ["TOO_MANY_ALIASES"],
        ["TOO_MANY_ALIASES"],
    ]


async def test_a_repeated_document_is_parsed_once(gql: GraphQLClient) -> None:
    document = f"# {uuid.uuid4()}\n{{ viewer {{ scopes }} }}"
    before = _parse.cache_info()

    answers = [await gql(document) for _ in range(2)]

    after = _parse.cache_info()
    assert answers[0] == answers[1]
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)


async def test_a_document_over_the_token_limit_keeps_its_code_when_sent_again(
    gql: GraphQLClient,
) -> None:
    document = f"# {uuid.uuid4()}\n{{ " + "viewer { tenantId } " * (MAX_TOKENS // 4 + 1) + "}"

    answers = [await gql(document) for _ in range(2)]

    assert [[e["extensions"]["code"] for e in a["errors"]] for a in answers] == [
        ["TOO_MANY_TOKENS"],
        ["TOO_MANY_TOKENS"],
    ]
    assert [a["data"] for a in answers] == [None, None]
