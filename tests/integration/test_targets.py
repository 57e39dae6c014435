"""The core scenarios on both local targets: moto (the embedded emulator) and LocalStack.

The proof of issue 9. Every scenario runs once per target, the same code against each: the
session's moto cloud, and LocalStack (SQS, S3) with DynamoDB Local (the DynamoDB), started on free
ports of 127.0.0.1 with template.yaml deployed into them (``localstack_cloud`` in
``tests/conftest.py``). The process is switched to the target for the module's tests of that
target (environment, AWS clients, the apps) and back afterwards.

Tasks of this module's own app (configured like ``tasks.app``, ``ClaimingTask`` base) go to
queues of its own, created on each target: ``targets`` is read only by the Lambda path (the
handler invoked here, through the event-source emulator or as it would invoke it), and
``targets-worker`` by a real ``celery worker`` subprocess.

Where the targets differ from AWS in a way that matters, the test says so: moto's
TransactWriteItems is not isolated (two simultaneous claims of one task id can both succeed, and a
cancelled transaction puts back what it had changed), so the concurrency proofs are expected
to fail there and must pass on DynamoDB Local, whose transactions behave as DynamoDB's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, states
from celery._state import get_current_app
from kombu import Queue

import infra
from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.emulator import free_port
from devtools.cloud.event_source import ConsumeStats, consume, handler_from_source
from devtools.cloud.localstack import LocalStack
from infra.consumer import runtime
from infra.core import aws
from infra.core.config import transport_options
from infra.core.settings import Settings
from infra.store.claim_requests import Claimed, ClaimRequest, Held
from infra.store.claims import ClaimStore, store_for_app
from infra.store.items import task_key
from infra.store.result_requests import batch_get
from tests.apps import probe
from tests.integration.test_stock_client import READER
from tests.invoke import invoke
from tests.sqs_helpers import counts, queue_with_dlq, receive
from tests.targets import TARGETS, pointed_at
from tests.workers import ROOT, celery_worker

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(300, method="thread"),
]

QUEUES_VARIABLE = "TARGETS_QUEUES"
"""JSON ``{celery queue name: SQS URL}`` of this module's queues, for every process."""
LAMBDA_QUEUE = "targets"
WORKER_QUEUE = "targets-worker"
MAX_RECEIVE_COUNT = 2
"""The Lambda queue's redrive: a record failed twice goes to the DLQ on its third receive."""
COUNTDOWN = 3
CONTENDERS = 8
MOTO_TRANSACTIONS = (
    "moto's TransactWriteItems is not isolated: simultaneous claims can both succeed "
    "(README, Delivery guarantees)"
)


# ---------------------------------------------------------------- the app


def configure(celery_app: Celery, env: Mapping[str, str] | None = None) -> None:
    """Route to this module's queues, with their URLs among kombu's predefined queues."""
    env = os.environ if env is None else env
    options = transport_options(Settings.from_env(env))
    urls = json.loads(env.get(QUEUES_VARIABLE) or "{}")
    predefined = {**options.get("predefined_queues", {})}
    predefined.update({name: {"url": url} for name, url in urls.items()})
    options["predefined_queues"] = predefined
    celery_app.conf.update(
        broker_transport_options=options,
        task_default_queue=LAMBDA_QUEUE,
        task_queues=(Queue(LAMBDA_QUEUE), Queue(WORKER_QUEUE)),
        task_routes=None,
        task_annotations=None,
    )


app = Celery("targets", task_cls="infra.worker.task:ClaimingTask", set_as_current=False)
app.config_from_object("tasks.celeryconfig")
configure(app)
infra.configure(app)


@app.task(name="targets.add", shared=False)
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="targets.fail", shared=False)
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="targets.record", shared=False)
def record(marker: str) -> str:
    """The side effect (one call counted under ``marker``)."""
    probe.record_call(marker)
    return marker


@app.task(name="targets.stamp", shared=False)
def stamp() -> float:
    """When it ran."""
    return time.time()


# ---------------------------------------------------------------- fixtures


@dataclasses.dataclass(frozen=True)
class Target:
    """One local cloud with this module's queues on it."""

    name: str
    deployment: Deployment
    source: EventSource
    """The Lambda queue as an event source (the template's settings)."""
    dlq_url: str


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest, cloud: Deployment) -> Iterator[Target]:
    """This process on the target, with fresh queues; back on moto afterwards."""
    name = request.param
    deployment = cloud if name == "moto" else request.getfixturevalue("localstack_cloud")
    previous = get_current_app()
    with pointed_at(deployment, cloud, app), pytest.MonkeyPatch.context() as env:
        suffix = uuid.uuid4().hex[:8]
        lambda_queue = queue_with_dlq(
            f"targets-{suffix}",
            max_receive_count=MAX_RECEIVE_COUNT,
            attributes={"VisibilityTimeout": "30"},
        )
        worker_queue = queue_with_dlq(f"targets-worker-{suffix}")
        urls = {LAMBDA_QUEUE: lambda_queue.url, WORKER_QUEUE: worker_queue.url}
        env.setenv(QUEUES_VARIABLE, json.dumps(urls))
        env.setenv("CELERY_APP", f"{__name__}:app")  # what the handler serves
        configure(app)
        runtime.pipeline.cache_clear()
        [celery_source] = [s for s in deployment.event_sources if s.queue_arn.endswith("-celery")]
        yield Target(
            name=name,
            deployment=deployment,
            source=dataclasses.replace(
                celery_source, queue_url=lambda_queue.url, queue_arn=lambda_queue.arn
            ),
            dlq_url=lambda_queue.dlq_url,
        )
        for queue in (lambda_queue, worker_queue):
            for url in (queue.url, queue.dlq_url):
                aws.client("sqs").delete_queue(QueueUrl=url)
    previous.set_current()


@pytest.fixture(scope="module")
def target_worker(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A stock ``celery worker`` of this module's app on the target's worker queue; its log."""
    log = tmp_path_factory.mktemp(f"targets-worker-{target.name}") / "worker.log"
    args = ["-Q", WORKER_QUEUE, "--concurrency=1", "--hostname", f"targets-{target.name}@%h"]
    with celery_worker(f"{__name__}:app", args, dict(os.environ), log):
        yield log


@pytest.fixture
def moto_transactions(request: pytest.FixtureRequest, target: Target) -> None:
    """Mark a test of DynamoDB's transaction semantics as expected to fail on moto."""
    if target.name == "moto":
        request.applymarker(pytest.mark.xfail(reason=MOTO_TRANSACTIONS, strict=False))


# ---------------------------------------------------------------- helpers


def drain(source: EventSource) -> ConsumeStats:
    """The event-source emulator on ``source``, in this thread, until the queue is empty."""
    return consume(
        [source], handler_from_source, until_empty=True, failed_visibility=1, wait_seconds=1
    )


def new_id() -> str:
    return str(uuid.uuid4())


def claim_store() -> ClaimStore:
    store = store_for_app(app)
    assert store is not None
    return store


def claim_or_error(store: ClaimStore, task_id: str, owner: str) -> Any:
    """The claim's outcome, or the error it raised (kept, never lost in a thread)."""
    try:
        return store.claim([ClaimRequest(task_id)], owner, time.time() + 60)[task_id]
    except Exception as exc:  # reported by the test's assertion on the outcomes
        return exc


def states_of(task_ids: list[str]) -> dict[str, str]:
    """Each task's state as a Celery client decodes it (BatchGetItem)."""
    keys = {task_key(t): t for t in task_ids}
    found = batch_get(aws.client("dynamodb"), Settings.from_env().results_table, list(keys))
    decoded = {keys[k]: app.backend.decode_result(v)["status"] for k, v in found.items()}
    return {t: decoded.get(t, states.PENDING) for t in task_ids}


def cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "lambda", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------- scenarios on each target


def test_worker_round_trip(target: Target, target_worker: Path) -> None:
    assert add.apply_async((4, 4), queue=WORKER_QUEUE).get(timeout=60) == 8
    failed = fail.apply_async(("on a worker",), queue=WORKER_QUEUE)
    with pytest.raises(ValueError, match="on a worker"):
        failed.get(timeout=60)


def test_lambda_path_through_the_event_source_emulator(target: Target) -> None:
    results = [add.apply_async((i, i)) for i in range(12)]

    stats = drain(target.source)

    assert [r.get(timeout=10) for r in results] == [2 * i for i in range(12)]
    assert (stats.records, stats.failures) == (12, 0)
    assert counts(target.source.queue_url) == (0, 0, 0)


def test_a_poison_record_fails_alone_and_is_redriven_to_the_dlq(target: Target) -> None:
    url = target.source.queue_url
    good = add.apply_async((2, 3))
    poison = "not a celery message"
    poison_id = aws.client("sqs").send_message(QueueUrl=url, MessageBody=poison)["MessageId"]
    messages = receive(url, 2)
    [received] = [m for m in messages if m["MessageId"] == poison_id]

    assert invoke(target.source, messages) == [poison_id]  # a partial batch response
    assert good.get(timeout=10) == 5

    # Back at once instead of after the queue's 30 s; then failed until SQS moves it.
    aws.client("sqs").change_message_visibility(
        QueueUrl=url, ReceiptHandle=received["ReceiptHandle"], VisibilityTimeout=0
    )
    stats = drain(target.source)
    assert stats.failures == MAX_RECEIVE_COUNT - 1
    assert counts(url) == (0, 0, 0)
    [dead] = receive(target.dlq_url, 1)
    assert dead["Body"] == poison


def test_countdown_is_a_native_sqs_delay(target: Target) -> None:
    published = time.time()
    result = stamp.apply_async(countdown=COUNTDOWN)

    assert counts(target.source.queue_url) == (0, 0, 1)  # SQS holds it, no consumer does
    drain(target.source)

    assert result.get(timeout=10) - published >= COUNTDOWN


def test_results_are_readable_by_a_stock_celery_client(target: Target, tmp_path: Path) -> None:
    ok = add.apply_async((20, 22))
    bad = fail.apply_async(("on lambda",))
    drain(target.source)
    settings = Settings.from_env()

    done = subprocess.run(
        [sys.executable, "-c", READER, settings.results_table, settings.endpoint_for("dynamodb")],
        input=json.dumps([ok.id, bad.id]),
        env=dict(os.environ),
        cwd=tmp_path,  # nothing of this project importable
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["project_modules"] == []
    assert seen["results"][ok.id]["get"] == 42
    assert seen["results"][bad.id]["state"] == states.FAILURE
    assert seen["results"][bad.id]["raised"] == {"exception": "ValueError", "args": ["on lambda"]}


def test_a_duplicate_delivery_runs_once(target: Target) -> None:
    url = target.source.queue_url
    done = uuid.uuid4().hex
    result = record.apply_async((done,))
    [original] = receive(url, 1)
    aws.client("sqs").send_message(QueueUrl=url, MessageBody=original["Body"])
    [copy] = receive(url, 1)

    # The copy is acked as a duplicate: its task ran earlier in this batch (its outcome is written
    # with the batch's; were that write to fail, the original would come back).
    assert invoke(target.source, [original, copy]) == []

    assert probe.calls(done) == 1
    assert result.state == states.SUCCESS
    assert counts(url) == (0, 0, 0)


# ---------------------------------------------------------------- DynamoDB's transactions


@pytest.mark.usefixtures("moto_transactions")
def test_simultaneous_claims_of_one_task_id_grant_it_once(target: Target) -> None:
    store = claim_store()
    granted: list[int] = []
    for _ in range(10):
        task_id = new_id()
        barrier = threading.Barrier(CONTENDERS)
        outcomes: list[Any] = []

        def contend(
            owner: str,
            task_id: str = task_id,
            barrier: Any = barrier,
            outcomes: list[Any] = outcomes,
        ) -> None:
            barrier.wait()
            outcomes.append(claim_or_error(store, task_id, owner))

        threads = [
            threading.Thread(target=contend, args=(f"lambda:{i}",)) for i in range(CONTENDERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(outcomes) == CONTENDERS
        assert all(isinstance(o, Claimed | Held) for o in outcomes), outcomes
        granted.append(sum(isinstance(o, Claimed) for o in outcomes))

    assert granted == [1] * 10


def test_a_refused_claim_loses_no_concurrent_write(target: Target) -> None:
    """On moto too: the embedded emulator's cancelled transaction puts back only the items it
    names (moto's own restored a copy of the whole table, losing writes made meanwhile)."""
    store = claim_store()
    held = new_id()
    assert store.claim([ClaimRequest(held)], "lambda:holder", time.time() + 300) == {
        held: Claimed()
    }
    written = [new_id() for _ in range(60)]
    stop = threading.Event()
    refusals: list[Any] = []

    def refused_claims() -> None:
        while not stop.is_set():
            refusals.append(claim_or_error(store, held, "lambda:other"))

    claimer = threading.Thread(target=refused_claims)
    claimer.start()
    try:
        for task_id in written:
            app.backend.store_result(task_id, task_id, states.SUCCESS)
    finally:
        stop.set()
        claimer.join()

    assert refusals and all(isinstance(o, Held) for o in refusals)
    assert states_of(written) == dict.fromkeys(written, states.SUCCESS)


# ---------------------------------------------------------------- the commands


def test_deploy_local_finds_localstack_through_localstack_host(
    localstack: LocalStack, localstack_cloud: Deployment
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["LOCALSTACK_HOST"] = f"{localstack.host}:{localstack.port}"
    env["AWS_ENDPOINT_URL_DYNAMODB"] = localstack.dynamodb_url

    out = cli("deploy-local", "--target", "localstack", env=env)

    assert out.returncode == 0, out.stderr
    exports = out.stdout.splitlines()
    assert f"export AWS_ENDPOINT_URL='{localstack.endpoint_url}'" in exports
    assert f"export AWS_ENDPOINT_URL_DYNAMODB='{localstack.dynamodb_url}'" in exports
    queue_urls = json.loads(localstack_cloud.environment["CELERY_QUEUE_URLS"])
    assert f"export CELERY_QUEUE_URLS='{json.dumps(queue_urls)}'" in exports


def test_commands_say_how_to_start_localstack_when_nothing_answers() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["LOCALSTACK_HOST"] = f"127.0.0.1:{free_port()}"

    for command in (["deploy-local"], ["up"]):
        out = cli(*command, "--target", "localstack", env=env)

        assert out.returncode == 1
        [line] = out.stderr.splitlines()
        assert line.startswith(f"Error: nothing answers at http://{env['LOCALSTACK_HOST']}")
        assert "`make localstack`" in line
