"""Relay conformance: exact pageInfo, chronological edges both ways, keyset cursors that survive
inserts, cursors refused by other connections, capped pages, the conversation list's order and
filters, and node/nodes for every type."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import GraphQLClient
from tests.api.operations import (
    CONVERSATIONS,
    TIMELINE,
    at,
    data_of,
    inbound,
    missing_id,
    outbound,
    persisted,
    register_account,
    timeline,
)

MINUTES = [0, 10, 20, 30, 30, 40, 50, 60, 70, 80]  # two messages share 09:30: ids break ties


async def ten_message_timeline(gql: GraphQLClient) -> tuple[str, list[str], list[str]]:
    """A conversation of ten messages sent out of order; (id, message ids, cursors) in
    timeline order."""
    account = await register_account(gql)
    stored: dict[int, dict[str, Any]] = {}
    for index in (3, 0, 9, 4, 1, 7, 2, 8, 5, 6):  # arrival order differs from channel order
        stored[index] = await persisted(
            gql, inbound(account, when=at(MINUTES[index]), text=f"m{index}")
        )
    ordered = [stored[i] for i in range(10)]
    conversation = ordered[0]["conversation"]["id"]
    page = await timeline(gql, conversation, first=10)
    ids = [e["node"]["id"] for e in page["edges"]]
    cursors = [e["cursor"] for e in page["edges"]]
    return conversation, ids, cursors


def info(has_next: bool, has_previous: bool, start: str | None, end: str | None) -> dict[str, Any]:
    return {
        "hasNextPage": has_next,
        "hasPreviousPage": has_previous,
        "startCursor": start,
        "endCursor": end,
    }


async def test_the_timeline_is_chronological_whatever_the_arrival_order(
    gql: GraphQLClient,
) -> None:
    conversation, _, cursors = await ten_message_timeline(gql)

    page = await timeline(gql, conversation, first=10)

    # m3 and m4 share a channel time: m3 arrived first, so has the lower id and comes first.
    assert [e["node"]["content"]["text"] for e in page["edges"]] == [f"m{i}" for i in range(10)]
    assert [e["node"]["channelTimestamp"] for e in page["edges"]] == [
        f"2026-01-05T{9 + m // 60:02d}:{m % 60:02d}:00+00:00" for m in MINUTES
    ]
    assert page["pageInfo"] == info(False, False, cursors[0], cursors[9])


# (arguments with cursor indexes, expected message indexes, hasNext, hasPrevious)
PAGES: list[tuple[str, dict[str, Any], list[int], bool, bool]] = [
    ("first page", {"first": 3}, [0, 1, 2], True, False),
    ("middle page", {"first": 3, "after": 2}, [3, 4, 5], True, True),
    ("exactly the rest", {"first": 4, "after": 5}, [6, 7, 8, 9], False, True),
    ("last page, short", {"first": 3, "after": 8}, [9], False, True),
    ("past the end", {"first": 3, "after": 9}, [], False, True),
    ("everything", {"first": 10}, list(range(10)), False, False),
    ("more than everything", {"first": 100}, list(range(10)), False, False),
    ("zero", {"first": 0}, [], True, False),
    ("default size", {}, list(range(10)), False, False),
    ("between two cursors", {"first": 10, "after": 2, "before": 6}, [3, 4, 5], False, True),
    ("last page backwards", {"last": 3}, [7, 8, 9], False, True),
    ("middle backwards", {"last": 3, "before": 7}, [4, 5, 6], True, True),
    ("first page backwards, short", {"last": 3, "before": 1}, [0], True, False),
    ("before the start", {"last": 3, "before": 0}, [], True, False),
    ("everything backwards", {"last": 10}, list(range(10)), False, False),
    (
        "between two cursors backwards",
        {"last": 10, "after": 2, "before": 6},
        [3, 4, 5],
        True,
        False,
    ),
    ("zero backwards", {"last": 0}, [], False, True),
]


@pytest.mark.parametrize(
    ("arguments", "expected", "has_next", "has_previous"),
    [p[1:] for p in PAGES],
    ids=[p[0] for p in PAGES],
)
async def test_page_info_is_exact_at_the_start_middle_and_end_in_both_directions(
    gql: GraphQLClient,
    arguments: dict[str, Any],
    expected: list[int],
    has_next: bool,
    has_previous: bool,
) -> None:
    conversation, ids, cursors = await ten_message_timeline(gql)
    resolved = {k: cursors[v] if k in ("after", "before") else v for k, v in arguments.items()}

    page = await timeline(gql, conversation, **resolved)

    assert [e["node"]["id"] for e in page["edges"]] == [ids[i] for i in expected]
    # A message has one cursor, whichever direction and page it was read in.
    assert [e["cursor"] for e in page["edges"]] == [cursors[i] for i in expected]
    assert page["pageInfo"] == info(
        has_next,
        has_previous,
        cursors[expected[0]] if expected else None,
        cursors[expected[-1]] if expected else None,
    )


async def test_a_conversation_without_messages_has_an_empty_timeline(gql: GraphQLClient) -> None:
    account = await register_account(gql)
    body = await gql(
        """mutation($input: UpsertConversationInput!) {
             upsertConversation(input: $input) { conversation { id lastMessage { id } } }
           }""",
        {
            "input": {
                "channelAccountId": account,
                "externalThreadId": "T",
                "channelTimestamp": at(0),
            }
        },
    )
    conversation = data_of(body, "upsertConversation")["conversation"]

    forward = await timeline(gql, conversation["id"], first=5)
    backward = await timeline(gql, conversation["id"], last=5)

    assert conversation["lastMessage"] is None
    assert forward == backward == {"edges": [], "pageInfo": info(False, False, None, None)}


async def walk(
    gql: GraphQLClient, conversation: str, *, forward: bool, size: int, between: Any = None
) -> list[str]:
    """Every page of a timeline, calling ``between(page_number)`` before each next request;
    the message texts in the order they were read, in timeline order."""
    seen: list[list[str]] = []
    cursor: str | None = None
    while True:
        if forward:
            page = await timeline(gql, conversation, first=size, after=cursor)
        else:
            page = await timeline(gql, conversation, last=size, before=cursor)
        seen.append([e["node"]["content"]["text"] for e in page["edges"]])
        more = page["pageInfo"]["hasNextPage" if forward else "hasPreviousPage"]
        if not more:
            break
        cursor = page["pageInfo"]["endCursor" if forward else "startCursor"]
        if between is not None:
            await between(len(seen))
    if not forward:
        seen.reverse()
    return [text for page in seen for text in page]


async def test_walking_forward_while_late_and_new_messages_arrive(gql: GraphQLClient) -> None:
    account = await register_account(gql)
    for minute in range(0, 100, 10):
        await persisted(gql, inbound(account, when=at(minute), text=f"{minute:02d}"))
    conversation = (await persisted(gql, inbound(account, when=at(5), text="05")))["conversation"][
        "id"
    ]

    async def arrive(page_number: int) -> None:
        if page_number == 1:  # the reader is at 10
            await persisted(gql, inbound(account, when=at(7), text="07 late, behind"))
            await persisted(gql, inbound(account, when=at(55), text="55 late, ahead"))
            await persisted(gql, inbound(account, when=at(95), text="95 new"))
        if page_number == 2:  # the reader is at 40
            await persisted(gql, inbound(account, when=at(50), text="50 same time, ahead"))
            await persisted(
                gql, outbound(account, conversation=conversation, when=at(99), text="99 reply")
            )

    read = await walk(gql, conversation, forward=True, size=3, between=arrive)
    everything = await walk(gql, conversation, forward=True, size=4)

    # Nothing skipped or read twice; what arrived behind the reader is read next time.
    assert read == [
        "00", "05", "10", "20", "30", "40", "50", "50 same time, ahead",
        "55 late, ahead", "60", "70", "80", "90", "95 new", "99 reply",
    ]  # fmt: skip
    assert everything == [
        "00", "05", "07 late, behind", "10", "20", "30", "40", "50", "50 same time, ahead",
        "55 late, ahead", "60", "70", "80", "90", "95 new", "99 reply",
    ]  # fmt: skip
    assert await walk(gql, conversation, forward=False, size=5) == everything


async def test_walking_backward_while_late_and_new_messages_arrive(gql: GraphQLClient) -> None:
    account = await register_account(gql)
    for minute in range(10, 100, 10):
        stored = await persisted(gql, inbound(account, when=at(minute), text=f"{minute:02d}"))
    conversation = stored["conversation"]["id"]

    async def arrive(page_number: int) -> None:
        if page_number == 1:  # the reader is back at 70
            await persisted(gql, inbound(account, when=at(95), text="95 new, behind"))
            await persisted(gql, inbound(account, when=at(35), text="35 late, ahead"))
            await persisted(gql, inbound(account, when=at(5), text="05 late, ahead"))

    read = await walk(gql, conversation, forward=False, size=3, between=arrive)

    assert read == ["05 late, ahead", "10", "20", "30", "35 late, ahead", "40", "50", "60",
                    "70", "80", "90"]  # fmt: skip
    assert await walk(gql, conversation, forward=True, size=100) == [
        "05 late, ahead", "10", "20", "30", "35 late, ahead", "40", "50", "60", "70", "80",
        "90", "95 new, behind",
    ]  # fmt: skip


# --- cursors of other connections and bad page arguments ---------------------------------------


def refused(body: dict[str, Any], path: list[str], message: str, field: str, reason: str) -> None:
    assert body["data"] == ({path[0]: None} if len(path) > 1 else None), body
    errors = [{k: v for k, v in e.items() if k != "locations"} for e in body["errors"]]
    assert errors == [
        {
            "message": message,
            "path": path,
            "extensions": {"code": "BAD_USER_INPUT", "field": [field], "reason": reason},
        }
    ]


async def test_a_cursor_of_another_conversation_is_refused(gql: GraphQLClient) -> None:
    account = await register_account(gql)
    one = await persisted(gql, inbound(account, thread="T-1", when=at(0)))
    other = await persisted(gql, inbound(account, thread="T-2", when=at(0)))
    cursor = one["messageEdge"]["cursor"]

    for argument in ({"after": cursor}, {"last": 5, "before": cursor}):
        body = await gql(TIMELINE, {"id": other["conversation"]["id"], **argument})
        field = "after" if "after" in argument else "before"
        refused(
            body,
            ["conversation", "messages"],
            f"{field}: Not a cursor of this connection.",
            field,
            "INVALID",
        )


async def test_cursors_of_other_connections_and_garbage_are_refused(gql: GraphQLClient) -> None:
    account = await register_account(gql)
    stored = await persisted(gql, inbound(account))
    conversation = stored["conversation"]["id"]
    list_cursor = data_of(await gql(CONVERSATIONS, {"first": 1}), "conversations")["edges"][0][
        "cursor"
    ]
    account_cursor = data_of(
        await gql("{ channelAccounts { edges { cursor } } }"), "channelAccounts"
    )["edges"][0]["cursor"]
    timeline_cursor = stored["messageEdge"]["cursor"]

    for cursor in (list_cursor, account_cursor, "garbage", "", "e30"):
        # An empty string is not a cursor either (no cursor is null).
        body = await gql(TIMELINE, {"id": conversation, "after": cursor})
        refused(
            body, ["conversation", "messages"], "after: Not a cursor of this connection.",
            "after", "INVALID",
        )  # fmt: skip
    for cursor in (timeline_cursor, account_cursor):
        body = await gql(CONVERSATIONS, {"after": cursor})
        refused(
            body, ["conversations"], "after: Not a cursor of this connection.", "after", "INVALID"
        )
    body = await gql("query($c: String) { channelAccounts(before: $c) { edges { cursor } } }",
                     {"c": list_cursor})  # fmt: skip
    refused(
        body, ["channelAccounts"], "before: Not a cursor of this connection.", "before", "INVALID"
    )


PAGE_ARGUMENTS = [
    ({"first": 101}, "first: Must be between 0 and 100.", "first", "OUT_OF_RANGE"),
    ({"last": 101}, "last: Must be between 0 and 100.", "last", "OUT_OF_RANGE"),
    ({"first": -1}, "first: Must be between 0 and 100.", "first", "OUT_OF_RANGE"),
    ({"first": 5, "last": 5}, "first: Pass first or last, not both.", "first", "INVALID"),
]


@pytest.mark.parametrize(
    ("arguments", "message", "field", "reason"),
    PAGE_ARGUMENTS,
    ids=["first 101", "last 101", "negative", "first and last"],
)
async def test_bad_page_arguments_are_refused_clearly(
    gql: GraphQLClient, arguments: dict[str, Any], message: str, field: str, reason: str
) -> None:
    account = await register_account(gql)
    conversation = (await persisted(gql, inbound(account)))["conversation"]["id"]

    refused(
        await gql(TIMELINE, {"id": conversation, **arguments}),
        ["conversation", "messages"],
        message,
        field,
        reason,
    )
    refused(await gql(CONVERSATIONS, arguments), ["conversations"], message, field, reason)
    refused(
        await gql(
            "query($first: Int, $last: Int) { channelAccounts(first: $first, last: $last) "
            "{ edges { cursor } } }",
            arguments,
        ),
        ["channelAccounts"],
        message,
        field,
        reason,
    )


async def test_a_page_of_100_is_allowed(gql: GraphQLClient) -> None:
    account = await register_account(gql)
    conversation = (await persisted(gql, inbound(account)))["conversation"]["id"]

    page = await timeline(gql, conversation, first=100)

    assert len(page["edges"]) == 1


# --- the conversation list ---------------------------------------------------------------------


async def test_conversations_newest_activity_first_with_channel_and_account_filters(
    gql: GraphQLClient,
) -> None:
    line = await register_account(gql, channel="LINE", external_account_id="oa-1")
    line_2 = await register_account(gql, channel="LINE", external_account_id="oa-2")
    facebook = await register_account(gql, channel="FACEBOOK", external_account_id="page-1")

    async def conversation(account: str, thread: str, minute: int) -> str:
        payload = await persisted(gql, inbound(account, thread=thread, when=at(minute)))
        return str(payload["conversation"]["id"])

    a = await conversation(line, "a", 10)
    b = await conversation(line_2, "b", 30)
    c = await conversation(facebook, "c", 20)
    d = await conversation(line, "d", 40)
    e = await conversation(line, "e", 40)  # same activity as d: the higher id first
    await conversation(line, "d", 5)  # a late event does not move d back
    await conversation(line, "a", 50)  # new activity moves a to the top

    async def listed(**arguments: Any) -> list[str]:
        body = await gql(CONVERSATIONS, arguments)
        return [edge["node"]["id"] for edge in data_of(body, "conversations")["edges"]]

    assert await listed() == [a, e, d, b, c]
    assert await listed(channel="LINE") == [a, e, d, b]
    assert await listed(channel="FACEBOOK") == [c]
    assert await listed(channel="SHOPEE") == []
    assert await listed(channelAccountId=line) == [a, e, d]
    assert await listed(channelAccountId=line_2) == [b]
    assert await listed(channel="LINE", channelAccountId=line_2) == [b]
    assert await listed(channel="FACEBOOK", channelAccountId=line) == []
    # An id of another type selects nothing, like an account that does not exist.
    assert await listed(channelAccountId=a) == []
    assert await listed(channelAccountId=missing_id("ChannelAccount")) == []

    body = await gql(CONVERSATIONS, {"first": 2})
    page = data_of(body, "conversations")
    assert [edge["node"]["lastMessageAt"] for edge in page["edges"]] == [
        "2026-01-05T09:50:00+00:00",
        "2026-01-05T09:40:00+00:00",
    ]
    assert page["pageInfo"]["hasNextPage"] is True
    assert page["pageInfo"]["hasPreviousPage"] is False
    rest = data_of(
        await gql(CONVERSATIONS, {"first": 5, "after": page["pageInfo"]["endCursor"]}),
        "conversations",
    )
    assert [edge["node"]["id"] for edge in rest["edges"]] == [d, b, c]
    assert (rest["pageInfo"]["hasNextPage"], rest["pageInfo"]["hasPreviousPage"]) == (False, True)
    back = data_of(
        await gql(CONVERSATIONS, {"last": 2, "before": rest["pageInfo"]["startCursor"]}),
        "conversations",
    )
    assert [edge["node"]["id"] for edge in back["edges"]] == [a, e]
    assert (back["pageInfo"]["hasNextPage"], back["pageInfo"]["hasPreviousPage"]) == (True, False)


async def test_a_garbage_channel_account_filter_is_refused(gql: GraphQLClient) -> None:
    body = await gql(CONVERSATIONS, {"channelAccountId": "garbage"})

    assert body["data"] is None
    assert [(e["message"], e["extensions"]) for e in body["errors"]] == [
        ("Not a valid ID.", {"code": "BAD_USER_INPUT", "field": ["channelAccountId"]})
    ]


async def test_channel_accounts_oldest_first(gql: GraphQLClient) -> None:
    first = await register_account(gql, external_account_id="oa-1")
    second = await register_account(gql, external_account_id="oa-2")
    third = await register_account(gql, channel="WHATSAPP", external_account_id="wa-1")
    document = """query($first: Int, $after: String) {
      channelAccounts(first: $first, after: $after) {
        edges { node { id } } pageInfo { hasNextPage hasPreviousPage endCursor }
      }
    }"""

    page = data_of(await gql(document, {"first": 2}), "channelAccounts")
    rest = data_of(
        await gql(document, {"first": 2, "after": page["pageInfo"]["endCursor"]}),
        "channelAccounts",
    )

    assert [e["node"]["id"] for e in page["edges"]] == [first, second]
    assert (page["pageInfo"]["hasNextPage"], page["pageInfo"]["hasPreviousPage"]) == (True, False)
    assert [e["node"]["id"] for e in rest["edges"]] == [third]
    assert (rest["pageInfo"]["hasNextPage"], rest["pageInfo"]["hasPreviousPage"]) == (False, True)


# --- node and nodes ----------------------------------------------------------------------------

NODE = """
query($id: ID!) {
  node(id: $id) {
    __typename id
    ... on ChannelAccount { externalAccountId }
    ... on Contact { externalUserId }
    ... on Conversation { externalThreadId }
    ... on Message { content { text } }
    ... on Attachment { externalId }
  }
}"""


async def every_type(gql: GraphQLClient) -> dict[str, tuple[str, dict[str, Any]]]:
    """A global id of each type, with the fields NODE selects on it."""
    account = await register_account(gql, external_account_id="oa-9")
    stored = await persisted(
        gql,
        inbound(
            account,
            user="U-9",
            thread="T-9",
            text="hello",
            attachments=[{"kind": "STICKER", "externalId": "sticker-9"}],
        ),
    )
    return {
        "ChannelAccount": (account, {"externalAccountId": "oa-9"}),
        "Contact": (stored["contact"]["id"], {"externalUserId": "U-9"}),
        "Conversation": (stored["conversation"]["id"], {"externalThreadId": "T-9"}),
        "Message": (stored["message"]["id"], {"content": {"text": "hello"}}),
        "Attachment": (stored["message"]["attachments"][0]["id"], {"externalId": "sticker-9"}),
    }


TYPES = ["ChannelAccount", "Contact", "Conversation", "Message", "Attachment"]


@pytest.mark.parametrize("type_name", TYPES)
async def test_node_resolves_every_type(gql: GraphQLClient, type_name: str) -> None:
    global_id, fields = (await every_type(gql))[type_name]

    body = await gql(NODE, {"id": global_id})

    assert body == {"data": {"node": {"__typename": type_name, "id": global_id, **fields}}}


@pytest.mark.parametrize(
    "global_id",
    [*(missing_id(t) for t in TYPES), "garbage", "", "VXNlcjox"],  # "User:1"
    ids=[*(f"missing {t}" for t in TYPES), "garbage", "empty", "unknown type"],
)
async def test_node_is_null_for_what_does_not_exist(gql: GraphQLClient, global_id: str) -> None:
    assert await gql(NODE, {"id": global_id}) == {"data": {"node": None}}


async def test_nodes_resolves_in_order_with_null_for_the_missing(gql: GraphQLClient) -> None:
    nodes = await every_type(gql)
    ids = [nodes[t][0] for t in TYPES]
    asked = [ids[3], missing_id("Message"), *ids, "garbage", ids[3]]

    body = await gql("query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }", {"ids": asked})

    expected = [{"__typename": t, "id": nodes[t][0]} for t in TYPES]
    assert body == {"data": {"nodes": [expected[3], None, *expected, None, expected[3]]}}


async def test_nodes_takes_at_most_100_ids(gql: GraphQLClient) -> None:
    document = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"

    allowed = await gql(document, {"ids": [missing_id("Message") for _ in range(100)]})
    body = await gql(document, {"ids": [missing_id("Message") for _ in range(101)]})

    assert allowed == {"data": {"nodes": [None] * 100}}
    assert body["data"] is None
    assert [(e["message"], e["extensions"]) for e in body["errors"]] == [
        ("At most 100 ids.", {"code": "BAD_USER_INPUT", "field": ["ids"]})
    ]
