"""Signed messages on the Lambda path: a message signed by a trusted producer runs; the same
message with its arguments altered is refused as a record failure and nothing runs."""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from infra import aws, runtime
from infra.local.cli import point_app_at
from infra.local.deploy import Deployment, EventSource
from tests.apps import probe
from tests.certs import identity
from tests.invoke import invoke
from tests.sqs_helpers import queue_with_dlq, receive


@pytest.fixture(scope="module")
def signed(
    cloud: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModuleType, EventSource]]:
    directory = tmp_path_factory.mktemp("certs")
    key, cert = identity(directory, "producer")
    name = f"signed-{uuid.uuid4().hex[:8]}"
    queue = queue_with_dlq(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGNED_KEY", str(key))
        patch.setenv("SIGNED_CERT", str(cert))
        patch.setenv("SIGNED_STORE", str(Path(directory) / "*.pem"))
        patch.setenv("CELERY_APP", "tests.apps.signed:app")
        module = importlib.import_module("tests.apps.signed")
        point_app_at(module.app, cloud)
        options = dict(module.app.conf.broker_transport_options)
        options["predefined_queues"] = {name: {"url": queue.url}}
        module.app.conf.update(broker_transport_options=options, task_default_queue=name)
        [celery_source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
        runtime.pipeline.cache_clear()
        yield module, dataclasses.replace(celery_source, queue_url=queue.url, queue_arn=queue.arn)
        runtime.pipeline.cache_clear()
    for url in (queue.url, queue.dlq_url):
        aws.client("sqs").delete_queue(QueueUrl=url)


def _forged(body: str) -> str:
    """The body with the task's argument changed, the signature left as it was."""
    data = json.loads(base64.b64decode(body))
    packed = base64.b64decode(base64.b64decode(data["body"]))
    data["body"] = base64.b64encode(base64.b64encode(packed.replace(b"good", b"evil"))).decode()
    return base64.b64encode(json.dumps(data).encode()).decode()


def test_signed_runs_and_tampered_is_refused(signed: tuple[ModuleType, EventSource]) -> None:
    module, source = signed
    good = f"good-{uuid.uuid4().hex}"
    result = module.record.apply_async((good,))
    [original] = receive(source.queue_url, 1)
    evil = good.replace("good", "evil")
    forged_id = aws.client("sqs").send_message(
        QueueUrl=source.queue_url, MessageBody=_forged(original["Body"])
    )["MessageId"]
    messages = [original, *receive(source.queue_url, 1)]

    failed = invoke(source, messages)

    assert failed == [forged_id]
    assert probe.calls(good) == 1 and probe.calls(evil) == 0
    assert result.get(timeout=10) == good
