"""The inbox's pages cost a constant number of SQL statements, whatever their size: every
relation resolves through a per-request dataloader (one tenant-scoped statement per batch).

BEGIN (which carries the tenant's ``set_config``) and COMMIT are not statements the counter
sees.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from graphql.execution.collect_fields import CollectedFields, FieldDetails

from omni_store.persistence.repositories import (
    Attachment,
    ChannelAccount,
    Contact,
    Conversation,
    Message,
)
from tests.api.conftest import GraphQLClient, StatementCounter
from tests.api.operations import (
    at,
    data_of,
    inbound,
    outbound,
    persisted,
    register_account,
)
from tests.garbage import cyclic_garbage

TIMELINE_PAGE = """
query($id: ID!, $first: Int) {
  conversation(id: $id) {
    id
    messages(first: $first) {
      edges {
        cursor
        node {
          id direction channelTimestamp status
          sender { type id displayName avatarUrl }
          content { type text struct }
          attachments { id position kind url externalId }
          channelAccount { id channel displayName }
          conversation { id lastMessageAt contact { id displayName } }
        }
      }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}"""

# The conversation, the page of messages, then one batch each: contacts
# (senders), attachments, channel accounts. The messages' conversation and its contact are
# already in the request's loaders.
TIMELINE_STATEMENTS = 5


async def group_chat(gql: GraphQLClient, messages: int) -> str:
    """One thread (a group chat) with ``messages`` messages from eight customers and, every
    fifth message, an agent; two attachments each."""
    account = await register_account(gql)
    conversation = None
    for index in range(messages):
        attachments = [
            {"kind": "IMAGE", "url": f"https://cdn.example.com/{index}/a.jpg"},
            {"kind": "FILE", "externalId": f"file-{index}"},
        ]
        if index % 5 == 4:
            assert conversation is not None
            message = outbound(
                account, conversation=conversation, when=at(index), attachments=attachments
            )
        else:
            message = inbound(
                account,
                thread="group",
                user=f"U-{index % 10}",
                when=at(index),
                attachments=attachments,
            )
        conversation = (await persisted(gql, message))["conversation"]["id"]
    assert conversation is not None
    return conversation


@pytest.mark.parametrize("size", [10, 100])
async def test_a_timeline_page_costs_a_constant_number_of_statements(
    gql: GraphQLClient, sql_statements: StatementCounter, size: int
) -> None:
    conversation = await group_chat(gql, size)

    sql_statements.reset()
    body = await gql(TIMELINE_PAGE, {"id": conversation, "first": size})

    edges = data_of(body, "conversation")["messages"]["edges"]
    assert len(edges) == size
    assert {e["node"]["sender"]["type"] for e in edges} == {"CONTACT", "AGENT"}
    # Eight customers (every fifth message is the agent's) and the agent.
    assert len({e["node"]["sender"]["id"] for e in edges}) == 9
    assert [len(e["node"]["attachments"]) for e in edges] == [2] * size
    assert sql_statements.count == TIMELINE_STATEMENTS, sql_statements.statements


CONVERSATION_PAGE = """
query($first: Int) {
  conversations(first: $first) {
    edges {
      cursor
      node {
        id channel lastMessageAt
        contact { id displayName avatarUrl }
        lastMessage { id channelTimestamp content { text } sender { type id displayName } }
        channelAccount { id channel displayName }
      }
    }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""

# The page of conversations, read with their contacts and last messages (joined), then one
# batch of channel accounts. The last messages' senders are the conversations' contacts.
CONVERSATION_LIST_STATEMENTS = 2


async def inbox(gql: GraphQLClient, conversations: int) -> None:
    """``conversations`` conversations over three channel accounts, each with a question and,
    for every other one, an agent's reply as its last message."""
    accounts = [
        await register_account(gql, channel="LINE", external_account_id="oa-1"),
        await register_account(gql, channel="FACEBOOK", external_account_id="page-1"),
        await register_account(gql, channel="SHOPEE", external_account_id="shop-1"),
    ]
    for index in range(conversations):
        account = accounts[index % 3]
        question = await persisted(
            gql, inbound(account, thread=f"T-{index}", user=f"U-{index}", when=at(index))
        )
        if index % 2:
            await persisted(
                gql,
                outbound(account, conversation=question["conversation"]["id"], when=at(index + 1)),
            )


@pytest.mark.parametrize("size", [5, 25])
async def test_a_conversation_list_page_costs_a_constant_number_of_statements(
    gql: GraphQLClient, sql_statements: StatementCounter, size: int
) -> None:
    await inbox(gql, size)

    sql_statements.reset()
    body = await gql(CONVERSATION_PAGE, {"first": size})

    edges = data_of(body, "conversations")["edges"]
    assert len(edges) == size
    assert {e["node"]["lastMessage"]["sender"]["type"] for e in edges} == {"CONTACT", "AGENT"}
    assert len({e["node"]["contact"]["id"] for e in edges}) == size
    assert len({e["node"]["channelAccount"]["id"] for e in edges}) == 3
    assert sql_statements.count == CONVERSATION_LIST_STATEMENTS, sql_statements.statements
    # Read in a transaction that runs generic plans (Database.transaction, generic_plans).
    assert sql_statements.generic_plans == [True] * CONVERSATION_LIST_STATEMENTS


# What a client selects of each conversation, and the statements its page costs: contacts
# and last messages are joined to the page; channel accounts cost one batch, and so do the
# last messages' senders without the conversations' contacts.
LIST_SHAPES = [
    ("id", 1),
    ("id contact { displayName }", 1),
    ("id channelAccount { channel }", 2),
    ("id lastMessage { content { text } }", 1),
    ("id lastMessage { sender { type displayName } }", 2),
]


@pytest.mark.parametrize(("selection", "statements"), LIST_SHAPES)
async def test_a_conversation_list_page_reads_the_relations_it_selects(
    gql: GraphQLClient, sql_statements: StatementCounter, selection: str, statements: int
) -> None:
    await inbox(gql, 6)
    full = data_of(await gql(CONVERSATION_PAGE, {"first": 6}), "conversations")["edges"]

    sql_statements.reset()
    body = await gql(f"{{ conversations(first: 6) {{ edges {{ node {{ {selection} }} }} }} }}")

    nodes = [e["node"] for e in data_of(body, "conversations")["edges"]]
    assert [n["id"] for n in nodes] == [e["node"]["id"] for e in full]
    if "contact" in selection:
        assert [n["contact"]["displayName"] for n in nodes] == ["Somchai"] * 6
    if "channelAccount" in selection:
        assert [n["channelAccount"]["channel"] for n in nodes] == [
            ("LINE", "FACEBOOK", "SHOPEE")[index % 3] for index in range(5, -1, -1)
        ]
    if "text" in selection:
        assert [n["lastMessage"]["content"]["text"] for n in nodes] == [
            "Thanks, your order ships today." if index % 2 else "สวัสดีครับ hello"
            for index in range(5, -1, -1)
        ]
    if "sender" in selection:
        assert [n["lastMessage"]["sender"] for n in nodes] == [
            {"type": "AGENT", "displayName": "Agent Nok"}
            if index % 2
            else {"type": "CONTACT", "displayName": "Somchai"}
            for index in range(5, -1, -1)
        ]
    assert sql_statements.count == statements, sql_statements.statements


NODES = """
query($ids: [ID!]!) {
  nodes(ids: $ids) {
    id
    ... on Message { sender { type displayName } attachments { id } conversation { id } }
  }
}"""

# The messages by id, then one batch each: contacts, attachments, conversations.
NODES_STATEMENTS = 4


@pytest.mark.parametrize("size", [10, 100])
async def test_nodes_cost_a_constant_number_of_statements(
    gql: GraphQLClient, sql_statements: StatementCounter, size: int
) -> None:
    conversation = await group_chat(gql, size)
    page = await gql(
        "query($id: ID!, $n: Int) { conversation(id: $id) { messages(first: $n) "
        "{ edges { node { id } } } } }",
        {"id": conversation, "n": size},
    )
    ids = [e["node"]["id"] for e in data_of(page, "conversation")["messages"]["edges"]]

    sql_statements.reset()
    body = await gql(NODES, {"ids": ids})

    assert [node["id"] for node in data_of(body, "nodes")] == ids
    assert sql_statements.count == NODES_STATEMENTS, sql_statements.statements


PERSIST_SELECTION = """
mutation($input: PersistMessageInput!) {
  persistMessage(input: $input) {
    deduplicated
    message { id sender { type displayName } attachments { id } channelAccount { id } }
    messageEdge { cursor }
    conversation { id lastMessageAt }
    contact { id }
    userErrors { code }
  }
}"""


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # One statement reads the account and an earlier delivery of the key and, the key
        # being new, upserts the contact and the conversation and inserts the message with
        # its attachments. Nothing is read back: the payload is what it returned.
        ("new", 1),
        # Without a thread id the thread key needs the account's window: the account and
        # replay are read first, then the same statement.
        ("new without thread id", 2),
        # The same statement moves the conversation named by id forward instead. Read back,
        # in a transaction of its own: the conversation's contact.
        ("reply", 2),
        # The same, when the payload's contact is not selected: nothing is read back.
        ("reply without contact", 1),
        # The statement finds the earlier delivery: nothing is written. One more statement,
        # in the same transaction, reads what the payload shows: the stored message with its
        # conversation, contact and attachments (the account came with the first).
        ("replay", 2),
        # The same, when the account was read first (no thread id): that read finds the
        # earlier delivery.
        ("replay without thread id", 2),
    ],
)
async def test_persist_message_round_trips(
    gql: GraphQLClient, sql_statements: StatementCounter, kind: str, expected: int
) -> None:
    account = await register_account(gql)
    attachments = [{"kind": "IMAGE", "externalId": "img-1"}]
    thread = None if kind.endswith("without thread id") else "thread-1"
    message = inbound(account, attachments=attachments, thread=thread)
    selection = PERSIST_SELECTION
    if kind == "reply without contact":
        selection = selection.replace("contact { id }", "")
    if kind.startswith("reply"):
        conversation = (await persisted(gql, message))["conversation"]["id"]
        message = outbound(account, conversation=conversation, attachments=attachments)
    elif kind.startswith("replay"):
        await persisted(gql, message)

    sql_statements.reset()
    body = await gql(selection, {"input": message})

    payload: dict[str, Any] = data_of(body, "persistMessage")
    assert (payload["userErrors"], payload["deduplicated"]) == ([], kind.startswith("replay"))
    assert sql_statements.count == expected, sql_statements.statements
    # The write's transaction plans as PostgreSQL chooses; a reply's contact is read back in
    # the request's read transaction, which runs generic plans.
    assert sql_statements.generic_plans == [False] + [kind == "reply"] * (expected - 1)


RECORDS = (Attachment, ChannelAccount, Contact, Conversation, Message)
# What graphql-core's executor collected of the operation's fields, memoized for the request.
EXECUTION = (FieldDetails, CollectedFields)


@pytest.mark.parametrize("page", ["timeline", "conversations"])
async def test_a_pages_records_are_freed_with_the_request(gql: GraphQLClient, page: str) -> None:
    """What the loaders loaded, and what the executor collected of the operation's fields,
    is let go when the operation ends. The context holding the loaders and the executor are
    parts of reference cycles (graphql-core's execution, Strawberry's Info), so a page's
    records and field sets used to wait for the cyclic garbage collector, which under load
    spent a tenth of the service's CPU, much of it walking them in full collections."""
    if page == "timeline":
        conversation = await group_chat(gql, 10)
        query, variables, field = TIMELINE_PAGE, {"id": conversation, "first": 10}, "conversation"
    else:
        await inbox(gql, 5)
        query, variables, field = CONVERSATION_PAGE, {"first": 5}, "conversations"
    assert data_of(await gql(query, variables), field) is not None  # warmed up

    def counted(o: object) -> str | None:
        return type(o).__name__ if isinstance(o, RECORDS + EXECUTION) else None

    with cyclic_garbage(counted) as left:
        bodies = [await gql(query, variables) for _ in range(3)]

    assert [data_of(b, field) for b in bodies] == [data_of(bodies[0], field)] * 3
    assert left == Counter()
