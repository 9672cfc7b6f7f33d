"""Latency histograms that merge across producer processes in constant memory."""

from __future__ import annotations

import math

from ...errors import StreampiError


class LatencyHistogram:
    """Latency percentiles from an HdrHistogram (the ``hdrhistogram`` package, a bench extra).

    Values are kept in microseconds at 3 significant digits from 1 µs to one hour, so memory
    stays fixed however many samples come and every percentile is within 0.1 % of the true
    value. Histograms recorded in other processes travel as :meth:`encode` bytes and are
    summed exactly with :meth:`merge` (HdrHistogram's compressed form), which a list of
    percentiles could not be.
    """

    LOWEST_US, HIGHEST_US, DIGITS = 1, 3_600_000_000, 3

    def __init__(self) -> None:
        try:
            from hdrh.histogram import HdrHistogram
        except ImportError as exc:  # the serving install does not carry the bench tools
            raise StreampiError("the load generator needs hdrhistogram: pip install 'streampi[bench]'") from exc
        self._h = HdrHistogram(self.LOWEST_US, self.HIGHEST_US, self.DIGITS)

    def add(self, ms: float) -> None:
        us = min(max(round(ms * 1e3), self.LOWEST_US), self.HIGHEST_US)
        self._h.record_value(us)

    @property
    def n(self) -> int:
        return self._h.get_total_count()

    @property
    def max(self) -> float:
        return self._h.get_max_value() / 1e3 if self.n else math.nan

    @property
    def min(self) -> float:
        return self._h.get_min_value() / 1e3 if self.n else math.nan

    def percentile(self, p: float) -> float:
        if not self.n:
            return math.nan
        return self._h.get_value_at_percentile(p) / 1e3

    def summary(self) -> dict[str, float]:
        return {"p50": self.percentile(50), "p90": self.percentile(90), "p95": self.percentile(95),
                "p99": self.percentile(99), "max": self.max}

    def cdf(self) -> tuple[list[float], list[float]]:
        """(latency ms, fraction of frames at or under it) at every recorded value."""
        xs, ys, seen = [], [], 0
        for step in self._h.get_recorded_iterator():
            seen += step.count_added_in_this_iter_step
            xs.append(step.value_iterated_to / 1e3)
            ys.append(seen / self.n)
        return xs, ys

    def encode(self) -> bytes:
        """The histogram as compressed bytes, to send from another process."""
        return self._h.encode()

    def merge(self, other: LatencyHistogram | bytes) -> LatencyHistogram:
        """Add another histogram (or its :meth:`encode` bytes) into this one; returns self."""
        if isinstance(other, (bytes, bytearray)):
            from hdrh.histogram import HdrHistogram
            self._h.add(HdrHistogram.decode(bytes(other)))
        else:
            self._h.add(other._h)
        return self
