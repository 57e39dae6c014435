"""The package as a user installs it: the wheel built from this checkout, installed with its
runtime dependencies (and the ``[worker]`` extra) into a fresh virtualenv, next to a small project
of its own with a ``tasks.py``. That project's task runs through the engine's Lambda handler (a
real SQS event of what its producer sent) and through a ``celery worker`` of that virtualenv,
against the suite's moto server. Nothing of this repository but the wheel is on that path.

One virtualenv for the module; pip's cache makes a second run mostly unpacking. The build and
install times are printed (``-s``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from devtools.cloud.deploy import Deployment
from devtools.cloud.emulator import LOCAL_CREDENTIALS
from devtools.cloud.lambda_events import build_event
from devtools.testing import lambda_sources
from infra.core import aws
from tasks import app
from tests.sqs_helpers import receive
from tests.workers import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900, method="thread")]

QUEUE = "shop"
PROJECT_TASKS = """
    from celery import Celery

    import infra

    app = Celery("shop")
    infra.configure(app, task_default_queue="shop")


    @app.task(name="shop.total")
    def total(prices):
        return sum(prices)
"""
INVOKE = """
    import json, sys, uuid
    from infra.consumer.handler import handler

    class Context:
        function_name = "shop-consumer"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:shop-consumer"
        memory_limit_in_mb = 256
        aws_request_id = str(uuid.uuid4())

        def get_remaining_time_in_millis(self):
            return 60_000

    print(json.dumps(handler(json.load(sys.stdin), Context())))
"""
PUBLISH = "from tasks import total; print(total.delay([1, 2, 3]).id)"
ROUND_TRIP = "from tasks import total; print(total.delay([4, 5]).get(timeout=60))"


@dataclasses.dataclass(frozen=True, slots=True)
class Installed:
    wheel: Path
    python: Path
    project: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from a copy of the sources, installed into a fresh virtualenv."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("infra", "devtools", "tasks", "handlers", "tests"):  # what a checkout holds
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    started = time.monotonic()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", str(source), "-w", str(base / "dist")],
        check=True,
        timeout=300,
    )
    built = time.monotonic()
    [wheel] = (base / "dist").glob("celery_lambda-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    constraints = ["-c", str(ROOT / "constraints.txt")]
    subprocess.run([*install, *constraints, f"{wheel}[worker]"], check=True, timeout=600)
    done = time.monotonic()
    print(f"\nwheel built in {built - started:.1f} s; venv + install in {done - built:.1f} s")
    project = base / "project"
    project.mkdir()
    (project / "tasks.py").write_text(textwrap.dedent(PROJECT_TASKS))
    return Installed(wheel, python, project)


@pytest.fixture(scope="module")
def deployment(cloud: Deployment) -> Iterator[Deployment]:
    """The cloud with a fresh queue for the project, named ``shop`` in CELERY_QUEUE_URLS."""
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=f"shop-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    urls = {**json.loads(cloud.environment["CELERY_QUEUE_URLS"]), QUEUE: url}
    environment = {**cloud.environment, "CELERY_QUEUE_URLS": json.dumps(urls)}
    yield dataclasses.replace(cloud, environment=environment)
    sqs.delete_queue(QueueUrl=url)


def project_env(installed: Installed, deployment: Deployment) -> dict[str, str]:
    """Only the virtualenv, the cloud and the project's app: nothing of this checkout."""
    path = f"{installed.python.parent}{os.pathsep}{os.environ['PATH']}"
    return {
        "PATH": path,
        "HOME": os.environ.get("HOME", "/tmp"),
        **LOCAL_CREDENTIALS,
        **deployment.environment,
        "CELERY_APP": "tasks:app",
    }


def run(installed: Installed, env: Mapping[str, str], code: str, stdin: str = "") -> str:
    """``code`` in the virtualenv's Python, in the project's directory; its stdout."""
    done = subprocess.run(
        [str(installed.python), "-c", textwrap.dedent(code)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=installed.project,
        env=dict(env),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_the_wheel_holds_the_engine_and_the_tooling_only(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    top = {name.split("/")[0] for name in names}

    assert top == {"infra", "devtools", "celery_lambda-0.1.0.dist-info"}
    assert "infra/consumer/handler.py" in names and "infra/beat/handler.py" in names
    metadata = zipfile.ZipFile(installed.wheel).read("celery_lambda-0.1.0.dist-info/METADATA")
    runtime = [
        line.split(" ", 1)[1]
        for line in metadata.decode().splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert sorted(r.split("[")[0].split("<")[0].split(">")[0] for r in runtime) == [
        "aws-lambda-powertools",
        "boto3",
        "celery",
        "kombu",
    ]


def test_the_runtime_install_has_no_tooling_dependency(installed: Installed) -> None:
    code = (
        "import importlib.util as u;"
        "print([m for m in ('rich', 'localstack_client', 'moto', 'tasks', 'handlers')"
        " if u.find_spec(m)])"
    )
    done = subprocess.run(
        [str(installed.python), "-c", code], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_the_project_task_runs_through_the_engine_s_handler(
    installed: Installed, deployment: Deployment
) -> None:
    env = project_env(installed, deployment)
    task_id = run(installed, env, PUBLISH)  # the project's own producer
    [source] = lambda_sources(deployment, [QUEUE])
    messages = receive(source.queue_url, 1)
    event = build_event(messages, source, source.queue_arn.split(":")[3])

    output = run(installed, env, INVOKE, stdin=json.dumps(event))
    response = json.loads(output.splitlines()[-1])  # after the JSON log lines, as on Lambda

    assert response == {"batchItemFailures": []}
    aws.client("sqs").delete_message(
        QueueUrl=source.queue_url, ReceiptHandle=messages[0]["ReceiptHandle"]
    )
    assert app.AsyncResult(task_id).get(timeout=10) == 6  # read back through this process's app


def test_the_project_task_runs_on_a_worker_of_the_virtualenv(
    installed: Installed, deployment: Deployment, tmp_path: Path
) -> None:
    env = project_env(installed, deployment)
    log = tmp_path / "worker.log"
    command = [str(installed.python), "-m", "celery", "-A", "tasks", "worker", "-Q", QUEUE]
    command += ["--loglevel=info", "--concurrency=1", "--without-gossip", "--without-mingle"]
    with log.open("wb") as out:
        worker = subprocess.Popen(
            command, cwd=installed.project, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)

        assert run(installed, env, ROUND_TRIP) == "9", log.read_text()[-3000:]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
