"""Keys and self-signed certificates for the message-signing tests (Celery's auth serializer)."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from kombu.serialization import registry

__all__ = ["identity", "serializers_restored"]


def identity(directory: Path, name: str) -> tuple[Path, Path]:
    """A key and a self-signed certificate for ``name``, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@contextmanager
def serializers_restored() -> Iterator[None]:
    """Undo what ``app.setup_security()`` does to kombu's process-wide serializer registry.

    It registers ``auth``, makes it the default and disables every other serializer, for the whole
    process: later tests (and apps) would find JSON refused.
    """
    saved = {
        name: copy.copy(value) if isinstance(value, dict | set) else value
        for name, value in vars(registry).items()
    }
    try:
        yield
    finally:
        vars(registry).update(saved)
