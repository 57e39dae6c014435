"""infra.wire.protocol.decode against messages published by real Celery through kombu's SQS
transport."""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from typing import Any
from uuid import UUID

import pytest
from celery import chain
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import compression as kombu_compression
from kombu.exceptions import ContentDisallowed

from infra.core.errors import ConfigurationError, MessageDecodeError
from infra.wire.envelope import MAX_BODY_CHARS, MAX_DECOMPRESSED_BYTES, MAX_HEADERS, MAX_NESTING
from infra.wire.protocol import TaskMessage, decode
from tests.unit.celery_messages import (
    UNPICKLED,
    Tripwire,
    capture,
    envelope_of,
    make_app,
    publish,
    rewrite_envelope,
    sqs_body,
    with_task_body,
)

PICKLE_TYPE = "application/x-python-serialize"


def b64(data: str | bytes) -> str:
    """Base64 text of ``data``, as kombu's SQS transport wraps an envelope."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def refused(body: object, *, accept: tuple[str, ...] = ("json",)) -> MessageDecodeError:
    """Decode a body that must fail; check the error carries the id and the raw body."""
    with pytest.raises(MessageDecodeError) as info:
        decode(body, message_id="m-bad", accept=accept)  # type: ignore[arg-type]
    assert type(info.value) is MessageDecodeError
    assert info.value.message_id == "m-bad"
    assert info.value.raw is body
    return info.value


def every_property(message: TaskMessage) -> tuple[object, ...]:
    """Read every derived property (none may raise once decode has returned)."""
    return (
        message.queue,
        message.eta,
        message.expires,
        message.retries,
        message.root_id,
        message.parent_id,
        message.group,
        message.timelimit,
    )


@cache
def plain_body(base64_envelope: bool = True) -> str:
    """One ordinary protocol 2 message, reused by the garbage cases."""
    return publish((2, 3), {"z": 4}, base64_envelope=base64_envelope, task_id="task-plain")


# --- the variants real Celery produces -------------------------------------------------------


@pytest.mark.parametrize("base64_envelope", [True, False], ids=["base64", "raw-json"])
def test_protocol_2_message_decodes_to_its_task_call(base64_envelope: bool) -> None:
    body = publish((2, 3), {"z": 4}, base64_envelope=base64_envelope, task_id="task-1")
    assert body.startswith("{") is not base64_envelope

    message = decode(body, message_id="m-1")

    assert (message.message_id, message.protocol) == ("m-1", 2)
    assert (message.task_id, message.task_name) == ("task-1", "t.add")
    assert (message.args, message.kwargs) == ((2, 3), {"z": 4})
    assert message.embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    assert message.headers["argsrepr"] == "(2, 3)"
    assert message.properties["correlation_id"] == "task-1"
    assert message.properties["delivery_info"]["routing_key"] == "celery-test"
    assert message.queue == "celery-test"
    assert (message.content_type, message.content_encoding) == ("application/json", "utf-8")
    assert message.root_id == "task-1" and message.parent_id is None and message.group is None


@pytest.mark.parametrize("base64_envelope", [True, False], ids=["base64", "raw-json"])
def test_protocol_1_message_is_normalised_to_protocol_2_shape(base64_envelope: bool) -> None:
    body = publish(
        (2, 3), {"z": 4}, protocol=1, base64_envelope=base64_envelope, task_id="t-1", group_id="g"
    )
    assert envelope_of(body)["headers"] == {}  # protocol 1 keeps everything in the body

    message = decode(body, message_id="m-1")

    assert (message.protocol, message.task_id, message.task_name) == (1, "t-1", "t.add")
    assert (message.args, message.kwargs) == ((2, 3), {"z": 4})
    assert message.headers["id"] == "t-1" and message.headers["task"] == "t.add"
    assert message.headers["utc"] is True and message.retries == 0
    assert message.group == "g"
    assert message.embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


COMPRESSIONS = ["gzip", "zlib", "bzip2", "lzma", "zstd", "brotli"]


@pytest.mark.parametrize("protocol", [2, 1])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_compressed_messages_are_decompressed(compression: str, protocol: int) -> None:
    try:
        _, content_type = kombu_compression.get_encoder(compression)
    except KeyError:
        pytest.skip(f"{compression} is not installed for kombu")
    body = publish(("x" * 500,), protocol=protocol, compression=compression)
    envelope = envelope_of(body)
    assert envelope["headers"]["compression"] == content_type
    assert base64.b64decode(envelope["body"])[:1] not in (b"[", b"{")  # really compressed

    message = decode(body, message_id="m-1")

    assert message.args == ("x" * 500,)
    assert "compression" not in message.headers


def test_yaml_message_decodes_when_yaml_is_accepted() -> None:
    pytest.importorskip("yaml")
    body = publish((1, "two", [3.5]), {"k": None}, serializer="yaml")
    assert envelope_of(body)["content-type"] == "application/x-yaml"

    message = decode(body, message_id="m-1", accept=("yaml",))

    assert (message.args, message.kwargs) == ((1, "two", [3.5]), {"k": None})
    assert "application/x-yaml" in refused(body).reason


def test_msgpack_message_is_binary_and_decodes_when_accepted() -> None:
    pytest.importorskip("msgpack")
    body = publish((1, b"\x00\xff"), {"k": "v"}, serializer="msgpack")

    message = decode(body, message_id="m-1", accept=("msgpack",))

    assert message.content_encoding == "binary"
    assert (message.args, message.kwargs) == ((1, b"\x00\xff"), {"k": "v"})
    assert "application/x-msgpack" in refused(body).reason


RICH = (
    datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    datetime(2024, 5, 6, 7, 8, 9),
    date(2024, 5, 6),
    time(7, 8, 9),
    Decimal("12.3400"),
    UUID("12345678-1234-5678-1234-567812345678"),
    b"utf-8 bytes",
    b"\xff\x00 not utf-8",
)


@pytest.mark.parametrize("protocol", [2, 1])
def test_rich_json_types_come_back_as_python_values(protocol: int) -> None:
    body = publish(RICH, {"when": RICH[0], "amount": RICH[4]}, protocol=protocol)
    assert b'"__type__"' in base64.b64decode(envelope_of(body)["body"])

    message = decode(body, message_id="m-1")

    assert message.args == RICH
    assert [type(value) for value in message.args] == [type(value) for value in RICH]
    assert str(message.args[4]) == "12.3400"
    assert message.kwargs == {"when": RICH[0], "amount": RICH[4]}


# --- headers that become properties ----------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 1])
def test_scheduling_lineage_and_limits_become_typed_properties(protocol: int) -> None:
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    expires = datetime(2030, 1, 3, tzinfo=UTC)
    body = publish(
        (1,),
        protocol=protocol,
        eta=eta,
        expires=expires,
        retries=3,
        group_id="group-1",
        time_limit=30,
        soft_time_limit=20,
        root_id="root-1",
        parent_id="parent-1",
    )

    message = decode(body, message_id="m-1")

    assert (message.eta, message.expires) == (eta, expires)
    assert (message.retries, message.group, message.timelimit) == (3, "group-1", (30, 20))
    if protocol == 2:  # protocol 1 has no lineage fields
        assert (message.root_id, message.parent_id) == ("root-1", "parent-1")


def test_countdown_and_relative_expiry_become_absolute_aware_times() -> None:
    before = datetime.now(UTC)
    body = publish((1,), countdown=60, expires=120)
    after = datetime.now(UTC)

    message = decode(body, message_id="m-1")

    assert message.eta is not None and message.expires is not None
    assert before + timedelta(seconds=60) <= message.eta <= after + timedelta(seconds=60)
    assert before + timedelta(seconds=120) <= message.expires <= after + timedelta(seconds=120)


def test_unset_headers_have_neutral_values() -> None:
    message = decode(plain_body(), message_id="m-1")

    assert (message.eta, message.expires, message.retries) == (None, None, 0)
    assert message.timelimit == (None, None)


def test_naive_eta_is_read_as_utc() -> None:
    body = publish((1,), eta=datetime(2030, 1, 2, 3, 4, 5))
    assert envelope_of(body)["headers"]["eta"] == "2030-01-02T03:04:05"

    assert decode(body, message_id="m-1").eta == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_naive_eta_stays_naive_when_a_protocol_1_producer_said_utc_false() -> None:
    body = publish((1,), protocol=1, conf={"enable_utc": False}, eta=datetime(2030, 1, 2))

    message = decode(body, message_id="m-1")

    assert message.headers["utc"] is False
    assert message.eta == datetime(2030, 1, 2)
    assert message.eta.tzinfo is None


@pytest.mark.parametrize("protocol", [2, 1])
def test_link_and_link_error_show_in_embed(protocol: int) -> None:
    app = make_app(protocol=protocol)
    body = sqs_body(
        app,
        "t.add",
        (1,),
        link=app.signature("t.echo", args=("done",)),
        link_error=app.signature("t.on_error"),
    )

    message = decode(body, message_id="m-1")

    (callback,) = message.embed["callbacks"]
    (errback,) = message.embed["errbacks"]
    assert (callback["task"], callback["args"]) == ("t.echo", ["done"])
    assert errback["task"] == "t.on_error"


def test_chain_shows_the_remaining_steps_in_embed() -> None:
    app = make_app()
    workflow = chain(app.signature("t.add", (1,)), app.signature("t.echo", ("next",)))
    (body,) = capture(app, workflow.apply_async)

    message = decode(body, message_id="m-1")

    assert message.task_name == "t.add"
    assert [step["task"] for step in message.embed["chain"]] == ["t.echo"]


# --- accept and pickle -----------------------------------------------------------------------


def test_pickle_is_refused_before_it_runs_when_only_json_is_accepted() -> None:
    UNPICKLED.clear()
    body = publish((Tripwire("unpickled"),), serializer="pickle")
    assert envelope_of(body)["content-type"] == PICKLE_TYPE

    error = refused(body)

    assert PICKLE_TYPE in error.reason
    assert isinstance(error.__cause__, ContentDisallowed)
    assert UNPICKLED == []


def test_pickle_is_decoded_when_the_operator_accepts_it() -> None:
    UNPICKLED.clear()
    body = publish((Tripwire("unpickled"),), serializer="pickle")

    message = decode(body, message_id="m-1", accept=("json", "pickle"))

    assert UNPICKLED == ["unpickled"]
    assert message.args == ("unpickled",)
    assert (message.content_type, message.content_encoding) == (PICKLE_TYPE, "binary")


@pytest.mark.parametrize("accept", [["json"], ["application/json"], {"json", "pickle"}])
def test_accept_takes_serializer_names_or_content_types(accept: list[str]) -> None:
    assert decode(plain_body(), message_id="m-1", accept=accept).args == (2, 3)


def test_json_message_is_refused_when_json_is_not_accepted() -> None:
    assert "refused content type 'application/json'" in refused(plain_body(), accept=()).reason


@pytest.mark.parametrize("accept", ["json", ["jsn"]], ids=["bare-string", "unknown-name"])
def test_an_invalid_accept_is_a_configuration_error(accept: Any) -> None:
    with pytest.raises(ConfigurationError):
        decode(plain_body(), message_id="m-1", accept=accept)


# --- garbage ---------------------------------------------------------------------------------


def _set(path: str, value: object) -> Callable[[str], str]:
    """A builder: the plain body with the envelope field at ``path`` (dotted) set to ``value``."""

    def change(envelope: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        for parent in parents:
            envelope = envelope[parent]
        envelope[key] = value

    return lambda body: rewrite_envelope(body, change)


def _drop(path: str) -> Callable[[str], str]:
    """A builder: the plain body without the envelope field at ``path`` (dotted)."""

    def change(envelope: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        for parent in parents:
            envelope = envelope[parent]
        del envelope[key]

    return lambda body: rewrite_envelope(body, change)


def _task_body(payload: object) -> Callable[[str], str]:
    """A builder: the plain body with its task body replaced by ``payload`` as JSON."""
    return lambda body: with_task_body(body, payload)


def _v1_task_body(payload: object) -> Callable[[str], str]:
    """A builder: a real protocol 1 body (no headers) with its body dict replaced by ``payload``."""
    return lambda _: with_task_body(publish(protocol=1), payload)


NESTED = "[" * 100_000 + "]" * 100_000

GARBAGE: dict[str, tuple[Callable[[str], object], str]] = {
    "not-text": (lambda _: None, "SQS body is NoneType"),
    "empty": (lambda _: "", "envelope is not valid JSON"),
    "not-base64": (lambda _: "this is not base64!", "neither a JSON object nor base64"),
    "base64-of-text": (lambda _: b64("hello world"), "envelope is not valid JSON"),
    "base64-of-bad-utf8": (lambda _: b64(b'{"body": "\xff"}'), "envelope is not valid JSON"),
    "json-list": (lambda _: b64("[1, 2, 3]"), "envelope is a JSON list"),
    "json-not-envelope": (lambda _: '{"hello": 1}', "envelope has no 'body'"),
    "unknown-json-type": (
        lambda _: '{"body": {"__type__": "nope", "__value__": 1}}',
        "envelope is not valid JSON",
    ),
    "bad-json-decimal": (
        lambda _: '{"body": {"__type__": "decimal", "__value__": "abc"}}',
        "envelope is not valid JSON",
    ),
    "deeply-nested-envelope": (lambda _: '{"body": ' + NESTED + "}", "nested deeper than 64"),
    "no-body": (_drop("body"), "envelope has no 'body'"),
    "no-properties": (_drop("properties"), "envelope has no 'properties'"),
    "content-type-list": (_set("content-type", ["x"]), "envelope 'content-type' is list"),
    "headers-list": (_set("headers", [1]), "envelope 'headers' is list"),
    "body-number": (_set("body", 5), "envelope 'body' is int"),
    "body-not-base64": (_set("body", "***"), "body is not valid base64"),
    "body-encoding-rot13": (_set("properties.body_encoding", "rot13"), "unsupported body_encoding"),
    "body-not-json": (_set("body", b64("{nope")), "body is not valid application/json"),
    "deeply-nested-body": (_set("body", b64(NESTED)), "task body is nested deeper than 64"),
    "unknown-compression": (
        _set("headers.compression", "application/x-snappy"),
        "unknown compression 'application/x-snappy'",
    ),
    "corrupt-compression": (
        _set("headers.compression", "application/x-gzip"),
        "body is not valid application/x-gzip data",
    ),
    "trusted-raw-content-type": (_set("content-type", "application/data"), "protocol 2 body"),
    "no-task-header": (_drop("headers.task"), "no 'task' header"),
    "empty-task-name": (_set("headers.task", ""), "missing task name"),
    "task-name-number": (_set("headers.task", 7), "missing task name"),
    "no-task-id": (_drop("headers.id"), "missing task id"),
    "bad-eta": (_set("headers.eta", "yesterday"), "header 'eta' is not an ISO 8601 date"),
    "eta-number": (_set("headers.eta", 5), "header 'eta' is not an ISO 8601 string"),
    "bad-expires": (_set("headers.expires", "2030-13-45"), "'expires' is not an ISO 8601"),
    "negative-retries": (_set("headers.retries", -1), "header 'retries' is not a count"),
    "retries-bool": (_set("headers.retries", True), "header 'retries' is not a count"),
    "timelimit-short": (_set("headers.timelimit", [1]), "header 'timelimit'"),
    "timelimit-negative": (_set("headers.timelimit", [-1, None]), "header 'timelimit'"),
    "root-id-number": (_set("headers.root_id", 5), "'root_id' is not a string"),
    "utc-string": (_set("headers.utc", "yes"), "header 'utc' is not a boolean"),
    "routing-key-number": (
        _set("properties.delivery_info.routing_key", 5),
        "'routing_key' is not a string",
    ),
    "delivery-info-list": (_set("properties.delivery_info", []), "'delivery_info'"),
    "body-two-items": (_task_body([[1], {}]), "protocol 2 body is not [args, kwargs, embed]"),
    "body-scalar": (_task_body(5), "protocol 2 body is not"),
    "args-not-list": (_task_body(["abc", {}, {}]), "task args are str"),
    "kwargs-not-dict": (_task_body([[], [1], {}]), "task kwargs are not an object"),
    "embed-not-dict": (_task_body([[], {}, "x"]), "embed is str"),
    "callbacks-not-list": (_task_body([[], {}, {"callbacks": "x"}]), "embed 'callbacks'"),
    "chord-not-dict": (_task_body([[], {}, {"chord": [1]}]), "embed 'chord'"),
    "v1-without-task": (_v1_task_body({"id": "x", "args": []}), "missing task name"),
    "v1-without-id": (_v1_task_body({"task": "t.add", "args": []}), "missing task id"),
    "v1-args-not-list": (_v1_task_body({"task": "t", "id": "x", "args": 1}), "task args are int"),
    "v1-kwargs-list": (_v1_task_body({"task": "t", "id": "x", "kwargs": []}), "task kwargs"),
    "v1-bad-eta": (_v1_task_body({"task": "t", "id": "x", "eta": "soon"}), "'eta' is not"),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_raises_message_decode_error_naming_the_problem(name: str) -> None:
    build, reason = GARBAGE[name]

    error = refused(build(plain_body()))

    assert reason in error.reason


@pytest.mark.parametrize("base64_envelope", [True, False], ids=["base64", "raw-json"])
def test_a_real_message_cut_in_half_is_refused(base64_envelope: bool) -> None:
    body = plain_body(base64_envelope)

    error = refused(body[: len(body) // 2])

    assert "base64" in error.reason or "not valid JSON" in error.reason


def test_errors_keep_the_underlying_exception_as_cause() -> None:
    assert isinstance(refused("this is not base64!").__cause__, binascii.Error)


def test_a_body_too_large_for_sqs_is_refused_before_decoding() -> None:
    padded = plain_body(False) + " " * MAX_BODY_CHARS
    assert decode(padded.strip(), message_id="m-1").task_id == "task-plain"

    assert "over the" in refused(padded).reason


def test_nesting_is_bounded_and_brackets_inside_strings_do_not_count() -> None:
    def with_args(args: object) -> str:  # the task body is [args, kwargs, embed]
        body = b64(json.dumps([args, {}, {}]))
        return rewrite_envelope(plain_body(), lambda e: e.__setitem__("body", body))

    def nested(depth: int) -> Any:
        return json.loads("[" * depth + "]" * depth)

    deepest = [nested(MAX_NESTING - 2)]  # + the args list + the body list = MAX_NESTING
    assert decode(with_args(deepest), message_id="m").args == tuple(deepest)
    assert decode(with_args(["[[[[" * 100]), message_id="m").args == ("[[[[" * 100,)
    assert "nested deeper than" in refused(with_args([nested(MAX_NESTING - 1)])).reason


def test_header_count_is_bounded() -> None:
    many = rewrite_envelope(
        plain_body(),
        lambda e: e["headers"].update({f"x-{i}": i for i in range(MAX_HEADERS)}),
    )

    assert f"over {MAX_HEADERS}" in refused(many).reason


def test_a_compression_bomb_is_refused_without_expanding_it() -> None:
    bomb = zlib.compress(b"[" + b" " * (MAX_DECOMPRESSED_BYTES + 10) + b"]", 9)
    body = rewrite_envelope(
        plain_body(),
        lambda e: (
            e.__setitem__("body", b64(bomb)),
            e["headers"].__setitem__("compression", "application/x-gzip"),
        ),
    )

    assert "expands past" in refused(body).reason


def test_a_body_fetched_through_a_pointer_may_be_larger_up_to_its_own_limit() -> None:
    padded = plain_body(False) + " " * MAX_BODY_CHARS
    limit = len(padded)

    assert decode(padded, message_id="m-1", max_chars=limit).task_id == "task-plain"
    with pytest.raises(MessageDecodeError, match="over the"):
        decode(padded + " ", message_id="m-1", max_chars=limit)


def test_bytes_bodies_decode_like_text() -> None:
    body = plain_body()

    assert decode(body.encode(), message_id="m-1") == decode(body, message_id="m-1")


# --- properties: any input gives a TaskMessage or a MessageDecodeError -----------------------


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


@settings(max_examples=500, deadline=None)
@given(st.text() | st.binary())
def test_random_input_decodes_or_raises_message_decode_error(body: str | bytes) -> None:
    decodes_or_refuses(body)


@settings(max_examples=500, deadline=None)
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


@settings(max_examples=500, deadline=None)
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
