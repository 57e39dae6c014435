"""``celery -A tasks lambda doctor``: does template.yaml fit the app it deploys?

Each check reads the SAM-translated template, the parameter values it would be deployed with
(defaults, then samconfig.toml's and the command line's overrides) and the Celery app, and reports
a problem with the fix. The checks are pure (a translated template dict, overrides and an app in,
findings out) so that each one is proven to fire on a template or a value broken on purpose. The
event sources' batching and scaling checks live in :mod:`devtools.checks.scaling`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from devtools.checks.findings import Finding
from devtools.checks.parameters import Values, samconfig_overrides
from devtools.checks.scaling import check_event_source
from devtools.cloud.template import load_template, translate

__all__ = ["Finding", "diagnose", "doctor_main"]

_REFERENCE = re.compile(r"\$\{(\w+)\}")
WORKER = "WorkerFunction"


def _resources(template: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return {n: r for n, r in template["Resources"].items() if r.get("Type") == kind}


def _arn_target(value: Any) -> str | None:
    """The logical id an ``Fn::GetAtt [X, Arn]`` names."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return str(value["Fn::GetAtt"][0])
    return None


def _queue_names(function: Mapping[str, Any]) -> dict[str, str]:
    """Celery queue name → queue logical id, from the function's CELERY_QUEUE_URLS."""
    variables = function["Properties"].get("Environment", {}).get("Variables", {})
    raw = variables.get("CELERY_QUEUE_URLS", {})
    text = raw.get("Fn::Sub", "{}") if isinstance(raw, dict) else raw
    names: dict[str, str] = {}
    for name, url in json.loads(text).items():
        found = _REFERENCE.search(url)
        if found:
            names[name] = found.group(1)
    return names


def _routed(app: Any) -> set[str]:
    conf = app.conf
    queues = {conf.task_default_queue} | {q.name for q in conf.task_queues or ()}
    for route in (conf.task_routes or {}).values() if isinstance(conf.task_routes, dict) else ():
        queues.add(route["queue"] if isinstance(route, dict) else route)
    for task in app.tasks.values():
        if getattr(task, "queue", None):
            queues.add(task.queue)
    return queues


def _queues_option(command: list[Any]) -> set[str]:
    """The queues a ``celery worker`` command line names with ``-Q``/``--queues``."""
    found: set[str] = set()
    for i, arg in enumerate(command):
        if not isinstance(arg, str):
            continue
        value: Any = None
        if arg in ("-Q", "--queues") and i + 1 < len(command):
            value = command[i + 1]
        elif arg.startswith("--queues="):
            value = arg.removeprefix("--queues=")
        elif arg.startswith("-Q") and len(arg) > 2:
            value = arg[2:]
        if isinstance(value, str):
            found |= {queue.strip() for queue in value.split(",") if queue.strip()}
    return found


def _worker_queues(template: Mapping[str, Any]) -> set[str]:
    """Celery queue names the template's ECS workers consume (their command's ``-Q``)."""
    queues: set[str] = set()
    for definition in _resources(template, "AWS::ECS::TaskDefinition").values():
        for container in definition["Properties"].get("ContainerDefinitions", []):
            queues |= _queues_option(container.get("Command") or [])
    return queues


def _queue_of(app: Any, task: Any) -> str:
    """The queue a task is published to without options: its own, its route, or the default."""
    if getattr(task, "queue", None):
        return str(task.queue)
    queue = app.amqp.router.route({}, task.name).get("queue")
    return str(getattr(queue, "name", queue) or app.conf.task_default_queue)


def _consumed(template: Mapping[str, Any]) -> dict[str, Any]:
    """Queue logical id → the event source mapping that feeds it to the worker function."""
    mappings = _resources(template, "AWS::Lambda::EventSourceMapping")
    return {
        str(_arn_target(m["Properties"].get("EventSourceArn"))): m
        for m in mappings.values()
        if m["Properties"].get("FunctionName", {}).get("Ref") == WORKER
    }


def _sendable(template: Mapping[str, Any]) -> set[str]:
    """Queue logical ids the worker function's role may SendMessage to."""
    role = template["Resources"].get(f"{WORKER}Role", {})
    allowed: set[str] = set()
    for policy in role.get("Properties", {}).get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            if statement.get("Effect") != "Allow" or not {"sqs:SendMessage", "sqs:*"} & set(
                actions
            ):
                continue
            resources = statement.get("Resource", [])
            for resource in resources if isinstance(resources, list) else [resources]:
                target = _arn_target(resource)
                if target:
                    allowed.add(target)
    return allowed


def _check_consumers(template: Mapping[str, Any], app: Any) -> Iterator[Finding]:
    function = template["Resources"][WORKER]
    names = _queue_names(function)
    consumed = _consumed(template)
    workers = _worker_queues(template)
    for queue in sorted(_routed(app)):
        logical = names.get(queue)
        if logical is None:
            yield Finding(
                "error",
                f"queue {queue!r}",
                "tasks are routed to it but the template does not declare it",
                "add the queue (with its DLQ and an SQS event on WorkerFunction) to template.yaml "
                "and to the function's CELERY_QUEUE_URLS",
            )
        elif logical not in consumed and queue not in workers:
            yield Finding(
                "warning",
                f"queue {queue!r}",
                "no event source feeds it to the function: only workers consume it",
                "add an SQS event on WorkerFunction, or run workers with -Q " + queue,
            )
    sendable = _sendable(template)
    for queue, logical in sorted(names.items()):
        if logical not in sendable:
            yield Finding(
                "error",
                f"queue {queue!r}",
                "the function may not sqs:SendMessage to it (retries, chains, callbacks publish)",
                f"allow sqs:SendMessage on !GetAtt {logical}.Arn in WorkerFunction's policy",
            )


def _check_overrides(values: Values) -> Iterator[Finding]:
    for name in values.unknown:
        yield Finding(
            "error",
            f"parameter {name}",
            "overridden but not a parameter of template.yaml: CloudFormation refuses the deploy",
            "correct the name in samconfig.toml's parameter_overrides or --parameter-overrides",
        )


def _check_mappings(template: Mapping[str, Any], values: Values) -> Iterator[Finding]:
    timeout = int(template["Resources"][WORKER]["Properties"].get("Timeout", 3))
    queues = _resources(template, "AWS::SQS::Queue")
    for logical, mapping in sorted(_consumed(template).items()):
        props = mapping["Properties"]
        if "ReportBatchItemFailures" not in props.get("FunctionResponseTypes", []):
            yield Finding(
                "error",
                logical,
                "the event source lacks ReportBatchItemFailures: one failed record fails the batch",
                "add FunctionResponseTypes: [ReportBatchItemFailures] to the SQS event",
            )
        queue = queues.get(logical, {}).get("Properties", {})
        yield from check_event_source(logical, mapping, queue, timeout, values)
        redrive = queue.get("RedrivePolicy") or {}
        if not redrive:
            yield Finding(
                "error",
                logical,
                "no dead-letter queue: a poison message is retried until retention ends",
                "add a RedrivePolicy with a DLQ and maxReceiveCount",
            )
        elif int(values.evaluate(redrive.get("maxReceiveCount", 0)) or 0) < 3:
            yield Finding(
                "warning",
                logical,
                "maxReceiveCount below 3: a deadline deferral or a claim held elsewhere can send "
                "a healthy task to the DLQ (Celery retries are new messages and do not count)",
                "use maxReceiveCount 3-5",
            )


def _check_worker_task(
    template: Mapping[str, Any], values: Values, name: str, limit: Any, logical: str
) -> Iterator[Finding]:
    """A task on a queue only workers consume: bounded by the queue's visibility, not Lambda's."""
    queue = template["Resources"].get(logical, {}).get("Properties", {})
    visibility = int(values.evaluate(queue.get("VisibilityTimeout", 30)) or 30)
    if not limit:
        yield Finding(
            "warning",
            f"task {name}",
            f"no time_limit on {logical}, which only workers consume: a run longer than its "
            f"VisibilityTimeout {visibility}s comes back and runs again on another worker",
            f"set time_limit under {visibility}s, or raise the queue's VisibilityTimeout",
        )
    elif limit > visibility:
        yield Finding(
            "error",
            f"task {name}",
            f"time_limit {limit}s is over {logical}'s VisibilityTimeout {visibility}s: its "
            "message comes back while it runs",
            "lower time_limit or raise the queue's VisibilityTimeout (at most 43200)",
        )


def _check_tasks(template: Mapping[str, Any], values: Values, app: Any) -> Iterator[Finding]:
    timeout = int(template["Resources"][WORKER]["Properties"].get("Timeout", 3))
    names = _queue_names(template["Resources"][WORKER])
    consumed = _consumed(template)
    batch = max(
        (
            int(values.evaluate(m["Properties"].get("BatchSize", 10)) or 10)
            for m in consumed.values()
        ),
        default=1,
    )
    default_limit = app.conf.task_time_limit
    for name, task in sorted(app.tasks.items()):
        if name.startswith("celery."):
            continue
        limit = task.time_limit or default_limit
        logical = names.get(_queue_of(app, task))
        if logical is not None and logical not in consumed:
            yield from _check_worker_task(template, values, name, limit, logical)
        elif limit and limit > timeout:
            yield Finding(
                "error",
                f"task {name}",
                f"time_limit {limit}s is over the function timeout {timeout}s",
                "lower time_limit, raise Timeout (at most 900), or route the task to a queue "
                "only workers consume (the template's long queue)",
            )
        elif limit and limit * batch > timeout:
            yield Finding(
                "warning",
                f"task {name}",
                f"a batch of {batch} such tasks ({limit}s each) outlasts the {timeout}s timeout:"
                " the records not started are returned to SQS",
                "lower BatchSize for its queue or raise Timeout",
            )


def diagnose(
    template: Mapping[str, Any], app: Any, overrides: Mapping[str, str] | None = None
) -> list[Finding]:
    """Every problem found with the template deployed with ``overrides``, errors first.

    Raises:
        ConfigurationError: an override of a Number parameter is not a number.
    """
    values = Values.of(template, overrides)
    findings = [
        *_check_overrides(values),
        *_check_consumers(template, app),
        *_check_mappings(template, values),
        *_check_tasks(template, values, app),
    ]
    return sorted(findings, key=lambda f: (f.level != "error", f.where))


def doctor_main(app: Any, overrides: Mapping[str, str] | None = None) -> int:
    """Print the findings for template.yaml and ``app`` deployed with samconfig.toml's parameter
    overrides and then ``overrides``; the exit status (1 on any error)."""
    app.loader.import_default_modules()
    app.finalize(auto=True)
    values = {**samconfig_overrides(), **(overrides or {})}
    findings = diagnose(translate(load_template()), app, values)
    console = Console()
    if not findings:
        console.print("template.yaml and the app agree: no problems found")
        return 0
    table = Table(title="celery-lambda doctor")
    for column in ("level", "where", "problem", "fix"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(f.level, f.where, f.problem, f.fix)
    console.print(table)
    return 1 if any(f.level == "error" for f in findings) else 0
