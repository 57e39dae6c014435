"""template.yaml keeps the rules the runtime relies on.

The rules are checked on the translated template (what CloudFormation deploys). Each rule is a
function returning its violations (in :mod:`tests.unit.template.rules`), run once on the real
template (expecting none) and once on a template broken on purpose (expecting the violation), so
no rule passes by checking nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from tests.unit.template.rules import (
    FUNCTION,
    MAIN_QUEUES,
    RULES,
    Template,
    getatt_target,
    of_type,
    props,
)


def _first_statement(template: Template) -> Template:
    policy = props(template, f"{FUNCTION}Role")["Policies"][0]
    statement: Template = policy["PolicyDocument"]["Statement"][0]
    return statement


def _statement(template: Template, sid: str, role: str = f"{FUNCTION}Role") -> Template:
    (policy,) = props(template, role)["Policies"]
    (statement,) = [s for s in policy["PolicyDocument"]["Statement"] if s.get("Sid") == sid]
    return statement


BREAKAGES: dict[str, tuple[str, Callable[[Template], object]]] = {
    "short-visibility": (
        "visibility",
        lambda t: props(t, "LowPriorityQueue").update(VisibilityTimeout=600),
    ),
    "long-timeout": ("visibility", lambda t: props(t, FUNCTION).update(Timeout=125)),
    "long-window": (
        "visibility",
        lambda t: t["Parameters"]["MaximumBatchingWindowInSeconds"].update(Default=31),
    ),
    "no-redrive": ("redrive", lambda t: props(t, "CeleryQueue").pop("RedrivePolicy")),
    "receive-count": (
        "redrive",
        lambda t: props(t, "HighPriorityQueue")["RedrivePolicy"].update(maxReceiveCount=3),
    ),
    "dlq-keeps-less": (
        "redrive",
        lambda t: props(t, "CeleryDeadLetterQueue").update(MessageRetentionPeriod=345_600),
    ),
    "foreign-queue": (
        "event-source",
        lambda t: props(t, f"{FUNCTION}CeleryQueueEvent").update(
            EventSourceArn="arn:aws:sqs:us-east-1:123456789012:elsewhere"
        ),
    ),
    "list-queues": ("iam", lambda t: _first_statement(t)["Action"].append("sqs:List*")),
    "scan": ("iam", lambda t: _first_statement(t).update(Action="dynamodb:*")),
    "any-resource": ("iam", lambda t: _first_statement(t).update(Resource="*")),
    "managed-admin": (
        "iam",
        lambda t: (
            props(t, f"{FUNCTION}Role")
            .setdefault("ManagedPolicyArns", [])
            .append("arn:aws:iam::aws:policy/AdministratorAccess")
        ),
    ),
    "foreign-role": ("iam", lambda t: props(t, FUNCTION).update(Role={"Fn::GetAtt": ["X", "Arn"]})),
    "shared-role": (
        "iam",
        lambda t: props(t, "BeatFunction").update(Role={"Fn::GetAtt": [f"{FUNCTION}Role", "Arn"]}),
    ),
    "receive-anywhere": (
        "iam",
        lambda t: _statement(t, "WriteTraces")["Action"].append("sqs:ReceiveMessage"),
    ),
    "pull-anything": (
        "iam",
        lambda t: _statement(t, "AuthenticateToEcr", "WorkerTaskExecutionRole")["Action"].append(
            "ecr:BatchGetImage"
        ),
    ),
    "sort-key": (
        "results-table",
        lambda t: props(t, "ResultsTable")["KeySchema"].append(
            {"AttributeName": "date_done", "KeyType": "RANGE"}
        ),
    ),
    "no-ttl": ("results-table", lambda t: props(t, "ResultsTable").pop("TimeToLiveSpecification")),
    "no-indexes": (
        "results-table",
        lambda t: props(t, "ResultsTable").pop("GlobalSecondaryIndexes"),
    ),
    "index-projects-all": (
        "results-table",
        lambda t: props(t, "ResultsTable")["GlobalSecondaryIndexes"][0].update(
            Projection={"ProjectionType": "ALL"}
        ),
    ),
    "id-index-projects-all": (
        "results-table",
        lambda t: [
            i.update(Projection={"ProjectionType": "ALL"})
            for i in props(t, "ResultsTable")["GlobalSecondaryIndexes"]
            if i["IndexName"] == "by-id"
        ],
    ),
    "string-timestamp": (
        "results-table",
        lambda t: [
            d.update(AttributeType="S")
            for d in props(t, "ResultsTable")["AttributeDefinitions"]
            if d["AttributeName"] == "timestamp"
        ],
    ),
    "sse-off": (
        "encryption",
        lambda t: props(t, "CeleryDeadLetterQueue").pop("SqsManagedSseEnabled"),
    ),
    "table-sse-off": ("encryption", lambda t: props(t, "UsersTable").pop("SSESpecification")),
    "pitr-fixed": (
        "encryption",
        lambda t: props(t, "ResultsTable").update(
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
        ),
    ),
    "public-bucket": (
        "bucket",
        lambda t: props(t, "ResultsBucket")["PublicAccessBlockConfiguration"].update(
            BlockPublicPolicy=False
        ),
    ),
    "no-encryption": ("bucket", lambda t: props(t, "ResultsBucket").pop("BucketEncryption")),
    "no-output": ("outputs", lambda t: t["Outputs"].pop("CeleryQueueUrls")),
    "no-users-table": (
        "environment",
        lambda t: props(t, FUNCTION)["Environment"]["Variables"].pop("USERS_TABLE"),
    ),
    "reserved-region": (
        "environment",
        lambda t: props(t, FUNCTION)["Environment"]["Variables"].update(AWS_REGION="x"),
    ),
}


# ------------------------------------------------------------------ rules on the translation


@pytest.mark.parametrize("rule", RULES)
def test_rule_holds(rule: str, cfn: Template) -> None:
    assert RULES[rule](cfn) == []


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_rule_catches_breakage(breakage: str, cfn: Template) -> None:
    rule, breaks = BREAKAGES[breakage]

    breaks(cfn)

    assert RULES[rule](cfn), f"rule {rule!r} missed {breakage!r}"


def test_every_rule_has_a_breakage() -> None:
    assert {rule for rule, _ in BREAKAGES.values()} == set(RULES)


def test_queue_urls_variable_is_json_naming_each_queue(cfn: Template) -> None:
    value = props(cfn, FUNCTION)["Environment"]["Variables"]["CELERY_QUEUE_URLS"]

    rendered = re.sub(r"\$\{(\w+)\}", r"url-of-\1", value["Fn::Sub"])

    expected = {name: f"url-of-{queue}" for queue, (name, _, _) in MAIN_QUEUES.items()}
    assert json.loads(rendered) == expected
    assert cfn["Outputs"]["CeleryQueueUrls"]["Value"] == value


def test_queues_are_named_after_the_stack(cfn: Template) -> None:
    names = {
        logical_id: queue["Properties"]["QueueName"]
        for logical_id, queue in of_type(cfn, "AWS::SQS::Queue").items()
    }

    expected = {}
    for queue, (name, dlq, dlq_name) in MAIN_QUEUES.items():
        expected[queue] = {"Fn::Sub": f"${{AWS::StackName}}-{name}"}
        expected[dlq] = {"Fn::Sub": f"${{AWS::StackName}}-{dlq_name}"}
    assert names == expected


def test_every_queue_is_tls_only(cfn: Template) -> None:
    (policy,) = of_type(cfn, "AWS::SQS::QueuePolicy").values()

    queues = set(of_type(cfn, "AWS::SQS::Queue"))
    assert {ref["Ref"] for ref in policy["Properties"]["Queues"]} == queues
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Deny", "sqs:*")
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {getatt_target(arn) for arn in statement["Resource"]} == queues


def test_log_group_belongs_to_the_function(cfn: Template) -> None:
    group = props(cfn, "WorkerFunctionLogGroup")
    function = props(cfn, FUNCTION)

    # The function's own name under /aws/lambda/, where Lambda and `sam logs` look.
    assert function["FunctionName"] == {"Fn::Sub": "${AWS::StackName}-worker"}
    assert group["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${AWS::StackName}-worker"}
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": "WorkerFunctionLogGroup"}}
    assert group["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
    logs = _statement(cfn, "WriteLogs")
    assert logs["Resource"] == {"Fn::GetAtt": ["WorkerFunctionLogGroup", "Arn"]}
    assert "logs:CreateLogGroup" not in logs["Action"]  # the group exists before the function


def test_bucket_is_tls_only(cfn: Template) -> None:
    (policy,) = of_type(cfn, "AWS::S3::BucketPolicy").values()

    assert policy["Properties"]["Bucket"] == {"Ref": "ResultsBucket"}
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == (
        "Deny",
        "*",
        "s3:*",
    )
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == [
        {"Fn::GetAtt": ["ResultsBucket", "Arn"]},
        {"Fn::Sub": "${ResultsBucket.Arn}/*"},
    ]


def test_point_in_time_recovery_is_a_parameter_on_by_default(cfn: Template) -> None:
    parameter = cfn["Parameters"]["PointInTimeRecovery"]

    assert (parameter["Type"], parameter["Default"]) == ("String", "true")
    assert parameter["AllowedValues"] == ["true", "false"]


def test_dead_letter_queues_allow_redrive_from_their_source_only(cfn: Template) -> None:
    for name, dlq, _ in MAIN_QUEUES.values():
        policy = props(cfn, dlq)["RedriveAllowPolicy"]

        assert policy["redrivePermission"] == "byQueue"
        (source,) = policy["sourceQueueArns"]
        assert source["Fn::Sub"].endswith(":${AWS::StackName}-" + name)
