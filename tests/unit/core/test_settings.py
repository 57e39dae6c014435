"""Settings from an environment mapping: defaults, parsing and clear refusals."""

from __future__ import annotations

import pytest

from infra.core.errors import ConfigurationError
from infra.core.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.app, s.region, s.broker_url, s.endpoint_url) == (
        "tasks:app",
        "us-east-1",
        "sqs://",
        None,
    )
    assert (s.results_table, s.results_bucket, dict(s.queue_urls)) == (
        "celery-results",
        "celery-results",
        {},
    )


def test_values_and_per_service_endpoints() -> None:
    s = Settings.from_env(
        {
            "CELERY_APP": "proj.celery:app",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
            "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:8000",
            "CELERY_QUEUE_URLS": '{"celery": "http://q/1/celery", "jobs.fifo": "http://q/1/jobs.fifo"}',
            "RESULTS_TABLE": "t",
            "RESULTS_BUCKET": "b",
        }
    )
    assert s.region == "eu-west-1"
    assert s.endpoint_for("sqs") == "http://127.0.0.1:5000"
    assert s.endpoint_for("dynamodb") == "http://127.0.0.1:8000"
    assert s.queue_urls["jobs.fifo"] == "http://q/1/jobs.fifo"
    assert (s.results_table, s.results_bucket, s.app) == ("t", "b", "proj.celery:app")


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"CELERY_QUEUE_URLS": "{not json"}, "not valid JSON"),
        ({"CELERY_QUEUE_URLS": '["http://q"]'}, "JSON object"),
        ({"CELERY_QUEUE_URLS": '{"celery": ""}'}, "JSON object"),
        ({"CELERY_QUEUE_URLS": '{"jobs.fifo": "http://q/1/jobs"}'}, "disagree on FIFO"),
        ({"CELERY_APP": "tasks"}, "module:attribute"),
    ],
)
def test_bad_values_are_refused_with_the_reason(env: dict[str, str], reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("raw", "expected"), [("off", False), ("0", False), ("ON", True), ("", True)]
)
def test_claims_switch(raw: str, expected: bool) -> None:
    assert Settings.from_env({"CELERY_LAMBDA_CLAIMS": raw}).claims is expected


def test_claims_switch_refuses_nonsense() -> None:
    with pytest.raises(ConfigurationError, match="on/off"):
        Settings.from_env({"CELERY_LAMBDA_CLAIMS": "maybe"})


@pytest.mark.parametrize(("raw", "expected"), [("", 1000), ("0", 0), ("250", 250)])
def test_result_flush(raw: str, expected: int) -> None:
    assert Settings.from_env({"CELERY_LAMBDA_RESULT_FLUSH_MS": raw}).result_flush_ms == expected


@pytest.mark.parametrize(("raw", "reason"), [("-1", "between 0 and 900000"), ("1s", "whole")])
def test_result_flush_refuses_nonsense(raw: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=f"CELERY_LAMBDA_RESULT_FLUSH_MS.*{reason}"):
        Settings.from_env({"CELERY_LAMBDA_RESULT_FLUSH_MS": raw})
