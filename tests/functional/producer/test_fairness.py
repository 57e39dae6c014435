"""Tenant fairness (SQS fair queues) against moto in server mode.

With the ``tenant_header`` transport option (``CELERY_LAMBDA_TENANT_HEADER``), a task published
with that header to a standard queue carries the header's value as its ``MessageGroupId``;
``apply_async(MessageGroupId=…)`` does too. Tasks of ``tests.apps.probe`` are published with real
``apply_async`` and ``group``; the raw messages are read back with ReceiveMessage and then
consumed by the Lambda handler (through a real Lambda SQS event) and by kombu's own SQS transport.

moto's server keeps a ``MessageGroupId`` sent to a standard queue and returns it among the
system attributes, without FIFO semantics (messages of one group are received together).

A task handed back for a later turn keeps its tenant, on the Lambda path and on a real worker.
A re-send for an ETA over 15 minutes stays invisible for 15 minutes, so what moto holds is read
from its ``/moto-api/data.json`` (every message it keeps, delayed ones too).
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import group
from kombu import Connection
from kombu.transport import SQS

from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.emulator import request_counts
from devtools.cloud.lambda_events import build_event
from devtools.cloud.session import point_app_at
from infra.consumer import runtime
from infra.core import aws
from infra.core.errors import PublishError
from infra.core.settings import Settings
from tests.apps import probe
from tests.invoke import invoke
from tests.sqs_helpers import counts, queue_arn, queue_with_dlq, receive
from tests.workers import celery_worker

QUEUE = "fairness"


def _retarget(options: dict[str, Any]) -> None:
    """New transport options for the probe app; pooled connections keep the old ones."""
    probe.app.conf.broker_transport_options = options
    if probe.app._pool is not None:
        probe.app._pool.force_close_all()
        probe.app._pool = None
        probe.app.amqp._producer_pool = None


@pytest.fixture
def queue_url(cloud: Deployment) -> Iterator[str]:
    """A fresh standard queue routed to as ``fairness``, with ``tenant`` as the tenant header."""
    point_app_at(probe.app, cloud)
    url = queue_with_dlq(f"fairness-{uuid.uuid4().hex[:8]}").url
    options = dict(probe.app.conf.broker_transport_options)
    predefined = {**options.get("predefined_queues", {}), QUEUE: {"url": url}}
    _retarget({**options, "predefined_queues": predefined, "tenant_header": "tenant"})
    try:
        yield url
    finally:
        _retarget(options)


@pytest.fixture
def lambda_source(
    queue_url: str, cloud: Deployment, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EventSource]:
    """The event source of the handler serving the probe app from the ``fairness`` queue."""
    monkeypatch.setenv("CELERY_APP", "tests.apps.probe:app")
    runtime.pipeline.cache_clear()
    try:
        yield dataclasses.replace(
            cloud.event_sources[0], queue_url=queue_url, queue_arn=queue_arn(queue_url)
        )
    finally:
        runtime.pipeline.cache_clear()


def _delayed_in_group(group_id: str) -> int:
    """How many messages moto keeps delayed (not receivable yet) with ``group_id``."""
    endpoint = Settings.from_env().endpoint_url or ""
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=30) as response:
        messages = json.load(response)["sqs"]["Message"]
    return sum(1 for m in messages if m.get("group_id") == group_id and m.get("delayed"))


def _groups(messages: list[dict[str, Any]]) -> list[str | None]:
    return [m["Attributes"].get("MessageGroupId") for m in messages]


def _requests() -> dict[str, int]:
    return request_counts(Settings.from_env().endpoint_url or "")


def test_the_tenant_header_becomes_the_group_id(queue_url: str) -> None:
    probe.record.apply_async(("m", 1), queue=QUEUE, headers={"tenant": "acme"})

    [message] = receive(queue_url, 1)

    assert message["Attributes"]["MessageGroupId"] == "acme"


def test_an_explicit_group_id_and_a_message_without_tenant(queue_url: str) -> None:
    probe.record.apply_async(("m", 1), queue=QUEUE, MessageGroupId="tenant-7")
    probe.record.apply_async(("m", 2), queue=QUEUE)

    messages = receive(queue_url, 2)

    assert sorted(_groups(messages), key=str) == [None, "tenant-7"]


def test_a_group_sends_each_tenant_in_one_send_message_batch(queue_url: str) -> None:
    before = _requests()

    group(
        probe.record.s("m", i).set(queue=QUEUE, headers={"tenant": tenant})
        for i, tenant in enumerate(["a", "b", "a"])
    ).apply_async()

    after = _requests()
    assert after.get("sqs:SendMessageBatch", 0) - before.get("sqs:SendMessageBatch", 0) == 1
    assert after.get("sqs:SendMessage", 0) == before.get("sqs:SendMessage", 0)
    assert sorted(_groups(receive(queue_url, 3)), key=str) == ["a", "a", "b"]


def test_a_tenant_sqs_would_refuse_is_refused_and_nothing_is_sent(queue_url: str) -> None:
    with pytest.raises(PublishError, match=r"probe\.record\[.*tenant header 'tenant' 'Acme Corp'"):
        probe.record.apply_async(("m", 1), queue=QUEUE, headers={"tenant": "Acme Corp"})

    assert counts(queue_url) == (0, 0, 0)


def test_the_lambda_handler_runs_a_tenant_message(
    queue_url: str, cloud: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERY_APP", "tests.apps.probe:app")
    runtime.pipeline.cache_clear()
    marker = uuid.uuid4().hex
    result = probe.record.apply_async((marker, "done"), queue=QUEUE, headers={"tenant": "acme"})
    [message] = receive(queue_url, 1)
    source = dataclasses.replace(
        cloud.event_sources[0], queue_url=queue_url, queue_arn=queue_arn(queue_url)
    )
    [record] = build_event([message], source, cloud.region)["Records"]

    try:
        failed = invoke(source, [message])
    finally:
        runtime.pipeline.cache_clear()

    assert record["attributes"]["MessageGroupId"] == "acme"
    assert failed == []
    assert probe.calls(marker) == 1
    assert probe.app.AsyncResult(result.id).get(timeout=10) == "done"
    assert counts(queue_url) == (0, 0, 0)


def test_kombus_own_sqs_transport_reads_a_tenant_message(queue_url: str, cloud: Deployment) -> None:
    result = probe.record.apply_async(("m", "v"), queue=QUEUE, headers={"tenant": "acme"})
    options = {"region": cloud.region, "predefined_queues": {QUEUE: {"url": queue_url}}}

    with Connection("sqs://", transport_options={**options, "wait_time_seconds": 1}) as stock:
        simple = stock.SimpleQueue(QUEUE)
        assert type(simple.channel) is SQS.Channel  # kombu's, not ours
        message = simple.get(timeout=10)
        args, _kwargs, _embed = message.decode()
        message.ack()
        simple.close()

    assert (message.headers["id"], message.headers["tenant"]) == (result.id, "acme")
    assert args == ["m", "v"]
    assert counts(queue_url) == (0, 0, 0)


def test_moto_keeps_a_group_id_on_a_standard_queue_without_fifo_order(queue_url: str) -> None:
    sqs = aws.client("sqs")
    for body in ("one", "two"):
        sqs.send_message(QueueUrl=queue_url, MessageBody=body, MessageGroupId="g")

    response = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    )

    assert _groups(response["Messages"]) == ["g", "g"]  # a FIFO queue would hand out one


def test_a_task_the_lambda_handler_hands_back_keeps_its_tenant(
    queue_url: str, lambda_source: EventSource
) -> None:
    # DelaySeconds=0: as from a stock producer, so the task arrives before it is due.
    probe.record.apply_async(
        (uuid.uuid4().hex, 1), queue=QUEUE, headers={"tenant": "acme"}, countdown=2, DelaySeconds=0
    )
    [message] = receive(queue_url, 1)

    assert invoke(lambda_source, [message]) == []

    [again] = receive(queue_url, 1)
    assert again["MessageId"] != message["MessageId"]
    assert again["Body"] == message["Body"]
    assert again["Attributes"]["MessageGroupId"] == "acme"


def test_a_task_due_after_15_minutes_keeps_its_tenant_on_the_lambda_path(
    queue_url: str, lambda_source: EventSource
) -> None:
    tenant = f"t-{uuid.uuid4().hex}"
    result = probe.record.apply_async(
        (uuid.uuid4().hex, 1),
        queue=QUEUE,
        headers={"tenant": tenant},
        countdown=1200,
        DelaySeconds=0,
    )
    [message] = receive(queue_url, 1)

    assert invoke(lambda_source, [message]) == []

    assert counts(queue_url) == (0, 0, 1)
    assert _delayed_in_group(tenant) == 1  # the re-send, for its next 15 minutes
    assert probe.app.AsyncResult(result.id).state == "PENDING"


def test_a_task_a_worker_hands_back_keeps_its_tenant(
    queue_url: str, cloud_env: dict[str, str], tmp_path: Path
) -> None:
    tenant = f"t-{uuid.uuid4().hex}"
    queues = {**json.loads(cloud_env.get("CELERY_QUEUE_URLS") or "{}"), QUEUE: queue_url}
    env = {**cloud_env, "CELERY_QUEUE_URLS": json.dumps(queues)}
    env["CELERY_LAMBDA_TENANT_HEADER"] = "tenant"
    args = ["-Q", QUEUE, "--pool=solo", "--hostname", f"fair-{tenant}@%h"]

    with celery_worker("tests.apps.probe", args, env, tmp_path / "worker.log") as log:
        probe.record.apply_async(
            ("m", 1), queue=QUEUE, headers={"tenant": tenant}, countdown=1200, DelaySeconds=0
        )
        deadline = time.monotonic() + 30
        while counts(queue_url) != (0, 0, 1) and time.monotonic() < deadline:
            time.sleep(0.5)

        assert counts(queue_url) == (0, 0, 1), log.read_text()[-3000:]
    assert _delayed_in_group(tenant) == 1
