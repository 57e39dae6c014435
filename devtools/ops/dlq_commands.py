"""``celery -A tasks lambda dlq list|show|redrive|purge``: the dead-letter queues.

Which DLQs: those the redrive policies of the deployment's queues name (``--queue NAME`` picks the
one of a Celery queue). See :mod:`devtools.ops.dlq` for how a look leaves every message where
it was, and :mod:`devtools.ops.redrive` for why a redrive can duplicate but never lose.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from devtools.ops.dlq import DeadLetter, peeked, read_letter
from devtools.ops.ids import UnknownId, is_full_id, resolve_letter
from devtools.ops.options import deployment_options, resolve
from devtools.ops.output import emit, fail, note, show
from devtools.ops.queues import QueuePair, queue_pairs, waiting
from devtools.ops.redrive import (
    REDRIVE_HIDE_SECONDS,
    RedriveResult,
    destination,
    purge,
    redrive_queue,
    sources_by_dlq,
)
from devtools.ops.render import dead_letter_panel, dead_letters_table
from devtools.ops.target import Target
from infra.core import aws
from infra.core.errors import CeleryLambdaError
from infra.wire.offload import PayloadStore, Pointer

__all__ = ["dlq"]

queue_option = click.option(
    "--queue", "queue_name", default=None, help="Only the DLQ of this Celery queue."
)


@dataclass(frozen=True, slots=True)
class _Dlq:
    """A dead-letter queue the command works on."""

    pair: QueuePair
    url: str
    waiting: int
    """Messages in it as SQS counts them (roughly, on AWS): 0 spares a look its long poll."""


def _dlqs(sqs: Any, target: Target, queue_name: str | None) -> list[_Dlq]:
    """The DLQs of the deployment's queues (of ``queue_name`` only, when given)."""
    try:
        pairs = [p for p in queue_pairs(sqs, target.settings) if p.dlq_url]
        chosen = [p for p in pairs if queue_name in (None, p.name)]
        if not chosen:
            known = ", ".join(p.name for p in pairs) or "none"
            fail(f"no queue {queue_name!r} with a dead-letter queue (queues with one: {known})")
        return [_Dlq(p, p.dlq_url, waiting(sqs, p.dlq_url)) for p in chosen if p.dlq_url]
    except CeleryLambdaError as exc:
        fail(str(exc))


def _names(dlqs: list[_Dlq]) -> str:
    return ", ".join(d.pair.name for d in dlqs)


@click.group("dlq")
def dlq() -> None:
    """Dead-letter queues: list, show, redrive or purge their messages."""


@dlq.command("list")
@queue_option
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@deployment_options
@click.pass_context
def dlq_list(
    ctx: click.Context, queue_name: str | None, limit: int, stack: str | None, as_json: bool
) -> None:
    """Messages in the DLQs, decoded: task, id, arguments, receives, sent and first received."""
    target = resolve(stack)
    sqs = aws.client("sqs", target.settings)
    accept = ctx.obj.app.conf.accept_content
    letters: list[tuple[str, DeadLetter]] = []
    try:
        for d in _dlqs(sqs, target, queue_name):
            if not d.waiting:
                continue
            with peeked(sqs, d.url, limit=limit - len(letters)) as messages:
                letters += [(d.pair.name, read_letter(m, d.url, accept)) for m in messages]
            if len(letters) >= limit:
                break
    except CeleryLambdaError as exc:
        fail(str(exc))
    if as_json:
        emit({"messages": [{"queue": q, **letter.as_json()} for q, letter in letters]})
    elif letters:
        show(dead_letters_table(letters))
    else:
        note("the dead-letter queues are empty")


def _look(
    sqs: Any, dlqs: list[_Dlq], accept: Collection[str], texts: Collection[str]
) -> list[tuple[_Dlq, dict[str, Any], DeadLetter]]:
    """The messages of ``dlqs``, each decoded, for ``texts`` to be matched against.

    A look at a DLQ stops early once every text that is a whole id was seen as a message id;
    a prefix (or a task id) needs the whole DLQ, to tell a unique match from an ambiguous one.
    """
    full = [text for text in texts if is_full_id(text)]
    looking_for = full if len(full) == len(texts) else ()
    found: list[tuple[_Dlq, dict[str, Any], DeadLetter]] = []
    for d in dlqs:
        with peeked(sqs, d.url, looking_for=looking_for) as messages:
            found += [(d, m, read_letter(m, d.url, accept)) for m in messages]
        if looking_for and set(looking_for) <= {m["MessageId"] for _, m, _ in found}:
            break
    return found


def _resolved(
    found: list[tuple[_Dlq, dict[str, Any], DeadLetter]], text: str
) -> tuple[_Dlq, dict[str, Any], DeadLetter]:
    """The one message of a look that ``text`` names (:func:`devtools.ops.ids.resolve_letter`).

    Raises:
        UnknownId, AmbiguousId: none, or several.
    """
    letter = resolve_letter([letter for _, _, letter in found], text)
    return next(entry for entry in found if entry[2] is letter)


@dlq.command("show")
@click.argument("message_id")
@queue_option
@deployment_options
@click.pass_context
def dlqshow(
    ctx: click.Context, message_id: str, queue_name: str | None, stack: str | None, as_json: bool
) -> None:
    """One DLQ message in full: body, attributes, the decoded task (offloaded bodies fetched).

    MESSAGE_ID: a message id or a task id, or the first characters of one, matched against the
    messages in the DLQs (the task ids of bodies offloaded to S3 are not matched); an ambiguous
    one lists the messages it matches.
    """
    target = resolve(stack)
    sqs = aws.client("sqs", target.settings)
    dlqs = [d for d in _dlqs(sqs, target, queue_name) if d.waiting]
    s3 = aws.client("s3", target.settings)

    def fetch(pointer: Pointer) -> str:
        return PayloadStore(s3, pointer.bucket).fetch(pointer)

    accept, limit = ctx.obj.app.conf.accept_content, target.settings.max_payload_bytes
    try:
        d, message, _ = _resolved(_look(sqs, dlqs, accept, [message_id]), message_id)
        queue, letter = d.pair.name, read_letter(message, d.url, accept, fetch, limit)
    except CeleryLambdaError as exc:
        fail(str(exc))
    if as_json:
        emit({"queue": queue, **letter.as_json(full=True)})
    else:
        show(dead_letter_panel(letter))


@dlq.command("redrive")
@click.option(
    "--id",
    "ids",
    multiple=True,
    help="Only this message (repeatable): its message id or task id, or the start of one.",
)
@queue_option
@deployment_options
@click.pass_context
def dlq_redrive(
    ctx: click.Context,
    ids: tuple[str, ...],
    queue_name: str | None,
    stack: str | None,
    as_json: bool,
) -> None:
    """Send DLQ messages back to their queue; each is deleted from the DLQ once sent.

    An --id is matched as ``dlq show`` matches its MESSAGE_ID; an ambiguous one moves nothing and
    lists the messages it matches.
    """
    target = resolve(stack)
    sqs = aws.client("sqs", target.settings)
    everything = _dlqs(sqs, target, queue_name)
    dlqs = [d for d in everything if d.waiting]
    if not dlqs:
        if ids:
            fail(f"no message {', '.join(ids)}: the dead-letter queues are empty")
        note(f"nothing to redrive: the dead-letter queues of {_names(everything)} are empty")
        if as_json:
            emit({**RedriveResult().as_json(), "unknown": []})
        return
    try:
        chosen = _selection(sqs, dlqs, ctx.obj.app.conf.accept_content, ids) if ids else None
    except CeleryLambdaError as exc:
        fail(str(exc))
    sources = sources_by_dlq([d.pair for d in everything])
    columns = (TextColumn("redrive"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        total = len(chosen) if chosen is not None else sum(d.waiting for d in dlqs)
        bar = progress.add_task("redrive", total=total)
        try:
            result = _redrive(
                sqs, dlqs, sources, target, chosen, lambda n: progress.advance(bar, n)
            )
        except CeleryLambdaError as exc:
            fail(
                f"redrive interrupted: {exc}; the messages being moved reappear in their DLQ "
                f"within {REDRIVE_HIDE_SECONDS} s: run it again (a task sent twice runs once)"
            )
    _report(result, ids, chosen or {}, as_json)


def _selection(
    sqs: Any, dlqs: list[_Dlq], accept: Collection[str], ids: tuple[str, ...]
) -> dict[str, tuple[str, str]]:
    """Each of ``ids`` that names a message → that message's DLQ URL and message id.

    Raises:
        AmbiguousId: an id names several messages.
        ConfigurationError: the DLQs could not be read.
    """
    found = _look(sqs, dlqs, accept, ids)
    chosen: dict[str, tuple[str, str]] = {}
    for text in ids:
        try:
            d, message, _ = _resolved(found, text)
        except UnknownId:
            continue  # reported with the outcome, after the known ones moved
        chosen[text] = (d.url, message["MessageId"])
    return chosen


def _redrive(
    sqs: Any,
    dlqs: list[_Dlq],
    sources: Mapping[str, tuple[str, ...]],
    target: Target,
    chosen: Mapping[str, tuple[str, str]] | None,
    advance: Callable[[int], None],
) -> RedriveResult:
    """Each DLQ's messages (or the ``chosen`` ones) back to the queue they came from."""
    result = RedriveResult()
    for d in dlqs:

        def where(message: Any, dlq_url: str = d.url) -> str | None:
            return destination(message, dlq_url, sources, target.settings)

        selected = None if chosen is None else {m for url, m in chosen.values() if url == d.url}
        if selected is None or selected:
            result += redrive_queue(sqs, d.url, where, selected=selected, on_progress=advance)
    return result


def _report(
    result: RedriveResult,
    ids: tuple[str, ...],
    chosen: Mapping[str, tuple[str, str]],
    as_json: bool,
) -> None:
    done = set(result.moved) | {i for i, _ in result.kept}
    unknown = sorted({text for text in ids if text not in chosen or chosen[text][1] not in done})
    if as_json:
        emit({**result.as_json(), "unknown": unknown})
    else:
        note(f"{len(result.moved)} message(s) sent back to their queue")
        for message_id, reason in result.kept:
            note(f"[yellow]kept[/] {message_id}: {reason}")
    if unknown:
        fail(f"no message {', '.join(unknown)} in the dead-letter queues")
    if result.kept:
        raise click.exceptions.Exit(1)


@dlq.command("purge")
@queue_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--stack", metavar="NAME", default=None, help="As for the other commands.")
def dlq_purge(queue_name: str | None, yes: bool, stack: str | None) -> None:
    """Delete every message of the DLQs (asks first; SQS may take up to 60 s)."""
    target = resolve(stack)
    sqs = aws.client("sqs", target.settings)
    everything = _dlqs(sqs, target, queue_name)
    dlqs = [d for d in everything if d.waiting]
    if not dlqs:
        note(f"nothing to purge: the dead-letter queues of {_names(everything)} are empty")
        return
    summary = ", ".join(f"{d.waiting} in {d.pair.name}'s DLQ" for d in dlqs)
    if not yes:
        click.confirm(f"Delete {summary}? This cannot be undone", abort=True)
    try:
        for d in dlqs:
            purge(sqs, d.url)
            note(f"purged {d.pair.name}'s DLQ")
    except CeleryLambdaError as exc:
        fail(str(exc))
