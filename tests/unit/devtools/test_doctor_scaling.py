"""`lambda doctor` on the event sources' batching and scaling, with the parameter values a deploy
would use: the template's defaults, samconfig.toml's overrides and --parameter-overrides.

Each check is shown silent on the real template with its defaults and firing on a value (or a
hand-edited template) that breaks it, naming the parameter to change.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from devtools.checks.doctor import Finding, diagnose
from devtools.checks.parameters import parse_overrides, samconfig_overrides
from devtools.cloud.template import load_template, translate
from infra.core.errors import ConfigurationError
from tasks import app as tasks_app

LAMBDA_QUEUES = {"CeleryQueue", "LowPriorityQueue", "HighPriorityQueue"}


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    tasks_app.loader.import_default_modules()
    tasks_app.finalize(auto=True)
    return translate(load_template())


def on_queues(translated: dict[str, Any], **overrides: str) -> dict[str, list[Finding]]:
    """Findings on the queues' event sources (tasks of other test apps may add their own)."""
    found: dict[str, list[Finding]] = {}
    for finding in diagnose(translated, tasks_app, overrides):
        if finding.where in LAMBDA_QUEUES or finding.where.startswith("parameter "):
            found.setdefault(finding.where, []).append(finding)
    return found


def test_the_defaults_and_the_project_samconfig_are_clean(translated: dict[str, Any]) -> None:
    assert on_queues(translated, **samconfig_overrides()) == {}


def test_a_batch_over_ten_needs_a_window(translated: dict[str, Any]) -> None:
    assert on_queues(translated, BatchSize="100") == {}  # the default window is 1 s

    found = on_queues(translated, BatchSize="100", MaximumBatchingWindowInSeconds="0")

    assert set(found) == LAMBDA_QUEUES
    [finding] = found["CeleryQueue"]
    assert finding.level == "error" and "BatchSize 100" in finding.problem
    assert finding.fix == "lower BatchSize to 10 or set MaximumBatchingWindowInSeconds to 1 or more"


def test_visibility_covers_six_timeouts_plus_the_window(translated: dict[str, Any]) -> None:
    assert on_queues(translated, MaximumBatchingWindowInSeconds="30") == {}  # 6 x 120 + 30 = 750

    found = on_queues(translated, MaximumBatchingWindowInSeconds="31")

    assert set(found) == LAMBDA_QUEUES
    [finding] = found["HighPriorityQueue"]
    assert "batching window 31s" in finding.problem
    assert "VisibilityTimeout >= 751" in finding.fix
    assert "MaximumBatchingWindowInSeconds" in finding.fix


def test_maximum_concurrency_of_one_queue_under_two(translated: dict[str, Any]) -> None:
    found = on_queues(translated, LowPriorityQueueMaximumConcurrency="1")

    [finding] = found.pop("LowPriorityQueue")
    assert found == {}
    assert finding.level == "error" and "MaximumConcurrency 1" in finding.problem
    assert "set LowPriorityQueueMaximumConcurrency to 2 or more" in finding.fix


def test_provisioned_pollers_in_order_are_clean(translated: dict[str, Any]) -> None:
    found = on_queues(
        translated,
        HighPriorityQueueProvisionedMode="true",
        HighPriorityQueueMinimumPollers="2",
        HighPriorityQueueMaximumPollers="2",
        # Ignored in provisioned mode: no finding for a cap Lambda never sees.
        HighPriorityQueueMaximumConcurrency="1",
    )

    assert found == {}


def test_minimum_pollers_over_maximum(translated: dict[str, Any]) -> None:
    assert (
        on_queues(translated, CeleryQueueMinimumPollers="10", CeleryQueueMaximumPollers="5") == {}
    )

    found = on_queues(
        translated,
        CeleryQueueProvisionedMode="true",
        CeleryQueueMinimumPollers="10",
        CeleryQueueMaximumPollers="5",
    )

    [finding] = found.pop("CeleryQueue")
    assert found == {}
    assert finding.level == "error"
    assert finding.problem == "MinimumPollers 10 is over MaximumPollers 5"
    assert "raise CeleryQueueMaximumPollers to 10 or more" in finding.fix


def test_provisioned_mode_needs_two_pollers_each(translated: dict[str, Any]) -> None:
    found = on_queues(
        translated, LowPriorityQueueProvisionedMode="true", LowPriorityQueueMinimumPollers="1"
    )

    [finding] = found.pop("LowPriorityQueue")
    assert found == {}
    assert "at least 2 of each" in finding.problem
    assert "set LowPriorityQueueMinimumPollers and LowPriorityQueueMaximumPollers" in finding.fix


def test_scaling_config_beside_provisioned_pollers(translated: dict[str, Any]) -> None:
    template = copy.deepcopy(translated)
    props = template["Resources"]["WorkerFunctionCeleryQueueEvent"]["Properties"]
    props["ScalingConfig"] = {"MaximumConcurrency": 5}  # a hand edit that drops the !If
    props["ProvisionedPollerConfig"] = {"MinimumPollers": 2, "MaximumPollers": 10}

    [finding] = [f for f in diagnose(template, tasks_app) if f.where == "CeleryQueue"]

    assert "one or the other" in finding.problem


def test_an_override_of_no_parameter_and_one_that_is_no_number(
    translated: dict[str, Any],
) -> None:
    [finding] = on_queues(translated, MaxConcurrency="5")["parameter MaxConcurrency"]
    assert finding.level == "error" and "not a parameter" in finding.problem

    with pytest.raises(ConfigurationError, match="BatchSize='ten' is not a number"):
        diagnose(translated, tasks_app, {"BatchSize": "ten"})


def test_overrides_are_read_as_sam_reads_them() -> None:
    assert parse_overrides("A=1 B='two words'") == {"A": "1", "B": "two words"}
    assert parse_overrides(["A=1", "B=2 C=3"]) == {"A": "1", "B": "2", "C": "3"}
    assert parse_overrides("ParameterKey=A,ParameterValue=x=y") == {"A": "x=y"}
    with pytest.raises(ConfigurationError, match="'A' is not Key=Value"):
        parse_overrides("A")


def test_samconfig_overrides_deploy_section_first(tmp_path: Path) -> None:
    config = tmp_path / "samconfig.toml"
    assert samconfig_overrides(config) == {}

    config.write_text(
        'version = 0.1\n[default.global.parameters]\nparameter_overrides = ["BatchSize=5"]\n'
    )
    assert samconfig_overrides(config) == {"BatchSize": "5"}

    config.write_text(
        "version = 0.1\n"
        '[default.global.parameters]\nparameter_overrides = "BatchSize=5"\n'
        '[default.deploy.parameters]\nparameter_overrides = "CeleryQueueProvisionedMode=true"\n'
        '[prod.deploy.parameters]\nparameter_overrides = "BatchSize=50"\n'
    )
    assert samconfig_overrides(config) == {"CeleryQueueProvisionedMode": "true"}
    assert samconfig_overrides(config, "prod") == {"BatchSize": "50"}


def test_the_command_reports_an_override_and_exits_non_zero() -> None:
    from devtools.cli import lambda_

    runner = CliRunner(env={"COLUMNS": "250"})
    obj = type("O", (), {"app": tasks_app})()
    overrides = (
        "HighPriorityQueueProvisionedMode=true "
        "HighPriorityQueueMinimumPollers=8 HighPriorityQueueMaximumPollers=4"
    )

    result = runner.invoke(lambda_, ["doctor", "--parameter-overrides", overrides], obj=obj)

    assert result.exit_code == 1, result.output
    assert "MinimumPollers 8 is over MaximumPollers 4" in result.output
    assert "raise HighPriorityQueueMaximumPollers to 8 or more" in result.output
    assert runner.invoke(lambda_, ["doctor"], obj=obj).exit_code == 0
