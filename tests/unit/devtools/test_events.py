"""The sample events in events/ are real Lambda SQS events carrying real Celery messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.events import EVENTS_DIR
from infra.wire.protocol import decode

FILES = sorted(EVENTS_DIR.glob("*.json"))
RECORD_KEYS = {
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
}


def records(path: Path) -> list[dict]:
    return json.loads(path.read_text())["Records"]


def test_the_expected_events_exist() -> None:
    assert {p.name for p in FILES} >= {
        "add.json",
        "examples.json",
        "countdown.json",
        "expired.json",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_record_has_the_lambda_shape_and_decodes(path: Path) -> None:
    recs = records(path)
    assert recs
    assert len({r["messageId"] for r in recs}) == len(recs)
    for record in recs:
        assert record.keys() >= RECORD_KEYS
        assert record["eventSource"] == "aws:sqs"
        assert record["attributes"]["ApproximateReceiveCount"].isdigit()
        message = decode(record["body"], message_id=record["messageId"])
        assert message.task_name.startswith("tasks.")


def test_examples_carry_link_and_link_error() -> None:
    messages = [
        decode(r["body"], message_id=r["messageId"]) for r in records(EVENTS_DIR / "examples.json")
    ]
    by_name = {m.task_name: m for m in messages}
    assert by_name["tasks.add"].embed["callbacks"][0]["task"] == "tasks.add"
    assert by_name["tasks.always_fails"].embed["errbacks"][0]["task"] == "tasks.error_handler"


def test_countdown_and_expired_events_carry_their_times() -> None:
    (countdown,) = records(EVENTS_DIR / "countdown.json")
    (expired,) = records(EVENTS_DIR / "expired.json")
    sent = datetime.fromtimestamp(int(countdown["attributes"]["SentTimestamp"]) / 1000, UTC)
    eta = decode(countdown["body"], message_id="c").eta
    assert eta is not None and timedelta(seconds=50) < eta - sent < timedelta(seconds=70)
    expires = decode(expired["body"], message_id="e").expires
    assert expires is not None and expires < datetime.now(UTC)
