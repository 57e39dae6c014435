"""Scan ``template.yaml`` and its SAM translation with checkov, run from its own virtualenv.

checkov pins versions of packages that clash with Celery's and boto3's, so it lives in
``.tools/checkov`` (``make checkov-install``; ``make test`` installs it once) and is only ever run
as a program. Both forms of the template are scanned: the SAM source, where suppressions are
written (resource ``Metadata: checkov: skip:``, each with an ``id`` and a ``comment`` giving the
reason), and the translation CloudFormation deploys (event source mappings, the schedule's
permission), where SAM keeps each resource's Metadata. checkov evaluates Conditions with the
parameters' defaults and leaves out every resource whose Condition is false, so both forms are
scanned again with the optional features on (`FEATURES_ON`). Nothing leaves the machine:
checkov's download of policy metadata and its update check are turned off.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.cloud.template import TEMPLATE_PATH, load_template, translate
from infra.core.errors import ConfigurationError

__all__ = [
    "CHECKOV",
    "FEATURES_ON",
    "Finding",
    "Scan",
    "command",
    "parse",
    "scan",
    "with_features_on",
    "write_forms",
    "write_translation",
]

CHECKOV = TEMPLATE_PATH.parent / ".tools" / "checkov" / "bin" / "checkov"
"""checkov's executable in its tool virtualenv (the Makefile's ``checkov-install``)."""

FEATURES_ON = {"WorkerService": "true", "WebDashboard": "true", "WebDashboardReadOnly": "false"}
"""Parameter values that bring in the template's optional (conditional) resources and grants."""

_OFFLINE = {"BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE"}
_OUTCOMES = {"passed_checks": "passed", "failed_checks": "failed", "skipped_checks": "skipped"}
_TIMEOUT_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Finding:
    """One check on one resource of one file."""

    check_id: str
    resource: str
    path: str
    outcome: str
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Scan:
    """Every finding of a checkov run, and the files it could not parse."""

    findings: tuple[Finding, ...]
    parsing_errors: tuple[str, ...] = ()

    def of(self, outcome: str, path: Path | str | None = None) -> list[Finding]:
        """The findings with this outcome, of one file or of all."""
        return [
            f
            for f in self.findings
            if f.outcome == outcome
            and (path is None or Path(f.path).resolve() == Path(path).resolve())
        ]


def command(
    paths: Sequence[Path], *, executable: Path = CHECKOV, report: bool = False
) -> list[str]:
    """checkov's command line: JSON output, or with ``report`` its summary and failures as text."""
    files = [arg for path in paths for arg in ("--file", str(path))]
    output = ["--compact", "--quiet"] if report else ["--output", "json"]
    return [str(executable), *files, "--framework", "cloudformation", "--skip-download", *output]


def parse(report: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Scan:
    """A `Scan` out of checkov's JSON output (one report, or a list of one per framework)."""
    reports = [report] if isinstance(report, Mapping) else list(report)
    findings = []
    errors: list[str] = []
    for one in reports:
        results = one.get("results", {})
        errors += [str(e) for e in results.get("parsing_errors", [])]
        for key, outcome in _OUTCOMES.items():
            for check in results.get(key, []):
                findings.append(
                    Finding(
                        check_id=check["check_id"],
                        resource=check["resource"],
                        path=check.get("file_abs_path") or check["file_path"],
                        outcome=outcome,
                        comment=(check.get("check_result") or {}).get("suppress_comment") or "",
                    )
                )
    return Scan(tuple(findings), tuple(errors))


def scan(paths: Sequence[Path], *, executable: Path = CHECKOV) -> Scan:
    """Run checkov on the files and return what it found.

    Raises:
        ConfigurationError: checkov is not installed, or it ran without producing a report.
    """
    if not executable.exists():
        raise ConfigurationError(f"checkov is not installed at {executable}: make checkov-install")
    run = subprocess.run(
        command(paths, executable=executable),
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_SECONDS,
        env={**os.environ, **_OFFLINE},
        check=False,
    )
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError as exc:
        tail = " ".join(run.stderr.split()[-40:])
        raise ConfigurationError(
            f"checkov exited {run.returncode} without a report: {tail}"
        ) from exc
    return parse(report)


def write_translation(
    directory: Path,
    template: Mapping[str, Any] | None = None,
    name: str = "template.translated.json",
) -> Path:
    """Write the SAM translation of the template (by default ``template.yaml``) as JSON."""
    translated = translate(dict(template) if template is not None else load_template())
    path = directory / name
    path.write_text(json.dumps(translated, indent=1), encoding="utf-8")
    return path


def with_features_on(template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the template whose `FEATURES_ON` parameters default to their "on" values.

    Raises:
        ConfigurationError: the template lacks one of those parameters.
    """
    result = copy.deepcopy(dict(template))
    parameters = result.get("Parameters", {})
    for name, value in FEATURES_ON.items():
        if name not in parameters:
            raise ConfigurationError(f"template has no parameter {name} to turn on")
        parameters[name]["Default"] = value
    return result


def write_forms(directory: Path) -> dict[str, Path]:
    """``template.yaml`` and its translation, as deployed by default and with `FEATURES_ON`."""
    template = load_template()
    features = with_features_on(template)
    source = directory / "template.features-on.json"
    source.write_text(json.dumps(features, indent=1), encoding="utf-8")
    return {
        "template": TEMPLATE_PATH,
        "translation": write_translation(directory, template),
        "template-features-on": source,
        "translation-features-on": write_translation(
            directory, features, "template.features-on.translated.json"
        ),
    }


def main() -> int:
    """Print checkov's report on the template and its translation (features off and on); its
    exit status."""
    if not CHECKOV.exists():
        print(f"checkov is not installed at {CHECKOV}: make checkov-install", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="celery-lambda-checkov-") as directory:
        paths = list(write_forms(Path(directory)).values())
        env = {**os.environ, **_OFFLINE}
        return subprocess.run(command(paths, report=True), env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
