"""Invoking ``handlers.sqs.handler`` the way the SQS event source mapping does, from a test."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

from devtools.cloud.deploy import EventSource
from devtools.cloud.lambda_events import LambdaContext, build_event, delete_requests, make_context
from handlers.sqs import handler
from infra.core import aws

__all__ = ["context_with", "invoke"]


def invoke(
    source: EventSource,
    messages: Sequence[dict[str, Any]],
    context: LambdaContext | None = None,
) -> list[str]:
    """Invoke the handler with the messages as one event; delete what succeeded; failed ids."""
    event = build_event(messages, source, source.queue_arn.split(":")[3])
    response = handler(event, context or make_context(source))
    json.dumps(response)  # the runtime serialises the response
    failed = [item["itemIdentifier"] for item in response["batchItemFailures"]]
    done = [m for m in messages if m["MessageId"] not in failed]
    for entries in delete_requests(done):
        aws.client("sqs").delete_message_batch(QueueUrl=source.queue_url, Entries=entries)
    return failed


def context_with(source: EventSource, seconds_left: float) -> LambdaContext:
    """An invocation context whose deadline is ``seconds_left`` from now."""
    deadline_ms = int((time.time() + seconds_left) * 1000)
    return dataclasses.replace(make_context(source), deadline_ms=deadline_ms)
