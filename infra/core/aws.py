"""The one place AWS clients are made: endpoint, region and retry policy applied alike.

Clients are created on first use, never at import (import time is Lambda cold-start time), and
reused: boto3 clients are thread-safe. They come from one boto3 session per process: a session
loads botocore's data files and resolves credentials once, so each further client costs about a
sixth of what a client from a new session does (a cold start makes three or four).
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
_session: boto3.session.Session | None = None
"""Made under ``_lock``, which also serialises client creation (a session is not thread-safe)."""


def client(service: str, settings: Settings | None = None) -> Any:
    """Return a shared boto3 client for ``service`` configured from ``settings``.

    Without ``settings``: the process's (:func:`infra.core.settings.current`).
    """
    global _session
    settings = settings or current()
    key = (service, settings.endpoint_for(service), settings.region)
    with _lock:
        if key not in _clients:
            _session = _session or boto3.session.Session()
            _clients[key] = _session.client(
                service,
                region_name=settings.region,
                endpoint_url=key[1],
                config=RETRY_CONFIG,
            )
        return _clients[key]


def clear_clients() -> None:
    """Forget every cached client, the session (and the credentials it resolved) and the
    process's settings (tools and tests that switch endpoints or credentials: the next client is
    made from the environment as it is then)."""
    global _session
    with _lock:
        _clients.clear()
        _session = None
    current.cache_clear()
