"""The SQS event-source emulator: pollers (:mod:`devtools.cloud.poller`, one per queue and unit
of concurrency) run together, as AWS Lambda's event source mappings do, by :func:`consume`.

By default they are threads of this process sharing one execution environment: each receives,
gathers and deletes on its own, while their invocations take turns in the calling thread (as a
Lambda environment runs one invocation at a time), which is the main thread where the signals the
handler times tasks with work. Starting costs nothing beyond importing the handler once. With
``processes=True`` every poller gets its own process instead (an execution environment each,
spawned by default: a fresh interpreter that imports the handler, as a Lambda init does), for
invocations in parallel and isolated from each other; that costs each one the handler's import.
The poller's names and the event builders are exported here too, for the event source's callers.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import queue
import signal
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any

from devtools.cloud.deploy import EventSource
from devtools.cloud.lambda_events import (
    LambdaContext,
    build_event,
    build_record,
    delete_requests,
    make_context,
    parse_batch_response,
    visibility_requests,
)
from devtools.cloud.poller import (
    STOP_CHECK_SECONDS,
    Answer,
    BatchOutcome,
    ConsumeStats,
    EventSourcePoller,
    Handler,
    Invoker,
    StopSignal,
    handler_from_source,
    resolve_handler,
)
from infra.core import aws
from infra.core.errors import CeleryLambdaError, ConfigurationError
from infra.core.limits import SQS_MAX_WAIT_TIME_SECONDS

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

START_METHOD = "spawn"
"""A fresh interpreter per poller, importing the handler as a Lambda init does. ``fork`` starts
about a second sooner but inherits the parent's open sockets (cached boto3 clients, the Celery
app's connection pools) and any lock another thread held."""


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C), for a clean stop; call from the main thread."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


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
