"""Tenant fairness end to end: tasks with a tenant's ``MessageGroupId`` run on a real worker.

A producer app configured like ``tasks.app`` with ``tenant`` as its tenant header publishes
``tasks.add`` to a fresh standard queue (single ``apply_async`` and a batched ``group``); the raw
messages are checked for their ``MessageGroupId`` and made visible again, then a real
``celery -A tasks worker`` serving only that queue runs them.

On LocalStack (``localstack-core`` 2026.3.0) the same publish keeps its ``MessageGroupId`` on a
standard queue, and LocalStack refuses exactly the group ids our publish check refuses.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from celery import Celery, group

import infra
from devtools.cloud.deploy import Deployment
from devtools.cloud.emulator import LOCAL_CREDENTIALS
from devtools.cloud.localstack import LocalStack
from devtools.cloud.session import point_app_at
from infra.core import aws
from infra.producer.publish import MESSAGE_GROUP_ID_PATTERN
from infra.producer.transport import TRANSPORT
from tests.sqs_helpers import queue_with_dlq, receive
from tests.workers import celery_worker

pytestmark = pytest.mark.integration

QUEUE = "fairness"

app = Celery("fairness-producer", set_as_current=False)
app.config_from_object("tasks.celeryconfig")
infra.configure(app)


def _visible_again(url: str, messages: list[dict[str, Any]]) -> None:
    aws.client("sqs").change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ],
    )


def test_a_celery_worker_runs_each_tenants_tasks(
    cloud: Deployment, cloud_env: dict[str, str], tmp_path: Path
) -> None:
    url = queue_with_dlq(f"fairness-{uuid.uuid4().hex[:8]}").url
    point_app_at(app, cloud)
    options = dict(app.conf.broker_transport_options)
    predefined = {**options.get("predefined_queues", {}), QUEUE: {"url": url}}
    app.conf.broker_transport_options = {
        **options,
        "predefined_queues": predefined,
        "tenant_header": "tenant",
    }
    add = app.signature("tasks.add", queue=QUEUE)

    results = [
        add.clone((1, 2)).apply_async(headers={"tenant": "acme"}),
        add.clone((3, 4)).apply_async(MessageGroupId="tenant-7"),
        *group(add.clone((i, i), headers={"tenant": "globex"}) for i in range(3)).apply_async(),
    ]

    messages = receive(url, 5)
    groups = sorted(m["Attributes"].get("MessageGroupId") for m in messages)
    assert groups == ["acme", "globex", "globex", "globex", "tenant-7"]
    _visible_again(url, messages)

    queue_urls = {**json.loads(cloud_env.get("CELERY_QUEUE_URLS") or "{}"), QUEUE: url}
    env = {**cloud_env, "CELERY_QUEUE_URLS": json.dumps(queue_urls)}
    args = ["-Q", QUEUE, "--concurrency=1", "--hostname", f"fairness-{uuid.uuid4().hex[:6]}@%h"]
    with celery_worker("tasks", args, env, tmp_path / "worker.log"):
        assert [r.get(timeout=60) for r in results] == [3, 7, 0, 2, 4]


def test_localstack_keeps_the_group_id_and_refuses_what_we_refuse(
    localstack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery prefers it to broker_url
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=localstack.endpoint_url)
    url = sqs.create_queue(QueueName=f"fairness-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    producer = Celery("fairness-localstack", set_as_current=False)
    producer.conf.update(
        broker_url=f"sqs://{localstack.host}:{localstack.port}",
        broker_transport=TRANSPORT,
        broker_transport_options={
            "region": "us-east-1",
            "is_secure": False,
            "predefined_queues": {QUEUE: {"url": url}},
            "tenant_header": "tenant",
        },
    )
    add = producer.signature("tasks.add", queue=QUEUE)

    add.clone((1, 2)).apply_async(headers={"tenant": "acme"})
    group(add.clone((i, i), headers={"tenant": "globex"}) for i in range(2)).apply_async()

    received = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    )["Messages"]
    assert sorted(m["Attributes"]["MessageGroupId"] for m in received) == [
        "acme",
        "globex",
        "globex",
    ]
    candidates = ["t-1", "a" * 128, "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "a b", "a" * 129, "café"]
    for value in candidates:
        try:
            sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId=value)
        except ClientError:
            accepted = False
        else:
            accepted = True
        assert accepted == bool(MESSAGE_GROUP_ID_PATTERN.fullmatch(value)), value
