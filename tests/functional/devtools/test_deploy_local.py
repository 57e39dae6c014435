"""``celery -A tasks lambda deploy-local`` as a user runs it, against the session's emulator."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.cloud.deploy import Deployment, deploy
from devtools.cloud.emulator import free_port
from infra.core import aws
from infra.core.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "lambda", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def parse_exports(text: str) -> dict[str, str]:
    pairs = (shlex.split(line.removeprefix("export "))[0] for line in text.splitlines())
    return dict(pair.split("=", 1) for pair in pairs)


def test_deploy_local_is_idempotent_and_prints_exports(
    cloud: Deployment, cloud_env: dict[str, str]
) -> None:
    first = run_cli(cloud_env, "deploy-local")
    second = run_cli(cloud_env, "deploy-local")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    exports = parse_exports(first.stdout)
    assert exports["AWS_ENDPOINT_URL"] == cloud.endpoint_url
    queue_urls = json.loads(exports["CELERY_QUEUE_URLS"])
    assert set(queue_urls) == {"celery", "low-priority", "high-priority", "long"}
    assert exports["RESULTS_TABLE"] == "celery-lambda-results"
    assert exports["RESULTS_BUCKET"].startswith("celery-lambda-results-")


def test_queues_have_dead_letter_queues_and_visibility(cloud: Deployment) -> None:
    sqs = aws.client("sqs")
    for url in json.loads(cloud.environment["CELERY_QUEUE_URLS"]).values():
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert int(redrive["maxReceiveCount"]) == 5
        assert redrive["deadLetterTargetArn"].endswith("-dlq")
        assert int(attrs["VisibilityTimeout"]) >= 6 * 120


def test_the_optional_worker_service_is_not_deployed(cloud: Deployment) -> None:
    assert "LongQueue" in cloud.resources  # the long queue is there for any worker
    assert not [name for name in cloud.resources if name.startswith("WorkerTask")]
    assert "WorkerCluster" not in cloud.resources
    assert "WorkerServiceName" not in cloud.outputs
    assert "LongQueueUrl" in cloud.outputs


CONDITIONAL = """\
Parameters:
  Extra:
    Type: String
    Default: "false"
Conditions:
  HasExtra: !Equals [!Ref Extra, "true"]
Resources:
  Always:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${AWS::StackName}-always"
  Sometimes:
    Type: AWS::SQS::Queue
    Condition: HasExtra
    Properties:
      QueueName: !Sub "${AWS::StackName}-sometimes"
Outputs:
  SometimesUrl:
    Condition: HasExtra
    Value: !Ref Sometimes
"""


@pytest.mark.parametrize("extra", ["false", "true"])
def test_a_resource_whose_condition_is_false_is_left_out(
    cloud: Deployment, tmp_path: Path, extra: str
) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(CONDITIONAL)
    stack = f"conditions-{extra}"

    deployed = deploy(
        Settings.from_env(), stack_name=stack, template_path=path, parameter_values={"Extra": extra}
    )

    names = {
        url.rsplit("/", 1)[-1]
        for url in aws.client("sqs").list_queues(QueueNamePrefix=stack).get("QueueUrls", [])
    }
    if extra == "true":
        assert names == {f"{stack}-always", f"{stack}-sometimes"}
        assert deployed.outputs["SometimesUrl"].endswith(f"{stack}-sometimes")
    else:
        assert names == {f"{stack}-always"}
        assert "Sometimes" not in deployed.resources
        assert deployed.outputs == {}


def test_results_table_has_celery_key_and_ttl(cloud: Deployment) -> None:
    ddb = aws.client("dynamodb")
    table = cloud.environment["RESULTS_TABLE"]
    schema = ddb.describe_table(TableName=table)["Table"]["KeySchema"]
    assert schema == [{"AttributeName": "id", "KeyType": "HASH"}]
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}


def test_without_endpoint_it_refuses_in_one_line(cloud_env: dict[str, str]) -> None:
    env = {k: v for k, v in cloud_env.items() if not k.startswith("AWS_ENDPOINT_URL")}
    out = run_cli(env, "deploy-local")
    assert out.returncode != 0
    assert "AWS_ENDPOINT_URL is not set" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unreachable_endpoint_is_a_clear_error(cloud_env: dict[str, str]) -> None:
    env = {**cloud_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    out = run_cli(env, "deploy-local")
    assert out.returncode != 0
    assert "nothing answers at AWS_ENDPOINT_URL" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Resources: [unclosed", "template"),
        (
            "Transform: AWS::Serverless-2016-10-31\nResources:\n  Db:\n"
            "    Type: AWS::RDS::DBInstance\n    Properties: {}\n",
            "AWS::RDS::DBInstance, which deploy-local cannot create",
        ),
    ],
)
def test_bad_templates_are_refused(
    cloud_env: dict[str, str], tmp_path: Path, body: str, expected: str
) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(body)
    out = run_cli(cloud_env, "deploy-local", "--template", str(path))
    assert out.returncode != 0
    assert expected in out.stderr
    assert "Traceback" not in out.stderr
