"""The demo's results kept on disk, loaded into a fresh table (`make demo`, then `lambda up`).

Real results written by Celery's own backend calls into a table of the test's own on the moto
server, saved, loaded into a second empty table, then read back by a stock ``AsyncResult``.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
from celery import states
from celery.result import AsyncResult

from devtools.cloud import snapshot
from devtools.cloud.deploy import Deployment
from devtools.cloud.session import forget_backend
from infra.core.settings import Settings
from tasks import app
from tests.tables import results_table_like_template


@pytest.fixture
def tables(cloud: Deployment) -> tuple[Settings, Settings]:
    """Two empty results tables of this test: the demo's and the next ``up``'s."""
    base = Settings.from_env()
    return tuple(  # type: ignore[return-value]
        dataclasses.replace(
            base, results_table=results_table_like_template(f"snap-{uuid.uuid4().hex[:8]}")
        )
        for _ in range(2)
    )


def test_a_saved_table_loads_into_a_fresh_one_and_reads_as_it_was(
    tables: tuple[Settings, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo, later = tables
    path = tmp_path / "last-demo.json"
    monkeypatch.setenv("RESULTS_TABLE", demo.results_table)
    forget_backend(app)
    done, failed = str(uuid.uuid4()), str(uuid.uuid4())
    app.backend.store_result(done, {"sum": 8}, states.SUCCESS)
    app.backend.store_result(failed, KeyError(1), states.FAILURE, traceback="Traceback ...")

    assert snapshot.save(demo, path) == 2
    assert snapshot.restore(later, path) == 2

    monkeypatch.setenv("RESULTS_TABLE", later.results_table)
    forget_backend(app)
    try:
        assert AsyncResult(done, app=app).get(timeout=5) == {"sum": 8}
        failure = AsyncResult(failed, app=app)
        assert failure.state == states.FAILURE
        assert isinstance(failure.result, KeyError)
        assert failure.traceback == "Traceback ..."
    finally:
        monkeypatch.undo()
        forget_backend(app)


def test_no_snapshot_or_a_cut_one_loads_nothing(
    tables: tuple[Settings, Settings], tmp_path: Path
) -> None:
    _, later = tables
    assert snapshot.restore(later, tmp_path / "missing.json") == 0
    cut = tmp_path / "cut.json"
    cut.write_text('{"items": [')
    assert snapshot.restore(later, cut) == 0
