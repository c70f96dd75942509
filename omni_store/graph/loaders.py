"""Per-request dataloaders: one tenant-scoped statement per batch, results aligned to keys.

Named ``<Result>By<Key>Loader``. They read through the request's read unit of work, so they
see the tenant of the verified token and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Generic, TypeVar

from aiodataloader import DataLoader

from omni_store.persistence.database import UnitOfWork
from omni_store.persistence.repositories import (
    Attachment,
    ChannelAccount,
    Contact,
    Conversation,
    ListedConversations,
    Message,
)
from omni_store.persistence.service import Written

V = TypeVar("V")
R = TypeVar("R")
OpenUnitOfWork = Callable[[], Awaitable[UnitOfWork]]
Fetch = Callable[[UnitOfWork, Sequence[int]], Awaitable[Mapping[int, V]]]


class _ByIdLoader(DataLoader[int, V | None], Generic[V]):
    fetch: Fetch[V]

    def __init__(self, open_uow: OpenUnitOfWork) -> None:
        self._futures: dict[int, asyncio.Future[V | None]] = {}
        super().__init__(cache_map=self._futures)
        self._open_uow = open_uow

    def peek(self, key: int) -> tuple[bool, V | None]:
        """(True, value) if ``key`` is already loaded; (False, None) otherwise. Lets a
        resolver answer without an awaitable once its page's relations were loaded in one
        batch: graphql-core completes plain values far cheaper than awaitables."""
        future = self._futures.get(key)
        if future is None or not future.done() or future.cancelled() or future.exception():
            return False, None
        return True, future.result()

    def resolve(self, key: int, wrap: Callable[[V | None], R]) -> R | Awaitable[R]:
        """``wrap(value)`` now if loaded, else an awaitable of it."""
        loaded, value = self.peek(key)
        if loaded:
            return wrap(value)

        async def later() -> R:
            return wrap(await self.load(key))

        return later()

    async def load_all(self, keys: Sequence[int]) -> list[V | None]:
        """The values of ``keys``, in order: those not loaded yet are fetched in one batch
        (the statement a batch of ``load()`` calls makes) and kept as ``load()`` keeps them.
        A page's relations are loaded this way, without the future, queue entry and callback
        that ``load_many`` spends on every key."""
        missing = [key for key in dict.fromkeys(keys) if key not in self._futures]
        if missing:
            for key, value in zip(missing, await self.batch_load_fn(missing), strict=True):
                self.prime(key, value)
        values: list[V | None] = []
        for key in keys:
            future = self._futures[key]  # done, unless a load() of it is still in flight
            values.append(future.result() if future.done() else await future)
        return values

    async def batch_load_fn(self, keys: Sequence[int]) -> list[V | None]:
        found = await type(self).fetch(await self._open_uow(), keys)
        return [found.get(key) for key in keys]


class ChannelAccountByIdLoader(_ByIdLoader[ChannelAccount]):
    fetch = staticmethod(lambda uow, ids: uow.channel_accounts.get_many(ids))


class ContactByIdLoader(_ByIdLoader[Contact]):
    fetch = staticmethod(lambda uow, ids: uow.contacts.get_many(ids))


class ConversationByIdLoader(_ByIdLoader[Conversation]):
    fetch = staticmethod(lambda uow, ids: uow.conversations.get_many(ids))


class MessageByIdLoader(_ByIdLoader[Message]):
    fetch = staticmethod(lambda uow, ids: uow.messages.get_many(ids))


class LastMessageByConversationIdLoader(_ByIdLoader[Message]):
    fetch = staticmethod(lambda uow, ids: uow.messages.latest_by_conversations(ids))


class AttachmentByIdLoader(_ByIdLoader[Attachment]):
    fetch = staticmethod(lambda uow, ids: uow.attachments.get_many(ids))


class AttachmentsByMessageIdLoader(_ByIdLoader[list[Attachment]]):
    fetch = staticmethod(lambda uow, ids: uow.attachments.by_messages(ids))


@dataclass(frozen=True, slots=True)
class Loaders:
    channel_account_by_id: ChannelAccountByIdLoader
    contact_by_id: ContactByIdLoader
    conversation_by_id: ConversationByIdLoader
    message_by_id: MessageByIdLoader
    last_message_by_conversation_id: LastMessageByConversationIdLoader
    attachments_by_message_id: AttachmentsByMessageIdLoader
    attachment_by_id: AttachmentByIdLoader

    def prime_written(self, written: Written) -> None:
        """What a write just returned, so that its payload is shown without reading it back
        (the rows are those the write committed)."""
        self.channel_account_by_id.prime(written.account.id, written.account)
        self.message_by_id.prime(written.message.id, written.message)
        self.conversation_by_id.prime(written.conversation.id, written.conversation)
        if written.contact is not None:
            self.contact_by_id.prime(written.contact.id, written.contact)
        self.attachments_by_message_id.prime(written.message.id, written.attachments)

    def prime_listed(self, listed: ListedConversations) -> None:
        """The rows a page of conversations was read with, so that its conversations'
        relations resolve without a statement of their own."""
        for contact_id, contact in listed.contacts.items():
            self.contact_by_id.prime(contact_id, contact)
        for conversation_id, message in listed.last_messages.items():
            self.last_message_by_conversation_id.prime(conversation_id, message)

    def clear(self) -> None:
        """Drop every loaded value, once the operation's result is built. The context that
        holds the loaders is part of reference cycles (graphql-core's execution, Strawberry's
        Info): without this, a page's records, ids and futures (90-160 objects a read page)
        were left to the cyclic garbage collector instead of being freed at once."""
        for each in fields(self):
            getattr(self, each.name).clear_all()

    @classmethod
    def build(cls, open_uow: OpenUnitOfWork) -> Loaders:
        return cls(
            ChannelAccountByIdLoader(open_uow),
            ContactByIdLoader(open_uow),
            ConversationByIdLoader(open_uow),
            MessageByIdLoader(open_uow),
            LastMessageByConversationIdLoader(open_uow),
            AttachmentsByMessageIdLoader(open_uow),
            AttachmentByIdLoader(open_uow),
        )
