"""The operator's CLI against the local cloud: what it prints after a real mixed workload.

A module-level Celery app publishes with ``apply_async`` to a queue of this module's own (its DLQ
redrives after two receives) and the Lambda path consumes it (the event-source emulator, in this
process): successes, failures, a retry, a workflow (a chain whose second step starts a group) and
two poison messages. A poison task refuses to run (``Reject(requeue=True)``: the record goes
back to SQS) until its "fix" is deployed -- a marker in the users table -- so after two receives it
lands in the DLQ. Results go to a results table of this module's own, so counts are exact.

The commands run through click's ``CliRunner`` on the ``lambda`` group (one through the real
``celery`` executable) with ``--json``, and the JSON is asserted on. Side effects are counted in
the users table (``tests.apps.probe``), so "ran once" is checked from outside the consumer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import celery
import pytest
from botocore.exceptions import ClientError
from celery import Celery, chain, group, states
from celery._state import get_current_app
from celery.exceptions import Reject
from click.testing import CliRunner, Result
from kombu import Queue

from devtools.cli import lambda_
from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.event_source import consume, handler_from_source
from devtools.cloud.session import forget_backend, point_app_at
from infra.consumer import runtime
from infra.core import aws
from infra.core.config import transport_options
from infra.core.settings import Settings
from infra.store.items import task_key
from tests.apps import probe
from tests.sqs_helpers import counts, queue_with_dlq
from tests.tables import results_table_like_template
from tests.workers import ROOT

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(120, method="thread"),
]

QUEUE = "ops"
MAX_RECEIVE_COUNT = 2
FUNCTION_TIMEOUT = 10
"""Also how long a claim lasts: a rejected poison's claim holds its task id this long."""

app = Celery("ops", task_cls="infra.worker.task:ClaimingTask", set_as_current=False)
app.config_from_object("tasks.celeryconfig")


def configure(queue_url: str) -> None:
    options = transport_options(Settings.from_env())
    options["predefined_queues"] = {QUEUE: {"url": queue_url}}
    app.conf.update(
        broker_transport_options=options,
        task_default_queue=QUEUE,
        task_queues=(Queue(QUEUE),),
        task_routes=None,
        task_annotations=None,
    )


@app.task(name="ops.ok", shared=False)
def ok(marker: str) -> str:
    probe.record_call(marker)
    return marker


@app.task(name="ops.fail", shared=False)
def fail(marker: str) -> None:
    probe.record_call(marker)
    raise ValueError(f"boom {marker}")


@app.task(bind=True, name="ops.flaky", shared=False, max_retries=2)
def flaky(self: celery.Task, marker: str) -> int:
    probe.record_call(marker)
    if self.request.retries < 1:
        raise self.retry(countdown=1)
    retries: int = self.request.retries
    return retries


@app.task(name="ops.fanout", shared=False)
def fanout(marker: str, count: int) -> None:
    group(ok.si(f"{marker}-{i}") for i in range(count)).apply_async()


@app.task(name="ops.poison", shared=False)
def poison(marker: str) -> str:
    """Refuses to run until its fix is deployed (:func:`fix`); then counts the call."""
    if not probe.calls(f"fixed:{marker}"):
        raise Reject(f"{marker} is not fixed yet", requeue=True)
    probe.record_call(marker)
    return marker


def fix(marker: str) -> None:
    probe.record_call(f"fixed:{marker}")


# ---------------------------------------------------------------- fixtures


@dataclasses.dataclass(frozen=True)
class Workload:
    """What the module's workload published, by task id, and where."""

    source: EventSource
    dlq_url: str
    ok: tuple[str, ...]
    failed: tuple[str, ...]
    flaky: str
    chain_root: str
    chain_fanout: str
    poisons: dict[str, str]
    """Task id → marker of the two poison messages."""
    leases_end: float
    """When the claims the poisons' rejected attempts left end."""


def lease_until(task_id: str) -> float:
    """When the claim on ``task_id`` ends (0 when none is held)."""
    item = aws.client("dynamodb").get_item(
        TableName=Settings.from_env().results_table,
        Key={"id": {"S": task_key(task_id)}},
        ConsistentRead=True,
    )["Item"]
    return float(item.get("lease_until", {}).get("N", "0"))


def drain(source: EventSource) -> None:
    """The Lambda path until the queue is empty; failed records come back at once."""
    consume([source], handler_from_source, until_empty=True, failed_visibility=0, wait_seconds=1)


@pytest.fixture(scope="module")
def workload(cloud: Deployment) -> Iterator[Workload]:
    suffix = uuid.uuid4().hex[:8]
    queue = queue_with_dlq(f"ops-{suffix}", max_receive_count=MAX_RECEIVE_COUNT)
    table = results_table_like_template(f"ops-results-{suffix}")
    [template_source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    source = dataclasses.replace(
        template_source, queue_url=queue.url, queue_arn=queue.arn, timeout=FUNCTION_TIMEOUT
    )
    previous_app = get_current_app()
    with pytest.MonkeyPatch.context() as env:
        point_app_at(app, cloud)  # the cloud's environment, then this module's queue and table
        urls = {**json.loads(cloud.environment["CELERY_QUEUE_URLS"]), QUEUE: queue.url}
        env.setenv("CELERY_QUEUE_URLS", json.dumps(urls))
        env.setenv("CELERY_APP", f"{__name__}:app")
        env.setenv("RESULTS_TABLE", table)
        configure(queue.url)
        forget_backend(app)
        runtime.pipeline.cache_clear()
        yield _run_workload(source, queue.dlq_url)
        runtime.pipeline.cache_clear()
    forget_backend(app)
    previous_app.set_current()
    for url in (queue.url, queue.dlq_url):
        aws.client("sqs").delete_queue(QueueUrl=url)
    aws.client("dynamodb").delete_table(TableName=table)


def _run_workload(source: EventSource, dlq_url: str) -> Workload:
    oks = [ok.delay(uuid.uuid4().hex).id for _ in range(3)]
    failed = [fail.delay(uuid.uuid4().hex).id for _ in range(2)]
    retried = flaky.delay(uuid.uuid4().hex).id
    workflow = chain(ok.si(uuid.uuid4().hex), fanout.si(uuid.uuid4().hex, 2)).apply_async()
    poisons = {poison.delay(m).id: m for m in (uuid.uuid4().hex, uuid.uuid4().hex)}
    drain(source)
    return Workload(
        source=source,
        dlq_url=dlq_url,
        ok=tuple(oks),
        failed=tuple(failed),
        flaky=retried,
        chain_root=workflow.parent.id,
        chain_fanout=workflow.id,
        poisons=poisons,
        leases_end=max(lease_until(task_id) for task_id in poisons),
    )


# ---------------------------------------------------------------- helpers


def cli(*args: str, input: str | None = None) -> Result:
    """``celery -A <this app> lambda *args`` in this process."""
    obj = types.SimpleNamespace(app=app)
    return CliRunner().invoke(lambda_, list(args), obj=obj, input=input, terminal_width=200)


def cli_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def by_name(entries: Sequence[dict[str, Any]], key: str = "name") -> dict[str, dict[str, Any]]:
    return {entry[key]: entry for entry in entries}


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def wait_for(condition: Callable[[], bool], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# ---------------------------------------------------------------- queues


def test_queues_counts_each_queue_and_its_dlq(workload: Workload) -> None:
    report = cli_json("queues")

    queues = by_name(report["queues"])
    assert {"celery", "celery (dlq)", QUEUE, f"{QUEUE} (dlq)"} <= queues.keys()
    ops, dlq = queues[QUEUE], queues[f"{QUEUE} (dlq)"]
    assert (ops["visible"], ops["in_flight"], ops["delayed"]) == (0, 0, 0)
    assert (dlq["visible"], dlq["in_flight"], dlq["delayed"]) == (2, 0, 0)
    assert dlq["url"] == workload.dlq_url
    # On the emulator the age of the oldest message is left out, and said so.
    assert ops["oldest_age_seconds"] is None and "n/a" in report["age_source"]


def test_queues_through_the_celery_executable(workload: Workload) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "lambda", "queues", "--json"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert by_name(json.loads(run.stdout)["queues"])[f"{QUEUE} (dlq)"]["visible"] == 2


# ---------------------------------------------------------------- inspect


def test_inspect_lists_by_state_and_task_newest_first(workload: Workload) -> None:
    failures = cli_json("inspect", "--state", "failure", "--task", "ops.fail")["tasks"]
    assert {t["task_id"] for t in failures} == set(workload.failed)
    assert [t["updated_at"] for t in failures] == sorted(
        (t["updated_at"] for t in failures), reverse=True
    )
    assert all(t["state"] == "FAILURE" and t["queue"] == QUEUE for t in failures)
    assert all(t["consumer"].startswith("lambda:") for t in failures)

    oks = cli_json("inspect", "--task", "ops.ok", "--since", "10m", "--limit", "50")["tasks"]
    assert set(workload.ok) | {workload.chain_root} <= {t["task_id"] for t in oks}
    assert len(oks) == 3 + 1 + 2  # three, the chain's first step, the group's two

    successes = cli_json("inspect", "--state", "SUCCESS", "--limit", "2")["tasks"]
    assert len(successes) == 2 and {t["state"] for t in successes} == {"SUCCESS"}


def test_inspect_one_task_shows_outcome_retries_and_consumer(workload: Workload) -> None:
    failed = cli_json("inspect", workload.failed[0])["task"]
    assert failed["state"] == "FAILURE"
    assert failed["exception"].startswith("ValueError: boom ")
    assert "raise ValueError" in failed["traceback"]

    retried = cli_json("inspect", workload.flaky)["task"]
    assert (retried["state"], retried["retries"], retried["result"]) == ("SUCCESS", 1, 1)
    assert retried["consumer"].startswith("lambda:") and retried["date_done"]


def test_inspect_shows_a_workflow_as_a_tree(workload: Workload) -> None:
    shown = cli_json("inspect", workload.chain_root)
    tree = shown["tree"]
    assert (tree["task_name"], tree["state"]) == ("ops.ok", "SUCCESS")
    [step] = tree["children"]
    assert (step["id"], step["task_name"]) == (workload.chain_fanout, "ops.fanout")
    [members] = step["children"]
    assert members["group"] is True
    assert [(m["task_name"], m["state"]) for m in members["children"]] == [
        ("ops.ok", "SUCCESS")
    ] * 2

    human = cli("inspect", workload.chain_root).output  # the same, as a rich panel and tree
    assert f"task {workload.chain_root}" in human and f"group {members['id']}" in human

    child = cli_json("inspect", workload.chain_fanout)
    assert child["parent"]["task_id"] == workload.chain_root
    assert child["task"]["root_id"] == workload.chain_root


def test_inspect_unknown_id_is_one_clear_line(workload: Workload) -> None:
    result = cli("inspect", "no-such-task")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: no task no-such-task in {Settings.from_env().results_table} "
        "(unknown id, or its result expired)"
    ]


# ---------------------------------------------------------------- stats


def test_stats_counts_by_state_and_task(workload: Workload) -> None:
    report = cli_json("stats", "--since", "10m")

    tasks = {(t["task_name"], t["queue"]): t for t in report["tasks"]}
    assert tasks[("ops.ok", QUEUE)]["states"] == {"SUCCESS": 6}
    assert tasks[("ops.fail", QUEUE)]["states"] == {"FAILURE": 2}
    assert tasks[("ops.flaky", QUEUE)]["states"] == {"SUCCESS": 1}
    assert tasks[("ops.fanout", QUEUE)]["states"] == {"SUCCESS": 1}
    assert report["by_state"]["SUCCESS"] == 8 and report["by_state"]["FAILURE"] == 2
    # The rejected poisons never recorded a state of their own: their claims made PENDING items.
    assert report["by_state"]["PENDING"] == 2
    assert tasks[("ops.ok", QUEUE)]["p50_ms"] is None and "n/a" in report["durations"]


# ---------------------------------------------------------------- dlq list / show


def test_dlq_list_decodes_the_poison_messages(workload: Workload) -> None:
    listed = cli_json("dlq", "list", "--queue", QUEUE)["messages"]

    letters = by_name(listed, "task_id")
    assert letters.keys() == workload.poisons.keys()
    for task_id, marker in workload.poisons.items():
        letter = letters[task_id]
        assert letter["task_name"] == "ops.poison"
        assert marker in letter["args"]
        assert letter["receives"] >= MAX_RECEIVE_COUNT
        assert letter["sent_at"] <= letter["first_received_at"]
    # Looking took nothing away and left nothing hidden.
    assert counts(workload.dlq_url) == (2, 0, 0)


def test_dlq_show_one_message_in_full(workload: Workload) -> None:
    [first, _] = cli_json("dlq", "list", "--queue", QUEUE)["messages"]

    shown = cli_json("dlq", "show", first["message_id"])

    assert shown["queue"] == QUEUE and shown["task"]["task_id"] == first["task_id"]
    assert shown["task"]["args"] == [workload.poisons[first["task_id"]]]
    assert shown["attributes"]["SentTimestamp"]
    assert counts(workload.dlq_url) == (2, 0, 0)

    missing = cli("dlq", "show", "no-such-message")
    assert missing.exit_code == 1 and "Error: no message no-such-message" in missing.output


# ---------------------------------------------------------------- dlq redrive / purge


def test_redrive_brings_the_poison_back_and_it_completes_once_fixed(workload: Workload) -> None:
    task_id, marker = next(iter(workload.poisons.items()))
    [letter] = [m for m in cli_json("dlq", "list")["messages"] if m["task_id"] == task_id]
    fix(marker)
    wait_until(workload.leases_end)  # the rejected attempt's claim must be over

    report = cli_json("dlq", "redrive", "--id", letter["message_id"])

    assert report == {"moved": [letter["message_id"]], "kept": [], "unknown": []}
    drain(workload.source)
    assert cli_json("inspect", task_id)["task"]["state"] == states.SUCCESS
    assert probe.calls(marker) == 1
    remaining = {m["task_id"] for m in cli_json("dlq", "list", "--queue", QUEUE)["messages"]}
    assert task_id not in remaining


class DeleteFault:
    """DeleteMessageBatch fails, as a redrive killed between its send and its delete would."""

    def __init__(self) -> None:
        self.receipts: list[str] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.receipts += [entry["ReceiptHandle"] for entry in json.loads(params["body"])["Entries"]]
        raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, model.name)


def test_an_interrupted_redrive_loses_nothing_and_runs_once(workload: Workload) -> None:
    task_id, marker = list(workload.poisons.items())[1]
    [letter] = [m for m in cli_json("dlq", "list")["messages"] if m["task_id"] == task_id]
    fix(marker)
    fault, events = DeleteFault(), aws.client("sqs").meta.events
    events.register("before-call.sqs.DeleteMessageBatch", fault)
    try:
        interrupted = cli("dlq", "redrive", "--id", letter["message_id"])
    finally:
        events.unregister("before-call.sqs.DeleteMessageBatch", fault)
    assert interrupted.exit_code == 1 and "redrive interrupted" in interrupted.output
    assert counts(workload.source.queue_url)[0] == 1  # sent ...
    assert counts(workload.dlq_url)[1] == 1  # ... and still in the DLQ, hidden for a while
    # That while passes: the message shows in the DLQ again, and the operator redrives again.
    for receipt in fault.receipts:
        aws.client("sqs").change_message_visibility(
            QueueUrl=workload.dlq_url, ReceiptHandle=receipt, VisibilityTimeout=0
        )
    assert cli_json("dlq", "redrive", "--queue", QUEUE)["moved"] == [letter["message_id"]]
    assert counts(workload.source.queue_url)[0] == 2  # two copies of one task

    wait_until(workload.leases_end)
    drain(workload.source)

    assert probe.calls(marker) == 1  # run once: the second copy met a finished task
    assert cli_json("inspect", task_id)["task"]["state"] == states.SUCCESS
    assert counts(workload.source.queue_url) == (0, 0, 0)
    assert counts(workload.dlq_url) == (0, 0, 0)


def test_redrive_of_an_empty_dlq_and_purge_with_confirmation(workload: Workload) -> None:
    wait_for(lambda: counts(workload.dlq_url) == (0, 0, 0), "the DLQ to be empty")
    empty = cli("dlq", "redrive", "--queue", QUEUE)
    assert empty.exit_code == 0 and "nothing to redrive" in empty.output

    aws.client("sqs").send_message(QueueUrl=workload.dlq_url, MessageBody="not a task")
    [junk] = cli_json("dlq", "list", "--queue", QUEUE)["messages"]
    assert junk["task_name"] is None and "neither a JSON object nor base64" in junk["problem"]

    declined = cli("dlq", "purge", "--queue", QUEUE, input="n\n")
    assert declined.exit_code == 1 and counts(workload.dlq_url)[0] == 1
    assert cli("dlq", "purge", "--queue", QUEUE, "--yes").exit_code == 0
    wait_for(lambda: counts(workload.dlq_url) == (0, 0, 0), "the purge")
