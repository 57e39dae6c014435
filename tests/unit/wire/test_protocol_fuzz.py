"""Property tests of infra.wire.protocol.decode: any input, mutated real messages and
structurally random envelopes give a TaskMessage or exactly a MessageDecodeError."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from functools import cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from infra.core.errors import MessageDecodeError
from infra.wire.protocol import TaskMessage, decode
from tests.fuzzing import examples
from tests.unit.celery_messages import envelope_of, make_app, publish, rewrite_envelope, sqs_body
from tests.unit.wire.support import RICH, b64, every_property, plain_body


@cache
def seed_bodies() -> tuple[str, ...]:
    """Real messages of several shapes for the mutation tests."""
    app = make_app()
    return (
        plain_body(True),
        plain_body(False),
        publish((1,), {"k": "v"}, protocol=1, base64_envelope=False),
        publish(RICH, base64_envelope=False, eta=datetime(2030, 1, 1), retries=1),
        publish(("x" * 50,), compression="gzip"),
        sqs_body(app, "t.add", (1,), link=app.signature("t.echo"), time_limit=3),
    )


def decodes_or_refuses(body: object) -> None:
    """The property: a TaskMessage whose properties all read, or exactly MessageDecodeError."""
    try:
        message = decode(body, message_id="m-fuzz")  # type: ignore[arg-type]
    except MessageDecodeError as error:
        assert type(error) is MessageDecodeError and error.raw is body
    else:
        assert isinstance(message, TaskMessage)
        every_property(message)


EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "truncate"]),
        st.integers(min_value=0, max_value=10_000),
        st.characters(),
    ),
    min_size=1,
    max_size=4,
)


def mutate(text: str, edits: list[tuple[str, int, str]]) -> str:
    """Apply character edits (positions wrap around the text's length)."""
    for kind, position, char in edits:
        at = position % (len(text) + 1)
        if kind == "flip":
            text = text[:at] + char + text[at + 1 :]
        elif kind == "insert":
            text = text[:at] + char + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at]
    return text


def mutate_layer(body: str, layer: str, edits: list[tuple[str, int, str]]) -> str:
    """Mutate the SQS body itself, the envelope JSON inside it, or the task body inside that."""
    if layer == "sqs":
        return mutate(body, edits)
    if layer == "envelope":
        text = mutate(json.dumps(envelope_of(body)), edits)
        return text if body.startswith("{") else b64(text.encode("utf-8", "surrogatepass"))
    task_body = base64.b64decode(envelope_of(body)["body"]).decode("latin-1")
    mutated = mutate(task_body, edits).encode("utf-8", "surrogatepass")
    return rewrite_envelope(body, lambda envelope: envelope.__setitem__("body", b64(mutated)))


@settings(max_examples=examples(500), deadline=None)
@given(st.text() | st.binary())
def test_random_input_decodes_or_raises_message_decode_error(body: str | bytes) -> None:
    decodes_or_refuses(body)


@settings(max_examples=examples(500), deadline=None)
@given(
    st.integers(min_value=0, max_value=5),
    st.sampled_from(["sqs", "envelope", "task-body"]),
    EDITS,
)
def test_mutated_real_messages_decode_or_raise_message_decode_error(
    seed: int, layer: str, edits: list[tuple[str, int, str]]
) -> None:
    decodes_or_refuses(mutate_layer(seed_bodies()[seed], layer, edits))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
HEADER_VALUES = JSON_VALUES | st.datetimes().map(datetime.isoformat) | st.just([1.5, None])
HEADER_KEYS = ["eta", "expires", "retries", "timelimit", "root_id", "group", "utc", "compression"]
SIGNATURES = st.lists(st.dictionaries(st.sampled_from(["task", "args"]), JSON_VALUES), max_size=2)
EMBEDS = st.none() | st.fixed_dictionaries(
    {}, optional={key: st.none() | SIGNATURES | JSON_VALUES for key in ("callbacks", "chain")}
)
V2_BODIES = st.tuples(JSON_VALUES | st.lists(JSON_VALUES), JSON_VALUES, EMBEDS).map(list)
V1_KEYS = ["task", "id", "args", "kwargs", "eta", "utc", "retries", "callbacks", "taskset"]
V1_BODIES = st.dictionaries(st.sampled_from(V1_KEYS), HEADER_VALUES)


@settings(max_examples=examples(500), deadline=None)
@given(
    task_body=V2_BODIES | V1_BODIES | JSON_VALUES,
    headers=st.fixed_dictionaries({}, optional={"task": st.text(), "id": st.text()}),
    extra_headers=st.dictionaries(st.sampled_from(HEADER_KEYS), HEADER_VALUES, max_size=3),
    properties=st.dictionaries(
        st.sampled_from(["body_encoding", "delivery_info"]),
        JSON_VALUES | st.sampled_from(["utf-8", {"routing_key": "q"}]),
        max_size=1,
    ),
)
def test_structurally_random_envelopes_decode_or_raise_message_decode_error(
    task_body: object,
    headers: dict[str, Any],
    extra_headers: dict[str, Any],
    properties: dict[str, Any],
) -> None:
    encoded = json.dumps(task_body)
    envelope = {
        "body": encoded if properties.get("body_encoding") == "utf-8" else b64(encoded),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {**headers, **extra_headers},
        "properties": {"body_encoding": "base64", **properties},
    }
    decodes_or_refuses(b64(json.dumps(envelope)))
