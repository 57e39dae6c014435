"""``sam validate --lint`` on template.yaml: it passes, offline, and it fails on a broken copy.

SAM CLI runs from its own virtualenv, ``.tools/sam``, which ``make test`` installs before pytest
runs. Without it the SAM runs are skipped, saying so in the summary (``-ra``); under CI they fail
instead. The broken copy must fail naming what was broken, so the check cannot pass by checking
nothing.

What it does not catch (cfn-lint 1.58, which validates SAM resources against SAM's schemas without
translating them): a ``!Ref`` to a missing resource inside ``Globals``, or a missing queue in an
SQS event's ``Queue``. cfn-lint finds both in the translated template.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from devtools.checks import sam
from devtools.cloud.template import TEMPLATE_PATH, load_template
from infra.core.errors import ConfigurationError

pytestmark = pytest.mark.tools  # runs a tool of .tools/: not in `make test-fast`

MISSING = (
    f"SAM CLI is not installed at {sam.SAM}: run `make sam-install` (`make test` does); "
    "template.yaml was NOT validated"
)
# A port nothing listens on: any request SAM tried would fail, and --debug would log it.
DEAD_PROXY = "http://127.0.0.1:9"


@pytest.fixture
def installed() -> None:
    if not sam.SAM.exists():
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)


@pytest.mark.usefixtures("installed")
def test_the_template_is_valid_and_nothing_is_asked_of_any_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, DEAD_PROXY)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    run = sam.run([*sam.validate_args(), "--debug"])

    assert run.ok, run.output[-4000:]
    assert f"{TEMPLATE_PATH} is a valid SAM Template" in run.output
    # With --debug SAM logs a failed update check, with the ProxyError that failed it.
    assert "New version check failed" not in run.output
    assert "ProxyError" not in run.output


@pytest.mark.usefixtures("installed")
def test_a_broken_template_fails_naming_the_problems(tmp_path: Path) -> None:
    template = load_template()
    worker = template["Resources"]["WorkerFunction"]["Properties"]
    worker["Colour"] = "blue"  # no such property of AWS::Serverless::Function
    worker["LoggingConfig"]["LogGroup"] = {"Ref": "NoSuchLogGroup"}
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(template, indent=1), encoding="utf-8")

    run = sam.validate(broken)

    assert not run.ok
    assert "Linting failed" in run.output
    assert "'Colour' was unexpected" in run.output
    assert "'NoSuchLogGroup'" in run.output


# ------------------------------------------------------------------ without SAM


def test_validate_and_build_command_lines() -> None:
    assert sam.command(sam.validate_args(Path("t.yaml")), executable=Path("/x/sam")) == [
        "/x/sam",
        "validate",
        "--lint",
        "--template",
        "t.yaml",
    ]
    assert sam.build_args(Path("/b"), Path("t.yaml")) == [
        "build",
        "--template",
        "t.yaml",
        "--build-dir",
        "/b",
        "--no-cached",
    ]


def test_a_missing_sam_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="make sam-install"):
        sam.validate(executable=tmp_path / "sam")


def test_the_environment_keeps_sam_offline_and_off_the_callers_account() -> None:
    caller = {
        "PATH": "/bin",
        "AWS_PROFILE": "prod",
        "AWS_SESSION_TOKEN": "real",
        "AWS_ACCESS_KEY_ID": "AKIAREAL",
        "MAKEFLAGS": "-j8",
    }

    env = sam.offline_environment(caller, Path("/scratch"))

    assert env["PATH"] == "/bin"
    assert env["SAM_CLI_TELEMETRY"] == "0"
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env["__SAM_CLI_APP_DIR"] == "/scratch"
    assert not {"AWS_PROFILE", "AWS_SESSION_TOKEN", "MAKEFLAGS"} & env.keys()
