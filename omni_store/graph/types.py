"""GraphQL object types. They wrap persistence records; plain fields are copied once, and only
relations resolve (through the request's dataloaders)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, TypeVar

import strawberry
from strawberry.scalars import JSON
from strawberry.types.nodes import SelectedField, Selection

from omni_store.graph.context import Info
from omni_store.graph.errors import from_user_input
from omni_store.graph.ids import to_global_id
from omni_store.persistence import enums
from omni_store.persistence import repositories as records
from omni_store.persistence.cursors import Page, PageRequest
from omni_store.persistence.errors import UserInputError


def _enum(
    vocabulary: type[Enum], *, description: str, values: dict[str, str], name: str | None = None
) -> None:
    """Make a vocabulary of the store a GraphQL enum, in place, with each value described for
    the SDL (the vocabularies live in persistence, which knows nothing of GraphQL)."""
    wrapped = strawberry.enum(vocabulary, name=name, description=description)
    definition = wrapped.__strawberry_definition__  # type: ignore[attr-defined]
    assert {v.name for v in definition.values} == set(values), f"describe every {name} value"
    for value in definition.values:
        value.description = values[value.name]


# The GraphQL enums are the persistence enums themselves (strawberry.enum marks the class and
# returns it), under the names the schema uses; as plain aliases they are types to mypy too.
Channel = enums.Channel
MessageDirection = enums.Direction
SenderType = enums.SenderType
ContentType = enums.ContentType
AttachmentKind = enums.AttachmentKind
DeliveryStatus = enums.DeliveryStatus
UserErrorCode = enums.ErrorCode
# Stored values to members (the tables' CHECK constraints admit no other values).
_CHANNEL = enums.by_value(enums.Channel)
_DIRECTION = enums.by_value(enums.Direction)
_SENDER_TYPE = enums.by_value(enums.SenderType)
_CONTENT_TYPE = enums.by_value(enums.ContentType)
_ATTACHMENT_KIND = enums.by_value(enums.AttachmentKind)
_DELIVERY_STATUS = enums.by_value(enums.DeliveryStatus)

_enum(
    Channel,
    description="A messaging channel.",
    values={
        "LINE": "LINE Official Accounts.",
        "FACEBOOK": "Facebook Messenger, on a Facebook page.",
        "INSTAGRAM": "Instagram direct messages.",
        "WHATSAPP": "WhatsApp Business.",
        "SHOPEE": "Shopee shop chat.",
        "LAZADA": "Lazada shop chat.",
        "TIKTOK_SHOP": "TikTok Shop customer chat.",
        "EMAIL": "E-mail.",
        "WEBCHAT": "The web chat widget on the business's own site.",
    },
)
_enum(
    MessageDirection,
    name="MessageDirection",
    description="INBOUND: from the customer. OUTBOUND: a reply sent by the business.",
    values={
        "INBOUND": "From the customer to the business, as a connector received it.",
        "OUTBOUND": "From the business to the customer, persisted once the channel accepted it.",
    },
)
_enum(
    SenderType,
    description="Who wrote a message: the CONTACT, an AGENT, a BOT or the SYSTEM.",
    values={
        "CONTACT": "The customer: the sender of every inbound message.",
        "AGENT": "A person of the business, replying from the inbox.",
        "BOT": "An automated responder of the business.",
        "SYSTEM": "The platform itself: notices and automatic messages.",
    },
)
_enum(
    ContentType,
    description="What a message's content is.",
    values={
        "TEXT": "Plain text, in text.",
        "IMAGE": "A picture; the file is an attachment.",
        "VIDEO": "A video; the file is an attachment.",
        "AUDIO": "A voice message or other audio; the file is an attachment.",
        "FILE": "A document or other file; the file is an attachment.",
        "STICKER": "A sticker; its image or channel id is an attachment.",
        "LOCATION": "A place; coordinates and address in struct.",
        "PRODUCT": "A marketplace product card; the product reference in struct.",
        "ORDER": "A marketplace order card; the order reference in struct.",
        "TEMPLATE": "A channel template (buttons, carousel, rich menu); its payload in struct.",
        "INTERACTIVE": "A reply to buttons, quick replies or a list; the choice in struct.",
        "UNSUPPORTED": "A kind of message the connector does not normalize yet.",
    },
)
_enum(
    AttachmentKind,
    description="What an attachment is.",
    values={
        "IMAGE": "A picture.",
        "VIDEO": "A video.",
        "AUDIO": "A voice message or other audio.",
        "FILE": "A document or any other file.",
        "STICKER": "A sticker image.",
    },
)
_enum(
    DeliveryStatus,
    description="RECEIVED for inbound messages; SENT (or later states) for outbound ones.",
    values={
        "RECEIVED": "An inbound message, stored as received.",
        "SENT": "An outbound message the channel accepted.",
        "DELIVERED": "The channel reports the outbound message delivered to the customer.",
        "READ": "The channel reports the customer read the outbound message.",
        "FAILED": "The channel reports the outbound message could not be delivered.",
    },
)
_enum(
    UserErrorCode,
    name="UserErrorCode",
    description="Why an input was refused.",
    values={
        "REQUIRED": "The field is missing or blank, and this input needs it.",
        "INVALID": "The value has the wrong form: not a valid ID, URL, date-time, JSON object "
        "or cursor.",
        "TOO_LONG": "The text is longer than the field allows.",
        "TOO_LARGE": "The JSON value is larger than the field allows.",
        "TOO_MANY": "The list is longer than allowed (at most 20 attachments per message).",
        "TOO_DEEP": "The JSON value is nested deeper than allowed.",
        "OUT_OF_RANGE": "The number or date-time is outside the allowed range.",
        "INVALID_CHARACTER": "The text contains NUL characters or is not valid Unicode.",
        "NOT_ALLOWED": "The field is not allowed here, such as a conversationId on an inbound "
        "message or a CONTACT sender on an outbound one.",
        "NOT_FOUND": "The object the ID refers to does not exist (or belongs to another "
        "tenant, which is the same for the caller).",
        "MISMATCH": "The objects exist but do not belong together, such as a conversation of "
        "another channel account.",
        "IDEMPOTENCY_CONFLICT": "The idempotency key was already used for a message with "
        "different content; the stored message is kept and returned.",
        "ALREADY_EXISTS": "An object with the same natural key already exists.",
    },
)

After = Annotated[
    str | None,
    strawberry.argument(description="Cursor of an edge: return the edges after it."),
]
Before = Annotated[
    str | None,
    strawberry.argument(description="Cursor of an edge: return the edges before it."),
]


@strawberry.interface(
    description="An object with a global ID (Relay Global Object Identification)."
)
class Node:
    id: strawberry.ID = strawberry.field(description="Opaque global ID.")


E = TypeVar("E")


def _edges(page: Page[Any], edge: Callable[..., E], node: Callable[[Any], Any]) -> list[E]:
    """The edges of a page: each row as its GraphQL node, with its cursor."""
    return [edge(cursor=c, node=node(r)) for r, c in zip(page.items, page.cursors, strict=True)]


def _json(value: dict[str, Any] | None) -> JSON | None:
    """A stored JSON object as the JSON scalar (a NewType: the same object at run time)."""
    return None if value is None else JSON(value)


@strawberry.type(description="Relay page information; exact at both ends of a connection.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="More edges follow this page.")
    has_previous_page: bool = strawberry.field(description="More edges precede this page.")
    start_cursor: str | None = strawberry.field(description="Cursor of the first edge.")
    end_cursor: str | None = strawberry.field(description="Cursor of the last edge.")

    @classmethod
    def of(cls, page: Page[Any]) -> PageInfo:
        return cls(
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
            start_cursor=page.start_cursor,
            end_cursor=page.end_cursor,
        )


@strawberry.type(description="A business error: which input field, why, and what to do.")
class UserError:
    field: list[str] | None = strawberry.field(
        description="Path of the offending field within the mutation's input; null for the "
        "input as a whole."
    )
    code: UserErrorCode = strawberry.field(description="Machine-readable reason.")
    message: str = strawberry.field(description="What is wrong, for a person.")


@strawberry.type(
    description="A connected account of a channel: one LINE OA, one Facebook page, one Shopee shop."
)
class ChannelAccount(Node):
    channel: Channel = strawberry.field(description="The channel of this account.")
    external_account_id: str = strawberry.field(description="The account's id on the channel.")
    display_name: str | None = strawberry.field(description="Name shown in the inbox.")
    fallback_window_seconds: int = strawberry.field(
        description="Messages without a channel thread id are grouped into conversations per "
        "contact and per window of this many seconds (aligned to the Unix epoch)."
    )
    created_at: datetime = strawberry.field(description="When it was registered.")

    @classmethod
    def of(cls, row: records.ChannelAccount) -> ChannelAccount:
        return cls(
            id=strawberry.ID(to_global_id("ChannelAccount", row.id)),
            channel=_CHANNEL(row.channel),
            external_account_id=row.external_account_id,
            display_name=row.display_name,
            fallback_window_seconds=row.fallback_window_seconds,
            created_at=row.created_at,
        )


@strawberry.type(description="A customer as seen on one channel account.")
class Contact(Node):
    external_user_id: str = strawberry.field(description="The user's id on the channel account.")
    display_name: str | None = strawberry.field(description="Current display name.")
    avatar_url: str | None = strawberry.field(description="Current avatar URL.")
    profile: JSON | None = strawberry.field(description="Channel-specific profile data.")
    created_at: datetime = strawberry.field(description="When first seen.")
    updated_at: datetime = strawberry.field(description="When the profile was last refreshed.")
    _channel_account_id: strawberry.Private[int]

    @strawberry.field(description="The channel account this contact belongs to.")
    async def channel_account(self, info: Info) -> ChannelAccount:
        row = await info.context.loaders.channel_account_by_id.load(self._channel_account_id)
        assert row is not None
        return ChannelAccount.of(row)

    @classmethod
    def of(cls, row: records.Contact) -> Contact:
        return cls(
            id=strawberry.ID(to_global_id("Contact", row.id)),
            external_user_id=row.external_user_id,
            display_name=row.display_name,
            avatar_url=row.avatar_url,
            profile=_json(row.profile),
            created_at=row.created_at,
            updated_at=row.updated_at,
            _channel_account_id=row.channel_account_id,
        )


@strawberry.type(description="Who wrote a message, ready to render.")
class Sender:
    type: SenderType = strawberry.field(description="CONTACT, AGENT, BOT or SYSTEM.")
    id: strawberry.ID | None = strawberry.field(
        description="For a CONTACT, the contact's global ID; otherwise the agent's, bot's or "
        "system's own id as given by the sender."
    )
    display_name: str | None = strawberry.field(
        description="For a CONTACT, the contact's current display name; otherwise the name "
        "recorded when the message was sent."
    )
    avatar_url: str | None = strawberry.field(description="Avatar to show beside the message.")


@strawberry.type(description="The content of a message.")
class Content:
    type: ContentType = strawberry.field(description="What the content is.")
    text: str | None = strawberry.field(description="Plain text, if any.")
    struct: JSON | None = strawberry.field(
        description="Structured content: marketplace references (product, order cards), "
        "templates, locations."
    )


@strawberry.type(description="Metadata of a file attached to a message (never the file itself).")
class Attachment(Node):
    position: int = strawberry.field(description="Order within the message, from 0.")
    kind: AttachmentKind = strawberry.field(description="What the file is.")
    url: str | None = strawberry.field(description="Where the file can be fetched.")
    mime_type: str | None = strawberry.field(description="Media type, such as image/jpeg.")
    size_bytes: float | None = strawberry.field(description="Size in bytes.")
    file_name: str | None = strawberry.field(description="File name as the sender gave it.")
    width: int | None = strawberry.field(description="Width in pixels (images, videos).")
    height: int | None = strawberry.field(description="Height in pixels (images, videos).")
    duration_ms: float | None = strawberry.field(description="Duration of audio or video.")
    external_id: str | None = strawberry.field(description="The file's id on the channel.")
    metadata: JSON | None = strawberry.field(
        description="Channel-specific metadata of the file, a JSON object."
    )

    @classmethod
    def of(cls, row: records.Attachment) -> Attachment:
        return cls(
            id=strawberry.ID(to_global_id("Attachment", row.id)),
            position=row.position,
            kind=_ATTACHMENT_KIND(row.kind),
            url=row.url,
            mime_type=row.mime_type,
            size_bytes=row.size_bytes,
            file_name=row.file_name,
            width=row.width,
            height=row.height,
            duration_ms=row.duration_ms,
            external_id=row.external_id,
            metadata=_json(row.metadata),
        )


@strawberry.type(description="One message of a conversation's timeline, inbound or outbound.")
class Message(Node):
    direction: MessageDirection = strawberry.field(
        description="INBOUND from the customer, OUTBOUND from the business."
    )
    content: Content = strawberry.field(description="What the message says or shows.")
    channel_timestamp: datetime = strawberry.field(
        description="When it happened on the channel: the timeline's order."
    )
    created_at: datetime = strawberry.field(description="When the store received it.")
    external_message_id: str | None = strawberry.field(description="The channel's message id.")
    idempotency_key: str = strawberry.field(
        description="The key that made it unique: the connector's idempotency key, else the "
        "channel's message id."
    )
    reply_to_external_message_id: str | None = strawberry.field(
        description="The channel's id of the message this one replies to, if it is a reply."
    )
    status: DeliveryStatus = strawberry.field(description="Delivery status.")
    _row: strawberry.Private[records.Message]

    @strawberry.field(description="Who wrote it, with the name to render.")
    def sender(self, info: Info) -> Sender:
        row = self._row
        if row.sender_type == enums.SenderType.CONTACT and row.contact_id is not None:
            return info.context.loaders.contact_by_id.resolve(row.contact_id, _contact_sender)  # type: ignore[return-value]
        return Sender(
            type=_SENDER_TYPE(row.sender_type),
            id=strawberry.ID(row.sender_external_id) if row.sender_external_id else None,
            display_name=row.sender_display_name,
            avatar_url=row.sender_avatar_url,
        )

    @strawberry.field(description="Attachment metadata, in order.")
    def attachments(self, info: Info) -> list[Attachment]:
        return info.context.loaders.attachments_by_message_id.resolve(  # type: ignore[return-value]
            self._row.id, lambda rows: [Attachment.of(a) for a in rows or []]
        )

    @strawberry.field(description="The conversation it belongs to.")
    def conversation(self, info: Info) -> Conversation:
        return info.context.loaders.conversation_by_id.resolve(  # type: ignore[return-value]
            self._row.conversation_id, _required(Conversation.of)
        )

    @strawberry.field(description="The channel account it was received on or sent from.")
    def channel_account(self, info: Info) -> ChannelAccount:
        return info.context.loaders.channel_account_by_id.resolve(  # type: ignore[return-value]
            self._row.channel_account_id, _required(ChannelAccount.of)
        )

    @classmethod
    def of(cls, row: records.Message) -> Message:
        return cls(
            id=strawberry.ID(to_global_id("Message", row.id)),
            direction=_DIRECTION(row.direction),
            content=Content(
                type=_CONTENT_TYPE(row.content_type),
                text=row.content_text,
                struct=_json(row.content_struct),
            ),
            channel_timestamp=row.channel_timestamp,
            created_at=row.created_at,
            external_message_id=row.external_message_id,
            idempotency_key=row.idempotency_key,
            reply_to_external_message_id=row.reply_to_external_message_id,
            status=_DELIVERY_STATUS(row.status),
            _row=row,
        )


@strawberry.type(description="An edge of a timeline.")
class MessageEdge:
    cursor: str = strawberry.field(description="Opaque keyset cursor of this message.")
    node: Message = strawberry.field(description="The message.")


@strawberry.type(description="A page of a conversation's timeline, in chronological order.")
class MessageConnection:
    edges: list[MessageEdge] = strawberry.field(
        description="The page's messages, oldest first in both directions."
    )
    page_info: PageInfo = strawberry.field(description="Where this page lies in the timeline.")

    @classmethod
    def of(cls, page: Page[records.Message]) -> MessageConnection:
        return cls(
            edges=_edges(page, MessageEdge, Message.of),
            page_info=PageInfo.of(page),
        )


PageSize = Annotated[
    int | None, strawberry.argument(description="Page size, at most 100 (default 20).")
]


@strawberry.type(description="A conversation with one contact on one channel account.")
class Conversation(Node):
    channel: Channel = strawberry.field(description="The channel of its channel account.")
    thread_key: str = strawberry.field(
        description="What maps messages to this conversation: the channel thread id, or the "
        "contact and time window (fallback rule v1)."
    )
    external_thread_id: str | None = strawberry.field(description="The channel's thread id.")
    last_message_at: datetime = strawberry.field(
        description="Channel time of the latest message; never moves backwards."
    )
    created_at: datetime = strawberry.field(description="When the store opened it.")
    _row: strawberry.Private[records.Conversation]

    @strawberry.field(description="The channel account of this conversation.")
    def channel_account(self, info: Info) -> ChannelAccount:
        return info.context.loaders.channel_account_by_id.resolve(  # type: ignore[return-value]
            self._row.channel_account_id, _required(ChannelAccount.of)
        )

    @strawberry.field(description="The customer of this conversation.")
    def contact(self, info: Info) -> Contact | None:
        if self._row.contact_id is None:
            return None
        return info.context.loaders.contact_by_id.resolve(  # type: ignore[return-value]
            self._row.contact_id, optional(Contact.of)
        )

    @strawberry.field(description="The latest message by channel time.")
    def last_message(self, info: Info) -> Message | None:
        return info.context.loaders.last_message_by_conversation_id.resolve(  # type: ignore[return-value]
            self._row.id, optional(Message.of)
        )

    @strawberry.field(
        description="The timeline: chronological by channel time, keyset-paginated both ways "
        "(first/after forward, last/before backward)."
    )
    async def messages(
        self,
        info: Info,
        first: PageSize = None,
        after: After = None,
        last: PageSize = None,
        before: Before = None,
    ) -> MessageConnection:
        uow = await info.context.read_uow()
        try:
            page = await uow.messages.timeline(
                self._row.id, PageRequest(first=first, after=after, last=last, before=before)
            )
        except UserInputError as error:
            raise from_user_input(error) from None
        await prefetch_messages(info, page.items, selected(info, "edges", "node"))
        return MessageConnection.of(page)

    @classmethod
    def of(cls, row: records.Conversation) -> Conversation:
        return cls(
            id=strawberry.ID(to_global_id("Conversation", row.id)),
            channel=_CHANNEL(row.channel),
            thread_key=row.thread_key,
            external_thread_id=row.external_thread_id,
            last_message_at=row.last_message_at,
            created_at=row.created_at,
            _row=row,
        )


@strawberry.type(description="An edge of a conversation list.")
class ConversationEdge:
    cursor: str = strawberry.field(description="Opaque keyset cursor of this conversation.")
    node: Conversation = strawberry.field(description="The conversation.")


@strawberry.type(description="A page of conversations, newest activity first.")
class ConversationConnection:
    edges: list[ConversationEdge] = strawberry.field(
        description="The page's conversations, newest activity first in both directions."
    )
    page_info: PageInfo = strawberry.field(description="Where this page lies in the list.")

    @classmethod
    def of(cls, page: Page[records.Conversation]) -> ConversationConnection:
        return cls(
            edges=_edges(page, ConversationEdge, Conversation.of),
            page_info=PageInfo.of(page),
        )


@strawberry.type(description="An edge of the channel account list.")
class ChannelAccountEdge:
    cursor: str = strawberry.field(description="Opaque keyset cursor of this channel account.")
    node: ChannelAccount = strawberry.field(description="The channel account.")


@strawberry.type(description="A page of channel accounts, oldest first.")
class ChannelAccountConnection:
    edges: list[ChannelAccountEdge] = strawberry.field(
        description="The page's channel accounts, oldest first in both directions."
    )
    page_info: PageInfo = strawberry.field(description="Where this page lies in the list.")

    @classmethod
    def of(cls, page: Page[records.ChannelAccount]) -> ChannelAccountConnection:
        return cls(
            edges=_edges(page, ChannelAccountEdge, ChannelAccount.of),
            page_info=PageInfo.of(page),
        )


@strawberry.type(description="Who is calling, as the token says.")
class Viewer:
    tenant_id: str = strawberry.field(
        description="The tenant of the token: everything read or written is this tenant's."
    )
    scopes: list[str] = strawberry.field(
        description="What the token allows: inbox:read, messages:write, admin."
    )


# --- resolving a page's relations in one batch each ----------------------------------------

W = TypeVar("W")


def _required(wrap: Callable[[Any], W]) -> Callable[[Any], W]:
    def checked(row: Any) -> W:
        assert row is not None, "a foreign key of the same tenant always resolves"
        return wrap(row)

    return checked


def optional(wrap: Callable[[Any], W]) -> Callable[[Any], W | None]:
    """``wrap`` for a row that may be missing (None stays None)."""
    return lambda row: None if row is None else wrap(row)


def _contact_sender(contact: records.Contact | None) -> Sender:
    assert contact is not None
    return Sender(
        type=enums.SenderType.CONTACT,
        id=strawberry.ID(to_global_id("Contact", contact.id)),
        display_name=contact.display_name,
        avatar_url=contact.avatar_url,
    )


def _names(selections: Iterable[Selection], path: tuple[str, ...]) -> set[str]:
    """Names of the fields selected at ``path`` below ``selections``, through fragments."""
    names: set[str] = set()
    for selection in selections:
        if not isinstance(selection, SelectedField):
            names |= _names(selection.selections, path)
        elif not path:
            names.add(selection.name)
        elif selection.name == path[0]:
            names |= _names(selection.selections, path[1:])
    return names


def selected(info: Info, *path: str) -> set[str]:
    """Field names the client selected at ``path`` below the field being resolved."""
    field = info.selected_fields[0]
    assert isinstance(field, SelectedField)  # the resolver's own field, never a fragment
    return _names(info.selected_fields, (field.name, *path))


async def prefetch_messages(info: Info, rows: Sequence[records.Message], wanted: set[str]) -> None:
    """Load what the selected relations of these messages need, one batch per kind, so that
    each message's fields resolve from the loaders at once."""
    loaders = info.context.loaders
    if "sender" in wanted:
        contact_ids = {
            r.contact_id
            for r in rows
            if r.sender_type == enums.SenderType.CONTACT and r.contact_id is not None
        }
        await loaders.contact_by_id.load_all(sorted(contact_ids))
    # One batch after the other, not gathered: they share one connection anyway, and tasks
    # waiting for it cost more than they overlap.
    if "attachments" in wanted:
        await loaders.attachments_by_message_id.load_all([r.id for r in rows])
    if "channelAccount" in wanted:
        await loaders.channel_account_by_id.load_all(sorted({r.channel_account_id for r in rows}))
    if "conversation" in wanted:
        await loaders.conversation_by_id.load_all(sorted({r.conversation_id for r in rows}))
