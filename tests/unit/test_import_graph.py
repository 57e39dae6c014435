"""The Lambda entry points' import graph: no local tooling, no emulator, no AWS call at import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHECK = """
import json, sys
import {module}
from infra.core import aws
banned = [
    m for m in sys.modules if m.split(".")[0] in ("moto", "tests") or m.startswith("devtools")
]
print(json.dumps({"banned": banned, "clients": len(aws._clients)}))
"""


@pytest.mark.parametrize("module", ["handlers.sqs", "handlers.beat"])
def test_handler_import_reaches_no_local_tooling_and_makes_no_client(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK.replace("{module}", module)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "", "AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report == {"banned": [], "clients": 0}
