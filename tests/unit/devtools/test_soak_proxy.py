"""The soak's fault proxy: what it reads from a request, and what real boto3 clients make of its
answers (the error code, the status, botocore's retries), in front of an emulator of its own."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import QueryParser

from devtools.cloud.emulator import LOCAL_CREDENTIALS, Emulator
from devtools.soak.proxy import FAULT_KINDS, FaultPlan, FaultProxy, Target, target_of

pytestmark = pytest.mark.integration  # an HTTP proxy and a moto server: not in `make test-fast`

SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=abc"
)
EXPECTED = {
    ("dynamodb", "throttled"): ("ProvisionedThroughputExceededException", 400),
    ("dynamodb", "throttling"): ("ThrottlingException", 400),
    ("dynamodb", "internal"): ("InternalServerError", 500),
    ("sqs", "throttled"): ("RequestThrottled", 400),
    ("sqs", "throttling"): ("ThrottlingException", 400),
    ("sqs", "internal"): ("InternalError", 500),
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as started:
        yield started


def _client(service: str, endpoint: str, retries: int) -> Any:
    """A client retrying throttles and 500s ``retries`` times (botocore's ``max_attempts``)."""
    return boto3.session.Session().client(
        service,
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"mode": "standard", "max_attempts": retries}),
    )


def _call(client: Any, service: str) -> dict[str, Any]:
    response: dict[str, Any] = (
        client.list_tables() if service == "dynamodb" else client.list_queues()
    )
    return response


# ---------------------------------------------------------------- reading a request


@pytest.mark.parametrize(
    ("headers", "path", "body", "target"),
    [
        (
            {"X-Amz-Target": "DynamoDB_20120810.PutItem", "Authorization": SIGV4},
            "/",
            b"{}",
            Target("dynamodb", "PutItem", "json"),
        ),
        (
            {"x-amz-target": "AmazonSQS.ReceiveMessage"},
            "/",
            b"{}",
            Target("sqs", "ReceiveMessage", "json"),
        ),
        (
            {
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                "Authorization": SIGV4.format(service="sqs"),
            },
            "/123456789012/q",
            b"Action=DeleteMessage&Version=2012-11-05",
            Target("sqs", "DeleteMessage", "query"),
        ),
        (
            {"Authorization": SIGV4.format(service="sqs")},
            "/?Action=ListQueues",
            b"",
            Target("sqs", "ListQueues", "query"),
        ),
        ({"Authorization": SIGV4.format(service="s3")}, "/bucket/key", b"data", None),
        ({}, "/moto-api/reset", b"", None),
    ],
)
def test_the_service_and_operation_are_read_from_the_request(
    headers: dict[str, str], path: str, body: bytes, target: Target | None
) -> None:
    headers = {k: v.format(service="dynamodb") for k, v in headers.items()}
    assert target_of(headers, path, body) == target


def test_a_plan_refuses_a_rate_outside_zero_to_one_and_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="rate"):
        FaultPlan(1.5, seed=1)
    with pytest.raises(ValueError, match="kinds"):
        FaultPlan(0.1, seed=1, kinds=["timeout"])


# ---------------------------------------------------------------- what clients see


@pytest.mark.parametrize(("service", "kind"), sorted(EXPECTED))
def test_every_fault_is_the_services_error_and_botocore_retries_it(
    emulator: Emulator, service: str, kind: str
) -> None:
    with FaultProxy(emulator.endpoint_url, FaultPlan(1.0, seed=1, kinds=[kind])) as proxy:
        client = _client(service, proxy.endpoint_url, retries=2)
        with pytest.raises(ClientError) as raised:
            _call(client, service)

    code, status = EXPECTED[(service, kind)]
    error = raised.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status)
    assert error["ResponseMetadata"]["RetryAttempts"] == 2  # botocore took it as retryable
    operation = "ListTables" if service == "dynamodb" else "ListQueues"
    assert dict(proxy.injected) == {(service, operation, kind): 3}


@pytest.mark.parametrize(
    ("kind", "code"), [("throttled", "RequestThrottled"), ("internal", "InternalError")]
)
def test_an_sqs_query_request_gets_the_xml_error_botocore_parses(
    emulator: Emulator, kind: str, code: str
) -> None:
    with FaultProxy(emulator.endpoint_url, FaultPlan(1.0, seed=1, kinds=[kind])) as proxy:
        request = urllib.request.Request(
            f"{proxy.endpoint_url}/",
            data=b"Action=ListQueues&Version=2012-11-05",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": SIGV4.format(service="sqs"),
            },
        )
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=10)
        answer = raised.value
        body = answer.read()

    parsed = QueryParser().parse(
        {"status_code": answer.code, "headers": dict(answer.headers), "body": body}, None
    )
    assert (parsed["Error"]["Code"], answer.code) == (code, 500 if kind == "internal" else 400)


def test_the_configured_share_of_both_services_is_faulted(emulator: Emulator) -> None:
    with FaultProxy(emulator.endpoint_url, FaultPlan(0.05, seed=7)) as proxy:
        clients = [(_client(s, proxy.endpoint_url, retries=0), s) for s in ("sqs", "dynamodb")]
        errors = 0
        for _ in range(200):
            for client, service in clients:
                try:
                    _call(client, service)
                except ClientError:
                    errors += 1

    injected = sum(proxy.injected.values())
    assert errors == injected
    assert 0.02 < injected / 400 < 0.08
    assert {kind for (_, _, kind) in proxy.injected} == set(FAULT_KINDS)
    assert {service for (service, _, _) in proxy.injected} == {"sqs", "dynamodb"}


def test_botocore_retries_exactly_the_faulted_requests(emulator: Emulator) -> None:
    with FaultProxy(emulator.endpoint_url, FaultPlan(0.1, seed=5)) as proxy:
        clients = [(_client(s, proxy.endpoint_url, retries=10), s) for s in ("sqs", "dynamodb")]
        retries = sum(
            _call(client, service)["ResponseMetadata"]["RetryAttempts"]
            for _ in range(30)
            for client, service in clients
        )

    injected = sum(proxy.injected.values())
    assert injected > 0
    assert retries == injected  # every fault was retried, and nothing else was
    assert sum(proxy.forwarded.values()) == 60  # each call succeeded once, in the end


def test_the_same_seed_faults_the_same_requests(emulator: Emulator) -> None:
    seen = []
    for _ in range(2):
        with FaultProxy(emulator.endpoint_url, FaultPlan(0.2, seed=3)) as proxy:
            sqs = _client("sqs", proxy.endpoint_url, retries=0)
            outcomes = []
            for _ in range(40):
                try:
                    sqs.list_queues()
                    outcomes.append("ok")
                except ClientError as exc:
                    outcomes.append(exc.response["Error"]["Code"])
        seen.append(outcomes)

    assert seen[0] == seen[1]
    assert "ok" in seen[0] and set(seen[0]) - {"ok"}


def test_what_is_not_faulted_reaches_the_emulator_unchanged(emulator: Emulator) -> None:
    with FaultProxy(emulator.endpoint_url, FaultPlan(1.0, seed=1, services=["dynamodb"])) as proxy:
        sqs = _client("sqs", proxy.endpoint_url, retries=0)
        s3 = _client("s3", proxy.endpoint_url, retries=0)
        url = sqs.create_queue(QueueName="soak-proxy-test")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        received = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
        s3.create_bucket(Bucket="soak-proxy-test")
        s3.put_object(Bucket="soak-proxy-test", Key="k", Body=b"x" * 70_000)
        head = s3.head_object(Bucket="soak-proxy-test", Key="k")
        body = s3.get_object(Bucket="soak-proxy-test", Key="k")["Body"].read()

    assert [m["Body"] for m in received] == ["hello"]
    assert (head["ContentLength"], body) == (70_000, b"x" * 70_000)
    assert not proxy.injected
