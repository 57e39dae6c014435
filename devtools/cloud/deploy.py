"""Create what ``template.yaml`` declares on a local endpoint (moto or LocalStack).

The template is translated by aws-sam-translator (so what is created is what CloudFormation would
create), then each queue, table and bucket is created in dependency order, idempotently: running
it twice changes nothing. The function, its event sources and IAM are cloud-only: locally the
event-source emulator plays the event source mapping, and the handler runs in-process. As in
CloudFormation, a resource or output whose Condition is false under the parameter values is left
out (the optional worker service, by default).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from devtools.cloud import template as tpl
from devtools.cloud.intrinsics import Scope, references, resolve
from infra.core import aws
from infra.core.errors import ConfigurationError
from infra.core.settings import Settings

__all__ = ["ACCOUNT_ID", "DEFAULT_STACK", "Deployment", "EventSource", "ScheduleSource", "deploy"]

DEFAULT_STACK = "celery-lambda"
ACCOUNT_ID = "123456789012"
"""moto's default account; used when the endpoint cannot say (LocalStack's is 000000000000)."""

CLOUD_ONLY = frozenset(
    {
        "AWS::Lambda::Function",
        "AWS::Lambda::EventSourceMapping",
        "AWS::Lambda::Permission",
        "AWS::Lambda::Version",
        "AWS::Lambda::Alias",
        "AWS::IAM::Role",
        "AWS::IAM::Policy",
        "AWS::IAM::ManagedPolicy",
        "AWS::Logs::LogGroup",
        "AWS::Logs::QueryDefinition",
        "AWS::SecretsManager::Secret",
        "AWS::CloudWatch::Alarm",
        "AWS::CloudWatch::Dashboard",
        "AWS::SNS::Topic",
        "AWS::SNS::Subscription",
        "AWS::SQS::QueuePolicy",
        "AWS::S3::BucketPolicy",
        "AWS::Events::Rule",
        "AWS::Scheduler::Schedule",
        "AWS::ECS::Cluster",
        "AWS::ECS::Service",
        "AWS::ECS::TaskDefinition",
        "AWS::EC2::SecurityGroup",
    }
)
"""Resource types that only make sense in the cloud; deploy-local skips them on purpose."""


@dataclass(frozen=True, slots=True)
class EventSource:
    """One SQS event source mapping of the template, as the event-source emulator plays it."""

    function: str
    handler: str
    queue_url: str
    queue_arn: str
    batch_size: int
    batching_window: int
    timeout: int
    report_batch_item_failures: bool
    memory_size: int = 128


@dataclass(frozen=True, slots=True)
class ScheduleSource:
    """One schedule of the template (EventBridge rule or Scheduler) that invokes a function."""

    function: str
    handler: str
    rule_arn: str
    expression: str
    timeout: int
    memory_size: int = 128


@dataclass(frozen=True, slots=True)
class Deployment:
    """What deploy-local created and the environment producers and consumers need."""

    stack_name: str
    region: str
    endpoint_url: str | None
    resources: Mapping[str, str]
    environment: Mapping[str, str]
    outputs: Mapping[str, Any]
    event_sources: tuple[EventSource, ...]
    schedules: tuple[ScheduleSource, ...] = ()

    def exports(self) -> str:
        """``export NAME=value`` lines for a shell."""
        return "\n".join(f"export {k}={_shell_quote(v)}" for k, v in self.environment.items())

    def to_json(self) -> str:
        """The deployment as JSON, for :meth:`from_json` in another process."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        """The deployment :meth:`to_json` wrote.

        Raises:
            ConfigurationError: not such a JSON document (another version wrote it, or it is cut).
        """
        try:
            fields = json.loads(text)
            return cls(
                **{
                    **fields,
                    "event_sources": tuple(EventSource(**e) for e in fields["event_sources"]),
                    "schedules": tuple(ScheduleSource(**e) for e in fields.get("schedules", ())),
                }
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(f"not a recorded deployment: {exc}") from exc


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _cfn_value(value: Any) -> str:
    """A CloudFormation property value as the string an AWS attribute API wants."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


_SQS_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "SqsManagedSseEnabled",
)


def _queue(name: str, props: Mapping[str, Any], ctx: _Context) -> None:
    qname = props.get("QueueName") or f"{ctx.stack}-{name}"
    attrs = {k: _cfn_value(props[k]) for k in _SQS_ATTRIBUTES if k in props}
    sqs = aws.client("sqs", ctx.settings)
    try:
        url = sqs.create_queue(QueueName=qname, Attributes=attrs)["QueueUrl"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        url = sqs.get_queue_url(QueueName=qname)["QueueUrl"]
        attrs.pop("FifoQueue", None)
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attrs)
    arn = f"arn:aws:sqs:{ctx.settings.region}:{ctx.account}:{qname}"
    ctx.created(name, url, Arn=arn, QueueUrl=url, QueueName=qname)


def _table(name: str, props: Mapping[str, Any], ctx: _Context) -> None:
    tname = props.get("TableName") or f"{ctx.stack}-{name}"
    ddb = aws.client("dynamodb", ctx.settings)
    keys = ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes", "LocalSecondaryIndexes")
    request: dict[str, Any] = {k: props[k] for k in keys if k in props}
    request["BillingMode"] = props.get("BillingMode", "PROVISIONED")
    if "ProvisionedThroughput" in props:
        request["ProvisionedThroughput"] = props["ProvisionedThroughput"]
    try:
        ddb.create_table(TableName=tname, **request)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    ddb.get_waiter("table_exists").wait(TableName=tname, WaiterConfig={"Delay": 0.2})
    ttl = props.get("TimeToLiveSpecification")
    current = ddb.describe_time_to_live(TableName=tname)["TimeToLiveDescription"]
    if ttl and ttl.get("Enabled") and current.get("TimeToLiveStatus") != "ENABLED":
        ddb.update_time_to_live(
            TableName=tname,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
    arn = f"arn:aws:dynamodb:{ctx.settings.region}:{ctx.account}:table/{tname}"
    ctx.created(name, tname, Arn=arn)


def _bucket(name: str, props: Mapping[str, Any], ctx: _Context) -> None:
    bname = props.get("BucketName") or f"{ctx.stack}-{name}".lower()
    s3 = aws.client("s3", ctx.settings)
    request: dict[str, Any] = {"Bucket": bname}
    if ctx.settings.region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": ctx.settings.region}
    try:
        s3.create_bucket(**request)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=bname, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    lifecycle = _lifecycle_rules(props.get("LifecycleConfiguration", {}).get("Rules", []))
    if lifecycle:
        s3.put_bucket_lifecycle_configuration(
            Bucket=bname, LifecycleConfiguration={"Rules": lifecycle}
        )
    arn = f"arn:aws:s3:::{bname}"
    ctx.created(name, bname, Arn=arn, DomainName=f"{bname}.s3.amazonaws.com")


def _lifecycle_rules(rules: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """CloudFormation's lifecycle rule shape → the S3 API's."""
    converted = []
    for i, rule in enumerate(rules):
        api: dict[str, Any] = {
            "ID": rule.get("Id", f"rule-{i}"),
            "Status": rule.get("Status", "Enabled"),
            "Filter": {"Prefix": rule.get("Prefix", "")},
        }
        if "ExpirationInDays" in rule:
            api["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
        if "AbortIncompleteMultipartUpload" in rule:
            days = rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
            api["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": int(days)}
        converted.append(api)
    return converted


_CREATORS: dict[str, Callable[[str, Mapping[str, Any], _Context], None]] = {
    "AWS::SQS::Queue": _queue,
    "AWS::DynamoDB::Table": _table,
    "AWS::S3::Bucket": _bucket,
}


@dataclass(slots=True)
class _Context:
    stack: str
    settings: Settings
    scope: Scope
    account: str = ACCOUNT_ID

    def created(self, name: str, physical_id: str, **attributes: str) -> None:
        self.scope.refs[name] = physical_id
        for attribute, value in attributes.items():
            self.scope.attributes[(name, attribute)] = value


def _account_id(settings: Settings) -> str:
    """The endpoint's account (STS GetCallerIdentity), for ARNs: moto's and LocalStack's default
    accounts differ, and a DLQ's RedriveAllowPolicy names its source queue by ARN."""
    try:
        return str(aws.client("sts", settings).get_caller_identity()["Account"])
    except (BotoCoreError, ClientError):
        return ACCOUNT_ID


def _default(spec: Mapping[str, Any]) -> Any:
    """A parameter's default as ``Ref`` gives it: list types as lists."""
    default = spec.get("Default")
    kind = str(spec.get("Type", ""))
    if isinstance(default, str) and (kind == "CommaDelimitedList" or kind.startswith("List<")):
        return default.split(",")
    return default


def _parameters(
    template: Mapping[str, Any], stack: str, settings: Settings, account: str = ACCOUNT_ID
) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: _default(spec) for name, spec in template.get("Parameters", {}).items()
    }
    values.update(
        {
            "AWS::StackName": stack,
            "AWS::Region": settings.region,
            "AWS::AccountId": account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }
    )
    return values


def _order(resources: Mapping[str, Any]) -> list[str]:
    graph = {
        name: references(spec.get("Properties", {})) & resources.keys()
        for name, spec in resources.items()
    }
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise ConfigurationError(
            f"template resources depend on each other in a cycle: {exc}"
        ) from exc


def _active(section: Mapping[str, Any], scope: Scope) -> dict[str, Any]:
    """The resources (or outputs) whose Condition, if any, holds."""
    return {
        name: spec
        for name, spec in section.items()
        if "Condition" not in spec or scope.condition(spec["Condition"])
    }


def _check_types(resources: Mapping[str, Any]) -> None:
    for name, spec in resources.items():
        kind = spec.get("Type")
        if kind not in _CREATORS and kind not in CLOUD_ONLY:
            raise ConfigurationError(
                f"resource {name} has type {kind}, which deploy-local cannot create "
                f"(it creates {', '.join(sorted(_CREATORS))})"
            )


def _placeholder(name: str, spec: Mapping[str, Any], ctx: _Context) -> None:
    """Cloud-only resources still resolve, to the names they would have in the stack."""
    physical = f"{ctx.stack}-{name}"
    service = str(spec.get("Type", "")).split("::")[1].lower()
    arn = f"arn:aws:{service}:{ctx.settings.region}:{ctx.account}:{physical}"
    ctx.created(name, physical, Arn=arn, Name=physical)  # GetAtt .Name: ECS services, secrets


def _function_environment(resources: Mapping[str, Any], scope: Scope) -> dict[str, str]:
    environment: dict[str, str] = {}
    for spec in resources.values():
        if spec.get("Type") == "AWS::Lambda::Function":
            variables = spec.get("Properties", {}).get("Environment", {}).get("Variables", {})
            environment.update({k: str(v) for k, v in resolve(variables, scope).items()})
    return environment


def _event_sources(resources: Mapping[str, Any], scope: Scope) -> tuple[EventSource, ...]:
    arn_to_url = {
        v: scope.attributes[(name, "QueueUrl")]
        for (name, attr), v in scope.attributes.items()
        if attr == "Arn" and (name, "QueueUrl") in scope.attributes
    }
    sources = []
    for spec in resources.values():
        if spec.get("Type") != "AWS::Lambda::EventSourceMapping":
            continue
        props = resolve(spec["Properties"], scope)
        if props.get("EventSourceArn") not in arn_to_url:
            continue  # not an SQS queue of this template (streams, Kafka, ...)
        (function,) = references(spec["Properties"]["FunctionName"])
        fprops = resolve(resources[function]["Properties"], scope)
        sources.append(
            EventSource(
                function=function,
                handler=fprops["Handler"],
                queue_url=arn_to_url[props["EventSourceArn"]],
                queue_arn=props["EventSourceArn"],
                batch_size=int(props.get("BatchSize", 10)),
                batching_window=int(props.get("MaximumBatchingWindowInSeconds", 0)),
                timeout=int(fprops.get("Timeout", 3)),
                report_batch_item_failures="ReportBatchItemFailures"
                in props.get("FunctionResponseTypes", []),
                memory_size=int(fprops.get("MemorySize", 128)),
            )
        )
    return tuple(sources)


_SCHEDULES = {"AWS::Events::Rule": "Targets", "AWS::Scheduler::Schedule": "Target"}


def _schedules(
    resources: Mapping[str, Any], scope: Scope, stack: str, region: str, account: str = ACCOUNT_ID
) -> tuple[ScheduleSource, ...]:
    """The schedules that invoke a function of the template (played locally by a direct call)."""
    found = []
    for name, spec in resources.items():
        targets = spec.get("Properties", {}).get(_SCHEDULES.get(spec.get("Type"), ""))
        expression = spec.get("Properties", {}).get("ScheduleExpression")
        if not targets or not expression:
            continue
        for target in targets if isinstance(targets, list) else [targets]:
            functions = references(target.get("Arn")) & resources.keys()
            for function in sorted(functions):
                if resources[function].get("Type") != "AWS::Lambda::Function":
                    continue
                fprops = resolve(resources[function]["Properties"], scope)
                found.append(
                    ScheduleSource(
                        function=function,
                        handler=fprops["Handler"],
                        rule_arn=f"arn:aws:events:{region}:{account}:rule/{stack}-{name}",
                        expression=str(resolve(expression, scope)),
                        timeout=int(fprops.get("Timeout", 3)),
                        memory_size=int(fprops.get("MemorySize", 128)),
                    )
                )
    return tuple(found)


def deploy(
    settings: Settings | None = None,
    *,
    stack_name: str = DEFAULT_STACK,
    template_path: Path | None = None,
    parameter_values: Mapping[str, Any] | None = None,
) -> Deployment:
    """Create the template's queues, tables and buckets on ``settings``' endpoint.

    Raises:
        ConfigurationError: the template is invalid, declares a resource type that cannot be
            created locally, or the endpoint cannot be reached.
    """
    settings = settings or Settings.from_env()
    template = tpl.load_template(template_path) if template_path else tpl.load_template()
    translated = tpl.translate(
        template, region=settings.region, parameter_values=parameter_values or {}
    )
    account = _account_id(settings)
    parameters = _parameters(translated, stack_name, settings, account)
    parameters.update(parameter_values or {})
    ctx = _Context(
        stack_name,
        settings,
        Scope(parameters, conditions=translated.get("Conditions", {})),
        account,
    )
    resources = _active(translated.get("Resources", {}), ctx.scope)
    _check_types(resources)
    try:
        for name in _order(resources):
            spec = resources[name]
            creator = _CREATORS.get(spec["Type"])
            if creator is None:
                _placeholder(name, spec, ctx)
            else:
                creator(name, resolve(spec.get("Properties", {}), ctx.scope), ctx)
    except (BotoCoreError, ClientError) as exc:
        where = settings.endpoint_url or "AWS"
        raise ConfigurationError(f"cannot create resources on {where}: {exc}") from exc
    return Deployment(
        stack_name=stack_name,
        region=settings.region,
        endpoint_url=settings.endpoint_url,
        resources=dict(ctx.scope.refs),
        environment=_environment(settings, _function_environment(resources, ctx.scope)),
        outputs={
            k: resolve(v.get("Value"), ctx.scope)
            for k, v in _active(translated.get("Outputs", {}), ctx.scope).items()
        },
        event_sources=_event_sources(resources, ctx.scope),
        schedules=_schedules(resources, ctx.scope, stack_name, settings.region, account),
    )


def _environment(settings: Settings, function_env: Mapping[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    if settings.endpoint_url:
        env["AWS_ENDPOINT_URL"] = settings.endpoint_url
    for service, url in sorted(settings.service_endpoints.items()):
        env[f"AWS_ENDPOINT_URL_{service.upper()}"] = url  # e.g. DynamoDB Local beside LocalStack
    env["AWS_DEFAULT_REGION"] = settings.region
    env.update(function_env)
    return env
