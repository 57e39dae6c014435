"""The Lambda entry point's import graph: no local tooling, no emulator, no AWS call at import."""

from __future__ import annotations

import json
import subprocess
import sys

CHECK = """
import json, sys
import handlers.sqs
from infra import aws
banned = [
    m for m in sys.modules if m.split(".")[0] in ("moto", "tests") or m.startswith("infra.local")
]
print(json.dumps({"banned": banned, "clients": len(aws._clients)}))
"""


def test_handler_import_reaches_no_local_tooling_and_makes_no_client() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "", "AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report == {"banned": [], "clients": 0}
