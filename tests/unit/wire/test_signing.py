"""Signed messages (Celery's ``auth`` serializer) through our decoder: a message signed with a
trusted certificate decodes; one whose body was tampered with, or signed by a stranger, is
refused before anything is deserialised, with a decode error (a record failure, not a crash).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.core.errors import MessageDecodeError
from infra.wire.protocol import decode
from tests.certs import identity as _identity
from tests.certs import serializers_restored
from tests.unit.celery_messages import make_app, rewrite_envelope, sqs_body


def _signing_app(key: Path, cert: Path, store: Path) -> Any:
    app = make_app(
        serializer="auth",
        accept_content=["auth"],
        security_key=str(key),
        security_certificate=str(cert),
        security_cert_store=str(store / "*.pem"),
    )
    app.setup_security(serializer="json")
    return app


@pytest.fixture(scope="module", autouse=True)
def _registry() -> Iterator[None]:
    with serializers_restored():
        yield


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    trusted = tmp_path_factory.mktemp("trusted")
    stranger = tmp_path_factory.mktemp("stranger")
    return {"producer": _identity(trusted, "producer"), "stranger": _identity(stranger, "stranger")}


def test_a_signed_message_decodes(keys: dict[str, tuple[Path, Path]]) -> None:
    key, cert = keys["producer"]
    body = sqs_body(_signing_app(key, cert, cert.parent), "t.add", (2, 3))

    message = decode(body, message_id="m-1", accept=["auth"])

    assert message.args == (2, 3)
    assert json.loads(base64.b64decode(body))["content-type"] == "application/data"


def test_a_tampered_message_is_refused(keys: dict[str, tuple[Path, Path]]) -> None:
    key, cert = keys["producer"]
    body = sqs_body(_signing_app(key, cert, cert.parent), "t.add", (2, 3))

    def tamper(envelope: dict[str, Any]) -> None:
        # body_encoding base64 over the auth serializer's own base64 of signer|sig|type|enc|body
        packed = base64.b64decode(base64.b64decode(envelope["body"]))
        assert packed.endswith(b"[[2, 3], {}, {}]") or b"[2, 3]" in packed
        forged = packed.replace(b"[2, 3]", b"[9, 3]")
        envelope["body"] = base64.b64encode(base64.b64encode(forged)).decode()

    with pytest.raises(MessageDecodeError, match="signature"):
        decode(rewrite_envelope(body, tamper), message_id="m-2", accept=["auth"])


def test_a_stranger_signature_is_refused(keys: dict[str, tuple[Path, Path]]) -> None:
    producer_key, producer_cert = keys["producer"]
    _signing_app(producer_key, producer_cert, producer_cert.parent)  # the consumer trusts these
    key, cert = keys["stranger"]
    body = sqs_body(_signing_app(key, cert, cert.parent), "t.add", (2, 3))
    _signing_app(producer_key, producer_cert, producer_cert.parent)

    with pytest.raises(MessageDecodeError, match="signature check failed: .*Unknown c"):
        decode(body, message_id="m-3", accept=["auth"])


def test_unsigned_messages_are_refused_when_only_signed_ones_are_accepted() -> None:
    body = sqs_body(make_app(), "t.add", (2, 3))

    with pytest.raises(MessageDecodeError, match="refused content type"):
        decode(body, message_id="m-4", accept=["auth"])
