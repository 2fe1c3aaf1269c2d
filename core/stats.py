"""Paired statistics for method comparisons: the same seed (teacher and student initialisation)
runs both arms, so the per-seed differences carry the comparison and the seed-to-seed swing of
each arm cancels out."""

from __future__ import annotations

import math
import statistics

from pydantic import BaseModel, Field


class PairedDifference(BaseModel):
    """``mean`` of the per-seed differences (b - a) with its two-sided t-interval."""

    n: int
    seeds: list[int]
    mean: float
    sd: float | None = Field(None, description="sample std of the differences (None for n < 2)")
    ci_low: float | None = None
    ci_high: float | None = None
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None and (self.ci_low > 0 or self.ci_high < 0)


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (scipy comes with scikit-learn)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def paired_difference(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> PairedDifference | None:
    """Paired ``b - a`` over the seeds both arms have; None when no seed is shared."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [b[s] - a[s] for s in seeds]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedDifference(n=1, seeds=seeds, mean=mean, level=level)
    sd = statistics.stdev(diffs)
    half = t_quantile(0.5 + level / 2, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return PairedDifference(n=len(diffs), seeds=seeds, mean=mean, sd=sd, ci_low=mean - half, ci_high=mean + half,
                            level=level)
