"""The scheduled tick's cloud side: its function, schedule and IAM in the translated template, and
the EventBridge event the local tooling invokes it with.
"""

from __future__ import annotations

from typing import Any

import pytest

from devtools.cloud.deploy import ScheduleSource
from devtools.cloud.lambda_events import build_scheduled_event, make_context
from devtools.cloud.template import load_template, translate

Template = dict[str, Any]
BEAT = "BeatFunction"
# Every queue a scheduled task may be routed to, the workers' long queue included.
MAIN_QUEUES = ["CeleryQueue", "LowPriorityQueue", "HighPriorityQueue", "LongQueue"]


@pytest.fixture(scope="module")
def cfn() -> Template:
    return translate(load_template())


def of_type(template: Template, kind: str) -> dict[str, Template]:
    return {n: r for n, r in template["Resources"].items() if r["Type"] == kind}


def props(template: Template, name: str) -> Template:
    properties: Template = template["Resources"][name]["Properties"]
    return properties


def test_beat_function_shares_the_workers_code_and_environment(cfn: Template) -> None:
    beat, worker = props(cfn, BEAT), props(cfn, "WorkerFunction")

    assert beat["Handler"] == "handlers.beat.handler"
    assert beat["Timeout"] == 60
    for key in ("Code", "Runtime", "Environment", "MemorySize", "Architectures", "TracingConfig"):
        assert beat[key] == worker[key], key
    assert "ReservedConcurrentExecutions" not in beat  # overlapping ticks are harmless


def test_a_rule_invokes_it_at_the_start_of_every_minute(cfn: Template) -> None:
    (rule_name, rule) = of_type(cfn, "AWS::Events::Rule").popitem()

    assert rule["Properties"]["ScheduleExpression"] == "cron(* * * * ? *)"
    assert rule["Properties"]["State"] == "ENABLED"
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [BEAT, "Arn"]}
    permissions = [
        p["Properties"]
        for p in of_type(cfn, "AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Ref": BEAT}
    ]
    assert permissions == [
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Ref": BEAT},
            "Principal": "events.amazonaws.com",
            "SourceArn": {"Fn::GetAtt": [rule_name, "Arn"]},
        }
    ]


def test_no_queue_invokes_it(cfn: Template) -> None:
    mappings = of_type(cfn, "AWS::Lambda::EventSourceMapping").values()

    assert all(m["Properties"]["FunctionName"] != {"Ref": BEAT} for m in mappings)


def test_its_role_may_only_publish_claim_slots_and_offload_bodies(cfn: Template) -> None:
    role = props(cfn, f"{BEAT}Role")
    (policy,) = role["Policies"]

    grants = {
        tuple(s["Action"]): s["Resource"]
        for s in policy["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
    }

    assert grants == {
        ("sqs:SendMessage", "sqs:GetQueueAttributes"): [
            {"Fn::GetAtt": [q, "Arn"]} for q in MAIN_QUEUES
        ],
        ("dynamodb:BatchGetItem", "dynamodb:UpdateItem"): {"Fn::GetAtt": ["ResultsTable", "Arn"]},
        ("s3:PutObject",): {"Fn::Sub": "${ResultsBucket.Arn}/payloads/*"},
        ("logs:CreateLogStream", "logs:PutLogEvents"): {"Fn::GetAtt": [f"{BEAT}LogGroup", "Arn"]},
        ("xray:PutTraceSegments", "xray:PutTelemetryRecords"): "*",
    }
    assert "ManagedPolicyArns" not in role


def test_its_logs_are_kept_as_long_as_the_workers(cfn: Template) -> None:
    group = props(cfn, f"{BEAT}LogGroup")

    assert group == {
        "LogGroupName": {"Fn::Sub": "/aws/lambda/${AWS::StackName}-beat"},
        "RetentionInDays": {"Ref": "LogRetentionInDays"},
    }
    assert props(cfn, BEAT)["FunctionName"] == {"Fn::Sub": "${AWS::StackName}-beat"}
    assert props(cfn, BEAT)["LoggingConfig"] == {"LogGroup": {"Ref": f"{BEAT}LogGroup"}}
    assert cfn["Outputs"][f"{BEAT}Name"]["Value"] == {"Ref": BEAT}


SOURCE = ScheduleSource(
    function=BEAT,
    handler="handlers.beat.handler",
    rule_arn="arn:aws:events:eu-west-1:123456789012:rule/stack-BeatFunctionTick",
    expression="cron(* * * * ? *)",
    timeout=60,
    memory_size=1024,
)


def test_scheduled_event_has_eventbridges_shape() -> None:
    event = build_scheduled_event(SOURCE, when=1_780_000_000.0, event_id="e-1")

    assert event == {
        "version": "0",
        "id": "e-1",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-05-28T20:26:00Z",
        "region": "eu-west-1",
        "resources": [SOURCE.rule_arn],
        "detail": {},
    }


def test_context_of_a_scheduled_function_has_its_timeout() -> None:
    context = make_context(SOURCE, clock=lambda: 1_000.0)

    assert context.get_remaining_time_in_millis() == 60_000
    assert context.invoked_function_arn == "arn:aws:lambda:eu-west-1:123456789012:function:" + BEAT
    assert context.memory_limit_in_mb == 1024
