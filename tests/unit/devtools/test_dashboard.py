"""The dashboard's pure parts: parameters, the token and CSRF guard, the chart, list requests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devtools.dashboard.auth import COOKIE, Guard, Session
from devtools.dashboard.charts import buckets, throughput_svg
from devtools.dashboard.params import (
    DEFAULT_LIMIT,
    BadRequest,
    decode_cursor,
    encode_cursor,
    parse_time,
    task_filters,
)
from devtools.ops.tasks import TaskQuery, TaskRow, index_key, page_request

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC).timestamp()


def row(state: str, at: float) -> TaskRow:
    return TaskRow("id", "t", state, "q", 0, None, None, at, None, None, None)


# ---------------------------------------------------------------- parameters


def test_task_filters_become_an_ops_query() -> None:
    filters = task_filters(
        {"state": "failure", "task": "tasks.add", "since": "1h", "until": "2026-01-02T11:30Z",
         "queue": "celery", "id": "abc", "limit": "10", "token": "ignored"},
        now=NOW,
    )  # fmt: skip
    assert filters.query == TaskQuery("FAILURE", "tasks.add", NOW - 3600, 10)
    assert filters.until == NOW - 1800
    assert (filters.queue, filters.id_prefix, filters.cursor) == ("celery", "abc", None)
    assert filters.as_params()["since"] == "2026-01-02T11:00:00Z"


def test_blank_filters_are_left_out() -> None:
    filters = task_filters({"state": "", "task": " ", "limit": ""}, now=NOW)
    assert filters.query == TaskQuery(limit=DEFAULT_LIMIT)
    assert filters.as_params() == {}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"state": "DONE"}, "state='DONE' is not a Celery state"),
        ({"limit": "501"}, "limit=501 is out of range: 1 to 500"),
        ({"since": "last week"}, "since='last week' is neither a duration"),
        ({"since": "1h", "until": "2h"}, "since is after until"),
        ({"task": "<b>"}, "task='<b>' is not a task name"),
        ({"sort": "up"}, "unknown query parameter sort"),
        ({"cursor": encode_cursor({"id": {"S": "x"}})}, "cursor is not one"),
        ({"cursor": "%%%"}, "cursor is not one"),
    ],
)
def test_bad_parameters_say_which_and_why(params: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        task_filters(params, now=NOW)


def test_a_cursor_round_trips() -> None:
    key = {"id": {"S": "b'celery-task-meta-x'"}, "timestamp": {"N": "1.5"}, "kind": {"S": "task"}}
    assert decode_cursor(encode_cursor(key)) == key


def test_times_are_durations_ago_or_dates() -> None:
    assert parse_time("since", "90s", NOW) == NOW - 90
    assert parse_time("since", "2026-01-02T12:00:00", NOW) == NOW  # naive dates are UTC


# ---------------------------------------------------------------- the guard


def test_the_cookie_is_signed_and_bound_to_its_csrf_token() -> None:
    guard = Guard.new("secret")
    cookie = guard.new_cookie()
    session = guard.session({}, {COOKIE: cookie})
    assert session is not None and session.nonce and "secret" not in cookie
    assert guard.csrf_ok(session, guard.csrf(session))
    assert not guard.csrf_ok(session, "forged") and not guard.csrf_ok(session, None)
    other = guard.session({}, {COOKIE: guard.new_cookie()})
    assert other is not None and not guard.csrf_ok(other, guard.csrf(session))


def test_a_forged_or_foreign_cookie_is_no_session() -> None:
    guard = Guard.new("secret")
    nonce = guard.new_cookie().partition(".")[0]
    assert guard.session({}, {COOKIE: f"{nonce}.0000"}) is None
    assert guard.session({}, {COOKIE: Guard.new("secret").new_cookie()}) is None  # restarted
    assert guard.session({}, {}) is None


def test_bearer_needs_the_token_and_no_csrf() -> None:
    guard = Guard.new("secret")
    assert guard.session({"authorization": "Bearer secret"}, {}) == Session(None)
    assert guard.session({"authorization": "Bearer wrong"}, {}) is None
    assert guard.csrf_ok(Session(None), None)


# ---------------------------------------------------------------- the chart


def test_buckets_count_finished_tasks_by_time() -> None:
    rows = [row("SUCCESS", 10), row("SUCCESS", 15), row("FAILURE", 25), row("PENDING", 5),
            row("SUCCESS", 40)]  # fmt: skip
    series = buckets(rows, 0, 40, 4)
    assert [(b.succeeded, b.failed) for b in series] == [(0, 0), (2, 0), (0, 1), (0, 0)]
    assert series[2].failure_rate == 1.0 and series[0].failure_rate is None
    svg = throughput_svg(series)
    assert svg.startswith("<svg") and svg.count('class="ok"') == 4 and "<polyline" in svg


# ---------------------------------------------------------------- list requests


def test_a_page_request_bounds_the_sort_key_and_filters() -> None:
    query = TaskQuery(state="SUCCESS", since=100.0, limit=20)
    request = page_request("t", query, until=200.0, queue="q", id_prefix="ab")
    assert request["IndexName"] == "by-status"
    assert request["KeyConditionExpression"] == "#pk = :pk AND #ts BETWEEN :since AND :until"
    assert request["FilterExpression"] == "#queue = :queue AND begins_with(#task_id, :prefix)"
    assert request["Limit"] == 1000  # DynamoDB applies Limit before the filter
    only_until = page_request("t", TaskQuery(limit=5), until=200.0)
    assert only_until["KeyConditionExpression"] == "#pk = :pk AND #ts <= :until"
    assert "FilterExpression" not in only_until and only_until["Limit"] == 5


def test_the_next_page_starts_after_the_last_item_shown() -> None:
    item = {"id": {"S": "k"}, "timestamp": {"N": "1"}, "status": {"S": "SUCCESS"},
            "task_id": {"S": "x"}}  # fmt: skip
    assert index_key("by-status", item) == {k: item[k] for k in ("id", "timestamp", "status")}
