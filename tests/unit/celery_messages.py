"""Real Celery task messages, exactly as kombu's SQS transport sends them, for protocol tests.

Tasks are published with plain ``apply_async`` through kombu's own SQS transport (``sqs://`` with
``predefined_queues``, so no ListQueues/CreateQueue). The only stand-in is the boto3 SQS client:
:class:`RecordingTransport` hands kombu a :class:`RecordingSqsClient` that records
``SendMessage`` instead of making a request. The recorded ``MessageBody`` is therefore what
``kombu.transport.SQS.Channel._put`` gives boto3, outer base64 layer (or not) included.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu.transport import SQS

__all__ = [
    "QUEUE",
    "QUEUE_URL",
    "UNPICKLED",
    "RecordingSqsClient",
    "RecordingTransport",
    "Tripwire",
    "capture",
    "envelope_of",
    "make_app",
    "publish",
    "rewrite_envelope",
    "sqs_body",
    "with_task_body",
]

QUEUE = "celery-test"
QUEUE_URL = f"https://sqs.us-east-1.amazonaws.com/000000000000/{QUEUE}"
TASKS = ("t.add", "t.on_error", "t.echo")

UNPICKLED: list[str] = []
"""Side effects of unpickling a :class:`Tripwire`; stays empty as long as pickle never runs."""


def _record_unpickle(tag: str) -> str:
    """Called by pickle when it rebuilds a Tripwire: leaves a trace, returns the tag."""
    UNPICKLED.append(tag)
    return tag


class Tripwire:
    """A task argument whose unpickling is observable (pickle calls ``_record_unpickle``)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __reduce__(self) -> tuple[Callable[[str], str], tuple[str]]:
        return (_record_unpickle, (self.tag,))


class RecordingSqsClient:
    """The two SQS calls kombu makes while publishing to a predefined queue, answered in memory."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        """kombu sizes the queue when Celery declares it."""
        return {"Attributes": {"ApproximateNumberOfMessages": "0"}}

    def send_message(self, **request: Any) -> dict[str, Any]:
        """Record the SendMessage request instead of sending it."""
        self.sent.append(request)
        return {"MessageId": str(uuid.uuid4())}


class _RecordingChannel(SQS.Channel):
    """kombu's SQS channel, unchanged except for where its boto3 client comes from."""

    def sqs(self, queue: str | None = None) -> RecordingSqsClient:
        client: RecordingSqsClient = self.transport_options["recording_client"]
        return client


class RecordingTransport(SQS.Transport):
    """kombu's SQS transport with the recording client (``transport_options.recording_client``)."""

    Channel = _RecordingChannel


def make_app(
    *,
    protocol: int = 2,
    serializer: str = "json",
    compression: str | None = None,
    base64_envelope: bool = True,
    **conf: Any,
) -> Celery:
    """A Celery app publishing through kombu's SQS transport, configured for one wire variant."""
    app = Celery("celery_messages", broker="sqs://", set_as_current=False)
    app.conf.update(
        broker_transport=RecordingTransport,
        task_protocol=protocol,
        task_serializer=serializer,
        task_compression=compression,
        task_default_queue=QUEUE,
        broker_transport_options={
            "region": "us-east-1",
            "predefined_queues": {QUEUE: {"url": QUEUE_URL}},
            "sqs_base64_encoding": base64_envelope,
            "recording_client": RecordingSqsClient(),
        },
        **conf,
    )
    for name in TASKS:
        app.task(name=name)(_echo)
    return app


def _echo(*args: Any, **kwargs: Any) -> Any:
    """Body of every test task; never runs here, only its signature matters to apply_async."""
    return args, kwargs


def capture(app: Celery, send: Callable[[], object]) -> list[str]:
    """Run ``send()`` (any publishing code) with ``app``; the MessageBody of each SendMessage."""
    client: RecordingSqsClient = app.conf.broker_transport_options["recording_client"]
    client.sent.clear()
    try:
        send()
    finally:
        app.close()
    assert all(request["QueueUrl"] == QUEUE_URL for request in client.sent)
    return [request["MessageBody"] for request in client.sent]


def sqs_body(app: Celery, task_name: str = "t.add", *args: Any, **kwargs: Any) -> str:
    """``app.tasks[task_name].apply_async(*args, **kwargs)``; the SQS MessageBody it sent."""
    (body,) = capture(app, lambda: app.tasks[task_name].apply_async(*args, **kwargs))
    return body


def publish(
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    protocol: int = 2,
    serializer: str = "json",
    compression: str | None = None,
    base64_envelope: bool = True,
    conf: dict[str, Any] | None = None,
    **options: Any,
) -> str:
    """Publish ``t.add`` with one wire variant and ``apply_async`` options; the SQS body."""
    app = make_app(
        protocol=protocol,
        serializer=serializer,
        compression=compression,
        base64_envelope=base64_envelope,
        **(conf or {}),
    )
    return sqs_body(app, "t.add", args, kwargs, **options)


def envelope_of(body: str) -> dict[str, Any]:
    """The kombu envelope inside an SQS body (plain json: tests look at the wire as it is)."""
    text = body if body.lstrip().startswith("{") else base64.b64decode(body).decode()
    envelope: dict[str, Any] = json.loads(text)
    return envelope


def rewrite_envelope(body: str, change: Callable[[dict[str, Any]], object]) -> str:
    """Apply ``change`` to the envelope of a real body and re-wrap it the same way."""
    envelope = envelope_of(body)
    change(envelope)
    text = json.dumps(envelope)
    if body.lstrip().startswith("{"):
        return text
    return base64.b64encode(text.encode()).decode()


def with_task_body(body: str, payload: object) -> str:
    """A real body whose task body (inside the envelope) is replaced by ``payload`` as JSON."""
    encoded = base64.b64encode(json.dumps(payload).encode()).decode()

    def change(envelope: dict[str, Any]) -> None:
        envelope["body"] = encoded
        envelope["headers"].pop("compression", None)

    return rewrite_envelope(body, change)
