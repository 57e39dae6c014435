"""What ``deploy-local``/``up`` record and ``consume`` reads back instead of deploying again."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.cloud.deploy import Deployment, EventSource, ScheduleSource
from devtools.cloud.session import deployment_path, record_deployment, recorded_deployment
from infra.core.errors import ConfigurationError
from infra.core.settings import Settings

ENDPOINT = "http://127.0.0.1:4566"
DEPLOYMENT = Deployment(
    stack_name="shop",
    region="eu-west-1",
    endpoint_url=ENDPOINT,
    resources={"CeleryQueue": f"{ENDPOINT}/000000000000/shop-celery"},
    environment={"AWS_ENDPOINT_URL": ENDPOINT, "RESULTS_TABLE": "shop-results"},
    outputs={"QueueUrl": f"{ENDPOINT}/000000000000/shop-celery"},
    event_sources=(
        EventSource(
            function="CeleryFunction",
            handler="handlers.sqs.handler",
            queue_url=f"{ENDPOINT}/000000000000/shop-celery",
            queue_arn="arn:aws:sqs:eu-west-1:000000000000:shop-celery",
            batch_size=10,
            batching_window=1,
            timeout=120,
            report_batch_item_failures=True,
            memory_size=512,
        ),
    ),
    schedules=(
        ScheduleSource(
            function="BeatFunction",
            handler="handlers.beat.handler",
            rule_arn="arn:aws:events:eu-west-1:000000000000:rule/shop-Beat",
            expression="rate(1 minute)",
            timeout=60,
        ),
    ),
)


def settings(endpoint: str = ENDPOINT, region: str = "eu-west-1") -> Settings:
    return Settings.from_env({"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": region})


def test_a_recorded_deployment_reads_back_equal(tmp_path: Path) -> None:
    path = record_deployment(DEPLOYMENT, tmp_path)

    assert path.parent == tmp_path
    assert recorded_deployment(settings(), "shop", tmp_path) == DEPLOYMENT


def test_json_round_trip_keeps_tuples_and_mappings() -> None:
    assert Deployment.from_json(DEPLOYMENT.to_json()) == DEPLOYMENT


@pytest.mark.parametrize(
    ("endpoint", "region", "stack"),
    [
        ("http://127.0.0.1:4567", "eu-west-1", "shop"),  # another emulator
        (ENDPOINT, "us-east-1", "shop"),  # another region
        (ENDPOINT, "eu-west-1", "celery-lambda"),  # another stack
    ],
)
def test_nothing_recorded_there_is_one_line_saying_what_to_run(
    tmp_path: Path, endpoint: str, region: str, stack: str
) -> None:
    record_deployment(DEPLOYMENT, tmp_path)

    with pytest.raises(ConfigurationError) as caught:
        recorded_deployment(settings(endpoint, region), stack, tmp_path)

    message = str(caught.value)
    assert "\n" not in message
    assert f"stack {stack} is not deployed on {endpoint} in {region}" in message
    assert "celery -A tasks lambda deploy-local" in message


def test_a_damaged_record_says_to_deploy_again(tmp_path: Path) -> None:
    path = deployment_path("shop", "eu-west-1", ENDPOINT, tmp_path)
    path.write_text('{"stack_name": "shop"')

    with pytest.raises(ConfigurationError, match="deploy-local` again"):
        recorded_deployment(settings(), "shop", tmp_path)


def test_each_endpoint_has_its_own_record() -> None:
    here = deployment_path("s", "us-east-1", "http://127.0.0.1:5000")
    there = deployment_path("s", "us-east-1", "http://127.0.0.1:5001")
    assert here != there
    assert here.parent == there.parent
