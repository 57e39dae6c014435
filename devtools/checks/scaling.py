"""Checks of one SQS event source of the worker function: batching, visibility and scaling.

Each is a deploy that CloudFormation or Lambda refuses, or one that deploys and then misbehaves:
a batch over 10 records without a batching window; a queue whose visibility timeout ends before
the function's six tries and the batching window are over (records come back while still
running); a ``MaximumConcurrency`` under 2; provisioned pollers out of order (minimum over
maximum, fewer than 2, or together with ``ScalingConfig``, which AWS takes instead of them). The
values are the deployed ones (:class:`~devtools.checks.parameters.Values`), and a finding names the
template parameter to change when a parameter sets the property.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from devtools.checks.findings import Finding
from devtools.checks.parameters import Values
from infra.core.limits import ESM_MAX_BATCH_SIZE_FIFO, VISIBILITY_TIMEOUT_FACTOR

__all__ = ["check_event_source"]

# Lambda's lower bounds for an SQS event source (services-sqs-scaling.html).
MIN_MAXIMUM_CONCURRENCY = 2
MIN_SQS_POLLERS = 2

_EVALUATED = (
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "ScalingConfig",
    "ProvisionedPollerConfig",
)


def _parameter(raw: Any, key: str) -> str | None:
    """The parameter that sets ``key`` anywhere in ``raw`` (``{key: {"Ref": name}}``)."""
    if isinstance(raw, list):
        return next((p for p in (_parameter(v, key) for v in raw) if p), None)
    if not isinstance(raw, dict):
        return None
    value = raw.get(key)
    if isinstance(value, dict) and isinstance(value.get("Ref"), str):
        return str(value["Ref"])
    return next((p for p in (_parameter(v, key) for v in raw.values()) if p), None)


def _name(raw: Mapping[str, Any], key: str) -> str:
    """What a fix tells the user to set: the parameter behind ``key``, else ``key`` itself."""
    return _parameter(raw, key) or key


def _batching(
    logical: str, raw: Mapping[str, Any], props: Mapping[str, Any], fifo: bool
) -> Iterator[Finding]:
    batch = int(props.get("BatchSize", 10))
    window = int(props.get("MaximumBatchingWindowInSeconds", 0))
    if batch > ESM_MAX_BATCH_SIZE_FIFO and (fifo or window < 1):
        yield Finding(
            "error",
            logical,
            f"BatchSize {batch} needs a standard queue and a batching window of 1 s or more "
            f"(MaximumBatchingWindowInSeconds is {window})",
            f"lower {_name(raw, 'BatchSize')} to {ESM_MAX_BATCH_SIZE_FIFO} or set "
            f"{_name(raw, 'MaximumBatchingWindowInSeconds')} to 1 or more",
        )


def _visibility(
    logical: str, raw: Mapping[str, Any], props: Mapping[str, Any], visibility: int, timeout: int
) -> Iterator[Finding]:
    """The window runs while the first records received are already invisible."""
    window = int(props.get("MaximumBatchingWindowInSeconds", 0))
    needed = VISIBILITY_TIMEOUT_FACTOR * timeout + window
    if visibility < needed:
        yield Finding(
            "error",
            logical,
            f"VisibilityTimeout {visibility}s < {VISIBILITY_TIMEOUT_FACTOR} x function timeout "
            f"{timeout}s + batching window {window}s: records can come back while still running",
            f"set VisibilityTimeout >= {needed}, or lower "
            f"{_name(raw, 'MaximumBatchingWindowInSeconds')} or the function Timeout",
        )


def _concurrency(
    logical: str, raw: Mapping[str, Any], props: Mapping[str, Any]
) -> Iterator[Finding]:
    scaling = props.get("ScalingConfig") or {}
    cap = scaling.get("MaximumConcurrency")
    if cap is not None and int(cap) < MIN_MAXIMUM_CONCURRENCY:
        name = _name(raw, "MaximumConcurrency")
        yield Finding(
            "error",
            logical,
            f"MaximumConcurrency {cap} is under {MIN_MAXIMUM_CONCURRENCY}, the least Lambda "
            "accepts for an SQS event source",
            f"set {name} to {MIN_MAXIMUM_CONCURRENCY} or more (use a task rate_limit to slow one "
            "task down)",
        )


def _pollers(logical: str, raw: Mapping[str, Any], props: Mapping[str, Any]) -> Iterator[Finding]:
    minimum_name, maximum_name = _name(raw, "MinimumPollers"), _name(raw, "MaximumPollers")
    provisioned = props.get("ProvisionedPollerConfig")
    if provisioned is None:
        return
    if props.get("ScalingConfig"):
        yield Finding(
            "error",
            logical,
            "ScalingConfig and ProvisionedPollerConfig together: Lambda takes one or the other",
            "drop ScalingConfig where provisioned mode is on (the template's !If does)",
        )
    minimum = int(provisioned.get("MinimumPollers", MIN_SQS_POLLERS))
    maximum = int(provisioned.get("MaximumPollers", 200))
    if min(minimum, maximum) < MIN_SQS_POLLERS:
        yield Finding(
            "error",
            logical,
            f"provisioned mode with MinimumPollers {minimum} and MaximumPollers {maximum}: an SQS "
            f"event source needs at least {MIN_SQS_POLLERS} of each",
            f"set {minimum_name} and {maximum_name} to {MIN_SQS_POLLERS} or more",
        )
    if minimum > maximum:
        yield Finding(
            "error",
            logical,
            f"MinimumPollers {minimum} is over MaximumPollers {maximum}",
            f"raise {maximum_name} to {minimum} or more, or lower {minimum_name}",
        )


def check_event_source(
    logical: str,
    mapping: Mapping[str, Any],
    queue: Mapping[str, Any],
    timeout: int,
    values: Values,
) -> Iterator[Finding]:
    """Findings for the event source ``mapping`` of the queue ``logical`` (its ``Properties``
    in ``queue``), invoking a function whose timeout is ``timeout`` seconds."""
    raw = mapping["Properties"]
    props = {key: values.evaluate(raw[key]) for key in _EVALUATED if key in raw}
    props = {key: value for key, value in props.items() if value is not None}
    visibility = int(values.evaluate(queue.get("VisibilityTimeout", 30)) or 30)
    yield from _batching(logical, raw, props, bool(queue.get("FifoQueue")))
    yield from _visibility(logical, raw, props, visibility, timeout)
    yield from _concurrency(logical, raw, props)
    yield from _pollers(logical, raw, props)
