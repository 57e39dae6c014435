"""``celery -A tasks lambda bench``: one backlog of N ``tasks.add`` drained by each consumer, in
one run on the embedded emulator -- plain Celery (:mod:`~devtools.bench.plain_app`, a real
``celery worker`` on a thread pool and a process pool), the project's worker path (``celery -A
tasks worker``, same flags as plain Celery's best), the Lambda path through the event-source
emulator, the handler alone (called in this process on 10-record events of real messages), and
a do-nothing handler behind the same event source (moto's cap on any consumer).

Before each consumer the emulator is emptied and the template deployed again under the same
names (a stopped worker's last long poll stays open in moto for up to 20 s and would take a
message of the next run); then N tasks are published, the request counts are reset and the
consumer starts. Timing, CPU and log bytes run from the consumer's first ReceiveMessage to the
moment the queue holds nothing visible, in flight or delayed (``task_acks_late`` everywhere: a
message is deleted only after its result is stored); requests are counted from the reset to
that moment, the watcher's own GetQueueAttributes subtracted. Every result is then checked to
be SUCCESS, outside the measurement.

CPU is read from ``/proc`` for the consumer's whole process tree; on the Lambda path the
handler's own CPU and billed duration (each invocation's wall time rounded up to the ms) are
reported by a wrapper around it, the rest is the event-source emulator's. DynamoDB units are
counted per item by :mod:`~devtools.bench.meter` in every consumer process.

The figures are the emulator's (moto on a shared machine): compare them within one run only.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from celery.result import AsyncResult

from devtools.bench import meter, plain_app
from devtools.bench.prices import function_sizing
from devtools.bench.report import Row, emit
from devtools.cloud.deploy import Deployment, EventSource, deploy
from devtools.cloud.emulator import request_counts, reset_resources
from devtools.cloud.event_source import StopSignal, consume, handler_from_source
from devtools.cloud.lambda_events import build_event, make_context
from devtools.cloud.session import local_cloud, point_app_at
from devtools.cloud.template import load_template
from devtools.examples import ADD, example_tasks
from infra.core import aws
from infra.core.errors import CeleryLambdaError, ConfigurationError
from infra.core.limits import SQS_MAX_BATCH_ENTRIES
from infra.core.settings import Settings

__all__ = ["POOLS", "QUEUE", "Bench", "Run", "bench_main", "noop_handler", "timed_handler"]

POOLS = {"threads": (16, 4), "prefork": (2, 8)}
"""Plain Celery's pools: (concurrency, prefetch multiplier); windows of 64 and 16 messages."""
LAMBDA_CONCURRENCY = 2
QUEUE = "celery"
POLL_SECONDS = 0.1
EMULATOR_ONLY = frozenset({"sqs:GetQueueAttributes"})
"""What the event-source emulator sends and AWS's event source mapping does not (its
``until_empty`` check): left out of the Lambda rows' billed requests, shown apart."""
INVOCATIONS_VARIABLE = "CELERY_LAMBDA_BENCH_INVOCATIONS"
"""The file :func:`timed_handler` appends ``records cpu_seconds wall_seconds`` to per call."""
_QUEUE_COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass(frozen=True, slots=True)
class Run:
    """One measured publish: tasks, seconds, AWS requests by ``service:Operation``."""

    path: str
    tasks: int
    seconds: float
    counts: Mapping[str, int]

    @property
    def rate(self) -> float:
        """Tasks per second."""
        return self.tasks / self.seconds if self.seconds > 0 else math.inf

    def per_task(self) -> dict[str, float]:
        """Requests per task by operation, the most frequent first."""
        rates = {op: n / self.tasks for op, n in self.counts.items() if n}
        return dict(sorted(rates.items(), key=lambda item: (-item[1], item[0])))

    def requests_per_task(self) -> float:
        """All requests per task."""
        return sum(self.per_task().values())


# ---------------------------------------------------------------- the handlers' wrappers


def timed_handler(source: EventSource) -> Callable[[dict[str, Any], Any], Any]:
    """The source's handler; each call's records, CPU and wall time appended to the file
    :data:`INVOCATIONS_VARIABLE` names, the first call of each process marked."""
    handler = handler_from_source(source)
    path = os.environ[INVOCATIONS_VARIABLE]
    calls = iter(range(sys.maxsize))

    def timed(event: dict[str, Any], context: Any) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return handler(event, context)
        finally:
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            first = int(next(calls) == 0)
            line = f"{len(event.get('Records', []))} {cpu:.6f} {wall:.6f} {first}\n".encode()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(fd, line)
            os.close(fd)

    return timed


def _do_nothing(event: dict[str, Any], context: Any) -> dict[str, list[Any]]:
    return {"batchItemFailures": []}


def noop_handler(source: EventSource) -> Callable[[dict[str, Any], Any], Any]:
    """A handler that does nothing and reports success: what the emulator alone allows."""
    return _do_nothing


@dataclass(frozen=True, slots=True)
class _Invocations:
    """The handler's calls: how many, their CPU, their billed ms, and the first calls' setup.

    ``init_cpu_seconds`` is what each process's first call spent beyond a later call's CPU per
    record (the pipeline built, the app loaded); ``cpu_seconds`` is the rest.
    """

    count: int = 0
    cpu_seconds: float = 0.0
    init_cpu_seconds: float = 0.0
    billed_ms: float = 0.0

    @classmethod
    def read(cls, path: Path) -> _Invocations:
        lines = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
        calls = [(int(n), float(cpu), float(wall), f == "1") for n, cpu, wall, f in lines]
        later = [(n, cpu) for n, cpu, _, first in calls if not first]
        per_record = sum(c for _, c in later) / max(sum(n for n, _ in later), 1)
        init = sum(max(cpu - n * per_record, 0.0) for n, cpu, _, first in calls if first)
        return cls(
            len(calls),
            sum(cpu for _, cpu, _, _ in calls) - init,
            init,
            sum(math.ceil(wall * 1000) for _, _, wall, _ in calls),
        )


# ---------------------------------------------------------------- measuring


@dataclass(slots=True)
class _Probe:
    """Where one consumer's spending is read: its process tree, its log, the meter files."""

    pid: int
    log: Path
    work: Path

    @property
    def units_file(self) -> Path:
        return self.work / "units"

    @property
    def invocations_file(self) -> Path:
        return self.work / "invocations"


class Bench:
    """Publishes ``tasks`` ``tasks.add`` messages and measures one consumer draining them."""

    def __init__(self, app: Any, deployment: Deployment, tasks: int, work: Path) -> None:
        """Point ``app`` at the deployment.

        Raises:
            ConfigurationError: the app registers no ``tasks.add``.
        """
        self.app = app
        self.add = example_tasks(app, ADD)[ADD]
        self.tasks = tasks
        self.work = work
        self.deployment = deployment
        self.stack_name = deployment.stack_name
        self.endpoint = deployment.endpoint_url or ""
        self.timeout = 60 + tasks * 0.5
        point_app_at(app, deployment)
        self.environment = dict(deployment.environment)
        self.env = {**os.environ, **self.environment}
        settings = Settings.from_env(self.env)
        self.queue_url = settings.queue_urls[QUEUE]
        self.region = settings.region
        self.served_app = settings.app
        self.source = next(s for s in deployment.event_sources if s.queue_url == self.queue_url)
        self.memory_mb, self.architecture = function_sizing(load_template(), self.source.function)
        self.site = work / "site"
        meter.write_sitecustomize(self.site)
        shutil.copy(plain_app.__file__, self.site / "plain_app.py")
        self.moto_pid = _moto_pid()

    # -------------------------------------------------------------- the consumers

    def plain(self, pool: str) -> Row:
        """Plain Celery: its own app, transport and backend, in a real ``celery worker``."""
        concurrency, multiplier = POOLS[pool]
        self.redeploy()
        plain = plain_app.create_app(self.env)
        plain.backend.client  # noqa: B018  Celery's backend makes its table here, not timed
        # by name: in this process the registry would also hold the served app's shared tasks
        ids = [plain.send_task(ADD, (i, i)).id for i in range(self.tasks)]
        label = f"plain Celery, {pool} -c {concurrency} x{multiplier}"
        row = self._worker(label, "plain", "plain_app", pool)
        self._check(ids, label, plain)
        return row

    def worker(self, pool: str) -> Row:
        """The project's worker path (``ClaimingTask``, our transport and backend)."""
        concurrency, multiplier = POOLS[pool]
        self.redeploy()
        ids = self.publish()
        label = f"project worker, {pool} -c {concurrency} x{multiplier}"
        row = self._worker(label, "worker", self.served_app, pool)
        self._check(ids, label)
        return row

    def lambda_path(self) -> Row:
        """The event-source emulator (:data:`LAMBDA_CONCURRENCY` pollers) and the handler."""
        self.redeploy()
        ids = self.publish()
        label = f"Lambda path, event source x{LAMBDA_CONCURRENCY}"
        row = self._event_source(label, "lambda", timed_handler)
        self._check(ids, label)
        return row

    def do_nothing(self) -> Row:
        """The same event source in front of a handler that does nothing: moto's cap."""
        self.redeploy()
        self.publish()
        return self._event_source(
            f"do-nothing handler, event source x{LAMBDA_CONCURRENCY}", "noop", noop_handler
        )

    def handler_alone(self) -> Row:
        """``handlers.sqs.handler`` in this process on 10-record events of real messages.

        Each batch is received and deleted as an event source would (counted, not timed); the
        first batch warms the handler up (its first-invocation setup) and is not measured.
        """
        self.redeploy()
        ids = self.publish()
        probe = _Probe(os.getpid(), self.work / "handler.log", self.work / "handler")
        probe.work.mkdir(exist_ok=True)
        os.environ[meter.METER_VARIABLE] = str(probe.units_file)
        meter.install()
        point_app_at(self.app, self.deployment)  # new clients, metered
        handler = handler_from_source(self.source)
        try:
            with _captured(self.work / "warm-up.log"):
                warm = self._invoke(handler, self._receive())
            remaining = self.tasks - len(warm[2])
            probe.units_file.unlink(missing_ok=True)
            request_counts(self.endpoint, reset=True)
            moto = _cpu(self.moto_pid)
            cpu = wall = billed = 0.0
            done = batches = 0
            with _captured(probe.log):
                while done < remaining:
                    spent_cpu, spent_wall, messages = self._invoke(handler, self._receive())
                    cpu, wall = cpu + spent_cpu, wall + spent_wall
                    billed += math.ceil(spent_wall * 1000)
                    done, batches = done + len(messages), batches + 1
            counts, moto = request_counts(self.endpoint), _cpu(self.moto_pid) - moto
        finally:
            os.environ.pop(meter.METER_VARIABLE, None)
        label = "handler alone, 10-record events in-process"
        self._check(ids, label)
        return Row(
            label,
            "handler",
            max(done, 1),
            wall,
            counts=counts,
            cpu_seconds=cpu,
            billed_ms=billed,
            invocations=batches,
            emulator_cpu_seconds=moto,
            log_bytes=_size(probe.log),
            units=meter.read_units(probe.units_file),
            memory_mb=self.memory_mb,
            architecture=self.architecture,
        )

    # -------------------------------------------------------------- the parts

    def redeploy(self) -> None:
        """Empty the emulator and deploy the template again, under the same names.

        Raises:
            ConfigurationError: the new deployment's names differ (the app points at the old).
        """
        reset_resources(self.endpoint)
        deployment = deploy(stack_name=self.stack_name)
        changed = {k for k, v in deployment.environment.items() if self.environment.get(k) != v}
        if changed:
            raise ConfigurationError(f"redeploy changed {sorted(changed)}")

    def publish(self) -> list[str]:
        """Publish the tasks with the app's plain ``delay``; their ids."""
        return [self.add.delay(i, i).id for i in range(self.tasks)]

    def _worker(self, label: str, kind: str, app_name: str, pool: str) -> Row:
        concurrency, multiplier = POOLS[pool]
        work = Path(tempfile.mkdtemp(prefix=f"{kind}-{pool}-", dir=self.work))
        env = {
            **self.env,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(self.site), os.environ.get("PYTHONPATH")])
            ),
            meter.METER_VARIABLE: str(work / "units"),
        }
        command = [
            *(sys.executable, "-m", "celery", "-A", app_name, "worker", "-P", pool),
            *("--concurrency", str(concurrency), "--prefetch-multiplier", str(multiplier)),
            *("-Q", QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat"),
            *("--loglevel", "INFO", "--hostname", f"bench-{kind}-{pool}@%h"),
        ]
        log = work / "log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            probe = _Probe(process.pid, log, work)
            try:
                return self._measure(label, kind, probe, lambda: process.poll() is None)
            except CeleryLambdaError as exc:
                raise CeleryLambdaError(f"{exc}\nworker log:\n{_tail(log)}") from exc
            finally:
                _stop(process)

    def _event_source(self, label: str, kind: str, factory: Callable[..., Any]) -> Row:
        work = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.work))
        env = {
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(self.site), os.environ.get("PYTHONPATH")])
            ),
            meter.METER_VARIABLE: str(work / "units"),
            INVOCATIONS_VARIABLE: str(work / "invocations"),
        }
        context = multiprocessing.get_context("spawn")
        reader, writer = context.Pipe(duplex=False)
        stop = context.Event()
        log = work / "log"
        helper = context.Process(
            target=_consume_child, args=(self.source, factory, stop, writer, env, str(log))
        )
        helper.start()
        writer.close()
        probe = _Probe(helper.pid or 0, log, work)
        try:
            row = self._measure(label, kind, probe, helper.is_alive)
            helper.join(self.timeout)  # its pollers stop once they too find the queue empty
            if reader.poll() and (error := reader.recv()) is not None:
                raise CeleryLambdaError(f"{label}: {error}")
        except CeleryLambdaError as exc:
            stop.set()
            helper.join(30)
            raise CeleryLambdaError(f"{exc}: {_helper_error(reader)}\n{_tail(log)}") from exc
        finally:
            stop.set()
            helper.join(30)
            if helper.is_alive():
                helper.terminate()
                helper.join()
            reader.close()
        return row

    def _measure(self, label: str, kind: str, probe: _Probe, alive: Callable[[], object]) -> Row:
        """From the first ReceiveMessage to an empty queue: time, CPU, log bytes, requests."""
        request_counts(self.endpoint, reset=True)
        deadline = time.monotonic() + self.timeout
        while not request_counts(self.endpoint).get("sqs:ReceiveMessage"):
            if not alive() or time.monotonic() > deadline:
                raise CeleryLambdaError(f"{label}: the consumer never received from {QUEUE}")
            time.sleep(0.01)
        started, cpu, moto = time.perf_counter(), _cpu(probe.pid), _cpu(self.moto_pid)
        logged = _size(probe.log)
        probe.units_file.unlink(missing_ok=True)
        probe.invocations_file.unlink(missing_ok=True)
        checks = 0
        while True:
            time.sleep(POLL_SECONDS)
            checks += 1
            left = self._messages_left()
            if not any(left.values()):
                break
            if not alive() or time.monotonic() > deadline:
                raise CeleryLambdaError(f"{label}: {QUEUE} not drained in time, {left} left")
        seconds = time.perf_counter() - started
        cpu, moto = _cpu(probe.pid) - cpu, _cpu(self.moto_pid) - moto
        counts = dict(request_counts(self.endpoint))
        counts["sqs:GetQueueAttributes"] = counts.get("sqs:GetQueueAttributes", 0) - checks
        invocations = _Invocations.read(probe.invocations_file)
        event_source = kind in {"lambda", "noop"}
        billed = {
            op: n for op, n in counts.items() if n and not (event_source and op in EMULATOR_ONLY)
        }
        return Row(
            label,
            kind,
            self.tasks,
            seconds,
            counts=billed,
            unbilled={op: n for op, n in counts.items() if n and op not in billed},
            cpu_seconds=invocations.cpu_seconds if event_source else cpu,
            event_source_cpu_seconds=max(cpu - invocations.cpu_seconds, 0.0)
            if event_source
            else 0.0,
            billed_ms=invocations.billed_ms,
            invocations=invocations.count,
            emulator_cpu_seconds=moto,
            log_bytes=_size(probe.log) - logged,
            units=meter.read_units(probe.units_file),
            memory_mb=self.memory_mb if event_source else 0,
            architecture=self.architecture,
        )

    def _receive(self) -> list[dict[str, Any]]:
        """One batch of up to ten messages, as the event source receives it."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            messages: list[dict[str, Any]] = (
                aws.client("sqs")
                .receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=SQS_MAX_BATCH_ENTRIES,
                    WaitTimeSeconds=1,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
                .get("Messages", [])
            )
            if messages:
                return messages
        raise CeleryLambdaError(f"handler alone: nothing left to receive from {QUEUE}")

    def _invoke(
        self, handler: Callable[..., Any], messages: list[dict[str, Any]]
    ) -> tuple[float, float, list[dict[str, Any]]]:
        """Call the handler on one event of ``messages``, delete them: (CPU, wall, messages)."""
        event = build_event(messages, self.source, self.region)
        context = make_context(self.source)
        cpu, wall = time.process_time(), time.perf_counter()
        handler(event, context)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        aws.client("sqs").delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return cpu, wall, messages

    def _messages_left(self) -> dict[str, int]:
        """Messages visible, in flight and delayed."""
        attributes = aws.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=list(_QUEUE_COUNTS)
        )["Attributes"]
        return {name: int(attributes.get(name, "0")) for name in _QUEUE_COUNTS}

    def _check(self, ids: list[str], label: str, app: Any = None) -> None:
        states = [AsyncResult(task_id, app=app or self.app).state for task_id in ids]
        failed = len(states) - states.count("SUCCESS")
        if failed:
            seen = {state: states.count(state) for state in sorted(set(states))}
            raise CeleryLambdaError(
                f"{label}: {failed} of {len(ids)} tasks did not succeed (states: {seen})"
            )


def _consume_child(
    source: EventSource,
    factory: Callable[..., Any],
    stop: StopSignal,
    results: Connection,
    env: Mapping[str, str],
    log: str,
) -> None:
    """The helper process: consume ``source`` until it is empty or ``stop``; None or the error.

    Its stdout and stderr (inherited by the pollers: the handler's log lines and EMF documents,
    which on AWS go to CloudWatch Logs) go to ``log``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which sets stop
    os.environ.update(env)  # PYTHONPATH: spawned pollers load the meter's sitecustomize
    meter.install()  # forked pollers inherit it
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    try:
        # Two execution environments invoked at once, as the event source mapping does at a
        # concurrency of 2 (threads would take turns: one environment); their start-up is
        # outside the measured window.
        consume(
            [source],
            factory,
            concurrency=LAMBDA_CONCURRENCY,
            processes=True,
            until_empty=True,
            stop=stop,
        )
        results.send(None)
    except Exception as exc:
        results.send(f"{type(exc).__name__}: {exc}")
    finally:
        results.close()


class _captured:
    """This process's stdout and stderr (file descriptors 1 and 2) appended to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.saved: list[int] = []

    def __enter__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        out = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.saved = [os.dup(1), os.dup(2)]
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)

    def __exit__(self, *_: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self.saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)


def _moto_pid() -> int:
    """The embedded emulator's process: this process's child running the counting server."""
    for child in meter.children(os.getpid()):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"moto_counting" in command:
            return child
    return 0


def _cpu(pid: int) -> float:
    return meter.tree_cpu_seconds(pid) if pid else 0.0


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _helper_error(reader: Connection) -> str:
    try:
        error = reader.recv() if reader.poll() else "the helper process ended without a word"
    except EOFError:
        error = "the helper process died"
    return str(error)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(log: Path, size: int = 3000) -> str:
    return log.read_bytes().decode(errors="replace")[-size:] if log.exists() else ""


# ---------------------------------------------------------------- the whole run


def run_all(
    app: Any, tasks: int, pools: Iterable[str], progress: Callable[[str], None]
) -> tuple[list[Row], list[str]]:
    """Every consumer on one emulator, in order: the rows, and the errors of those that failed
    (the others still measured: one consumer's failure is itself a finding)."""
    example_tasks(app, ADD)  # before the emulator starts
    rows: list[Row] = []
    errors: list[str] = []

    def attempt(what: str, measure: Callable[[], Row]) -> None:
        progress(f"{what}: publishing {tasks} tasks, draining…")
        try:
            rows.append(measure())
        except CeleryLambdaError as exc:
            errors.append(f"{what}: {exc}")
            progress(f"{what} FAILED: {exc}")

    with tempfile.TemporaryDirectory(prefix="celery-lambda-bench-") as tmp, local_cloud() as cloud:
        bench = Bench(app, cloud, tasks, Path(tmp))
        for pool in pools:
            attempt(f"plain Celery, {pool} pool", functools.partial(bench.plain, pool))
        plain = [row for row in rows if row.kind == "plain"]
        if not plain:
            return rows, errors
        best = max(plain, key=lambda row: row.rate)
        pool = next(p for p in pools if f", {p} " in best.consumer)
        attempt(
            f"project worker, {pool} pool (plain's best)", functools.partial(bench.worker, pool)
        )
        attempt(f"Lambda path, event source x{LAMBDA_CONCURRENCY}", bench.lambda_path)
        attempt("handler alone, in this process", bench.handler_alone)
        attempt("do-nothing handler behind the event source", bench.do_nothing)
    return rows, errors


def bench_main(
    app: Any, tasks: int = 300, pools: Iterable[str] = tuple(POOLS), as_json: bool = False
) -> list[Row]:
    """The whole benchmark: emulator up, template deployed, every consumer measured, printed.

    Raises:
        ConfigurationError: an unknown pool, too few tasks, or an app without ``tasks.add``.
        CeleryLambdaError: a consumer failed, stalled, or left a task without SUCCESS.
    """
    pools = list(dict.fromkeys(pools))
    if tasks < 2 * SQS_MAX_BATCH_ENTRIES or not pools or not set(pools) <= set(POOLS):
        raise ConfigurationError(
            f"bench needs tasks >= {2 * SQS_MAX_BATCH_ENTRIES} and pools among {sorted(POOLS)}"
        )
    rows, errors = run_all(app, tasks, pools, lambda line: print(line, file=sys.stderr))
    if any(row.kind == "plain" for row in rows):
        emit(rows, tasks, as_json=as_json)
    if errors:
        raise CeleryLambdaError("\n".join(errors))
    return rows
