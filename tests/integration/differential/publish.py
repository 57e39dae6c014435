"""How each scenario of ``tests/apps/scenarios.py`` is published with plain Celery calls, and
when it has settled on a side: one function per scenario, each returning a :class:`Published`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from celery import chain, chord, group
from celery.result import AsyncResult, GroupResult

from infra.core import aws
from infra.store.items import NOT_REGISTERED
from tests.apps import scenarios as sc
from tests.integration.differential.sides import Outcome, Published, Side, outcome, without_stored

__all__ = [
    "GARBAGE_DUMPED",
    "INVALID_MESSAGE",
    "RICH_VALUES",
    "UNKNOWN_MESSAGE",
    "UNREGISTERED",
    "UUID_ARGUMENT",
    "a_second_ago",
    "publish_chain",
    "publish_chord",
    "publish_duplicate",
    "publish_group",
    "publish_link",
    "publish_long_eta",
    "publish_malformed",
    "publish_pickle",
    "publish_request",
    "publish_revoked",
    "publish_rich_types",
    "publish_unknown",
    "single",
    "with_errback",
]

GARBAGE = "this is not a Celery message {"
UNREGISTERED = "Received unregistered task of type 'scenarios.nope'"
UNKNOWN_MESSAGE = "Received and deleted unknown message"
GARBAGE_DUMPED = f"The full contents of the message body was: body: {GARBAGE!r}"
INVALID_MESSAGE = "Received invalid task message: Refusing to deserialize untrusted content"
UUID_ARGUMENT = uuid.UUID("12345678-1234-5678-1234-567812345678")
RICH_VALUES = (
    datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=UTC),
    Decimal("3.14159265358979323846"),
    UUID_ARGUMENT,
    "caf\u00e9".encode(),
    b"\xff\x00\x80",
)


def single(result: AsyncResult, **roles: str) -> Published:
    """A scenario that is one task, settled once its state is terminal."""
    names = {result.id: "self", **{raw: role for role, raw in roles.items()}}
    return Published(lambda side: result.ready(), lambda side: outcome(result, names))


def with_errback(failing: AsyncResult) -> Published:
    """A failing task whose new-style errback stores a marker result."""
    marker = AsyncResult(sc.marker_id(failing.id), app=sc.app)
    roles = {failing.id: "failing task"}
    return Published(
        lambda side: failing.ready() and marker.ready(),
        lambda side: {"task": outcome(failing, roles), "errback marker": outcome(marker, roles)},
    )


# ---------------------------------------------------------------- scenarios


def publish_rich_types() -> Published:
    naive = datetime(2024, 1, 2, 3, 4, 5)
    result = sc.rich_types.apply_async(RICH_VALUES, {"naive": naive})
    return single(result, **{"uuid argument": str(UUID_ARGUMENT)})


def publish_request() -> Published:
    now = datetime.now(UTC)
    eta, expires = now + timedelta(seconds=1), now + timedelta(minutes=10)
    result = sc.request.apply_async((1, "two"), {"k": [3]}, eta=eta, expires=expires)
    return single(result, eta=eta.isoformat(), expires=expires.isoformat())


def publish_link() -> Published:
    parent = sc.add.apply_async((2, 2), link=sc.add.s(16))

    def children() -> list[Any]:
        return list(AsyncResult(parent.id, app=sc.app).children or []) if parent.ready() else []

    def observe(side: Side) -> Outcome:
        roles = {parent.id: "parent", **{c.id: f"callback {i}" for i, c in enumerate(children())}}
        return {
            "parent": outcome(parent, roles),
            "callbacks": [outcome(c, roles) for c in children()],
        }

    return Published(lambda side: any(c.ready() for c in children()), observe)


def publish_chain() -> Published:
    last = chain(sc.add.s(1, 2), sc.add.s(3), sc.request.s()).apply_async()
    links = [last.parent.parent, last.parent, last]
    roles = {r.id: role for r, role in zip(links, ("first", "second", "last"), strict=True)}
    return Published(
        lambda side: last.ready(), lambda side: {"links": [outcome(r, roles) for r in links]}
    )


def publish_group() -> Published:
    members = group(sc.add.s(1, 1), sc.add.s(2, 2), sc.request.s(7)).apply_async()
    assert isinstance(members, GroupResult) and members.id
    roles = {members.id: "group", **{r.id: f"member {i}" for i, r in enumerate(members.results)}}
    return Published(
        lambda side: members.ready(),
        lambda side: {"members": [outcome(r, roles) for r in members.results]},
    )


def publish_chord() -> Published:
    body = chord([sc.add.s(i, i) for i in range(3)], sc.total.s()).apply_async()
    header = body.parent
    roles = {body.id: "body", **{r.id: f"header {i}" for i, r in enumerate(header.results)}}
    return Published(
        lambda side: body.ready(),
        lambda side: {
            "body": outcome(body, roles),
            "header": [outcome(r, roles) for r in header.results],
        },
    )


def publish_long_eta() -> Published:
    result = sc.add.apply_async((1, 1), eta=datetime.now(UTC) + timedelta(minutes=16))

    def held(side: Side) -> str:
        if side.deliveries(result.id):
            return "delivered before its ETA"
        return "kept by SQS (DelaySeconds=900 at publish), not delivered"

    return Published(
        lambda side: True,
        lambda side: {**without_stored(outcome(result, {})), "held": held(side)},
    )


def publish_duplicate() -> Published:
    """The same task id delivered again after it finished, as SQS's at-least-once may do."""
    key = uuid.uuid4().hex
    first = sc.count_runs.apply_async((key,), task_id=f"duplicate-{key}")
    resent: list[AsyncResult] = []

    def done(side: Side) -> bool:
        if not first.ready():
            return False
        if not resent:
            resent.append(sc.count_runs.apply_async((key,), task_id=first.id))
            return False
        if side.is_worker:  # the worker ends each delivery with one outcome line
            return len(side.worker_outcomes(first.id)) >= 2
        return side.deliveries(first.id) >= 2

    def observe(side: Side) -> Outcome:
        item = aws.client("dynamodb").get_item(
            TableName=sc.app.backend.table_name, Key={"id": {"S": f"runs-{key}"}}
        )
        return {
            **without_stored(outcome(first, {})),  # Celery never overwrites a SUCCESS
            "deliveries": side.deliveries(first.id),
            "runs": int(item["Item"]["runs"]["N"]),
        }

    return Published(done, observe)


def publish_revoked() -> Published:
    result = sc.add.apply_async((1, 1), countdown=2)
    result.revoke()
    return single(result)


def publish_unknown() -> Published:
    result = sc.app.send_task("scenarios.nope", args=(1,))

    def disposal(side: Side) -> Outcome:
        if side.is_worker:
            return {"logged": side.worker_said(UNREGISTERED)}
        return side.poison(result.id)

    def done(side: Side) -> bool:
        if side.is_worker:
            return bool(result.state == NOT_REGISTERED)
        return bool(disposal(side)["dead_lettered"])

    return Published(done, lambda side: {**without_stored(outcome(result, {})), **disposal(side)})


def publish_malformed() -> Published:
    aws.client("sqs").send_message(QueueUrl=sc_queue_url(), MessageBody=GARBAGE)

    def disposal(side: Side) -> Outcome:
        if side.is_worker:
            body = side.worker_said(GARBAGE_DUMPED)
            return {"logged": side.worker_said(UNKNOWN_MESSAGE) if body else None}
        return side.poison(GARBAGE)

    def done(side: Side) -> bool:
        return bool(disposal(side)["logged"] if side.is_worker else disposal(side)["dead_lettered"])

    return Published(done, disposal)


def publish_pickle() -> Published:
    result = sc.add.apply_async((1, 2), serializer="pickle")

    def disposal(side: Side) -> Outcome:
        if side.is_worker:
            return {"logged": side.worker_said(INVALID_MESSAGE)}
        return side.poison(result.id)

    def done(side: Side) -> bool:
        return bool(disposal(side)["logged"] if side.is_worker else disposal(side)["dead_lettered"])

    return Published(done, lambda side: {**without_stored(outcome(result, {})), **disposal(side)})


def sc_queue_url() -> str:
    return str(sc.app.conf.broker_transport_options["predefined_queues"][sc.QUEUE]["url"])


def a_second_ago() -> datetime:
    return datetime.now(UTC) - timedelta(seconds=1)
