"""Celery's "never call result.get() within a task" guard is process-wide: the runner raises it
only on the main thread (where an invocation runs on AWS), so a handler run in a thread of a test
process (``devtools.testing.start_lambda``) never trips the test's own ``get()``."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from celery._state import task_join_will_block

from infra.consumer.runner import Runner
from infra.wire.protocol import decode
from tests.unit.celery_messages import capture, make_app

app = Celery("runner-threads", set_as_current=False)
app.conf.update(result_backend="cache+memory://")
seen: list[bool] = []


@app.task(name="threads.probe", shared=False)
def probe_flag() -> None:
    seen.append(task_join_will_block())


def _message() -> Any:
    publisher = make_app()
    (body,) = capture(publisher, lambda: publisher.send_task("threads.probe", ()))
    return decode(body, message_id="m-1")


def test_on_the_main_thread_a_task_may_not_wait_for_a_result() -> None:
    seen.clear()
    Runner(app, hostname="lambda@unit").run(_message())

    assert seen == [True]
    assert task_join_will_block() is False  # put back after the task


def test_in_another_thread_the_process_wide_guard_is_left_alone() -> None:
    seen.clear()
    worker = threading.Thread(target=Runner(app, hostname="lambda@unit").run, args=(_message(),))
    worker.start()
    worker.join()

    assert seen == [False]
