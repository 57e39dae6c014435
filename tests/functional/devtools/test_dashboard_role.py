"""The deployed web dashboard's role grants every request its pages and actions make, and no more.

Every page and action runs here through :class:`~devtools.dashboard.sources.Sources`, what the
routes call, against the session's emulator: results stored by the app's own backend (one large
enough for S3), real Celery messages in a dead-letter queue of this module's own. The counting
emulator's requests, mapped to the IAM actions that authorise them, are compared with
template.yaml: the pages need only WebDashboardTaskRole's grants and none of
WebDashboardActionsPolicy's (read-only is enforced by IAM too); the actions need the policy; and
every grant is needed, except those the emulator never sees (CloudWatch metrics, on AWS only;
ECS Exec's channels, opened by the SSM agent).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, states

from devtools.cloud.deploy import Deployment
from devtools.cloud.emulator import request_counts
from devtools.cloud.template import load_template
from devtools.dashboard.params import task_filters
from devtools.dashboard.sources import Sources
from devtools.ops.target import target_from_env
from infra.core import aws
from infra.store.results import LARGE_RESULT_BYTES
from tasks import app
from tests.sqs_helpers import TestQueue, predefine, queue_with_dlq

QUEUE = "dashboard-role"
# The IAM actions that authorise a request, where they are not its own name.
AUTHORISED_BY = {
    "sqs:SendMessageBatch": {"sqs:SendMessage"},
    "sqs:DeleteMessageBatch": {"sqs:DeleteMessage"},
    "sqs:ChangeMessageVisibilityBatch": {"sqs:ChangeMessageVisibility"},
}
ON_AWS_ONLY = {
    "cloudwatch:GetMetricStatistics",  # Sources.overview asks CloudWatch only on AWS
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
}


def granted(statements: list[Any]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        action = statement["Action"]
        actions |= {action} if isinstance(action, str) else set(action)
    return actions


def template_grants() -> tuple[set[str], set[str]]:
    """What WebDashboardTaskRole and WebDashboardActionsPolicy allow."""
    resources = load_template()["Resources"]
    (policy,) = resources["WebDashboardTaskRole"]["Properties"]["Policies"]
    actions = resources["WebDashboardActionsPolicy"]["Properties"]["PolicyDocument"]
    return granted(policy["PolicyDocument"]["Statement"]), granted(actions["Statement"])


def needed(counts: dict[str, int]) -> set[str]:
    return set().union(*(AUTHORISED_BY.get(op, {op}) for op in counts))


@pytest.fixture(scope="module")
def queue(cloud: Deployment) -> Iterator[TestQueue]:
    made = queue_with_dlq(f"{QUEUE}-{uuid.uuid4().hex[:8]}", max_receive_count=2)
    yield made
    for url in (made.url, made.dlq_url):
        aws.client("sqs").delete_queue(QueueUrl=url)


@pytest.fixture(scope="module")
def publisher(queue: TestQueue) -> Iterator[Celery]:
    """A Celery app of the example's configuration that publishes straight into the DLQ."""
    made = Celery("dashboard-role", set_as_current=False)
    made.config_from_object("tasks.celeryconfig")
    predefine(made, {"dlq": queue.dlq_url})
    yield made
    made.close()


def test_the_roles_grant_exactly_what_the_pages_and_actions_request(
    cloud: Deployment, queue: TestQueue, publisher: Celery
) -> None:
    assert cloud.endpoint_url
    target = target_from_env({**os.environ, "CELERY_QUEUE_URLS": json.dumps({QUEUE: queue.url})})
    sources = Sources(target, app)
    small, large = str(uuid.uuid4()), str(uuid.uuid4())
    app.backend.store_result(small, 4, states.SUCCESS)
    app.backend.store_result(large, "x" * (LARGE_RESULT_BYTES + 1), states.SUCCESS)
    for args in ((2, 2), (3, 3)):
        publisher.send_task("tasks.add", args, queue="dlq")
    request_counts(cloud.endpoint_url, reset=True)

    sources.overview()
    for params in ({}, {"state": "SUCCESS"}, {"task": "tasks.add"}, {"id": small[:8]}):
        filters = task_filters(params)
        sources.task_page(
            filters.query,
            until=filters.until,
            queue=filters.queue,
            id_prefix=filters.id_prefix,
            cursor=filters.cursor,
        )
    assert sources.task(small) is not None
    large_page = sources.task(large)
    (dlq,) = sources.dead_letters()
    sources.schedule()
    reads = request_counts(cloud.endpoint_url, reset=True)

    assert sources.revoke([small], "from the dashboard") == [small]
    first = dlq.letters[0].letter.message_id
    assert sources.redrive(queue.dlq_url, [first]).moved == (first,)
    assert len(sources.redrive(queue.dlq_url).moved) == 1
    sources.purge(queue.dlq_url)
    acts = request_counts(cloud.endpoint_url)

    role, actions = template_grants()
    assert large_page is not None and large_page.meta["result"] == "x" * (LARGE_RESULT_BYTES + 1)
    assert dlq.waiting == 2 and len(dlq.letters) == 2
    assert needed(reads) - role == set(), reads
    assert needed(reads) & actions == set(), reads
    assert needed(acts) - (role | actions) == set(), acts
    assert (role | actions) - ON_AWS_ONLY == needed(reads) | needed(acts)
    assert actions <= needed(acts)
