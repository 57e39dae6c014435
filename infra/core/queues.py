"""SQS queue identities: a queue's name from its name, URL or ARN, and whether it is FIFO.

Both consumers, the producer and the settings ask "is this queue FIFO" of whatever they hold (a
Celery routing key, a queue URL, an event source ARN); the answer is the queue name's suffix
(https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-queues.html:
"The name of a FIFO queue must end with the .fifo suffix").
"""

from __future__ import annotations

from typing import Final

__all__ = ["FIFO_SUFFIX", "is_fifo_queue", "queue_name"]

FIFO_SUFFIX: Final = ".fifo"


def queue_name(ref: str) -> str:
    """The queue name in a name, a URL (``.../<account>/<name>``) or an ARN (``...:<name>``)."""
    return ref.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def is_fifo_queue(ref: str) -> bool:
    """Whether the queue named, located (URL) or identified (ARN) by ``ref`` is a FIFO queue."""
    return queue_name(ref).endswith(FIFO_SUFFIX)
