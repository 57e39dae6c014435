"""``LeanLines``: Powertools' JSON lines without what CloudWatch records of every event anyway."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from infra.core.log_format import LeanLines

Log = Callable[..., dict[str, Any]]


@pytest.fixture
def log() -> Log:
    """``log(level, message, **extra)``: the one JSON line a logger with ``LeanLines`` writes,
    with the record keys the Lambda pipeline appends (message id, receive count 1)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter = LeanLines()
    formatter.append_keys(service="svc", message_id="m-1", receive_count="1", task_id="t-1")
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"lean-{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def write(level: int, message: str, **extra: Any) -> dict[str, Any]:
        logger.log(level, message, extra=extra)
        [line] = stream.getvalue().splitlines()
        stream.seek(0)
        stream.truncate()
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    return write


def test_a_line_starts_with_its_level_and_message_and_has_no_time_place_or_service(
    log: Log,
) -> None:
    line = log(logging.INFO, "task finished", state="SUCCESS", sampling_rate=0.1)

    assert line == {
        "level": "INFO",
        "message": "task finished",
        "task_id": "t-1",
        "state": "SUCCESS",
    }
    assert list(line)[:2] == ["level", "message"]


def test_below_warning_a_first_delivery_goes_without_its_message_id(log: Log) -> None:
    for level in (logging.DEBUG, logging.INFO):
        line = log(level, "x")
        assert not {"message_id", "receive_count"} & set(line)

    assert log(logging.INFO, "x", receive_count="3")["receive_count"] == "3"


def test_a_line_about_trouble_keeps_every_record_key(log: Log) -> None:
    for level in (logging.WARNING, logging.ERROR, logging.CRITICAL):
        line = log(level, "x")
        assert (line["message_id"], line["receive_count"], line["task_id"]) == ("m-1", "1", "t-1")
        assert "timestamp" not in line and "service" not in line


def test_clearing_the_keys_brings_back_neither_time_nor_place() -> None:
    """Powertools rebuilds its keys on ``clear_state`` (``inject_lambda_context`` does, each
    invocation): what this formatter leaves out stays out."""
    formatter = LeanLines()
    formatter.clear_state()

    record = logging.LogRecord("n", logging.INFO, __file__, 1, "hello", None, None)

    assert json.loads(formatter.format(record)) == {"level": "INFO", "message": "hello"}
