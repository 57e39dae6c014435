"""The emulator's speed fix (``devtools.cloud.moto_fixes``): one backup per table per transaction,
and moto's answers unchanged -- a cancelled transaction still leaves the table as it was."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.models.table import Table

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


def test_a_transaction_backs_each_table_up_once(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    deepcopy = copy.deepcopy
    tables_copied: list[str] = []

    def counting(value: Any, memo: Any = None) -> Any:
        if isinstance(value, Table):
            tables_copied.append(value.name)
        return deepcopy(value, memo)

    monkeypatch.setattr(copy, "deepcopy", counting)

    table.transact_write_items(TransactItems=[update(f"k{i}") for i in range(10)])

    assert tables_copied == ["t"]
    assert table.get_item(TableName="t", Key={"id": {"S": "k9"}})["Item"]["n"] == {"N": "2"}


def test_a_cancelled_transaction_still_changes_nothing(table: Any) -> None:
    with pytest.raises(table.exceptions.TransactionCanceledException) as cancelled:
        table.transact_write_items(TransactItems=[update("new"), update("other"), absent("done")])

    reasons = [r["Code"] for r in cancelled.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "ConditionalCheckFailed"]
    assert "Item" not in table.get_item(TableName="t", Key={"id": {"S": "new"}})
    assert "Item" not in table.get_item(TableName="t", Key={"id": {"S": "other"}})
    # Outside a transaction moto's other copies are made as before.
    assert table.update_item(
        TableName="t",
        Key={"id": {"S": "done"}},
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": {"N": "3"}},
        ReturnValues="ALL_OLD",
    )["Attributes"]["n"] == {"N": "1"}
