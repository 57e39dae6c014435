"""Ids as operators type them -- the first characters the tables show -- through the real CLI.

A results table of this module's own holds three tasks written by the app's own result backend
(what Celery's tracer calls on a worker or the Lambda path): two whose ids share their first eight
characters and one alone. The DLQ of this module's queue holds real Celery messages published
with ``apply_async`` (two tasks whose ids share a prefix, one alone) and one body that is not a
task message. The commands run through click's runner on the ``lambda`` group against the
emulator, and the emulator's request counts show how each id was found: a Query of the table's
``by-id`` index for a prefix, one GetItem for a whole id, never a Scan.
"""

from __future__ import annotations

import dataclasses
import json
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, states
from celery.app.task import Context
from click.testing import CliRunner, Result
from kombu import Queue

from devtools.cli import lambda_
from devtools.cloud.deploy import Deployment
from devtools.cloud.emulator import request_counts
from devtools.cloud.session import forget_backend, point_app_at
from infra.core import aws
from infra.core.config import transport_options
from infra.core.settings import Settings
from infra.store.items import revocation_key
from tests.sqs_helpers import counts, queue_with_dlq
from tests.tables import results_table_like_template

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120, method="thread")]

QUEUE = "ids"
DLQ_QUEUE = "ids-dlq"
"""A Celery queue name for the DLQ itself, so that ``apply_async`` puts real messages there."""
JUNK = "not a task"

app = Celery("ids", set_as_current=False)
app.config_from_object("tasks.celeryconfig")


@app.task(name="ids.add", shared=False)
def add(x: int, y: int) -> int:
    return x + y


def twin_ids() -> tuple[str, str]:
    """Two whole task ids that share their first eight characters, and differ in the tenth."""
    head, tail = uuid.uuid4().hex[:8], str(uuid.uuid4())[10:]
    return f"{head}-0{tail}", f"{head}-1{tail}"


@dataclasses.dataclass(frozen=True)
class Ids:
    table: str
    queue_url: str
    dlq_url: str
    twins: tuple[str, str]
    """Stored tasks sharing their first eight characters."""
    lone: str
    letter_twins: tuple[str, str]
    """Task ids of two dead letters sharing their first eight characters."""
    letter_lone: str


@pytest.fixture(scope="module")
def ids(cloud: Deployment) -> Iterator[Ids]:
    suffix = uuid.uuid4().hex[:8]
    queue = queue_with_dlq(f"ids-{suffix}")
    table = results_table_like_template(f"ids-results-{suffix}")
    with pytest.MonkeyPatch.context() as env:
        point_app_at(app, cloud)
        urls = {**json.loads(cloud.environment["CELERY_QUEUE_URLS"]), QUEUE: queue.url}
        env.setenv("CELERY_QUEUE_URLS", json.dumps(urls))
        env.setenv("RESULTS_TABLE", table)
        options = transport_options(Settings.from_env())
        options["predefined_queues"] = {
            QUEUE: {"url": queue.url},
            DLQ_QUEUE: {"url": queue.dlq_url},
        }
        app.conf.update(
            broker_transport_options=options,
            task_queues=(Queue(QUEUE), Queue(DLQ_QUEUE)),
            task_default_queue=QUEUE,
        )
        forget_backend(app)
        yield _stored_and_dead(table, queue.url, queue.dlq_url)
    forget_backend(app)
    for url in (queue.url, queue.dlq_url):
        aws.client("sqs").delete_queue(QueueUrl=url)
    aws.client("dynamodb").delete_table(TableName=table)


def _stored_and_dead(table: str, queue_url: str, dlq_url: str) -> Ids:
    twins, lone = twin_ids(), str(uuid.uuid4())
    for task_id in (*twins, lone):
        request = Context({"task": add.name, "delivery_info": {"routing_key": QUEUE}})
        app.backend.mark_as_done(task_id, 3, request=request)
    letter_twins, letter_lone = twin_ids(), str(uuid.uuid4())
    for task_id in (*letter_twins, letter_lone):
        add.apply_async((1, 2), task_id=task_id, queue=DLQ_QUEUE)
    aws.client("sqs").send_message(QueueUrl=dlq_url, MessageBody=JUNK)
    return Ids(table, queue_url, dlq_url, twins, lone, letter_twins, letter_lone)


def cli(*args: str) -> Result:
    """``celery -A <this app> lambda *args`` in this process, rich tables 400 columns wide."""
    obj = types.SimpleNamespace(app=app)
    return CliRunner().invoke(lambda_, list(args), obj=obj, env={"COLUMNS": "400"})


def cli_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def counted(cloud: Deployment, *args: str) -> tuple[Result, dict[str, int]]:
    """The command's result and the AWS requests it made, by ``service:Operation``."""
    request_counts(cloud.endpoint_url, reset=True)
    result = cli(*args)
    return result, request_counts(cloud.endpoint_url)


# ---------------------------------------------------------------- inspect


def test_inspect_takes_a_unique_prefix_with_one_query_and_one_read(
    ids: Ids, cloud: Deployment
) -> None:
    result, made = counted(cloud, "inspect", ids.lone[:8], "--json")

    assert result.exit_code == 0, result.output
    task = json.loads(result.stdout)["task"]
    assert (task["task_id"], task["task_name"], task["state"]) == (ids.lone, add.name, "SUCCESS")
    assert made == {"dynamodb:Query": 1, "dynamodb:GetItem": 1}


def test_inspect_of_a_whole_id_is_one_read_and_no_query(ids: Ids, cloud: Deployment) -> None:
    result, made = counted(cloud, "inspect", ids.twins[0], "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["task"]["task_id"] == ids.twins[0]
    assert made == {"dynamodb:GetItem": 1}


def test_an_ambiguous_prefix_lists_its_matches_without_a_scan(ids: Ids, cloud: Deployment) -> None:
    result, made = counted(cloud, "inspect", ids.twins[0][:8])

    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0] == (
        f"Error: {ids.twins[0][:8]} is ambiguous: 2 ids in {ids.table} start with it "
        "(type more of the id):"
    )
    assert [line.split() for line in lines[1:]] == [
        [task_id, add.name, "SUCCESS"] for task_id in sorted(ids.twins)
    ]
    assert made == {"dynamodb:Query": 1, "dynamodb:BatchGetItem": 1}
    # One character more than they share tells them apart.
    longer = cli_json("inspect", ids.twins[1][:10])
    assert longer["task"]["task_id"] == ids.twins[1]


def test_an_unknown_prefix_says_so(ids: Ids) -> None:
    result = cli("inspect", "zzzz")

    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: no task zzzz in {ids.table} (unknown id, or its result expired)"
    )


# ---------------------------------------------------------------- revoke


def marker(id_: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        aws.client("dynamodb")
        .get_item(
            TableName=Settings.from_env().results_table, Key={"id": {"S": revocation_key(id_)}}
        )
        .get("Item")
    )
    return item


def test_revoke_takes_a_unique_prefix_and_refuses_an_ambiguous_one(ids: Ids) -> None:
    ambiguous = cli("revoke", ids.twins[0][:8])
    assert ambiguous.exit_code == 1 and "is ambiguous" in ambiguous.output
    assert all(task_id in ambiguous.output for task_id in ids.twins)
    assert marker(ids.twins[0]) is None and marker(ids.twins[1]) is None

    unknown = cli("revoke", "zzzz")
    assert unknown.exit_code == 1 and "no task zzzz" in unknown.output
    assert "--exact" in unknown.output and marker("zzzz") is None

    revoked = cli("revoke", ids.lone[:8])
    assert revoked.exit_code == 0, revoked.output
    assert revoked.stdout.splitlines() == [f"revoked {ids.lone}"]
    assert marker(ids.lone) is not None
    assert cli_json("inspect", ids.lone)["task"]["state"] == states.SUCCESS  # already finished

    exact = cli("revoke", "--exact", "zzzz")
    assert exact.exit_code == 0 and marker("zzzz") is not None


# ---------------------------------------------------------------- dlq


def letters(ids: Ids) -> dict[str | None, dict[str, Any]]:
    """The DLQ's messages by task id (None: the junk)."""
    listed = cli_json("dlq", "list", "--queue", QUEUE)["messages"]
    return {letter["task_id"]: letter for letter in listed}


def test_dlq_list_puts_the_problem_in_its_own_column_only(ids: Ids) -> None:
    listed = letters(ids)

    junk = listed[None]
    assert junk["task_name"] is None and junk["args"] is None
    assert "neither a JSON object nor base64" in junk["problem"]
    lone = listed[ids.letter_lone]
    assert (lone["task_name"], lone["args"], lone["problem"]) == (add.name, "(1, 2)", None)

    table = cli("dlq", "list", "--queue", QUEUE)
    assert table.exit_code == 0, table.output
    [row] = [line for line in table.stdout.splitlines() if junk["message_id"] in line]
    cells = [cell.strip() for cell in row.strip("│┃ ").split("│")]
    header = [line for line in table.stdout.splitlines() if "message id" in line][0]
    columns = [cell.strip() for cell in header.strip("│┃ ").split("┃")]
    by_column = dict(zip(columns, cells, strict=True))
    assert (by_column["task"], by_column["task id"], by_column["args"]) == ("?", "", "")
    assert by_column["problem"] == junk["problem"]
    assert counts(ids.dlq_url) == (4, 0, 0)  # looking took nothing away


def test_dlq_show_takes_a_prefix_of_a_message_or_task_id(ids: Ids) -> None:
    listed = letters(ids)
    junk = listed[None]

    shown = cli_json("dlq", "show", junk["message_id"][:8], "--queue", QUEUE)
    assert shown["message_id"] == junk["message_id"] and shown["body"] == JUNK
    assert shown["args"] is None and shown["task"] is None and shown["problem"] == junk["problem"]

    by_task = cli_json("dlq", "show", ids.letter_lone[:8])
    assert by_task["message_id"] == listed[ids.letter_lone]["message_id"]
    assert by_task["task"]["args"] == [1, 2] and by_task["problem"] is None

    ambiguous = cli("dlq", "show", ids.letter_twins[0][:8], "--queue", QUEUE)
    assert ambiguous.exit_code == 1 and "is ambiguous: 2 ids" in ambiguous.output
    for task_id in ids.letter_twins:
        assert f"{listed[task_id]['message_id']}  {add.name}  {task_id}" in ambiguous.output

    unknown = cli("dlq", "show", "zzzz", "--queue", QUEUE)
    assert unknown.exit_code == 1 and "Error: no message zzzz" in unknown.output
    assert counts(ids.dlq_url) == (4, 0, 0)


def test_dlq_redrive_takes_a_prefix_and_moves_nothing_on_an_ambiguous_one(ids: Ids) -> None:
    listed = letters(ids)

    ambiguous = cli("dlq", "redrive", "--id", ids.letter_twins[0][:8], "--queue", QUEUE)
    assert ambiguous.exit_code == 1 and "is ambiguous" in ambiguous.output
    assert counts(ids.queue_url) == (0, 0, 0) and counts(ids.dlq_url) == (4, 0, 0)

    report = cli_json("dlq", "redrive", "--id", ids.letter_lone[:8], "--queue", QUEUE)
    assert report == {
        "moved": [listed[ids.letter_lone]["message_id"]],
        "kept": [],
        "unknown": [],
    }
    assert counts(ids.queue_url) == (1, 0, 0) and counts(ids.dlq_url) == (3, 0, 0)

    unknown = cli("dlq", "redrive", "--id", "zzzz", "--queue", QUEUE, "--json")
    assert unknown.exit_code == 1 and json.loads(unknown.stdout)["unknown"] == ["zzzz"]
