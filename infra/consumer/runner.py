"""Run a decoded task message through Celery's own tracer, as a worker's Request does.

The request context is built exactly like ``celery.worker.request.Request`` builds it (headers,
properties, ``delivery_info``, embed), so ``bind=True``/``self.request``, ``update_state``,
``retry``, ``link``/``link_error``, chains, chords, signals and ``Task`` hooks behave as on a
worker. A batch's result writer travels the same way: named in the request, it is handed to the
result backend with every write of the task's outcome (no thread-local state).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from billiard.einfo import ExceptionInfo
from billiard.exceptions import TimeLimitExceeded
from celery import states
from celery._state import _set_task_join_will_block, task_join_will_block
from celery.app.task import Context
from celery.app.trace import build_tracer
from celery.exceptions import Reject
from celery.signals import task_failure, task_revoked
from celery.utils.log import get_logger

from infra.consumer import worker_state
from infra.consumer.seams import OutcomeWriter
from infra.consumer.timelimits import HardTimeLimitReached, time_limits
from infra.core.errors import UnknownTaskError
from infra.core.observability import quiet_celery_task_lines
from infra.store.items import CLAIMED_BY_CONSUMER, CONSUMER_REQUEST_KEY, RESULT_BATCH_KEY
from infra.wire.protocol import TaskMessage

__all__ = ["Outcome", "Runner"]

logger = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a task ended, as the tracer recorded it."""

    state: str
    duration: float
    exception: str | None = None
    requeue: bool = False
    """The task raised ``Reject(requeue=True)``: the message must come back."""
    traceback: str | None = None
    """A FAILURE's traceback, for the outcome line (Celery's own line about it is not written)."""
    result: Any = None
    """What the task returned (SUCCESS), for the outcome line at DEBUG."""


class Runner:
    """Executes task messages for one Celery app; tracers are built once per task."""

    def __init__(self, app: Any, hostname: str) -> None:
        self.app = app
        self.hostname = hostname
        self._tracers: dict[str, Any] = {}
        # Before any tracer is built: Celery decides then whether it logs each success.
        quiet_celery_task_lines()

    def task(self, message: TaskMessage) -> Any:
        """The registered task the message names.

        Raises:
            UnknownTaskError: the app has no task of that name.
        """
        try:
            return self.app.tasks[message.task_name]
        except KeyError:
            raise UnknownTaskError(message.message_id, message.task_name) from None

    def request(
        self,
        message: TaskMessage,
        consumer: str | None = None,
        results: OutcomeWriter | None = None,
    ) -> dict[str, Any]:
        """The request dict a worker's ``Request`` would hand to the tracer.

        ``consumer`` names the invocation running it (recorded with the result); ``results`` is
        the batch its SUCCESS/FAILURE writes go to (None: written as the task ends).
        """
        props = message.properties
        info = props.get("delivery_info") or {}
        request: dict[str, Any] = {
            **message.headers,
            "properties": props,
            "reply_to": props.get("reply_to"),
            "correlation_id": props.get("correlation_id"),
            "hostname": self.hostname,
            "delivery_info": {
                "exchange": info.get("exchange"),
                "routing_key": info.get("routing_key"),
                "priority": props.get("priority"),
                "redelivered": info.get("redelivered", False),
            },
            "args": list(message.args),
            "kwargs": message.kwargs,
            "loglevel": None,
            "logfile": None,
            "is_eager": False,
        }
        request.update(message.embed)
        # Celery reads every key it does not know as a custom header and copies it into the
        # messages the task publishes again (retry, replace): fix the custom headers before our
        # keys join, so a retried task carries no claim, invocation or batch of this run.
        request["headers"] = Context(request).headers or {}
        request[CLAIMED_BY_CONSUMER] = True
        request[CONSUMER_REQUEST_KEY] = consumer
        if results is not None:
            request[RESULT_BATCH_KEY] = results
        return request

    def limits(self, message: TaskMessage) -> tuple[float | None, float | None]:
        """``(soft, hard)``: the message's, else the task's, else the app's, as a worker does."""
        hard, soft = message.timelimit
        task = self.task(message)
        conf = self.app.conf
        soft = soft or task.soft_time_limit or conf.task_soft_time_limit
        hard = hard or task.time_limit or conf.task_time_limit
        return soft, hard

    def run(
        self,
        message: TaskMessage,
        *,
        deadline: float | None = None,
        consumer: str | None = None,
        results: OutcomeWriter | None = None,
    ) -> Outcome:
        """Trace the task; ``deadline`` is seconds until the invocation must stop it, ``results``
        the batch its outcome is written with (see :meth:`request`).

        The task is received, active and ready in ``celery.worker.state`` and announced by
        ``task_received``, as on a worker (:mod:`infra.consumer.worker_state`).

        Raises:
            UnknownTaskError: the task is not registered.
            DeadlineReached: the invocation deadline interrupted the task (retry the record).
            Exception: the result store failed while recording the outcome.
        """
        request = worker_state.received(self, self.task(message), message)
        worker_state.accepted(request)
        outcome: Outcome | None = None
        try:
            outcome = self._trace(message, deadline, consumer, results)
        finally:
            succeeded = outcome is not None and outcome.state == states.SUCCESS
            worker_state.ready(request, succeeded=succeeded)
        return outcome

    def _trace(
        self,
        message: TaskMessage,
        deadline: float | None,
        consumer: str | None,
        results: OutcomeWriter | None,
    ) -> Outcome:
        soft, hard = self.limits(message)
        tracer = self._tracer(message.task_name)
        started = time.monotonic()
        would_block = task_join_will_block()
        # As in a worker: result.get() inside a task raises instead of deadlocking. Only while the
        # task runs, so a process that also publishes (the local emulator, tests) can still wait;
        # and only on the main thread, where an invocation runs on AWS: the flag is process-wide,
        # and a handler in a thread of a test process (devtools.testing) must not make the test's
        # own get() raise.
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            _set_task_join_will_block(True)
        try:
            with time_limits(soft, hard, deadline):
                retval, info, _, _ = tracer(
                    message.task_id,
                    list(message.args),
                    message.kwargs,
                    self.request(message, consumer, results),
                )
        except HardTimeLimitReached as exc:
            duration = time.monotonic() - started
            return self._hard_timeout(message, exc.seconds, duration, results)
        finally:
            if on_main:
                _set_task_join_will_block(would_block)
        duration = time.monotonic() - started
        if info is None:
            return Outcome(states.SUCCESS, duration, result=retval)
        requeue = info.state == states.REJECTED and bool(getattr(info.retval, "requeue", False))
        if info.state == states.REJECTED and not requeue:
            return self._rejected(message, info.retval, duration, results)
        # For a FAILURE the tracer returns the ExceptionInfo it logged (and stored).
        traceback = getattr(retval, "traceback", None) if info.state == states.FAILURE else None
        return Outcome(info.state, duration, type(info.retval).__name__, requeue, traceback)

    def expire(self, message: TaskMessage) -> Outcome:
        """Record REVOKED for an expired message, with the worker's reason and signal."""
        return self.revoke(message, "expired", expired=True)

    def revoke(self, message: TaskMessage, reason: str, *, expired: bool = False) -> Outcome:
        """Record REVOKED without running, as a worker does for a revoked or expired task."""
        task = self.task(message)
        context = Context(self.request(message))
        store = task.store_errors_even_if_ignored or not task.ignore_result
        task.backend.mark_as_revoked(message.task_id, reason, request=context, store_result=store)
        task_revoked.send(
            sender=task, request=context, terminated=False, signum=None, expired=expired
        )
        return Outcome(states.REVOKED, 0.0, reason)

    def _rejected(
        self, message: TaskMessage, exc: Any, duration: float, results: OutcomeWriter | None
    ) -> Outcome:
        """FAILURE for ``Reject(requeue=False)``, as a worker's Request records it: the message is
        gone, so the task would otherwise stay PENDING forever (Celery's issue #4222)."""
        task = self.task(message)
        context = Context(self.request(message, results=results))
        store = task.store_errors_even_if_ignored or not task.ignore_result
        task.backend.mark_as_failure(message.task_id, exc, request=context, store_result=store)
        try:
            raise exc
        except Reject:
            einfo = ExceptionInfo()
        task_failure.send(
            sender=task,
            task_id=message.task_id,
            exception=exc,
            args=list(message.args),
            kwargs=message.kwargs,
            traceback=einfo.traceback,
            einfo=einfo,
        )
        return Outcome(states.FAILURE, duration, "Reject")

    def _hard_timeout(
        self, message: TaskMessage, seconds: float, duration: float, results: OutcomeWriter | None
    ) -> Outcome:
        """FAILURE with TimeLimitExceeded, hooks and signal, as a worker's parent records it."""
        task = self.task(message)
        context = Context(self.request(message, results=results))
        exc = TimeLimitExceeded(seconds)
        logger.error(
            "Hard time limit (%ss) exceeded for %s[%s]", seconds, task.name, message.task_id
        )
        task.backend.mark_as_failure(message.task_id, exc, request=context)
        try:
            raise exc
        except TimeLimitExceeded:
            einfo = ExceptionInfo()
        args, kwargs = list(message.args), message.kwargs
        task.on_failure(exc, message.task_id, args, kwargs, einfo)
        task.after_return(states.FAILURE, exc, message.task_id, args, kwargs, None)
        task_failure.send(
            sender=task,
            task_id=message.task_id,
            exception=exc,
            args=args,
            kwargs=kwargs,
            traceback=None,
            einfo=einfo,
        )
        return Outcome(states.FAILURE, duration, "TimeLimitExceeded")

    def _tracer(self, name: str) -> Any:
        if name not in self._tracers:
            self._tracers[name] = build_tracer(
                name, self.app.tasks[name], app=self.app, hostname=self.hostname
            )
        return self._tracers[name]
