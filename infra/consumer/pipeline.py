"""The Lambda consumer pipeline for one SQS record: decode, resolve, gate, claim, run, report.

Each step either lets the record through or ends it in one of two ways the batch processor
understands: return normally (the record is acked: ran, recorded, expired, re-delayed) or raise
(the record is reported in ``batchItemFailures`` and comes back through SQS, finally to the DLQ).
A task that raised is not a pipeline failure: Celery recorded FAILURE and the record is acked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery import states

from infra.consumer.bodies import RecordBodies
from infra.consumer.gate import Delay, Expired, Run, decide
from infra.consumer.handback import Requeuer
from infra.consumer.memory import MemoryGuard, budget_bytes
from infra.consumer.record_metrics import (
    note,
    note_batch,
    note_outcome,
    note_received,
    note_start,
)
from infra.consumer.runner import Outcome, Runner
from infra.consumer.seams import Claims, Pacer
from infra.consumer.settlement import Settlement
from infra.consumer.timelimits import DeadlineReached
from infra.consumer.unknown import tell_unregistered
from infra.consumer.worker_state import redelivered
from infra.core.errors import CeleryLambdaError, MessageDecodeError, StoreError, UnknownTaskError
from infra.core.hooks import Hooks
from infra.core.observability import (
    METRIC_CLAIM_HELD,
    METRIC_DECODE_FAILED,
    METRIC_DEFERRED,
    METRIC_DUPLICATE,
    METRIC_EXPIRED,
    METRIC_MACHINERY_FAILED,
    METRIC_MEMORY_HIGH,
    METRIC_RATE_LIMITED,
    METRIC_REVOKED,
    METRIC_UNKNOWN_TASK,
    MetricUnit,
    logger,
    metrics,
    subsegment,
)
from infra.core.settings import Settings
from infra.core.tracing import record_span
from infra.store.claim_requests import (
    RUN,
    UNRELEASED_STATES,
    Action,
    ClaimRequest,
    Step,
    action_for,
    stamp_ids,
)
from infra.store.ratelimit import interval_of
from infra.wire.offload import PayloadMissing
from infra.wire.protocol import TaskMessage
from infra.wire.timing import aware

__all__ = [
    "SAFETY_MARGIN_SECONDS",
    "Pipeline",
    "RecordClaimedElsewhere",
    "RecordDeferred",
    "RecordRequeued",
    "record_log_keys",
]

SAFETY_MARGIN_SECONDS = 5.0
"""Time kept back from the invocation deadline to report the batch and flush metrics."""
MIN_RUN_SECONDS = 1.0
"""A record is not started with less than this left before the margin."""


class RecordDeferred(CeleryLambdaError):
    """The record was not run (or was interrupted) because the invocation is ending."""


class RecordClaimedElsewhere(CeleryLambdaError):
    """Another consumer holds a live claim on this task id; the record comes back later."""


class RecordRequeued(CeleryLambdaError):
    """The task raised ``Reject(requeue=True)``: the message goes back to SQS, as on a worker."""


@contextmanager
def record_log_keys(record: Mapping[str, Any]) -> Iterator[None]:
    """Every log line while ``record`` is processed names it; the keys go when it is done."""
    attrs = record.get("attributes") or {}
    logger.append_keys(
        message_id=record.get("messageId"), receive_count=attrs.get("ApproximateReceiveCount")
    )
    try:
        yield
    finally:
        logger.remove_keys(["message_id", "receive_count", "task_id", "task_name"])


def _claim_request(message: TaskMessage) -> ClaimRequest:
    return ClaimRequest(message.task_id, message.root_id, message.group, stamp_ids(message.stamps))


def _owner(context: Any) -> str:
    """Who holds a claim: the invocation's request id."""
    return f"lambda:{getattr(context, 'aws_request_id', None) or 'local'}"


def _lease_until(context: Any) -> float:
    """Claims last until the invocation's deadline: after it the holder is surely gone."""
    return time.time() + float(context.get_remaining_time_in_millis()) / 1000


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


@dataclass(slots=True)
class Pipeline:
    """Processes SQS records for one Celery app."""

    app: Any
    runner: Runner
    settings: Settings
    outcomes: Settlement
    """The batch's records and their outcomes, written together when it ends."""
    requeue: Requeuer
    """Hands records back to SQS: not yet due, or without a turn under their rate limit."""
    clock: Callable[[], datetime] = utcnow
    claims: Claims | None = None
    """None: no claims (the app's result backend is not the results table)."""
    limiter: Pacer | None = None
    """Paces tasks with a ``rate_limit`` across consumers; None: rate limits are not enforced."""
    memory: MemoryGuard = field(default_factory=MemoryGuard)
    hooks: Hooks = field(default_factory=Hooks)
    """User components called around each record (:mod:`infra.core.hooks`)."""
    _decoded: dict[str, TaskMessage] = field(default_factory=dict)

    def prepare(self, records: Sequence[Mapping[str, Any]], context: Any) -> None:
        """Decode the batch and claim its runnable tasks in one request, before processing."""
        note_batch(records)
        self.memory.recycle_if_still_over(context)
        self._decoded.clear()
        self.outcomes.open(records)
        if self.claims is None:
            return
        now = self.clock()
        items = []
        for record in records:
            message = self._quiet_decode(record)
            if message is None or message.task_name not in self.app.tasks:
                continue
            if self._interval(message) is not None:
                continue  # claimed when its turn comes, so a record handed back holds no claim
            if isinstance(decide(message, now, self.app.timezone), Run):
                items.append((record["messageId"], _claim_request(message)))
        if items:
            self.claims.prepare(items, _owner(context), _lease_until(context))

    def settle(self) -> list[str]:
        """Write the batch's deferred outcomes; the ids of records whose outcome was not stored."""
        return self.outcomes.settle()

    def _quiet_decode(self, record: Mapping[str, Any]) -> TaskMessage | None:
        """Decode for the batch claim; errors are reported when the record is processed."""
        try:
            message = self._decode_body(record)
        except (CeleryLambdaError, KeyError, TypeError):
            return None
        self._decoded[record["messageId"]] = message
        return message

    def process(self, record: Mapping[str, Any], context: Any) -> Outcome:
        """Run one record through every step; raise to have it reported back to SQS."""
        self.hooks.call("before_record", record, context)
        error: BaseException | None = None
        try:
            return self._process(record, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.hooks.call("after_record", record, error)

    def _process(self, record: Mapping[str, Any], context: Any) -> Outcome:
        try:
            self._check_time(context)
            self._check_memory(context)
            try:
                message = self._decode(record)
            except PayloadMissing as exc:
                return RecordBodies(self.settings).missing(self.app, record, exc.pointer)
            logger.append_keys(task_id=message.task_id, task_name=message.task_name)
            self._resolve(message, record, context)
            note_received(message, record)
            self.hooks.call("before_task", message, record)
            with record_span(record, message.headers, message.task_name, message.task_id) as span:
                outcome = self._gate_and_run(message, record, context)
                span.outcome(outcome.state, outcome.exception)
            self.outcomes.finished(message.task_id, record, outcome)
            self.hooks.call("on_outcome", message, outcome)
            return outcome
        except CeleryLambdaError:
            raise  # already logged with its reason where it was raised
        except Exception:
            metrics.add_metric(name=METRIC_MACHINERY_FAILED, unit=MetricUnit.Count, value=1)
            logger.exception("record failed in the consumer machinery; it goes back to SQS")
            raise

    def _remaining(self, context: Any) -> float:
        return float(context.get_remaining_time_in_millis()) / 1000 - SAFETY_MARGIN_SECONDS

    def _check_time(self, context: Any) -> None:
        if self._remaining(context) < MIN_RUN_SECONDS:
            metrics.add_metric(name=METRIC_DEFERRED, unit=MetricUnit.Count, value=1)
            logger.warning("invocation deadline near: record not started, returned to SQS")
            raise RecordDeferred("invocation deadline near; record not started")

    def _check_memory(self, context: Any) -> None:
        used = self.memory.over_budget(context)
        if used is None:
            return
        metrics.add_metric(name=METRIC_MEMORY_HIGH, unit=MetricUnit.Count, value=1)
        grower, grown = self.memory.grown_most or ("unknown", 0)
        logger.warning(
            "resident memory over budget: record not started, returned to SQS",
            resident_mb=used // 2**20,
            budget_mb=(budget_bytes(context) or 0) // 2**20,
            grown_most_by=grower,
            grown_mb=grown // 2**20,
        )
        raise RecordDeferred(f"resident memory {used // 2**20} MiB is over budget")

    def _decode(self, record: Mapping[str, Any]) -> TaskMessage:
        cached = self._decoded.pop(record["messageId"], None)
        if cached is not None:
            return cached
        try:
            return self._decode_body(record)
        except MessageDecodeError as exc:
            metrics.add_metric(name=METRIC_DECODE_FAILED, unit=MetricUnit.Count, value=1)
            logger.error("record is not a task message we may run", reason=exc.reason)
            self.hooks.call("on_decode_error", record, exc)
            raise

    def _decode_body(self, record: Mapping[str, Any]) -> TaskMessage:
        return RecordBodies(self.settings).decode(record, self.app.conf.accept_content)

    def _resolve(self, message: TaskMessage, record: Mapping[str, Any], context: Any) -> None:
        try:
            self.runner.task(message)
        except UnknownTaskError as exc:
            metrics.add_metric(name=METRIC_UNKNOWN_TASK, unit=MetricUnit.Count, value=1)
            logger.error("task is not registered in the app", task_name=message.task_name)
            tell_unregistered(self.app, message, record, self.runner.hostname, _owner(context))
            self.hooks.call("on_decode_error", record, exc)
            raise

    def _gate_and_run(
        self, message: TaskMessage, record: Mapping[str, Any], context: Any
    ) -> Outcome:
        now = self.clock()
        verdict = decide(message, now, self.app.timezone)
        if isinstance(verdict, Expired):
            note(message, METRIC_EXPIRED)
            logger.info("task expired before it ran: REVOKED", expires=str(message.expires))
            return self.runner.expire(message)
        if isinstance(verdict, Delay):
            eta = aware(message.eta, self.app.timezone)
            assert eta is not None  # a Delay verdict has an ETA
            wait = (eta - now).total_seconds()
            self.requeue.hand_back(message, record, wait, "task not yet due")
            return Outcome(states.PENDING, 0.0)
        return self._run(message, record, context)

    def _release(self, message: TaskMessage, context: Any) -> None:
        """Give up the claim of an attempt that ended without a state write (Ignore, Reject).

        A failure is logged, not raised: the task already ended, and the lease ends anyway at
        this invocation's deadline.
        """
        if self.claims is None:
            return
        try:
            self.claims.release(message.task_id, _owner(context))
        except StoreError:
            logger.warning("releasing the claim failed; it ends at this invocation's deadline")

    def _claim(self, message: TaskMessage, record: Mapping[str, Any], context: Any) -> Action:
        """What the task's claim says to do (run it when there are no claims)."""
        if self.claims is None:
            return RUN
        try:
            claim = self.claims.outcome(
                record["messageId"], _claim_request(message), _owner(context), _lease_until(context)
            )
        except StoreError:
            metrics.add_metric(name=METRIC_MACHINERY_FAILED, unit=MetricUnit.Count, value=1)
            logger.exception("claiming the task failed; the record goes back to SQS")
            raise
        return action_for(claim)

    def _claimed_or_settled(
        self, message: TaskMessage, record: Mapping[str, Any], context: Any
    ) -> Outcome | None:
        """None when this consumer may run the task; otherwise how the record was settled."""
        waiting = self.outcomes.pending(message.task_id)
        if waiting is not None:  # ran earlier in this batch; its outcome is not written yet
            return self._settle(message, Action(Step.ACK_DUPLICATE, state=waiting))
        return self._settle(message, self._claim(message, record, context))

    def _settle(self, message: TaskMessage, action: Action) -> Outcome | None:
        """Act on a claim's answer: None to run the task, else the record's outcome.

        Raises:
            RecordClaimedElsewhere: another consumer runs it; the record comes back later.
        """
        if action.step is Step.ACK_DUPLICATE:
            note(message, METRIC_DUPLICATE)
            logger.info("task already finished: acked without running", state=action.state)
            return Outcome(str(action.state), 0.0, "duplicate")
        if action.step is Step.HAND_BACK:
            note(message, METRIC_CLAIM_HELD)
            logger.info("task is running elsewhere: record comes back later", owner=action.by)
            raise RecordClaimedElsewhere(f"claimed by {action.by} until {action.until}")
        if action.step is Step.RECORD_REVOKED:
            note(message, METRIC_REVOKED)
            logger.info("task revoked: REVOKED, not run", revoked_id=action.by)
            return self.runner.revoke(message, "revoked")
        return None

    def _interval(self, message: TaskMessage) -> float | None:
        """Seconds between two starts of the message's task, when it has a rate limit we pace."""
        if self.limiter is None:
            return None
        return interval_of(self.app.tasks[message.task_name].rate_limit)

    def _paced(self, message: TaskMessage, record: Mapping[str, Any], context: Any) -> bool:
        """True when the task may start now; False when its record was handed back to wait."""
        interval = self._interval(message)
        if interval is None or self.limiter is None:
            return True
        budget = self._remaining(context) - MIN_RUN_SECONDS
        try:
            back = self.limiter.take_turn(message.task_name, interval, budget)
        except StoreError:
            metrics.add_metric(name=METRIC_MACHINERY_FAILED, unit=MetricUnit.Count, value=1)
            logger.exception("the rate limit could not be checked; the record goes back to SQS")
            raise
        if back is None:
            return True
        note(message, METRIC_RATE_LIMITED)
        self.requeue.hand_back(message, record, back.seconds, "task over its rate limit")
        return False

    def _run(self, message: TaskMessage, record: Mapping[str, Any], context: Any) -> Outcome:
        if not self._paced(message, record, context):
            return Outcome(states.PENDING, 0.0)
        settled = self._claimed_or_settled(message, record, context)
        if settled is not None:
            return settled
        note_start(message, record, self.app.timezone)
        self.outcomes.started(message.task_id, record["messageId"])
        before = self.memory.measure()
        try:
            with subsegment(f"## {message.task_name}"):
                outcome = self.runner.run(
                    redelivered(message, record),
                    deadline=self._remaining(context),
                    consumer=_owner(context),
                    results=self.outcomes.deferring,
                )
        except DeadlineReached as exc:
            metrics.add_metric(name=METRIC_DEFERRED, unit=MetricUnit.Count, value=1)
            logger.warning("task interrupted by the invocation deadline: returned to SQS")
            raise RecordDeferred("interrupted by the invocation deadline") from exc
        finally:
            self.memory.observe(message.task_name, before)
        note_outcome(message, outcome)
        if outcome.state in UNRELEASED_STATES:
            self._release(message, context)
        if outcome.requeue:
            raise RecordRequeued("the task raised Reject(requeue=True)")
        return outcome
