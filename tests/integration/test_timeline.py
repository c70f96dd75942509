"""Timeline and conversation list queries: keyset order, Relay cursor pagination, pageInfo.

The timeline is ordered by (channel_timestamp, id) ascending; the conversation list by
(last_message_at, id) descending. Cursors encode the keyset (never an offset) and belong to
one connection.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import pytest

from omni_store.persistence.cursors import Page, PageRequest
from omni_store.persistence.database import Database
from omni_store.persistence.enums import Channel, ErrorCode
from omni_store.persistence.errors import ValidationFailed
from omni_store.persistence.repositories import Conversation, Message, Relations
from omni_store.persistence.service import persist_message, upsert_conversation
from omni_store.persistence.tenancy import TenantId
from tests.factories import at, channel_account, inbound, outbound


async def _say(
    db: Database, tenant: TenantId, account_id: int, name: str, when: datetime, thread: str
) -> int:
    result = await persist_message(
        db,
        tenant,
        inbound(account_id=account_id, external_message_id=name, when=when, thread=thread),
    )
    return result.conversation_id


async def _thread(
    db: Database, tenant: TenantId, minutes: list[float], *, thread: str = "thread-1"
) -> tuple[int, int]:
    """A conversation with one message per entry of ``minutes`` (named m0, m1, … in that
    order); returns (channel account id, conversation id)."""
    account = await channel_account(db, tenant)
    conversation_id = 0
    for index, minute in enumerate(minutes):
        conversation_id = await _say(db, tenant, account.id, f"m{index}", at(minute), thread)
    return account.id, conversation_id


async def _timeline(
    db: Database, tenant: TenantId, conversation_id: int, request: PageRequest
) -> Page[Message]:
    async with db.transaction(tenant) as uow:
        return await uow.messages.timeline(conversation_id, request)


def _names(page: Page[Message]) -> list[str | None]:
    return [m.external_message_id for m in page.items]


def _flags(page: Page[Any]) -> tuple[bool, bool]:
    return page.has_previous_page, page.has_next_page


# --- order ------------------------------------------------------------------------------------


async def test_timeline_is_chronological_by_channel_time_with_ties_broken_by_id(
    db: Database, tenant: TenantId
) -> None:
    # Given messages that arrive out of order, some at the same channel time
    _, conversation_id = await _thread(db, tenant, [5, 1, 5, 1, 3, 0.5])

    # When the whole timeline is read
    page = await _timeline(db, tenant, conversation_id, PageRequest(first=100))

    # Then it is ordered by channel time, then by id (arrival) among equal times
    assert _names(page) == ["m5", "m1", "m3", "m4", "m0", "m2"]
    keys = [(m.channel_timestamp, m.id) for m in page.items]
    assert keys == sorted(keys)
    assert page.items[1].id < page.items[2].id
    assert page.items[4].id < page.items[5].id
    assert _flags(page) == (False, False)
    assert len(page.cursors) == 6


async def test_each_timeline_holds_only_its_own_conversations_messages(
    db: Database, tenant: TenantId
) -> None:
    # Given two threads of one contact
    account = await channel_account(db, tenant)
    first = await _say(db, tenant, account.id, "a1", at(0), "thread-a")
    second = await _say(db, tenant, account.id, "b1", at(1), "thread-b")
    await _say(db, tenant, account.id, "a2", at(2), "thread-a")

    # When each timeline is read
    page_a = await _timeline(db, tenant, first, PageRequest(first=10))
    page_b = await _timeline(db, tenant, second, PageRequest(first=10))

    # Then each holds only its own messages
    assert _names(page_a) == ["a1", "a2"]
    assert _names(page_b) == ["b1"]


# --- forward and backward walks ------------------------------------------------------------------


async def test_forward_pages_walk_every_message_once_while_new_and_late_ones_arrive(
    db: Database, tenant: TenantId
) -> None:
    # Given ten messages at minutes 0, 10, …, 90
    account_id, conversation_id = await _thread(db, tenant, [m * 10 for m in range(10)])
    timeline: list[str | None] = []

    async def insert(name: str, minute: float) -> None:
        await _say(db, tenant, account_id, name, at(minute), "thread-1")

    # When pages of 3 are read forward, with messages arriving between the requests: newer
    # ones, late ones behind the reader (already passed) and late ones ahead of it
    page = await _timeline(db, tenant, conversation_id, PageRequest(first=3))
    timeline += _names(page)
    assert _flags(page) == (False, True)
    await insert("new-95", 95)
    await insert("late-5", 5)  # behind the cursor (minute 20)
    await insert("late-55", 55)  # ahead of the cursor
    page = await _timeline(db, tenant, conversation_id, PageRequest(first=3, after=page.end_cursor))
    timeline += _names(page)
    assert _flags(page) == (True, True)
    await insert("late-45", 45)  # behind the cursor (minute 50) now
    await insert("late-20", 20)  # same time as a message already read, but a higher id
    await insert("new-100", 100)
    while page.has_next_page:
        page = await _timeline(
            db, tenant, conversation_id, PageRequest(first=3, after=page.end_cursor)
        )
        timeline += _names(page)
        assert page.has_previous_page is True

    # Then every message ahead of the reader was read exactly once, in order, and the late
    # ones that fell behind it were not
    assert timeline == [
        "m0",
        "m1",
        "m2",
        "m3",
        "m4",
        "m5",
        "late-55",
        "m6",
        "m7",
        "m8",
        "m9",
        "new-95",
        "new-100",
    ]
    full = await _timeline(db, tenant, conversation_id, PageRequest(first=100))
    assert _names(full) == [
        "m0",
        "late-5",
        "m1",
        "m2",
        "late-20",
        "m3",
        "m4",
        "late-45",
        "m5",
        "late-55",
        "m6",
        "m7",
        "m8",
        "m9",
        "new-95",
        "new-100",
    ]


async def test_forward_walk_without_concurrent_writes_returns_the_full_timeline(
    db: Database, tenant: TenantId
) -> None:
    # Given 11 messages, several sharing a channel time
    _, conversation_id = await _thread(db, tenant, [3, 1, 2, 2, 2, 0, 5, 5, 4, 1, 2])
    full = await _timeline(db, tenant, conversation_id, PageRequest(first=100))

    # When read forward in pages of 2
    walked: list[int] = []
    page = await _timeline(db, tenant, conversation_id, PageRequest(first=2))
    walked += [m.id for m in page.items]
    pages = 1
    while page.has_next_page:
        page = await _timeline(
            db, tenant, conversation_id, PageRequest(first=2, after=page.end_cursor)
        )
        walked += [m.id for m in page.items]
        pages += 1

    # Then the pages concatenate to the full timeline: no gaps, no duplicates
    assert walked == [m.id for m in full.items]
    assert pages == 6


async def test_backward_pages_walk_every_message_once_while_new_and_late_ones_arrive(
    db: Database, tenant: TenantId
) -> None:
    # Given ten messages at minutes 0, 10, …, 90, read from the end (the inbox opens there)
    account_id, conversation_id = await _thread(db, tenant, [m * 10 for m in range(10)])

    async def insert(name: str, minute: float) -> None:
        await _say(db, tenant, account_id, name, at(minute), "thread-1")

    # When pages of 4 are read backward with last/before, while messages arrive
    pages: list[list[str | None]] = []
    page = await _timeline(db, tenant, conversation_id, PageRequest(last=4))
    pages.append(_names(page))
    assert _flags(page) == (True, False)
    await insert("new-95", 95)  # behind the reader (newer than its cursor)
    await insert("late-35", 35)  # ahead of the reader
    page = await _timeline(
        db, tenant, conversation_id, PageRequest(last=4, before=page.start_cursor)
    )
    pages.append(_names(page))
    assert _flags(page) == (True, True)
    await insert("late-1", 1)  # ahead of the reader
    while page.has_previous_page:
        page = await _timeline(
            db, tenant, conversation_id, PageRequest(last=4, before=page.start_cursor)
        )
        pages.append(_names(page))
        assert page.has_next_page is True

    # Then each page is chronological, and together they hold every message ahead of the
    # reader exactly once
    assert pages == [
        ["m6", "m7", "m8", "m9"],
        ["m3", "late-35", "m4", "m5"],
        ["m0", "late-1", "m1", "m2"],
    ]


# --- pageInfo -----------------------------------------------------------------------------------


async def test_page_info_flags_at_both_ends_and_in_the_middle_going_forward(
    db: Database, tenant: TenantId
) -> None:
    # Given seven messages
    _, conversation_id = await _thread(db, tenant, list(range(7)))

    # When read forward in pages of 3
    first = await _timeline(db, tenant, conversation_id, PageRequest(first=3))
    middle = await _timeline(
        db, tenant, conversation_id, PageRequest(first=3, after=first.end_cursor)
    )
    last = await _timeline(
        db, tenant, conversation_id, PageRequest(first=3, after=middle.end_cursor)
    )
    beyond = await _timeline(
        db, tenant, conversation_id, PageRequest(first=3, after=last.end_cursor)
    )

    # Then (hasPreviousPage, hasNextPage) are exact: nothing before the first page, nothing
    # after the last one, and an empty page after the end has no next page
    assert (_names(first), _flags(first)) == (["m0", "m1", "m2"], (False, True))
    assert (_names(middle), _flags(middle)) == (["m3", "m4", "m5"], (True, True))
    assert (_names(last), _flags(last)) == (["m6"], (True, False))
    assert (_names(beyond), _flags(beyond)) == ([], (True, False))
    assert (beyond.start_cursor, beyond.end_cursor) == (None, None)
    assert first.start_cursor == first.cursors[0]
    assert first.end_cursor == first.cursors[2]


async def test_page_info_when_the_last_page_is_exactly_full(db: Database, tenant: TenantId) -> None:
    # Given six messages
    _, conversation_id = await _thread(db, tenant, list(range(6)))

    # When read forward in pages of 3, and all at once
    first = await _timeline(db, tenant, conversation_id, PageRequest(first=3))
    second = await _timeline(
        db, tenant, conversation_id, PageRequest(first=3, after=first.end_cursor)
    )
    whole = await _timeline(db, tenant, conversation_id, PageRequest(first=6))

    # Then the exactly-full last page has no next page, and neither has the whole timeline
    assert (_names(second), _flags(second)) == (["m3", "m4", "m5"], (True, False))
    assert (len(whole.items), _flags(whole)) == (6, (False, False))


async def test_page_info_flags_at_both_ends_and_in_the_middle_going_backward(
    db: Database, tenant: TenantId
) -> None:
    # Given seven messages
    _, conversation_id = await _thread(db, tenant, list(range(7)))

    # When read backward in pages of 3 from the end
    last = await _timeline(db, tenant, conversation_id, PageRequest(last=3))
    middle = await _timeline(
        db, tenant, conversation_id, PageRequest(last=3, before=last.start_cursor)
    )
    first = await _timeline(
        db, tenant, conversation_id, PageRequest(last=3, before=middle.start_cursor)
    )
    before_start = await _timeline(
        db, tenant, conversation_id, PageRequest(last=3, before=first.start_cursor)
    )

    # Then pages are chronological and the flags exact
    assert (_names(last), _flags(last)) == (["m4", "m5", "m6"], (True, False))
    assert (_names(middle), _flags(middle)) == (["m1", "m2", "m3"], (True, True))
    assert (_names(first), _flags(first)) == (["m0"], (False, True))
    assert (_names(before_start), _flags(before_start)) == ([], (False, True))


async def test_first_with_before_reads_the_window_between_two_cursors(
    db: Database, tenant: TenantId
) -> None:
    # Given seven messages and the cursors of m1 and m5
    _, conversation_id = await _thread(db, tenant, list(range(7)))
    whole = await _timeline(db, tenant, conversation_id, PageRequest(first=7))

    # When the window after m1 and before m5 is read with first=10, then first=2
    window = await _timeline(
        db,
        tenant,
        conversation_id,
        PageRequest(first=10, after=whole.cursors[1], before=whole.cursors[5]),
    )
    narrow = await _timeline(
        db,
        tenant,
        conversation_id,
        PageRequest(first=2, after=whole.cursors[1], before=whole.cursors[5]),
    )

    # Then it holds m2..m4; with first, hasNextPage says whether the window goes on
    assert (_names(window), _flags(window)) == (["m2", "m3", "m4"], (True, False))
    assert (_names(narrow), _flags(narrow)) == (["m2", "m3"], (True, True))


async def test_cursors_of_a_page_address_the_same_rows_as_a_full_read(
    db: Database, tenant: TenantId
) -> None:
    # Given five messages
    _, conversation_id = await _thread(db, tenant, list(range(5)))
    whole = await _timeline(db, tenant, conversation_id, PageRequest(first=5))

    # When reading after each cursor of the full read
    after_each = [
        _names(await _timeline(db, tenant, conversation_id, PageRequest(first=5, after=c)))
        for c in whole.cursors
    ]

    # Then each read starts right after that row
    assert after_each == [
        ["m1", "m2", "m3", "m4"],
        ["m2", "m3", "m4"],
        ["m3", "m4"],
        ["m4"],
        [],
    ]


# --- rejected requests ---------------------------------------------------------------------------


async def test_a_cursor_of_another_conversation_is_rejected(db: Database, tenant: TenantId) -> None:
    # Given two conversations and a cursor of the first
    account = await channel_account(db, tenant)
    one = await _say(db, tenant, account.id, "a1", at(0), "thread-a")
    other = await _say(db, tenant, account.id, "b1", at(1), "thread-b")
    cursor = (await _timeline(db, tenant, one, PageRequest(first=1))).end_cursor
    assert cursor is not None

    # When it is used on the second conversation, as after and as before
    with pytest.raises(ValidationFailed) as as_after:
        await _timeline(db, tenant, other, PageRequest(first=5, after=cursor))
    with pytest.raises(ValidationFailed) as as_before:
        await _timeline(db, tenant, other, PageRequest(last=5, before=cursor))

    # Then it is refused, on the argument that carried it
    assert [(e.field, e.code) for e in as_after.value.errors] == [(("after",), ErrorCode.INVALID)]
    assert [(e.field, e.code) for e in as_before.value.errors] == [(("before",), ErrorCode.INVALID)]


SCOPE = object()  # stands for the conversation's id in a forged payload
AT = "2026-11-20T09:00:00+00:00"


def _forged(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!!",
        "ขอบคุณ",
        {"offset": 20},
        ["messages", None, AT, 1],  # no conversation
        ["messages", SCOPE, "2026-11-20T09:00:00", 1],  # naive time
        ["messages", SCOPE, "yesterday", 1],
        ["messages", SCOPE, AT, "1"],
        ["messages", SCOPE, AT, True],
        ["messages", SCOPE, AT, 2**64],  # beyond bigint
        ["messages", SCOPE, AT, -(2**70)],
        ["messages", SCOPE, AT],
    ],
    ids=lambda cursor: json.dumps(cursor, default=lambda _: "SCOPE", ensure_ascii=False),
)
async def test_a_garbage_cursor_is_rejected(db: Database, tenant: TenantId, cursor: object) -> None:
    # Given a conversation
    _, conversation_id = await _thread(db, tenant, [0, 1])
    if isinstance(cursor, list):
        cursor = [conversation_id if item is SCOPE else item for item in cursor]
    after = cursor if isinstance(cursor, str) else _forged(cursor)

    # When a malformed or forged cursor is passed
    with pytest.raises(ValidationFailed) as raised:
        await _timeline(db, tenant, conversation_id, PageRequest(first=5, after=after))

    # Then it is refused as a bad `after`, not as a database error
    assert [(e.field, e.code) for e in raised.value.errors] == [(("after",), ErrorCode.INVALID)]


async def test_a_conversation_list_cursor_is_rejected_by_a_timeline(
    db: Database, tenant: TenantId
) -> None:
    # Given a conversation and a cursor of the conversation list
    _, conversation_id = await _thread(db, tenant, [0])
    async with db.transaction(tenant) as uow:
        listed = await uow.conversations.list(PageRequest(first=1))
    assert listed.end_cursor is not None

    # When it is used on the timeline
    with pytest.raises(ValidationFailed) as raised:
        await _timeline(db, tenant, conversation_id, PageRequest(first=5, after=listed.end_cursor))

    # Then it is refused
    assert [(e.field, e.code) for e in raised.value.errors] == [(("after",), ErrorCode.INVALID)]


@pytest.mark.parametrize(
    ("request_", "errors"),
    [
        (PageRequest(first=101), [(("first",), ErrorCode.OUT_OF_RANGE)]),
        (PageRequest(last=101), [(("last",), ErrorCode.OUT_OF_RANGE)]),
        (PageRequest(first=-1), [(("first",), ErrorCode.OUT_OF_RANGE)]),
        (PageRequest(first=3, last=3), [(("first",), ErrorCode.INVALID)]),
        (
            PageRequest(first=500, last=3),
            [(("first",), ErrorCode.INVALID), (("first",), ErrorCode.OUT_OF_RANGE)],
        ),
    ],
)
async def test_page_sizes_beyond_100_and_first_with_last_are_rejected(
    db: Database,
    tenant: TenantId,
    request_: PageRequest,
    errors: list[tuple[tuple[str, ...], ErrorCode]],
) -> None:
    # Given a conversation
    _, conversation_id = await _thread(db, tenant, [0])

    # When an out-of-contract page is requested, on the timeline and on the conversation list
    with pytest.raises(ValidationFailed) as on_timeline:
        await _timeline(db, tenant, conversation_id, request_)
    with pytest.raises(ValidationFailed) as on_list:
        async with db.transaction(tenant) as uow:
            await uow.conversations.list(request_)

    # Then it is refused with the offending argument
    assert [(e.field, e.code) for e in on_timeline.value.errors] == errors
    assert [(e.field, e.code) for e in on_list.value.errors] == errors


async def test_a_page_of_exactly_100_is_allowed(db: Database, tenant: TenantId) -> None:
    # Given a conversation of 101 messages
    _, conversation_id = await _thread(db, tenant, [i / 10 for i in range(101)])

    # When 100 are requested, forward then backward
    forward = await _timeline(db, tenant, conversation_id, PageRequest(first=100))
    backward = await _timeline(db, tenant, conversation_id, PageRequest(last=100))

    # Then exactly 100 come back, with one more on the far side
    assert (len(forward.items), _flags(forward)) == (100, (False, True))
    assert (len(backward.items), _flags(backward)) == (100, (True, False))
    assert _names(forward)[0] == "m0"
    assert _names(backward)[-1] == "m100"


# --- the conversation list ---------------------------------------------------------------------


async def _list(
    db: Database,
    tenant: TenantId,
    request: PageRequest,
    *,
    channel: Channel | None = None,
    channel_account_id: int | None = None,
) -> Page[Conversation]:
    async with db.transaction(tenant) as uow:
        return await uow.conversations.list(
            request, channel=channel, channel_account_id=channel_account_id
        )


async def test_conversation_list_is_newest_activity_first(db: Database, tenant: TenantId) -> None:
    # Given four threads whose latest messages are at minutes 30, 10, 40 and 10
    account = await channel_account(db, tenant)
    ids = {}
    for name, minutes in (("a", [0, 30]), ("b", [10]), ("c", [5, 40]), ("d", [10])):
        for minute in minutes:
            ids[name] = await _say(db, tenant, account.id, f"{name}{minute}", at(minute), name)

    # When the list is read, then a late message (minute 1) arrives in b and a new one
    # (minute 50) in d
    before = await _list(db, tenant, PageRequest(first=10))
    await _say(db, tenant, account.id, "b-late", at(1), "b")
    await _say(db, tenant, account.id, "d-new", at(50), "d")
    after = await _list(db, tenant, PageRequest(first=10))

    # Then it is ordered by last activity, newest first, ties by id descending; the late
    # message does not move b, the new one moves d to the top
    assert [c.id for c in before.items] == [ids["c"], ids["a"], ids["d"], ids["b"]]
    assert [c.last_message_at for c in before.items] == [at(40), at(30), at(10), at(10)]
    assert ids["d"] > ids["b"]
    assert [c.id for c in after.items] == [ids["d"], ids["c"], ids["a"], ids["b"]]
    assert _flags(after) == (False, False)


async def test_conversation_list_filters_by_channel_and_by_channel_account(
    db: Database, tenant: TenantId
) -> None:
    # Given conversations on two LINE accounts and one Facebook page
    line_a = await channel_account(db, tenant, external_account_id="oa-a")
    line_b = await channel_account(db, tenant, external_account_id="oa-b")
    page = await channel_account(db, tenant, channel=Channel.FACEBOOK, external_account_id="p-1")
    on_a = await _say(db, tenant, line_a.id, "x1", at(1), "t")
    on_b = await _say(db, tenant, line_b.id, "x2", at(2), "t")
    on_page = await _say(db, tenant, page.id, "x3", at(3), "t")
    on_a2 = await _say(db, tenant, line_a.id, "x4", at(4), "t2")

    # When listed by channel, by account, by both, and unfiltered
    line = await _list(db, tenant, PageRequest(first=10), channel=Channel.LINE)
    facebook = await _list(db, tenant, PageRequest(first=10), channel=Channel.FACEBOOK)
    shopee = await _list(db, tenant, PageRequest(first=10), channel=Channel.SHOPEE)
    account_a = await _list(db, tenant, PageRequest(first=10), channel_account_id=line_a.id)
    both = await _list(
        db, tenant, PageRequest(first=10), channel=Channel.FACEBOOK, channel_account_id=line_a.id
    )
    everything = await _list(db, tenant, PageRequest(first=10))

    # Then each holds exactly the matching conversations, newest first
    assert [c.id for c in line.items] == [on_a2, on_b, on_a]
    assert [c.id for c in facebook.items] == [on_page]
    assert [c.id for c in shopee.items] == []
    assert [c.id for c in account_a.items] == [on_a2, on_a]
    assert [c.id for c in both.items] == []
    assert [c.id for c in everything.items] == [on_a2, on_page, on_b, on_a]
    assert {c.channel for c in line.items} == {"LINE"}


async def test_conversation_list_keyset_pages_forward_and_backward(
    db: Database, tenant: TenantId
) -> None:
    # Given seven conversations, two of them with the same last activity
    account = await channel_account(db, tenant)
    minutes = [1, 2, 3, 3, 5, 6, 7]
    ids = [
        await _say(db, tenant, account.id, f"x{i}", at(m), f"thread-{i}")
        for i, m in enumerate(minutes)
    ]
    newest_first = [ids[6], ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]]

    # When listed forward in pages of 3 (with a conversation opened between requests), and
    # backward from the end in pages of 3
    p1 = await _list(db, tenant, PageRequest(first=3))
    newcomer = await _say(db, tenant, account.id, "x-new", at(9), "thread-new")
    p2 = await _list(db, tenant, PageRequest(first=3, after=p1.end_cursor))
    p3 = await _list(db, tenant, PageRequest(first=3, after=p2.end_cursor))
    b1 = await _list(db, tenant, PageRequest(last=3))
    b2 = await _list(db, tenant, PageRequest(last=3, before=b1.start_cursor))
    b3 = await _list(db, tenant, PageRequest(last=3, before=b2.start_cursor))

    # Then forward pages walk the list once; the newcomer is at the top, behind the reader
    assert [c.id for c in p1.items + p2.items + p3.items] == newest_first
    assert [_flags(p) for p in (p1, p2, p3)] == [(False, True), (True, True), (True, False)]
    # And backward pages walk it from the oldest end, each page newest first
    assert [c.id for c in b1.items] == [ids[2], ids[1], ids[0]]
    assert [c.id for c in b2.items] == [ids[5], ids[4], ids[3]]
    assert [c.id for c in b3.items] == [newcomer, ids[6]]
    assert [_flags(p) for p in (b1, b2, b3)] == [(True, False), (True, True), (False, True)]


async def test_conversation_list_paging_with_a_filter_stays_in_the_filter(
    db: Database, tenant: TenantId
) -> None:
    # Given LINE and Facebook conversations interleaved in time
    line = await channel_account(db, tenant)
    page = await channel_account(db, tenant, channel=Channel.FACEBOOK, external_account_id="p")
    line_ids = []
    for i in range(5):
        line_ids.append(await _say(db, tenant, line.id, f"l{i}", at(2 * i), f"t{i}"))
        await _say(db, tenant, page.id, f"f{i}", at(2 * i + 1), f"t{i}")

    # When LINE is listed in pages of 2
    seen: list[int] = []
    request = PageRequest(first=2)
    while True:
        result = await _list(db, tenant, request, channel=Channel.LINE)
        seen += [c.id for c in result.items]
        if not result.has_next_page:
            break
        request = PageRequest(first=2, after=result.end_cursor)

    # Then exactly the LINE conversations come back, newest first
    assert seen == list(reversed(line_ids))


@pytest.mark.parametrize(
    "relations",
    [Relations(), Relations(contact=True), Relations(last_message=True), Relations(True, True)],
    ids=repr,
)
async def test_a_conversation_list_read_with_its_relations_matches_the_list_and_batches(
    db: Database, tenant: TenantId, relations: Relations
) -> None:
    # Given seven conversations of five contacts (two share their last activity), and one
    # opened without a contact or a message
    account = await channel_account(db, tenant)
    for i, minute in enumerate([1, 2, 3, 3, 5, 6, 7]):
        user = f"U-{i % 5}"
        await persist_message(
            db,
            tenant,
            inbound(
                account_id=account.id,
                external_message_id=f"x{i}",
                when=at(minute),
                thread=f"thread-{i}",
                external_user_id=user,
            ),
        )
    bare, _ = await upsert_conversation(
        db,
        tenant,
        channel_account_id=account.id,
        external_thread_id="no-contact",
        contact=None,
        channel_timestamp=at(4),
    )

    # When the list is walked forward and backward in pages of 3, read with the relations,
    # and the same pages are read plainly with a batch per relation
    requests = [PageRequest(first=3), PageRequest(last=3)]
    pages = 0
    while requests:
        request = requests.pop()
        async with db.transaction(tenant) as uow:
            listed = await uow.conversations.list_with(request, relations)
            plain = await uow.conversations.list(request)
            ids = [c.id for c in plain.items]
            contacts = await uow.contacts.get_many(
                sorted({c.contact_id for c in plain.items if c.contact_id is not None})
            )
            latest = await uow.messages.latest_by_conversations(ids)

        # Then each page, its cursors and flags are the list's, and the relations the batches'
        assert listed.page == plain
        assert listed.contacts == (contacts if relations.contact else {})
        expected_latest = {i: latest.get(i) for i in ids} if relations.last_message else {}
        assert listed.last_messages == expected_latest
        if relations.last_message and bare.id in ids:
            assert listed.last_messages[bare.id] is None
        pages += 1
        if request.first is not None and plain.has_next_page:
            requests.append(PageRequest(first=3, after=plain.end_cursor))
        if request.last is not None and plain.has_previous_page:
            requests.append(PageRequest(last=3, before=plain.start_cursor))
    assert pages == 6
    assert bare.contact_id is None


async def test_a_timeline_cursor_is_rejected_by_the_conversation_list(
    db: Database, tenant: TenantId
) -> None:
    # Given a timeline cursor
    _, conversation_id = await _thread(db, tenant, [0])
    cursor = (await _timeline(db, tenant, conversation_id, PageRequest(first=1))).end_cursor

    # When it is used on the conversation list
    with pytest.raises(ValidationFailed) as raised:
        await _list(db, tenant, PageRequest(first=5, after=cursor))

    # Then it is refused
    assert [(e.field, e.code) for e in raised.value.errors] == [(("after",), ErrorCode.INVALID)]


async def test_timeline_includes_outbound_and_page_keys_follow_channel_time(
    db: Database, tenant: TenantId
) -> None:
    # Given an inbound message and a reply stored before a late inbound message
    account_id, conversation_id = await _thread(db, tenant, [0, 10])
    await persist_message(
        db,
        tenant,
        outbound(
            account_id=account_id,
            conversation_id=conversation_id,
            idempotency_key="r",
            when=at(5),
        ),
    )

    # When read in pages of one
    first = await _timeline(db, tenant, conversation_id, PageRequest(first=1))
    second = await _timeline(
        db, tenant, conversation_id, PageRequest(first=1, after=first.end_cursor)
    )

    # Then the reply sits between them by channel time
    assert [m.idempotency_key for m in first.items + second.items] == ["m0", "r"]
