"""Read, translate and lint ``template.yaml`` offline.

The local deploy and the tests need the template as plain CloudFormation: the YAML short tags
(``!Ref``, ``!GetAtt`` ...) as their long JSON form, and the SAM transform applied by
aws-sam-translator in process. Neither may reach AWS: the translator gets a region and dummy
``s3://`` code locations (it accepts nothing else offline), and managed policy names resolve from
the map bundled with the translator, never through an IAM ``ListPolicies`` call.

A translation costs about a second of CPU (importing the translator is 0.3 s of it), so its result
is kept in a cache directory (:func:`cache_dir`), keyed on the template's content, the region, the
parameter values and the translator's version: the same template is translated once per machine.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import yaml

from infra.core.errors import ConfigurationError

__all__ = [
    "CACHE_DIR_VARIABLE",
    "DUMMY_CODE_URI",
    "TEMPLATE_PATH",
    "cache_dir",
    "lint",
    "load_template",
    "translate",
    "translations",
]

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
"""The project's SAM template at the repository root."""

DUMMY_CODE_URI = "s3://celery-lambda-local/code.zip"
"""Stands in for local code paths, which the translator rejects when it runs offline."""

CACHE_DIR_VARIABLE = "CELERY_LAMBDA_CACHE_DIR"
"""Names the translation cache's directory (default: ``$XDG_CACHE_HOME/celery-lambda``)."""

translations: Counter[str] = Counter()
"""What :func:`translate` did in this process: ``"translated"`` (the translator ran) or ``"cached"``
(the cache answered)."""

# Properties holding a local path that `sam build`/`sam package` would upload.
_LOCAL_URI_PROPERTIES = ("CodeUri", "ContentUri", "DefinitionUri")

# Short tags whose long form keeps the bare name; every other one gains the "Fn::" prefix.
_BARE_TAGS = frozenset({"Ref", "Condition"})
_SHORT_TAGS = _BARE_TAGS | frozenset(
    {
        "And",
        "Base64",
        "Cidr",
        "Equals",
        "FindInMap",
        "GetAZs",
        "GetAtt",
        "If",
        "ImportValue",
        "Join",
        "Not",
        "Or",
        "Select",
        "Split",
        "Sub",
    }
)
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader reading CloudFormation short tags as long-form intrinsics into plain values."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Build a mapping, refusing duplicate keys (YAML would silently keep the last one)."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# CloudFormation reads an unquoted 2012-10-17 as a string, not as a date.
_CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_intrinsic(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    """Turn ``!Name value`` into ``{"Fn::Name": value}`` (``Ref``/``Condition`` stay bare)."""
    if suffix not in _SHORT_TAGS:
        raise yaml.constructor.ConstructorError(
            None, None, f"unknown CloudFormation tag !{suffix}", node.start_mark
        )
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(cast(yaml.MappingNode, node), deep=True)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {suffix if suffix in _BARE_TAGS else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    """One line out of PyYAML's multi-line error message."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{exc.context + ', ' if exc.context else ''}{exc.problem}{where}"
    return " ".join(str(exc).split())


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML template into plain long-form dicts and lists.

    Raises:
        ConfigurationError: the file cannot be read, is not valid YAML, or is not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read template {path}: {exc}") from exc
    try:
        template = yaml.load(text, Loader=_CfnLoader)  # a SafeLoader: builds no objects
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"invalid YAML in {path}: {_yaml_reason(exc)}") from exc
    if not isinstance(template, dict):
        raise ConfigurationError(f"template {path} is not a mapping")
    return template


def _with_dummy_code_uris(template: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the template whose local code paths point at `DUMMY_CODE_URI`."""
    result = copy.deepcopy(template)
    sections = [
        *(r.get("Properties") for r in (result.get("Resources") or {}).values()),
        *(result.get("Globals") or {}).values(),
    ]
    for properties in sections:
        if not isinstance(properties, dict):
            continue
        for name in _LOCAL_URI_PROPERTIES:
            value = properties.get(name)
            if isinstance(value, str) and not value.startswith("s3://"):
                properties[name] = DUMMY_CODE_URI
    return result


@dataclass(frozen=True, slots=True)
class _RegionOnlySession:
    """What the translator reads of a boto3 session: its region (a real one would read ~/.aws)."""

    region_name: str


def cache_dir() -> Path:
    """Where translations are kept: ``$CELERY_LAMBDA_CACHE_DIR``, else the user's cache."""
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "celery-lambda"


def _cache_key(template: Mapping[str, Any], region: str, parameters: Mapping[str, Any]) -> str:
    """A digest of everything the translation depends on."""
    try:
        version = metadata.version("aws-sam-translator")
    except metadata.PackageNotFoundError:
        version = "unknown"
    content = {"template": template, "region": region, "parameters": parameters, "sam": version}
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _cached(path: Path) -> dict[str, Any] | None:
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent, unreadable or half-written by a crash: translate again
    return cached if isinstance(cached, dict) else None


def _store(path: Path, translated: Mapping[str, Any]) -> None:
    """Write atomically (a concurrent reader sees the old file or the new one); a cache that
    cannot be written only costs the next translation."""
    try:
        text = json.dumps(translated)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=".tmp-", suffix=".json", delete=False, encoding="utf-8"
        ) as out:
            out.write(text)
        os.replace(out.name, path)
    except (OSError, TypeError, ValueError) as exc:
        logger.debug("cannot cache the translation in %s: %s", path, exc)


def translate(
    template: dict[str, Any],
    *,
    region: str = "us-east-1",
    parameter_values: Mapping[str, Any] | None = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Apply the SAM transform offline and return the plain CloudFormation template.

    The result comes from the cache in ``cache`` (default :func:`cache_dir`) when this template was
    translated before with the same region and parameter values.

    Raises:
        ConfigurationError: the translator rejects the template; its messages are joined.
    """
    parameters = dict(parameter_values or {})
    path = (cache or cache_dir()) / f"sam-{_cache_key(template, region, parameters)}.json"
    cached = _cached(path)
    if cached is not None:
        translations["cached"] += 1
        return cached
    translated = _translate(template, region, dict(parameters))
    translations["translated"] += 1
    _store(path, translated)
    return translated


def _translate(
    template: dict[str, Any], region: str, parameter_values: dict[str, Any]
) -> dict[str, Any]:
    """Run aws-sam-translator on the template (about a second of CPU)."""
    # Celery imports its CLI plugins when any `celery` command starts, and devtools.cli reaches
    # this module: aws-sam-translator takes 0.3 s to import, so only a translation pays for it.
    from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics  # CLI start-up
    from samtranslator.model.exceptions import ExceptionWithMessage  # CLI start-up
    from samtranslator.parser.parser import Parser  # CLI start-up
    from samtranslator.translator.arn_generator import ArnGenerator  # CLI start-up
    from samtranslator.translator.translator import Translator  # CLI start-up

    sam_template = _with_dummy_code_uris(template)
    # The translator reads the region from this class attribute; put the caller's back after.
    previous_region = ArnGenerator.BOTO_SESSION_REGION_NAME
    metrics = Metrics("ServerlessTransform", DummyMetricsPublisher())
    try:
        translator = Translator(
            None, Parser(), boto_session=_RegionOnlySession(region), metrics=metrics
        )
        translated = translator.translate(
            sam_template,
            parameter_values=parameter_values,
            get_managed_policy_map=dict,  # names resolve from the bundled map; no IAM call
        )
    except ExceptionWithMessage as exc:
        causes = getattr(exc, "causes", None) or [exc]
        reasons = "; ".join(str(cause.message) for cause in causes)
        raise ConfigurationError(f"SAM translation failed: {reasons}") from exc
    finally:
        ArnGenerator.BOTO_SESSION_REGION_NAME = previous_region
        # Drop the timings it recorded, else it warns about "unpublished metrics" at exit.
        metrics.publish()
    return cast(dict[str, Any], translated)


def lint(path: Path = TEMPLATE_PATH) -> list[str]:
    """Run cfn-lint on a template file; one ``RULE message file:line`` string per match."""
    from cfnlint.api import lint_file  # CLI start-up: cfn-lint takes 0.5 s, only linting needs it

    return [
        f"{match.rule.id} {match.message} {match.filename}:{match.linenumber}"
        for match in lint_file(path)
    ]
