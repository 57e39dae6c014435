"""``make celery-suite``: Celery's own ``t/integration/test_tasks.py`` and ``test_canvas.py``
through a stock worker (A) and through the Lambda path (B), on the embedded emulator.

The sdist of the installed Celery is downloaded once into ``.tools/celery-suite/`` with pip; its
``t/`` is extracted there, with :mod:`tests.celery_suite.overlay` imported at the end of its
``conftest.py``. Each path is one pytest run in a process of its own (its own emulator); the last
line is ``celery suite: worker P passed, lambda Q passed, worker only: D``, and the exit status is
non-zero when D > 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import celery

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".tools" / "celery-suite"
DESELECTED = Path(__file__).with_name("deselected.txt")
MODULES = ("t/integration/test_tasks.py", "t/integration/test_canvas.py")
OVERLAY = (
    "\n\nfrom tests.celery_suite.overlay import *  # noqa: E402,F401,F403  (make celery-suite)\n"
)
PATHS = ("worker", "lambda")


def sdist(version: str) -> Path:
    """The cached sdist of Celery ``version``, downloaded with pip the first time."""
    found = sorted(CACHE.glob(f"celery-{version}.tar.gz"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
    subprocess.run([*command, f"celery=={version}", "-d", str(CACHE)], check=True)
    return CACHE / f"celery-{version}.tar.gz"


def extract(archive: Path, version: str) -> Path:
    """Celery's ``t/`` package (the top modules and ``t/integration``) and its pytest config,
    with the overlay appended to the integration conftest; the source tree's root."""
    tree = CACHE / f"celery-{version}"
    prefix = f"celery-{version}/"
    with tarfile.open(archive) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.isfile()
            and (
                m.name == f"{prefix}pyproject.toml"
                or (m.name.startswith(f"{prefix}t/integration/") and m.name.endswith(".py"))
                or (m.name.count("/") == 2 and m.name.startswith(f"{prefix}t/"))
            )
        ]
        tar.extractall(CACHE, members=members, filter="data")
    conftest = tree / "t" / "integration" / "conftest.py"
    text = conftest.read_text()
    if OVERLAY not in text:
        conftest.write_text(text + OVERLAY)
    return tree


def deselected() -> list[tuple[str, str]]:
    """``(node id, reason)`` of each test we do not run."""
    entries = []
    for line in DESELECTED.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            node, _, reason = line.partition("  # ")
            entries.append((node.strip(), reason.strip()))
    return entries


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # passed, failed, error, skipped
    first_line: str


def start_path(
    path: str, tree: Path, out: Path, timeout: float, extra: list[str]
) -> subprocess.Popen[bytes]:
    """Start one pytest run of the modules on ``path`` (its log and JUnit XML in ``out``)."""
    report = out / f"{path}.xml"
    report.unlink(missing_ok=True)
    # Node ids (t/integration/...) among the arguments replace the two modules: a subset.
    modules = [] if any(a.startswith("t/") for a in extra) else list(MODULES)
    command = [sys.executable, "-m", "pytest", *modules, "-p", "celery.contrib.pytest"]
    command += ["-p", "no:cacheprovider", "-q", "-rN", "--tb=line", f"--junitxml={report}"]
    command += [f"--deselect={node}" for node, _ in deselected()]
    env = {
        **_environ(),
        "PYTHONPATH": f"{tree}:{ROOT}",
        "CELERY_SUITE_PATH": path,
        "CELERY_SUITE_TIMEOUT": str(timeout),
        "TEST_BACKEND": "infra.store.results:DynamoDBBackend",
        "CELERY_SUITE_BATCHING_WINDOW": os.environ.get("CELERY_SUITE_BATCHING_WINDOW", ""),
    }
    with (out / f"{path}.log").open("wb") as log:
        return subprocess.Popen(
            [*command, *extra], cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def run_paths(
    paths: list[str], tree: Path, out: Path, timeout: float, extra: list[str], parallel: bool
) -> dict[str, dict[str, Outcome]]:
    """Each path's outcomes by node id, the paths one after the other or side by side."""
    started, running = time.monotonic(), {}
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        running[path] = start_path(path, tree, out, timeout, extra)
        if not parallel:
            running[path].wait()
    for path, process in running.items():
        process.wait()
        log = out / f"{path}.log"
        print(f"{path}: done after {time.monotonic() - started:.0f} s, log {log}")
        if process.returncode not in (0, 1):  # 1: tests failed; else pytest itself did
            raise SystemExit(f"{path}: pytest exited with {process.returncode}, see {log}")
    return {path: outcomes(out / f"{path}.xml") for path in paths}


def _environ() -> dict[str, str]:
    """This environment without what points at a cloud: each run starts its own emulator."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_"))}


def outcomes(report: Path) -> dict[str, Outcome]:
    """Node id → outcome, from pytest's JUnit XML."""
    if not report.exists():
        return {}
    found = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module, _, cls = case.get("classname", "").removeprefix("t.integration.").partition(".")
        node = "::".join(p for p in (f"t/integration/{module}.py", cls, case.get("name")) if p)
        found[node] = _outcome(case)
    return found


def _outcome(case: ET.Element) -> Outcome:
    for state in ("failure", "error", "skipped"):
        element = case.find(state)
        if element is not None:
            message = (element.get("message") or element.text or "").strip()
            first = message.splitlines()[0] if message else ""
            return Outcome("failed" if state == "failure" else state, first[:200])
    return Outcome("passed", "")


def counts(results: dict[str, Outcome]) -> str:
    tally: dict[str, int] = {}
    for outcome in results.values():
        tally[outcome.state] = tally.get(outcome.state, 0) + 1
    return ", ".join(f"{tally.get(s, 0)} {s}" for s in ("passed", "failed", "error", "skipped"))


def worker_only(worker: dict[str, Outcome], lam: dict[str, Outcome]) -> list[str]:
    """Node ids that passed on the worker and ran, not passing, on the Lambda path."""
    return sorted(
        n
        for n, o in worker.items()
        if o.state == "passed" and n in lam and lam[n].state != "passed"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test")
    parser.add_argument("--path", choices=PATHS, action="append", help="one path only")
    parser.add_argument("--parallel", action="store_true", help="both paths side by side")
    parser.add_argument(
        "--no-rerun",
        action="store_true",
        help="do not run the worker-only tests once more on the Lambda path alone",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=CACHE,
        help="directory of the logs and reports (a subset run beside a full one)",
    )
    parser.add_argument(
        "pytest_args",
        nargs="*",
        help="more pytest arguments after --: a subset by -k or node ids (t/integration/...)",
    )
    args = parser.parse_args(argv)
    version = celery.__version__
    tree = extract(sdist(version), version)
    print(f"Celery {version}: {', '.join(MODULES)}; {len(deselected())} deselected")
    paths = list(args.path or PATHS)
    out = args.out.resolve()
    results = run_paths(paths, tree, out, args.timeout, args.pytest_args, args.parallel)
    worker, lam = results.get("worker", {}), results.get("lambda", {})
    only = worker_only(worker, lam)
    flaky = []
    if only and not args.no_rerun:
        # Once more, on the Lambda path alone: a test that passes then failed for what ran
        # beside it (Celery marks many of these @flaky); it is listed, not hidden.
        print(f"lambda: running the {len(only)} worker-only tests again, alone")
        again = run_paths(["lambda"], tree, out / "rerun", args.timeout, only, parallel=False)
        flaky = [n for n in only if again["lambda"].get(n, Outcome("failed", "")).state == "passed"]
        lam = {**lam, **{n: again["lambda"][n] for n in flaky}}
        results["lambda"] = lam
        only = worker_only(worker, lam)
    for path, found in results.items():
        print(f"{path}: {counts(found)}")
    if flaky:
        print(f"passed on the Lambda path when run again ({len(flaky)}):")
        for node in flaky:
            print(f"  {node}")
    if only:
        print(f"passed on the worker, not on the Lambda path ({len(only)}):")
        for node in only:
            print(f"  {node}: {lam[node].state}: {lam[node].first_line}")
    both = sorted(
        n
        for n, o in worker.items()
        if o.state in ("failed", "error") and lam.get(n, o).state in ("failed", "error")
    )
    if both:
        print(f"failed on both paths ({len(both)}):")
        for node in both:
            print(f"  {node}: {worker[node].first_line}")
    passed = {p: sum(o.state == "passed" for o in r.values()) for p, r in results.items()}
    print(
        f"celery suite: worker {passed.get('worker', 0)} passed, "
        f"lambda {passed.get('lambda', 0)} passed, worker only: {len(only)}"
    )
    return 1 if only else 0


if __name__ == "__main__":
    sys.exit(main())
