"""``python -m devtools.dashboard.bench``: the task list's server time on a table of 10,000 tasks.

Starts the embedded emulator with the template deployed, writes ``--tasks`` task items into its
results table (the attributes the indexes project, spread over the last day, several names and
states), serves the dashboard on a free port of 127.0.0.1 and requests list pages: the newest
page, by state, by task name, the fifth page (through the cursors) and an id prefix. It prints
each page's ``Server-Timing`` (the render, measured by the app itself), the median of a few
requests; nothing is asserted. Against moto, whose Query is slower than DynamoDB's, it is an upper
bound of the work the page does, not of AWS's latency.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import uvicorn
from celery import Celery

from devtools.cloud.emulator import free_port
from devtools.cloud.session import local_cloud
from devtools.dashboard.app import create_app
from devtools.dashboard.server import make_dashboard
from devtools.ops.target import target_from_env
from infra.core import aws
from infra.core.limits import DYNAMODB_MAX_BATCH_WRITE_ITEMS
from infra.core.settings import Settings
from infra.store.items import KIND_TASK, task_key

__all__ = ["bench_items", "main"]

NAMES: Final = tuple(f"bench.task{i}" for i in range(8))
STATES: Final = ("SUCCESS",) * 8 + ("FAILURE", "RETRY")
RUNS: Final = 5


def bench_items(count: int, now: float, seed: int = 1) -> Iterator[dict[str, Any]]:
    """``count`` task items written over the last day, as the result backend writes them."""
    rng = random.Random(seed)
    for _ in range(count):
        task_id = str(uuid.UUID(int=rng.getrandbits(128)))
        yield {
            "id": {"S": task_key(task_id)},
            "kind": {"S": KIND_TASK},
            "task_id": {"S": task_id},
            "task_name": {"S": rng.choice(NAMES)},
            "status": {"S": rng.choice(STATES)},
            "queue": {"S": "celery"},
            "retries": {"N": "0"},
            "consumer": {"S": "lambda:bench"},
            "timestamp": {"N": f"{now - rng.uniform(0, 86400):.6f}"},
        }


def _write(table: str, items: Sequence[dict[str, Any]]) -> None:
    ddb = aws.client("dynamodb")
    for i in range(0, len(items), DYNAMODB_MAX_BATCH_WRITE_ITEMS):
        batch = [
            {"PutRequest": {"Item": item}} for item in items[i : i + DYNAMODB_MAX_BATCH_WRITE_ITEMS]
        ]
        pending: dict[str, Any] = {table: batch}
        while pending:
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


@contextmanager
def _served(token: str) -> Iterator[str]:
    dashboard = make_dashboard(target_from_env(), Celery("dashboard-bench"), token=token)
    port = free_port()
    config = uvicorn.Config(create_app(dashboard), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _get(url: str, token: str) -> tuple[tuple[float, float], str]:
    """(server time, of which in the store) in ms, and the page."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        timing = dict(
            (name.strip(), float(dur))
            for name, _, dur in (
                part.partition(";dur=") for part in response.headers["Server-Timing"].split(",")
            )
        )
        return (timing["app"], timing.get("store", 0.0)), response.read().decode()


def _next(html: str) -> str:
    marker = 'id="next" href="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)].replace("&amp;", "&")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args(argv)
    token = uuid.uuid4().hex
    with local_cloud() as deployment:
        os.environ.update(deployment.environment)  # as `source .celery-lambda/env.sh` would
        aws.clear_clients()
        table = Settings.from_env().results_table
        started = time.perf_counter()
        items = list(bench_items(args.tasks, time.time()))
        _write(table, items)
        print(
            f"{args.tasks} task items written to {table} in {time.perf_counter() - started:.1f} s"
        )
        with _served(token) as base:
            pages = {
                "newest 50": "/tasks",
                "state=FAILURE": "/tasks?state=FAILURE",
                f"task={NAMES[3]}": f"/tasks?{urllib.parse.urlencode({'task': NAMES[3]})}",
                "id prefix": f"/tasks?id={items[0]['task_id']['S'][:6]}",
            }
            _, html = _get(base + "/tasks", token)
            for _ in range(3):
                html = _get(base + _next(html), token)[1]
            pages["5th page (cursor)"] = _next(html)
            print(
                f"{'page (median of ' + str(RUNS) + ')':<24} {'server':>9} {'store':>9} {'rest':>9}"
            )
            for name, path in pages.items():
                times = [_get(base + path, token)[0] for _ in range(RUNS)]
                total = statistics.median(t for t, _ in times)
                store = statistics.median(s for _, s in times)
                print(f"{name:<24} {total:6.1f} ms {store:6.1f} ms {total - store:6.1f} ms")
            print("store: the Query requests (moto's Query sorts the whole partition each time);")
            print("rest: parsing, rendering and sending the page, what the dashboard itself costs")


if __name__ == "__main__":
    main()
