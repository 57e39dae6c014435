"""The publish benchmark's measurement on the session's emulator: the requests each way of
publishing makes, counted by operation. Never its timings."""

from __future__ import annotations

import math

from devtools.bench.publish import BATCHED, LOOP, UNBATCHED, measure
from devtools.cloud.deploy import Deployment

TASKS = 30


def test_a_batched_group_sends_batches_of_ten(cloud: Deployment) -> None:
    from tasks import app

    run = measure(app, cloud, BATCHED, TASKS)
    assert run.counts.get("sqs:SendMessage", 0) == 0
    assert 1 <= run.counts["sqs:SendMessageBatch"] <= math.ceil(TASKS / 10)


def test_an_unbatched_group_and_a_loop_send_one_message_each(cloud: Deployment) -> None:
    from tasks import app

    for mode in (UNBATCHED, LOOP):
        run = measure(app, cloud, mode, TASKS)
        assert run.counts.get("sqs:SendMessageBatch", 0) == 0, mode
        assert run.counts["sqs:SendMessage"] == TASKS, mode


def test_the_app_publishes_in_batches_again_afterwards(cloud: Deployment) -> None:
    from tasks import app

    measure(app, cloud, UNBATCHED, 1)
    assert app.conf.broker_transport_options["batch_publish"] is True


def test_in_rounds_each_group_is_batched_on_its_own(cloud: Deployment) -> None:
    from tasks import app

    run = measure(app, cloud, BATCHED, TASKS, round_size=7)  # rounds of 7, 7, 7, 7, 2
    assert run.counts.get("sqs:SendMessage", 0) == 0
    assert run.counts["sqs:SendMessageBatch"] == 5
