"""Results, goals and the interleaved runner shared by every case."""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional

RAW = "raw"
PYSOCK = "pysock"

Measure = Callable[[], float]


class Unavailable(Exception):
    """An implementation cannot run this case (not installed, not implemented)."""


@dataclass(frozen=True)
class Config:
    """Sizes and counts for one run; `quick` shrinks them for a smoke run."""

    quick: bool = False
    reps: int = 5

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass
class Series:
    """The values one implementation produced in one case, one per repetition."""

    impl: str
    values: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def available(self) -> bool:
        return bool(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass(frozen=True)
class Goal:
    """A goal on a number: ``value <op> threshold``; `text` is how the issue states it."""

    text: str
    op: str  # ">=" or "<="
    threshold: float

    def met(self, value: float) -> bool:
        return value >= self.threshold if self.op == ">=" else value <= self.threshold


@dataclass
class Row:
    """One line group of the table: a case (or one metric of a case) and its series."""

    key: str
    title: str
    unit: str
    better: str  # "higher" or "lower"
    series: list[Series]
    goal: Optional[Goal] = None
    # What the goal is checked against; by default the pysock/raw ratio of medians.
    goal_value: Optional[float] = None
    goal_label: str = "pysock/raw"
    note: str = ""

    def get(self, impl: str) -> Optional[Series]:
        for series in self.series:
            if series.impl == impl:
                return series
        return None

    @property
    def ratio(self) -> Optional[float]:
        """pysock median / raw median, or None if either is missing."""
        raw, pysock = self.get(RAW), self.get(PYSOCK)
        if raw is None or pysock is None or not raw.available or not pysock.available:
            return None
        return pysock.median / raw.median if raw.median else None

    @property
    def checked_value(self) -> Optional[float]:
        return self.goal_value if self.goal_value is not None else self.ratio

    @property
    def met(self) -> Optional[bool]:
        value = self.checked_value
        if self.goal is None or value is None:
            return None
        return self.goal.met(value)


def interleave(
    measures: Mapping[str, Measure],
    reps: int,
    warmups: Optional[Mapping[str, Measure]] = None,
    progress: str = "",
) -> list[Series]:
    """Run every implementation once per repetition, in turn (A B C A B C ...).

    A warm-up call (untimed) comes first for each implementation; one that
    raises `Unavailable` there is reported with the reason and skipped.
    """
    series = {impl: Series(impl) for impl in measures}
    active = dict(measures)
    for impl, warm in (warmups or measures).items():
        try:
            warm()
        except Unavailable as exc:
            series[impl].note = str(exc)
            active.pop(impl, None)
    for rep in range(reps):
        for impl, measure in active.items():
            gc.collect()
            series[impl].values.append(measure())
        _progress(f"{progress} rep {rep + 1}/{reps}")
    _progress("")
    return list(series.values())


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{text}")
        sys.stderr.flush()


def elapsed_since(start: float) -> float:
    """Seconds since `start` (a `time.perf_counter()` value)."""
    return time.perf_counter() - start


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]
