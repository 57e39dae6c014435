"""`lambda doctor`: silent on the real template and app, and each check fires on a template (or
app) broken on purpose, naming the place and the fix."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from devtools.checks.doctor import Finding, diagnose
from devtools.cloud.template import load_template, translate
from tasks import app as tasks_app


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    tasks_app.loader.import_default_modules()
    tasks_app.finalize(auto=True)
    return translate(load_template())


def broken(translated: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> list[Finding]:
    template = copy.deepcopy(translated)
    change(template["Resources"])
    return diagnose(template, tasks_app)


def test_the_real_template_and_app_agree(translated: dict[str, Any]) -> None:
    assert diagnose(translated, tasks_app) == []


def test_missing_report_batch_item_failures(translated: dict[str, Any]) -> None:
    def drop(r: dict[str, Any]) -> None:
        r["WorkerFunctionCeleryQueueEvent"]["Properties"]["FunctionResponseTypes"] = []

    [finding] = broken(translated, drop)
    assert finding.level == "error" and finding.where == "CeleryQueue"
    assert "ReportBatchItemFailures" in finding.fix


def test_visibility_below_six_timeouts(translated: dict[str, Any]) -> None:
    def shorten(r: dict[str, Any]) -> None:
        r["LowPriorityQueue"]["Properties"]["VisibilityTimeout"] = 300

    [finding] = broken(translated, shorten)
    assert finding.where == "LowPriorityQueue" and "721" in finding.fix  # 6 x 120 s + 1 s


def test_routed_queue_without_a_consumer(translated: dict[str, Any]) -> None:
    def unplug(r: dict[str, Any]) -> None:
        del r["WorkerFunctionHighPriorityQueueEvent"]

    [finding] = broken(translated, unplug)
    assert finding.level == "warning" and finding.where == "queue 'high-priority'"


def test_routed_queue_missing_from_the_template(translated: dict[str, Any]) -> None:
    def forget(r: dict[str, Any]) -> None:
        env = r["WorkerFunction"]["Properties"]["Environment"]["Variables"]
        urls = json.loads(env["CELERY_QUEUE_URLS"]["Fn::Sub"])
        del urls["low-priority"]
        env["CELERY_QUEUE_URLS"]["Fn::Sub"] = json.dumps(urls)

    [finding] = broken(translated, forget)
    assert finding.level == "error" and "does not declare it" in finding.problem


def test_no_send_message_on_a_queue_tasks_publish_to(translated: dict[str, Any]) -> None:
    def narrow(r: dict[str, Any]) -> None:
        [policy] = r["WorkerFunctionRole"]["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]:
            if "sqs:SendMessage" in statement["Action"]:
                statement["Resource"] = statement["Resource"][:1]

    findings = broken(translated, narrow)
    assert {f.where for f in findings} == {
        "queue 'high-priority'",
        "queue 'low-priority'",
        "queue 'long'",
    }
    assert all("sqs:SendMessage" in f.fix for f in findings)


def test_no_dead_letter_queue_and_a_too_low_receive_count(translated: dict[str, Any]) -> None:
    def weaken(r: dict[str, Any]) -> None:
        del r["CeleryQueue"]["Properties"]["RedrivePolicy"]
        r["HighPriorityQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] = 1

    findings = {f.where: f for f in broken(translated, weaken)}
    assert findings["CeleryQueue"].level == "error"
    assert findings["HighPriorityQueue"].level == "warning"


def test_batch_size_over_ten_without_a_window(translated: dict[str, Any]) -> None:
    def grow(r: dict[str, Any]) -> None:
        props = r["WorkerFunctionCeleryQueueEvent"]["Properties"]
        props["BatchSize"], props["MaximumBatchingWindowInSeconds"] = 100, 0

    # Tasks registered by other test apps (shared tasks) may add warnings of their own.
    [finding] = [f for f in broken(translated, grow) if f.where == "CeleryQueue"]
    assert "batching window" in finding.problem


def test_time_limits_against_the_function_timeout(translated: dict[str, Any]) -> None:
    app = Celery("doctor", set_as_current=False)
    app.conf.update(task_default_queue="celery", task_queues=None, task_routes=None)

    @app.task(name="slow", time_limit=300)
    def slow() -> None: ...

    @app.task(name="batchy", time_limit=30)
    def batchy() -> None: ...

    findings = {f.where: f for f in diagnose(translated, app)}
    assert findings["task slow"].level == "error"
    assert findings["task batchy"].level == "warning"  # 10 records x 30 s > 120 s


def long_task_app(**limits: int | None) -> Celery:
    """An app routing one task per ``limits`` entry (name: time_limit) to the long queue."""
    app = Celery("doctor-long", set_as_current=False)
    app.conf.update(
        task_default_queue="celery",
        task_queues=None,
        task_routes={name: {"queue": "long"} for name in limits},
    )
    for name, limit in limits.items():

        def run() -> None: ...

        app.task(name=name, time_limit=limit, shared=False)(run)
    return app


def test_a_queue_the_worker_service_consumes_needs_no_event_source(
    translated: dict[str, Any],
) -> None:
    app = long_task_app(crunch=3600)  # over the function's 120 s, under the queue's 7200 s

    findings = {f.where: f for f in diagnose(translated, app)}

    assert "queue 'long'" not in findings
    assert "task crunch" not in findings


def test_a_worker_only_queue_no_worker_consumes(translated: dict[str, Any]) -> None:
    def unserve(r: dict[str, Any]) -> None:
        [worker] = r["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"]
        worker["Command"].remove("--queues=long")

    template = copy.deepcopy(translated)
    unserve(template["Resources"])
    findings = {f.where: f for f in diagnose(template, long_task_app(crunch=3600))}

    assert findings["queue 'long'"].level == "warning"
    assert "-Q long" in findings["queue 'long'"].fix


def test_tasks_on_a_worker_only_queue_against_its_visibility(translated: dict[str, Any]) -> None:
    app = long_task_app(endless=None, too_long=9000)

    findings = {f.where: f for f in diagnose(translated, app)}

    assert findings["task too_long"].level == "error"
    assert "VisibilityTimeout 7200s" in findings["task too_long"].problem
    assert findings["task endless"].level == "warning"
    assert "time_limit under 7200s" in findings["task endless"].fix


def test_worker_queues_are_read_from_every_form_of_the_option() -> None:
    from devtools.checks.doctor import _queues_option

    assert _queues_option(["celery", "worker", "-Q", "a,b"]) == {"a", "b"}
    assert _queues_option(["--queues=long", "-Qx", {"Fn::Sub": "--concurrency=2"}]) == {
        "long",
        "x",
    }
    assert _queues_option(["--queues", {"Ref": "Queues"}]) == set()
    assert _queues_option(["-Q"]) == set()
