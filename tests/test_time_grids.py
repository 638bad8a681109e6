"""The log-SNR and Karras grids (TimeGrid.log_snr, TimeGrid.karras): their times against the
formulas and k-diffusion's get_sigmas_karras, endpoints, monotonicity and refused arguments."""

import inspect
import math

import pytest
import torch

from diffsde import TimeGrid
from diffsde.coordinates import log_snr, time_from_ve_sigma, ve_sigma
from peers import k_diffusion_sampling

CASES = [(10.0, 1e-2, 1), (10.0, 1e-2, 7), (10.0, 1e-3, 50), (3.0, 0.5, 10), (80.0, 1e-5, 200)]


def sigmas(grid: TimeGrid) -> torch.Tensor:
    return torch.tensor([ve_sigma(t) for t in grid.times.tolist()], dtype=torch.float64)


@pytest.mark.parametrize("rho", [7.0, 3.0, 1.0, 0.5])
@pytest.mark.parametrize("T,t_min,n", CASES)
def test_karras_sigmas_equal_k_diffusion(T, t_min, n, rho):
    sampling = k_diffusion_sampling()
    sigma_min, sigma_max = ve_sigma(t_min), ve_sigma(T)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # its linspace ramp in float64 (float32 by default)
    try:
        theirs = sampling.get_sigmas_karras(n + 1, sigma_min, sigma_max, rho=rho)
    finally:
        torch.set_default_dtype(default)
    assert theirs.dtype == torch.float64 and float(theirs[-1]) == 0.0  # its appended σ = 0 (t = 0)
    ours = sigmas(TimeGrid.karras(T, t_min, n, rho=rho))
    # Both in float64. s_i = top + (i / n)(bottom - top) with top = σ_max^{1/ρ} carries an error of a
    # few ulps of top, which σ_i = s_i^ρ turns into a relative error of ρ ε top / s_i (1e-15 for ρ = 7,
    # up to 4e-10 near σ_min for ρ = 0.5, where the sum cancels: at T = 80 it cancels completely
    # and k-diffusion's σ_min is 0); our round trip σ -> t -> σ adds a relative error of a few ulps
    # of t. So each σ_i is compared to 16 times the sum of the two.
    top = sigma_max ** (1 / rho)
    times = TimeGrid.karras(T, t_min, n, rho=rho).times
    bound = 16 * torch.finfo(torch.float64).eps * (rho * top / ours ** (1 / rho) + times.clamp(min=1)) * ours
    assert bool(((ours - theirs[:-1]).abs() <= bound).all())


@pytest.mark.parametrize("T,t_min,n", CASES)
def test_karras_is_eq_5_in_ve_sigma(T, t_min, n):
    grid = TimeGrid.karras(T, t_min, n, rho=7.0)
    top, bottom = ve_sigma(T) ** (1 / 7), ve_sigma(t_min) ** (1 / 7)
    expected = [time_from_ve_sigma((top + i / n * (bottom - top)) ** 7) for i in range(n + 1)]
    torch.testing.assert_close(grid.times, torch.tensor(expected, dtype=torch.float64), rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("T,t_min,n", CASES)
def test_log_snr_is_uniform_in_lambda(T, t_min, n):
    grid = TimeGrid.log_snr(T, t_min, n)
    lambdas = torch.tensor([log_snr(t) for t in grid.times.tolist()], dtype=torch.float64)
    steps = lambdas.diff()
    expected = (log_snr(t_min) - log_snr(T)) / n
    # Each λ_i round-trips through t_i = log(1 + e^{-2λ_i}) (a few ulps of |λ| <= 40): 1e-12.
    assert float((steps - expected).abs().max()) <= 1e-12


@pytest.mark.parametrize("kind", ["karras", "log_snr"])
@pytest.mark.parametrize("T,t_min,n", CASES)
def test_grids_are_bare_decreasing_and_end_exactly(kind, T, t_min, n):
    grid = getattr(TimeGrid, kind)(T, t_min, n)
    assert grid.n == n and grid.source == "times"
    assert grid.T == T and grid.t_min == t_min  # endpoints exact, not round-tripped
    assert grid.times.dtype == torch.float64 and bool((grid.times.diff() < 0).all())
    assert torch.equal(grid.betas, grid.times[:-1] - grid.times[1:])
    assert torch.equal(grid.alpha_bars, torch.exp(-grid.times))


def test_karras_rho_one_is_uniform_in_sigma_and_large_rho_tends_to_log_snr():
    uniform = sigmas(TimeGrid.karras(10.0, 1e-2, 16, rho=1.0))
    assert float((uniform.diff() - uniform.diff()[0]).abs().max()) <= 1e-12
    log_grid = TimeGrid.log_snr(10.0, 1e-2, 16).times
    # (a^{1/ρ} + u (b^{1/ρ} - a^{1/ρ}))^ρ = a^{1-u} b^u (1 + O(log(b/a)² / ρ)): the gap falls as 1/ρ.
    gaps = [float((TimeGrid.karras(10.0, 1e-2, 16, rho=rho).times - log_grid).abs().max()) for rho in (1e4, 1e5)]
    assert 9 < gaps[0] / gaps[1] < 11 and gaps[1] < 2e-4


def test_grid_constructors_take_one_argument_order():
    head = list(inspect.signature(TimeGrid.uniform).parameters)
    assert head == ["T", "t_min", "n"]
    for kind in ("log_snr", "karras"):
        assert list(inspect.signature(getattr(TimeGrid, kind)).parameters)[:3] == head


@pytest.mark.parametrize("kind", ["karras", "log_snr"])
@pytest.mark.parametrize("args,error,match", [
    ((10.0, 0.0, 5), ValueError, "needs t_min > 0"),
    ((10.0, -1e-3, 5), ValueError, "t_min must be in"),
    ((10.0, 10.0, 5), ValueError, "need 0 < t_min < T"),
    ((1e-3, 1e-2, 5), ValueError, "need 0 < t_min < T"),
    ((10.0, 1e-2, 0), ValueError, "n must be an int >= 1"),
    ((10.0, 1e-2, 2.0), TypeError, "n must be an int"),
    ((math.inf, 1e-2, 5), ValueError, "T must be in"),
    ((800.0, 1e-2, 5), ValueError, "T must be in"),
    ((math.nan, 1e-2, 5), ValueError, "T must be in"),
    (("10", 1e-2, 5), TypeError, "T must be a real number"),
    ((10.0, None, 5), TypeError, "t_min must be a real number"),
])
def test_bad_arguments_are_refused(kind, args, error, match):
    with pytest.raises(error, match=match):
        getattr(TimeGrid, kind)(*args)


@pytest.mark.parametrize("rho,error,match", [
    (0.0, ValueError, "rho must be in"),
    (-7.0, ValueError, "rho must be in"),
    (math.inf, ValueError, "rho must be in"),
    (math.nan, ValueError, "rho must be in"),
    ("7", TypeError, "rho must be a real number"),
    (1e-3, ValueError, "rho = 0.001 is too small"),
])
def test_bad_rho_is_refused(rho, error, match):
    with pytest.raises(error, match=match):
        TimeGrid.karras(10.0, 1e-2, 5, rho=rho)
