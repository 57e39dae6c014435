"""infra.wire.protocol.decode refuses garbage with one MessageDecodeError naming the problem,
and bounds what it will read (size, nesting, headers, decompression)."""

from __future__ import annotations

import binascii
import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from infra.core.errors import MessageDecodeError
from infra.wire.envelope import MAX_BODY_CHARS, MAX_DECOMPRESSED_BYTES, MAX_HEADERS, MAX_NESTING
from infra.wire.protocol import decode
from tests.unit.celery_messages import publish, rewrite_envelope, with_task_body
from tests.unit.wire.support import b64, plain_body, refused


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
