"""What the decoder's tests share: small builders, one plain message, and the checks every
refusal must pass. The messages come from :mod:`tests.unit.celery_messages`."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cache
from uuid import UUID

import pytest

from infra.core.errors import MessageDecodeError
from infra.wire.protocol import TaskMessage, decode
from tests.unit.celery_messages import publish

__all__ = ["PICKLE_TYPE", "RICH", "b64", "every_property", "plain_body", "refused"]

PICKLE_TYPE = "application/x-python-serialize"


def b64(data: str | bytes) -> str:
    """Base64 text of ``data``, as kombu's SQS transport wraps an envelope."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def refused(body: object, *, accept: tuple[str, ...] = ("json",)) -> MessageDecodeError:
    """Decode a body that must fail; check the error carries the id and the raw body."""
    with pytest.raises(MessageDecodeError) as info:
        decode(body, message_id="m-bad", accept=accept)  # type: ignore[arg-type]
    assert type(info.value) is MessageDecodeError
    assert info.value.message_id == "m-bad"
    assert info.value.raw is body
    return info.value


def every_property(message: TaskMessage) -> tuple[object, ...]:
    """Read every derived property (none may raise once decode has returned)."""
    return (
        message.queue,
        message.eta,
        message.expires,
        message.retries,
        message.root_id,
        message.parent_id,
        message.group,
        message.timelimit,
    )


@cache
def plain_body(base64_envelope: bool = True) -> str:
    """One ordinary protocol 2 message, reused by the garbage cases."""
    return publish((2, 3), {"z": 4}, base64_envelope=base64_envelope, task_id="task-plain")


RICH = (
    datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    datetime(2024, 5, 6, 7, 8, 9),
    date(2024, 5, 6),
    time(7, 8, 9),
    Decimal("12.3400"),
    UUID("12345678-1234-5678-1234-567812345678"),
    b"utf-8 bytes",
    b"\xff\x00 not utf-8",
)
