"""GraphQL input types and their conversion to the persistence contract.

Validation is not repeated here: the persistence layer validates exactly as internal callers
see it. Only what GraphQL adds is checked here: global ids.
"""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from omni_store.graph.compiled_inputs import compiled
from omni_store.graph.ids import IdDecoder
from omni_store.graph.types import (
    AttachmentKind,
    Channel,
    ContentType,
    MessageDirection,
    SenderType,
)
from omni_store.persistence import contract
from omni_store.persistence.errors import FieldError

MUTATION_ID = "Echoed in the payload, for the client's own bookkeeping (Relay)."


@compiled
@strawberry.input(description="The customer, as the channel describes them.")
class ContactInput:
    external_user_id: str | None = strawberry.field(
        default=None, description="The user's id on the channel account (required inbound)."
    )
    display_name: str | None = strawberry.field(default=None, description="Refreshed if given.")
    avatar_url: str | None = strawberry.field(default=None, description="Refreshed if given.")
    profile: JSON | None = strawberry.field(default=None, description="A JSON object.")

    def to_contract(self) -> contract.ContactInput:
        return contract.ContactInput(
            external_user_id=self.external_user_id,
            display_name=self.display_name,
            avatar_url=self.avatar_url,
            profile=self.profile,
        )


@compiled
@strawberry.input(description="Who wrote an outbound message.")
class SenderInput:
    type: SenderType = strawberry.field(description="AGENT, BOT or SYSTEM for outbound messages.")
    display_name: str | None = strawberry.field(
        default=None, description="Name to render (required outbound)."
    )
    external_id: str | None = strawberry.field(
        default=None, description="The agent's or bot's own id."
    )
    avatar_url: str | None = strawberry.field(
        default=None, description="Avatar of the agent or bot, an absolute http(s) URL."
    )


@compiled
@strawberry.input(description="The content of a message.")
class ContentInput:
    type: ContentType = strawberry.field(
        description="What the content is; TEXT needs text, cards and locations go in struct."
    )
    text: str | None = strawberry.field(default=None, description="At most 50,000 characters.")
    struct: JSON | None = strawberry.field(
        default=None,
        description="A JSON object (marketplace references, templates, locations), at most "
        "64 KiB and 16 levels deep.",
    )


@compiled
@strawberry.input(description="Metadata of an attached file.")
class AttachmentInput:
    kind: AttachmentKind = strawberry.field(description="What the file is.")
    url: str | None = strawberry.field(default=None, description="An absolute http(s) URL.")
    mime_type: str | None = strawberry.field(
        default=None, description="Media type, type/subtype, such as image/jpeg."
    )
    size_bytes: float | None = strawberry.field(default=None, description="A whole number.")
    file_name: str | None = strawberry.field(
        default=None, description="File name as the sender gave it."
    )
    width: int | None = strawberry.field(default=None, description="Width in pixels.")
    height: int | None = strawberry.field(default=None, description="Height in pixels.")
    duration_ms: float | None = strawberry.field(default=None, description="A whole number.")
    external_id: str | None = strawberry.field(
        default=None, description="The file's id on the channel; url or externalId is required."
    )
    metadata: JSON | None = strawberry.field(default=None, description="A JSON object.")

    def to_contract(self) -> contract.AttachmentInput:
        return contract.AttachmentInput(
            kind=self.kind,
            url=self.url,
            mime_type=self.mime_type,
            size_bytes=_whole(self.size_bytes),
            file_name=self.file_name,
            width=self.width,
            height=self.height,
            duration_ms=_whole(self.duration_ms),
            external_id=self.external_id,
            metadata=self.metadata,
        )


def _whole(value: float | None) -> int | float | None:
    """GraphQL's Int is 32-bit; sizes travel as Float and must be whole numbers."""
    if value is not None and float(value).is_integer():
        return int(value)
    return value


@compiled
@strawberry.input(
    description="One message of a persistMessages batch: the fields of PersistMessageInput."
)
class MessageInput:
    channel_account_id: strawberry.ID = strawberry.field(
        description="The channel account it was received on or sent from."
    )
    direction: MessageDirection = strawberry.field(
        description="INBOUND from the customer; OUTBOUND for a reply the channel accepted."
    )
    channel_timestamp: datetime = strawberry.field(
        description="When it happened on the channel, with a time zone offset."
    )
    content: ContentInput = strawberry.field(description="What the message says or shows.")
    external_message_id: str | None = strawberry.field(
        default=None, description="The channel's message id; the idempotency key if none given."
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Stable across retries of the same event; unique per channel account.",
    )
    external_thread_id: str | None = strawberry.field(
        default=None,
        description="The channel's thread id. Without it, the conversation is the contact's "
        "within the account's fallback window.",
    )
    conversation_id: strawberry.ID | None = strawberry.field(
        default=None, description="Outbound only: reply into this known conversation."
    )
    contact: ContactInput | None = strawberry.field(
        default=None,
        description="The customer. Required inbound; outbound without conversationId, it "
        "picks the conversation (with externalThreadId or the fallback window).",
    )
    sender: SenderInput | None = strawberry.field(
        default=None, description="Required outbound (AGENT, BOT or SYSTEM)."
    )
    attachments: list[AttachmentInput] | None = strawberry.field(
        default=None, description="At most 20."
    )
    reply_to_external_message_id: str | None = strawberry.field(
        default=None, description="The channel's id of the message this one replies to."
    )

    def to_contract(self) -> tuple[contract.NormalizedMessage, list[FieldError]]:
        ids = IdDecoder()
        sender = self.sender
        message = contract.NormalizedMessage(
            channel_account_id=ids.decode(
                ("channelAccountId",), self.channel_account_id, "ChannelAccount"
            ),
            direction=self.direction,
            channel_timestamp=self.channel_timestamp,
            content=contract.ContentInput(
                type=self.content.type, text=self.content.text, struct=self.content.struct
            ),
            external_message_id=self.external_message_id,
            idempotency_key=self.idempotency_key,
            external_thread_id=self.external_thread_id,
            conversation_id=ids.decode(("conversationId",), self.conversation_id, "Conversation"),
            contact=self.contact.to_contract() if self.contact else None,
            sender=None
            if sender is None
            else contract.SenderInput(
                type=sender.type,
                display_name=sender.display_name,
                external_id=sender.external_id,
                avatar_url=sender.avatar_url,
            ),
            attachments=tuple(a.to_contract() for a in self.attachments or ()),
            reply_to_external_message_id=self.reply_to_external_message_id,
        )
        return message, ids.errors


@compiled
@strawberry.input(description="A normalized message, as a connector or the reply sender has it.")
class PersistMessageInput(MessageInput):
    client_mutation_id: str | None = strawberry.field(default=None, description=MUTATION_ID)


@compiled
@strawberry.input(description="A batch of normalized messages: a backfill of history.")
class PersistMessagesInput:
    messages: list[MessageInput] = strawberry.field(
        description="At most 500. Each is stored (or refused) on its own, exactly as "
        "persistMessage would; send them in any order."
    )
    client_mutation_id: str | None = strawberry.field(default=None, description=MUTATION_ID)


@compiled
@strawberry.input(description="Register (or refresh) a channel account.")
class RegisterChannelAccountInput:
    channel: Channel = strawberry.field(description="The channel of the account.")
    external_account_id: str = strawberry.field(description="The account's id on the channel.")
    display_name: str | None = strawberry.field(
        default=None, description="Name shown in the inbox; refreshed if given."
    )
    fallback_window_seconds: int | None = strawberry.field(
        default=None,
        description="Window of the fallback thread rule, 60 s to 90 days (default 24 h).",
    )
    client_mutation_id: str | None = strawberry.field(default=None, description=MUTATION_ID)


@compiled
@strawberry.input(description="Create or refresh a contact.")
class UpsertContactInput:
    channel_account_id: strawberry.ID = strawberry.field(
        description="The channel account the customer writes to."
    )
    external_user_id: str = strawberry.field(description="The user's id on the channel account.")
    display_name: str | None = strawberry.field(default=None, description="Refreshed if given.")
    avatar_url: str | None = strawberry.field(
        default=None, description="An absolute http(s) URL; refreshed if given."
    )
    profile: JSON | None = strawberry.field(
        default=None,
        description="Channel-specific profile data, a JSON object; refreshed if given.",
    )
    client_mutation_id: str | None = strawberry.field(default=None, description=MUTATION_ID)


@compiled
@strawberry.input(description="Resolve or open the conversation of a thread.")
class UpsertConversationInput:
    channel_account_id: strawberry.ID = strawberry.field(
        description="The channel account of the conversation."
    )
    channel_timestamp: datetime = strawberry.field(
        description="Channel time of the event; picks the fallback window without a thread id."
    )
    external_thread_id: str | None = strawberry.field(
        default=None,
        description="The channel's thread id. Without it, the contact's conversation in the "
        "fallback window that channelTimestamp falls in.",
    )
    contact: ContactInput | None = strawberry.field(
        default=None,
        description="The customer, created or refreshed; required without externalThreadId.",
    )
    client_mutation_id: str | None = strawberry.field(default=None, description=MUTATION_ID)


@compiled
@strawberry.input(description="Attachment metadata that arrived after its message.")
class AddAttachmentsInput:
    message_id: strawberry.ID = strawberry.field(
        description="The message the attachments belong to."
    )
    attachments: list[AttachmentInput] = strawberry.field(description="1 to 20 in all.")
    client_mutation_id: str | None = strawberry.field(default=None, description=MUTATION_ID)
