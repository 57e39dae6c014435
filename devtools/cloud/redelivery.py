"""How soon a record the handler failed comes back and reaches its DLQ: locally, and as deployed.

On AWS a record the function reports failed stays hidden for its queue's ``VisibilityTimeout``
(in the template at least 6 x the function timeout, as AWS recommends for SQS event sources), and
the queue's redrive policy moves it to the DLQ after ``maxReceiveCount`` receives (5): a poison
message takes about an hour to get there. Locally that hour is in the way, so the event-source
emulator hides a failed record for :data:`LOCAL_FAILED_VISIBILITY` seconds only (its
``failed_visibility``: ``ChangeMessageVisibility`` right after the invocation): the same five
attempts, within about half a minute.

The queues keep the template's attributes, as deployed. A shorter queue ``VisibilityTimeout``
would also hide a record *while it runs* for less time: a task longer than that would come back
mid-run, be answered "running elsewhere" by its claim and count receives toward the DLQ while it
runs, and a ``celery worker`` beside ``lambda up`` would see the same. Only the failed records'
wait differs, and the number of attempts stays the template's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from devtools.cloud.deploy import EventSource

__all__ = ["LOCAL_FAILED_VISIBILITY", "Redelivery", "deployed_redelivery", "redelivery_note"]

LOCAL_FAILED_VISIBILITY: Final = 5
"""Seconds a failed record stays hidden under ``lambda up`` and ``lambda consume``."""


@dataclass(frozen=True, slots=True)
class Redelivery:
    """A queue's redelivery: seconds a failed record stays hidden, receives before its DLQ (None:
    no redrive policy, it never moves)."""

    hidden: int
    max_receives: int | None

    def describe(self) -> str:
        """``back after 720 s, in the DLQ after 5 receives (about 60 min)``."""
        back = f"back after {self.hidden} s"
        if self.max_receives is None:
            return f"{back}, no DLQ"
        to_dlq = _about(self.hidden * self.max_receives)
        return f"{back}, in the DLQ after {self.max_receives} receives (about {to_dlq})"


def _about(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


def deployed_redelivery(sqs: Any, sources: Iterable[EventSource]) -> tuple[Redelivery, ...]:
    """Each source queue's ``VisibilityTimeout`` and ``maxReceiveCount`` as deployed, distinct."""
    found = set()
    for url in dict.fromkeys(source.queue_url for source in sources):
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
        )["Attributes"]
        policy = json.loads(attributes.get("RedrivePolicy", "{}"))
        receives = policy.get("maxReceiveCount")
        hidden = int(attributes["VisibilityTimeout"])
        found.add(Redelivery(hidden, None if receives is None else int(receives)))
    return tuple(sorted(found, key=lambda r: (r.hidden, r.max_receives or 0)))


def redelivery_note(deployed: Iterable[Redelivery], failed_visibility: int) -> str:
    """What ``lambda up`` says about failed records here against the deployed stack."""
    deployed = tuple(deployed)
    receives = dict.fromkeys(r.max_receives for r in deployed)
    local = "; ".join(Redelivery(failed_visibility, n).describe() for n in receives)
    remote = "; ".join(r.describe() for r in deployed)
    return (
        f"failed records: {local} here (--failed-visibility); "
        f"the deployed stack keeps the template's: {remote}"
    )
