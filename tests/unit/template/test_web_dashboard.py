"""The optional web dashboard in template.yaml (WebDashboard=true), read-only unless told.

Off by default: every resource it adds is conditioned on HasWebDashboard, and its actions' policy
on WebDashboardActs. On, one Fargate task runs ``celery -A tasks lambda dashboard`` on loopback
with no public IP, no load balancer and nothing let in, ECS Exec (port forwarding) as the way in,
the token from a Secrets Manager secret the stack generates, and roles that grant exactly the
calls the dashboard makes (the same list is checked against the requests it makes on the emulator
in tests/functional/devtools/test_dashboard_role.py).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from devtools.checks.checkov import write_translation
from devtools.cli import lambda_
from devtools.cloud.deploy import _active, _check_types
from devtools.cloud.intrinsics import resolve
from devtools.cloud.template import TEMPLATE_PATH, lint, load_template, translate
from devtools.dashboard.server import LOOPBACK, TOKEN_VARIABLE
from tests.unit.template.test_worker_service import (
    as_list,
    dockerfile,
    props,
    refused,
    scope,
    statements,
)

Template = dict[str, Any]

CONDITION = "HasWebDashboard"
ACTS = "WebDashboardActs"
RESOURCES = {
    "WebDashboardCluster": "AWS::ECS::Cluster",
    "WebDashboardService": "AWS::ECS::Service",
    "WebDashboardTaskDefinition": "AWS::ECS::TaskDefinition",
    "WebDashboardToken": "AWS::SecretsManager::Secret",
    "WebDashboardTaskRole": "AWS::IAM::Role",
    "WebDashboardTaskExecutionRole": "AWS::IAM::Role",
    "WebDashboardLogGroup": "AWS::Logs::LogGroup",
    "WebDashboardSecurityGroup": "AWS::EC2::SecurityGroup",
}
OUTPUTS = {"WebDashboardClusterName", "WebDashboardServiceName", "WebDashboardTokenSecret"}
SOURCES = ["CeleryQueue", "LowPriorityQueue", "HighPriorityQueue", "LongQueue"]
DLQS = [
    "CeleryDeadLetterQueue",
    "LowPriorityDeadLetterQueue",
    "HighPriorityDeadLetterQueue",
    "LongDeadLetterQueue",
]
ALL_QUEUES = [q for pair in zip(SOURCES, DLQS, strict=True) for q in pair]
TABLE = [{"Fn::GetAtt": ["ResultsTable", "Arn"]}]
# What devtools/dashboard/sources.py calls through devtools/ops (tasks.py, ids.py, queues.py,
# dlq.py, stats.py, schedule.py -> infra/beat/state.py, the app's backend for large results): no
# Scan, no ListQueues, no S3 writes nor message bodies (a DLQ's offloaded body is named, not
# fetched), no CloudFormation (names come from the environment).
TASK_ROLE = {
    "ReadResults": ({"dynamodb:GetItem", "dynamodb:BatchGetItem"}, TABLE),
    "QueryResultIndexes": ({"dynamodb:Query"}, [{"Fn::Sub": "${ResultsTable.Arn}/index/*"}]),
    "ReadLargeResults": ({"s3:GetObject"}, [{"Fn::Sub": "${ResultsBucket.Arn}/results/*"}]),
    "ReadQueueAttributes": (
        {"sqs:GetQueueAttributes"},
        [{"Fn::GetAtt": [q, "Arn"]} for q in ALL_QUEUES],
    ),
    "PeekDeadLetters": (
        {"sqs:ReceiveMessage", "sqs:ChangeMessageVisibility"},
        [{"Fn::GetAtt": [q, "Arn"]} for q in DLQS],
    ),
    "ReadMetrics": ({"cloudwatch:GetMetricStatistics"}, ["*"]),
    "OpenExecChannels": (
        {
            "ssmmessages:CreateControlChannel",
            "ssmmessages:CreateDataChannel",
            "ssmmessages:OpenControlChannel",
            "ssmmessages:OpenDataChannel",
        },
        ["*"],
    ),
}
# Revoke (infra/store/claims.py), redrive and purge (devtools/ops/redrive.py).
ACTIONS_POLICY = {
    "RedriveDeadLetters": (
        {"sqs:DeleteMessage", "sqs:PurgeQueue"},
        [{"Fn::GetAtt": [q, "Arn"]} for q in DLQS],
    ),
    "SendRedriven": ({"sqs:SendMessage"}, [{"Fn::GetAtt": [q, "Arn"]} for q in SOURCES]),
    "RevokeTasks": ({"dynamodb:PutItem", "dynamodb:UpdateItem"}, TABLE),
}
WRITES = {action for actions, _ in ACTIONS_POLICY.values() for action in actions}
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/celery-dashboard:1.0"
ON = {
    "WebDashboard": "true",
    "WebDashboardImage": IMAGE,
    "WorkerVpcId": "vpc-0123456789abcdef0",
    "WorkerSubnets": ["subnet-0123456789abcdef0"],
}


@pytest.fixture(scope="module")
def sam() -> Template:
    return load_template()


@pytest.fixture(scope="module")
def cfn(sam: Template) -> Template:
    return translate(sam)


def granted(statements_by_sid: dict[str, Template]) -> dict[str, tuple[set[str], list[Any]]]:
    return {
        sid: (set(as_list(s["Action"])), as_list(s["Resource"]))
        for sid, s in statements_by_sid.items()
    }


def actions_policy(template: Template) -> dict[str, Template]:
    document = props(template, "WebDashboardActionsPolicy")["PolicyDocument"]
    return {s["Sid"]: s for s in document["Statement"]}


def container(template: Template) -> Template:
    (dashboard,) = props(template, "WebDashboardTaskDefinition")["ContainerDefinitions"]
    return dict(dashboard)


def command(template: Template, **values: Any) -> list[str]:
    """The container's command line as deployed with these parameter values."""
    return [
        arg for arg in resolve(container(template)["Command"], scope(template, **values)) if arg
    ]


# ------------------------------------------------------------------ off by default


def test_the_dashboard_is_off_and_read_only_by_default(sam: Template) -> None:
    parameters = sam["Parameters"]

    assert (
        parameters["WebDashboard"]["Default"],
        parameters["WebDashboardReadOnly"]["Default"],
    ) == (
        "false",
        "true",
    )
    assert scope(sam).condition(CONDITION) is False
    assert scope(sam, **ON).condition(CONDITION) is True
    assert scope(sam, **ON).condition(ACTS) is False
    assert scope(sam, **ON, WebDashboardReadOnly="false").condition(ACTS) is True
    assert scope(sam, WebDashboardReadOnly="false").condition(ACTS) is False


def test_every_dashboard_resource_and_output_is_conditioned(cfn: Template) -> None:
    conditioned = {
        name: resource["Type"]
        for name, resource in cfn["Resources"].items()
        if resource.get("Condition") == CONDITION
    }
    outputs = {n for n, o in cfn["Outputs"].items() if o.get("Condition") == CONDITION}

    assert conditioned == RESOURCES
    assert cfn["Resources"]["WebDashboardActionsPolicy"]["Condition"] == ACTS
    assert outputs == OUTPUTS


@pytest.mark.parametrize(
    ("values", "kept"),
    [
        ({}, set()),
        (ON, set(RESOURCES)),
        ({**ON, "WebDashboardReadOnly": "false"}, {*RESOURCES, "WebDashboardActionsPolicy"}),
    ],
)
def test_deploy_local_keeps_what_cloudformation_would_and_can_skip_it(
    cfn: Template, values: dict[str, Any], kept: set[str]
) -> None:
    active = _active(cfn["Resources"], scope(cfn, **values))

    assert {name for name in active if name.startswith("WebDashboard")} == kept
    _check_types(active)  # every kept type is one deploy-local creates or skips as cloud-only


# ------------------------------------------------------------------ rules


def test_rules_pass_the_defaults_and_a_complete_dashboard(cfn: Template) -> None:
    assert refused(cfn) == []
    assert refused(cfn, **ON) == []


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"WebDashboardImage": ""}, "WebDashboardImage"),
        ({"WorkerVpcId": ""}, "WorkerVpcId"),
        ({"WorkerSubnets": [""]}, "WorkerSubnets"),
    ],
)
def test_turning_it_on_without_its_inputs_is_refused(
    cfn: Template, missing: dict[str, Any], named: str
) -> None:
    [message] = refused(cfn, **{**ON, **missing})

    assert message.startswith(f"WebDashboard=true needs {named}")


# ------------------------------------------------------------------ the container


def test_it_runs_the_dashboard_command_read_only_unless_told(cfn: Template) -> None:
    dashboard = ["celery", "-A", "tasks", "lambda", "dashboard", "--port=5555"]

    assert command(cfn, **ON) == [*dashboard, "--read-only"]
    assert command(cfn, **ON, WebDashboardReadOnly="false") == dashboard
    assert command(cfn, **ON)[:3] == dockerfile()[0][:3]  # Dockerfile's celery -A tasks


def test_it_listens_on_the_tasks_loopback_only(cfn: Template) -> None:
    (option,) = [p for p in lambda_.commands["dashboard"].params if p.name == "host"]

    assert not [arg for arg in command(cfn, **ON) if str(arg).startswith("--host")]
    assert option.default in LOOPBACK
    assert "PortMappings" not in container(cfn)


def test_the_token_comes_from_the_stacks_secret_never_from_the_task_definition(
    cfn: Template,
) -> None:
    dashboard = container(cfn)
    secret = props(cfn, "WebDashboardToken")["GenerateSecretString"]

    assert dashboard["Secrets"] == [
        {"Name": TOKEN_VARIABLE, "ValueFrom": {"Ref": "WebDashboardToken"}}
    ]
    assert TOKEN_VARIABLE not in {item["Name"] for item in dashboard["Environment"]}
    assert not [arg for arg in command(cfn, **ON) if "token" in str(arg)]
    # Long, and safe in a URL's query as it is.
    assert secret["PasswordLength"] >= 32 and secret["ExcludePunctuation"] is True


def test_its_environment_is_the_functions_and_it_runs_as_dockerfiles_user(cfn: Template) -> None:
    function = props(cfn, "WorkerFunction")["Environment"]["Variables"]
    dashboard = container(cfn)
    environment = {item["Name"]: item["Value"] for item in dashboard["Environment"]}

    assert environment == {**function, "AWS_DEFAULT_REGION": {"Ref": "AWS::Region"}}
    assert dashboard["User"] == dockerfile()[1] != "0"
    assert dashboard["Image"] == {"Ref": "WebDashboardImage"}
    assert dashboard["LogConfiguration"]["Options"]["awslogs-group"] == {
        "Ref": "WebDashboardLogGroup"
    }


# ------------------------------------------------------------------ reaching it


def test_the_service_has_no_public_ip_no_load_balancer_and_exec_on(cfn: Template) -> None:
    service = props(cfn, "WebDashboardService")
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]

    assert service["DesiredCount"] == 1
    assert service["EnableExecuteCommand"] is True
    assert "LoadBalancers" not in service and "ServiceConnectConfiguration" not in service
    assert network["AssignPublicIp"] == "DISABLED"
    assert network["SecurityGroups"] == [{"Ref": "WebDashboardSecurityGroup"}]
    assert network["Subnets"] == {"Ref": "WorkerSubnets"}
    assert service["Cluster"] == {"Ref": "WebDashboardCluster"}  # no worker shares its exec grant


def test_its_security_group_lets_nothing_in(cfn: Template) -> None:
    group = props(cfn, "WebDashboardSecurityGroup")
    rules = [
        r
        for r in cfn["Resources"].values()
        if r["Type"] in {"AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"}
    ]

    assert "SecurityGroupIngress" not in group
    assert [
        (r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in group["SecurityGroupEgress"]
    ] == [("tcp", 443, 443)]
    assert rules == []


# ------------------------------------------------------------------ least privilege


def test_the_task_role_grants_what_the_dashboard_reads_on_named_resources(cfn: Template) -> None:
    role = statements(cfn, "WebDashboardTaskRole")

    assert granted(role) == TASK_ROLE
    assert all(s["Effect"] == "Allow" for s in role.values())
    assert not {a for actions, _ in granted(role).values() for a in actions} & WRITES


def test_the_actions_are_a_policy_of_their_own_on_the_task_role(cfn: Template) -> None:
    policy = props(cfn, "WebDashboardActionsPolicy")

    assert granted(actions_policy(cfn)) == ACTIONS_POLICY
    assert policy["Roles"] == [{"Ref": "WebDashboardTaskRole"}]
    assert all(s["Effect"] == "Allow" for s in actions_policy(cfn).values())


def test_only_ecs_tasks_of_this_account_assume_its_roles(cfn: Template) -> None:
    for role in ("WebDashboardTaskRole", "WebDashboardTaskExecutionRole"):
        (trust,) = props(cfn, role)["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert trust["Condition"]["StringEquals"] == {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"}
        }
        assert "ManagedPolicyArns" not in props(cfn, role)


def test_the_execution_role_reads_only_the_token_and_pulls_only_its_image(
    sam: Template, cfn: Template
) -> None:
    start = statements(cfn, "WebDashboardTaskExecutionRole")
    pull = resolve(start["PullDashboardImage"]["Resource"], scope(sam, WebDashboardImage=IMAGE))

    assert {sid: set(as_list(s["Action"])) for sid, s in start.items()} == {
        "AuthenticateToEcr": {"ecr:GetAuthorizationToken"},
        "PullDashboardImage": {
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
        },
        "ReadToken": {"secretsmanager:GetSecretValue"},
        "WriteLogs": {"logs:CreateLogStream", "logs:PutLogEvents"},
    }
    assert start["ReadToken"]["Resource"] == {"Ref": "WebDashboardToken"}
    assert start["WriteLogs"]["Resource"] == {"Fn::GetAtt": ["WebDashboardLogGroup", "Arn"]}
    assert pull == "arn:aws:ecr:eu-west-1:123456789012:repository/celery-dashboard"
    assert re.fullmatch(sam["Parameters"]["WebDashboardImage"]["AllowedPattern"], IMAGE)


# ------------------------------------------------------------------ the whole template


@pytest.mark.tools
def test_on_without_the_worker_service_it_translates_and_lints_clean(
    sam: Template, tmp_path: Path
) -> None:
    on = copy.deepcopy(sam)
    for name, value in {"WebDashboard": "true", "WebDashboardReadOnly": "false"}.items():
        on["Parameters"][name]["Default"] = value

    assert lint(write_translation(tmp_path, on)) == []
    assert {*RESOURCES, "WebDashboardActionsPolicy"} <= set(translate(on)["Resources"])


def test_the_readme_says_how_to_turn_it_on_and_reach_it() -> None:
    readme = (TEMPLATE_PATH.parent / "README.md").read_text()

    for text in (
        "WebDashboard=true",
        "WebDashboardImage=",
        "WebDashboardReadOnly=false",
        "--build-arg EXTRAS=[cli]",
        "AWS-StartPortForwardingSession",
        "secretsmanager get-secret-value",
    ):
        assert text in readme, text
