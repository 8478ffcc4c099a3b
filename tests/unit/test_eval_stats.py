"""Interval maths against hand-worked values (evaluation/stats.py)."""

from __future__ import annotations

import math

import pytest

from cut_loop.evaluation.stats import paired_delta, wilson_interval


def test_wilson_matches_the_hand_worked_formula():
    """8 of 10, z = 1.959964: centre (p + z²/2n) / (1 + z²/n) = 0.99207 / 1.38415 = 0.71674,
    half-width z sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n) = 1.959964 * 0.160011 / 1.38415
    = 0.22658, so (0.49016, 0.94332)."""
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-5) and hi == pytest.approx(0.94332, abs=1e-5)


def test_wilson_stays_inside_0_1_at_the_edges():
    """0 of 10: (0, z²/(n + z²)) = (0, 3.8415 / 13.8415) = (0, 0.27753); 10 of 10 mirrors it.
    The normal approximation would give the empty interval (0, 0) here."""
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((1 - 0.27753, 1.0), abs=1e-5)
    assert wilson_interval(0, 0) is None


def test_wilson_is_narrower_for_more_answers():
    small, large = wilson_interval(16, 32), wilson_interval(64, 128)
    assert small[1] - small[0] > large[1] - large[0]
    # 64 of 128: 0.5 +- 1.96 * sqrt(0.25 / 128) / (1 + 3.84/128) ~ 0.5 +- 0.0849
    assert large == pytest.approx((0.5 - 0.0849, 0.5 + 0.0849), abs=5e-4)


def test_paired_delta_is_the_mean_difference_with_a_seeded_interval():
    before = [0, 0, 1, 1, 0, 1, 0, 0, 1, 0] * 4
    after = [1, 0, 1, 1, 1, 1, 0, 1, 1, 0] * 4
    delta, (lo, hi) = paired_delta(before, after, seed=0)
    assert delta == pytest.approx(0.3)  # 12 of 40 pairs went 0 -> 1, none 1 -> 0
    assert 0 < lo < delta < hi <= 0.5
    assert paired_delta(before, after, seed=0) == (delta, (lo, hi))  # seeded: reproducible
    # The bootstrap's spread matches the normal one: sd of the differences / sqrt(n).
    sd = math.sqrt(0.3 * 0.7 / 40)
    assert hi - lo == pytest.approx(2 * 1.96 * sd, rel=0.15)


def test_paired_delta_cancels_what_both_rounds_share():
    """The same 0/1 pattern shifted by one changed answer: an unpaired comparison of two
    rates near 0.5 has an interval ~0.5 wide, the paired one only sees the one change."""
    before = [i % 2 for i in range(40)]
    after = list(before)
    after[0] = 1
    delta, (lo, hi) = paired_delta(before, after, seed=1)
    assert delta == pytest.approx(1 / 40)
    assert hi - lo < 0.1


def test_paired_delta_edge_cases():
    assert paired_delta([], [], seed=0) is None
    assert paired_delta([1, 0], [1, 0], seed=0) == (0.0, (0.0, 0.0))
    with pytest.raises(ValueError):
        paired_delta([1], [1, 0], seed=0)
