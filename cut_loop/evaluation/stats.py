"""The interval maths every reported rate and comparison carries.

- A rate k/n gets the Wilson score interval (Wilson 1927): unlike the normal approximation it
  stays inside [0, 1] and keeps its coverage for small n or rates near 0 and 1, which is where
  held-out sets of a few dozen answers live.
- A comparison of two policies on the same instructions is paired: the per-instruction
  differences are resampled together (a percentile bootstrap of their mean, seeded), so the
  instruction-to-instruction variance that both policies share cancels out.
Both come from scipy.stats.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

Z95 = 0.95


def wilson_interval(k: int, n: int, confidence: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of the rate k/n; None when n == 0 (no rate to bound)."""
    if n == 0:
        return None
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def paired_delta(
    before: Sequence[float],
    after: Sequence[float],
    seed: int,
    resamples: int = 10_000,
    confidence: float = Z95,
) -> tuple[float, tuple[float, float]] | None:
    """mean(after - before) over paired items and its percentile-bootstrap interval (the
    differences resampled with replacement, `resamples` times, from a generator seeded with
    `seed`, so the same inputs always give the same interval). None when there are no pairs.
    Identical differences everywhere give a zero-width interval at the mean."""
    if len(before) != len(after):
        raise ValueError(f"paired samples differ in length: {len(before)} vs {len(after)}")
    if not before:
        return None
    diff = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    return mean_interval(diff, seed, resamples, confidence)


def mean_interval(
    values: Sequence[float] | np.ndarray,
    seed: int,
    resamples: int = 10_000,
    confidence: float = Z95,
) -> tuple[float, tuple[float, float]] | None:
    """The mean of `values` and its seeded percentile-bootstrap interval (e.g. a win rate whose
    items score 0, 0.5 or 1, where a binomial interval does not apply). None when empty."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None
    mean = float(x.mean())
    if np.all(x == x[0]):  # the bootstrap distribution is a point
        return mean, (mean, mean)
    result = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return mean, (float(ci.low), float(ci.high))
