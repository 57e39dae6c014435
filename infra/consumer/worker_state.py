"""A worker's bookkeeping of each task the Lambda path runs, done the way Celery's worker does it.

A worker turns each message into a ``celery.worker.request.Request``, sends ``task_received``
with it (``celery.worker.strategy``) and keeps ``celery.worker.state`` current: the request is
reserved, then active and counted in ``total_count`` while it runs, then ready (its id in
``successful_requests`` when it succeeded). Code that reads them — a ``task_received`` receiver
that checks stamps or ``replaced_task_nesting``, a test waiting for an id in
``successful_requests`` — sees the same on both consumers. The Request is built from the already
decoded message (Celery's ``decoded=True`` path): nothing is decoded twice. The message's
``delivery_info`` says ``redelivered`` as a broker's does (from SQS's receive count).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from celery.signals import task_received
from celery.worker import state
from celery.worker.request import Request
from kombu.message import Message

from infra.wire.protocol import TaskMessage

__all__ = ["accepted", "ready", "received", "redelivered", "worker_request"]


def redelivered(message: TaskMessage, record: Mapping[str, Any]) -> TaskMessage:
    """``message`` with AMQP's ``delivery_info["redelivered"]`` True from the record's second
    receive on: SQS's ``ApproximateReceiveCount`` says what the flag says on an AMQP broker (the
    message was delivered before), which a task reads to act differently the second time."""
    attributes = record.get("attributes") or {}
    info = message.properties.get("delivery_info") or {}
    if info.get("redelivered") or int(attributes.get("ApproximateReceiveCount") or 1) < 2:
        return message
    properties = {**message.properties, "delivery_info": {**info, "redelivered": True}}
    return dataclasses.replace(message, properties=properties)


def worker_request(app: Any, task: Any, message: TaskMessage, hostname: str) -> Request:
    """The Request a worker's strategy would build for ``message``."""
    delivery = Message(  # type: ignore[no-untyped-call]
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_info=message.properties.get("delivery_info") or {},
        properties=message.properties,
        headers=message.headers,
    )
    body = (list(message.args), message.kwargs, message.embed)
    return Request(
        delivery,
        app=app,
        hostname=hostname,
        task=task,
        body=body,
        headers=message.headers,
        decoded=True,
        utc=message.headers.get("utc", True),
    )


def received(consumer: Any, task: Any, message: TaskMessage) -> Request:
    """Celery's arrival of a request: ``task_received`` sent by ``consumer`` (what has the app and
    the hostname), then the request reserved in ``celery.worker.state``."""
    request = worker_request(consumer.app, task, message, consumer.hostname)
    task_received.send(sender=consumer, request=request)
    state.task_reserved(request)
    return request


def accepted(request: Request) -> None:
    """The request starts: active and counted, as a worker's pool accepting it."""
    state.task_accepted(request)


def ready(request: Request, *, succeeded: bool) -> None:
    """The request ended (its id kept among the successful ones if it succeeded)."""
    state.task_ready(request, successful=succeeded)
