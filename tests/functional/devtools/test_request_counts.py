"""The counting emulator: every AWS request it serves is counted by ``service:Operation``.

The classification is checked on WSGI environs; the counts on a real emulator of this test's own
(not the session's), reached by boto3 over HTTP like every other client.
"""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devtools.cloud.emulator import Emulator, request_counts
from devtools.cloud.moto_counting import operation_of, s3_operation, service_of

SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=abc"
)


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "operation"),
    [
        ("GET", "/", {}, {}, "ListBuckets"),
        ("PUT", "/bucket", {}, {}, "CreateBucket"),
        ("HEAD", "/bucket", {}, {}, "HeadBucket"),
        ("DELETE", "/bucket", {}, {}, "DeleteBucket"),
        ("GET", "/bucket", {"list-type": "2", "prefix": "a/"}, {}, "ListObjectsV2"),
        ("GET", "/bucket", {}, {}, "ListObjects"),
        ("GET", "/bucket", {"versions": ""}, {}, "ListObjectVersions"),
        ("PUT", "/bucket", {"lifecycle": ""}, {}, "PutBucketLifecycleConfiguration"),
        ("GET", "/bucket", {"location": ""}, {}, "GetBucketLocation"),
        ("PUT", "/bucket", {"publicAccessBlock": ""}, {}, "PutPublicAccessBlock"),
        ("POST", "/bucket", {"delete": ""}, {}, "DeleteObjects"),
        ("PUT", "/bucket/a/b.txt", {}, {}, "PutObject"),
        ("PUT", "/bucket/a/b.txt", {}, {"x-amz-copy-source": "/bucket/c"}, "CopyObject"),
        ("GET", "/bucket/a/b.txt", {}, {}, "GetObject"),
        ("HEAD", "/bucket/a/b.txt", {}, {}, "HeadObject"),
        ("DELETE", "/bucket/a/b.txt", {}, {}, "DeleteObject"),
        ("PUT", "/bucket/k", {"tagging": ""}, {}, "PutObjectTagging"),
        ("POST", "/bucket/k", {"uploads": ""}, {}, "CreateMultipartUpload"),
        ("PUT", "/bucket/k", {"partNumber": "1", "uploadId": "u"}, {}, "UploadPart"),
        ("POST", "/bucket/k", {"uploadId": "u"}, {}, "CompleteMultipartUpload"),
        ("DELETE", "/bucket/k", {"uploadId": "u"}, {}, "AbortMultipartUpload"),
    ],
)
def test_s3_operations_by_rest_shape(
    method: str, path: str, query: dict[str, str], headers: dict[str, str], operation: str
) -> None:
    assert s3_operation(method, path, query, headers) == operation


@pytest.mark.parametrize(
    ("environ", "service"),
    [
        ({"HTTP_AUTHORIZATION": SIGV4.format(service="dynamodb")}, "dynamodb"),
        ({"QUERY_STRING": "X-Amz-Credential=k%2F20260101%2Fus-east-1%2Fsqs%2Faws4_request"}, "sqs"),
        ({"HTTP_AUTHORIZATION": "AWS testing:c2lnbmF0dXJl"}, "s3"),
        ({"QUERY_STRING": "AWSAccessKeyId=testing&Signature=x&Expires=1"}, "s3"),
        ({}, "unsigned"),
    ],
)
def test_service_from_the_credential_scope(environ: dict[str, Any], service: str) -> None:
    assert service_of(environ) == service


def test_operation_from_target_query_string_and_form_body() -> None:
    json_request = {"HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"}
    assert operation_of(json_request, "sqs") == "ReceiveMessage"
    assert operation_of({"QUERY_STRING": "Action=ReceiveMessage&X=1"}, "sqs") == "ReceiveMessage"
    body = b"Action=GetCallerIdentity&Version=2011-06-15"
    form = {
        "CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    assert operation_of(form, "sts") == "GetCallerIdentity"
    assert form["wsgi.input"].read() == body  # put back for moto
    s3 = {"REQUEST_METHOD": "GET", "PATH_INFO": "/k", "HTTP_HOST": "bucket.localhost:5000"}
    assert operation_of(s3, "s3") == "GetObject"


# ---------------------------------------------------------------- a real emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


def clients(endpoint_url: str) -> dict[str, Any]:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    names = ("sqs", "dynamodb", "s3", "sts")
    return {name: session.client(name, endpoint_url=endpoint_url) for name in names}


def make_known_calls(aws: dict[str, Any]) -> None:
    sqs, dynamodb, s3 = aws["sqs"], aws["dynamodb"], aws["s3"]
    url = sqs.create_queue(QueueName="counted")["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"message {i}")
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    entries = [
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
        for i, m in enumerate(messages["Messages"])
    ]
    assert len(entries) == 3
    sqs.delete_message_batch(QueueUrl=url, Entries=entries)

    dynamodb.create_table(
        TableName="counted",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="counted", Item={"id": {"S": "a"}})
    dynamodb.get_item(TableName="counted", Key={"id": {"S": "a"}})
    dynamodb.batch_get_item(RequestItems={"counted": {"Keys": [{"id": {"S": "a"}}]}})

    s3.create_bucket(Bucket="counted")
    s3.put_object(Bucket="counted", Key="a/b.txt", Body=b"hello")
    assert s3.get_object(Bucket="counted", Key="a/b.txt")["Body"].read() == b"hello"

    aws["sts"].get_caller_identity()  # a query-protocol service: Action= in the form body


EXPECTED = {
    "sqs:CreateQueue": 1,
    "sqs:SendMessage": 3,
    "sqs:ReceiveMessage": 1,
    "sqs:DeleteMessageBatch": 1,
    "dynamodb:CreateTable": 1,
    "dynamodb:PutItem": 1,
    "dynamodb:GetItem": 1,
    "dynamodb:BatchGetItem": 1,
    "s3:CreateBucket": 1,
    "s3:PutObject": 1,
    "s3:GetObject": 1,
    "sts:GetCallerIdentity": 1,
}


def test_counts_every_request_by_service_and_operation(emulator: Emulator) -> None:
    emulator.reset_counts()
    make_known_calls(clients(emulator.endpoint_url))
    assert emulator.counts() == EXPECTED
    assert request_counts(emulator.endpoint_url) == EXPECTED  # the same, by URL


def test_reset_returns_the_counts_and_starts_from_zero(emulator: Emulator) -> None:
    emulator.reset_counts()
    aws = clients(emulator.endpoint_url)
    aws["sqs"].list_queues()
    assert emulator.reset_counts() == {"sqs:ListQueues": 1}
    assert emulator.counts() == {}
    aws["sqs"].list_queues()
    aws["sqs"].list_queues()
    assert emulator.counts() == {"sqs:ListQueues": 2}


def test_control_requests_are_not_counted(emulator: Emulator) -> None:
    emulator.reset_counts()
    emulator.counts()
    emulator.reset()  # moto's /moto-api: the emulator's control plane, not an AWS request
    urllib.request.urlopen(f"{emulator.endpoint_url}/moto-api/", timeout=5).close()
    assert emulator.counts() == {}
