"""tasks.app's configuration agrees with the brief and with template.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from devtools.cloud.template import load_template, translate
from infra.core.config import QUEUE_VISIBILITY_TIMEOUT, transport_options
from infra.core.errors import ConfigurationError
from infra.core.settings import Settings
from tasks import app


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translate(load_template())


def routed_queues() -> set[str]:
    conf = app.conf
    queues = {q.name for q in conf.task_queues} | {conf.task_default_queue}
    for route in conf.task_routes.values():
        queues.add(route["queue"] if isinstance(route, dict) else route)
    return queues


def template_queue_names(translated: dict[str, Any]) -> set[str]:
    function = translated["Resources"]["WorkerFunction"]
    subs = function["Properties"]["Environment"]["Variables"]["CELERY_QUEUE_URLS"]["Fn::Sub"]
    return set(json.loads(subs))


def test_json_only_utc_and_late_acks() -> None:
    conf = app.conf
    assert conf.task_serializer == conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert conf.enable_utc and conf.timezone == "UTC"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.result_backend == "infra.store.results:DynamoDBBackend"


def test_briefs_routing_and_annotation_examples() -> None:
    assert app.amqp.router.route({}, "tasks.upload_files")["queue"].name == "low-priority"
    assert app.amqp.router.route({}, "tasks.add")["queue"].name == "celery"
    assert app.conf.task_annotations["create_new_user"]["rate_limit"] == "10/s"
    assert "tasks.add" not in app.conf.task_annotations  # the benchmark task is unthrottled
    assert {"high-priority", "low-priority"} <= routed_queues()


def test_every_routed_queue_has_a_template_queue_with_an_event_source(
    translated: dict[str, Any],
) -> None:
    assert routed_queues() <= template_queue_names(translated)
    esm_queues = {
        r["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
        for r in translated["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    # Every queue but "long", which workers consume (the optional worker service, or your own).
    assert len(esm_queues) == len(template_queue_names(translated) - {"long"})
    assert "long" not in routed_queues()  # `celery -A tasks worker` without -Q leaves it alone


def test_transport_visibility_matches_the_template(translated: dict[str, Any]) -> None:
    timeout = next(
        r["Properties"]["Timeout"]
        for r in translated["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    )
    queue = translated["Resources"]["CeleryQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == QUEUE_VISIBILITY_TIMEOUT >= 6 * timeout
    options = transport_options(Settings.from_env({}))
    assert options["visibility_timeout"] == QUEUE_VISIBILITY_TIMEOUT
    assert (options["wait_time_seconds"], options["polling_interval"]) == (20, 0)
    assert "predefined_queues" not in options


def test_queue_urls_become_predefined_queues() -> None:
    env = {"CELERY_QUEUE_URLS": '{"celery": "http://h/1/stack-celery"}'}
    options = transport_options(Settings.from_env(env))
    assert options["predefined_queues"] == {"celery": {"url": "http://h/1/stack-celery"}}


def test_python_m_celeryconfig_checks_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tasks.celeryconfig"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout


def test_worker_resource_limits_come_from_the_environment() -> None:
    assert app.conf.worker_max_memory_per_child == 512 * 1024
    assert app.conf.worker_max_tasks_per_child is None
    assert app.conf.worker_disable_rate_limits  # enforced across consumers instead
    code = (
        "import tasks.celeryconfig as c;"
        "print(c.worker_max_tasks_per_child, c.worker_max_memory_per_child)"
    )
    env = {
        **os.environ,
        "CELERY_WORKER_MAX_TASKS_PER_CHILD": "100",
        "CELERY_WORKER_MAX_MEMORY_PER_CHILD": "0",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.stdout.split() == ["100", "None"], out.stderr


def test_a_bad_worker_limit_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="CELERY_WORKER_MAX_TASKS_PER_CHILD"):
        Settings.from_env({"CELERY_WORKER_MAX_TASKS_PER_CHILD": "lots"})
