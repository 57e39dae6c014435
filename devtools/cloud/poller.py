"""One SQS event source mapping played locally: what AWS Lambda's does for one queue.

An :class:`EventSourcePoller` long-polls one queue, gathers a batch (batch size, batching window,
6 MB payload), builds the Lambda SQS event, calls the handler with a context whose deadline is the
function's timeout, and deletes only the records that succeeded; SQS visibility and redrive do the
rest. See https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html. The
handler is found by the name the template gives it (:func:`handler_from_source`).

Running several pollers, in threads or processes, is :mod:`devtools.cloud.event_source`'s.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError

from devtools.cloud.deploy import EventSource
from devtools.cloud.lambda_events import (
    Clock,
    build_event,
    build_record,
    delete_requests,
    make_context,
    parse_batch_response,
    visibility_requests,
)
from infra.core import aws
from infra.core.errors import ConfigurationError
from infra.core.limits import (
    LAMBDA_MAX_SYNC_PAYLOAD_BYTES,
    SQS_MAX_BATCH_ENTRIES,
    SQS_MAX_VISIBILITY_SECONDS,
    SQS_MAX_WAIT_TIME_SECONDS,
)
from infra.core.settings import Settings

__all__ = [
    "Answer",
    "BatchOutcome",
    "ConsumeStats",
    "EventSourcePoller",
    "Handler",
    "Invoker",
    "STOP_CHECK_SECONDS",
    "StopSignal",
    "handler_from_source",
    "resolve_handler",
]

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
Answer = tuple[tuple[str, ...], str | None]
"""What an invocation leaves: the ids of the records to leave in the queue, the error if any."""
Invoker = Callable[[Callable[[], Answer]], Answer]
"""Runs an invocation somewhere (in this thread, or in the thread serving the environment)."""
STOP_CHECK_SECONDS = 1
"""Longest poll of a run that can be stopped. A long poll cannot be cut short, and one left
behind goes on receiving on the server (moto's loop, as SQS's) after its client is gone: messages
published meanwhile vanish for the visibility timeout. So a stoppable run polls a second at a
time and checks its stop between polls (idle, one ReceiveMessage a second per poller, locally)."""
_PAYLOAD_BUDGET = LAMBDA_MAX_SYNC_PAYLOAD_BYTES - 1024  # room for the {"Records": [...]} envelope
_MISSING_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_QUEUE_COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


class StopSignal(Protocol):
    """A threading or multiprocessing ``Event``: polling stops once it is set."""

    def is_set(self) -> bool:
        """True once polling must stop."""
        ...


# ---------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one invocation did: records, the ids left in the queue, the error, seconds taken."""

    size: int
    failed_ids: tuple[str, ...]
    handler_error: str | None
    duration: float


@dataclass(frozen=True, slots=True)
class ConsumeStats:
    """Counters over many batches; ``failures`` counts records left in the queue."""

    batches: int = 0
    records: int = 0
    failures: int = 0

    def __str__(self) -> str:
        return f"{self.batches} batches, {self.records} records, {self.failures} failed"

    def __add__(self, other: ConsumeStats) -> ConsumeStats:
        return ConsumeStats(
            self.batches + other.batches,
            self.records + other.records,
            self.failures + other.failures,
        )

    @classmethod
    def of(cls, outcome: BatchOutcome) -> ConsumeStats:
        """The counters of one batch."""
        return cls(1, outcome.size, len(outcome.failed_ids))


# ---------------------------------------------------------------- poller


@dataclass(slots=True)
class _Gathered:
    """Messages gathered for one batch so far, within the synchronous payload limit."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    overflow: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0

    def add(self, messages: list[dict[str, Any]], measure: Callable[[Any], int]) -> None:
        for message in messages:
            size = measure(message)
            if self.overflow or self.size + size > _PAYLOAD_BUDGET:
                self.overflow.append(message)
            else:
                self.messages.append(message)
                self.size += size


class EventSourcePoller:
    """Plays one SQS event source mapping: receive a batch, invoke, delete what succeeded."""

    def __init__(
        self,
        source: EventSource,
        handler: Handler,
        *,
        settings: Settings | None = None,
        failed_visibility: int | None = None,
        clock: Clock = time.time,
        sleep: Callable[[float], None] = time.sleep,
        invoker: Invoker | None = None,
    ) -> None:
        limit = SQS_MAX_VISIBILITY_SECONDS
        if failed_visibility is not None and not 0 <= failed_visibility <= limit:
            raise ConfigurationError(
                f"failed_visibility must be 0..{limit}, got {failed_visibility}"
            )
        self.source = source
        self._handler = handler
        self._settings = settings or Settings.from_env()
        self._sqs = aws.client("sqs", self._settings)
        self._failed_visibility = failed_visibility
        self._clock = clock
        self._sleep = sleep
        self._invoker = invoker

    def poll_once(self, wait_seconds: int = SQS_MAX_WAIT_TIME_SECONDS) -> BatchOutcome | None:
        """Gather one batch and invoke the handler with it; None when nothing arrived."""
        messages = self._gather(wait_seconds)
        if not messages:
            return None
        event = build_event(messages, self.source, self._settings.region)
        started = self._clock()
        failed_ids, error = self._invoke(event)
        outcome = BatchOutcome(len(messages), failed_ids, error, self._clock() - started)
        self._settle(messages, set(failed_ids))
        logger.info(
            "batch from %s: %d records, %d failed, %.0f ms%s",
            self.source.function,
            outcome.size,
            len(outcome.failed_ids),
            outcome.duration * 1000,
            f" ({error})" if error else "",
        )
        return outcome

    def run(
        self,
        *,
        until_empty: bool = False,
        stop: StopSignal | None = None,
        wait_seconds: int = SQS_MAX_WAIT_TIME_SECONDS,
    ) -> ConsumeStats:
        """Poll until ``stop`` is set or, with ``until_empty``, nothing is left in the queue.

        Empty means nothing visible, in flight or delayed: a record that failed comes back. A queue
        empty from the start ends the run at once, without a long poll. With ``stop`` (or
        ``until_empty``) a poll waits at most :data:`STOP_CHECK_SECONDS`.

        Raises:
            ConfigurationError: the queue does not exist (the template is not deployed there).
        """
        if until_empty or stop is not None:
            wait_seconds = min(wait_seconds, STOP_CHECK_SECONDS)
        stats = ConsumeStats()
        if until_empty and self._queue_is_empty():
            return stats
        while stop is None or not stop.is_set():
            outcome = self.poll_once(wait_seconds)
            if outcome is not None:
                stats += ConsumeStats.of(outcome)
            elif until_empty and self._queue_is_empty():
                break
        return stats

    def _receive(self, wait_seconds: int, wanted: int) -> list[dict[str, Any]]:
        with self._queue_exists():
            response = self._sqs.receive_message(
                QueueUrl=self.source.queue_url,
                MaxNumberOfMessages=min(SQS_MAX_BATCH_ENTRIES, wanted),
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    @contextlib.contextmanager
    def _queue_exists(self) -> Iterator[None]:
        """A missing queue as one clear error: the deployment it came from is gone or stale."""
        try:
            yield
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _MISSING_QUEUE:
                raise
            raise ConfigurationError(
                f"queue {self.source.queue_url} does not exist: deploy the template there "
                "(`celery -A tasks lambda deploy-local`)"
            ) from exc

    def _gather(self, wait_seconds: int) -> list[dict[str, Any]]:
        """Receive until the batch is full, the window has passed or 6 MB is reached."""
        batch = _Gathered()
        batch.add(self._receive(wait_seconds, self.source.batch_size), self._record_bytes)
        deadline = self._clock() + self.source.batching_window
        while batch.messages and not batch.overflow:
            wanted = self.source.batch_size - len(batch.messages)
            remaining = deadline - self._clock()
            if wanted <= 0 or remaining <= 0:
                break
            if remaining < 1:  # long polls wait whole seconds: sleep out the rest, look once more
                self._sleep(remaining)
                batch.add(self._receive(0, wanted), self._record_bytes)
                break
            wait_for = min(SQS_MAX_WAIT_TIME_SECONDS, int(remaining))
            batch.add(self._receive(wait_for, wanted), self._record_bytes)
        self._release(batch.overflow)
        return batch.messages

    def _record_bytes(self, message: Mapping[str, Any]) -> int:
        record = build_record(message, self.source, self._settings.region)
        return len(json.dumps(record).encode()) + 2

    def _invoke(self, event: dict[str, Any]) -> Answer:
        """Invoke the handler (through the invoker, if any): the ids to leave, the error."""
        if self._invoker is None:
            return self._call(event)
        return self._invoker(functools.partial(self._call, event))

    def _call(self, event: dict[str, Any]) -> Answer:
        """Call the handler with a fresh context; the ids to leave in the queue and the error."""
        ids = tuple(record["messageId"] for record in event["Records"])
        context = make_context(self.source, clock=self._clock)
        try:
            response = self._handler(event, context)
        except Exception as exc:
            logger.warning("handler %s raised", self.source.handler, exc_info=True)
            return ids, f"{type(exc).__name__}: {exc}"
        try:
            json.dumps(response)  # the runtime serialises the response; failing that fails all
        except (TypeError, ValueError) as exc:
            return ids, f"Runtime.MarshalError: {exc}"
        if self._clock() * 1000 > context.deadline_ms:
            return ids, f"Task timed out after {self.source.timeout} seconds"
        if not self.source.report_batch_item_failures:
            return (), None
        failed, problem = parse_batch_response(response, ids)
        return failed, problem and f"invalid batch response: {problem}"

    def _settle(self, messages: Sequence[Mapping[str, Any]], failed: set[str]) -> None:
        """Delete what succeeded; hide what failed for ``failed_visibility`` if set."""
        done = [m for m in messages if m["MessageId"] not in failed]
        for entries in delete_requests(done):
            self._send("delete_message_batch", entries)
        if self._failed_visibility is not None:
            back = [m for m in messages if m["MessageId"] in failed]
            for entries in visibility_requests(back, self._failed_visibility):
                self._send("change_message_visibility_batch", entries)

    def _release(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Make messages received past the payload limit visible again at once."""
        for entries in visibility_requests(messages, 0):
            self._send("change_message_visibility_batch", entries)

    def _send(self, operation: str, entries: list[dict[str, Any]]) -> None:
        response = getattr(self._sqs, operation)(QueueUrl=self.source.queue_url, Entries=entries)
        for failure in response.get("Failed", []):
            logger.warning("%s on %s failed: %s", operation, self.source.queue_url, failure)

    def _queue_is_empty(self) -> bool:
        with self._queue_exists():
            response = self._sqs.get_queue_attributes(
                QueueUrl=self.source.queue_url, AttributeNames=list(_QUEUE_COUNTS)
            )
        return all(int(response["Attributes"].get(name, "0")) == 0 for name in _QUEUE_COUNTS)


# ---------------------------------------------------------------- handlers


CODE_ROOT = Path(__file__).resolve().parents[2]
"""The functions' ``CodeUri`` (``.``, beside template.yaml): Lambda's task root, locally."""


def resolve_handler(dotted: str) -> Handler:
    """``"handlers.sqs.handler"`` (Lambda's ``Handler`` format) → the function it names.

    Raises:
        ConfigurationError: no module part, the module fails to import, or no such callable.
    """
    module_name, _, attribute = dotted.rpartition(".")
    if not module_name or not attribute:
        raise ConfigurationError(f"handler must be 'module.function', got {dotted!r}")
    # Lambda imports the handler with the function's code (the template's CodeUri) first on
    # sys.path. Celery's CLI puts the working directory there only while it loads `-A`, and the
    # wheel installs no `handlers` or `tasks`: without this, `celery -A tasks lambda up` could
    # not import `handlers.sqs`.
    if str(CODE_ROOT) not in sys.path:
        sys.path.insert(0, str(CODE_ROOT))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigurationError(f"cannot import handler module {module_name!r}: {exc}") from exc
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise ConfigurationError(f"module {module_name!r} has no callable {attribute!r}")
    result: Handler = handler
    return result


def handler_from_source(source: EventSource) -> Handler:
    """The handler the source's function names (a picklable ``handler_factory``)."""
    return resolve_handler(source.handler)
