"""Real message brokers for the worker path's other-broker tests: ``redis-server`` and RabbitMQ.

Each runs from its Debian package (``make brokers-install``) on free ports of 127.0.0.1 with its
data in a temporary folder, for as long as the ``with`` block: nothing is shared with a broker the
machine may already run, and nothing is left behind (RabbitMQ's port mapper, ``epmd``, is started
on a port of its own and stopped with the node).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from kombu import Connection

__all__ = ["RABBITMQ_SERVER", "REDIS_SERVER", "rabbitmq_server", "redis_server"]

REDIS_SERVER = shutil.which("redis-server")
# Debian's /usr/sbin/rabbitmq-server re-runs itself as the rabbitmq user with its own paths; the
# script behind it takes the node's ports and folders from the environment.
RABBITMQ_SERVER = next(
    (
        path
        for path in ("/usr/lib/rabbitmq/bin/rabbitmq-server", shutil.which("rabbitmq-server"))
        if path and os.access(path, os.X_OK)
    ),
    None,
)
START_SECONDS = 90
"""RabbitMQ boots an Erlang VM: about 7 s on an idle machine, more on a loaded one."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on now."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """``redis-server`` on a free port, no persistence; yields its broker URL."""
    if REDIS_SERVER is None:
        pytest.fail("no redis-server on PATH: `make brokers-install` installs Debian's package")
    port = free_port()
    cmd = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--dir", str(workdir)]
    url = f"redis://127.0.0.1:{port}/0"
    with _running(cmd, os.environ, workdir / "redis.log", url):
        yield url


@contextmanager
def rabbitmq_server(workdir: Path) -> Iterator[str]:
    """A RabbitMQ node on free ports (AMQP, Erlang distribution, epmd); yields its broker URL."""
    if RABBITMQ_SERVER is None:
        pytest.fail("no rabbitmq-server: `make brokers-install` installs Debian's package")
    port, epmd_port = free_port(), free_port()
    env = {
        **os.environ,
        "HOME": str(workdir),  # the node's Erlang cookie
        "RABBITMQ_NODENAME": f"celery-lambda-{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
    }
    (workdir / "enabled_plugins").write_text("[].\n")
    url = f"amqp://guest:guest@127.0.0.1:{port}//"
    try:
        with _running([RABBITMQ_SERVER], env, workdir / "rabbitmq.log", url):
            yield url
    finally:
        epmd = shutil.which("epmd")
        if epmd:
            subprocess.run([epmd, "-kill"], env=env, capture_output=True, check=False)


@contextmanager
def _running(cmd: list[str], env: Mapping[str, str], log: Path, url: str) -> Iterator[None]:
    """Run ``cmd`` in a process group of its own until the block ends, once ``url`` answers."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until(lambda: _answers(url), process, log)
        yield
    finally:
        _stop(process)


def _answers(url: str) -> bool:
    """True when a kombu connection to ``url`` opens."""
    try:
        with Connection(url, connect_timeout=1) as connection:
            connection.ensure_connection(max_retries=1, timeout=1)
    except Exception:  # not up yet, whatever the transport raises
        return False
    return True


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"{process.args!r} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (RabbitMQ's script stops its node on it), then
    SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
