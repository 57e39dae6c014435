"""One signed-message case, run by test_signed_messages.py in a fresh interpreter.

Publishes a signed ``signed.record`` task, forges a copy with changed arguments, invokes the
handler with both records and prints what happened as JSON. Celery's ``setup_security`` changes
kombu's serializer registry for the whole process, so the case runs where nothing else has.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import sys
import uuid

from devtools.cloud.deploy import EventSource
from infra.core import aws
from tests.apps import probe, signed
from tests.invoke import invoke
from tests.sqs_helpers import queue_with_dlq, receive


def forged(body: str) -> str:
    """The body with the task's argument changed, the signature left as it was."""
    data = json.loads(base64.b64decode(body))
    packed = base64.b64decode(base64.b64decode(data["body"]))
    data["body"] = base64.b64encode(base64.b64encode(packed.replace(b"good", b"evil"))).decode()
    return base64.b64encode(json.dumps(data).encode()).decode()


def main() -> None:
    source = EventSource(**json.loads(sys.argv[1]))
    name = f"signed-{uuid.uuid4().hex[:8]}"
    queue = queue_with_dlq(name)
    options = dict(signed.app.conf.broker_transport_options)
    options["predefined_queues"] = {name: {"url": queue.url}}
    signed.app.conf.update(broker_transport_options=options, task_default_queue=name)
    source = dataclasses.replace(source, queue_url=queue.url, queue_arn=queue.arn)
    good = f"good-{uuid.uuid4().hex}"
    result = signed.record.apply_async((good,))
    [original] = receive(queue.url, 1)
    forged_id = aws.client("sqs").send_message(
        QueueUrl=queue.url, MessageBody=forged(original["Body"])
    )["MessageId"]
    failed = invoke(source, [original, *receive(queue.url, 1)])
    print(
        json.dumps(
            {
                "failed": failed,
                "forged_id": forged_id,
                "good_calls": probe.calls(good),
                "evil_calls": probe.calls(good.replace("good", "evil")),
                "result": result.get(timeout=10),
                "good": good,
                "app": os.environ["CELERY_APP"],
            }
        )
    )


if __name__ == "__main__":
    main()
