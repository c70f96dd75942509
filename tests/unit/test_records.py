"""The records built from rows: frozen for the type checker, compared and hashed by value,
slotted (see ``row_record``: a frozen dataclass's ``__init__`` cost a read page 8 % of its
instructions)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mypy import api as mypy_api

from omni_store.persistence.repositories import (
    Attachment,
    ChannelAccount,
    Contact,
    Conversation,
    Message,
)

ROW_RECORDS = [ChannelAccount, Contact, Conversation, Message, Attachment]
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


@pytest.mark.parametrize("record", ROW_RECORDS, ids=lambda r: r.__name__)
def test_a_row_record_is_a_slotted_dataclass_without_instance_dict(record: type) -> None:
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


def test_the_type_checker_refuses_an_assignment_to_a_row_records_field(tmp_path: Path) -> None:
    source = tmp_path / "assigns.py"
    source.write_text(
        "from omni_store.persistence.repositories import Message\n"
        "def f(m: Message) -> None:\n"
        "    m.status = 'read'\n"
    )
    out, _, status = mypy_api.run(
        [str(source), "--cache-dir", str(tmp_path / "cache"), "--no-error-summary"]
    )

    assert status == 1
    assert out.splitlines() == [
        f'{source}:3: error: Property "status" defined in "Message" is read-only  [misc]'
    ]
