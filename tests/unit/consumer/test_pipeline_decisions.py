"""The Lambda consumer's decisions, through the pipeline and the batch processor, with in-memory
fakes of its seams (``tests/fakes.py``): no AWS, no network.

Tasks are real Celery messages (``tests.unit.celery_messages``) run by Celery's tracer for an app
whose results live in Celery's in-memory cache backend; claims, rate turns, the batch's result
writer and the queue records are handed back to are fakes that record what they were asked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery, states
from celery.exceptions import Ignore, Reject

from infra.consumer.batch import Consumer
from infra.consumer.handback import Requeuer
from infra.consumer.memory import MemoryGuard
from infra.consumer.pipeline import Pipeline
from infra.consumer.runner import Runner
from infra.consumer.settlement import Settlement
from infra.core.errors import StoreError
from infra.core.observability import (
    METRIC_CLAIM_HELD,
    METRIC_DELAYED,
    METRIC_DUPLICATE,
    METRIC_EXPIRED,
    METRIC_RATE_LIMITED,
    METRIC_REVOKED,
    METRIC_SUCCEEDED,
    task_metrics,
)
from infra.core.settings import Settings
from infra.store.claim_requests import Held, Revoked, Terminal
from tests.fakes import (
    FakeClaims,
    FakeContext,
    FakeOutcomeWriter,
    FakePacer,
    FakeQueue,
    sqs_event,
    sqs_record,
)
from tests.unit.celery_messages import capture, envelope_of, make_app

SETTINGS = Settings()
ran: list[str] = []
"""Task ids whose body ran, in order."""

app = Celery("decisions", set_as_current=False)
app.conf.update(result_backend="cache+memory://", task_default_queue="celery")


@app.task(name="decisions.add", bind=True, shared=False)
def add(self: Any, a: int, b: int) -> int:
    ran.append(self.request.id)
    return a + b


@app.task(name="decisions.paced", bind=True, shared=False, rate_limit="1/m")
def paced(self: Any) -> None:
    ran.append(self.request.id)


@app.task(name="decisions.ignored", bind=True, shared=False)
def ignored(self: Any) -> None:
    ran.append(self.request.id)
    raise Ignore("ended without a state, as Task.replace ends")


@app.task(name="decisions.rejected", bind=True, shared=False)
def rejected(self: Any) -> None:
    ran.append(self.request.id)
    raise Reject("back to the queue", requeue=True)


@pytest.fixture(autouse=True)
def fresh() -> None:
    ran.clear()
    task_metrics.flush(lambda _: None)


def body(
    task: str = "decisions.add", args: tuple[Any, ...] = (1, 2), **options: Any
) -> tuple[str, str]:
    """A real SQS body of ``task`` published with ``options``, and its task id."""
    publisher = make_app()
    (sent,) = capture(publisher, lambda: publisher.send_task(task, args, **options))
    return sent, envelope_of(sent)["headers"]["id"]


class Consumed:
    """One invocation's result: the failures it reported and the fakes it talked to."""

    def __init__(self, out: pytest.CaptureFixture[str], **fakes: Any) -> None:
        self.out = out
        self.claims: FakeClaims = fakes.get("claims") or FakeClaims()
        self.pacer: FakePacer = fakes.get("pacer") or FakePacer()
        self.queue: FakeQueue = fakes.get("queue") or FakeQueue()
        self.results: FakeOutcomeWriter | None = fakes.get("results")
        self.metrics: dict[str, list[float]] = {}
        self.failed: list[str] = []

    def pipeline(self) -> Pipeline:
        return Pipeline(
            app=app,
            runner=Runner(app, hostname="lambda@unit"),
            settings=SETTINGS,
            outcomes=Settlement(SETTINGS, self.results),
            requeue=Requeuer(lambda: self.queue, SETTINGS),
            claims=self.claims,
            limiter=self.pacer,
            memory=MemoryGuard(measure=lambda: 0),
        )

    def run(self, *records: dict[str, Any]) -> Consumed:
        pipe = self.pipeline()
        self.out.readouterr()
        response = Consumer(pipeline=lambda: pipe).handle(sqs_event(records), FakeContext())
        self.failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
        for line in self.out.readouterr().out.splitlines():
            emf = json.loads(line)
            if "_aws" not in emf:
                continue  # a log line
            for definition in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                value = emf[definition["Name"]]
                values = value if isinstance(value, list) else [value]
                self.metrics.setdefault(definition["Name"], []).extend(values)
        return self


Consume = Callable[..., Consumed]


@pytest.fixture
def consume(capsys: pytest.CaptureFixture[str]) -> Consume:
    """``consume(*records, **fakes)``: one invocation with the records, through those fakes."""

    def invoke(*records: dict[str, Any], **fakes: Any) -> Consumed:
        return Consumed(capsys, **fakes).run(*records)

    return invoke


def state_of(task_id: str) -> str:
    return str(app.AsyncResult(task_id).state)


def test_a_claimed_task_runs_and_is_acked(consume: Consume) -> None:
    sent, task_id = body()
    record = sqs_record(sent)

    done = consume(record)

    assert done.failed == []
    assert ran == [task_id]
    assert state_of(task_id) == states.SUCCESS
    assert done.claims.prepared == [task_id]
    assert done.metrics[METRIC_SUCCEEDED] == [1.0]


@pytest.mark.parametrize(
    ("task", "failed"), [("decisions.ignored", False), ("decisions.rejected", True)]
)
def test_an_attempt_that_ends_without_a_state_gives_up_its_claim(
    consume: Consume, task: str, failed: bool
) -> None:
    sent, task_id = body(task, ())
    record = sqs_record(sent)

    done = consume(record)

    assert ran == [task_id]
    assert done.claims.released == [task_id]
    assert done.failed == ([record["messageId"]] if failed else [])


def test_a_task_that_ends_with_a_state_keeps_its_claim_to_the_write(consume: Consume) -> None:
    sent, _ = body()

    done = consume(sqs_record(sent))

    assert done.claims.released == []  # the SUCCESS write releases it


def test_a_duplicate_is_acked_without_running(consume: Consume) -> None:
    sent, task_id = body()

    done = consume(sqs_record(sent), claims=FakeClaims({task_id: Terminal(states.SUCCESS)}))

    assert done.failed == []
    assert ran == []
    assert done.metrics[METRIC_DUPLICATE] == [1.0]
    assert done.queue.sent == done.queue.held == []


def test_a_claim_held_elsewhere_is_reported_as_a_batch_item_failure(consume: Consume) -> None:
    sent, task_id = body()
    record = sqs_record(sent)
    claims = FakeClaims({task_id: Held(owner="lambda:other", lease_until=2e9)})

    done = consume(record, claims=claims)

    assert done.failed == [record["messageId"]]
    assert ran == []
    assert done.metrics[METRIC_CLAIM_HELD] == [1.0]
    assert state_of(task_id) == states.PENDING


def test_a_revoked_task_records_revoked_and_is_acked(consume: Consume) -> None:
    sent, task_id = body()
    claims = FakeClaims({task_id: Revoked(by="root-1")})

    done = consume(sqs_record(sent), claims=claims)

    assert done.failed == []
    assert ran == []
    assert state_of(task_id) == states.REVOKED
    assert done.metrics[METRIC_REVOKED] == [1.0]


def test_an_expired_task_records_revoked_without_a_claim(consume: Consume) -> None:
    sent, task_id = body(expires=datetime.now(UTC) - timedelta(seconds=5))

    done = consume(sqs_record(sent))

    assert done.failed == []
    assert ran == []
    assert state_of(task_id) == states.REVOKED
    assert done.metrics[METRIC_EXPIRED] == [1.0]
    assert done.claims.prepared == done.claims.asked == []


def test_a_future_eta_is_handed_back_delayed(consume: Consume) -> None:
    sent, task_id = body(eta=datetime.now(UTC) + timedelta(seconds=120))
    record = sqs_record(sent)

    done = consume(record)

    assert done.failed == []  # acked: the copy re-sent with a delay replaces it
    assert ran == []
    [resent] = done.queue.sent
    assert resent["MessageBody"] == sent
    assert 119 <= resent["DelaySeconds"] <= 120
    assert resent["QueueUrl"].endswith("/000000000000/celery")
    assert done.queue.held == []
    assert done.claims.prepared == done.claims.asked == []
    assert done.metrics[METRIC_DELAYED] == [1.0]


def test_a_future_eta_on_fifo_is_held_and_reported(consume: Consume) -> None:
    sent, _ = body(eta=datetime.now(UTC) + timedelta(hours=1))
    record = sqs_record(sent, queue="tasks.fifo", group="g")

    done = consume(record)

    assert done.failed == [record["messageId"]]  # it comes back when the hold ends
    assert ran == []
    [hold] = done.queue.held
    assert hold["ReceiptHandle"] == record["receiptHandle"]
    assert 3599 <= hold["VisibilityTimeout"] <= 3600
    assert done.queue.sent == []


def test_a_long_rate_limit_wait_is_handed_back_without_a_receive(consume: Consume) -> None:
    sent, task_id = body("decisions.paced", ())
    record = sqs_record(sent)

    done = consume(record, pacer=FakePacer({"decisions.paced": 45.0}))

    assert done.failed == []  # re-sent, not reported: no receive of the queue's count is spent
    assert ran == []
    [resent] = done.queue.sent
    assert resent["DelaySeconds"] == 45
    assert done.queue.held == []
    assert done.pacer.asked == ["decisions.paced"]
    assert done.claims.prepared == done.claims.asked == []  # no claim held while it waits
    assert done.metrics[METRIC_RATE_LIMITED] == [1.0]


def test_a_granted_turn_runs_the_paced_task(consume: Consume) -> None:
    sent, task_id = body("decisions.paced", ())

    done = consume(sqs_record(sent))

    assert done.failed == []
    assert ran == [task_id]
    assert done.claims.asked == [task_id]  # claimed when its turn came, not ahead of the batch
    assert done.claims.prepared == []


def test_a_claim_store_failure_reports_the_record(consume: Consume) -> None:
    sent, _ = body()
    record = sqs_record(sent)

    done = consume(record, claims=FakeClaims(error=StoreError("table unreachable")))

    assert done.failed == [record["messageId"]]
    assert ran == []


def test_an_outcome_that_is_not_stored_reports_its_record(consume: Consume) -> None:
    (sent, task_id), (other, _) = body(), body()
    record, stored = sqs_record(sent), sqs_record(other)
    results = FakeOutcomeWriter(failing={task_id: "throttled"})

    done = consume(record, stored, results=results)

    assert len(ran) == 2
    assert results.flushes == 1
    assert done.failed == [record["messageId"]]


def test_fifo_stops_at_the_first_failure_and_reports_the_rest_of_the_group(
    consume: Consume,
) -> None:
    (held, held_id), (second, _), (third, _), (other, other_id) = (body() for _ in range(4))
    group = [sqs_record(b, queue="tasks.fifo", group="g") for b in (held, second, third)]
    elsewhere = sqs_record(other, queue="tasks.fifo", group="h")
    claims = FakeClaims({held_id: Held(owner="lambda:other", lease_until=2e9)})

    done = consume(*group, elsewhere, claims=claims)

    assert done.failed == [r["messageId"] for r in group]
    assert ran == [other_id]  # the other group goes on
    assert done.claims.asked == [held_id, other_id]
