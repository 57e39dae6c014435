"""The optional ECS Fargate worker service in template.yaml (WorkerService=true).

Off by default: every resource it adds is conditioned on HasWorkerService. On, it runs the image
Dockerfile builds with Dockerfile's own command plus the queue it serves, the function's
environment, and roles that name their resources. The Rules section is evaluated here as
CloudFormation would, so a missing image or an invalid Fargate size is refused before deploying.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from devtools.cloud.intrinsics import Scope, resolve
from devtools.cloud.template import TEMPLATE_PATH, load_template, translate

Template = dict[str, Any]

DOCKERFILE = TEMPLATE_PATH.parent / "Dockerfile"
CONDITION = "HasWorkerService"
SERVICE_RESOURCES = {
    "WorkerCluster": "AWS::ECS::Cluster",
    "WorkerEcsService": "AWS::ECS::Service",
    "WorkerTaskDefinition": "AWS::ECS::TaskDefinition",
    "WorkerTaskRole": "AWS::IAM::Role",
    "WorkerTaskExecutionRole": "AWS::IAM::Role",
    "WorkerLogGroup": "AWS::Logs::LogGroup",
    "WorkerTaskSecurityGroup": "AWS::EC2::SecurityGroup",
    "WorkerRunningTasksAlarm": "AWS::CloudWatch::Alarm",
}
SERVICE_OUTPUTS = {"WorkerClusterName", "WorkerServiceName", "WorkerLogGroupName"}
ALL_QUEUES = ["CeleryQueue", "LowPriorityQueue", "HighPriorityQueue", "LongQueue"]
# What the worker's code calls (kombu's SQS transport with predefined queues, infra.store.results,
# infra.store.claims, infra.store.ratelimit, infra.wire.offload, the example tasks): no ListQueues,
# GetQueueUrl or CreateQueue, no Query or Scan, no logs or X-Ray (ECS ships stdout; no traces are
# sent).
TASK_ROLE = {
    "ConsumeLongQueue": (
        {
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:GetQueueAttributes",
        },
        [{"Fn::GetAtt": ["LongQueue", "Arn"]}],
    ),
    "PublishTasks": (
        {"sqs:SendMessage", "sqs:GetQueueAttributes"},
        [{"Fn::GetAtt": [queue, "Arn"]} for queue in ALL_QUEUES],
    ),
    "ReadWriteResults": (
        {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:BatchGetItem",
            "dynamodb:ConditionCheckItem",
        },
        [{"Fn::GetAtt": ["ResultsTable", "Arn"]}],
    ),
    "ReadWriteUsers": (
        {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        [{"Fn::GetAtt": ["UsersTable", "Arn"]}],
    ),
    "ReadWriteLargePayloads": (
        {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"},
        [
            {"Fn::Sub": "${ResultsBucket.Arn}/results/*"},
            {"Fn::Sub": "${ResultsBucket.Arn}/payloads/*"},
        ],
    ),
    "WriteUploads": ({"s3:PutObject"}, [{"Fn::Sub": "${ResultsBucket.Arn}/uploads/*"}]),
}
EXECUTION_ROLE_ACTIONS = {
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerregistry.html
    "AuthenticateToEcr": {"ecr:GetAuthorizationToken"},
    "PullWorkerImage": {
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    },
    "WriteLogs": {"logs:CreateLogStream", "logs:PutLogEvents"},
}
# The CPU and memory pairings Fargate accepts, among WorkerMemory's values:
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size
FARGATE_MEMORY = {
    "256": (512, 1024, 2048),
    "512": range(1024, 4096 + 1, 1024),
    "1024": range(2048, 8192 + 1, 1024),
    "2048": range(4096, 16384 + 1, 1024),
    "4096": range(8192, 30720 + 1, 1024),
    "8192": range(16384, 61440 + 1, 4096),
    "16384": range(32768, 122880 + 1, 8192),
}
ON = {
    "WorkerService": "true",
    "WorkerImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/celery-worker:1.0",
    "WorkerVpcId": "vpc-0123456789abcdef0",
    "WorkerSubnets": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
}


@pytest.fixture(scope="module")
def sam() -> Template:
    return load_template()


@pytest.fixture(scope="module")
def cfn(sam: Template) -> Template:
    return translate(sam)


def props(template: Template, name: str) -> Template:
    properties: Template = template["Resources"][name]["Properties"]
    return properties


def statements(template: Template, role: str) -> dict[str, Template]:
    (policy,) = props(template, role)["Policies"]
    return {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def container(template: Template) -> Template:
    (worker,) = props(template, "WorkerTaskDefinition")["ContainerDefinitions"]
    return dict(worker)


def dockerfile() -> tuple[list[str], str, list[str]]:
    """Dockerfile's CMD (exec form), USER and ENTRYPOINT lines."""
    text = DOCKERFILE.read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    (user,) = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    return json.loads(cmd), user, re.findall(r"^ENTRYPOINT .*$", text, re.MULTILINE)


def scope(template: Template, **values: Any) -> Scope:
    parameters = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    parameters["WorkerSubnets"] = parameters["WorkerSubnets"].split(",")
    parameters.update({"AWS::Partition": "aws", "AWS::Region": "eu-west-1"})
    parameters.update({"AWS::AccountId": "123456789012", "AWS::NoValue": None})
    parameters.update(values)
    return Scope(parameters, conditions=template["Conditions"])


# ------------------------------------------------------------------ off by default


def test_the_service_is_a_parameter_off_by_default(sam: Template) -> None:
    parameter = sam["Parameters"]["WorkerService"]

    assert (parameter["Type"], parameter["Default"]) == ("String", "false")
    assert parameter["AllowedValues"] == ["false", "true"]
    assert sam["Conditions"][CONDITION] == {"Fn::Equals": [{"Ref": "WorkerService"}, "true"]}


def test_every_service_resource_and_output_is_conditioned(cfn: Template) -> None:
    conditioned = {
        name: resource["Type"]
        for name, resource in cfn["Resources"].items()
        if resource.get("Condition") == CONDITION
    }
    service_types = {
        name
        for name, resource in cfn["Resources"].items()
        if resource["Type"].startswith(("AWS::ECS::", "AWS::EC2::"))
        # The web dashboard's own (test_web_dashboard.py).
        and resource.get("Condition") != "HasWebDashboard"
    }

    assert conditioned == SERVICE_RESOURCES
    assert service_types <= set(conditioned)
    outputs = {
        name: output["Condition"]
        for name, output in cfn["Outputs"].items()
        if "Condition" in output
    }
    assert {
        name for name, condition in outputs.items() if condition == CONDITION
    } == SERVICE_OUTPUTS
    assert set(outputs.values()) == {CONDITION, "HasWebDashboard"}


def test_the_condition_holds_only_when_turned_on(sam: Template) -> None:
    assert scope(sam).condition(CONDITION) is False
    assert scope(sam, **ON).condition(CONDITION) is True


# ------------------------------------------------------------------ rules


def _rule_value(value: Any, values: dict[str, Any]) -> Any:
    """The rule-specific intrinsic functions, as CloudFormation evaluates an assertion."""
    if isinstance(value, list):
        return [_rule_value(v, values) for v in value]
    if not isinstance(value, dict):
        return value
    ((function, args),) = value.items()
    if function == "Ref":
        return values[args]
    args = _rule_value(args, values)
    functions = {
        "Fn::Equals": lambda a: a[0] == a[1],
        "Fn::Not": lambda a: not a[0],
        "Fn::Or": any,
        "Fn::And": all,
        "Fn::Contains": lambda a: a[1] in a[0],
        "Fn::EachMemberIn": lambda a: all(member in a[1] for member in a[0]),
    }
    return functions[function](args)


def refused(template: Template, **values: Any) -> list[str]:
    """The AssertDescription of every assertion the parameter values break."""
    parameters = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    parameters["WorkerSubnets"] = parameters["WorkerSubnets"].split(",")
    parameters.update(values)
    messages = []
    for rule in template["Rules"].values():
        if not _rule_value(rule.get("RuleCondition", True), parameters):
            continue
        for assertion in rule["Assertions"]:
            if not _rule_value(assertion["Assert"], parameters):
                messages.append(assertion["AssertDescription"])
    return messages


def test_rules_pass_the_defaults_and_a_complete_service(cfn: Template) -> None:
    assert refused(cfn) == []
    assert refused(cfn, **ON) == []


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"WorkerImage": ""}, "WorkerImage"),
        ({"WorkerVpcId": ""}, "WorkerVpcId"),
        ({"WorkerSubnets": [""]}, "WorkerSubnets"),
    ],
)
def test_turning_it_on_without_its_inputs_is_refused(
    cfn: Template, missing: dict[str, Any], named: str
) -> None:
    [message] = refused(cfn, **{**ON, **missing})

    assert message.startswith(f"WorkerService=true needs {named}")


def test_rules_accept_exactly_the_fargate_sizes(cfn: Template) -> None:
    cpus = cfn["Parameters"]["WorkerCpu"]["AllowedValues"]
    memories = cfn["Parameters"]["WorkerMemory"]["AllowedValues"]

    assert set(cpus) == set(FARGATE_MEMORY)
    for cpu in cpus:
        for memory in memories:
            valid = int(memory) in FARGATE_MEMORY[cpu]
            messages = refused(cfn, **ON, WorkerCpu=cpu, WorkerMemory=memory)
            assert (messages == []) == valid, (cpu, memory, messages)
            if not valid:
                assert messages == [m for m in messages if f"WorkerCpu {cpu}," in m]
    assert all(any(int(m) in FARGATE_MEMORY[cpu] for m in memories) for cpu in cpus)
    defaults = (
        cfn["Parameters"]["WorkerCpu"]["Default"],
        cfn["Parameters"]["WorkerMemory"]["Default"],
    )
    assert int(defaults[1]) in FARGATE_MEMORY[defaults[0]]


# ------------------------------------------------------------------ the container


def test_the_container_runs_dockerfiles_command_on_the_long_queue(cfn: Template) -> None:
    cmd, _, entrypoint = dockerfile()
    command = container(cfn)["Command"]

    assert entrypoint == []  # so Command is the whole command line
    assert cmd[:4] == ["celery", "-A", "tasks", "worker"]
    assert command[: len(cmd)] == cmd
    assert command[len(cmd) :] == [
        "--queues=long",
        {"Fn::Sub": "--concurrency=${WorkerConcurrency}"},
        "--prefetch-multiplier=1",
    ]


def test_the_container_runs_as_dockerfiles_user_on_a_read_only_root(cfn: Template) -> None:
    _, user, _ = dockerfile()
    worker = container(cfn)

    assert worker["User"] == user != "0"
    assert worker["ReadonlyRootFilesystem"] is True
    assert worker["MountPoints"] == [
        {"SourceVolume": "tmp", "ContainerPath": "/tmp", "ReadOnly": False}
    ]
    assert props(cfn, "WorkerTaskDefinition")["Volumes"] == [{"Name": "tmp"}]
    assert worker["LinuxParameters"] == {"InitProcessEnabled": True}
    assert worker["StopTimeout"] == 120  # Fargate's most, for celery's warm shutdown
    assert worker["Essential"] is True
    assert worker["Image"] == {"Ref": "WorkerImage"}


def test_the_environment_is_the_functions(cfn: Template) -> None:
    function = props(cfn, "WorkerFunction")["Environment"]["Variables"]
    worker = {item["Name"]: item["Value"] for item in container(cfn)["Environment"]}

    assert len(worker) == len(container(cfn)["Environment"])  # no name twice
    assert worker == {**function, "AWS_DEFAULT_REGION": {"Ref": "AWS::Region"}}


def test_logs_go_to_its_own_group_kept_like_the_functions(cfn: Template) -> None:
    options = container(cfn)["LogConfiguration"]
    group = cfn["Resources"]["WorkerLogGroup"]
    function_group = cfn["Resources"]["WorkerFunctionLogGroup"]

    assert options["LogDriver"] == "awslogs"
    assert options["Options"]["awslogs-group"] == {"Ref": "WorkerLogGroup"}
    assert options["Options"]["awslogs-region"] == {"Ref": "AWS::Region"}
    assert group["Properties"]["LogGroupName"] == {"Fn::Sub": "/ecs/${AWS::StackName}-worker"}
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
    assert group["Metadata"] == function_group["Metadata"]  # CloudWatch Logs' own encryption


def test_saved_queries_read_its_log_group_too_when_it_is_on(cfn: Template) -> None:
    queries = [r for r in cfn["Resources"].values() if r["Type"] == "AWS::Logs::QueryDefinition"]

    assert queries
    for query in queries:
        groups = query["Properties"]["LogGroupNames"]
        off = {"Ref": "WorkerFunctionLogGroup"}
        on = [off, {"Ref": "WorkerLogGroup"}]
        assert groups == {"Fn::If": [CONDITION, on, [off]]}


def test_the_task_is_fargate_sized_by_parameters(cfn: Template) -> None:
    definition = props(cfn, "WorkerTaskDefinition")

    assert definition["RequiresCompatibilities"] == ["FARGATE"]
    assert definition["NetworkMode"] == "awsvpc"
    assert (definition["Cpu"], definition["Memory"]) == (
        {"Ref": "WorkerCpu"},
        {"Ref": "WorkerMemory"},
    )
    assert definition["TaskRoleArn"] == {"Fn::GetAtt": ["WorkerTaskRole", "Arn"]}
    assert definition["ExecutionRoleArn"] == {"Fn::GetAtt": ["WorkerTaskExecutionRole", "Arn"]}


# ------------------------------------------------------------------ the service


def test_the_service_deploys_safely_without_a_public_ip_or_exec(cfn: Template) -> None:
    service = props(cfn, "WorkerEcsService")
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]

    assert service["LaunchType"] == "FARGATE"
    assert service["DesiredCount"] == {"Ref": "WorkerDesiredCount"}
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
        "Enable": True,
        "Rollback": True,
    }
    assert service["EnableExecuteCommand"] is False
    assert network["AssignPublicIp"] == {"Ref": "WorkerAssignPublicIp"}
    assert cfn["Parameters"]["WorkerAssignPublicIp"]["Default"] == "DISABLED"
    assert network["Subnets"] == {"Ref": "WorkerSubnets"}
    assert props(cfn, "WorkerCluster")["ClusterSettings"] == [
        {"Name": "containerInsights", "Value": "enabled"}
    ]


def test_list_parameters_accept_an_empty_default(cfn: Template) -> None:
    for name in ("WorkerSubnets", "WorkerSecurityGroups"):
        parameter = cfn["Parameters"][name]
        assert (parameter["Type"], parameter["Default"]) == ("CommaDelimitedList", "")
    assert cfn["Parameters"]["WorkerImage"]["Default"] == ""
    assert cfn["Parameters"]["WorkerVpcId"]["Default"] == ""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [(["sg-1"], ["sg-own", "sg-1"]), (["sg-1", "sg-2"], ["sg-own", "sg-1", "sg-2"]), ([""], None)],
)
def test_security_groups_are_its_own_plus_the_parameters(
    sam: Template, cfn: Template, extra: list[str], expected: list[str] | None
) -> None:
    groups = props(cfn, "WorkerEcsService")["NetworkConfiguration"]["AwsvpcConfiguration"]
    context = scope(sam, **ON, WorkerSecurityGroups=extra)
    context.refs["WorkerTaskSecurityGroup"] = "sg-own"

    assert resolve(groups["SecurityGroups"], context) == (expected or ["sg-own"])


def test_its_security_group_lets_nothing_in_and_only_https_out(cfn: Template) -> None:
    group = props(cfn, "WorkerTaskSecurityGroup")

    assert "SecurityGroupIngress" not in group
    assert [
        (r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in group["SecurityGroupEgress"]
    ] == [("tcp", 443, 443)]
    assert group["VpcId"] == {"Ref": "WorkerVpcId"}
    rule_types = {"AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"}
    assert not [r for r in cfn["Resources"].values() if r["Type"] in rule_types]


def test_lint_suppressions_are_only_the_default_resolution_warning(sam: Template) -> None:
    suppressed = {
        name: resource["Metadata"]["cfn-lint"]["config"]["ignore_checks"]
        for name, resource in sam["Resources"].items()
        if "cfn-lint" in resource.get("Metadata", {})
    }

    assert suppressed == {
        "WorkerEcsService": ["W1030"],
        "WorkerTaskSecurityGroup": ["W1030"],
        "WebDashboardService": ["W1030"],
        "WebDashboardSecurityGroup": ["W1030"],
    }


# ------------------------------------------------------------------ least privilege


def test_only_ecs_tasks_of_this_account_assume_its_roles(cfn: Template) -> None:
    for role in ("WorkerTaskRole", "WorkerTaskExecutionRole"):
        (trust,) = props(cfn, role)["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert trust["Condition"]["StringEquals"] == {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"}
        }
        assert "ManagedPolicyArns" not in props(cfn, role)


def test_the_task_role_grants_what_the_worker_calls_on_named_resources(cfn: Template) -> None:
    granted = {
        sid: (set(as_list(s["Action"])), as_list(s["Resource"]))
        for sid, s in statements(cfn, "WorkerTaskRole").items()
    }

    assert granted == TASK_ROLE
    assert all(s["Effect"] == "Allow" for s in statements(cfn, "WorkerTaskRole").values())


def test_the_task_role_consumes_only_the_queue_the_container_serves(cfn: Template) -> None:
    consume = statements(cfn, "WorkerTaskRole")["ConsumeLongQueue"]
    function_consumes = statements(cfn, "WorkerFunctionRole")["ConsumeQueues"]

    assert "--queues=long" in container(cfn)["Command"]
    assert as_list(consume["Resource"]) == [{"Fn::GetAtt": ["LongQueue", "Arn"]}]
    assert {"Fn::GetAtt": ["LongQueue", "Arn"]} not in function_consumes["Resource"]


def test_the_task_role_has_the_functions_grants_on_the_store(cfn: Template) -> None:
    worker = statements(cfn, "WorkerTaskRole")
    function = statements(cfn, "WorkerFunctionRole")

    for sid in ("ReadWriteUsers", "ReadWriteLargePayloads", "WriteUploads"):
        assert worker[sid] == function[sid], sid
    # Only the Lambda path writes a batch's outcomes together (infra/store/result_batch.py).
    batched = {**function["ReadWriteResults"]}
    batched["Action"] = [a for a in batched["Action"] if a != "dynamodb:BatchWriteItem"]
    assert "dynamodb:BatchWriteItem" in function["ReadWriteResults"]["Action"]
    assert worker["ReadWriteResults"] == batched


def test_the_execution_role_pulls_one_repository_and_writes_one_log_group(cfn: Template) -> None:
    granted = statements(cfn, "WorkerTaskExecutionRole")

    assert {sid: set(as_list(s["Action"])) for sid, s in granted.items()} == EXECUTION_ROLE_ACTIONS
    assert granted["AuthenticateToEcr"]["Resource"] == "*"  # no resource-level permissions
    assert granted["WriteLogs"]["Resource"] == {"Fn::GetAtt": ["WorkerLogGroup", "Arn"]}
    others = [s for sid, s in granted.items() if sid != "AuthenticateToEcr"]
    assert all("*" not in as_list(s["Resource"]) for s in others)


@pytest.mark.parametrize(
    ("partition", "image", "arn"),
    [
        (
            "aws",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/celery-worker:1.0",
            "arn:aws:ecr:eu-west-1:123456789012:repository/celery-worker",
        ),
        (
            "aws",
            "210987654321.dkr.ecr.us-east-2.amazonaws.com/team/app/worker@sha256:" + "a" * 64,
            "arn:aws:ecr:us-east-2:210987654321:repository/team/app/worker",
        ),
        (
            "aws-cn",
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/team/worker:v1.2.3",
            "arn:aws-cn:ecr:cn-north-1:123456789012:repository/team/worker",
        ),
    ],
)
def test_the_repository_arn_is_cut_out_of_the_image_uri(
    sam: Template, cfn: Template, partition: str, image: str, arn: str
) -> None:
    pull = statements(cfn, "WorkerTaskExecutionRole")["PullWorkerImage"]
    pattern = sam["Parameters"]["WorkerImage"]["AllowedPattern"]

    assert re.fullmatch(pattern, image)
    assert (
        resolve(pull["Resource"], scope(sam, WorkerImage=image, **{"AWS::Partition": partition}))
        == arn
    )


@pytest.mark.parametrize(
    "image",
    [
        "celery-worker:1.0",  # Docker Hub: the execution role pulls from ECR only
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/celery-worker",  # no tag or digest
        "ghcr.io/acme/worker:1.0",
    ],
)
def test_images_the_execution_role_cannot_pull_are_refused(sam: Template, image: str) -> None:
    assert not re.fullmatch(sam["Parameters"]["WorkerImage"]["AllowedPattern"], image)


# ------------------------------------------------------------------ the long queue


def test_the_long_queue_outlasts_lambda_and_only_workers_consume_it(cfn: Template) -> None:
    queue = props(cfn, "LongQueue")
    parameter = cfn["Parameters"]["LongQueueVisibilityTimeout"]
    sources = [
        m["Properties"]["EventSourceArn"]
        for m in cfn["Resources"].values()
        if m["Type"] == "AWS::Lambda::EventSourceMapping"
    ]

    assert queue["VisibilityTimeout"] == {"Ref": "LongQueueVisibilityTimeout"}
    assert 900 < parameter["Default"] <= parameter["MaxValue"] == 43200  # SQS's most: 12 h
    assert parameter["MinValue"] >= 900
    assert {"Fn::GetAtt": ["LongQueue", "Arn"]} not in sources
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["LongDeadLetterQueue", "Arn"]
    }


def test_functions_may_publish_to_the_long_queue(cfn: Template) -> None:
    long_arn = {"Fn::GetAtt": ["LongQueue", "Arn"]}
    for role, sid in (
        ("WorkerFunctionRole", "PublishTasks"),
        ("BeatFunctionRole", "PublishScheduledTasks"),
    ):
        statement = statements(cfn, role)[sid]
        assert long_arn in statement["Resource"], role
        # kombu reads a queue's attributes before its first publish to it.
        assert {"sqs:SendMessage", "sqs:GetQueueAttributes"} <= set(statement["Action"]), role


def test_turned_on_it_translates_and_keeps_the_function(sam: Template) -> None:
    on = copy.deepcopy(sam)
    on["Parameters"]["WorkerService"]["Default"] = "true"

    translated = translate(on)

    assert set(SERVICE_RESOURCES) <= set(translated["Resources"])
    assert "WorkerFunction" in translated["Resources"]


def test_the_readme_says_how_to_turn_it_on() -> None:
    readme = (TEMPLATE_PATH.parent / "README.md").read_text()

    assert "WorkerService=true" in readme
    for parameter in ("WorkerImage=", "WorkerVpcId=", "WorkerSubnets="):
        assert parameter in readme, parameter
    assert "docker build" in readme and "docker push" in readme


def test_dockerfile_is_where_the_template_says(sam: Template) -> None:
    assert Path(DOCKERFILE).is_file()
    assert "Dockerfile" in sam["Parameters"]["WorkerImage"]["Description"]


def test_the_image_installs_what_celery_worker_needs_on_sqs() -> None:
    """kombu's worker-side SQS client needs pycurl, which the engine alone does not install."""
    text = DOCKERFILE.read_text()
    (extras,) = re.findall(r'^ARG EXTRAS="(.*)"$', text, re.MULTILINE)
    assert re.search(r'pip install .*"\.\$\{EXTRAS\}"', text)
    pyproject = tomllib.loads((TEMPLATE_PATH.parent / "pyproject.toml").read_text())
    optional = pyproject["project"]["optional-dependencies"]
    assert extras == "[worker]" and "kombu[sqs]" in " ".join(optional["worker"])
    assert any("[worker]" in requirement for requirement in optional["cli"])  # dashboard image
