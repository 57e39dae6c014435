"""One SQS batch's records whose outcomes wait in its result writer (a
:class:`~infra.store.result_batch.ResultBatch`, which the runner names in each task's request).

A record is acked when the handler returns, so a record whose task ran but whose outcome is not
stored yet must not be lost with it: :meth:`Settlement.settle` writes the batch's outcomes before
the handler answers SQS and names the records whose outcome could not be stored (they go back to
SQS; the claim's lease keeps a redelivery from running the task again until it ends). A record's
offloaded body is deleted only once its outcome is stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.consumer.bodies import RecordBodies
from infra.consumer.runner import Outcome
from infra.consumer.seams import OutcomeWriter
from infra.core.observability import METRIC_MACHINERY_FAILED, MetricUnit, logger, metrics
from infra.core.settings import Settings
from infra.wire.requeue import is_fifo

__all__ = ["Settlement"]


@dataclass(slots=True)
class Settlement:
    """The records of the open batch, and the outcomes they wait for."""

    settings: Settings
    results: OutcomeWriter | None = None
    """Writes a batch's outcomes together; None: each outcome is written as its task ends."""
    deferring: OutcomeWriter | None = None
    """Where the open batch's SUCCESS/FAILURE writes go: ``results``, except on FIFO queues."""
    _message_ids: dict[str, str] = field(default_factory=dict)
    """Task id → id of the record that ran it in this batch."""
    _unsettled: list[tuple[str, Mapping[str, Any], Outcome]] = field(default_factory=list)
    """Records whose outcome waits in ``results``: their offloaded bodies are kept until then."""

    def open(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Defer this batch's SUCCESS/FAILURE writes to ``results`` (not on FIFO queues: a failed
        write would report a record whose group's later records already ran)."""
        self._message_ids.clear()
        self._unsettled.clear()
        self.deferring = self.results
        if self.results is not None and records and is_fifo(records[0]):
            self.deferring = None

    def pending(self, task_id: str) -> str | None:
        """The state of ``task_id`` when it ran in this batch and its outcome is not written yet."""
        return self.results.state_of(task_id) if self.results is not None else None

    def started(self, task_id: str, message_id: str) -> None:
        """``task_id`` runs from the record ``message_id``."""
        self._message_ids[task_id] = message_id

    def finished(self, task_id: str, record: Mapping[str, Any], outcome: Outcome) -> None:
        """Delete the record's offloaded body now, or once its task's outcome is written."""
        if self.pending(task_id):
            self._unsettled.append((task_id, record, outcome))
        else:
            RecordBodies(self.settings).settled(record, outcome)

    def settle(self) -> list[str]:
        """Write the batch's deferred outcomes; the ids of records whose outcome was not stored."""
        self.deferring = None
        if self.results is None:
            return []
        failed = self.results.flush()
        unstored = []
        for task_id, reason in failed.items():
            metrics.add_metric(name=METRIC_MACHINERY_FAILED, unit=MetricUnit.Count, value=1)
            logger.error("task outcome not stored: record back to SQS", task_id=task_id, why=reason)
            if task_id in self._message_ids:
                unstored.append(self._message_ids[task_id])
        bodies = RecordBodies(self.settings)
        for task_id, record, outcome in self._unsettled:
            if task_id not in failed:
                bodies.settled(record, outcome)
        self._message_ids.clear()
        self._unsettled.clear()
        return unstored
