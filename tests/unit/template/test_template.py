"""template.yaml: lint-clean, translated offline, and refused when broken.

The rules the translation keeps are checked in ``test_template_rules.py``; the helpers that read
a template are in :mod:`tests.unit.template.rules`, the fixtures in ``conftest.py``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from devtools.checks.checkov import with_features_on, write_translation
from devtools.checks.parameters import Values
from devtools.cloud.template import DUMMY_CODE_URI, TEMPLATE_PATH, lint, load_template, translate
from infra.core.errors import ConfigurationError
from tests.unit.template.rules import (
    FUNCTION,
    LAMBDA_QUEUES,
    Template,
    esms,
    getatt_target,
    of_type,
    props,
)

# ------------------------------------------------------------------ lint and translation


@pytest.mark.tools
def test_cfn_lint_reports_nothing() -> None:
    assert lint() == []


@pytest.mark.tools
@pytest.mark.parametrize("worker_service", [False, True])
def test_cfn_lint_reports_nothing_on_the_translation(tmp_path: Path, worker_service: bool) -> None:
    # cfn-lint checks SAM resources against SAM's schemas without translating them: a !Ref in
    # Globals or in an SQS event's Queue is only followed in the translation.
    template = with_features_on(load_template()) if worker_service else load_template()

    assert lint(write_translation(tmp_path, template)) == []


@pytest.mark.tools
def test_lint_of_the_translation_finds_what_the_sam_source_hides(tmp_path: Path) -> None:
    template = load_template()
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    env["RESULTS_TABLE"] = {"Ref": "NoSuchTable"}
    template["Resources"]["WorkerFunction"]["Properties"]["Events"]["CeleryQueueEvent"][
        "Properties"
    ]["Queue"] = {"Fn::GetAtt": ["NoSuchQueue", "Arn"]}
    source = tmp_path / "template.json"
    source.write_text(json.dumps(template))

    assert not [m for m in lint(source) if "NoSuch" in m]  # the SAM source passes
    found = lint(write_translation(tmp_path, template))
    assert any("'NoSuchTable'" in m for m in found), found
    assert any("NoSuchQueue" in m for m in found), found


@pytest.mark.tools
def test_lint_reports_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "template.yaml"
    broken.write_text(
        "Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n"
        "    Properties:\n      VisibilityTimeout: 99999\n"
    )

    matches = lint(broken)

    assert matches
    assert all(re.fullmatch(r"[EWI]\d{4} .+ \S+:\d+", match) for match in matches), matches
    assert any(f"{broken}:5" in match for match in matches), matches


def test_translate_builds_the_worker(translated: Template) -> None:
    assert "Transform" not in translated
    # BeatFunction (the scheduled tick) is checked in test_beat_template.py.
    assert set(of_type(translated, "AWS::Lambda::Function")) == {FUNCTION, "BeatFunction"}
    assert set(of_type(translated, "AWS::IAM::Role")) == {
        f"{FUNCTION}Role",
        "BeatFunctionRole",
        "WorkerTaskRole",  # the optional worker service (template/test_worker_service.py)
        "WorkerTaskExecutionRole",
        "WebDashboardTaskRole",  # the optional web dashboard (template/test_web_dashboard.py)
        "WebDashboardTaskExecutionRole",
    }
    function = props(translated, FUNCTION)
    assert function["Role"] == {"Fn::GetAtt": [f"{FUNCTION}Role", "Arn"]}
    assert function["Handler"] == "handlers.sqs.handler"
    assert function["Code"] == {"S3Bucket": "celery-lambda-local", "S3Key": "code.zip"}
    assert (function["Runtime"], function["Timeout"], function["MemorySize"]) == (
        "python3.12",
        120,
        1024,
    )
    assert function["Architectures"] == ["x86_64"]
    assert function["TracingConfig"] == {"Mode": "Active"}


def test_translate_maps_each_queue_event_to_an_event_source_mapping(translated: Template) -> None:
    mappings = esms(translated)

    sources = {getatt_target(m["Properties"]["EventSourceArn"]) for m in mappings.values()}
    assert sources == LAMBDA_QUEUES
    assert len(mappings) == 3
    for mapping in mappings.values():
        properties = mapping["Properties"]
        assert properties["FunctionName"] == {"Ref": FUNCTION}
        assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert properties["BatchSize"] == {"Ref": "BatchSize"}
        window = {"Ref": "MaximumBatchingWindowInSeconds"}
        assert properties["MaximumBatchingWindowInSeconds"] == window


@pytest.mark.parametrize("queue", sorted(LAMBDA_QUEUES))
def test_each_queue_scales_by_its_own_parameters_in_one_mode_at_a_time(
    translated: Template, queue: str
) -> None:
    [mapping] = [
        m
        for m in esms(translated).values()
        if getatt_target(m["Properties"]["EventSourceArn"]) == queue
    ]

    def scaling(**overrides: str) -> dict[str, object]:
        values = Values.of(translated, {f"{queue}{k}": v for k, v in overrides.items()})
        evaluated = {
            key: values.evaluate(mapping["Properties"][key])
            for key in ("ScalingConfig", "ProvisionedPollerConfig")
        }
        return {key: value for key, value in evaluated.items() if value is not None}

    # Off by default: standard mode, capped per queue; no poller is billed.
    assert scaling() == {"ScalingConfig": {"MaximumConcurrency": 10}}
    assert scaling(MaximumConcurrency="4") == {"ScalingConfig": {"MaximumConcurrency": 4}}
    assert scaling(MinimumPollers="5") == {"ScalingConfig": {"MaximumConcurrency": 10}}
    # Provisioned mode, with AWS's default bounds or the queue's own; Lambda takes no cap then.
    assert scaling(ProvisionedMode="true") == {
        "ProvisionedPollerConfig": {"MinimumPollers": 2, "MaximumPollers": 200}
    }
    assert scaling(ProvisionedMode="true", MinimumPollers="5", MaximumPollers="20") == {
        "ProvisionedPollerConfig": {"MinimumPollers": 5, "MaximumPollers": 20}
    }


def test_each_function_runs_as_its_own_role_that_only_lambda_assumes(translated: Template) -> None:
    for function in of_type(translated, "AWS::Lambda::Function"):
        assert props(translated, function)["Role"] == {"Fn::GetAtt": [f"{function}Role", "Arn"]}
        role = props(translated, f"{function}Role")

        assert "ManagedPolicyArns" not in role
        (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
        assert trust == {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }


def test_translate_uses_the_region_partition() -> None:
    # A function without a role of its own: SAM generates one with a managed policy ARN.
    sam = {
        "Transform": "AWS::Serverless-2016-10-31",
        "Resources": {
            "F": {
                "Type": "AWS::Serverless::Function",
                "Properties": {"CodeUri": ".", "Handler": "h.h", "Runtime": "python3.12"},
            }
        },
    }

    china = props(translate(sam, region="cn-north-1"), "FRole")["ManagedPolicyArns"]
    default = props(translate(sam), "FRole")["ManagedPolicyArns"]

    assert all(arn.startswith("arn:aws-cn:") for arn in china), china
    assert all(arn.startswith("arn:aws:") for arn in default), default


def test_translate_leaves_its_input_alone(sam: Template) -> None:
    before = copy.deepcopy(sam)

    translate(sam)

    assert sam == before
    assert sam["Resources"][FUNCTION]["Properties"]["CodeUri"] == "."
    assert DUMMY_CODE_URI.startswith("s3://")


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Resources:\n  Queue: [unclosed\n", "invalid YAML"),
        ("Resources: {}\nResources: {}\n", "duplicate key 'Resources'"),
        ("Resources:\n  Queue: !Reff Other\n", "unknown CloudFormation tag !Reff"),
        ("- Resources\n", "is not a mapping"),
    ],
)
def test_load_template_rejects_invalid_yaml(text: str, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(text)

    with pytest.raises(ConfigurationError, match=reason) as caught:
        load_template(path)
    assert "\n" not in str(caught.value)


def test_load_template_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read template"):
        load_template(tmp_path / "absent.yaml")


def test_load_template_reads_short_tags_in_long_form(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Version: 2012-10-17\n"
        "A: !GetAtt Queue.Arn\n"
        "B: !Sub ['${X}-${Y}', {X: !Ref Z, Y: !Select [0, !GetAZs '']}]\n"
        "C: !If [IsProd, !Join ['', [a, b]], !Ref AWS::NoValue]\n"
    )

    assert load_template(path) == {
        "Version": "2012-10-17",
        "A": {"Fn::GetAtt": ["Queue", "Arn"]},
        "B": {
            "Fn::Sub": [
                "${X}-${Y}",
                {"X": {"Ref": "Z"}, "Y": {"Fn::Select": [0, {"Fn::GetAZs": ""}]}},
            ]
        },
        "C": {"Fn::If": ["IsProd", {"Fn::Join": ["", ["a", "b"]]}, {"Ref": "AWS::NoValue"}]},
    }


def test_translate_rejects_an_sqs_event_without_queue(sam: Template) -> None:
    broken = copy.deepcopy(sam)
    events = broken["Resources"][FUNCTION]["Properties"]["Events"]
    del events["CeleryQueueEvent"]["Properties"]["Queue"]

    with pytest.raises(ConfigurationError, match="Missing required property 'Queue'"):
        translate(broken)


def test_template_path_is_the_repository_template() -> None:
    assert TEMPLATE_PATH.name == "template.yaml"
    assert TEMPLATE_PATH.is_file()
