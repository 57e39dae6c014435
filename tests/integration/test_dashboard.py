"""The web dashboard in a real browser (headless Chromium) against the local cloud.

A module-level Celery app publishes a mixed workload to a queue of this module's own (its DLQ
takes a message after two receives) and the Lambda path consumes it in this process, as in
``test_ops_cli``: successes (one with ``<script>`` in its argument), a failure with a traceback,
a retry, a chain whose second step starts a group, a poison message that lands in the DLQ, and a
task left retrying for the revoke. Results go to a results table of this module's own, so the
counts the pages show are compared with the table itself.

The dashboard is the one ``celery lambda dashboard`` serves (:func:`make_dashboard`, uvicorn on a
free port of 127.0.0.1, in a thread); Playwright drives Debian's ``chromium`` through it. The
last test runs the real command and checks what it prints and that it refuses a request without
the token. Set ``DASHBOARD_SCREENSHOTS=docs`` to write the README's screenshots there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import celery
import pytest
import uvicorn
from celery import Celery, chain, group, states
from celery._state import get_current_app
from celery.exceptions import Reject
from kombu import Queue
from playwright.sync_api import sync_playwright

from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.emulator import free_port
from devtools.cloud.event_source import consume, handler_from_source
from devtools.cloud.session import forget_backend, point_app_at
from devtools.dashboard.app import UNAUTHORIZED, create_app
from devtools.dashboard.server import dashboard_url, make_dashboard
from devtools.ops.target import target_from_env
from infra.consumer import runtime
from infra.core import aws
from infra.core.config import transport_options
from infra.core.settings import Settings
from infra.store.items import INDEX_BY_TIME, KIND_TASK, revocation_key, task_key
from infra.store.revoke import revoke
from tests.apps import probe
from tests.invoke import invoke
from tests.sqs_helpers import counts, queue_with_dlq, receive
from tests.tables import results_table_like_template
from tests.workers import ROOT

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(180, method="thread"),
]

QUEUE = "dash"
MAX_RECEIVE_COUNT = 2
FUNCTION_TIMEOUT = 10
RETRY_SECONDS = 3
TOKEN = "test-token-" + uuid.uuid4().hex
XSS = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

app = Celery("dash", task_cls="infra.worker.task:ClaimingTask", set_as_current=False)
app.config_from_object("tasks.celeryconfig")


def configure(queue_url: str) -> None:
    options = transport_options(Settings.from_env())
    options["predefined_queues"] = {QUEUE: {"url": queue_url}}
    app.conf.update(
        broker_transport_options=options,
        task_default_queue=QUEUE,
        task_queues=(Queue(QUEUE),),
        task_routes=None,
        task_annotations=None,
        result_extended=True,  # the task page shows args and kwargs
        beat_schedule={"dash-every-5m": {"task": "dash.ok", "schedule": 300.0, "args": ("b",)}},
    )


@app.task(name="dash.ok", shared=False)
def ok(marker: str) -> str:
    probe.record_call(marker)
    return marker


@app.task(name="dash.fail", shared=False)
def fail(marker: str) -> None:
    raise ValueError(f"boom {marker}")


@app.task(bind=True, name="dash.flaky", shared=False, max_retries=2)
def flaky(self: celery.Task, marker: str) -> int:
    if self.request.retries < 1:
        raise self.retry(countdown=1)
    retries: int = self.request.retries
    return retries


@app.task(bind=True, name="dash.hold", shared=False, max_retries=None)
def hold(self: celery.Task, marker: str) -> None:
    """Retries (seconds later) until revoked: a task a consumer will receive again."""
    probe.record_call(marker)
    raise self.retry(countdown=RETRY_SECONDS)


@app.task(name="dash.fanout", shared=False)
def fanout(marker: str, count: int) -> None:
    group(ok.si(f"{marker}-{i}") for i in range(count)).apply_async()


@app.task(name="dash.poison", shared=False)
def poison(marker: str) -> str:
    """Refuses to run until its fix is deployed (a marker in the users table)."""
    if not probe.calls(f"fixed:{marker}"):
        raise Reject(f"{marker} is not fixed yet", requeue=True)
    probe.record_call(marker)
    return marker


# ---------------------------------------------------------------- the workload


@dataclasses.dataclass(frozen=True)
class Workload:
    source: EventSource
    table: str
    dlq_url: str
    ok: tuple[str, ...]
    xss: str
    failed: str
    flaky: str
    chain_root: str
    chain_fanout: str
    poison: str
    poison_marker: str
    leases_end: float


def stored(task_id: str) -> dict[str, Any] | None:
    item = (
        aws.client("dynamodb")
        .get_item(
            TableName=Settings.from_env().results_table,
            Key={"id": {"S": task_key(task_id)}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    return dict(item) if item else None


def drain(source: EventSource) -> None:
    consume([source], handler_from_source, until_empty=True, failed_visibility=0, wait_seconds=1)


@pytest.fixture(scope="module")
def workload(cloud: Deployment) -> Iterator[Workload]:
    suffix = uuid.uuid4().hex[:8]
    queue = queue_with_dlq(f"dash-{suffix}", max_receive_count=MAX_RECEIVE_COUNT)
    table = results_table_like_template(f"dash-results-{suffix}")
    [template_source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    source = dataclasses.replace(
        template_source, queue_url=queue.url, queue_arn=queue.arn, timeout=FUNCTION_TIMEOUT
    )
    previous_app = get_current_app()
    with pytest.MonkeyPatch.context() as env:
        point_app_at(app, cloud)
        urls = {**json.loads(cloud.environment["CELERY_QUEUE_URLS"]), QUEUE: queue.url}
        env.setenv("CELERY_QUEUE_URLS", json.dumps(urls))
        env.setenv("CELERY_APP", f"{__name__}:app")
        env.setenv("RESULTS_TABLE", table)
        configure(queue.url)
        forget_backend(app)
        runtime.pipeline.cache_clear()
        yield _run_workload(source, table, queue.dlq_url)
        runtime.pipeline.cache_clear()
    forget_backend(app)
    previous_app.set_current()
    for url in (queue.url, queue.dlq_url):
        aws.client("sqs").delete_queue(QueueUrl=url)
    aws.client("dynamodb").delete_table(TableName=table)


def _run_workload(source: EventSource, table: str, dlq_url: str) -> Workload:
    oks = [ok.delay(uuid.uuid4().hex).id for _ in range(3)]
    xss = ok.delay(XSS).id
    failed = fail.delay(XSS).id  # the exception's message carries it too
    retried = flaky.delay(uuid.uuid4().hex).id
    workflow = chain(ok.si(uuid.uuid4().hex), fanout.si(uuid.uuid4().hex, 2)).apply_async()
    marker = uuid.uuid4().hex
    poisoned = poison.delay(marker).id
    drain(source)
    item = stored(poisoned) or {}
    return Workload(
        source=source,
        table=table,
        dlq_url=dlq_url,
        ok=tuple(oks),
        xss=xss,
        failed=failed,
        flaky=retried,
        chain_root=workflow.parent.id,
        chain_fanout=workflow.id,
        poison=poisoned,
        poison_marker=marker,
        leases_end=float(item.get("lease_until", {}).get("N", "0")),
    )


# ---------------------------------------------------------------- the dashboard and the browser


@dataclasses.dataclass
class Served:
    """A dashboard served by uvicorn in a thread of this process."""

    base: str
    server: uvicorn.Server
    thread: threading.Thread

    def url(self, path: str = "/", **params: str) -> str:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"{self.base}{path}{query}"


@contextmanager
def serving(read_only: bool = False) -> Iterator[Served]:
    dashboard = make_dashboard(target_from_env(), app, token=TOKEN, read_only=read_only)
    port = free_port()
    config = uvicorn.Config(create_app(dashboard), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the dashboard to start")
    try:
        yield Served(f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def dashboard(workload: Workload) -> Iterator[Served]:
    with serving() as served:
        yield served


@pytest.fixture(scope="module")
def read_only_dashboard(workload: Workload) -> Iterator[Served]:
    with serving(read_only=True) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH: `make browser-install` installs Debian's package")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@dataclasses.dataclass
class Tab:
    """A logged-in browser page and the dialogs it saw."""

    page: Any
    dialogs: list[str]

    def goto(self, url: str) -> Any:
        response = self.page.goto(url)
        return response


def open_tab(browser: Any, served: Served) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.goto(served.url("/", token=TOKEN))
    try:
        yield Tab(page, dialogs)
    finally:
        context.close()


@pytest.fixture
def tab(browser: Any, dashboard: Served) -> Iterator[Tab]:
    yield from open_tab(browser, dashboard)


@pytest.fixture
def read_only_tab(browser: Any, read_only_dashboard: Served) -> Iterator[Tab]:
    yield from open_tab(browser, read_only_dashboard)


def wait_for(condition: Callable[[], bool], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def fetch(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> Any:
    """(status, body, headers) of a request made without a browser (no cookie)."""
    request = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


def table_counts(table: str) -> Counter[str]:
    """Tasks by state straight from the table's by-time index (the pages' source of truth)."""
    found: Counter[str] = Counter()
    paginator = aws.client("dynamodb").get_paginator("query")
    for page in paginator.paginate(
        TableName=table,
        IndexName=INDEX_BY_TIME,
        KeyConditionExpression="#k = :k",
        ExpressionAttributeNames={"#k": "kind"},
        ExpressionAttributeValues={":k": {"S": KIND_TASK}},
    ):
        found.update(item["status"]["S"] for item in page["Items"])
    return found


def listed_ids(tab: Tab) -> list[str]:
    return [
        str(i)
        for i in tab.page.locator("#tasks tbody tr[data-id]").evaluate_all(
            "rows => rows.map(r => r.dataset.id)"
        )
    ]


def screenshot(tab: Tab, name: str, tmp_path: Path) -> None:
    """A full-page PNG in tmp_path, and under $DASHBOARD_SCREENSHOTS (the README's) when set."""
    path = tmp_path / name
    tab.page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes().startswith(b"\x89PNG")
    if folder := os.environ.get("DASHBOARD_SCREENSHOTS"):
        shutil.copy(path, ROOT / folder / name)


# ---------------------------------------------------------------- the token


def test_no_token_is_401_and_nothing_else(dashboard: Served) -> None:
    for path in ("/", "/tasks", "/dlq", "/schedule", "/static/live.js", "/no-such-page"):
        status, body, _ = fetch(dashboard.url(path))
        assert status == 401, path
        assert body == UNAUTHORIZED  # one line of text, no page
    assert fetch(dashboard.url("/", token="wrong"))[0] == 401
    assert fetch(dashboard.url("/"), {"Authorization": "Bearer wrong"})[0] == 401
    status, body, headers = fetch(dashboard.url("/tasks"), {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and '<table id="tasks"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    # A POST without a session is refused before anything is read.
    assert fetch(dashboard.url("/dlq/purge"), data=b"dlq=x")[0] == 401


def test_the_token_url_leaves_an_http_only_cookie_and_a_clean_address(tab: Tab) -> None:
    assert "token" not in tab.page.url
    [cookie] = tab.page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]
    assert tab.page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
    assert tab.page.locator("h1").inner_text() == "Overview"


# ---------------------------------------------------------------- overview


def test_overview_counts_match_the_table(tab: Tab, workload: Workload, tmp_path: Path) -> None:
    expected = table_counts(workload.table)
    assert expected[states.SUCCESS] >= 8 and expected[states.FAILURE] == 1

    shown = {
        str(state): int(tab.page.locator(f'#states tr[data-state="{state}"] td.day').inner_text())
        for state in expected
    }
    assert shown == dict(expected)
    hour = tab.page.locator(f'#states tr[data-state="{states.FAILURE}"] td.hour').inner_text()
    assert int(hour) == 1
    dlq_row = tab.page.locator(f'#queues tr[data-queue="{QUEUE} (dlq)"] td.visible')
    assert dlq_row.inner_text() == "1"
    assert tab.page.locator("svg.chart rect.ok").count() > 0
    screenshot(tab, "dashboard-overview.png", tmp_path)


def test_overview_refreshes_without_a_reload(tab: Tab, workload: Workload) -> None:
    row = f'#states tr[data-state="{states.SUCCESS}"] td.day'
    before = int(tab.page.locator(row).inner_text())
    tab.page.evaluate("window.notReloaded = true")

    ok.delay(uuid.uuid4().hex)
    drain(workload.source)

    # (The page's CSP forbids eval, so the wait polls from here rather than in the page.)
    wait_for(lambda: int(tab.page.locator(row).inner_text()) == before + 1, "the refresh", 30)
    assert tab.page.evaluate("window.notReloaded") is True


# ---------------------------------------------------------------- tasks


def test_task_list_filters(tab: Tab, dashboard: Served, workload: Workload) -> None:
    tab.goto(dashboard.url("/tasks", state="failure"))
    assert listed_ids(tab) == [workload.failed]

    tab.goto(dashboard.url("/tasks"))
    tab.page.fill('#filters input[name="task"]', "dash.flaky")
    tab.page.click('#filters button[type="submit"]')
    assert listed_ids(tab) == [workload.flaky]

    tab.goto(dashboard.url("/tasks", id=workload.chain_root[:13]))
    assert listed_ids(tab) == [workload.chain_root]  # an id prefix, through the index

    tab.goto(dashboard.url("/tasks", task="dash.ok", state="SUCCESS", queue=QUEUE, since="1h"))
    assert set(workload.ok) | {workload.xss, workload.chain_root} <= set(listed_ids(tab))

    tab.goto(dashboard.url("/tasks", queue="no-such-queue"))
    assert listed_ids(tab) == [] and tab.page.locator("#empty").is_visible()


def test_task_list_pages_through_the_index_newest_first(
    tab: Tab, dashboard: Served, workload: Workload
) -> None:
    everything = table_counts(workload.table).total()
    tab.goto(dashboard.url("/tasks", limit="3"))
    seen: list[str] = []
    while True:
        page = listed_ids(tab)
        assert 0 < len(page) <= 3 or not seen
        seen += page
        if tab.page.locator("#next").count() == 0:
            break
        tab.page.click("#next")
    assert len(seen) == len(set(seen)) == everything


def test_task_list_shows_new_tasks_without_a_reload(
    tab: Tab, dashboard: Served, workload: Workload
) -> None:
    tab.goto(dashboard.url("/tasks", task="dash.ok"))
    tab.page.evaluate("window.notReloaded = true")

    new = ok.delay(uuid.uuid4().hex).id
    drain(workload.source)

    wait_for(lambda: listed_ids(tab)[:1] == [new], "the new task at the top of the list", 30)
    assert tab.page.evaluate("window.notReloaded") is True


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"state": "NOPE"}, "state='NOPE' is not a Celery state"),
        ({"limit": "0"}, "limit=0 is out of range"),
        ({"limit": "many"}, "limit='many' is not a whole number"),
        ({"since": "yesterday"}, "since='yesterday' is neither a duration"),
        ({"cursor": "garbage"}, "cursor is not one this dashboard handed out"),
        ({"id": "a b"}, "is not a task id"),
        ({"colour": "red"}, "unknown query parameter colour"),
    ],
)
def test_bad_query_parameters_are_400_saying_why(
    dashboard: Served, query: dict[str, str], message: str
) -> None:
    status, body, _ = fetch(dashboard.url("/tasks", **query), {"Authorization": f"Bearer {TOKEN}"})
    assert status == 400
    assert message in re.sub(r"&#3[49];", lambda m: {"&#34;": '"', "&#39;": "'"}[m[0]], body)


# ---------------------------------------------------------------- task


def test_task_page_shows_the_failure_and_its_traceback(
    tab: Tab, dashboard: Served, workload: Workload
) -> None:
    tab.goto(dashboard.url(f"/tasks/{workload.failed}"))
    assert tab.page.locator("#state").inner_text() == states.FAILURE
    assert tab.page.locator("#exception").inner_text() == f"ValueError: boom {XSS}"
    assert "raise ValueError" in tab.page.locator("#traceback").inner_text()
    assert tab.page.locator("#consumer").inner_text().startswith("lambda:")


def test_task_page_shows_retries_result_and_timeline(
    tab: Tab, dashboard: Served, workload: Workload, tmp_path: Path
) -> None:
    tab.goto(dashboard.url(f"/tasks/{workload.flaky}"))
    assert tab.page.locator("#retries").inner_text() == "1"
    assert tab.page.locator("#result").inner_text() == "1"
    assert "finished" in tab.page.locator("#timeline").inner_text()

    tab.goto(dashboard.url(f"/tasks/{workload.chain_fanout}"))
    screenshot(tab, "dashboard-task.png", tmp_path)


def test_workflow_tree_shows_the_chain_and_its_group(
    tab: Tab, dashboard: Served, workload: Workload
) -> None:
    tab.goto(dashboard.url(f"/tasks/{workload.chain_fanout}"))
    assert workload.chain_root in tab.page.locator("#parent").inner_text()

    root = tab.page.locator(f'#workflow > li[data-id="{workload.chain_root}"]')
    step = root.locator(f':scope > ul > li[data-id="{workload.chain_fanout}"]')
    assert "dash.fanout" in step.inner_text() and "current" in step.get_attribute("class")
    members = step.locator(":scope > ul > li > ul > li")
    assert members.count() == 2
    assert all("dash.ok" in text and states.SUCCESS in text for text in members.all_inner_texts())
    members.first.locator("a").click()  # a member's page shows the same workflow
    assert tab.page.locator(f'#workflow > li[data-id="{workload.chain_root}"]').count() == 1


def test_script_in_an_argument_is_shown_as_text(
    tab: Tab, dashboard: Served, workload: Workload
) -> None:
    tab.goto(dashboard.url(f"/tasks/{workload.xss}"))
    assert XSS in tab.page.locator("#args").inner_text()
    assert XSS in tab.page.locator("#result").inner_text()
    assert tab.page.locator("script").count() == 1  # the dashboard's own live.js only
    tab.goto(dashboard.url("/tasks", state="FAILURE"))
    tab.goto(dashboard.url(f"/tasks/{workload.failed}"))
    assert tab.dialogs == []  # no alert() ran


def test_the_start_of_an_id_opens_its_task_page(
    tab: Tab, dashboard: Served, workload: Workload
) -> None:
    tab.goto(dashboard.url(f"/tasks/{workload.failed[:8]}"))  # as the tables show it
    assert tab.page.url.endswith(f"/tasks/{workload.failed}")
    assert tab.page.locator("#state").inner_text() == states.FAILURE


def test_unknown_task_is_404(tab: Tab, dashboard: Served) -> None:
    response = tab.goto(dashboard.url("/tasks/no-such-task"))
    assert response.status == 404
    assert "no task no-such-task" in tab.page.locator("#error").inner_text()


# ---------------------------------------------------------------- revoke


def _retrying_task(workload: Workload) -> str:
    """A task that ran once and is waiting for its retry (state RETRY, in the queue delayed)."""
    result = hold.delay(uuid.uuid4().hex)
    assert invoke(workload.source, receive(workload.source.queue_url, 1)) == []
    wait_for(lambda: state_of(result.id) == states.RETRY, "the task to wait for its retry")
    return str(result.id)


def state_of(task_id: str) -> str | None:
    return (stored(task_id) or {}).get("status", {}).get("S")


def run_the_retry(workload: Workload) -> None:
    """The consumer receives the task's retry once it is due (and any hand-back after)."""
    drain(workload.source)


def test_a_wrong_csrf_token_is_403_and_changes_nothing(
    tab: Tab, dashboard: Served, workload: Workload
) -> None:
    task_id = _retrying_task(workload)
    tab.goto(dashboard.url(f"/tasks/{task_id}"))
    tab.page.eval_on_selector('#revoke input[name="csrf"]', "input => input.value = 'forged'")
    with tab.page.expect_navigation():
        tab.page.click('#revoke button[type="submit"]')

    assert tab.page.locator("h1").inner_text() == "Forbidden"
    assert "CSRF token" in tab.page.locator("#error").inner_text()
    revocation = aws.client("dynamodb").get_item(
        TableName=workload.table, Key={"id": {"S": revocation_key(task_id)}}, ConsistentRead=True
    )
    assert "Item" not in revocation
    # The cookie alone (a cross-site form would carry it) is refused the same way.
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in tab.page.context.cookies())
    status, _, _ = fetch(
        dashboard.url(f"/tasks/{task_id}/revoke"), {"Cookie": cookie}, data=b"reason=x"
    )
    assert status == 403
    assert state_of(task_id) == states.RETRY
    revoke(app, [task_id])  # as `lambda revoke` does, so that its retries end
    run_the_retry(workload)
    assert state_of(task_id) == states.REVOKED


def test_revoke_from_the_task_page_ends_revoked(
    tab: Tab, dashboard: Served, workload: Workload
) -> None:
    task_id = _retrying_task(workload)
    tab.goto(dashboard.url(f"/tasks/{task_id}"))
    assert tab.page.locator("#state").inner_text() == states.RETRY

    with tab.page.expect_navigation():
        tab.page.click('#revoke button[type="submit"]')
    assert tab.dialogs and "Revoke" in tab.dialogs[0]  # it asked first
    assert tab.page.locator("#done").inner_text() == f"revoked {task_id}"

    run_the_retry(workload)  # the consumer meets the revocation
    tab.goto(dashboard.url(f"/tasks/{task_id}"))
    assert tab.page.locator("#state").inner_text() == states.REVOKED


def test_read_only_hides_and_refuses_actions(
    read_only_tab: Tab, read_only_dashboard: Served, workload: Workload
) -> None:
    read_only_tab.goto(read_only_dashboard.url(f"/tasks/{workload.flaky}"))
    assert read_only_tab.page.locator("#revoke").count() == 0
    assert "read-only" in read_only_tab.page.locator("header").inner_text()
    read_only_tab.goto(read_only_dashboard.url("/dlq"))
    assert read_only_tab.page.locator("form").count() == 0

    cookie = "; ".join(f"{c['name']}={c['value']}" for c in read_only_tab.page.context.cookies())
    status, body, _ = fetch(
        read_only_dashboard.url("/dlq/purge"),
        {"Cookie": cookie},
        data=urllib.parse.urlencode({"dlq": workload.dlq_url}).encode(),
    )
    assert status == 403 and "read-only" in body
    assert counts(workload.dlq_url)[0] == 1  # still there


# ---------------------------------------------------------------- DLQ and schedule


def test_dlq_page_decodes_the_message_and_says_why(
    tab: Tab, dashboard: Served, workload: Workload
) -> None:
    tab.goto(dashboard.url("/dlq"))
    row = tab.page.locator(f'tr[data-task="{workload.poison}"]')
    assert "dash.poison" in row.inner_text()
    assert workload.poison_marker in row.locator(".args").inner_text()
    reason = row.locator(".reason").inner_text()
    assert "without finishing (maxReceiveCount 2)" in reason
    assert counts(workload.dlq_url) == (1, 0, 0)  # looking took nothing away


def test_redrive_from_the_dlq_page_puts_the_message_back_and_it_runs(
    tab: Tab, dashboard: Served, workload: Workload
) -> None:
    probe.record_call(f"fixed:{workload.poison_marker}")  # the fix is deployed
    time.sleep(max(0.0, workload.leases_end - time.time()))  # the rejected claim has ended
    tab.goto(dashboard.url("/dlq"))

    with tab.page.expect_navigation():
        tab.page.click(f'tr[data-task="{workload.poison}"] form.redrive-one button')

    assert "1 message(s) sent back to their queue" in tab.page.locator("#done").inner_text()
    assert counts(workload.dlq_url)[0] == 0 and counts(workload.source.queue_url)[0] == 1
    drain(workload.source)
    tab.goto(dashboard.url(f"/tasks/{workload.poison}"))
    assert tab.page.locator("#state").inner_text() == states.SUCCESS
    assert probe.calls(workload.poison_marker) == 1


def test_a_message_that_is_no_task_is_shown_why_and_purge_empties_the_dlq(
    tab: Tab, dashboard: Served, workload: Workload
) -> None:
    aws.client("sqs").send_message(QueueUrl=workload.dlq_url, MessageBody=XSS)
    tab.goto(dashboard.url("/dlq"))
    section = tab.page.locator(f'section.dlq[data-queue="{QUEUE}"]')
    reason = section.locator("td.reason").inner_text()
    assert reason.startswith("cannot be run: ") and "neither a JSON object nor base64" in reason

    with tab.page.expect_navigation():
        section.locator("form.purge button").click()

    assert tab.dialogs and "cannot be undone" in tab.dialogs[-1]
    assert f"purged {QUEUE}'s DLQ" in tab.page.locator("#done").inner_text()
    wait_for(lambda: counts(workload.dlq_url) == (0, 0, 0), "the purge")


def test_schedule_page_lists_the_beat_entries(tab: Tab, dashboard: Served) -> None:
    tab.goto(dashboard.url("/schedule"))
    row = tab.page.locator('#schedule tr[data-entry="dash-every-5m"]')
    text = row.inner_text()
    assert "every 5.00 minutes" in text and "dash.ok" in text and QUEUE in text
    assert row.locator(".last").inner_text() == "never"


# ---------------------------------------------------------------- the command


def test_the_command_prints_a_url_that_opens_it(cloud_env: dict[str, str]) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "lambda", "dashboard", "--port", str(port)],
        cwd=ROOT,
        env=cloud_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        url = lines[1].strip()
        token = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["token"][0]
        assert url == dashboard_url("127.0.0.1", port, token) and len(token) >= 24
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(base), "the command's server", within=30)
        assert fetch(f"{base}/tasks")[0] == 401
        status, body, _ = fetch(f"{base}/", {"Authorization": f"Bearer {token}"})
        assert status == 200 and "Overview" in body
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout is not None:
            process.stdout.close()


def _answers(base: str) -> bool:
    try:
        return bool(fetch(f"{base}/")[0])
    except OSError:
        return False
