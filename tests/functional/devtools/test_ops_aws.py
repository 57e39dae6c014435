"""The operator's CLI on its AWS paths, against moto: ``--stack`` outputs and CloudWatch ages.

moto's CloudFormation describes a stack whose outputs name the session's deployed queues and
table, as ``sam deploy`` would; moto's CloudWatch holds an SQS age metric put here, as AWS
publishes one per queue every minute.
"""

from __future__ import annotations

import json
import types
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result

from devtools.cli import lambda_
from devtools.cloud.deploy import Deployment
from devtools.ops.queues import oldest_age_from_cloudwatch, queue_depths, queue_pairs
from devtools.ops.target import target_from_stack
from infra.core import aws
from infra.core.settings import Settings
from tasks import app

# moto's CloudFormation needs one resource; this one does nothing.
PLACEHOLDER = {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}


def cli(*args: str) -> Result:
    return CliRunner().invoke(lambda_, list(args), obj=types.SimpleNamespace(app=app))


def create_stack(outputs: dict[str, str]) -> str:
    name = f"ops-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": PLACEHOLDER,
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    aws.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    return name


@pytest.fixture(scope="module")
def stack(cloud: Deployment) -> Iterator[str]:
    """A stack whose outputs are the session deployment's, under the template's output names."""
    name = create_stack(
        {
            "CeleryQueueUrls": cloud.outputs["CeleryQueueUrls"],
            "ResultsTableName": cloud.outputs["ResultsTableName"],
            "ResultsBucketName": cloud.outputs["ResultsBucketName"],
        }
    )
    yield name
    aws.client("cloudformation").delete_stack(StackName=name)


def test_a_stacks_outputs_name_what_the_commands_read(stack: str, cloud: Deployment) -> None:
    env = {"AWS_ENDPOINT_URL": cloud.endpoint_url or "", "CELERY_QUEUE_URLS": ""}

    target = target_from_stack(stack, aws.client("cloudformation"), env)

    assert target.origin == f"stack {stack}"
    assert dict(target.settings.queue_urls) == json.loads(cloud.outputs["CeleryQueueUrls"])
    assert target.settings.results_table == cloud.outputs["ResultsTableName"]


def test_commands_take_their_names_from_a_stack(
    stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELERY_QUEUE_URLS")  # nothing from the environment but the endpoint

    result = cli("queues", "--stack", stack, "--json")

    assert result.exit_code == 0, result.output
    names = {q["name"] for q in json.loads(result.stdout)["queues"]}
    assert {"celery", "celery (dlq)", "low-priority (dlq)", "high-priority"} <= names
    assert cli("stats", "--stack", stack, "--json").exit_code == 0


def test_a_missing_stack_is_one_clear_line(cloud: Deployment) -> None:
    result = cli("queues", "--stack", "no-such-stack")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no stack 'no-such-stack' in this account and region"


def test_a_stack_that_is_not_ours_is_one_clear_line(cloud: Deployment) -> None:
    name = create_stack({"Something": "else"})
    try:
        result = cli("inspect", "--stack", name)
    finally:
        aws.client("cloudformation").delete_stack(StackName=name)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: stack {name!r} has no output CeleryQueueUrls, ResultsTableName, "
        "ResultsBucketName: is it a celery-lambda stack?"
    )


def test_without_a_deployment_the_commands_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_QUEUE_URLS")
    result = cli("dlq", "list")
    assert result.exit_code == 1
    assert "CELERY_QUEUE_URLS is not set: `source .celery-lambda/env.sh`" in result.output


def test_on_aws_the_age_of_the_oldest_message_comes_from_cloudwatch(cloud: Deployment) -> None:
    settings = Settings.from_env()
    sqs, cloudwatch = aws.client("sqs"), aws.client("cloudwatch")
    pairs = [p for p in queue_pairs(sqs, settings) if p.name == "celery"]
    now = datetime.now(UTC)
    cloudwatch.put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": "celery-lambda-celery"}],
                "Timestamp": now - timedelta(minutes=minutes),
                "Value": value,
                "Unit": "Seconds",
            }
            for minutes, value in ((3, 30.0), (1, 90.0))
        ],
    )

    depths = queue_depths(sqs, pairs, oldest_age_from_cloudwatch(cloudwatch, lambda: now))

    assert [(d.name, d.oldest_age) for d in depths] == [("celery", 90.0), ("celery (dlq)", None)]
