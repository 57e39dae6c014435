"""The template's dashboard, alarms and saved queries use only what the code emits.

Metric names come from infra/core/observability.py (the vocabulary); task metrics are searched with
their three dimensions, consumer metrics with the service alone; the saved Logs Insights queries
read the fields of the "task finished" line both consumers write.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from devtools.cloud.template import load_template
from infra.core.observability import CONSUMER_METRICS, NAMESPACE, SERVICE, TASK_METRICS

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return dict(load_template()["Resources"])


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


@pytest.fixture(scope="module")
def dashboard(resources: dict[str, Any]) -> dict[str, Any]:
    [board] = of_type(resources, "AWS::CloudWatch::Dashboard").values()
    body = board["Properties"]["DashboardBody"]["Fn::Sub"]
    return dict(json.loads(body))


def _searched(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(dimension schema, metric name) of every SEARCH in the dashboard."""
    text = json.dumps(dashboard)
    return re.findall(r"\{CeleryLambda,([\w,]+)\} MetricName=\\+\"(\w+)\\+\"", text)


def _listed(dashboard: dict[str, Any], namespace: str) -> list[list[Any]]:
    return [
        line
        for widget in dashboard["widgets"]
        for line in widget["properties"]["metrics"]
        if line and line[0] == namespace
    ]


def test_task_metrics_are_searched_with_their_three_dimensions(dashboard: dict[str, Any]) -> None:
    searched = _searched(dashboard)

    assert searched, "the dashboard searches no task metric"
    for schema, name in searched:
        assert name in TASK_METRICS, name
        assert schema.split(",") == ["queue", "service", "task_name"]


def test_consumer_metrics_are_listed_with_the_service_dimension(dashboard: dict[str, Any]) -> None:
    listed = _listed(dashboard, NAMESPACE)

    assert listed
    for line in listed:
        assert line[1] in CONSUMER_METRICS, line[1]
        assert line[2:4] == ["service", SERVICE]


def test_the_dashboard_shows_what_operators_ask_for(dashboard: dict[str, Any]) -> None:
    sqs = {line[1] for line in _listed(dashboard, "AWS/SQS")}
    function = {line[1] for line in _listed(dashboard, "AWS/Lambda")}
    tasks = {name for _, name in _searched(dashboard)}

    assert {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"} <= sqs
    assert any("DeadLetter" in json.dumps(line) for line in _listed(dashboard, "AWS/SQS"))
    assert {"Errors", "Throttles", "ConcurrentExecutions"} <= function
    assert {"TasksSucceeded", "TasksFailed", "TaskDuration", "QueueWait"} <= tasks
    percentiles = re.findall(r"'(p\d\d)', 60\)", json.dumps(dashboard))
    assert {"p50", "p95", "p99"} <= set(percentiles)


def test_alarms_on_our_namespace_use_consumer_metrics(resources: dict[str, Any]) -> None:
    alarms = of_type(resources, "AWS::CloudWatch::Alarm")
    ours = [a["Properties"] for a in alarms.values() if a["Properties"]["Namespace"] == NAMESPACE]

    assert [a["MetricName"] for a in ours] == ["DecodeFailures"]
    assert ours[0]["Dimensions"] == [{"Name": "service", "Value": SERVICE}]


def test_every_queue_and_dlq_is_alarmed(resources: dict[str, Any]) -> None:
    queues = set(of_type(resources, "AWS::SQS::Queue"))
    alarmed = {
        a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["Namespace"] == "AWS/SQS"
    }

    assert alarmed == queues


def test_saved_queries_read_fields_the_outcome_line_has(resources: dict[str, Any]) -> None:
    queries = of_type(resources, "AWS::Logs::QueryDefinition")
    emitters = "".join(
        (ROOT / path).read_text()
        for path in (
            "infra/consumer/pipeline.py",
            "infra/consumer/record_metrics.py",
            "infra/worker/signals.py",
        )
    )

    assert len(queries) >= 2
    for query in queries.values():
        text = query["Properties"]["QueryString"]
        assert 'message = "task finished"' in text or "root_id" in text
        for field in re.findall(
            r"\b(task_name|task_id|root_id|parent_id|duration_ms|state|exception)\b", text
        ):
            assert f"{field}=" in emitters or field in ("task_id", "task_name"), field
