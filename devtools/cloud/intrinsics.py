"""Evaluate CloudFormation intrinsic functions against locally created resources.

Just enough of CloudFormation's evaluator for a translated SAM template: ``Ref``, ``Fn::GetAtt``,
``Fn::Sub``, ``Fn::Join``, ``Fn::Select``, ``Fn::Split``, ``Fn::If`` with ``Fn::Equals``/``Not``/
``And``/``Or``/``Condition``, and ``Fn::ToJsonString``. Anything else is refused by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.core.errors import ConfigurationError

__all__ = ["Scope", "references", "resolve"]

_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


@dataclass(slots=True)
class Scope:
    """What names resolve to: parameters and pseudo parameters, resources, conditions."""

    parameters: Mapping[str, Any]
    refs: dict[str, Any] = field(default_factory=dict)
    attributes: dict[tuple[str, str], Any] = field(default_factory=dict)
    conditions: Mapping[str, Any] = field(default_factory=dict)

    def ref(self, name: str) -> Any:
        """Value of ``Ref name``."""
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise ConfigurationError(f"Ref to {name!r}, which is neither a parameter nor a resource")

    def get_att(self, resource: str, attribute: str) -> Any:
        """Value of ``Fn::GetAtt [resource, attribute]``."""
        try:
            return self.attributes[(resource, attribute)]
        except KeyError:
            raise ConfigurationError(f"Fn::GetAtt {resource}.{attribute} is not known") from None

    def condition(self, name: str) -> bool:
        """Truth of a named condition."""
        if name not in self.conditions:
            raise ConfigurationError(f"condition {name!r} is not defined")
        return bool(resolve(self.conditions[name], self))


def _sub(args: Any, scope: Scope) -> str:
    text, variables = (args, {}) if isinstance(args, str) else (args[0], args[1])
    local = {k: resolve(v, scope) for k, v in variables.items()}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in local:
            return str(local[name])
        if "." in name:
            return str(scope.get_att(*name.split(".", 1)))
        return str(scope.ref(name))

    return _SUB_VAR.sub(replace, text).replace("${!", "${")


def _get_att(args: Any, scope: Scope) -> Any:
    resource, attribute = args.split(".", 1) if isinstance(args, str) else args
    return scope.get_att(resource, resolve(attribute, scope))


def _if(args: Any, scope: Scope) -> Any:
    name, when_true, when_false = args
    return resolve(when_true if scope.condition(name) else when_false, scope)


_FUNCTIONS: dict[str, Callable[[Any, Scope], Any]] = {
    "Ref": lambda a, s: s.ref(a),
    "Fn::GetAtt": _get_att,
    "Fn::Sub": _sub,
    "Fn::Join": lambda a, s: str(a[0]).join(str(v) for v in resolve(a[1], s)),
    "Fn::Select": lambda a, s: resolve(a[1], s)[int(resolve(a[0], s))],
    "Fn::Split": lambda a, s: resolve(a[1], s).split(a[0]),
    "Fn::If": _if,
    "Fn::Equals": lambda a, s: resolve(a[0], s) == resolve(a[1], s),
    "Fn::Not": lambda a, s: not resolve(a[0], s),
    "Fn::And": lambda a, s: all(resolve(v, s) for v in a),
    "Fn::Or": lambda a, s: any(resolve(v, s) for v in a),
    "Condition": lambda a, s: s.condition(a),
    "Fn::ToJsonString": lambda a, s: json.dumps(resolve(a, s), separators=(",", ":")),
}


def resolve(value: Any, scope: Scope) -> Any:
    """``value`` with every intrinsic function evaluated.

    Raises:
        ConfigurationError: an unsupported function or an unknown name.
    """
    if isinstance(value, list):
        return [resolve(v, scope) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, args),) = value.items()
        if key in _FUNCTIONS:
            return _FUNCTIONS[key](args, scope)
        if key.startswith("Fn::"):
            raise ConfigurationError(f"intrinsic function {key} is not supported locally")
    return {k: resolve(v, scope) for k, v in value.items()}


def references(value: Any) -> set[str]:
    """Names that ``value`` refers to through Ref, GetAtt and Sub (for ordering resources)."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= references(item)
    elif isinstance(value, dict):
        for key, args in value.items():
            if key == "Ref" and isinstance(args, str):
                found.add(args)
            elif key == "Fn::GetAtt":
                found.add(args.split(".", 1)[0] if isinstance(args, str) else args[0])
            elif key == "Fn::Sub":
                text = args if isinstance(args, str) else args[0]
                found |= {m.split(".", 1)[0] for m in _SUB_VAR.findall(text)}
            found |= references(args)
    return found
