"""The Lambda package as `sam build` makes it (BuildMethod: makefile → the Makefile's
build-WorkerFunction): only the runtime code and its dependencies, and it loads the app under
Lambda's Python 3.12 with nothing else on the path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workers import ROOT

PYTHON_312 = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("sam-build") / "WorkerFunction"
    subprocess.run(
        [
            "make",
            "-s",
            "build-WorkerFunction",
            f"ARTIFACTS_DIR={artifacts}",
            f"PYTHON={sys.executable}",
        ],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    return artifacts


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def test_the_package_holds_the_runtime_only(built: Path) -> None:
    top = {p.name for p in built.iterdir()}

    assert {
        "handlers",
        "tasks",
        "infra",
        "celery",
        "kombu",
        "boto3",
        "aws_lambda_powertools",
    } <= top
    assert not (built / "infra" / "local").exists()
    for unwanted in ("tests", "events", "moto", "pytest", "ruff", "mypy", "cfnlint", "pycurl"):
        assert unwanted not in top, unwanted
    assert not list(built.rglob("__pycache__/*.cpython-311.pyc"))
    print(f"\nLambda package: {_size_mb(built):.1f} MB unzipped")


@pytest.mark.skipif(not PYTHON_312, reason="Lambda's Python 3.12 is not installed (pyenv)")
def test_the_package_loads_the_app_under_python_312_alone(built: Path) -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import handlers.sqs, handlers.beat;"
        "from infra import runtime; from infra.settings import Settings;"
        "app = runtime.load_app(Settings.from_env());"
        "print(sorted(n for n in app.tasks if n.startswith('tasks.')))"
    )
    env = {"AWS_DEFAULT_REGION": "us-east-1", "CELERY_APP": "tasks:app", "PATH": os.environ["PATH"]}
    out = subprocess.run(
        [str(PYTHON_312[-1]), "-S", "-c", code, str(built)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=built.parent,
    )

    assert out.returncode == 0, out.stderr
    assert "tasks.add" in out.stdout
