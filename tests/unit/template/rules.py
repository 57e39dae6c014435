"""The rules template.yaml keeps for the runtime, each a function returning its violations, and
the helpers that read a translated template (what CloudFormation deploys).

Each function has a role of its own written in the template, not one SAM generates: for SQS
events SAM's role carries AWSLambdaSQSQueueExecutionRole (sqs:ReceiveMessage and DeleteMessage on
``*``, every queue of the account) and AWSLambdaBasicExecutionRole (logs to every log group). So
no managed policy is allowed, and every Allow names its resources except X-Ray's actions and
ECR's GetAuthorizationToken (the optional worker service's execution role), which have no
resource-level permissions.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from infra.core.limits import VISIBILITY_TIMEOUT_FACTOR
from infra.store.items import INDEX_BY_ID, INDEX_BY_STATUS, INDEX_BY_TASK, INDEX_BY_TIME

__all__ = [
    "FUNCTION",
    "LAMBDA_QUEUES",
    "MAIN_QUEUES",
    "RULES",
    "Template",
    "esms",
    "getatt_target",
    "of_type",
    "props",
]

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
    {
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "ecr:GetAuthorizationToken",
        # The web dashboard's metric reads and ECS Exec's channels (no resource types:
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html,
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsessionmanagermessagegatewayservice.html).
        "cloudwatch:GetMetricStatistics",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
    }
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
    "task_id": "S",
}
RESULTS_INDEXES = {INDEX_BY_STATUS: "status", INDEX_BY_TASK: "task_name", INDEX_BY_TIME: "kind"}
SQS_DEFAULT_VISIBILITY = 30
SQS_DEFAULT_RETENTION = 345_600
LAMBDA_DEFAULT_TIMEOUT = 3

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
    """Queues consumed by a function must hide a message for 6 x the function timeout plus the
    batching window (the window runs while the first records received are already hidden)."""
    problems = []
    for name, esm in esms(template).items():
        window = esm["Properties"].get("MaximumBatchingWindowInSeconds", 0)
        if isinstance(window, dict):  # a Ref to a parameter: its default
            window = template["Parameters"][window["Ref"]]["Default"]
        queue = getatt_target(esm["Properties"]["EventSourceArn"]) or ""
        function = esm["Properties"]["FunctionName"].get("Ref")
        if queue not in template["Resources"] or function not in template["Resources"]:
            problems.append(f"{name}: cannot resolve its queue or function")
            continue
        timeout = props(template, function).get("Timeout", LAMBDA_DEFAULT_TIMEOUT)
        visibility = props(template, queue).get("VisibilityTimeout", SQS_DEFAULT_VISIBILITY)
        if visibility < VISIBILITY_TIMEOUT_FACTOR * timeout + window:
            problems.append(f"{queue}: VisibilityTimeout {visibility} < 6 x {timeout} + {window}")
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
    by_id = indexes.get(INDEX_BY_ID, {})
    id_keys = [
        {"AttributeName": "kind", "KeyType": "HASH"},
        {"AttributeName": "task_id", "KeyType": "RANGE"},
    ]
    # Keys only: its entry is then written once per task, not on every state write.
    if (by_id.get("KeySchema"), by_id.get("Projection")) != (
        id_keys,
        {"ProjectionType": "KEYS_ONLY"},
    ):
        problems.append(f"index {INDEX_BY_ID}: {by_id}")
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
