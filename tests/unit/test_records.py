"""The records built in bulk (from rows, and for each message a write stores): frozen for the
type checker, compared and hashed by value, slotted (see ``record_class``: a frozen
dataclass's ``__init__`` cost a read page 8 % of its instructions, a batch of 100 messages
12 %)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mypy import api as mypy_api

from omni_store.persistence import contract
from omni_store.persistence.repositories import (
    Attachment,
    ChannelAccount,
    Contact,
    ContactRow,
    Conversation,
    ConversationRow,
    Message,
    MessageRow,
    Persisted,
    PlacedRow,
    Replay,
    StoredMessage,
    Thread,
)
from omni_store.persistence.service import PersistResult, Written

ROW_RECORDS = [ChannelAccount, Contact, Conversation, Message, Attachment]
WRITE_RECORDS = [
    contract.ContactInput,
    contract.SenderInput,
    contract.ContentInput,
    contract.AttachmentInput,
    contract.NormalizedMessage,
    ContactRow,
    ConversationRow,
    MessageRow,
    PlacedRow,
    Thread,
    Persisted,
    Replay,
    StoredMessage,
    Written,
    PersistResult,
]
AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _conversation(**changes: object) -> Conversation:
    values: dict[str, object] = {
        "tenant_id": "t",
        "id": 7,
        "channel_account_id": 3,
        "channel": "line",
        "thread_key": "thread:1",
        "external_thread_id": None,
        "contact_id": 5,
        "last_message_at": AT,
        "created_at": AT,
    }
    values.update(changes)
    return Conversation(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("record", ROW_RECORDS + WRITE_RECORDS, ids=lambda r: r.__name__)
def test_a_record_is_a_slotted_dataclass_without_instance_dict(record: type) -> None:
    assert dataclasses.is_dataclass(record)
    assert record.__slots__ == tuple(f.name for f in dataclasses.fields(record))
    assert "__dict__" not in dir(record)


def test_row_records_are_equal_and_hash_equal_by_value() -> None:
    first, same, other = _conversation(), _conversation(), _conversation(id=8)

    assert first == same
    assert hash(first) == hash(same)
    assert first != other
    assert {first, same, other} == {first, other}
    assert len({first, same, other}) == 2


def test_a_write_record_leaves_fields_out_of_equality_as_declared() -> None:
    stored = Written(None, None, None, None, [])  # type: ignore[arg-type]
    plain = PersistResult(message_id=1, conversation_id=2, contact_id=3, deduplicated=False)
    with_rows = PersistResult(1, 2, 3, False, written=stored)

    assert plain == with_rows  # ``written`` is field(compare=False)
    assert hash(plain) == hash(with_rows)
    assert plain != PersistResult(1, 2, 3, True)
    message = contract.NormalizedMessage(1, "INBOUND", None, None)
    assert message.attachments == ()  # field(default_factory=tuple)


def test_the_type_checker_refuses_an_assignment_to_a_records_field(tmp_path: Path) -> None:
    source = tmp_path / "assigns.py"
    source.write_text(
        "from omni_store.persistence.contract import NormalizedMessage\n"
        "from omni_store.persistence.repositories import Message, MessageRow\n"
        "def f(m: Message, r: MessageRow, n: NormalizedMessage) -> None:\n"
        "    m.status = 'read'\n"
        "    r.status = 'read'\n"
        "    n.idempotency_key = 'k'\n"
    )
    out, _, status = mypy_api.run(
        [str(source), "--cache-dir", str(tmp_path / "cache"), "--no-error-summary"]
    )

    assert status == 1
    assert out.splitlines() == [
        f'{source}:4: error: Property "status" defined in "Message" is read-only  [misc]',
        f'{source}:5: error: Property "status" defined in "MessageRow" is read-only  [misc]',
        f'{source}:6: error: Property "idempotency_key" defined in "NormalizedMessage" is '
        "read-only  [misc]",
    ]
