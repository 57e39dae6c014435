"""What ``lambda up`` says about failed records, locally against the deployed stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devtools.cloud.deploy import EventSource
from devtools.cloud.redelivery import Redelivery, deployed_redelivery, redelivery_note


@pytest.mark.parametrize(
    ("redelivery", "said"),
    [
        (Redelivery(5, 5), "back after 5 s, in the DLQ after 5 receives (about 25 s)"),
        (Redelivery(720, 5), "back after 720 s, in the DLQ after 5 receives (about 60 min)"),
        (Redelivery(7200, 3), "back after 7200 s, in the DLQ after 3 receives (about 6 h)"),
        (Redelivery(30, None), "back after 30 s, no DLQ"),
    ],
)
def test_a_redelivery_says_when_a_failed_record_comes_back_and_moves(
    redelivery: Redelivery, said: str
) -> None:
    assert redelivery.describe() == said


def test_the_note_puts_the_local_wait_beside_each_deployed_one() -> None:
    note = redelivery_note([Redelivery(750, 5), Redelivery(900, 3)], failed_visibility=2)

    assert note == (
        "failed records: back after 2 s, in the DLQ after 5 receives (about 10 s); "
        "back after 2 s, in the DLQ after 3 receives (about 6 s) here (--failed-visibility); "
        "the deployed stack keeps the template's: "
        "back after 750 s, in the DLQ after 5 receives (about 62 min); "
        "back after 900 s, in the DLQ after 3 receives (about 45 min)"
    )


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def _source(queue_url: str) -> EventSource:
    return EventSource("Fn", "handlers.sqs.handler", queue_url, "arn", 10, 0, 120, True)


def test_deployed_redelivery_reads_each_source_queue_once(sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    policy = json.dumps({"deadLetterTargetArn": arn["QueueArn"], "maxReceiveCount": 5})
    attributes = {"VisibilityTimeout": "750", "RedrivePolicy": policy}
    first = sqs.create_queue(QueueName="first", Attributes=attributes)["QueueUrl"]
    second = sqs.create_queue(QueueName="second", Attributes=attributes)["QueueUrl"]
    bare = sqs.create_queue(QueueName="bare", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]

    found = deployed_redelivery(sqs, [_source(first), _source(second), _source(bare)])

    assert found == (Redelivery(30, None), Redelivery(750, 5))
