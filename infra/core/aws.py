"""The one place AWS clients are made: endpoint, region and retry policy applied alike.

Clients are created on first use, never at import (import time is Lambda cold-start time), and
reused: boto3 clients are thread-safe and creating one costs milliseconds.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from infra.core.settings import Settings, current

__all__ = ["RETRY_CONFIG", "client", "clear_clients"]

RETRY_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=5,
    read_timeout=30,
    tcp_keepalive=True,
)

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str], Any] = {}


def client(service: str, settings: Settings | None = None) -> Any:
    """Return a shared boto3 client for ``service`` configured from ``settings``.

    Without ``settings``: the process's (:func:`infra.core.settings.current`).
    """
    settings = settings or current()
    key = (service, settings.endpoint_for(service), settings.region)
    with _lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(
                service,
                region_name=settings.region,
                endpoint_url=key[1],
                config=RETRY_CONFIG,
            )
        return _clients[key]


def clear_clients() -> None:
    """Forget every cached client and the process's settings (tools and tests that switch
    endpoints: the next client is made from the environment as it is then)."""
    with _lock:
        _clients.clear()
    current.cache_clear()
