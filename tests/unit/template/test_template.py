"""template.yaml: lint-clean, translated offline, and keeping the rules the runtime relies on.

The rules are checked on the translated template (what CloudFormation deploys). Each rule is a
function returning its violations, run once on the real template (expecting none) and once on a
template broken on purpose (expecting the violation), so no rule passes by checking nothing.

Each function has a role of its own written in the template, not one SAM generates: for SQS
events SAM's role carries AWSLambdaSQSQueueExecutionRole (sqs:ReceiveMessage and DeleteMessage on
``*``, every queue of the account) and AWSLambdaBasicExecutionRole (logs to every log group). So
no managed policy is allowed, and every Allow names its resources except X-Ray's actions and
ECR's GetAuthorizationToken (the optional worker service's execution role), which have no
resource-level permissions.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from devtools.checks.checkov import with_features_on, write_translation
from devtools.cloud.template import (
    DUMMY_CODE_URI,
    TEMPLATE_PATH,
    lint,
    load_template,
    translate,
)
from infra.core.errors import ConfigurationError
from infra.core.limits import VISIBILITY_TIMEOUT_FACTOR
from infra.store.items import INDEX_BY_STATUS, INDEX_BY_TASK, INDEX_BY_TIME

Template = dict[str, Any]

FUNCTION = "WorkerFunction"
MAIN_QUEUES = {
    "CeleryQueue": ("celery", "CeleryDeadLetterQueue", "celery-dlq"),
    "LowPriorityQueue": ("low-priority", "LowPriorityDeadLetterQueue", "low-priority-dlq"),
    "HighPriorityQueue": ("high-priority", "HighPriorityDeadLetterQueue", "high-priority-dlq"),
    "LongQueue": ("long", "LongDeadLetterQueue", "long-dlq"),
}
# The queues the function consumes; workers consume the long one (test_worker_service.py).
LAMBDA_QUEUES = {"CeleryQueue", "LowPriorityQueue", "HighPriorityQueue"}
ENVIRONMENT = {
    "CELERY_APP": "tasks:app",
    "CELERY_BROKER_URL": "sqs://",
    "CELERY_QUEUE_URLS": None,  # checked on its own below
    "RESULTS_TABLE": {"Ref": "ResultsTable"},
    "RESULTS_BUCKET": {"Ref": "ResultsBucket"},
    "USERS_TABLE": {"Ref": "UsersTable"},
    "POWERTOOLS_SERVICE_NAME": "celery-lambda",
    "POWERTOOLS_METRICS_NAMESPACE": "CeleryLambda",
}
OUTPUTS = {
    "CeleryQueueUrl",
    "CeleryDeadLetterQueueUrl",
    "LowPriorityQueueUrl",
    "LowPriorityDeadLetterQueueUrl",
    "HighPriorityQueueUrl",
    "HighPriorityDeadLetterQueueUrl",
    "LongQueueUrl",
    "LongDeadLetterQueueUrl",
    "CeleryQueueUrls",
    "ResultsTableName",
    "UsersTableName",
    "ResultsBucketName",
    "WorkerFunctionName",
}
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsx-ray.html
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerregistry.html
UNSCOPABLE_ACTIONS = frozenset(
    {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "ecr:GetAuthorizationToken"}
)
# Runtime code never provisions or discovers infrastructure (queue URLs come from the env).
FORBIDDEN_ACTIONS = (
    "sqs:ListQueues",
    "sqs:CreateQueue",
    "sqs:GetQueueUrl",
    "dynamodb:CreateTable",
    "dynamodb:UpdateTimeToLive",
    "dynamodb:Scan",
)
# Celery's key, and the index keys infra.store.results writes (timestamp is Celery's own, a number).
RESULTS_ATTRIBUTE_TYPES = {
    "id": "S",
    "status": "S",
    "task_name": "S",
    "kind": "S",
    "timestamp": "N",
}
RESULTS_INDEXES = {INDEX_BY_STATUS: "status", INDEX_BY_TASK: "task_name", INDEX_BY_TIME: "kind"}
SQS_DEFAULT_VISIBILITY = 30
SQS_DEFAULT_RETENTION = 345_600
LAMBDA_DEFAULT_TIMEOUT = 3


@pytest.fixture(scope="module")
def sam() -> Template:
    return load_template()


@pytest.fixture(scope="module")
def translated(sam: Template) -> Template:
    return translate(sam)


@pytest.fixture
def cfn(translated: Template) -> Template:
    """A copy of the translated template that a test may break."""
    return copy.deepcopy(translated)


# ------------------------------------------------------------------ helpers


def of_type(template: Template, resource_type: str) -> dict[str, Template]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def props(template: Template, logical_id: str) -> Template:
    properties: Template = template["Resources"][logical_id].setdefault("Properties", {})
    return properties


def getatt_target(value: Any, attribute: str = "Arn") -> str | None:
    """The logical id behind ``{"Fn::GetAtt": [id, attribute]}``, else None."""
    if isinstance(value, dict) and list(value) == ["Fn::GetAtt"]:
        target, attr = value["Fn::GetAtt"]
        return target if attr == attribute else None
    return None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def esms(template: Template) -> dict[str, Template]:
    return of_type(template, "AWS::Lambda::EventSourceMapping")


# ------------------------------------------------------------------ rules


def visibility_problems(template: Template) -> list[str]:
    """Queues consumed by a function must hide a message for 6 x the function timeout."""
    problems = []
    for name, esm in esms(template).items():
        queue = getatt_target(esm["Properties"]["EventSourceArn"]) or ""
        function = esm["Properties"]["FunctionName"].get("Ref")
        if queue not in template["Resources"] or function not in template["Resources"]:
            problems.append(f"{name}: cannot resolve its queue or function")
            continue
        timeout = props(template, function).get("Timeout", LAMBDA_DEFAULT_TIMEOUT)
        visibility = props(template, queue).get("VisibilityTimeout", SQS_DEFAULT_VISIBILITY)
        if visibility < VISIBILITY_TIMEOUT_FACTOR * timeout:
            problems.append(f"{queue}: VisibilityTimeout {visibility} < 6 x {timeout}")
    return problems


def redrive_problems(template: Template) -> list[str]:
    """Every queue that is no DLQ redrives to a DLQ after 5 receives; the DLQ keeps longer."""
    queues = of_type(template, "AWS::SQS::Queue")
    policies = {name: q["Properties"].get("RedrivePolicy") for name, q in queues.items()}
    dlqs = {getatt_target(p["deadLetterTargetArn"]) for p in policies.values() if p}
    problems = []
    for name, policy in policies.items():
        if name in dlqs:
            continue
        if not policy:
            problems.append(f"{name}: no RedrivePolicy")
            continue
        dlq = getatt_target(policy["deadLetterTargetArn"])
        if dlq not in queues:
            problems.append(f"{name}: dead-letter target {dlq} is not a queue of the template")
            continue
        if policy.get("maxReceiveCount") != 5:
            problems.append(f"{name}: maxReceiveCount {policy.get('maxReceiveCount')} != 5")
        kept = props(template, name).get("MessageRetentionPeriod", SQS_DEFAULT_RETENTION)
        dlq_kept = props(template, dlq).get("MessageRetentionPeriod", SQS_DEFAULT_RETENTION)
        if dlq_kept <= kept:
            problems.append(f"{name}: DLQ {dlq} keeps {dlq_kept}s, not more than {kept}s")
    return problems


def event_source_problems(template: Template) -> list[str]:
    """Every event source mapping reads one of the template's own queues."""
    queues = of_type(template, "AWS::SQS::Queue")
    return [
        f"{name}: source {esm['Properties'].get('EventSourceArn')} is not a template queue"
        for name, esm in esms(template).items()
        if getatt_target(esm["Properties"].get("EventSourceArn")) not in queues
    ]


def _statement_problems(where: str, statement: Template) -> list[str]:
    if statement.get("Effect") != "Allow":
        return []
    if "NotAction" in statement or "NotResource" in statement:
        return [f"{where}: Allow with NotAction/NotResource"]
    problems = [
        f"{where}: {pattern} grants {action}"
        for pattern in as_list(statement.get("Action", []))
        for action in FORBIDDEN_ACTIONS
        if fnmatchcase(action.lower(), str(pattern).lower())
    ]
    actions = {str(action) for action in as_list(statement.get("Action", []))}
    if "*" in as_list(statement.get("Resource")) and not actions <= UNSCOPABLE_ACTIONS:
        problems.append(f"{where}: Resource '*' for {sorted(actions - UNSCOPABLE_ACTIONS)}")
    return problems


def iam_problems(template: Template) -> list[str]:
    """Its own template role per function, no managed policy, no ``*`` or provisioning grant."""
    roles = of_type(template, "AWS::IAM::Role")
    used = [
        (name, getatt_target(props(template, name).get("Role")))
        for name in of_type(template, "AWS::Lambda::Function")
    ]
    problems = [
        f"{name}: role {role} is not the template's" for name, role in used if role not in roles
    ]
    assumed = [role for _, role in used]
    problems += [f"role {role} is shared" for role in set(assumed) if assumed.count(role) > 1]
    for name, role in roles.items():
        problems += [
            f"{name}: managed policy {arn}"
            for arn in role["Properties"].get("ManagedPolicyArns", [])
        ]
        for policy in role["Properties"].get("Policies", []):
            for statement in as_list(policy["PolicyDocument"]["Statement"]):
                problems += _statement_problems(f"{name}/{policy['PolicyName']}", statement)
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for name, policy in of_type(template, kind).items():
            for statement in as_list(policy["Properties"]["PolicyDocument"]["Statement"]):
                problems += _statement_problems(name, statement)
    return problems


def results_table_problems(template: Template) -> list[str]:
    """The results table: the key stock Celery reads, a TTL, the indexes infra.store.items names."""
    table = props(template, "ResultsTable")
    problems = []
    if table.get("KeySchema") != [{"AttributeName": "id", "KeyType": "HASH"}]:
        problems.append(f"KeySchema {table.get('KeySchema')}")
    types = {d["AttributeName"]: d["AttributeType"] for d in table.get("AttributeDefinitions", [])}
    if types != RESULTS_ATTRIBUTE_TYPES:
        problems.append(f"AttributeDefinitions {table.get('AttributeDefinitions')}")
    indexes = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
    for name, partition in RESULTS_INDEXES.items():
        expected = [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": "timestamp", "KeyType": "RANGE"},
        ]
        index = indexes.get(name, {})
        if index.get("KeySchema") != expected:
            problems.append(f"index {name}: {index.get('KeySchema')}")
        # Copying `result` (up to ~350 KB) into an index multiplies the cost of every write.
        projection = index.get("Projection", {})
        if projection.get("ProjectionType") != "INCLUDE" or "result" in projection.get(
            "NonKeyAttributes", []
        ):
            problems.append(f"index {name} projects the result: {projection}")
    if table.get("TimeToLiveSpecification") != {"AttributeName": "ttl", "Enabled": True}:
        problems.append(f"TimeToLiveSpecification {table.get('TimeToLiveSpecification')}")
    return problems


def encryption_problems(template: Template) -> list[str]:
    """Queues and tables encrypt at rest; tables follow the PointInTimeRecovery parameter."""
    problems = [
        f"{name}: not encrypted at rest"
        for name, queue in of_type(template, "AWS::SQS::Queue").items()
        if queue["Properties"].get("SqsManagedSseEnabled") is not True
        and not queue["Properties"].get("KmsMasterKeyId")
    ]
    pitr = {"PointInTimeRecoveryEnabled": {"Ref": "PointInTimeRecovery"}}
    for name, table in of_type(template, "AWS::DynamoDB::Table").items():
        if table["Properties"].get("SSESpecification", {}).get("SSEEnabled") is not True:
            problems.append(
                f"{name}: SSESpecification {table['Properties'].get('SSESpecification')}"
            )
        if table["Properties"].get("PointInTimeRecoverySpecification") != pitr:
            spec = table["Properties"].get("PointInTimeRecoverySpecification")
            problems.append(f"{name}: PointInTimeRecoverySpecification {spec}")
    return problems


def bucket_problems(template: Template) -> list[str]:
    """Every bucket blocks all public access and encrypts at rest."""
    problems = []
    for name, bucket in of_type(template, "AWS::S3::Bucket").items():
        block = bucket["Properties"].get("PublicAccessBlockConfiguration", {})
        flags = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls")
        if not all(block.get(flag) is True for flag in (*flags, "RestrictPublicBuckets")):
            problems.append(f"{name}: public access not fully blocked: {block}")
        encryption = bucket["Properties"].get("BucketEncryption", {})
        rules = encryption.get("ServerSideEncryptionConfiguration", [])
        if not any(r.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules):
            problems.append(f"{name}: no default encryption")
    return problems


def output_problems(template: Template) -> list[str]:
    """Every output the local tooling and producers read exists."""
    return [f"missing output {name}" for name in sorted(OUTPUTS - set(template["Outputs"]))]


def environment_problems(template: Template) -> list[str]:
    """The function environment names every resource and setting the runtime reads."""
    variables = props(template, FUNCTION).get("Environment", {}).get("Variables", {})
    problems = [f"missing {name}" for name in ENVIRONMENT if name not in variables]
    problems += [
        f"{name} = {variables[name]!r}"
        for name, expected in ENVIRONMENT.items()
        if expected is not None and name in variables and variables[name] != expected
    ]
    reserved = ("AWS_REGION", "AWS_DEFAULT_REGION")  # Lambda sets them and refuses overrides
    problems += [f"reserved {name} is set" for name in reserved if name in variables]
    return problems


RULES: dict[str, Callable[[Template], list[str]]] = {
    "visibility": visibility_problems,
    "redrive": redrive_problems,
    "event-source": event_source_problems,
    "iam": iam_problems,
    "results-table": results_table_problems,
    "encryption": encryption_problems,
    "bucket": bucket_problems,
    "outputs": output_problems,
    "environment": environment_problems,
}


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
    "long-timeout": ("visibility", lambda t: props(t, FUNCTION).update(Timeout=121)),
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


# ------------------------------------------------------------------ lint and translation


def test_cfn_lint_reports_nothing() -> None:
    assert lint() == []


@pytest.mark.parametrize("worker_service", [False, True])
def test_cfn_lint_reports_nothing_on_the_translation(tmp_path: Path, worker_service: bool) -> None:
    # cfn-lint checks SAM resources against SAM's schemas without translating them: a !Ref in
    # Globals or in an SQS event's Queue is only followed in the translation.
    template = with_features_on(load_template()) if worker_service else load_template()

    assert lint(write_translation(tmp_path, template)) == []


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
    # BeatFunction (the scheduled tick) is checked in test_template_beat.py.
    assert set(of_type(translated, "AWS::Lambda::Function")) == {FUNCTION, "BeatFunction"}
    assert set(of_type(translated, "AWS::IAM::Role")) == {
        f"{FUNCTION}Role",
        "BeatFunctionRole",
        "WorkerTaskRole",  # the optional worker service (template/test_worker_service.py)
        "WorkerTaskExecutionRole",
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
        assert properties["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "MaximumConcurrency"}}
        assert properties["BatchSize"] == {"Ref": "BatchSize"}
        window = {"Ref": "MaximumBatchingWindowInSeconds"}
        assert properties["MaximumBatchingWindowInSeconds"] == window


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


def test_dead_letter_queues_allow_redrive_from_their_source_only(cfn: Template) -> None:
    for name, dlq, _ in MAIN_QUEUES.values():
        policy = props(cfn, dlq)["RedriveAllowPolicy"]

        assert policy["redrivePermission"] == "byQueue"
        (source,) = policy["sourceQueueArns"]
        assert source["Fn::Sub"].endswith(":${AWS::StackName}-" + name)
