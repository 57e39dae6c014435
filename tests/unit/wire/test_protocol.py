"""infra.wire.protocol.decode against messages published by real Celery through kombu's SQS
transport: the variants Celery produces, headers that become properties, accept and pickle.

Garbage and bounds are in ``test_protocol_garbage.py``, property tests in
``test_protocol_fuzz.py``; shared helpers in :mod:`tests.unit.wire.support`.
"""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import chain
from kombu import compression as kombu_compression
from kombu.exceptions import ContentDisallowed

from infra.core.errors import ConfigurationError
from infra.wire.protocol import decode
from tests.unit.celery_messages import (
    UNPICKLED,
    Tripwire,
    capture,
    envelope_of,
    make_app,
    publish,
    sqs_body,
)
from tests.unit.wire.support import PICKLE_TYPE, RICH, plain_body, refused

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


def test_stamps_are_those_of_the_stamped_headers_as_celerys_request_reads_them() -> None:
    body = publish(
        (1, 2), stamped_headers=["monitoring_id", "tags"], monitoring_id="m-1", tags=["a", "b"]
    )

    message = decode(body, message_id="m-1")

    assert message.stamps == {"monitoring_id": "m-1", "tags": ["a", "b"]}
    assert decode(publish((1, 2)), message_id="m-2").stamps == {}


@pytest.mark.parametrize(
    "headers",
    [{"stamped_headers": "monitoring_id", "stamps": {}}, {"stamped_headers": ["x"], "stamps": 4}],
)
def test_malformed_stamps_are_none(headers: dict[str, Any]) -> None:
    message = decode(publish((1, 2)), message_id="m-1")
    assert dataclasses.replace(message, headers={**message.headers, **headers}).stamps == {}
