"""The differential scenarios: how each is published and what each side must come to."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.store.items import NOT_REGISTERED
from tests.apps import scenarios as sc
from tests.integration.differential.publish import (
    INVALID_MESSAGE,
    RICH_VALUES,
    UNKNOWN_MESSAGE,
    UNREGISTERED,
    a_second_ago,
    publish_chain,
    publish_chord,
    publish_duplicate,
    publish_group,
    publish_link,
    publish_long_eta,
    publish_malformed,
    publish_pickle,
    publish_request,
    publish_revoked,
    publish_rich_types,
    publish_unknown,
    single,
    with_errback,
)
from tests.integration.differential.sides import MAX_RECEIVE_COUNT, Outcome, Published

__all__ = ["BY_NAME", "SCENARIOS", "Scenario"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """How to publish a scenario and what each side must come to.

    ``expected`` holds for both sides, which must also store the same details; with ``differs``
    (the reason) the two differ by design and ``expected`` has a ``worker`` and a ``lambda``
    entry. ``lambda_bug`` marks a Lambda-path outcome that misses what DESIGN.md promises.
    """

    name: str
    publish: Callable[[], Published]
    expected: Outcome
    differs: str = ""
    lambda_bug: str = ""

    def expected_for(self, side: str) -> Outcome:
        return self.expected[side] if self.differs else self.expected


def poison(reason: str) -> Outcome:
    """A record failure each receive, logged with ``reason``, then the DLQ."""
    return {"logged": [reason], "record_failures": MAX_RECEIVE_COUNT, "dead_lettered": True}


def exc(name: str, *args: Any) -> dict[str, Any]:
    return {"exception": name, "args": list(args)}


def failed(name: str, *args: Any, traceback: str | None = None) -> Outcome:
    observed: Outcome = {"state": "FAILURE", "result": exc(name, *args)}
    if traceback:
        observed["traceback"] = traceback
    return observed


def errback_marker(exc_type: str, message: str, *, traceback: bool = True) -> Outcome:
    result = {
        "failed_task": "<failing task>",
        "exc_type": exc_type,
        "exc": message,
        "traceback_mentions_exc": traceback,
    }
    return {"state": "SUCCESS", "result": result}


REQUEST_DEFAULTS = {
    "root_id": "<self>",
    "parent_id": None,
    "group": None,
    "group_index": None,
    "retries": 0,
    "routing_key": sc.QUEUE,
    "eta": None,
    "expires": None,
    "called_directly": False,
    "is_eager": False,
}
NOTHING = {"state": "PENDING", "result": None}
HOST = socket.gethostname()


class Including(dict[str, Any]):
    """Equal to any dict holding at least these items (a meta with fields that vary by run)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict) and all(other.get(k) == v for k, v in self.items())

    __hash__ = None  # type: ignore[assignment]


def not_registered(consumer: str) -> Outcome:
    """What an id says when ``consumer`` does not register its task (infra.store.unregistered)."""
    message = f"task 'scenarios.nope' is not registered in {consumer}"
    reason = Including(exc_type="NotRegistered", exc_message=message, consumer=consumer)
    return {"state": NOT_REGISTERED, "result": reason}


SCENARIOS = [
    Scenario("add", lambda: single(sc.add.delay(2, 3)), {"state": "SUCCESS", "result": 5}),
    Scenario(
        "kwargs",
        lambda: single(sc.kwargs.apply_async((3,), {"scale": 4})),
        {"state": "SUCCESS", "result": {"value": 12, "label": ""}},
    ),
    Scenario(
        "rich JSON types",
        publish_rich_types,
        {
            "state": "SUCCESS",
            "result": {
                "arrived": [
                    ["datetime", "2024-02-29 12:30:15.123456+00:00"],
                    ["Decimal", "3.14159265358979323846"],
                    ["UUID", "<uuid argument>"],
                    ["bytes", "b'caf\\xc3\\xa9'"],
                    ["bytes", "b'\\xff\\x00\\x80'"],
                ],
                "named": {"naive": ["datetime", "2024-01-02 03:04:05"]},
                "echo": list(RICH_VALUES),
            },
        },
    ),
    Scenario(
        "bind=True request",
        publish_request,
        {
            "state": "SUCCESS",
            "result": {
                **REQUEST_DEFAULTS,
                "id": "<self>",
                "eta": "<eta>",
                "expires": "<expires>",
                "args": [1, "two"],
                "kwargs": {"k": [3]},
            },
        },
    ),
    Scenario(
        "update_state PROGRESS",
        lambda: single(sc.progress.delay()),
        {
            "state": "SUCCESS",
            "result": {"seen_state": "PROGRESS", "seen_meta": {"step": 1, "of": 2}},
        },
    ),
    Scenario(
        "retry until success",
        lambda: single(sc.retry_twice.delay()),
        {"state": "SUCCESS", "result": {"retries": 2, "id": "<self>"}},
    ),
    Scenario(
        "max_retries exhausted",
        lambda: single(sc.retry_forever.delay()),
        failed(
            "MaxRetriesExceededError",
            "Can't retry scenarios.retry_forever[<self>] args:() kwargs:{}",
            traceback="celery.exceptions.MaxRetriesExceededError: "
            "Can't retry scenarios.retry_forever[<self>] args:() kwargs:{}",
        ),
    ),
    Scenario(
        "autoretry_for with backoff",
        lambda: single(sc.autoretry.delay()),
        {"state": "SUCCESS", "result": {"retries": 2}},
    ),
    Scenario(
        "link",
        publish_link,
        {
            "parent": {"state": "SUCCESS", "result": 4},
            "callbacks": [{"state": "SUCCESS", "result": 20}],
        },
    ),
    Scenario(
        "link_error (new-style errback)",
        lambda: with_errback(sc.fail.apply_async((7,), link_error=sc.record_errback.s())),
        {
            "task": failed("ValueError", "bad value 7", traceback="ValueError: bad value 7"),
            "errback marker": errback_marker("ValueError", "bad value 7"),
        },
    ),
    Scenario(
        "chain",
        publish_chain,
        {
            "links": [
                {"state": "SUCCESS", "result": 3},
                {"state": "SUCCESS", "result": 6},
                {
                    "state": "SUCCESS",
                    "result": {
                        **REQUEST_DEFAULTS,
                        "id": "<last>",
                        "root_id": "<first>",
                        "parent_id": "<second>",
                        "args": [6],
                        "kwargs": {},
                    },
                },
            ]
        },
    ),
    Scenario(
        "group",
        publish_group,
        {
            "members": [
                {"state": "SUCCESS", "result": 2},
                {"state": "SUCCESS", "result": 4},
                {
                    "state": "SUCCESS",
                    "result": {
                        **REQUEST_DEFAULTS,
                        "id": "<member 2>",
                        "root_id": "<member 2>",
                        "group": "<group>",
                        "group_index": 2,
                        "args": [7],
                        "kwargs": {},
                    },
                },
            ]
        },
    ),
    Scenario(
        "chord",
        publish_chord,
        {
            "body": {"state": "SUCCESS", "result": 6},
            "header": [{"state": "SUCCESS", "result": r} for r in (0, 2, 4)],
        },
    ),
    Scenario(
        "countdown=2",
        lambda: single(sc.on_time.apply_async(countdown=2)),
        {"state": "SUCCESS", "result": {"has_eta": True, "not_early": True}},
    ),
    Scenario(
        "eta 16 minutes ahead",
        publish_long_eta,
        # Published with the longest SQS delay, so no consumer holds it in memory past its
        # visibility timeout; after 15 minutes the Lambda path re-sends it for the rest.
        {**NOTHING, "held": "kept by SQS (DelaySeconds=900 at publish), not delivered"},
    ),
    Scenario(
        "expires in the past",
        lambda: single(sc.add.apply_async((1, 1), expires=a_second_ago())),
        {"state": "REVOKED", "result": exc("TaskRevokedError", "expired")},
    ),
    Scenario(
        "expires before its ETA (countdown=2, expires=1)",
        lambda: single(sc.add.apply_async((1, 1), countdown=2, expires=1)),
        {"state": "REVOKED", "result": exc("TaskRevokedError", "expired")},
    ),
    Scenario(
        "soft time limit",
        lambda: single(sc.soft_limit.delay()),
        {"state": "SUCCESS", "result": "soft"},
    ),
    Scenario(
        "soft time limit raised per call",
        lambda: single(sc.soft_limit.apply_async(soft_time_limit=5)),
        {"state": "SUCCESS", "result": "not interrupted"},
    ),
    Scenario(
        "hard time limit",
        lambda: with_errback(sc.hard_limit.apply_async(link_error=sc.record_errback.s())),
        {
            "task": failed("TimeLimitExceeded", 1),
            "errback marker": errback_marker(
                "TimeLimitExceeded", "TimeLimitExceeded(1,)", traceback=False
            ),
        },
    ),
    Scenario(
        "hard time limit inside except Exception",
        lambda: single(sc.hard_limit_caught.delay()),
        failed("TimeLimitExceeded", 1),
    ),
    Scenario(
        "task raises",
        lambda: single(sc.fail.delay(42)),
        failed("ValueError", "bad value 42", traceback="ValueError: bad value 42"),
    ),
    Scenario(
        "duplicate delivery after success",
        publish_duplicate,
        {"state": "SUCCESS", "result": {"runs": 1}, "deliveries": 2, "runs": 1},
    ),
    Scenario(
        "revoked before it runs",
        publish_revoked,
        {"state": "REVOKED", "result": exc("TaskRevokedError", "revoked")},
    ),
    Scenario(
        "unknown task",
        publish_unknown,
        {
            "worker": {**not_registered(f"worker@{HOST}"), "logged": UNREGISTERED},
            "lambda": {
                **not_registered(f"lambda@{HOST}"),
                **poison("task is not registered in the app"),
            },
        },
        differs="Both record NOT_REGISTERED naming the consumer (not terminal: a redrive after "
        "a deploy still runs it); the worker rejects the message, the Lambda path reports a "
        "record failure each time (a later deployment may know the task) until the redrive "
        "policy moves it to the DLQ.",
    ),
    Scenario(
        "malformed body",
        publish_malformed,
        {
            "worker": {"logged": UNKNOWN_MESSAGE},
            "lambda": poison("SQS body is neither a JSON object nor base64"),
        },
        differs="The worker logs an unknown message and rejects it; the Lambda path reports a "
        "record failure each time until the redrive policy moves it to the DLQ.",
    ),
    Scenario(
        "pickle refused (accept_content json)",
        publish_pickle,
        {
            "worker": {**NOTHING, "logged": INVALID_MESSAGE},
            "lambda": {
                **NOTHING,
                **poison(
                    "refused content type 'application/x-python-serialize': "
                    "accepted are ['application/json']"
                ),
            },
        },
        differs="Neither runs it. The worker logs an invalid task message and rejects it; the "
        "Lambda path reports a record failure each time until the redrive policy moves it to the "
        "DLQ.",
    ),
]
BY_NAME = {s.name: s for s in SCENARIOS}
