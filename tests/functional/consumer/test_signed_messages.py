"""Signed messages on the Lambda path: a message signed by a trusted producer runs; the same
message with its arguments altered is refused as a record failure and nothing runs.

The case itself (tests/functional/consumer/signed_case.py) runs in a fresh interpreter: Celery's
``setup_security`` rewires kombu's serializer registry for the whole process, which would leak
into (and be disturbed by) the other tests of this session.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from devtools.cloud.deploy import Deployment
from tests.certs import identity
from tests.workers import ROOT


def test_signed_runs_and_tampered_is_refused(
    cloud: Deployment, cloud_env: dict[str, str], tmp_path: Path
) -> None:
    key, cert = identity(tmp_path, "producer")
    [source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    env = {
        **cloud_env,
        "SIGNED_KEY": str(key),
        "SIGNED_CERT": str(cert),
        "SIGNED_STORE": str(tmp_path / "*.pem"),
        "CELERY_APP": "tests.apps.signed:app",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.functional.consumer.signed_case",
            json.dumps(dataclasses.asdict(source)),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])

    assert outcome["failed"] == [outcome["forged_id"]]
    assert outcome["good_calls"] == 1 and outcome["evil_calls"] == 0
    assert outcome["result"] == outcome["good"]
