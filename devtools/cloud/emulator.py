"""The embedded AWS emulator: moto in server mode on 127.0.0.1, as a child process.

A real HTTP endpoint, so kombu, boto3 and Celery's backends reach it over the network exactly as
they reach AWS. A separate process (not moto's in-process thread) keeps the emulator's work off the
caller's GIL: on two cores the consumer and the emulator then really run side by side.

The server is moto's own app behind :mod:`devtools.cloud.moto_counting`, which counts every AWS
request by ``service:Operation``: the performance budget is AWS requests per task, counted here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from types import TracebackType

from infra.core.errors import ConfigurationError

__all__ = [
    "COUNTS_PATH",
    "RESET_PATH",
    "Emulator",
    "LOCAL_CREDENTIALS",
    "free_port",
    "reachable",
    "request_counts",
    "reset_resources",
]

COUNTS_PATH = "/_counts"
"""``GET``: the requests the counting emulator served, by ``service:Operation``."""
RESET_PATH = "/_counts/reset"
"""``POST``: the same, cleared in the same step."""

LOCAL_CREDENTIALS = {
    # moto accepts any credentials; boto3 refuses to sign without some.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}

_MOTO_ENV = {
    # PurgeQueue is limited to once a minute on AWS; tests purge more often than that.
    "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def reachable(url: str, timeout: float = 2.0) -> bool:
    """True when something accepts TCP connections at ``url``'s host and port."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def request_counts(endpoint_url: str, *, reset: bool = False) -> dict[str, int]:
    """AWS requests the counting emulator at ``endpoint_url`` served, by ``service:Operation``.

    With ``reset`` the counts are also cleared, in the same step (nothing is lost in between).
    """
    path = RESET_PATH if reset else COUNTS_PATH
    request = urllib.request.Request(f"{endpoint_url}{path}", method="POST" if reset else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        counts: dict[str, int] = json.load(response)
    return counts


def reset_resources(endpoint_url: str) -> None:
    """Drop every resource in the emulator at ``endpoint_url`` (moto's reset API)."""
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


class Emulator:
    """moto server on ``host:port``; a context manager that starts it and stops it."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """The URL every AWS client points at (``AWS_ENDPOINT_URL``)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> Emulator:
        """Start moto and return once it answers HTTP.

        Raises:
            ConfigurationError: the port is taken or moto did not come up in time.
        """
        if self._answers():
            raise ConfigurationError(f"something already listens on {self.endpoint_url}")
        server = "devtools.cloud.moto_counting"
        cmd = [sys.executable, "-m", server, "-H", self.host, "-p", str(self.port)]
        self._process = subprocess.Popen(
            cmd,
            env={**os.environ, **_MOTO_ENV},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C (SIGINT to the foreground process group) then
            # reaches only its owner, which stops consuming first and this server last, instead
            # of moto dying under a batch in progress.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConfigurationError(f"moto server did not start on {self.endpoint_url}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """Stop the server at once (SIGKILL): its resources live in its memory and go with it,
        and a clean exit would only spend up to a second of CPU tearing down moto's modules."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait()
        self._process = None

    def reset(self) -> None:
        """Drop every resource in the emulator (moto's reset API); the counts stay."""
        reset_resources(self.endpoint_url)

    def counts(self) -> dict[str, int]:
        """AWS requests served since the start or the last reset, by ``service:Operation``."""
        return request_counts(self.endpoint_url)

    def reset_counts(self) -> dict[str, int]:
        """Start counting from zero; the counts until now."""
        return request_counts(self.endpoint_url, reset=True)

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1).close()
        except (urllib.error.URLError, OSError):
            return False
        return True

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
