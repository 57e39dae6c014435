"""Handing a received message back: what the re-send keeps of it, on both consumers' inputs.

The body is opaque to a hand-back, so the records and messages here carry any text; what is
checked is the request :func:`infra.wire.requeue.hand_back` builds from a Lambda record
(:func:`of_record`) and from a message as ReceiveMessage returns it (:func:`of_message`).
"""

from __future__ import annotations

from typing import Any

from infra.core.settings import Settings
from infra.wire.offload import Pointer
from infra.wire.requeue import Hold, Resend, hand_back, of_message, of_record

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/tenants"
ARN = "arn:aws:sqs:us-east-1:123456789012:tenants"
NOW = 1_700_000_000.0
TWENTY_MINUTES = 20 * 60


def _record(arn: str = ARN, **attributes: str) -> dict[str, Any]:
    """A Lambda SQS record with the given system attributes."""
    return {
        "messageId": "m-1",
        "receiptHandle": "r-1",
        "body": "the body",
        "attributes": {"ApproximateFirstReceiveTimestamp": str(int(NOW * 1000)), **attributes},
        "messageAttributes": {},
        "eventSourceARN": arn,
    }


def _message(**attributes: str) -> dict[str, Any]:
    """A message as ReceiveMessage returns it."""
    return {
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "Body": "the body",
        "Attributes": attributes,
    }


def _resent(step: Resend | Hold) -> dict[str, Any]:
    assert isinstance(step, Resend)
    return step.request


def test_a_lambda_record_resent_for_a_later_turn_keeps_its_tenant() -> None:
    record = _record(MessageGroupId="acme")

    request = _resent(hand_back(of_record(record, Settings()), TWENTY_MINUTES, NOW))

    assert request["MessageGroupId"] == "acme"
    assert (request["QueueUrl"], request["DelaySeconds"]) == (URL, 900)


def test_a_received_message_resent_for_a_later_turn_keeps_its_tenant() -> None:
    message = _message(ApproximateReceiveCount="1", MessageGroupId="acme")

    request = _resent(hand_back(of_message(message, URL, None), TWENTY_MINUTES, NOW))

    assert request == {
        "QueueUrl": URL,
        "MessageBody": "the body",
        "DelaySeconds": 900,
        "MessageGroupId": "acme",
    }


def test_a_message_without_a_group_is_resent_without_one() -> None:
    from_lambda = _resent(hand_back(of_record(_record(), Settings()), 30, NOW))
    from_worker = _resent(hand_back(of_message(_message(), URL, None), 30, NOW))

    assert "MessageGroupId" not in from_lambda
    assert "MessageGroupId" not in from_worker


def test_an_offloaded_body_is_resent_as_its_pointer_with_the_tenant() -> None:
    pointer = Pointer(bucket="b", key="payloads/t/1")
    message = _message(MessageGroupId="acme")

    request = _resent(hand_back(of_message(message, URL, pointer), 120, NOW))

    assert request["MessageBody"] == pointer.body()
    assert request["MessageGroupId"] == "acme"
    assert request["MessageAttributes"]["ExtendedPayloadSize"]["StringValue"] == str(
        len(b"the body")
    )


def test_a_fifo_record_is_held_not_resent() -> None:
    record = _record(arn=f"{ARN}.fifo", MessageGroupId="acme")

    step = hand_back(of_record(record, Settings()), TWENTY_MINUTES, NOW)

    assert isinstance(step, Hold)
    assert step.request["ReceiptHandle"] == "r-1"
