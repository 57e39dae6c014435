"""The SQS event-source emulator: what AWS Lambda's SQS event source mapping does, locally.

An :class:`EventSourcePoller` long-polls one queue, gathers a batch (batch size, batching window,
6 MB payload), builds the Lambda SQS event, calls the handler with a context whose deadline is the
function's timeout, and deletes only the records that succeeded; SQS visibility and redrive do the
rest. See https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html.

:func:`consume` runs several pollers. By default they are threads of this process sharing one
execution environment: each receives, gathers and deletes on its own, while their invocations take
turns in the calling thread (as a Lambda environment runs one invocation at a time), which is the
main thread where the signals the handler times tasks with work. Starting costs nothing beyond
importing the handler once. With ``processes=True`` every poller gets its own process instead (an
execution environment each, spawned by default: a fresh interpreter that imports the handler, as a
Lambda init does), for invocations in parallel and isolated from each other; that costs each one
the handler's import.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import multiprocessing
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any, Protocol

from botocore.exceptions import ClientError

from devtools.cloud.deploy import EventSource
from devtools.cloud.lambda_events import (
    Clock,
    LambdaContext,
    build_event,
    build_record,
    delete_requests,
    make_context,
    parse_batch_response,
    visibility_requests,
)
from infra.core import aws
from infra.core.errors import CeleryLambdaError, ConfigurationError
from infra.core.limits import (
    LAMBDA_MAX_SYNC_PAYLOAD_BYTES,
    SQS_MAX_BATCH_ENTRIES,
    SQS_MAX_VISIBILITY_SECONDS,
    SQS_MAX_WAIT_TIME_SECONDS,
)
from infra.core.settings import Settings

__all__ = [
    "BatchOutcome",
    "ConsumeStats",
    "EventSourcePoller",
    "Answer",
    "Handler",
    "Invoker",
    "LambdaContext",
    "STOP_CHECK_SECONDS",
    "StopSignal",
    "build_event",
    "build_record",
    "consume",
    "delete_requests",
    "handler_from_source",
    "make_context",
    "parse_batch_response",
    "resolve_handler",
    "stop_on_signals",
    "visibility_requests",
]

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
Answer = tuple[tuple[str, ...], str | None]
"""What an invocation leaves: the ids of the records to leave in the queue, the error if any."""
Invoker = Callable[[Callable[[], Answer]], Answer]
"""Runs an invocation somewhere (in this thread, or in the thread serving the environment)."""

START_METHOD = "spawn"
"""A fresh interpreter per poller, importing the handler as a Lambda init does. ``fork`` starts
about a second sooner but inherits the parent's open sockets (cached boto3 clients, the Celery
app's connection pools) and any lock another thread held."""
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


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C), for a clean stop; call from the main thread."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


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


def resolve_handler(dotted: str) -> Handler:
    """``"handlers.sqs.handler"`` (Lambda's ``Handler`` format) → the function it names.

    Raises:
        ConfigurationError: no module part, the module fails to import, or no such callable.
    """
    module_name, _, attribute = dotted.rpartition(".")
    if not module_name or not attribute:
        raise ConfigurationError(f"handler must be 'module.function', got {dotted!r}")
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


# ---------------------------------------------------------------- threads


@dataclass(frozen=True, slots=True)
class _Options:
    until_empty: bool
    failed_visibility: int | None
    wait_seconds: int
    log_level: int


class _Call:
    """One invocation handed from a poller thread to the thread serving the environment."""

    def __init__(self, invocation: Callable[[], Answer]) -> None:
        self.invocation = invocation
        self.done = threading.Event()
        self.answer: Answer | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        """Invoke; an interruption (Ctrl-C in the handler) fails the call and goes on up."""
        try:
            self.answer = self.invocation()
        except BaseException as exc:
            self.error = CeleryLambdaError(f"the invocation was interrupted: {exc!r}")
            raise
        finally:
            self.done.set()


class _Environment:
    """One execution environment shared by poller threads: their invocations take turns in the
    thread that calls :meth:`serve`, one at a time, as a Lambda environment runs them."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closed = threading.Event()

    def invoke(self, invocation: Callable[[], Answer]) -> Answer:
        """Run ``invocation`` in the serving thread (an :data:`Invoker`; from a poller thread).

        Raises:
            CeleryLambdaError: the environment closed before the call ran, or the call was
                interrupted; its records stay in the queue.
        """
        call = _Call(invocation)
        self._calls.put(call)
        while not call.done.wait(0.2):
            if self._closed.is_set():
                raise CeleryLambdaError("the consumer stopped before the invocation ran")
        if call.error is not None:
            raise call.error
        assert call.answer is not None
        return call.answer

    def serve(self, running: Callable[[], bool]) -> None:
        """Run the pollers' invocations in this thread while ``running()``, which is asked again
        after each call, each :meth:`wake` and every 0.2 s (for a stop signal)."""
        while running():
            try:
                call = self._calls.get(timeout=0.2)
            except queue.Empty:
                continue
            if call is not None:
                call.run()

    def wake(self) -> None:
        """Have :meth:`serve` ask ``running()`` now (a poller ended)."""
        self._calls.put(None)

    def close(self) -> None:
        """Serve no more: pollers still waiting get an error."""
        self._closed.set()


class _PollerThread:
    """A poller's run in a thread of this process; its stats or error once it ends."""

    def __init__(
        self, name: str, run: Callable[[], ConsumeStats], ended: Callable[[], None]
    ) -> None:
        self.stats = ConsumeStats()
        self.error: Exception | None = None
        self.ended = False
        self.thread = threading.Thread(target=self._run, args=(run, ended), name=name, daemon=True)

    def _run(self, run: Callable[[], ConsumeStats], ended: Callable[[], None]) -> None:
        try:
            self.stats = run()
        except Exception as exc:
            self.error = exc
        finally:
            self.ended = True  # before ``ended()``: the thread itself may not have ended yet
            ended()


def _consume_in_threads(
    sources: Sequence[EventSource],
    handler_factory: Callable[[EventSource], Handler],
    concurrency: int,
    options: _Options,
    stop: StopSignal | None,
) -> ConsumeStats:
    """``concurrency`` poller threads per source; their invocations served in this thread."""
    environment, halt = _Environment(), threading.Event()
    handlers = {source: handler_factory(source) for source in dict.fromkeys(sources)}
    pollers = [
        _PollerThread(
            f"{source.function}-{slot}",
            functools.partial(
                EventSourcePoller(
                    source,
                    handlers[source],
                    failed_visibility=options.failed_visibility,
                    invoker=environment.invoke,
                ).run,
                until_empty=options.until_empty,
                stop=halt,
                wait_seconds=options.wait_seconds,
            ),
            ended=environment.wake,
        )
        for source in sources
        for slot in range(concurrency)
    ]

    def running() -> bool:
        if (stop is not None and stop.is_set()) or any(p.error is not None for p in pollers):
            halt.set()  # the others end after their poll and batch in progress
        return not all(p.ended for p in pollers)

    try:
        for poller in pollers:
            poller.thread.start()
        environment.serve(running)
    finally:
        halt.set()
        environment.close()
    errors = [p.error for p in pollers if p.error is not None]
    if errors:
        raise errors[0]
    return sum((p.stats for p in pollers), ConsumeStats())


# ---------------------------------------------------------------- processes


def _child(
    source: EventSource,
    factory: Callable[[EventSource], Handler],
    options: _Options,
    stop: StopSignal,
    results: Connection,
) -> None:
    """One concurrent invocation slot: its own process, the handler in its main thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into ``stop``
    if not logging.getLogger().handlers:
        logging.basicConfig(level=options.log_level, format="%(processName)s %(message)s")
    aws.clear_clients()  # under fork, the parent's cached clients hold the parent's sockets
    try:
        poller = EventSourcePoller(
            source, factory(source), failed_visibility=options.failed_visibility
        )
        stats = poller.run(
            until_empty=options.until_empty, stop=stop, wait_seconds=options.wait_seconds
        )
        results.send((stats, None))
    except Exception as exc:
        results.send((None, _portable(exc)))
    finally:
        results.close()


def _portable(exc: Exception) -> Exception:
    """The exception with the child's traceback attached, or a stand-in that pickles."""
    text = "".join(traceback.format_exception(exc))
    try:
        exc.add_note(f"in the consumer process:\n{text}")
        ForkingPickler.dumps(exc)
    except Exception:
        return CeleryLambdaError(f"consumer process failed:\n{text}")
    return exc


@dataclass(slots=True)
class _Slot:
    process: BaseProcess
    results: Connection
    grace: float

    def result(self) -> tuple[ConsumeStats | None, Exception | None] | None:
        """The child's result once it ended; None while it still runs."""
        if self.results.poll():
            try:
                received: tuple[ConsumeStats | None, Exception | None] = self.results.recv()
                return received
            except EOFError:
                pass
        elif self.process.is_alive():
            return None
        self.process.join(1)
        code = self.process.exitcode
        return None, CeleryLambdaError(f"{self.process.name} exited with code {code}")

    def finish(self) -> None:
        """Let the child end its batch, then terminate it; release its resources."""
        self.process.join(self.grace)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.results.close()
        self.process.close()


def _start(
    context: Any,
    source: EventSource,
    slot: int,
    factory: Callable[[EventSource], Handler],
    options: _Options,
    stop: StopSignal,
) -> _Slot:
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(
        target=_child,
        args=(source, factory, options, stop, writer),
        name=f"{source.function}-{slot}",
        daemon=True,
    )
    process.start()
    writer.close()
    return _Slot(process, reader, options.wait_seconds + source.timeout + 5)


def _collect(slots: list[_Slot], halt: Any, stop: StopSignal | None) -> ConsumeStats:
    """Wait for every child; stop them all on ``stop`` or the first failure."""
    pending = list(slots)
    stats, errors = ConsumeStats(), []
    while pending:
        wait([s.results for s in pending] + [s.process.sentinel for s in pending], timeout=0.2)
        if stop is not None and stop.is_set():
            halt.set()
        for slot in list(pending):
            result = slot.result()
            if result is None:
                continue
            pending.remove(slot)
            if result[1] is not None:
                errors.append(result[1])
                halt.set()
            stats += result[0] or ConsumeStats()
    if errors:
        raise errors[0]
    return stats


def consume(
    sources: Sequence[EventSource],
    handler_factory: Callable[[EventSource], Handler],
    *,
    concurrency: int = 1,
    until_empty: bool = False,
    failed_visibility: int | None = None,
    stop: StopSignal | None = None,
    wait_seconds: int = SQS_MAX_WAIT_TIME_SECONDS,
    processes: bool = False,
    start_method: str = START_METHOD,
) -> ConsumeStats:
    """Run ``concurrency`` pollers per source until ``stop`` or, with ``until_empty``, empty queues.

    By default the pollers are threads of this process and their invocations take turns in this
    thread (one execution environment; ``handler_factory`` is called once per source, here). One
    source at concurrency 1 needs no thread at all. With ``processes`` every poller gets its own
    process (``start_method``), invocations run in parallel, and ``handler_factory`` must pickle (a
    module-level function, a ``partial``). Settings come from the environment. Stopping takes up
    to :data:`STOP_CHECK_SECONDS` plus the batch in progress.

    Raises:
        ConfigurationError: concurrency below 1 or no sources; whatever a poller raised.
    """
    if concurrency < 1 or not sources:
        raise ConfigurationError("consume needs at least one source and a concurrency of 1 or more")
    if concurrency == 1 and len(sources) == 1:
        poller = EventSourcePoller(
            sources[0], handler_factory(sources[0]), failed_visibility=failed_visibility
        )
        return poller.run(until_empty=until_empty, stop=stop, wait_seconds=wait_seconds)
    options = _Options(until_empty, failed_visibility, wait_seconds, logger.getEffectiveLevel())
    if not processes:
        return _consume_in_threads(sources, handler_factory, concurrency, options, stop)
    context = multiprocessing.get_context(start_method)
    halt = context.Event()
    slots: list[_Slot] = []
    try:
        for source in sources:
            for slot in range(concurrency):
                slots.append(_start(context, source, slot, handler_factory, options, halt))
        return _collect(slots, halt, stop)
    finally:
        halt.set()
        for started in slots:
            started.finish()
