"""checkov on template.yaml and on its SAM translation: no check fails, and every suppression is
one listed here, with the reason the template gives for it.

checkov runs from its own virtualenv, ``.tools/checkov``, which ``make test`` installs before
pytest runs. Without it the scans are skipped, saying so in the summary (``-ra``); under CI they
fail instead. One checkov run covers the template and its translation, each as deployed by
default and with the optional worker service and web dashboard on, the dashboard's actions
included (checkov leaves out resources whose Condition is false under the defaults), and a
weakened copy of the translation, which must fail, so the scan cannot pass by checking nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from devtools.checks.checkov import CHECKOV, Scan, command, parse, scan, write_forms
from devtools.cloud.template import TEMPLATE_PATH

pytestmark = pytest.mark.tools  # runs a tool of .tools/: not in `make test-fast`

QUEUES = {
    "CeleryQueue",
    "CeleryDeadLetterQueue",
    "LowPriorityQueue",
    "LowPriorityDeadLetterQueue",
    "HighPriorityQueue",
    "HighPriorityDeadLetterQueue",
    "LongQueue",
    "LongDeadLetterQueue",
}
FUNCTIONS = {"WorkerFunction", "BeatFunction"}
# check id -> the logical ids that suppress it in template.yaml, each with its reason there.
SUPPRESSED = {
    "CKV_AWS_27": QUEUES,  # SSE-SQS, which the CloudFormation check does not recognise
    "CKV_AWS_119": {"ResultsTable", "UsersTable"},  # AWS managed key, not a customer's
    "CKV_AWS_18": {"ResultsBucket"},  # no access logging bucket
    "CKV_AWS_21": {"ResultsBucket"},  # no versioning of transient objects
    "CKV_AWS_115": FUNCTIONS,  # no reserved concurrency
    "CKV_AWS_116": FUNCTIONS,  # no function DLQ (SQS redrive; beat catches up)
    "CKV_AWS_117": FUNCTIONS,  # no VPC
    "CKV_AWS_173": FUNCTIONS,  # no customer key for environment variables
    "CKV_AWS_158": {"WorkerFunctionLogGroup", "BeatFunctionLogGroup"},  # no customer key for logs
}
# The optional worker service's and web dashboard's suppressions, scanned in the forms with them on.
SUPPRESSED_WITH_FEATURES_ON = {
    "CKV_AWS_158": {"WorkerLogGroup", "WebDashboardLogGroup"},  # no customer key for logs
    "CKV_AWS_149": {"WebDashboardToken"},  # the token secret under the AWS managed key
}
FORMS = ["template", "translation", "template-features-on", "translation-features-on"]
# What the weakened copy (of the translation with the worker service on) must fail: a suppression
# removed, public access and PITR off, a log group kept forever, a statement granting reads of
# every object of every bucket, and the worker cluster without Container Insights.
WEAKENED = {
    ("CKV_AWS_27", "CeleryQueue"),
    ("CKV_AWS_53", "ResultsBucket"),
    ("CKV_AWS_28", "ResultsTable"),
    ("CKV_AWS_66", "WorkerFunctionLogGroup"),
    ("CKV_AWS_108", "WorkerFunctionRole"),
    ("CKV_AWS_65", "WorkerCluster"),
}
MISSING = (
    f"checkov is not installed at {CHECKOV}: run `make checkov-install` (`make test` does); "
    "template.yaml was NOT scanned"
)


def weaken(template: dict[str, Any]) -> dict[str, Any]:
    resources = template["Resources"]
    del resources["CeleryQueue"]["Metadata"]
    del resources["ResultsBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    resources["ResultsTable"]["Properties"]["PointInTimeRecoverySpecification"] = {
        "PointInTimeRecoveryEnabled": False
    }
    del resources["WorkerFunctionLogGroup"]["Properties"]["RetentionInDays"]
    (policy,) = resources["WorkerFunctionRole"]["Properties"]["Policies"]
    policy["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}
    )
    del resources["WorkerCluster"]["Properties"]["ClusterSettings"]
    return template


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("checkov")
    forms = write_forms(directory)
    weakened = directory / "weakened.json"
    weakened.write_text(
        json.dumps(weaken(json.loads(forms["translation-features-on"].read_text())))
    )
    return {**forms, "weakened": weakened}


@pytest.fixture(scope="module")
def scanned(files: dict[str, Path]) -> Scan:
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    return scan(list(files.values()))


def logical(resource: str) -> str:
    """``AWS::SQS::Queue.CeleryQueue`` -> ``CeleryQueue``."""
    return resource.rpartition(".")[2]


def test_the_forms_are_the_template_and_its_translation_with_features_off_and_on(
    files: dict[str, Path],
) -> None:
    assert files["template"] == TEMPLATE_PATH
    on = json.loads(files["template-features-on"].read_text())
    assert on["Parameters"]["WorkerService"]["Default"] == "true"
    translated_on = json.loads(files["translation-features-on"].read_text())
    translated_off = json.loads(files["translation"].read_text())
    assert translated_on["Parameters"]["WorkerService"]["Default"] == "true"
    assert translated_off["Parameters"]["WorkerService"]["Default"] == "false"
    for form in (on, translated_on):
        assert form["Parameters"]["WebDashboard"]["Default"] == "true"
        assert form["Parameters"]["WebDashboardReadOnly"]["Default"] == "false"
    assert translated_off["Parameters"]["WebDashboard"]["Default"] == "false"


@pytest.mark.parametrize("form", FORMS)
def test_no_check_fails(form: str, scanned: Scan, files: dict[str, Path]) -> None:
    failed = [f"{f.check_id} {f.resource}" for f in scanned.of("failed", files[form])]

    assert failed == []
    assert len(scanned.of("passed", files[form])) >= 30
    assert scanned.parsing_errors == ()


@pytest.mark.parametrize("form", FORMS)
def test_suppressions_are_the_documented_ones(
    form: str, scanned: Scan, files: dict[str, Path]
) -> None:
    skipped = {(f.check_id, logical(f.resource)) for f in scanned.of("skipped", files[form])}

    expected = {(check, name) for check, names in SUPPRESSED.items() for name in names}
    if form.endswith("features-on"):
        expected |= {
            (check, name) for check, names in SUPPRESSED_WITH_FEATURES_ON.items() for name in names
        }
    assert skipped == expected


@pytest.mark.parametrize("form", ["template-features-on", "translation-features-on"])
def test_the_worker_service_is_scanned_when_on(
    form: str, scanned: Scan, files: dict[str, Path]
) -> None:
    passed = {(f.check_id, logical(f.resource)) for f in scanned.of("passed", files[form])}

    # Container Insights, roles without wildcards or privilege escalation, egress-only group.
    assert {
        ("CKV_AWS_65", "WorkerCluster"),
        ("CKV_AWS_108", "WorkerTaskRole"),
        ("CKV_AWS_111", "WorkerTaskExecutionRole"),
        ("CKV_AWS_66", "WorkerLogGroup"),
        ("CKV_AWS_23", "WorkerTaskSecurityGroup"),
        ("CKV_AWS_260", "WorkerTaskSecurityGroup"),
    } <= passed


@pytest.mark.parametrize("form", ["template-features-on", "translation-features-on"])
def test_the_web_dashboard_and_its_actions_are_scanned_when_on(
    form: str, scanned: Scan, files: dict[str, Path]
) -> None:
    passed = {(f.check_id, logical(f.resource)) for f in scanned.of("passed", files[form])}

    # Container Insights, roles and the actions' policy without wildcards or privilege
    # escalation, an egress-only group, a log group with retention.
    assert {
        ("CKV_AWS_65", "WebDashboardCluster"),
        ("CKV_AWS_108", "WebDashboardTaskRole"),
        ("CKV_AWS_111", "WebDashboardTaskRole"),
        ("CKV_AWS_111", "WebDashboardTaskExecutionRole"),
        ("CKV_AWS_108", "WebDashboardActionsPolicy"),
        ("CKV_AWS_111", "WebDashboardActionsPolicy"),
        ("CKV_AWS_66", "WebDashboardLogGroup"),
        ("CKV_AWS_23", "WebDashboardSecurityGroup"),
        ("CKV_AWS_260", "WebDashboardSecurityGroup"),
    } <= passed


def test_every_suppression_gives_its_reason(scanned: Scan) -> None:
    vague = [f"{f.check_id} {f.resource}" for f in scanned.of("skipped") if len(f.comment) < 60]

    assert vague == []


def test_a_weakened_template_fails(scanned: Scan, files: dict[str, Path]) -> None:
    failed = {(f.check_id, logical(f.resource)) for f in scanned.of("failed", files["weakened"])}

    assert failed >= WEAKENED, WEAKENED - failed


# ------------------------------------------------------------------ without checkov


def test_parse_reads_each_outcome_and_the_parsing_errors() -> None:
    report = {
        "check_type": "cloudformation",
        "results": {
            "passed_checks": [
                {"check_id": "CKV_AWS_66", "resource": "AWS::Logs::LogGroup.G", "file_path": "/t"}
            ],
            "failed_checks": [],
            "skipped_checks": [
                {
                    "check_id": "CKV_AWS_27",
                    "resource": "AWS::SQS::Queue.Q",
                    "file_path": "/t",
                    "file_abs_path": "/abs/t",
                    "check_result": {"result": "SKIPPED", "suppress_comment": "why"},
                }
            ],
            "parsing_errors": ["/bad.yaml"],
        },
    }

    result = parse([report])

    assert [(f.check_id, f.outcome, f.path, f.comment) for f in result.findings] == [
        ("CKV_AWS_66", "passed", "/t", ""),
        ("CKV_AWS_27", "skipped", "/abs/t", "why"),
    ]
    assert result.parsing_errors == ("/bad.yaml",)
    assert parse(report) == result
    assert parse({"summary": {"passed": 0}}) == Scan(())


def test_command_scans_each_file_offline_as_cloudformation() -> None:
    argv = command([Path("a.yaml"), Path("b.json")], executable=Path("/x/checkov"))

    assert argv == [
        "/x/checkov",
        "--file",
        "a.yaml",
        "--file",
        "b.json",
        "--framework",
        "cloudformation",
        "--skip-download",
        "--output",
        "json",
    ]
    assert command([Path("a.yaml")], report=True)[-2:] == ["--compact", "--quiet"]
