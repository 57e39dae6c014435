"""The handler under fuzzed SQS records: every record that is not a task message of the app is
reported back (for the redrive policy to handle), the handler itself never raises, and no task
runs. Nothing here reaches AWS: no record gets far enough to claim or run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.signals import task_prerun
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.cloud.deploy import EventSource
from devtools.cloud.lambda_events import build_event, make_context
from handlers.sqs import handler
from infra.consumer import runtime
from tests.fuzzing import examples

SOURCE = EventSource(
    function="WorkerFunction",
    handler="handlers.sqs.handler",
    queue_url="http://127.0.0.1:1/123456789012/fuzz",
    queue_arn="arn:aws:sqs:us-east-1:123456789012:fuzz",
    batch_size=10,
    batching_window=0,
    timeout=120,
    report_batch_item_failures=True,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
ENVELOPES = st.fixed_dictionaries(
    {
        "body": JSON.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
        "properties": st.dictionaries(st.sampled_from(["body_encoding", "x"]), JSON, max_size=2),
    },
    optional={
        "content-type": st.sampled_from(["application/json", "application/x-python-serialize"]),
        "headers": st.dictionaries(st.sampled_from(["task", "id", "eta", "compression"]), JSON),
    },
).map(lambda e: base64.b64encode(json.dumps(e).encode()).decode())
BODIES = st.text() | ENVELOPES


@pytest.fixture(scope="module", autouse=True)
def probe_app() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CELERY_APP", "tests.apps.probe:app")
        runtime.pipeline.cache_clear()
        yield
    runtime.pipeline.cache_clear()


@pytest.fixture(scope="module")
def started() -> Iterator[list[str]]:
    names: list[str] = []

    def note(task: Any = None, **_: Any) -> None:
        names.append(task.name)

    task_prerun.connect(note, weak=False)
    yield names
    task_prerun.disconnect(note)


def _messages(bodies: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "MessageId": str(uuid.uuid4()),
            "ReceiptHandle": "rh",
            "Body": body,
            "MD5OfBody": hashlib.md5(body.encode("utf-8", "surrogatepass")).hexdigest(),
            "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795700000000"},
        }
        for body in bodies
    ]


@settings(
    max_examples=examples(1000),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(BODIES, min_size=1, max_size=5))
def test_fuzzed_records_are_reported_and_nothing_runs(
    started: list[str], capsys: pytest.CaptureFixture[str], bodies: list[str]
) -> None:
    messages = _messages(bodies)

    # A generous memory size: the test process is far bigger than a function's, and the memory
    # guard would (rightly) stop and recycle a container that keeps growing.
    context = make_context(SOURCE, memory_limit_in_mb=10240)
    response = handler(build_event(messages, SOURCE, "us-east-1"), context)

    failed = [item["itemIdentifier"] for item in response["batchItemFailures"]]
    assert failed == [m["MessageId"] for m in messages]
    assert started == []
    capsys.readouterr()  # keep the captured output of a thousand invocations small
