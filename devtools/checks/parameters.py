"""Parameter values as ``sam deploy`` would pass them, for checks of the deployed configuration.

A setting such as ``BatchSize`` or a queue's ``MaximumConcurrency`` is a template parameter, so
the template alone says only what its defaults give; what is deployed is the defaults overridden by
``samconfig.toml``'s ``parameter_overrides`` (where ``sam deploy --guided`` saves the answers) and
then by ``--parameter-overrides``. This module gathers those values in that order and evaluates a
template expression against them, conditions included (``!If [HighPriorityQueueProvisioned, …]``).

CloudFormation passes every parameter as text; the template's defaults are YAML numbers. Number
parameters are made numbers here, so that ``!Equals [!Ref X, 0]`` gives the same answer for a
default and for an override, as it does in CloudFormation.
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.cloud.intrinsics import Scope, resolve
from devtools.cloud.template import TEMPLATE_PATH
from infra.core.errors import ConfigurationError

__all__ = ["SAMCONFIG_PATH", "Values", "parse_overrides", "samconfig_overrides"]

SAMCONFIG_PATH = TEMPLATE_PATH.parent / "samconfig.toml"

# The pseudo parameters a condition or a property of the event sources may name.
_PSEUDO = {
    "AWS::NoValue": None,
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::URLSuffix": "amazonaws.com",
}


def _pair(token: str) -> tuple[str, str]:
    """``Key=Value``, or the long form ``ParameterKey=Key,ParameterValue=Value``."""
    if token.startswith("ParameterKey="):
        key, sep, value = token.removeprefix("ParameterKey=").partition(",ParameterValue=")
    else:
        key, sep, value = token.partition("=")
    if not sep or not key:
        raise ConfigurationError(f"parameter override {token!r} is not Key=Value")
    return key, value


def parse_overrides(overrides: str | Sequence[str]) -> dict[str, str]:
    """Overrides as SAM reads them: ``"A=1 B='two words'"``, or a list of such strings."""
    items = [overrides] if isinstance(overrides, str) else list(overrides)
    pairs: dict[str, str] = {}
    for item in items:
        pairs.update(_pair(token) for token in shlex.split(item))
    return pairs


def samconfig_overrides(
    path: Path = SAMCONFIG_PATH, environment: str = "default"
) -> dict[str, str]:
    """The ``parameter_overrides`` that ``sam deploy`` takes from ``path``: the deploy section's,
    else the global one's (SAM replaces the value, it does not merge the two)."""
    if not path.exists():
        return {}
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from exc
    sections = config.get(environment, {})
    for command in ("deploy", "global"):
        value = sections.get(command, {}).get("parameters", {}).get("parameter_overrides")
        if value:
            return parse_overrides(value)
    return {}


def _typed(name: str, spec: Mapping[str, Any], value: Any) -> Any:
    """A Number parameter's value as a number (CloudFormation refuses one that is not)."""
    if spec.get("Type") != "Number" or value is None or isinstance(value, int | float):
        return value
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"parameter {name}={value!r} is not a number") from None
    return int(number) if number.is_integer() else number


def _present(value: Any) -> Any:
    """``value`` without the keys that ``AWS::NoValue`` removed."""
    if isinstance(value, dict):
        return {k: _present(v) for k, v in value.items() if v is not None}
    return value


@dataclass(frozen=True, slots=True)
class Values:
    """The template's parameters with the overrides applied, and the override names it lacks."""

    parameters: Mapping[str, Any]
    conditions: Mapping[str, Any]
    unknown: tuple[str, ...] = ()

    @classmethod
    def of(cls, template: Mapping[str, Any], overrides: Mapping[str, str] | None = None) -> Values:
        """The values for ``template`` (translated or not) deployed with ``overrides``."""
        declared: Mapping[str, Any] = template.get("Parameters", {})
        overrides = overrides or {}
        parameters = {
            name: _typed(name, spec, overrides.get(name, spec.get("Default")))
            for name, spec in declared.items()
        }
        return cls(
            {**parameters, **_PSEUDO},
            template.get("Conditions", {}),
            tuple(sorted(set(overrides) - set(declared))),
        )

    def evaluate(self, value: Any) -> Any:
        """``value`` with its ``Ref``s to parameters and its ``Fn::If``s evaluated.

        Raises:
            ConfigurationError: it refers to a resource or uses a function not evaluated here.
        """
        return _present(resolve(value, Scope(self.parameters, conditions=self.conditions)))
