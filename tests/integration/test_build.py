"""The Lambda packages as `sam build` makes them: a real `sam build` of template.yaml, no container
(BuildMethod: makefile runs the Makefile's build-WorkerFunction and build-BeatFunction). Each holds
only the runtime code and its dependencies, and loads the app under Lambda's Python 3.12 with
nothing else on the path.

SAM CLI runs from ``.tools/sam``, which ``make test`` installs. Without it the packages are built
by calling the Makefile's targets directly, as sam would, and the test of sam itself is skipped,
saying so in the summary (``-ra``); under CI it fails instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.checks import sam
from devtools.cloud.template import load_template
from tests.workers import ROOT

FUNCTIONS = ("WorkerFunction", "BeatFunction")
PYTHON_312 = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python"))
MISSING = (
    f"SAM CLI is not installed at {sam.SAM}: run `make sam-install` (`make test` does); "
    "the packages were NOT built by sam build"
)


@dataclass(frozen=True, slots=True)
class Built:
    directory: Path
    run: sam.Run | None  # None: built by the Makefile alone


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    directory = tmp_path_factory.mktemp("sam-build") / "build"
    if sam.SAM.exists():
        run = sam.build(directory)
        assert run.ok, run.output[-4000:]
        return Built(directory, run)
    if os.environ.get("CI"):
        pytest.fail(MISSING)
    for function in FUNCTIONS:
        subprocess.run(
            [
                "make",
                "-s",
                f"build-{function}",
                f"ARTIFACTS_DIR={directory / function}",
                f"PYTHON={sys.executable}",
            ],
            cwd=ROOT,
            check=True,
            timeout=600,
        )
    return Built(directory, None)


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def test_sam_builds_each_function_with_make_in_the_project(built: Built) -> None:
    if built.run is None:
        pytest.skip(MISSING)
    output = built.run.output
    resources = load_template(built.directory / "template.yaml")["Resources"]

    for function in FUNCTIONS:
        assert f"{function}: Running CustomMakeBuilder:MakeBuild" in output
        assert resources[function]["Properties"]["CodeUri"] == function
    # samconfig.toml's build_in_source: no scratch copy of CodeUri (the project, .venv and all).
    assert "CopySource" not in output


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_package_holds_the_runtime_only(built: Built, function: str) -> None:
    package = built.directory / function
    top = {p.name for p in package.iterdir()}

    assert {
        "handlers",
        "tasks",
        "infra",
        "celery",
        "kombu",
        "boto3",
        "aws_lambda_powertools",
    } <= top
    unwanted_here = ("tests", "events", "devtools", "moto", "pytest", "ruff", "mypy", "cfnlint")
    for unwanted in (*unwanted_here, "pycurl", "rich", "localstack_client"):
        assert unwanted not in top, unwanted
    assert not list(package.rglob("__pycache__/*.cpython-311.pyc"))
    print(f"\n{function} package: {_size_mb(package):.1f} MB unzipped")


@pytest.mark.skipif(not PYTHON_312, reason="Lambda's Python 3.12 is not installed (pyenv)")
@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_package_loads_the_app_under_python_312_alone(built: Built, function: str) -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import handlers.sqs, handlers.beat;"
        "from infra.core.apps import load_app; from infra.core.settings import Settings;"
        "app = load_app(Settings.from_env());"
        "print(sorted(n for n in app.tasks if n.startswith('tasks.')))"
    )
    env = {"AWS_DEFAULT_REGION": "us-east-1", "CELERY_APP": "tasks:app", "PATH": os.environ["PATH"]}
    out = subprocess.run(
        [str(PYTHON_312[-1]), "-S", "-c", code, str(built.directory / function)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=built.directory,
    )

    assert out.returncode == 0, out.stderr
    assert "tasks.add" in out.stdout
