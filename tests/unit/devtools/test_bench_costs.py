"""The bench's arithmetic: capacity units from requests, dollars from counts, the rows' ratios
and budgets, and plain Celery's app free of the project. Never a timing."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from devtools.bench import meter, plain_app, prices
from devtools.bench.prices import Spend, cost_per_million, function_sizing
from devtools.bench.report import Row, budgets, document

MILLION = 1_000_000


def test_a_transaction_costs_two_write_units_per_item_a_condition_check_included() -> None:
    params = {
        "TransactItems": [
            {"Update": {"TableName": "t", "Key": {"id": {"S": "a"}}}},
            {"ConditionCheck": {"TableName": "t", "Key": {"id": {"S": "m"}}}},
        ]
    }

    assert meter.capacity_units("TransactWriteItems", params) == (4.0, 0.0)


def test_writes_are_counted_per_item_and_kilobyte() -> None:
    big = {"id": {"S": "x"}, "result": {"S": "r" * 2500}}
    batch = {"RequestItems": {"t": [{"PutRequest": {"Item": {"id": {"S": "a"}}}}] * 3}}

    assert meter.capacity_units("PutItem", {"Item": big}) == (3.0, 0.0)
    assert meter.capacity_units("BatchWriteItem", batch) == (3.0, 0.0)
    assert meter.capacity_units("UpdateItem", {"Key": {"id": {"S": "a"}}}) == (1.0, 0.0)


def test_reads_cost_half_a_unit_unless_consistent_or_transactional() -> None:
    keys = {"RequestItems": {"t": {"Keys": [{"id": {"S": "a"}}, {"id": {"S": "b"}}]}}}

    assert meter.capacity_units("GetItem", {}) == (0.0, 0.5)
    assert meter.capacity_units("GetItem", {"ConsistentRead": True}) == (0.0, 1.0)
    assert meter.capacity_units("BatchGetItem", keys) == (0.0, 1.0)
    assert meter.capacity_units("TransactGetItems", {"TransactItems": [{}, {}]}) == (0.0, 4.0)
    assert meter.capacity_units("DescribeTable", {"TableName": "t"}) == (0.0, 0.0)


def test_the_meter_file_sums_by_operation(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.write_text("PutItem 1 0\nGetItem 0 0.5\nPutItem 2 0\n")

    assert meter.read_units(units) == {"PutItem": (3.0, 0.0), "GetItem": (0.0, 0.5)}
    assert meter.read_units(tmp_path / "missing") == {}


def test_dollars_per_million_tasks_from_given_counts() -> None:
    spend = Spend(
        tasks=100,
        sqs_requests=40,  # 0.4 per task
        write_units=400,  # 4 per task
        read_units=50,
        log_bytes=100 * 300,
        lambda_billed_ms=10 * 20,  # 10 invocations of 20 ms
        lambda_invocations=10,
        lambda_memory_mb=1024,
        lambda_architecture="x86_64",
    )

    cost = cost_per_million(spend)

    gb_seconds_per_task = 0.2 / 100
    expected_compute = MILLION * (
        gb_seconds_per_task * prices.LAMBDA_GB_SECOND["x86_64"] + 0.1 * prices.LAMBDA_REQUEST
    )
    assert math.isclose(cost.compute, expected_compute)
    assert math.isclose(cost.sqs, 0.4 * 0.40)
    assert math.isclose(cost.dynamodb, 4 * 0.625 + 0.5 * 0.125)
    assert math.isclose(cost.logs, 300 * MILLION / 1024**3 * 0.50)
    assert math.isclose(cost.total, cost.compute + cost.sqs + cost.dynamodb + cost.logs)


def test_a_worker_is_priced_by_its_cpu_seconds() -> None:
    cost = cost_per_million(Spend(tasks=1000, worker_cpu_seconds=10.0))

    assert math.isclose(cost.compute, 10.0 * 1000 * 0.04048 / 3600)


def test_the_functions_size_comes_from_the_template_globals_or_its_own() -> None:
    template = {
        "Globals": {"Function": {"MemorySize": 1024, "Architectures": ["x86_64"]}},
        "Resources": {
            "A": {"Properties": {}},
            "B": {"Properties": {"MemorySize": 512, "Architectures": ["arm64"]}},
        },
    }

    assert function_sizing(template, "A") == (1024, "x86_64")
    assert function_sizing(template, "B") == (512, "arm64")


def _row(kind: str, rate: float, cpu_ms: float, requests: int, log: int) -> Row:
    tasks = 100
    return Row(
        kind,
        kind,
        tasks,
        tasks / rate,
        counts={"sqs:ReceiveMessage": requests},
        cpu_seconds=cpu_ms * tasks / 1000,
        log_bytes=log * tasks,
    )


def test_budgets_are_ratios_to_plain_celerys_best_row() -> None:
    rows = [
        _row("plain", 10, 10, 300, 250),
        Row("slower plain", "plain", 100, 100.0),
        _row("worker", 10, 12, 320, 1000),
        _row("lambda", 20, 4, 40, 200),
        _row("handler", 30, 2, 40, 200),
        _row("noop", 50, 0, 20, 0),
    ]

    found = {b.name: b for b in budgets(rows)}

    drain = found["Lambda path drain, x plain Celery's best"]
    assert drain.measured == pytest.approx(2.0) and drain.met
    assert found["Lambda path CPU/task, x plain Celery's"].measured == pytest.approx(0.4)
    assert found["worker path CPU/task, x plain Celery's"].measured == pytest.approx(1.2)
    assert not found["worker path log bytes/task"].met
    assert [row["x_plain"] for row in document(rows, 100)["rows"]][:2] == [1.0, 0.1]


def test_plain_celerys_app_imports_nothing_of_the_project() -> None:
    tree = ast.parse(Path(plain_app.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    assert imported == {"__future__", "json", "os", "collections.abc", "celery"}


def test_plain_celerys_app_uses_celerys_own_transport_and_backend() -> None:
    env = {"CELERY_QUEUE_URLS": '{"celery": "http://127.0.0.1:1/q"}', "AWS_ENDPOINT_URL": "x"}
    app = plain_app.create_app(env)
    conf = app.conf

    assert conf.broker_url == "sqs://" and "broker_transport" not in conf.changes
    assert conf.broker_transport_options["predefined_queues"] == {
        "celery": {"url": "http://127.0.0.1:1/q"}
    }
    assert conf.result_backend.startswith("dynamodb://")
    assert app.task_cls == "celery.app.task:Task"


def test_the_meter_loads_alone_and_imports_only_the_stdlib(tmp_path: Path) -> None:
    tree = ast.parse(Path(meter.__file__).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    assert modules <= {"__future__", "collections.abc", "pathlib", "typing", "botocore"}
    site = meter.write_sitecustomize(tmp_path)
    assert str(Path(meter.__file__)) in site.read_text()
