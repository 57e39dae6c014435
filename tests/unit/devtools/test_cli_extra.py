"""Without the ``cli`` extra, ``celery lambda`` says which install it needs (and nothing else)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["rich", "moto", "localstack_client"])
def test_the_tooling_names_the_extra_it_needs(module: str) -> None:
    code = f"import sys; sys.modules[{module!r}] = None; import devtools.cli"

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)

    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last == (
        "ModuleNotFoundError: `celery lambda` needs the cli extra: "
        f"pip install 'celery-lambda[cli]' (missing: {module})"
    )


def test_the_engine_imports_without_the_extra() -> None:
    blocked = "rich", "moto", "localstack_client", "samtranslator", "yaml", "click_repl"
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r}));"
        "import handlers.sqs, handlers.beat, infra.install, infra.worker.task"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)

    assert out.returncode == 0, out.stderr
