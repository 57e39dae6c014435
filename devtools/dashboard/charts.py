"""The overview's chart, as SVG text rendered on the server (no script, nothing from a CDN).

Finished tasks per time bucket, stacked (succeeded, failed), with the failure rate as a line on
a 0-100 % scale. Everything drawn is a number this module formats; no text from the store
reaches the SVG.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from celery import states

from devtools.ops.tasks import TaskRow

__all__ = ["Bucket", "buckets", "throughput_svg"]

WIDTH: Final = 720
HEIGHT: Final = 180
PAD: Final = 28


@dataclass(frozen=True, slots=True)
class Bucket:
    """Tasks that finished in ``[start, start + seconds)``."""

    start: float
    seconds: float
    succeeded: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.succeeded + self.failed

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.total if self.total else None


def buckets(rows: Iterable[TaskRow], start: float, end: float, count: int) -> list[Bucket]:
    """``count`` equal buckets over ``[start, end)`` of the rows' SUCCESS and FAILURE writes."""
    width = (end - start) / count
    succeeded, failed = [0] * count, [0] * count
    for row in rows:
        if not start <= row.updated_at < end:
            continue
        i = min(count - 1, int((row.updated_at - start) / width))
        if row.state == states.SUCCESS:
            succeeded[i] += 1
        elif row.state == states.FAILURE:
            failed[i] += 1
    return [Bucket(start + i * width, width, succeeded[i], failed[i]) for i in range(count)]


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M")


def throughput_svg(series: Sequence[Bucket]) -> str:
    """Stacked bars of finished tasks per bucket and the failure rate, as one ``<svg>``."""
    peak = max((b.total for b in series), default=0) or 1
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = inner_w / max(1, len(series))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="finished tasks and failure rate" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" '
        f'y2="{HEIGHT - PAD}"/>',
        f'<text class="label" x="{PAD}" y="{PAD - 10}">{peak} tasks</text>',
        f'<text class="label rate" x="{WIDTH - PAD}" y="{PAD - 10}" '
        f'text-anchor="end">failure rate 100 %</text>',
    ]
    points = []
    for i, b in enumerate(series):
        x = PAD + i * step + step * 0.1
        ok_h, bad_h = inner_h * b.succeeded / peak, inner_h * b.failed / peak
        base = HEIGHT - PAD
        parts.append(
            f'<rect class="ok" x="{x:.1f}" y="{base - ok_h:.1f}" width="{step * 0.8:.1f}" '
            f'height="{ok_h:.1f}"><title>{_clock(b.start)}: {b.succeeded} succeeded</title></rect>'
        )
        parts.append(
            f'<rect class="bad" x="{x:.1f}" y="{base - ok_h - bad_h:.1f}" '
            f'width="{step * 0.8:.1f}" height="{bad_h:.1f}"><title>{_clock(b.start)}: '
            f"{b.failed} failed</title></rect>"
        )
        if b.failure_rate is not None:
            cx, cy = x + step * 0.4, base - inner_h * b.failure_rate
            points.append(f"{cx:.1f},{cy:.1f}")
            parts.append(
                f'<circle class="rate-dot" cx="{cx:.1f}" cy="{cy:.1f}" r="3"><title>'
                f"{_clock(b.start)}: {b.failure_rate:.0%} failed</title></circle>"
            )
        if i % max(1, len(series) // 6) == 0:
            parts.append(
                f'<text class="label" x="{x:.1f}" y="{HEIGHT - PAD + 16}">{_clock(b.start)}</text>'
            )
    if points:
        parts.append(f'<polyline class="rate" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return "".join(parts)
