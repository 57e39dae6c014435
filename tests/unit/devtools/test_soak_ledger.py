"""The soak's ledger: lines appended and read back, and the arithmetic of its last line."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from devtools.soak.ledger import Entry, Kill, append, read, reason, tally


def _entry(task_id: str, consumer: str = "worker#1", group: int = 100, at: float = 10.0) -> Entry:
    return Entry(task_id, consumer, group, group + 1, at)


def _append_many(path: Path, worker: int) -> None:
    for i in range(200):
        append(path, _entry(f"t{worker}-{i}", f"w#{worker}", worker))


def test_entries_appended_by_many_processes_read_back_whole(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_many, args=(ledger, w)) for w in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    entries = read(ledger)

    assert len(entries) == 800
    assert {e.task_id for e in entries} == {f"t{w}-{i}" for w in range(4) for i in range(200)}


def test_no_ledger_reads_as_no_entries(tmp_path: Path) -> None:
    assert read(tmp_path / "missing") == []


def test_a_published_id_in_neither_the_ledger_nor_the_dlq_is_lost() -> None:
    published = ["a", "b", "c", "d"]
    entries = [_entry("a"), _entry("c"), _entry("z")]  # z: not published by this soak

    result = tally(published, entries, succeeded={"a", "c"}, dlq={"d"}, kills=[])

    assert result.lost == ("b",)
    assert result.dlq == ("d",)
    assert (result.published, result.succeeded, result.unrecorded) == (4, 2, ())
    assert result.line() == "soak: published 4, succeeded 2, lost 1, ran twice 0, dlq 1"


def test_a_task_that_ran_without_an_outcome_nor_a_dead_letter_is_unrecorded() -> None:
    result = tally(["a", "b"], [_entry("a"), _entry("b")], {"a"}, set(), [])

    assert (result.lost, result.unrecorded) == ((), ("b",))


def test_a_run_twice_after_its_consumer_was_killed_is_the_documented_window() -> None:
    first = _entry("a", "lambda#1", group=200, at=10.0)
    again = _entry("a", "worker#2", group=300, at=25.0)
    kills = [Kill("lambda#1", 200, 9.0), Kill("lambda#1", 200, 10.5), Kill("worker#2", 300, 30.0)]

    result = tally(["a", "b"], [first, _entry("b"), again], {"a", "b"}, set(), kills)

    assert [t.task_id for t in result.twice] == ["a"]
    assert result.twice[0].runs == (first, again)
    assert result.twice[0].reason.startswith(
        "killed between effect and record: lambda#1 SIGKILLed 0.50s after the effect; "
        "run again by worker#2 +15.0s"
    )
    assert result.line() == "soak: published 2, succeeded 2, lost 0, ran twice 1, dlq 0"


def test_a_run_twice_after_its_consumer_exited_by_itself_says_why() -> None:
    runs = [_entry("a", "worker#1", 100, 10.0), _entry("a", "lambda#1", 200, 30.0)]
    crash = Kill("worker#1", 100, 11.0, cause="exit 1: Unrecoverable error: boom")

    assert reason(runs, [crash]) == (
        "consumer died between effect and record: worker#1 exited by itself 1.00s after the "
        "effect (exit 1: Unrecoverable error: boom); run again by lambda#1 +20.0s"
    )


def test_a_run_twice_with_no_kill_after_the_first_run_is_not_blamed_on_a_kill() -> None:
    runs = [_entry("a", "worker#1", 100, 10.0), _entry("a", "worker#1", 100, 12.0)]

    text = reason(runs, [Kill("worker#1", 100, 5.0), Kill("lambda#1", 200, 11.0)])

    assert text.startswith("ran again with no kill of worker#1 (group 100) after its run")
