"""The result backend against moto: a result too large for an item goes to S3 behind a pointer,
comes back whole, and leaves no object behind when it is dropped, replaced or forgotten."""

from __future__ import annotations

from celery import states
from celery.result import AsyncResult

from infra.core import aws
from infra.core.settings import Settings
from infra.store.results import LARGE_RESULT_BYTES, DynamoDBBackend
from tasks import app
from tests.functional.store.support import ONE_MB, item, new_id, request_for


def s3_keys(task_id: str) -> list[str]:
    bucket = Settings.from_env().results_bucket
    response = aws.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"results/{task_id}/")
    return [o["Key"] for o in response.get("Contents", [])]


def test_a_large_result_goes_to_s3_and_comes_back(
    backend: DynamoDBBackend, calls: list[str]
) -> None:
    task_id = new_id()
    value = {"blob": "x" * ONE_MB, "n": 1}

    backend.store_result(task_id, value, states.SUCCESS, request=request_for())

    assert calls == ["s3:PutObject", "dynamodb:UpdateItem"]
    stored = item(task_id)
    [key] = s3_keys(task_id)
    assert stored["result_object"]["S"].endswith(key)
    assert len(stored["result"]["B"]) < 1024
    assert stored["status"] == {"S": states.SUCCESS}
    calls.clear()
    reader = DynamoDBBackend(app=app)
    assert AsyncResult(task_id, backend=reader, app=app).get(timeout=1) == value
    assert calls == ["dynamodb:GetItem", "s3:GetObject"]
    assert dict(DynamoDBBackend(app=app).get_many([task_id], timeout=1))[task_id]["result"] == value

    AsyncResult(task_id, backend=backend, app=app).forget()

    assert s3_keys(task_id) == []
    assert item(task_id) == {}


def test_a_large_failure_round_trips_with_its_traceback(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * (LARGE_RESULT_BYTES // 8)

    backend.mark_as_failure(task_id, KeyError("missing"), traceback=traceback)

    assert len(s3_keys(task_id)) == 1
    result = AsyncResult(task_id, backend=DynamoDBBackend(app=app), app=app)
    assert result.state == states.FAILURE
    assert isinstance(result.result, KeyError)
    assert result.traceback == traceback


def test_a_dropped_large_state_leaves_no_object(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    backend.store_result(task_id, 1, states.SUCCESS)

    backend.store_result(task_id, {"blob": "x" * ONE_MB}, "PROGRESS")

    assert s3_keys(task_id) == []
    assert backend.get_task_meta(task_id, cache=False)["result"] == 1


def test_a_small_result_after_a_large_one_drops_the_pointer(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    backend.store_result(task_id, {"blob": "x" * ONE_MB}, "PROGRESS")
    assert "result_object" in item(task_id)

    backend.store_result(task_id, 5, states.SUCCESS)

    assert "result_object" not in item(task_id)
    assert AsyncResult(task_id, backend=DynamoDBBackend(app=app), app=app).get(timeout=1) == 5
