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
import types
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

import graphql
import pytest
import strawberry
from graphql import GraphQLResolveInfo, experimental_execute_incrementally, parse
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from omni_store.graph.execution import (
    PlainAttribute,
    PlainFieldExecutor,
    PlainMethod,
    _settled_class,
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


def _schemas(
    query: type = Query, config: StrawberryConfig | None = None
) -> tuple[strawberry.Schema, strawberry.Schema]:
    generic = strawberry.Schema(query=query, config=config)
    fast = strawberry.Schema(query=query, config=config, execution_context_class=PlainFieldExecutor)
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
    return _answer(a), _answer(b)


def _answer(result: Any) -> tuple[str, list[Any]]:
    """The data as JSON text (the order of the keys is part of the answer) and each error's
    message, path and locations."""
    errors = [(e.message, e.path, e.locations) for e in result.errors or []]
    return json.dumps(result.data), errors


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


# --- Plain fields of object and list types ---------------------------------------------------
# Box's fields are read or made plain (attributes and methods of ``self``); each case changes
# the first box's values and compares both answers, errors included, and the calls of the
# methods (a method must not be called twice when its value takes graphql-core's path).


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Leaf(Named):
    """Implements an interface: Strawberry gives it an ``is_type_of``."""

    size: int
    color: Color | None


@strawberry.type
class Other(Named):
    weight: int


@strawberry.type
class Plain:
    """No interface: no ``is_type_of``."""

    text: str
    leaf: Leaf | None


@strawberry.type
class Checked:
    """An ``is_type_of`` of its own, which may read the info: graphql-core's path."""

    n: int

    @classmethod
    def is_type_of(cls, obj: Any, info: GraphQLResolveInfo) -> bool:
        return isinstance(obj, cls) and info.field_name == "checked"


LeafOrOther = Annotated[Leaf | Other, strawberry.union("LeafOrOther")]
CALLS: list[str] = []


@strawberry.type
class Box:
    label: str
    leaf: Leaf
    maybe_leaf: Leaf | None
    plain: Plain
    leaves: list[Leaf]
    maybe_leaves: list[Leaf | None] | None
    grid: list[list[Leaf | None]]
    numbers: list[int | None]
    strict_numbers: list[int]
    colors: list[Color] | None
    named: Named
    either: list[LeafOrOther]
    checked: Checked | None

    @strawberry.field
    def made(self) -> Leaf:
        CALLS.append("made")
        return self.leaf

    @strawberry.field
    def made_with_info(self, info: strawberry.Info) -> Leaf | None:
        CALLS.append(f"made_with_info {info.path.as_list()}")
        return self.maybe_leaf

    @strawberry.field
    def from_context(self, info: strawberry.Info) -> str | None:
        CALLS.append("from_context")
        return info.context.get("label") if isinstance(info.context, dict) else None

    @strawberry.field
    def made_list(self, info: strawberry.Info) -> list[Leaf | None]:
        CALLS.append(f"made_list {info.field_name}")
        return self.maybe_leaves  # type: ignore[return-value]

    @strawberry.field
    def broken(self) -> Leaf | None:
        CALLS.append("broken")
        raise ValueError("broken box")

    @strawberry.field
    def broken_strict(self) -> Plain:
        CALLS.append("broken_strict")
        raise ValueError("strictly broken box")

    @strawberry.field
    async def later_leaf(self) -> Leaf:
        CALLS.append("later_leaf")
        await asyncio.sleep(0)
        return self.leaf

    @strawberry.field
    def method_leaves(self) -> list[int | None]:
        CALLS.append("method_leaves")
        return self.numbers

    @strawberry.field
    def method_text(self) -> str:
        CALLS.append("method_text")
        return self.label


BOXES: list[Box] = []


@strawberry.type
class BoxQuery:
    @strawberry.field
    def boxes(self) -> list[Box | None]:
        return BOXES  # type: ignore[return-value]


def _leaf(name: str = "leaf", **changes: Any) -> Leaf:
    values: dict[str, Any] = {"name": name, "size": 1, "color": Color.RED}
    values.update(changes)
    return Leaf(**values)


def _box(**changes: Any) -> Box:
    values: dict[str, Any] = {
        "label": "box",
        "leaf": _leaf("one"),
        "maybe_leaf": _leaf("two", color=None),
        "plain": Plain(text="plain", leaf=_leaf("three")),
        "leaves": [_leaf("a"), _leaf("b", size=2)],
        "maybe_leaves": [_leaf("c"), None],
        "grid": [[_leaf("d"), None], [], [_leaf("e")]],
        "numbers": [1, None, 3],
        "strict_numbers": [4, 5],
        "colors": [Color.RED, Color.DARK_BLUE],
        "named": _leaf("named"),
        "either": [_leaf("f"), Other(name="g", weight=7)],
        "checked": Checked(n=8),
    }
    # A callable gives a value made afresh for each run (an iterator is read once).
    values.update({k: v() if callable(v) else v for k, v in changes.items()})
    return Box(**values)


class Soon:
    """An awaitable of ``value``, that can be awaited more than once."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        return asyncio.sleep(0, self.value).__await__()


BOX_DOCUMENT = """query Boxes($yes: Boolean!, $no: Boolean!) { boxes {
  __typename label
  leaf { __typename name size color }
  maybeLeaf { name size color }
  plain { text leaf { name size } }
  leaves { name size }
  maybeLeaves { name size }
  grid { name size }
  numbers strictNumbers colors
  named { __typename name ... on Leaf { size } }
  either { __typename ... on Leaf { name size } ... on Other { weight } }
  checked { n }
  made { name size }
  madeWithInfo { name }
  madeList { name size }
  broken { name }
  laterLeaf { name }
  methodLeaves methodText
  first: leaf { name }
  second: leaf { size color }
  leaf { size @skip(if: $yes) name @include(if: $no) }
  ...BoxParts
  ... on Box { maybeLeaf { size } plain { leaf { color } } }
} }
fragment BoxParts on Box { leaf { color name } leaves { color } made { color } }"""

BOX_VARIABLES = {"yes": True, "no": False}


async def _both_boxes(
    boxes: Callable[[], list[Box]],
    document: str = BOX_DOCUMENT,
    variables: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """The answers (data, errors, method calls) of both schemas, each on boxes of its own."""
    generic, fast = _schemas(BoxQuery)
    answers = []
    for schema in (generic, fast):
        BOXES[:] = boxes()
        CALLS.clear()
        result = await schema.execute(document, variable_values=variables or BOX_VARIABLES)
        answers.append((*_answer(result), list(CALLS)))
    return answers[0], answers[1]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="plain"),
        pytest.param({"maybe_leaf": None}, id="nullable-object-null"),
        pytest.param({"leaf": None}, id="non-null-object-null"),
        pytest.param({"plain": Plain(text="p", leaf=None)}, id="object-without-is-type-of"),
        pytest.param({"plain": None}, id="non-null-object-without-is-type-of-null"),
        pytest.param({"leaf": _leaf(size=None)}, id="non-null-leaf-null-in-object"),
        pytest.param({"maybe_leaf": _leaf(size=None)}, id="non-null-leaf-null-in-nullable"),
        pytest.param({"leaves": [_leaf(), None, _leaf()]}, id="null-item-in-non-null-items"),
        pytest.param({"maybe_leaves": [None, _leaf(), None]}, id="null-items-in-nullable"),
        pytest.param({"maybe_leaves": None}, id="nullable-list-null"),
        pytest.param({"leaves": None}, id="non-null-list-null"),
        pytest.param({"leaves": [_leaf(size=None)]}, id="error-inside-non-null-item"),
        pytest.param({"maybe_leaves": [_leaf(size=None), _leaf()]}, id="error-in-nullable-item"),
        pytest.param({"leaves": []}, id="empty-list"),
        pytest.param({"leaves": (_leaf(),)}, id="tuple-for-list"),
        pytest.param({"leaves": "abc"}, id="text-for-list"),
        pytest.param({"leaves": lambda: iter([_leaf()])}, id="iterator-for-list"),
        pytest.param({"grid": [[None], None]}, id="nested-list-null-inner"),
        pytest.param({"grid": [[_leaf(size=None), _leaf()]]}, id="nested-list-error"),
        pytest.param({"grid": [[Soon(_leaf("soon")), Soon(None)]]}, id="nested-awaitable-items"),
        pytest.param({"numbers": [None, 2**40, "x", Color.RED]}, id="leaf-list-bad-items"),
        pytest.param({"strict_numbers": [1, None]}, id="leaf-list-null-in-non-null"),
        pytest.param({"strict_numbers": [1, ValueError("n")]}, id="leaf-list-exception-item"),
        pytest.param({"colors": [Color.RED, "red", None]}, id="enum-list-bad-items"),
        pytest.param({"leaf": ValueError("no leaf")}, id="exception-object-value"),
        pytest.param({"maybe_leaf": ValueError("no leaf")}, id="exception-nullable-object"),
        pytest.param({"leaves": [_leaf(), ValueError("no item")]}, id="exception-item"),
        pytest.param({"leaf": Soon(_leaf("soon"))}, id="awaitable-object-value"),
        pytest.param({"maybe_leaf": Soon(None)}, id="awaitable-null"),
        pytest.param({"leaf": Soon(None)}, id="awaitable-null-for-non-null"),
        pytest.param({"leaves": Soon([_leaf("soon")])}, id="awaitable-list"),
        pytest.param({"leaves": [Soon(_leaf("soon")), _leaf()]}, id="awaitable-item"),
        pytest.param({"maybe_leaves": [Soon(None), Soon(_leaf())]}, id="awaitable-null-items"),
        pytest.param({"leaves": [Soon(None), _leaf()]}, id="awaitable-null-non-null-item"),
        pytest.param({"leaf": Checked(n=1)}, id="is-type-of-refuses"),
        pytest.param({"leaf": Other(name="o", weight=1)}, id="is-type-of-accepts-interface"),
        pytest.param({"leaves": [_leaf(), Checked(n=1)]}, id="is-type-of-item"),
        pytest.param({"plain": {"text": "dict"}}, id="dict-for-object"),
        pytest.param({"named": Other(name="o", weight=1)}, id="interface-other-type"),
        pytest.param({"either": [Other(name="o", weight=2), None]}, id="union-null-item"),
        pytest.param({"checked": Checked(n=9)}, id="own-is-type-of"),
        pytest.param({"checked": _leaf()}, id="own-is-type-of-refuses"),
        pytest.param({"label": None}, id="non-null-leaf-null"),
    ],
)
async def test_plain_objects_and_lists_answer_as_the_generic_path(changes: dict[str, Any]) -> None:
    generic, fast = await _both_boxes(lambda: [_box(**changes), _box()])
    assert fast == generic


async def test_plain_objects_answer_the_expected_values() -> None:
    """Not only the same answer: the right one (the generic path answers this)."""
    document = "{ boxes { leaf { name } a: leaves { name } b: leaves { size } grid { name } } }"
    generic, fast = await _both_boxes(lambda: [_box()], document)
    assert fast == generic
    assert json.loads(fast[0]) == {
        "boxes": [
            {
                "leaf": {"name": "one"},
                "a": [{"name": "a"}, {"name": "b"}],
                "b": [{"size": 1}, {"size": 2}],
                "grid": [[{"name": "d"}, None], [], [{"name": "e"}]],
            }
        ]
    }
    assert fast[1] == []


async def test_a_non_null_null_propagates_to_the_nearest_nullable_parent() -> None:
    generic, fast = await _both_boxes(
        lambda: [_box(leaves=[_leaf(size=None)]), _box()], "{ boxes { leaves { name size } } }"
    )
    assert fast == generic
    data = json.loads(fast[0])
    assert data["boxes"][0] is None
    assert data["boxes"][1]["leaves"] == [{"name": "a", "size": 1}, {"name": "b", "size": 2}]
    messages = [(message, path) for message, path, _ in fast[1]]
    assert (
        "Cannot return null for non-nullable field Leaf.size.",
        ["boxes", 0, "leaves", 0, "size"],
    ) in messages


async def test_a_method_raising_is_located_and_called_once() -> None:
    document = "{ boxes { label broken { name } } }"
    generic, fast = await _both_boxes(lambda: [_box()], document)
    assert fast == generic
    assert json.loads(fast[0]) == {"boxes": [{"label": "box", "broken": None}]}
    assert fast[1] == [("broken box", ["boxes", 0, "broken"], [graphql.SourceLocation(1, 17)])]
    assert fast[2] == ["broken"]
    document = "{ boxes { label brokenStrict { text } } }"
    generic, fast = await _both_boxes(lambda: [_box()], document)
    assert fast == generic
    assert json.loads(fast[0]) == {"boxes": [None]}
    assert fast[2] == ["broken_strict"]


@pytest.mark.parametrize(
    "document",
    [
        pytest.param("{ boxes { x: leaf { name } x: leaf { size } } }", id="alias-merges"),
        pytest.param(
            "{ boxes { a: leaf { name } b: leaf { size } c: made { color } d: made { name } } }",
            id="aliases-with-different-subselections",
        ),
        pytest.param(
            "{ boxes { leaf { name } ...F ... on Box { leaf { size ...G } } } }"
            " fragment F on Box { leaf { color name } } fragment G on Leaf { __typename size }",
            id="fragments-merge-subselections",
        ),
        pytest.param(
            "{ boxes { leaves { ... on Leaf { name } ... on Named { name } size } } }",
            id="inline-fragments-in-list",
        ),
        pytest.param(
            "{ boxes { made { name } made2: made { size } madeWithInfo { name } } }",
            id="methods-called-once-each",
        ),
        pytest.param(
            "{ boxes { madeList { name } grid { __typename ... on Leaf { size } } } }",
            id="method-list-and-nested-typename",
        ),
        pytest.param(
            "query($yes: Boolean!, $no: Boolean!) { boxes { leaf @skip(if: $yes) { name }"
            " maybeLeaf @include(if: $yes) { name @include(if: $no) size } } }",
            id="skip-include",
        ),
    ],
)
async def test_selections_answer_as_the_generic_path(document: str) -> None:
    changes = {"maybe_leaves": [_leaf(size=None), None], "maybe_leaf": _leaf(size=None)}
    generic, fast = await _both_boxes(lambda: [_box(**changes), _box()], document)
    assert fast == generic
    assert generic[0] != "null"


async def test_the_info_of_a_plain_method_is_the_generic_one() -> None:
    generic, fast = await _both_boxes(
        lambda: [_box(), _box()], "{ boxes { madeWithInfo { name } } }"
    )
    assert fast == generic
    assert fast[2] == [
        "made_with_info ['boxes', 0, 'madeWithInfo']",
        "made_with_info ['boxes', 1, 'madeWithInfo']",
    ]


@pytest.mark.parametrize(
    "document",
    [
        pytest.param("{ boxes { label leaves @stream(initialCount: 1) { name } } }", id="stream"),
        pytest.param(
            "{ boxes { label ... @defer { leaf { name } made { size } leaves { name } } } }",
            id="defer",
        ),
        pytest.param(
            '{ boxes { label ... @defer(label: "d") { maybeLeaves { size } } } }',
            id="defer-with-error",
        ),
    ],
)
async def test_incremental_delivery_answers_as_the_generic_path(document: str) -> None:
    generic, fast = _schemas(
        BoxQuery, StrawberryConfig(enable_experimental_incremental_execution=True)
    )
    answers = []
    for schema, executor in (
        (generic, StrawberryGraphQLCoreExecutionContext),
        (fast, PlainFieldExecutor),
    ):
        BOXES[:] = [_box(maybe_leaves=[_leaf(size=None)]), _box()]
        CALLS.clear()
        result = experimental_execute_incrementally(
            schema._schema, parse(document), executor_class=executor
        )
        if asyncio.iscoroutine(result):
            result = await result
        frames = [result.initial_result.formatted]
        async for subsequent in result.subsequent_results:
            frames.append(subsequent.formatted)
        answers.append((json.dumps(frames), list(CALLS)))
    assert answers[1] == answers[0]
    assert len(json.loads(answers[0][0])) > 1, "delivered incrementally"


def test_object_and_list_fields_get_a_completion() -> None:
    _, fast = _schemas(BoxQuery)
    fields = fast._schema.type_map["Box"].fields  # type: ignore[attr-defined]
    completed = {name for name, f in fields.items() if f.resolve.completion is not None}
    # Leaf attributes are coerced directly; interfaces, unions and an is_type_of of the
    # type's own take graphql-core's path.
    assert set(fields) - completed == {"label", "named", "either", "checked"}


class CountingExecutor(PlainFieldExecutor):
    """Counts the fields that graphql-core's execute_field executes."""

    generic_fields: ClassVar[list[str]] = []

    def execute_field(self, parent_type: Any, source: Any, details: Any, *args: Any) -> Any:
        self.generic_fields.append(f"{parent_type.name}.{details[0].node.name.value}")
        return super().execute_field(parent_type, source, details, *args)


async def test_plain_fields_do_not_take_the_generic_path() -> None:
    """The cases above would pass as well if nothing went fast: here the plain objects,
    lists and methods are completed without graphql-core's execute_field."""
    schema = strawberry.Schema(query=BoxQuery, execution_context_class=CountingExecutor)
    install_plain_attributes(schema)
    BOXES[:] = [_box(), _box()]
    CountingExecutor.generic_fields.clear()
    document = """{ boxes { leaf { name } plain { leaf { size } } leaves { name } grid { name }
        made { name } madeWithInfo { name } madeList { size } numbers methodText
        named { name } laterLeaf { name } } }"""
    result = await schema.execute(document)
    assert result.errors is None
    assert json.loads(json.dumps(result.data))["boxes"][1]["grid"] == [
        [{"name": "d"}, None],
        [],
        [{"name": "e"}],
    ]
    # Only the interface field; an async method's awaitable goes to graphql-core's
    # complete_awaitable_value, without execute_field.
    assert CountingExecutor.generic_fields == ["Box.named", "Box.named"]


def test_the_service_schema_completes_its_relations_directly() -> None:
    """Strawberry's is_type_of of the Node types (it only asks the value's class) is
    recognized: on another Strawberry, compare it with the new one before changing this."""
    types = build_schema()._schema.type_map
    assert types["MessageEdge"].fields["node"].resolve.completion is not None  # type: ignore[attr-defined]
    message = types["Message"].fields  # type: ignore[attr-defined]
    for name in ("sender", "content", "attachments"):
        assert message[name].resolve.completion is not None, name


def _awaiting(value: Any) -> Any:
    """``value`` with an ``__await__`` of its own: is_awaitable takes it for an awaitable."""
    value.__await__ = lambda: asyncio.sleep(0, "own").__await__()
    return value


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(lambda: {"leaf": _awaiting(_leaf())}, id="object"),
        pytest.param(lambda: {"leaves": [_leaf(), _awaiting(_leaf())]}, id="list-item"),
    ],
)
async def test_a_value_with_an_await_of_its_own_is_taken_for_an_awaitable(
    changes: Callable[[], dict[str, Any]],
) -> None:
    generic, fast = await _both_boxes(
        lambda: [_box(**changes())], "{ boxes { leaf { name } leaves { name } made { name } } }"
    )
    assert fast == generic


async def test_an_enum_member_with_an_await_of_its_own_is_taken_for_an_awaitable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        Color.RED, "__await__", lambda: asyncio.sleep(0, "own").__await__(), raising=False
    )
    generic, fast = await _both_boxes(lambda: [_box()], "{ boxes { leaf { color } colors } }")
    assert fast == generic
    assert generic[1], "the generic path awaits it and fails"


class WithGetattr:
    def __getattr__(self, name: str) -> Any:
        return name


class Slotted:
    __slots__ = ("a",)


class OwnAwait:
    def __await__(self) -> Any:
        return iter(())


def test_only_plain_classes_are_settled_by_their_class() -> None:
    assert _settled_class(Leaf) is Leaf
    assert _settled_class(Color) is Color
    assert _settled_class(Size) is Size  # a StrEnum: str looks attributes up as object does
    for cls in (WithGetattr, Slotted, OwnAwait, ValueError, Soon, types.CoroutineType, None):
        assert _settled_class(cls) is None, cls


async def test_a_method_reading_only_its_context_builds_no_resolve_info(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[list[Any]] = []
    real = PlainFieldExecutor.build_resolve_info

    def counting(self: PlainFieldExecutor, *args: Any) -> Any:
        built.append(args[3].as_list())
        return real(self, *args)

    monkeypatch.setattr(PlainFieldExecutor, "build_resolve_info", counting)
    generic, fast = _schemas(BoxQuery)
    answers = []
    for schema in (generic, fast):
        BOXES[:] = [_box(), _box()]
        built.clear()
        result = await schema.execute(
            "{ boxes { fromContext } }", context_value={"label": "from the request"}
        )
        answers.append((result.data, result.errors, list(built)))

    expected = {"boxes": [{"fromContext": "from the request"}] * 2}
    assert answers[0][:2] == answers[1][:2] == (expected, None)
    assert answers[1][2] == []  # none per box (the old path built one for each)
