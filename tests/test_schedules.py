"""BetaSchedule: the linear and cosine schedules, the two time maps and ᾱ -> e^{-t}."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.optimize import minimize_scalar

from diffsde import BetaSchedule, TimeGrid
from diffsde.studies import alpha_bar_limit

EPS64 = torch.finfo(torch.float64).eps


def linear_limit_constant(beta_min=0.1, beta_max=20.0) -> float:
    """lim n·max_i |ᾱ_i - e^{-t_i}| for the linear schedule, derived independently of the code.

    log ᾱ_i = -t_i - ½ Σ_{j<i} β_j² + O(n^-2) and Σ_{j<i} β_j² = (1/n) ∫_0^s β(u)² du + O(n^-2),
    so n (e^{-t_i} - ᾱ_i) -> ½ e^{-t(s)} ∫_0^s β(u)² du, maximised over s in [0, 1].
    """
    rate = lambda u: beta_min + (beta_max - beta_min) * u  # noqa: E731
    scaled_error = lambda s: 0.5 * math.exp(-quad(rate, 0, s)[0]) * quad(lambda u: rate(u) ** 2, 0, s)[0]  # noqa: E731
    best = minimize_scalar(lambda s: -scaled_error(s), bounds=(0, 1), method="bounded",
                           options={"xatol": 1e-10})
    return -best.fun


def test_linear_is_ddpm_at_1000_and_keeps_T():
    schedule = BetaSchedule.linear(1000)
    assert schedule.n == 1000 and len(schedule) == 1000
    assert float(schedule.betas[0]) == pytest.approx(1e-4, rel=1e-14)
    assert float(schedule.betas[-1]) == pytest.approx(0.02, rel=1e-14)
    # β_i = β(i/(n-1))/n averages to (0.1 + 20)/2 / n, so T = 10.05 for every n (up to rounding).
    for n in (21, 100, 1000, 12345):
        assert BetaSchedule.linear(n).T == pytest.approx(10.05, rel=n * EPS64)


def test_attributes_follow_their_definitions():
    schedule = BetaSchedule([0.1, 0.2, 0.3])
    assert schedule.betas.dtype == torch.float64
    assert torch.allclose(schedule.times, torch.tensor([0.0, 0.1, 0.3, 0.6], dtype=torch.float64), rtol=0, atol=1e-15)
    assert torch.allclose(schedule.alpha_bars, torch.tensor([1.0, 0.9, 0.72, 0.504], dtype=torch.float64),
                          rtol=0, atol=1e-15)
    assert torch.allclose(schedule.exact_times, -torch.log(schedule.alpha_bars), rtol=0, atol=1e-15)
    assert schedule.T == pytest.approx(0.6, abs=1e-15)


def test_alpha_bar_converges_to_exp_minus_t_at_first_order():
    ns = [100, 1000, 10000]
    rows, orders = alpha_bar_limit(["linear"], ns)
    errors = [row["max_error"] for row in rows]
    # First order: 10x more steps gives 10x less error. The ratio is 10 (1 + O(1/n)); the
    # O(1/n) coefficient is ~2.4 (read off n·error at n = 100 vs the limit), so within 5%.
    for coarse, fine in zip(errors, errors[1:]):
        assert 9.5 < coarse / fine < 10.5
    assert abs(orders["linear"] - 1.0) < 0.02
    limit = linear_limit_constant()
    assert limit == pytest.approx(0.8622, abs=1e-4)
    for row in rows:
        # n·error = limit + O(1/n); the correction coefficient is about 2.1, so 3/n bounds it.
        assert abs(row["n_times_error"] - limit) < 3.0 / row["n"]


def test_exact_times_make_alpha_bar_exact():
    for n in (100, 1000, 10000):
        schedule = BetaSchedule.linear(n)
        # ᾱ (a product) and τ (a sum of logs) are computed separately: they agree to rounding,
        # each of n floating-point operations contributing at most one ulp.
        error = (schedule.alpha_bars - torch.exp(-schedule.exact_times)).abs().max()
        assert float(error) <= 4 * n * EPS64


@given(st.lists(st.floats(1e-6, 0.999), min_size=1, max_size=50))
def test_time_maps_are_ordered(betas):
    schedule = BetaSchedule(betas)
    # -log(1 - β) >= β, so exact times run ahead of seed-000 times; both increase strictly.
    assert bool((schedule.exact_times >= schedule.times - 1e-15).all())
    assert bool((schedule.times.diff() > 0).all()) and bool((schedule.alpha_bars.diff() < 0).all())
    assert float(schedule.alpha_bars[0]) == 1.0 and float(schedule.times[0]) == 0.0


def test_cosine_matches_nichol_dhariwal():
    n, s = 1000, 0.008
    schedule = BetaSchedule.cosine(n)
    f = np.cos((np.arange(n + 1) / n + s) / (1 + s) * np.pi / 2) ** 2
    expected = f / f[0]
    assert float(schedule.betas.max()) == pytest.approx(0.999)  # the cap binds at the last step
    # Away from the capped last step ᾱ is the closed form exactly (to rounding of n products).
    assert np.allclose(schedule.alpha_bars[:-1].numpy(), expected[:-1], rtol=0, atol=1e-12)


def test_refine_keeps_the_coarse_times():
    coarse = BetaSchedule.linear(50)
    fine = coarse.refine(4)
    assert fine.n == 200
    assert torch.allclose(fine.times[::4], coarse.times, rtol=0, atol=1e-13)
    # Refining shrinks the gap between ᾱ and e^{-t} at the shared times (first order: ~4x).
    gap = lambda sch, idx: (sch.alpha_bars[idx] - torch.exp(-sch.times[idx])).abs().max()  # noqa: E731
    assert gap(coarse, slice(None)) / gap(fine, slice(None, None, 4)) > 3.5


def test_to_moves_and_casts(device):
    schedule = BetaSchedule.linear(100).to(device, torch.float32)
    assert schedule.betas.device.type == device.type and schedule.betas.dtype == torch.float32
    assert schedule.alpha_bars.dtype == torch.float32 and schedule.n == 100
    assert schedule.T == pytest.approx(10.05, rel=1e-6)
    back = BetaSchedule.linear(100)
    assert torch.allclose(schedule.alpha_bars.cpu().double(), back.alpha_bars, rtol=1e-6, atol=0)


@pytest.mark.parametrize("betas, message", [
    ([0.1, 1.2, 0.3], r"betas\[1\] = 1.2"),
    ([0.1, 0.0], r"betas\[1\] = 0.0"),
    ([-0.5], r"betas\[0\] = -0.5"),
    ([0.1, float("nan")], r"betas\[1\] = nan"),
    ([], "empty"),
    ([[0.1, 0.2]], "1-D"),
])
def test_bad_betas_are_refused(betas, message):
    with pytest.raises(ValueError, match=message):
        BetaSchedule(betas)


def test_linear_with_too_few_steps_names_the_bad_beta():
    # n = 10: β_i = (0.1 + 19.9 i / 9) / 10 first reaches 1 at i = 5 (β_5 = 1.1156).
    with pytest.raises(ValueError, match=r"betas\[5\] = 1.116"):
        BetaSchedule.linear(10)


@pytest.mark.parametrize("call, error", [
    (lambda: BetaSchedule.linear(1), ValueError),
    (lambda: BetaSchedule.linear(100.0), TypeError),
    (lambda: BetaSchedule.cosine(0), ValueError),
    (lambda: BetaSchedule.cosine(10, max_beta=1.0), ValueError),
    (lambda: BetaSchedule("abc"), TypeError),
    (lambda: BetaSchedule.linear(100).refine(0), ValueError),
])
def test_bad_constructor_arguments(call, error):
    with pytest.raises(error):
        call()


def test_the_named_schedules():
    from diffsde.schedules import SCHEDULES

    assert sorted(SCHEDULES) == ["cosine", "linear"]
    assert torch.equal(SCHEDULES["linear"](100).betas, BetaSchedule.linear(100).betas)
    assert torch.equal(SCHEDULES["cosine"](100).betas, BetaSchedule.cosine(100).betas)


@pytest.mark.parametrize("call, error, message", [
    (lambda: BetaSchedule.linear(100.0), TypeError, r"n must be an int >= 2, got float 100.0"),
    (lambda: BetaSchedule.linear(1), ValueError, r"n must be an int >= 2, got 1"),
    (lambda: BetaSchedule.linear(100, beta_min="a"), TypeError, r"beta_min must be a real number in \(0, inf\)"),
    (lambda: BetaSchedule.linear(100, beta_min=2.0, beta_max=1.0), ValueError, "0 < beta_min <= beta_max"),
    (lambda: BetaSchedule.cosine(10, s=0.0), ValueError, r"s must be in \(0, inf\), got 0.0"),
    (lambda: BetaSchedule.cosine(10, max_beta=1.0), ValueError, r"max_beta must be in \(0, 1\), got 1.0"),
    (lambda: BetaSchedule.linear(100).refine(True), TypeError, r"factor must be an int >= 1, got bool"),
    (lambda: BetaSchedule.linear(100).grid(t_min=-1.0), ValueError, r"t_min must be in \[0, inf\), got -1.0"),
    (lambda: TimeGrid.uniform(1.0, 2.0, 10), ValueError, "0 <= t_min < T < inf"),
    (lambda: TimeGrid.uniform(math.inf, 0.0, 10), ValueError, r"T must be in \(0, inf\), got inf"),
])
def test_bad_arguments_name_the_argument_and_the_range(call, error, message):
    with pytest.raises(error, match=message):
        call()
