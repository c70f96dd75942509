"""Plain fields read without Strawberry's wrapper and completed without graphql-core's generic
path, and resolvers of ``self`` (and ``info``) called directly (omni_store/graph/execution.py),
answer exactly as the generic path does: the same data and the same errors, for every kind
of value a plain field can hold. Each case runs on a
schema with the fast path and on the same schema without it, and the results must be equal.
"""

from __future__ import annotations

import asyncio
import enum
import json
from datetime import UTC, datetime
from typing import Any

import graphql
import pytest
import strawberry
from graphql import GraphQLResolveInfo
from strawberry.scalars import JSON

from omni_store.graph.execution import (
    PlainAttribute,
    PlainFieldExecutor,
    PlainMethod,
    install_plain_attributes,
)
from omni_store.graph.schema import build_schema


@strawberry.enum
class Color(enum.Enum):
    RED = "red"
    DARK_BLUE = "dark_blue"


@strawberry.enum
class Size(enum.StrEnum):
    SMALL = "small"
    BIG = "big"


@strawberry.type
class Item:
    id: strawberry.ID
    display_name: str | None
    count: int
    color: Color
    maybe_color: Color | None
    size: Size
    at: datetime
    data: JSON | None
    tags: list[str]
    child: Item | None
    required_text: str

    @strawberry.field
    def computed(self, info: strawberry.Info) -> str:
        assert info.field_name == "computed"
        assert info.python_name == "computed"
        return f"{self.display_name}!"

    @strawberry.field
    async def later(self) -> int:
        await asyncio.sleep(0)
        return self.count + 1

    @strawberry.field
    def failing(self, info: strawberry.Info) -> str | None:
        raise ValueError(f"no {info.field_name} for {self.id}")

    @strawberry.field
    def with_argument(self, times: int = 2) -> str:
        return self.required_text * times


def _item(**changes: Any) -> Item:
    values: dict[str, Any] = {
        "id": strawberry.ID("SXRlbTox"),
        "display_name": "ลูกค้า",
        "count": 3,
        "color": Color.DARK_BLUE,
        "maybe_color": None,
        "size": Size.BIG,
        "at": datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        "data": {"a": [1, 2, None]},
        "tags": ["x", "y"],
        "child": None,
        "required_text": "t",
    }
    values.update(changes)
    return Item(**values)


ITEMS: list[Item] = []


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item]:
        return ITEMS


def _schemas() -> tuple[strawberry.Schema, strawberry.Schema]:
    generic = strawberry.Schema(query=Query)
    fast = strawberry.Schema(query=Query, execution_context_class=PlainFieldExecutor)
    assert install_plain_attributes(fast) > 0
    return generic, fast


# Two awaitable fields (later, again) before requiredText: when requiredText fails, the
# pending ones are settled; when it does not, they are gathered.
DOCUMENT = """{ items {
  __typename id displayName count later again: later color maybeColor size at data tags
  requiredText computed failing withArgument(times: 3)
  child { id displayName child { count } }
  alias: displayName
} }"""


async def _both(items: list[Item], document: str = DOCUMENT) -> tuple[Any, Any]:
    ITEMS[:] = items
    generic, fast = _schemas()
    a, b = await generic.execute(document), await fast.execute(document)
    # As JSON text: the order of the keys is part of the answer.
    return (json.dumps(a.data), [(e.message, e.path) for e in a.errors or []]), (
        json.dumps(b.data),
        [(e.message, e.path) for e in b.errors or []],
    )


class Later:
    """An awaitable that can be awaited more than once (the field appears twice)."""

    def __await__(self) -> Any:
        return asyncio.sleep(0, "later").__await__()


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="plain"),
        pytest.param({"display_name": None, "data": None}, id="nullable-nulls"),
        pytest.param({"maybe_color": Color.RED}, id="enum"),
        pytest.param({"child": _item(display_name="child")}, id="nested"),
        pytest.param({"required_text": None}, id="null-for-non-null"),
        pytest.param({"count": 2**40}, id="int-out-of-range"),
        pytest.param({"color": "not a color"}, id="bad-enum"),
        pytest.param({"color": "dark_blue"}, id="enum-value-not-member"),
        pytest.param({"size": "big"}, id="str-equal-to-str-enum-member"),
        pytest.param({"size": "BIG"}, id="str-equal-to-str-enum-name"),
        pytest.param({"display_name": ValueError("boom")}, id="exception-value"),
        pytest.param({"display_name": Later()}, id="awaitable-value"),
        pytest.param({"at": "2026-11-20"}, id="datetime-as-text"),
    ],
)
async def test_same_answer_as_the_generic_path(changes: dict[str, Any]) -> None:
    generic, fast = await _both([_item(**changes), _item()])
    assert fast == generic


async def test_a_missing_attribute_fails_the_same_way() -> None:
    broken = _item()
    del broken.display_name
    generic, fast = await _both([broken])
    assert fast == generic
    assert generic[1], "the generic path reports the missing attribute"


def test_only_plain_fields_get_a_plain_resolver() -> None:
    _, fast = _schemas()
    fields = fast._schema.type_map["Item"].fields  # type: ignore[attr-defined]
    plain = {name for name, f in fields.items() if isinstance(f.resolve, PlainAttribute)}
    methods = {name for name, f in fields.items() if isinstance(f.resolve, PlainMethod)}
    assert methods == {"computed", "later", "failing"}
    assert plain == set(fields) - methods - {"withArgument"}
    assert fields["displayName"].resolve.python_name == "display_name"


def test_the_service_schema_reads_its_plain_fields_directly() -> None:
    schema = build_schema()
    message = schema._schema.type_map["Message"].fields  # type: ignore[attr-defined]
    assert isinstance(message["channelTimestamp"].resolve, PlainAttribute)
    assert isinstance(message["sender"].resolve, PlainMethod)
    conversation = schema._schema.type_map["Conversation"].fields  # type: ignore[attr-defined]
    assert not isinstance(conversation["messages"].resolve, PlainAttribute | PlainMethod)
    assert schema.execution_context_class is PlainFieldExecutor


def test_the_executor_copies_the_graphql_core_it_was_written_for() -> None:
    """PlainFieldExecutor.execute_fields is graphql-core 3.3's, with a shortcut: on another
    version, compare it with the new original before changing this."""
    assert graphql.version_info[:2] == (3, 3)


def test_a_plain_resolver_is_a_getattr() -> None:
    info: GraphQLResolveInfo = None  # type: ignore[assignment]
    assert PlainAttribute("display_name", None, True)(_item(), info) == "ลูกค้า"
