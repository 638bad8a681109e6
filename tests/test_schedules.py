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
    # -log(1 - β) >= β, so exact times run ahead of step-sum times; both increase strictly.
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


# -- precision: lists and floats are float64, the schedule's arithmetic stays float64 ---------------

def test_lists_and_floats_are_read_as_float64():
    # 10.05 rounded through float32 is 10.050000190734863; read as float64 it is 10.05 itself.
    assert TimeGrid.from_times([10.05, 0]).T == 10.05
    # 1 + 1e-12 and 1 are one float32 number but two float64 ones: a valid, strictly decreasing grid.
    grid = TimeGrid.from_times([1 + 1e-12, 1, 0])
    assert grid.n == 2 and float(grid.betas[0]) == pytest.approx(1e-12, rel=1e-3)
    assert BetaSchedule([0.1, 0.2]).betas.tolist() == [0.1, 0.2]
    # A tensor keeps its own values (a float32 10.05 stays that float32 number, converted exactly).
    single = torch.tensor([10.05, 0.0], dtype=torch.float32)
    assert TimeGrid.from_times(single).T == float(single[0]) != 10.05
    assert BetaSchedule(torch.tensor([0.1], dtype=torch.float32)).betas.tolist() == [float(torch.tensor(0.1))]


def test_a_half_precision_schedule_keeps_its_float64_grid_and_arithmetic(device):
    schedule = BetaSchedule.linear(10000)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        moved = schedule.to(device, dtype)
        assert moved.betas.dtype == dtype and moved.betas.device.type == device.type
        # float16 would round 3,554 of these 10,000 steps to zero length; the grid is the float64 one.
        grid, reference = moved.grid(t_min=1e-3), schedule.grid(t_min=1e-3)
        for name in ("times", "betas", "alpha_bars"):
            assert getattr(grid, name).dtype == torch.float64
            assert torch.equal(getattr(grid, name), getattr(reference, name)), name
        assert bool((grid.times[:-1] > grid.times[1:]).all())
        assert moved.T == schedule.T and moved.n == schedule.n
        assert torch.equal(moved.refine(2).betas, schedule.refine(2).betas)
        assert torch.equal(moved.respaced(10).betas, schedule.respaced(10).betas)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_to_refuses_dtypes_that_cannot_hold_a_beta(dtype):
    schedule = BetaSchedule.linear(100)
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        schedule.to(dtype)  # as Tensor.to, a dtype may come first
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        schedule.to(dtype=dtype)


def test_to_takes_a_dtype_first_like_tensor_to():
    moved = BetaSchedule.linear(100).to(torch.float32)
    assert moved.betas.dtype == torch.float32 and moved.betas.device.type == "cpu"


# -- respacing ------------------------------------------------------------------------------

def diffusers_timesteps(big_n: int, n: int, spacing: str) -> np.ndarray:
    """diffusers' ``set_timesteps`` (DDPMScheduler / DDIMScheduler, steps_offset = 0), ascending."""
    if spacing == "linspace":
        steps = np.linspace(0, big_n - 1, n).round()
    elif spacing == "leading":
        steps = np.arange(0, n) * (big_n // n)
    else:
        steps = np.round(np.arange(big_n, 0, -big_n / n)) - 1
    return np.sort(steps.astype(np.int64))


@pytest.mark.parametrize("spacing", ["trailing", "linspace", "leading"])
@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 50, 250])
def test_respaced_keeps_the_alpha_bars_diffusers_keeps(spacing, n):
    parent = BetaSchedule.linear(1000)
    respaced = parent.respaced(n, spacing)
    # diffusers' timestep t is ᾱ after t + 1 steps (its alphas_cumprod[t]); its chain ends at ᾱ = 1.
    index = np.concatenate([[0], diffusers_timesteps(1000, n, spacing) + 1])
    assert respaced.n == n and np.all(np.diff(index) > 0)
    for name in ("times", "exact_times", "alpha_bars"):  # the parent's points, on the parent's time axis
        assert torch.equal(getattr(respaced, name), getattr(parent, name)[index]), name
    assert bool(((respaced.betas > 0) & (respaced.betas < 1)).all())
    # β' = 1 - ᾱ_{k_{i+1}} / ᾱ_{k_i}. It is computed from τ differences, each exact to the rounding
    # of the parent's cumulative sums (~1000 ulps of τ <= 10.05, ~2e-12 absolute), and 1 - β'
    # rounds to one ulp of 1: so |(1 - β') ᾱ_k - ᾱ_k'| <= (2e-12 + EPS64 / (1 - β')) ᾱ_k'.
    ratio = respaced.alpha_bars[1:] / respaced.alpha_bars[:-1]
    bound = 2e-12 + EPS64 / ratio
    assert bool((((1 - respaced.betas) - ratio).abs() <= bound * ratio).all())
    # T is kept exactly when the last kept index is the parent's last (trailing; linspace for n >= 2).
    assert (respaced.T == parent.T) == (index[-1] == 1000) == (spacing == "trailing" or
                                                                (spacing == "linspace" and n >= 2))


def test_respaced_is_valid_where_the_linear_schedule_is_not():
    # linear(n) needs n >= 21 (β_max = 20 / n); the respaced 1000-step rate has β' = 1 - ᾱ_k'/ᾱ_k < 1 for every n.
    parent = BetaSchedule.linear(1000)
    for n in range(1, 21):
        respaced = parent.respaced(n)
        assert respaced.n == n and respaced.T == parent.T
        assert float(respaced.betas.max()) < 1
        # trailing: the kept indices are round(1000 i / n), evenly spaced from 0 to 1000.
        expected = [round(1000 * i / n) for i in range(n + 1)]
        assert torch.equal(respaced.times, parent.times[expected])
    one = parent.respaced(1)
    assert float(one.betas[0]) == pytest.approx(1 - float(parent.alpha_bars[-1]), rel=1e-12)
    # Respacing to every index gives the schedule back (β' from τ differences: ~1e-11 relative for β = 1e-4).
    assert torch.allclose(parent.respaced(1000).betas, parent.betas, rtol=1e-10, atol=0)


@pytest.mark.parametrize("call, error, match", [
    (lambda: BetaSchedule.linear(100).respaced(0), ValueError, r"n must be an int in \[1, 100\], got 0"),
    (lambda: BetaSchedule.linear(100).respaced(101), ValueError, r"n must be an int in \[1, 100\], got 101"),
    (lambda: BetaSchedule.linear(100).respaced(5.0), TypeError, "n must be an int"),
    (lambda: BetaSchedule.linear(100).respaced(5, "even"), ValueError, "spacing must be one of"),
    (lambda: BetaSchedule.linear(100).respaced(5).refine(2), ValueError, "respaced schedule keeps its parent's"),
    (lambda: BetaSchedule.linear(10), ValueError, r"BetaSchedule.linear\(1000\).respaced\(10\)"),
])
def test_bad_respacing_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- grids that end exactly at t_min ----------------------------------------------------------

def test_a_grid_can_end_exactly_at_t_min():
    schedule = BetaSchedule.linear(250)  # t_1 = 4e-4 < 1e-3 < t_2 = 1.12e-3
    cut = schedule.grid(1e-3)
    grid = schedule.grid(1e-3, end_at_t_min=True)
    assert (cut.n, cut.t_min) == (248, float(schedule.times[2]))
    assert (grid.n, grid.t_min) == (249, 1e-3)
    # Every point but the last is the schedule's, unchanged; the crossing step is cut, never lengthened.
    for name in ("times", "betas", "alpha_bars"):
        assert torch.equal(getattr(grid, name)[:-1], getattr(cut, name)), name
    assert float(grid.times[-2] - grid.times[-1]) < float(schedule.betas[1])
    # ᾱ_{i+1} = ᾱ_i (1 - β_i) along the grid as on the schedule: the cut step's β = 1 - ᾱ_2 / ᾱ(t_min)
    # (products of two float64 numbers: a few ulps).
    assert torch.allclose(grid.alpha_bars[1:] * (1 - grid.betas), grid.alpha_bars[:-1], rtol=4 * EPS64, atol=0)
    # log ᾱ is linear in t within the cut step: ᾱ(t_min) lies between ᾱ_1 and ᾱ_2 at the interpolated log.
    fraction = (float(schedule.times[2]) - 1e-3) / float(schedule.betas[1])
    log_expected = math.log(float(schedule.alpha_bars[2])) - fraction * math.log1p(-float(schedule.betas[1]))
    assert math.log(float(grid.alpha_bars[-1])) == pytest.approx(log_expected, rel=1e-14)
    # With exact times (log ᾱ = -τ), the interpolation gives ᾱ(t_min) = e^{-t_min}.
    exact = schedule.grid(1e-3, exact_times=True, end_at_t_min=True)
    assert exact.t_min == 1e-3 and float(exact.alpha_bars[-1]) == pytest.approx(math.exp(-1e-3), rel=4 * EPS64)


def test_ending_at_a_schedule_time_changes_nothing():
    schedule = BetaSchedule.linear(100)  # t_1 = β_0 = 0.1 / 100 = 1e-3 exactly
    for t_min in (0.0, 1e-3):
        plain, ended = schedule.grid(t_min), schedule.grid(t_min, end_at_t_min=True)
        for name in ("times", "betas", "alpha_bars"):
            assert torch.equal(getattr(plain, name), getattr(ended, name)), (t_min, name)
    # A time within rounding of t_min (a refined schedule's cumulative sums) becomes t_min itself.
    refined = schedule.refine(16).grid(1e-3, end_at_t_min=True)
    assert refined.t_min == 1e-3 and refined.n == 16 * 99


def test_a_coarse_respaced_grid_keeps_its_steps_down_to_t_min():
    grid = BetaSchedule.linear(1000).respaced(1).grid(1e-3, end_at_t_min=True)
    assert (grid.n, grid.T, grid.t_min) == (1, BetaSchedule.linear(1000).T, 1e-3)
    with pytest.raises(ValueError, match="leaves no step"):
        BetaSchedule.linear(100).grid(20.0, end_at_t_min=True)
    with pytest.raises(TypeError, match="end_at_t_min must be a bool"):
        BetaSchedule.linear(100).grid(0.0, end_at_t_min=1)
