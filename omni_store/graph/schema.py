"""Queries and mutations. Resolvers stay thin: auth, id decoding, one persistence call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Annotated

import strawberry
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from omni_store.graph.auth import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE
from omni_store.graph.context import Info
from omni_store.graph.errors import PublicError, from_user_input
from omni_store.graph.ids import IdDecoder, parse_global_id, to_global_id
from omni_store.graph.inputs import (
    AddAttachmentsInput,
    PersistMessageInput,
    PersistMessagesInput,
    RegisterChannelAccountInput,
    UpsertContactInput,
    UpsertConversationInput,
)
from omni_store.graph.types import (
    After,
    Attachment,
    Before,
    Channel,
    ChannelAccount,
    ChannelAccountConnection,
    Contact,
    Conversation,
    ConversationConnection,
    Message,
    MessageEdge,
    Node,
    PageSize,
    UserError,
    Viewer,
    optional,
    prefetch_messages,
    selected,
)
from omni_store.persistence import contract, service
from omni_store.persistence.cursors import PageRequest
from omni_store.persistence.errors import FieldError, IdempotencyConflict, UserInputError
from omni_store.persistence.repositories import Relations, timeline_cursor

MAX_NODES = 100
MAX_DEPTH = 12
MAX_ALIASES = 30
MAX_TOKENS = 5000


def _user_errors(errors: list[FieldError]) -> list[UserError]:
    return [UserError(field=list(e.field) or None, code=e.code, message=e.message) for e in errors]


def _input_errors(id_errors: list[FieldError], validate: Callable[[], None]) -> list[FieldError]:
    """Every error of an input at once: bad ids, then what validation says of the rest."""
    if not id_errors:
        return []
    bad = {e.field for e in id_errors}
    try:
        validate()
    except UserInputError as error:
        return id_errors + [e for e in error.errors if e.field not in bad]
    return id_errors


async def _node(info: Info, global_id: str) -> Node | None:
    parsed = parse_global_id(global_id)
    if parsed is None:
        return None
    type_name, row_id = parsed
    loaders = info.context.loaders
    if type_name == "ChannelAccount":
        account = await loaders.channel_account_by_id.load(row_id)
        return None if account is None else ChannelAccount.of(account)
    if type_name == "Contact":
        contact = await loaders.contact_by_id.load(row_id)
        return None if contact is None else Contact.of(contact)
    if type_name == "Conversation":
        conversation = await loaders.conversation_by_id.load(row_id)
        return None if conversation is None else Conversation.of(conversation)
    if type_name == "Message":
        message = await loaders.message_by_id.load(row_id)
        return None if message is None else Message.of(message)
    if type_name == "Attachment":
        attachment = await loaders.attachment_by_id.load(row_id)
        return None if attachment is None else Attachment.of(attachment)
    return None


def _page(
    first: int | None, after: str | None, last: int | None, before: str | None
) -> PageRequest:
    return PageRequest(first=first, after=after, last=last, before=before)


GlobalId = Annotated[strawberry.ID, strawberry.argument(description="A global ID, of any type.")]
GlobalIds = Annotated[
    list[strawberry.ID], strawberry.argument(description="Global IDs, of any types; at most 100.")
]
ConversationId = Annotated[
    strawberry.ID, strawberry.argument(description="The conversation's global ID.")
]
ChannelFilter = Annotated[
    Channel | None, strawberry.argument(description="Only the conversations of this channel.")
]
ChannelAccountFilter = Annotated[
    strawberry.ID | None,
    strawberry.argument(description="Only the conversations of this channel account (global ID)."),
]


@strawberry.type(
    description="What the inbox reads: conversations, their timelines, channel accounts and "
    "any object by global ID. Scope: inbox:read."
)
class Query:
    @strawberry.field(
        description="Fetch any object by its global ID; null if it does not exist "
        "(or belongs to another tenant)."
    )
    async def node(self, info: Info, id: GlobalId) -> Node | None:
        info.context.require(SCOPE_READ)
        return await _node(info, id)

    @strawberry.field(
        description="Fetch objects by global ID, in order; null for each missing "
        "one. At most 100 ids."
    )
    async def nodes(self, info: Info, ids: GlobalIds) -> list[Node | None]:
        info.context.require(SCOPE_READ)
        if len(ids) > MAX_NODES:
            raise PublicError("BAD_USER_INPUT", f"At most {MAX_NODES} ids.", field=["ids"])
        # Gathered, so that each type's loader fetches all of its ids in one statement.
        return list(await asyncio.gather(*(_node(info, i) for i in ids)))

    @strawberry.field(
        description="Conversations, newest activity first; all channels, one "
        "channel, or one channel account."
    )
    async def conversations(
        self,
        info: Info,
        channel: ChannelFilter = None,
        channel_account_id: ChannelAccountFilter = None,
        first: PageSize = None,
        after: After = None,
        last: PageSize = None,
        before: Before = None,
    ) -> ConversationConnection:
        info.context.require(SCOPE_READ)
        ids = IdDecoder()
        account_id = ids.decode(("channelAccountId",), channel_account_id, "ChannelAccount")
        if ids.errors and ids.errors[0].code.value == "INVALID":
            raise PublicError("BAD_USER_INPUT", "Not a valid ID.", field=["channelAccountId"])
        wanted = selected(info, "edges", "node")
        uow = await info.context.read_uow()
        try:
            listed = await uow.conversations.list_with(
                _page(first, after, last, before),
                Relations(contact="contact" in wanted, last_message="lastMessage" in wanted),
                channel=channel,
                # An id of another type selects nothing, like another tenant's account.
                channel_account_id=account_id if not ids.errors else 0,
            )
        except UserInputError as error:
            raise from_user_input(error) from None
        loaders = info.context.loaders
        loaders.prime_listed(listed)
        if "channelAccount" in wanted:
            await loaders.channel_account_by_id.load_all(
                sorted({c.channel_account_id for c in listed.page.items})
            )
        last_message = selected(info, "edges", "node", "lastMessage")
        if last_message:
            latest = [m for m in listed.last_messages.values() if m is not None]
            await prefetch_messages(info, latest, last_message)
        return ConversationConnection.of(listed.page)

    @strawberry.field(description="One conversation by global ID; null if it does not exist.")
    async def conversation(self, info: Info, id: ConversationId) -> Conversation | None:
        info.context.require(SCOPE_READ)
        node = await _node(info, id)
        return node if isinstance(node, Conversation) else None

    @strawberry.field(description="The tenant's channel accounts, oldest first.")
    async def channel_accounts(
        self,
        info: Info,
        first: PageSize = None,
        after: After = None,
        last: PageSize = None,
        before: Before = None,
    ) -> ChannelAccountConnection:
        info.context.require(SCOPE_READ)
        uow = await info.context.read_uow()
        try:
            page = await uow.channel_accounts.list(_page(first, after, last, before))
        except UserInputError as error:
            raise from_user_input(error) from None
        return ChannelAccountConnection.of(page)

    @strawberry.field(description="The caller, as its token says (any valid token).")
    def viewer(self, info: Info) -> Viewer:
        principal = info.context.principal
        if principal is None:
            info.context.require(SCOPE_READ)  # raises the authentication error
        assert principal is not None
        return Viewer(tenant_id=str(principal.tenant), scopes=sorted(principal.scopes))


# --- payloads ----------------------------------------------------------------------------------

CLIENT_MUTATION_ID = "The input's clientMutationId, echoed (Relay)."
USER_ERRORS = "Why the input was refused, every problem at once; empty when it was accepted."


def _payload_conversation(self: PersistMessagePayload, info: Info) -> Conversation | None:
    if self._conversation_id is None:
        return None
    return info.context.loaders.conversation_by_id.resolve(  # type: ignore[return-value]
        self._conversation_id, optional(Conversation.of)
    )


def _payload_contact(self: PersistMessagePayload, info: Info) -> Contact | None:
    if self._contact_id is None:
        return None
    return info.context.loaders.contact_by_id.resolve(  # type: ignore[return-value]
        self._contact_id, optional(Contact.of)
    )


@strawberry.type(description="The result of persistMessage.")
class PersistMessagePayload:
    client_mutation_id: str | None = strawberry.field(description=CLIENT_MUTATION_ID)
    message: Message | None = strawberry.field(
        description="The stored message: new, the one stored by an earlier delivery "
        "(deduplicated), or the one an IDEMPOTENCY_CONFLICT refers to."
    )
    message_edge: MessageEdge | None = strawberry.field(
        description="The message as a timeline edge, for Relay's @appendEdge."
    )
    conversation: Conversation | None = strawberry.field(
        resolver=_payload_conversation,
        description="The conversation the message belongs to; null when refused.",
    )
    contact: Contact | None = strawberry.field(
        resolver=_payload_contact,
        description="The customer of that conversation; null when refused or when it has none.",
    )
    deduplicated: bool = strawberry.field(
        description="True when this delivery was a replay and nothing was written."
    )
    user_errors: list[UserError] = strawberry.field(description=USER_ERRORS)
    # Loaded only when selected (a reply naming its conversation did not read its contact).
    _conversation_id: strawberry.Private[int | None] = None
    _contact_id: strawberry.Private[int | None] = None


@strawberry.type(description="What became of one message of a persistMessages batch.")
class PersistMessagesResult:
    index: int = strawberry.field(description="Its position in the input's messages, from 0.")
    message_id: strawberry.ID | None = strawberry.field(
        description="The stored message's global ID: new, stored by an earlier delivery "
        "(deduplicated), or the one an IDEMPOTENCY_CONFLICT refers to; null when refused "
        "otherwise."
    )
    conversation_id: strawberry.ID | None = strawberry.field(
        description="The global ID of the conversation it belongs to; null when refused."
    )
    deduplicated: bool = strawberry.field(
        description="True when it was a replay (of an earlier delivery, or of an earlier "
        "message of the same batch) and nothing was written for it."
    )
    user_errors: list[UserError] = strawberry.field(
        description="Why this message was refused, every problem at once (paths relative to "
        "the message); empty when it was stored or deduplicated."
    )

    @strawberry.field(description="The stored message (loaded for all results at once).")
    def message(self, info: Info) -> Message | None:
        if self.message_id is None:
            return None
        parsed = parse_global_id(self.message_id)
        assert parsed is not None
        return info.context.loaders.message_by_id.resolve(  # type: ignore[return-value]
            parsed[1], optional(Message.of)
        )


@strawberry.type(description="The result of persistMessages.")
class PersistMessagesPayload:
    client_mutation_id: str | None = strawberry.field(description=CLIENT_MUTATION_ID)
    results: list[PersistMessagesResult] = strawberry.field(
        description="One per input message, in the input's order; empty when the batch as a "
        "whole was refused."
    )
    user_errors: list[UserError] = strawberry.field(
        description="Why the batch as a whole was refused (more than 500 messages); nothing of "
        "it was written then. The messages' own problems are in results."
    )


@strawberry.type(description="The result of registerChannelAccount.")
class RegisterChannelAccountPayload:
    client_mutation_id: str | None = strawberry.field(description=CLIENT_MUTATION_ID)
    channel_account: ChannelAccount | None = strawberry.field(
        description="The account, created or refreshed; null when refused."
    )
    created: bool = strawberry.field(description="False when the account already existed.")
    user_errors: list[UserError] = strawberry.field(description=USER_ERRORS)


@strawberry.type(description="The result of upsertContact.")
class UpsertContactPayload:
    client_mutation_id: str | None = strawberry.field(description=CLIENT_MUTATION_ID)
    contact: Contact | None = strawberry.field(
        description="The contact, created or refreshed; null when refused."
    )
    user_errors: list[UserError] = strawberry.field(description=USER_ERRORS)


@strawberry.type(description="The result of upsertConversation.")
class UpsertConversationPayload:
    client_mutation_id: str | None = strawberry.field(description=CLIENT_MUTATION_ID)
    conversation: Conversation | None = strawberry.field(
        description="The conversation of the thread, found or opened; null when refused."
    )
    contact: Contact | None = strawberry.field(
        description="The contact given in the input, created or refreshed; null when none was "
        "given or when refused."
    )
    user_errors: list[UserError] = strawberry.field(description=USER_ERRORS)


@strawberry.type(description="The result of addAttachments.")
class AddAttachmentsPayload:
    client_mutation_id: str | None = strawberry.field(description=CLIENT_MUTATION_ID)
    message: Message | None = strawberry.field(
        description="The message the attachments belong to; null when refused."
    )
    attachments: list[Attachment] = strawberry.field(
        description="All attachments of the message, in order."
    )
    user_errors: list[UserError] = strawberry.field(description=USER_ERRORS)


Input = Annotated[PersistMessageInput, strawberry.argument(description="The normalized message.")]
BatchInput = Annotated[
    PersistMessagesInput, strawberry.argument(description="The messages, at most 500.")
]
RegisterInput = Annotated[
    RegisterChannelAccountInput, strawberry.argument(description="The account to register.")
]
ContactUpsert = Annotated[
    UpsertContactInput, strawberry.argument(description="The contact, as the channel has it.")
]
ConversationUpsert = Annotated[
    UpsertConversationInput,
    strawberry.argument(description="The thread, or the contact and time of an event."),
]
AttachmentsInput = Annotated[
    AddAttachmentsInput,
    strawberry.argument(description="The message and its newly arrived attachments."),
]


@strawberry.type(
    description="What connectors and the reply sender write: messages exactly once, and the "
    "accounts, contacts and conversations they belong to. Scope: messages:write (admin to "
    "register channel accounts)."
)
class Mutation:
    @strawberry.mutation(
        description="Persist one inbound or outbound message, exactly once per "
        "idempotency key and channel account. Scope: messages:write."
    )
    async def persist_message(self, info: Info, input: Input) -> PersistMessagePayload:
        ctx = info.context
        tenant = ctx.require(SCOPE_WRITE)

        def refused(
            errors: list[FieldError], message: Message | None = None
        ) -> PersistMessagePayload:
            return PersistMessagePayload(
                client_mutation_id=input.client_mutation_id,
                message=message,
                message_edge=None,
                deduplicated=False,
                user_errors=_user_errors(errors),
            )

        normalized, id_errors = input.to_contract()
        errors = _input_errors(id_errors, lambda: contract.validate_message(normalized))
        if errors:
            return refused(errors)
        try:
            result = await service.persist_message(ctx.db, tenant, normalized)
        except IdempotencyConflict as conflict:
            stored = await ctx.loaders.message_by_id.load(conflict.existing_message_id)
            return refused(conflict.errors, Message.of(stored) if stored else None)
        except UserInputError as error:
            return refused(error.errors)

        if result.written is not None:
            ctx.loaders.prime_written(result.written)
        row = await ctx.loaders.message_by_id.load(result.message_id)
        assert row is not None
        message = Message.of(row)
        return PersistMessagePayload(
            client_mutation_id=input.client_mutation_id,
            message=message,
            message_edge=MessageEdge(cursor=timeline_cursor(row), node=message),
            deduplicated=result.deduplicated,
            user_errors=[],
            _conversation_id=result.conversation_id,
            _contact_id=result.contact_id,
        )

    @strawberry.mutation(
        description="Persist a batch of up to 500 inbound or outbound messages in one "
        "request (a backfill of history): each exactly as persistMessage would, with its "
        "original channel timestamp; one refused message blocks none of the others. "
        "Scope: messages:write."
    )
    async def persist_messages(self, info: Info, input: BatchInput) -> PersistMessagesPayload:
        ctx = info.context
        tenant = ctx.require(SCOPE_WRITE)
        try:
            # Before the ids of thousands of messages are decoded.
            service.check_batch_size(len(input.messages))
        except UserInputError as error:
            return PersistMessagesPayload(
                client_mutation_id=input.client_mutation_id,
                results=[],
                user_errors=_user_errors(error.errors),
            )
        outcomes: list[service.Outcome | None] = []
        accepted: list[contract.NormalizedMessage] = []
        for item in input.messages:
            normalized, id_errors = item.to_contract()
            errors = _input_errors(id_errors, partial(contract.validate_message, normalized))
            outcomes.append(UserInputError(errors) if errors else None)
            if not errors:
                accepted.append(normalized)
        stored = iter(await service.persist_messages(ctx.db, tenant, accepted))
        return PersistMessagesPayload(
            client_mutation_id=input.client_mutation_id,
            results=[
                _batch_result(index, outcome or next(stored))
                for index, outcome in enumerate(outcomes)
            ],
            user_errors=[],
        )

    @strawberry.mutation(
        description="Register a channel account, or refresh the existing one "
        "with the same channel and external id. Scope: admin."
    )
    async def register_channel_account(
        self, info: Info, input: RegisterInput
    ) -> RegisterChannelAccountPayload:
        tenant = info.context.require(SCOPE_ADMIN)
        try:
            account, created = await service.register_channel_account(
                info.context.db,
                tenant,
                channel=input.channel,
                external_account_id=input.external_account_id,
                display_name=input.display_name,
                fallback_window_seconds=input.fallback_window_seconds,
            )
        except UserInputError as error:
            return RegisterChannelAccountPayload(
                client_mutation_id=input.client_mutation_id,
                channel_account=None,
                created=False,
                user_errors=_user_errors(error.errors),
            )
        return RegisterChannelAccountPayload(
            client_mutation_id=input.client_mutation_id,
            channel_account=ChannelAccount.of(account),
            created=created,
            user_errors=[],
        )

    @strawberry.mutation(
        description="Create or refresh a contact; the same id every time for "
        "the same channel account and external user id. Scope: messages:write."
    )
    async def upsert_contact(self, info: Info, input: ContactUpsert) -> UpsertContactPayload:
        tenant = info.context.require(SCOPE_WRITE)
        ids = IdDecoder()
        account_id = ids.decode(("channelAccountId",), input.channel_account_id, "ChannelAccount")
        contact = contract.ContactInput(
            external_user_id=input.external_user_id,
            display_name=input.display_name,
            avatar_url=input.avatar_url,
            profile=input.profile,
        )
        errors = _input_errors(ids.errors, lambda: contract.validate_contact(account_id, contact))
        try:
            if errors:
                raise UserInputError(errors)
            stored = await service.upsert_contact(info.context.db, tenant, account_id, contact)
        except UserInputError as error:
            return UpsertContactPayload(
                client_mutation_id=input.client_mutation_id,
                contact=None,
                user_errors=_user_errors(error.errors),
            )
        return UpsertContactPayload(
            client_mutation_id=input.client_mutation_id,
            contact=Contact.of(stored),
            user_errors=[],
        )

    @strawberry.mutation(
        description="Resolve or open the conversation of a thread, by the same "
        "rule persistMessage uses. Scope: messages:write."
    )
    async def upsert_conversation(
        self, info: Info, input: ConversationUpsert
    ) -> UpsertConversationPayload:
        tenant = info.context.require(SCOPE_WRITE)
        ids = IdDecoder()
        account_id = ids.decode(("channelAccountId",), input.channel_account_id, "ChannelAccount")
        contact = input.contact.to_contract() if input.contact else None
        errors = _input_errors(
            ids.errors,
            lambda: contract.validate_conversation(
                account_id, input.external_thread_id, contact, input.channel_timestamp
            ),
        )
        try:
            if errors:
                raise UserInputError(errors)
            conversation, stored = await service.upsert_conversation(
                info.context.db,
                tenant,
                channel_account_id=account_id,
                external_thread_id=input.external_thread_id,
                contact=contact,
                channel_timestamp=input.channel_timestamp,
            )
        except UserInputError as error:
            return UpsertConversationPayload(
                client_mutation_id=input.client_mutation_id,
                conversation=None,
                contact=None,
                user_errors=_user_errors(error.errors),
            )
        return UpsertConversationPayload(
            client_mutation_id=input.client_mutation_id,
            conversation=Conversation.of(conversation),
            contact=Contact.of(stored) if stored else None,
            user_errors=[],
        )

    @strawberry.mutation(
        description="Append attachment metadata that arrived after its message; "
        "retry-safe by externalId. Scope: messages:write."
    )
    async def add_attachments(self, info: Info, input: AttachmentsInput) -> AddAttachmentsPayload:
        ctx = info.context
        tenant = ctx.require(SCOPE_WRITE)
        ids = IdDecoder()
        message_id = ids.decode(("messageId",), input.message_id, "Message")
        items = [a.to_contract() for a in input.attachments]
        errors = _input_errors(ids.errors, lambda: contract.validate_attachments(message_id, items))
        try:
            if errors:
                raise UserInputError(errors)
            stored = await service.add_attachments(ctx.db, tenant, message_id, items)
        except UserInputError as error:
            return AddAttachmentsPayload(
                client_mutation_id=input.client_mutation_id,
                message=None,
                attachments=[],
                user_errors=_user_errors(error.errors),
            )
        assert message_id is not None
        row = await ctx.loaders.message_by_id.load(message_id)
        return AddAttachmentsPayload(
            client_mutation_id=input.client_mutation_id,
            message=Message.of(row) if row else None,
            attachments=[Attachment.of(a) for a in stored],
            user_errors=[],
        )


def _batch_result(index: int, outcome: service.Outcome) -> PersistMessagesResult:
    if isinstance(outcome, UserInputError):
        existing = outcome.existing_message_id if isinstance(outcome, IdempotencyConflict) else None
        return PersistMessagesResult(
            index=index,
            message_id=None
            if existing is None
            else strawberry.ID(to_global_id("Message", existing)),
            conversation_id=None,
            deduplicated=False,
            user_errors=_user_errors(outcome.errors),
        )
    return PersistMessagesResult(
        index=index,
        message_id=strawberry.ID(to_global_id("Message", outcome.message_id)),
        conversation_id=strawberry.ID(to_global_id("Conversation", outcome.conversation_id)),
        deduplicated=outcome.deduplicated,
        user_errors=[],
    )


# Built once: each limiter makes a new rule class when constructed, and the rules are part of
# the validation cache's key, so per-request limiters would never hit the cache.
_LIMIT_RULES = (
    *QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
    *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
)


def build_schema(*, introspection: bool = True, fast_paths: bool = True) -> strawberry.Schema:
    """The service's schema. ``fast_paths=False`` leaves every field and every variable to
    Strawberry's and graphql-core's generic execution and coercion, and DateTime values to
    Strawberry's parser; both must answer exactly the same (tests compare)."""
    from omni_store.graph.execution import PlainFieldExecutor, install_plain_attributes
    from omni_store.graph.extensions import OperationScope
    from omni_store.graph.scalars import DATETIME

    # A factory: each request gets its own instance.
    scope = partial(
        OperationScope,
        rules=_LIMIT_RULES + (() if introspection else (NoSchemaIntrospectionCustomRule,)),
        max_tokens=MAX_TOKENS,
        hide_suggestions=not introspection,
    )
    schema = strawberry.Schema(
        query=Query,
        mutation=Mutation,
        types=[ChannelAccount, Contact, Conversation, Message],
        extensions=[scope],
        execution_context_class=PlainFieldExecutor if fast_paths else None,
        scalar_overrides={datetime: DATETIME} if fast_paths else None,
    )
    if fast_paths:
        # Most fields of a page are attributes of the objects the resolvers built: read them
        # without Strawberry's per-field wrapper, and complete them without graphql-core's.
        install_plain_attributes(schema)
    return schema
