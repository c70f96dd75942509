"""A document sent again is not validated again (validation was most of a page's CPU)."""

from __future__ import annotations

import uuid

from strawberry.extensions.validation_cache import _get_validate_cache

from omni_store.graph.schema import VALIDATION_CACHE_SIZE
from tests.api.conftest import GraphQLClient


async def test_a_repeated_document_is_validated_once(gql: GraphQLClient) -> None:
    cache = _get_validate_cache(VALIDATION_CACHE_SIZE)
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
