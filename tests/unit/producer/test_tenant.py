"""Tenant fairness in the pure publish builders: which ``MessageGroupId`` a message gets.

Messages are made by real Celery and kombu (``tests.unit.producer.test_publish.kombu_message``);
the setting is read by the real ``Settings.from_env`` and turned into transport options by
``infra.core.config.transport_options``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from infra.core.config import transport_options
from infra.core.errors import PublishError
from infra.core.settings import Settings
from infra.producer.publish import batch_entry, message_group_id, send_request
from tests.unit.producer.test_publish import NOW, OPTIONS, URL, kombu_message

TENANT = dataclasses.replace(OPTIONS, tenant_header="tenant")


def _with_headers(message: dict[str, Any], **headers: Any) -> dict[str, Any]:
    message["headers"].update(headers)
    return message


def _request(queue: str, message: dict[str, Any], options: Any = TENANT) -> dict[str, Any]:
    return send_request(queue, URL, message, options=options, now=NOW)


def test_the_tenant_header_is_the_group_id_on_a_standard_queue() -> None:
    request = _request("q", _with_headers(kombu_message(1, 2), tenant="acme"))

    assert request["MessageGroupId"] == "acme"
    assert "MessageDeduplicationId" not in request


def test_no_tenant_header_configured_sends_no_group_id() -> None:
    request = _request("q", _with_headers(kombu_message(1, 2), tenant="acme"), OPTIONS)

    assert "MessageGroupId" not in request


@pytest.mark.parametrize("value", [None, ""])
def test_a_message_without_the_header_gets_no_group_id(value: Any) -> None:
    message = kombu_message(1, 2)
    if value is not None:
        _with_headers(message, tenant=value)

    assert "MessageGroupId" not in _request("q", message)


def test_an_explicit_message_group_id_wins_over_the_header() -> None:
    message = _with_headers(kombu_message(1, 2, MessageGroupId="t-7"), tenant="acme")

    assert _request("q", message)["MessageGroupId"] == "t-7"
    assert _request("q", kombu_message(1, 2, MessageGroupId="t-7"), OPTIONS)["MessageGroupId"] == (
        "t-7"
    )


def test_a_number_is_sent_as_its_text() -> None:
    assert _request("q", _with_headers(kombu_message(1), tenant=42))["MessageGroupId"] == "42"


def test_fifo_is_unchanged_the_header_is_not_its_group() -> None:
    message = _with_headers(kombu_message(1, 2), tenant="acme")

    request = _request("q.fifo", message)

    assert request["MessageGroupId"] == "default"  # the configured FIFO group, as before
    assert request["MessageDeduplicationId"] == "task-1-0"
    explicit = _request("q.fifo", kombu_message(1, MessageGroupId="orders"))
    assert explicit["MessageGroupId"] == "orders"


def test_the_longest_and_most_punctuated_group_id_sqs_takes_is_sent() -> None:
    longest = "a" * 127 + "~"
    punctuated = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

    assert message_group_id("q", _with_headers(kombu_message(), tenant=longest), TENANT) == longest
    assert message_group_id("q", _with_headers(kombu_message(), tenant=punctuated), TENANT) == (
        punctuated
    )


@pytest.mark.parametrize("value", ["Acme Corp", "a" * 129, "café", "tab\there"])
def test_a_tenant_sqs_would_refuse_is_a_clear_publish_error(value: str) -> None:
    message = _with_headers(kombu_message(1, 2), tenant=value)

    with pytest.raises(PublishError, match=r"tasks\.add\[task-1\]: tenant header 'tenant'"):
        _request("q", message)


def test_an_explicit_group_id_sqs_would_refuse_is_a_publish_error_on_fifo_too() -> None:
    with pytest.raises(PublishError, match=r"MessageGroupId 'has space' is not a valid"):
        _request("q.fifo", kombu_message(1, MessageGroupId="has space"))


def test_a_batch_entry_carries_the_group_id() -> None:
    request = _request("q", _with_headers(kombu_message(1, 2), tenant="acme"))

    assert batch_entry(3, request)["MessageGroupId"] == "acme"


def test_the_setting_reaches_the_transport_options() -> None:
    configured = Settings.from_env({"CELERY_LAMBDA_TENANT_HEADER": " tenant "})

    assert configured.tenant_header == "tenant"
    assert transport_options(configured)["tenant_header"] == "tenant"
    assert Settings.from_env({}).tenant_header is None
    assert Settings.from_env({"CELERY_LAMBDA_TENANT_HEADER": ""}).tenant_header is None
