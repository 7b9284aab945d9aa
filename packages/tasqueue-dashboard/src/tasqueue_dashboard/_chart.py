"""Throughput over the last minutes, from the queues' ever-growing finished counters, drawn as inline SVG.

Each time the overview is read from the backend (at most once per cache period, however many
tabs poll), the totals of successful and failed jobs per queue are kept as a sample; a bar is
how many finished between the samples that fall in its time slot. The counters live in the
backend, so no job is missed between samples; the samples live here, so the chart starts over
when the dashboard restarts.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Mapping

from markupsafe import Markup

__all__ = ["Throughput"]


class Throughput:
    """Samples of ``{queue: (total_successful, total_failed)}`` over the last ``window`` seconds."""

    def __init__(self, window: float = 600.0, slots: int = 30) -> None:
        self.window = window
        self.slots = slots
        self._samples: deque[tuple[float, dict[str, tuple[int, int]]]] = deque()

    def add(self, totals: Mapping[str, tuple[int, int]], now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._samples.append((now, dict(totals)))
        while len(self._samples) > 2 and self._samples[1][0] < now - self.window:
            self._samples.popleft()

    def bars(self, queue: str | None = None, now: float | None = None) -> list[tuple[int, int]]:
        """Jobs finished (successful, failed) per slot, oldest slot first; ``queue=None`` sums them all."""
        now = time.time() if now is None else now
        width = self.window / self.slots
        start = now - self.window
        out = [[0, 0] for _ in range(self.slots)]
        samples = list(self._samples)
        for (_, before), (at, after) in itertools.pairwise(samples):
            if at < start:
                continue
            slot = min(self.slots - 1, int((at - start) / width))
            names = [queue] if queue is not None else after.keys()
            for name in names:
                new, old = after.get(name, (0, 0)), before.get(name, (0, 0))
                # A counter that went down was reset (a flushed backend): count from zero.
                out[slot][0] += new[0] - old[0] if new[0] >= old[0] else new[0]
                out[slot][1] += new[1] - old[1] if new[1] >= old[1] else new[1]
        return [(s, f) for s, f in out]

    def per_minute(self, queue: str | None = None, now: float | None = None) -> float:
        """Jobs finished per minute over the span the samples cover (0 without two samples)."""
        now = time.time() if now is None else now
        kept = [(at, t) for at, t in self._samples if at >= now - self.window]
        if len(kept) < 2:
            return 0.0
        (t0, first), (t1, last) = kept[0], kept[-1]
        names = [queue] if queue is not None else last.keys()
        done = sum(max(0, sum(last.get(n, (0, 0))) - sum(first.get(n, (0, 0)))) for n in names)
        return done * 60 / (t1 - t0) if t1 > t0 else 0.0


def svg(bars: list[tuple[int, int]], *, width: int = 240, height: int = 40, label: str = "") -> Markup:
    """Stacked bars (successful below, failed on top) with a title per bar; classes carry the colours."""
    peak = max((s + f for s, f in bars), default=0) or 1
    step = width / max(1, len(bars))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{Markup.escape(label or "jobs finished over the last minutes")}">'
    ]
    for n, (ok, failed) in enumerate(bars):
        x = n * step
        h_ok = ok / peak * (height - 2)
        h_failed = failed / peak * (height - 2)
        parts.append(f"<g><title>{ok} successful, {failed} failed</title>")
        parts.append(f'<rect class="bar-bg" x="{x:.1f}" y="0" width="{step - 1:.1f}" height="{height}"/>')
        if ok:
            parts.append(f'<rect class="bar-ok" x="{x:.1f}" y="{height - h_ok:.1f}" width="{step - 1:.1f}" height="{h_ok:.1f}"/>')
        if failed:
            y = height - h_ok - h_failed
            parts.append(f'<rect class="bar-failed" x="{x:.1f}" y="{y:.1f}" width="{step - 1:.1f}" height="{h_failed:.1f}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    # Built from numbers and the escaped label only.
    return Markup("".join(parts))  # noqa: S704
