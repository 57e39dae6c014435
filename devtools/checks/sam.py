"""Run AWS SAM CLI from its own virtualenv, offline: ``sam validate --lint`` and ``sam build``.

SAM CLI pins exact boto3 and click versions (Celery needs a newer click), so it lives in
``.tools/sam`` (``make sam-install``; ``make test`` installs it once) and is only ever run as a
program. Every run is kept on this machine: telemetry off (``SAM_CLI_TELEMETRY=0``), dummy
credentials and a region (validate and build call no AWS API, but SAM builds a session), no
instance-metadata lookup, and no update check. SAM has no switch for the last
(aws/aws-sam-cli#3709): it asks PyPI once a week and records when in ``~/.aws-sam/metadata.json``.
So each run gets a scratch config directory saying a check just happened, through
``__SAM_CLI_APP_DIR``, the variable SAM's own integration tests use for the same purpose.

``sam build`` reads ``samconfig.toml`` next to the template: ``build_in_source`` makes it run the
Makefile's ``build-<Function>`` in the source directory instead of a scratch copy of it (with
``CodeUri: .`` that copy would hold ``.venv``, ``.tools`` and ``.localstack``: over a gigabyte).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.cloud.template import TEMPLATE_PATH
from infra.core.errors import ConfigurationError

__all__ = [
    "SAM",
    "Run",
    "build",
    "build_args",
    "command",
    "offline_environment",
    "run",
    "validate",
    "validate_args",
]

ROOT = TEMPLATE_PATH.parent
SAM = ROOT / ".tools" / "sam" / "bin" / "sam"
"""SAM CLI's executable in its tool virtualenv (the Makefile's ``sam-install``)."""

_OFFLINE = {
    "SAM_CLI_TELEMETRY": "0",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
# A session token or profile of the caller's would pair real settings with the dummy keys; make
# variables of a calling make would reach the `make` that `sam build` runs.
_DROPPED = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
_APP_DIR_VARIABLE = "__SAM_CLI_APP_DIR"
_TIMEOUT_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Run:
    """One SAM CLI command: its arguments, exit status and output (stdout then stderr)."""

    argv: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        """Whether SAM exited 0."""
        return self.returncode == 0


def command(args: Sequence[str], *, executable: Path = SAM) -> list[str]:
    """SAM's command line for these arguments."""
    return [str(executable), *args]


def validate_args(template: Path = TEMPLATE_PATH) -> list[str]:
    """``sam validate --lint``: the SAM schema, then cfn-lint's rules."""
    return ["validate", "--lint", "--template", str(template)]


def build_args(build_dir: Path, template: Path = TEMPLATE_PATH) -> list[str]:
    """``sam build`` into ``build_dir``; the rest comes from ``samconfig.toml``.

    ``--no-cached``: samconfig's ``cached`` caches nothing for a Makefile build, but would create
    ``.aws-sam/deps`` in the working directory whatever ``--build-dir`` says.
    """
    return ["build", "--template", str(template), "--build-dir", str(build_dir), "--no-cached"]


def offline_environment(base: Mapping[str, str], app_dir: Path) -> dict[str, str]:
    """``base`` with SAM kept offline and its configuration in ``app_dir``."""
    env = {k: v for k, v in base.items() if k not in _DROPPED}
    return {**env, **_OFFLINE, _APP_DIR_VARIABLE: str(app_dir)}


def _write_app_config(app_dir: Path) -> None:
    """SAM's metadata.json, recording an update check made now (so SAM makes none this week)."""
    metadata = {"lastVersionCheck": time.time()}
    (app_dir / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")


def run(
    args: Sequence[str],
    *,
    executable: Path = SAM,
    cwd: Path = ROOT,
    capture: bool = True,
    timeout: float = _TIMEOUT_SECONDS,
) -> Run:
    """Run SAM offline; with ``capture=False`` its output goes to this process's.

    Raises:
        ConfigurationError: SAM CLI is not installed.
    """
    if not executable.exists():
        raise ConfigurationError(f"SAM CLI is not installed at {executable}: make sam-install")
    argv = command(args, executable=executable)
    with tempfile.TemporaryDirectory(prefix="celery-lambda-sam-") as app_dir:
        _write_app_config(Path(app_dir))
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=offline_environment(os.environ, Path(app_dir)),
            capture_output=capture,
            text=True,
            timeout=timeout,
            check=False,
        )
    return Run(tuple(argv), done.returncode, (done.stdout or "") + (done.stderr or ""))


def validate(template: Path = TEMPLATE_PATH, *, executable: Path = SAM) -> Run:
    """``sam validate --lint`` on the template.

    Raises:
        ConfigurationError: SAM CLI is not installed.
    """
    return run(validate_args(template), executable=executable)


def build(build_dir: Path, template: Path = TEMPLATE_PATH, *, executable: Path = SAM) -> Run:
    """``sam build`` of the template into ``build_dir`` (no container: BuildMethod makefile).

    Raises:
        ConfigurationError: SAM CLI is not installed.
    """
    return run(build_args(build_dir, template), executable=executable)


def main(argv: Sequence[str] = ()) -> int:
    """``python -m devtools.checks.sam validate [template]``: SAM's report; its exit status."""
    if list(argv[:1]) != ["validate"] or len(argv) > 2:
        print("usage: python -m devtools.checks.sam validate [template]", file=sys.stderr)
        return 2
    template = Path(argv[1]) if len(argv) == 2 else TEMPLATE_PATH
    try:
        return run(validate_args(template), capture=False).returncode
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
