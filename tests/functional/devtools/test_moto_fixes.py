"""The emulator's speed fixes (``devtools.cloud.moto_fixes``): a transaction backs up the items it
names, not whole tables, and a receive does not count the queue for each message; moto's answers
unchanged -- a cancelled transaction still leaves the table as it was, retention still holds."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models.table import Table
from moto.sqs.models import Queue, sqs_backends

from devtools.cloud import moto_fixes


@pytest.fixture
def table() -> Iterator[Any]:
    moto_fixes.install()
    with mock_aws():
        # moto intercepts AWS's own endpoint; AWS_ENDPOINT_URL (the session's emulator) is not it.
        client = boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url="https://dynamodb.us-east-1.amazonaws.com",
        )
        client.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.put_item(TableName="t", Item={"id": {"S": "done"}, "n": {"N": "1"}})
        yield client


def update(key: str) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": "t",
            "Key": {"id": {"S": key}},
            "UpdateExpression": "SET n = :n",
            "ExpressionAttributeValues": {":n": {"N": "2"}},
        }
    }


def absent(key: str) -> dict[str, Any]:
    return {
        "ConditionCheck": {
            "TableName": "t",
            "Key": {"id": {"S": key}},
            "ConditionExpression": "attribute_not_exists(id)",
        }
    }


def test_a_transaction_copies_no_table(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    deepcopy = copy.deepcopy
    tables_copied: list[str] = []

    def counting(value: Any, memo: Any = None) -> Any:
        if isinstance(value, Table):
            tables_copied.append(value.name)
        return deepcopy(value, memo)

    monkeypatch.setattr(copy, "deepcopy", counting)

    table.transact_write_items(TransactItems=[update(f"k{i}") for i in range(10)])

    assert tables_copied == []
    assert table.get_item(TableName="t", Key={"id": {"S": "k9"}})["Item"]["n"] == {"N": "2"}


def test_a_cancelled_transaction_still_changes_nothing(table: Any) -> None:
    table.put_item(TableName="t", Item={"id": {"S": "kept"}, "n": {"N": "7"}})
    with pytest.raises(table.exceptions.TransactionCanceledException) as cancelled:
        table.transact_write_items(
            TransactItems=[update("new"), update("kept"), update("other"), absent("done")]
        )

    reasons = [r["Code"] for r in cancelled.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "None", "ConditionalCheckFailed"]
    assert "Item" not in table.get_item(TableName="t", Key={"id": {"S": "new"}})
    assert "Item" not in table.get_item(TableName="t", Key={"id": {"S": "other"}})
    assert table.get_item(TableName="t", Key={"id": {"S": "kept"}})["Item"]["n"] == {"N": "7"}
    # Outside a transaction moto's other copies are made as before.
    assert table.update_item(
        TableName="t",
        Key={"id": {"S": "done"}},
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": {"N": "3"}},
        ReturnValues="ALL_OLD",
    )["Attributes"]["n"] == {"N": "1"}


def test_a_transaction_naming_a_key_twice_changes_nothing(table: Any) -> None:
    with pytest.raises(table.exceptions.ClientError, match="ValidationException"):
        table.transact_write_items(TransactItems=[update("done"), update("new"), update("done")])

    assert table.get_item(TableName="t", Key={"id": {"S": "done"}})["Item"]["n"] == {"N": "1"}
    assert "Item" not in table.get_item(TableName="t", Key={"id": {"S": "new"}})


@pytest.fixture
def sqs() -> Iterator[tuple[Any, str]]:
    moto_fixes.install()
    with mock_aws():
        client = boto3.client(
            "sqs", region_name="us-east-1", endpoint_url="https://sqs.us-east-1.amazonaws.com"
        )
        url = client.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})[
            "QueueUrl"
        ]
        yield client, url


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The queue names whose messages were counted (moto's ``approximate_number_of_messages``)."""
    names: list[str] = []
    counting = Queue.approximate_number_of_messages

    def count(queue: Queue) -> int:
        names.append(queue.name)
        return int(counting.fget(queue))  # type: ignore[attr-defined]

    monkeypatch.setattr(Queue, "approximate_number_of_messages", property(count))
    return names


def test_a_receive_does_not_count_the_queue_per_message(
    sqs: tuple[Any, str], counted: list[str]
) -> None:
    client, url = sqs
    for i in range(20):
        client.send_message(QueueUrl=url, MessageBody=str(i))

    received = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]

    assert len(received) == 10
    assert counted == []


def test_sending_and_reading_one_attribute_do_not_count_the_queue(
    sqs: tuple[Any, str], counted: list[str]
) -> None:
    client, url = sqs

    client.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(10)]
    )
    client.send_message(QueueUrl=url, MessageBody="one more")
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    assert counted == []
    depth = client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert arn["QueueArn"].endswith(":q")
    assert depth == {"ApproximateNumberOfMessages": "11"}  # the count itself still counts


def test_queue_attributes_are_motos_own(sqs: tuple[Any, str]) -> None:
    client, url = sqs
    dlq = client.create_queue(QueueName="dlq")["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    redrive = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": 3}
    client.create_queue(
        QueueName="redriven",
        Attributes={"RedrivePolicy": json.dumps(redrive), "Policy": json.dumps({"Statement": []})},
    )
    client.create_queue(
        QueueName="f.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    )
    client.create_queue(QueueName="kms", Attributes={"KmsMasterKeyId": "alias/aws/sqs"})
    client.send_message(QueueUrl=url, MessageBody="x")
    client.send_message(QueueUrl=url, MessageBody="y", DelaySeconds=30)

    backend = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    for name in ("q", "dlq", "redriven", "f.fifo", "kms"):
        queue = backend.get_queue(name)
        assert dict(queue.attributes) == moto_fixes.MOTO_QUEUE_ATTRIBUTES.fget(queue), name


def test_retention_still_holds(sqs: tuple[Any, str]) -> None:
    client, url = sqs
    client.send_message(QueueUrl=url, MessageBody="old")
    client.send_message(QueueUrl=url, MessageBody="new")
    [old, _] = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_queue("q")._messages
    old.sent_timestamp -= 61_000  # sent 61 s ago: past the queue's 60-s retention

    received = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])

    assert received == []  # moto stops at the first message past retention, as before


def test_a_delete_takes_the_queue_lock_a_send_takes(sqs: tuple[Any, str]) -> None:
    """moto's delete rebuilt the message list outside the lock: two at once put a deleted
    message back (in flight, back after the visibility timeout), a send meanwhile was lost."""
    client, url = sqs
    client.send_message(QueueUrl=url, MessageBody="x")
    [message] = client.receive_message(QueueUrl=url)["Messages"]
    queue = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_queue("q")
    deleted = threading.Event()

    def delete() -> None:
        queue.delete_message(message["ReceiptHandle"])
        deleted.set()

    with queue._messages_lock:
        threading.Thread(target=delete, daemon=True).start()
        assert not deleted.wait(0.3)  # waits for the lock
    assert deleted.wait(5)
    assert queue._messages == []
