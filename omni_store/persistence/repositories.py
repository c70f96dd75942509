"""Tenant-scoped repositories: every statement of the message store lives here.

A repository is built from a :class:`~omni_store.persistence.database.UnitOfWork`, which is
bound to one tenant; every statement below filters on (or writes) that tenant's id, so no
method can run unscoped. Repositories never commit: the unit of work does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Table,
    func,
    literal,
    literal_column,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert

from omni_store.persistence.contract import (
    DEFAULT_FALLBACK_WINDOW_SECONDS,
    AttachmentInput,
    ContactInput,
)
from omni_store.persistence.cursors import (
    Keyset,
    Page,
    PageRequest,
    decode_cursor,
    encode_cursor,
)
from omni_store.persistence.enums import Channel
from omni_store.persistence.tables import (
    TimestampTZ,
    attachments,
    channel_accounts,
    contacts,
    conversations,
    messages,
)

if TYPE_CHECKING:
    from omni_store.persistence.database import UnitOfWork

R = TypeVar("R")


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelAccount:
    tenant_id: Any
    id: int
    channel: str
    external_account_id: str
    display_name: str | None
    fallback_window_seconds: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Contact:
    tenant_id: Any
    id: int
    channel_account_id: int
    external_user_id: str
    display_name: str | None
    avatar_url: str | None
    profile: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Conversation:
    tenant_id: Any
    id: int
    channel_account_id: int
    channel: str
    thread_key: str
    external_thread_id: str | None
    contact_id: int | None
    last_message_at: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Message:
    tenant_id: Any
    id: int
    channel_account_id: int
    conversation_id: int
    contact_id: int | None
    direction: str
    sender_type: str
    sender_external_id: str | None
    sender_display_name: str | None
    sender_avatar_url: str | None
    content_type: str
    content_text: str | None
    content_struct: dict[str, Any] | None
    external_message_id: str | None
    idempotency_key: str
    reply_to_external_message_id: str | None
    channel_timestamp: datetime
    created_at: datetime
    status: str


@dataclass(frozen=True, slots=True)
class Attachment:
    tenant_id: Any
    id: int
    message_id: int
    position: int
    kind: str
    url: str | None
    mime_type: str | None
    size_bytes: int | None
    file_name: str | None
    width: int | None
    height: int | None
    duration_ms: int | None
    external_id: str | None
    metadata: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Replay:
    """What an earlier delivery of the same idempotency key stored."""

    message_id: int
    conversation_id: int
    contact_id: int | None
    content_hash: bytes


def _columns(table: Table, record: type) -> list[Any]:
    return [table.c[f.name] for f in fields(record)]


def _record(record: type[R], row: Any) -> R:
    return record(*row[: len(fields(record))])  # type: ignore[call-arg]


_ACCOUNT_COLUMNS = _columns(channel_accounts, ChannelAccount)
_CONTACT_COLUMNS = _columns(contacts, Contact)
_CONVERSATION_COLUMNS = _columns(conversations, Conversation)
_MESSAGE_COLUMNS = _columns(messages, Message)
_ATTACHMENT_COLUMNS = _columns(attachments, Attachment)


def _bigint_array(ids: Sequence[int]) -> Any:
    return literal(list(ids), ARRAY(BigInteger))


# --- keyset pagination -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Keyset:
    """How one connection is ordered: a (timestamp, id) key, ascending or descending."""

    kind: str
    table: Table
    at: Any
    id: Any
    descending: bool

    def key(self, row: Any) -> Keyset:
        return getattr(row, self.at.name), getattr(row, self.id.name)

    def _cmp(self, keyset: Keyset, *, later: bool, inclusive: bool) -> ColumnElement[bool]:
        # One row comparison: PostgreSQL turns it into an index range on (at, id).
        left = tuple_(self.at, self.id)
        right = tuple_(literal(keyset[0], TimestampTZ), literal(keyset[1], BigInteger))
        if later != self.descending:
            return left >= right if inclusive else left > right
        return left <= right if inclusive else left < right

    def later_than(self, keyset: Keyset, *, inclusive: bool = False) -> ColumnElement[bool]:
        return self._cmp(keyset, later=True, inclusive=inclusive)

    def earlier_than(self, keyset: Keyset, *, inclusive: bool = False) -> ColumnElement[bool]:
        return self._cmp(keyset, later=False, inclusive=inclusive)

    def order(self, forward: bool, source: Any = None) -> list[Any]:
        """ORDER BY of a page read forward or backward, on the table or a subquery of it."""
        ascending = forward != self.descending
        cols = (
            (self.at, self.id)
            if source is None
            else (source.c[self.at.name], source.c[self.id.name])
        )
        return [c.asc() if ascending else c.desc() for c in cols]


async def _keyset_page(
    uow: UnitOfWork,
    ks: _Keyset,
    record: type[R],
    columns: list[Any],
    scope: list[ColumnElement[bool]],
    request: PageRequest,
    scope_id: int | None,
) -> Page[R]:
    """One statement per page, whatever its size: the page and, when a cursor is given, whether
    anything lies beyond the cursor on the other side (Relay's exact hasPrevious/hasNextPage).
    A page that comes back empty after a cursor costs a second, one-row statement."""
    request.check()
    after = (
        decode_cursor(request.after, kind=ks.kind, scope=scope_id, field="after")
        if request.after is not None
        else None
    )
    before = (
        decode_cursor(request.before, kind=ks.kind, scope=scope_id, field="before")
        if request.before is not None
        else None
    )
    bounds = [*scope]
    if after is not None:
        bounds.append(ks.later_than(after))
    if before is not None:
        bounds.append(ks.earlier_than(before))
    size = request.size
    forward = request.forward
    page = select(*columns).where(*bounds).order_by(*ks.order(forward)).limit(size + 1)

    # The cursor on the side we came from: is anything there (its own row included)? Asked
    # once per statement (an InitPlan) as a column of the page itself; only an empty page
    # needs a statement of its own to ask it.
    behind = after if forward else before
    beyond_cursor = False
    if behind is None:
        rows = list(await uow.execute(page))
    else:
        side = (
            ks.earlier_than(behind, inclusive=True)
            if forward
            else ks.later_than(behind, inclusive=True)
        )
        # The nearest row behind the cursor, walking the index away from it: ordered so that
        # only an index scan can answer it without a sort (a bare EXISTS let the planner pick
        # a Seq Scan when one tenant held most of a table).
        nearest = (
            select(ks.id)
            .where(*scope, side)
            .order_by(*ks.order(not forward))
            .limit(1)
            .scalar_subquery()
        )
        probe = nearest.is_not(None)
        rows = list(await uow.execute(page.add_columns(probe.label("beyond_cursor"))))
        if rows:
            beyond_cursor = bool(rows[0].beyond_cursor)
        else:
            beyond_cursor = bool((await uow.execute(select(probe))).scalar_one())

    overflow = len(rows) > size
    rows = rows[:size]
    if not forward:
        rows.reverse()
    items = [_record(record, r) for r in rows]
    cursors = [encode_cursor(ks.kind, scope_id, ks.key(r)) for r in rows]
    if forward:
        has_next, has_previous = overflow, beyond_cursor
    else:
        has_next, has_previous = beyond_cursor, overflow
    # Relay: with `first`, hasNextPage is decided by the page alone; `before` only speaks
    # when `last` is not set, and vice versa, which is what the flags above encode.
    return Page(items, cursors, has_next_page=has_next, has_previous_page=has_previous)


# --- repositories ------------------------------------------------------------------------------


class _Repository:
    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow
        self._tenant = uow.tenant


class ChannelAccountRepository(_Repository):
    _keyset = _Keyset(
        "channel_accounts",
        channel_accounts,
        channel_accounts.c.created_at,
        channel_accounts.c.id,
        descending=False,
    )

    async def register(
        self,
        *,
        channel: Channel,
        external_account_id: str,
        display_name: str | None,
        fallback_window_seconds: int | None,
    ) -> tuple[ChannelAccount, bool]:
        """Create the account, or return the existing one with what was given refreshed.
        The flag says whether it was created."""
        stmt = insert(channel_accounts).values(
            tenant_id=self._tenant,
            channel=channel.value,
            external_account_id=external_account_id,
            display_name=display_name,
            fallback_window_seconds=fallback_window_seconds or DEFAULT_FALLBACK_WINDOW_SECONDS,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "channel", "external_account_id"],
            set_={
                "display_name": func.coalesce(
                    stmt.excluded.display_name, channel_accounts.c.display_name
                ),
                "fallback_window_seconds": func.coalesce(
                    literal(fallback_window_seconds, Integer),
                    channel_accounts.c.fallback_window_seconds,
                ),
            },
        ).returning(*_ACCOUNT_COLUMNS, literal_column("xmax = 0").label("created"))
        row = (await self._uow.execute(stmt)).one()
        return _record(ChannelAccount, row), bool(row.created)

    async def get(self, account_id: int) -> ChannelAccount | None:
        return (await self.get_many([account_id])).get(account_id)

    async def get_many(self, ids: Sequence[int]) -> dict[int, ChannelAccount]:
        stmt = select(*_ACCOUNT_COLUMNS).where(
            channel_accounts.c.tenant_id == self._tenant,
            channel_accounts.c.id == func.any(_bigint_array(ids)),
        )
        return {r.id: _record(ChannelAccount, r) for r in await self._uow.execute(stmt)}

    async def list(self, request: PageRequest) -> Page[ChannelAccount]:
        return await _keyset_page(
            self._uow,
            self._keyset,
            ChannelAccount,
            _ACCOUNT_COLUMNS,
            [channel_accounts.c.tenant_id == self._tenant],
            request,
            None,
        )


class ContactRepository(_Repository):
    async def upsert(self, channel_account_id: int, contact: ContactInput) -> Contact:
        """The same row (same id) for the same (tenant, channel account, external user id);
        the profile fields given are refreshed, those omitted are kept."""
        stmt = insert(contacts).values(
            tenant_id=self._tenant,
            channel_account_id=channel_account_id,
            external_user_id=contact.external_user_id,
            display_name=contact.display_name,
            avatar_url=contact.avatar_url,
            profile=contact.profile,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "channel_account_id", "external_user_id"],
            set_={
                "display_name": func.coalesce(stmt.excluded.display_name, contacts.c.display_name),
                "avatar_url": func.coalesce(stmt.excluded.avatar_url, contacts.c.avatar_url),
                "profile": func.coalesce(stmt.excluded.profile, contacts.c.profile),
                "updated_at": func.now(),
            },
        ).returning(*_CONTACT_COLUMNS)
        return _record(Contact, (await self._uow.execute(stmt)).one())

    async def get(self, contact_id: int) -> Contact | None:
        return (await self.get_many([contact_id])).get(contact_id)

    async def get_many(self, ids: Sequence[int]) -> dict[int, Contact]:
        stmt = select(*_CONTACT_COLUMNS).where(
            contacts.c.tenant_id == self._tenant,
            contacts.c.id == func.any(_bigint_array(ids)),
        )
        return {r.id: _record(Contact, r) for r in await self._uow.execute(stmt)}

    async def count(self) -> int:
        stmt = select(func.count()).where(contacts.c.tenant_id == self._tenant)
        return int((await self._uow.execute(stmt)).scalar_one())


class ConversationRepository(_Repository):
    _keyset = _Keyset(
        "conversations",
        conversations,
        conversations.c.last_message_at,
        conversations.c.id,
        descending=True,
    )

    async def upsert(
        self,
        account: ChannelAccount,
        *,
        thread_key: str,
        external_thread_id: str | None,
        contact_id: int | None,
        at: datetime,
    ) -> Conversation:
        """The same row for the same thread key; ``last_message_at`` only moves forward."""
        stmt = insert(conversations).values(
            tenant_id=self._tenant,
            channel_account_id=account.id,
            channel=account.channel,
            thread_key=thread_key,
            external_thread_id=external_thread_id,
            contact_id=contact_id,
            last_message_at=at,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "channel_account_id", "thread_key"],
            set_={
                "last_message_at": func.greatest(
                    conversations.c.last_message_at, stmt.excluded.last_message_at
                ),
                "contact_id": func.coalesce(conversations.c.contact_id, stmt.excluded.contact_id),
                "external_thread_id": func.coalesce(
                    conversations.c.external_thread_id, stmt.excluded.external_thread_id
                ),
            },
        ).returning(*_CONVERSATION_COLUMNS)
        return _record(Conversation, (await self._uow.execute(stmt)).one())

    async def touch(
        self, conversation_id: int, *, channel_account_id: int, at: datetime
    ) -> Conversation | None:
        """Move ``last_message_at`` forward to ``at`` on a conversation of this account."""
        stmt = (
            update(conversations)
            .where(
                conversations.c.tenant_id == self._tenant,
                conversations.c.id == conversation_id,
                conversations.c.channel_account_id == channel_account_id,
            )
            .values(last_message_at=func.greatest(conversations.c.last_message_at, at))
            .returning(*_CONVERSATION_COLUMNS)
        )
        row = (await self._uow.execute(stmt)).one_or_none()
        return None if row is None else _record(Conversation, row)

    async def get(self, conversation_id: int) -> Conversation | None:
        return (await self.get_many([conversation_id])).get(conversation_id)

    async def get_many(self, ids: Sequence[int]) -> dict[int, Conversation]:
        stmt = select(*_CONVERSATION_COLUMNS).where(
            conversations.c.tenant_id == self._tenant,
            conversations.c.id == func.any(_bigint_array(ids)),
        )
        return {r.id: _record(Conversation, r) for r in await self._uow.execute(stmt)}

    async def list(
        self,
        request: PageRequest,
        *,
        channel: Channel | None = None,
        channel_account_id: int | None = None,
    ) -> Page[Conversation]:
        """Newest activity first, (last_message_at, id) descending, keyset paginated."""
        scope: list[ColumnElement[bool]] = [conversations.c.tenant_id == self._tenant]
        if channel is not None:
            scope.append(conversations.c.channel == channel.value)
        if channel_account_id is not None:
            scope.append(conversations.c.channel_account_id == channel_account_id)
        return await _keyset_page(
            self._uow, self._keyset, Conversation, _CONVERSATION_COLUMNS, scope, request, None
        )


class MessageRepository(_Repository):
    _keyset = _Keyset(
        "messages", messages, messages.c.channel_timestamp, messages.c.id, descending=False
    )

    async def account_with_replay(
        self, channel_account_id: int, idempotency_key: str
    ) -> tuple[ChannelAccount | None, Replay | None]:
        """The channel account and, if this key was stored before, what it stored: the first
        read of every persist, in one round trip."""
        m = messages
        stmt = (
            select(
                *_ACCOUNT_COLUMNS,
                m.c.id.label("message_id"),
                m.c.conversation_id,
                m.c.contact_id,
                m.c.content_hash,
            )
            .select_from(
                channel_accounts.outerjoin(
                    m,
                    (m.c.tenant_id == channel_accounts.c.tenant_id)
                    & (m.c.channel_account_id == channel_accounts.c.id)
                    & (m.c.idempotency_key == idempotency_key),
                )
            )
            .where(
                channel_accounts.c.tenant_id == self._tenant,
                channel_accounts.c.id == channel_account_id,
            )
        )
        row = (await self._uow.execute(stmt)).one_or_none()
        if row is None:
            return None, None
        account = _record(ChannelAccount, row)
        if row.message_id is None:
            return account, None
        return account, Replay(
            row.message_id, row.conversation_id, row.contact_id, bytes(row.content_hash)
        )

    async def find_replay(self, channel_account_id: int, idempotency_key: str) -> Replay | None:
        stmt = select(
            messages.c.id,
            messages.c.conversation_id,
            messages.c.contact_id,
            messages.c.content_hash,
        ).where(
            messages.c.tenant_id == self._tenant,
            messages.c.channel_account_id == channel_account_id,
            messages.c.idempotency_key == idempotency_key,
        )
        row = (await self._uow.execute(stmt)).one_or_none()
        return None if row is None else Replay(row[0], row[1], row[2], bytes(row[3]))

    async def insert(self, **values: Any) -> int | None:
        """Insert unless the idempotency key is taken (the database arbitrates concurrent
        deliveries); the new id, or None when another delivery stored it first."""
        stmt = (
            insert(messages)
            .values(tenant_id=self._tenant, **values)
            .on_conflict_do_nothing(
                index_elements=["tenant_id", "channel_account_id", "idempotency_key"]
            )
            .returning(messages.c.id)
        )
        return (await self._uow.execute(stmt)).scalar_one_or_none()

    async def get(self, message_id: int) -> Message | None:
        return (await self.get_many([message_id])).get(message_id)

    async def get_many(self, ids: Sequence[int]) -> dict[int, Message]:
        stmt = select(*_MESSAGE_COLUMNS).where(
            messages.c.tenant_id == self._tenant,
            messages.c.id == func.any(_bigint_array(ids)),
        )
        return {r.id: _record(Message, r) for r in await self._uow.execute(stmt)}

    async def timeline(self, conversation_id: int, request: PageRequest) -> Page[Message]:
        """Chronological by (channel_timestamp, id); cursors belong to this conversation."""
        scope = [
            messages.c.tenant_id == self._tenant,
            messages.c.conversation_id == conversation_id,
        ]
        return await _keyset_page(
            self._uow, self._keyset, Message, _MESSAGE_COLUMNS, scope, request, conversation_id
        )

    async def latest_by_conversations(self, conversation_ids: Sequence[int]) -> dict[int, Message]:
        """The last message of each conversation, one index probe each, in one statement."""
        ids = func.unnest(_bigint_array(conversation_ids)).table_valued("id").render_derived("c")
        latest = (
            select(*_MESSAGE_COLUMNS)
            .where(messages.c.tenant_id == self._tenant, messages.c.conversation_id == ids.c.id)
            .order_by(messages.c.channel_timestamp.desc(), messages.c.id.desc())
            .limit(1)
            .lateral("m")
        )
        stmt = select(*latest.c).select_from(ids.join(latest, true()))
        return {r.conversation_id: _record(Message, r) for r in await self._uow.execute(stmt)}

    async def lock(self, message_id: int) -> bool:
        """Lock the message row (serializes appends to its attachments); False if absent."""
        stmt = (
            select(messages.c.id)
            .where(messages.c.tenant_id == self._tenant, messages.c.id == message_id)
            .with_for_update()
        )
        return (await self._uow.execute(stmt)).scalar_one_or_none() is not None


class AttachmentRepository(_Repository):
    async def insert_many(
        self, message_id: int, items: Sequence[AttachmentInput], *, start_position: int = 0
    ) -> list[Attachment]:
        """Append metadata in order; an external id already stored on the message is skipped."""
        if not items:
            return []
        rows = [
            {
                "tenant_id": self._tenant,
                "message_id": message_id,
                "position": start_position + index,
                "kind": str(a.kind),
                "url": a.url,
                "mime_type": a.mime_type,
                "size_bytes": a.size_bytes,
                "file_name": a.file_name,
                "width": a.width,
                "height": a.height,
                "duration_ms": a.duration_ms,
                "external_id": a.external_id,
                "metadata": a.metadata,
            }
            for index, a in enumerate(items)
        ]
        stmt = (
            insert(attachments)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["tenant_id", "message_id", "external_id"])
            .returning(*_ATTACHMENT_COLUMNS)
        )
        stored = [_record(Attachment, r) for r in await self._uow.execute(stmt)]
        return sorted(stored, key=lambda a: a.position)

    async def get_many(self, ids: Sequence[int]) -> dict[int, Attachment]:
        stmt = select(*_ATTACHMENT_COLUMNS).where(
            attachments.c.tenant_id == self._tenant,
            attachments.c.id == func.any(_bigint_array(ids)),
        )
        return {r.id: _record(Attachment, r) for r in await self._uow.execute(stmt)}

    async def by_messages(self, message_ids: Sequence[int]) -> dict[int, list[Attachment]]:
        stmt = (
            select(*_ATTACHMENT_COLUMNS)
            .where(
                attachments.c.tenant_id == self._tenant,
                attachments.c.message_id == func.any(_bigint_array(message_ids)),
            )
            .order_by(attachments.c.message_id, attachments.c.position)
        )
        grouped: dict[int, list[Attachment]] = {}
        for r in await self._uow.execute(stmt):
            grouped.setdefault(r.message_id, []).append(_record(Attachment, r))
        return grouped

    async def stats(self, message_id: int) -> tuple[int, int]:
        """(how many the message has, the next free position)."""
        stmt = select(func.count(), func.coalesce(func.max(attachments.c.position) + 1, 0)).where(
            attachments.c.tenant_id == self._tenant, attachments.c.message_id == message_id
        )
        count, next_position = (await self._uow.execute(stmt)).one()
        return int(count), int(next_position)


def timeline_cursor(message: Message) -> str:
    """The timeline cursor of a stored message (for an edge built outside a page)."""
    return encode_cursor(
        MessageRepository._keyset.kind,
        message.conversation_id,
        (message.channel_timestamp, message.id),
    )
