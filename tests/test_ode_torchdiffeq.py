"""torchdiffeq's adaptive Runge–Kutta pairs (Chen et al. 2018; Dormand & Prince 1980; Bogacki &
Shampine 1989) for ``sample(method="ode")``, checked against the exact probability-flow map.

For Gaussian data p0 = N(μ, Σ0) the map from x_T to x_t is affine and known in closed form
(:func:`exact_flow`), so a solver's error is measured, not estimated. Errors are read in units of
the per-element tolerance, ``|x - x_exact| / (atol + rtol |x_exact|)`` (:func:`tolerance_units`):
the solvers control each step's local error to <= 1 in these units, and the global error after
tens of steps is a small multiple of it (DOPRI5_BOUND).
The bounds below are the measured values (stated next to each) times the slack named there; the
seeds are fixed, so the tests are deterministic.
"""

import math

import pytest
import torch

from diffsde import GaussianScore, NonFiniteSampleError, TimeGrid, resolve_method, sample
from diffsde.odeint import ADAPTIVE_SOLVERS, ODEFailure
from diffsde.samplers import featured_methods
from diffsde.samplers import external
from diffsde.samplers.noise import GeneratorNoise

# p0 = N((1, -2), [[2, 0.6], [0.6, 0.5]]): correlated, variances on both sides of 1.
SCORE = GaussianScore(torch.tensor([1.0, -2.0], dtype=torch.float64),
                      torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64))
T, T_MIN = 10.05, 1e-3
GRID = TimeGrid.uniform(T, T_MIN, 10)
SEED = 20261124


def exact_flow(x_T: torch.Tensor, t: float) -> torch.Tensor:
    """The probability-flow map from forward time T to t for p0 = N(μ, Σ0), float64.

    p_t = N(m_t, Σ_t) with m_t = e^{-t/2} μ and Σ_t = e^{-t} Σ0 + (1 - e^{-t}) I = U diag(λ_t) Uᵀ,
    λ_t = 1 + e^{-t} (λ0 - 1), in Σ0's eigenbasis U (the same for every t). In forward time the
    flow is dx/dt = -½ x - ½ s(x, t) with s = -Σ_t^{-1} (x - m_t); as dm_t/dt = -½ m_t, each
    coordinate of u = Uᵀ (x - m_t) obeys du/dt = ½ (1/λ_t - 1) u = ½ (d log λ_t / dt) u, so
    u ∝ sqrt(λ_t): x_t - m_t = Σ_t^{1/2} Σ_T^{-1/2} (x_T - m_T).
    """
    lam0, U = torch.linalg.eigh(SCORE.cov)
    gain = torch.sqrt((1 + math.exp(-t) * (lam0 - 1)) / (1 + math.exp(-T) * (lam0 - 1)))
    flow = U @ torch.diag(gain) @ U.T
    return (x_T.double() - math.exp(-T / 2) * SCORE.mean.to(x_T.device)) @ flow.to(x_T.device).T \
        + math.exp(-t / 2) * SCORE.mean.to(x_T.device)


def tolerance_units(x: torch.Tensor, exact: torch.Tensor, rtol: float, atol: float) -> float:
    """The largest error in units of the per-element tolerance atol + rtol |x_exact|."""
    return float(((x.double() - exact).abs() / (atol + rtol * exact.abs())).max())


def run(solver: str, tol: float, n: int = 256):
    """x_T ~ the exact p_T (float64), integrated to T_MIN; returns (x, path, info) (path[0] is x_T)."""
    return sample(SCORE, "ode", grid=GRID, n_samples=n, prior="exact", generator=SEED, dtype=torch.float64,
                  solver=solver, rtol=tol, atol=tol, return_path=True, return_info=True)


# dopri5's error in tolerance units, measured below: 0.17 to 0.37 at the end (its last step lands on
# T - t_min: diffsde.odeint passes torchdiffeq's step_t), 5.6 at the grid times in between, which
# torchdiffeq interpolates (a fourth-order dense output) rather than steps to. Bounds: about 5x and
# 3.5x the worst measured.
DOPRI5_BOUND = 2.0
INTERPOLATED_BOUND = 20.0


def test_dopri5_follows_the_exact_flow_map():
    x, path, info = run("dopri5", 1e-8)
    x_T = path[0]
    assert tolerance_units(x, exact_flow(x_T, T_MIN), 1e-8, 1e-8) <= DOPRI5_BOUND
    for k, t in enumerate(GRID.times.tolist()):  # the interpolated states at the grid times
        assert tolerance_units(path[k], exact_flow(x_T, t), 1e-8, 1e-8) <= INTERPOLATED_BOUND
    assert 100 < info["nfe"] < 1000  # measured 320


@pytest.mark.parametrize("solver", list(ADAPTIVE_SOLVERS))
def test_a_tighter_tolerance_gives_a_smaller_error_for_more_evaluations(solver):
    # From 1e-3 to 1e-5 the error shrank by 24x (dopri5) to 180x (dopri8, fehlberg2); the local
    # error bound shrinks 100x. Required: 5x.
    errors, nfes = [], []
    for tol in (1e-3, 1e-5):
        x, path, info = run(solver, tol, n=64)
        errors.append(float((x - exact_flow(path[0], T_MIN)).abs().max()))
        nfes.append(info["nfe"])
    assert errors[1] <= errors[0] / 5
    assert nfes[1] > nfes[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_output_keeps_its_dtype_and_device_and_the_state_never_leaves_it(device, dtype):
    seen = []

    def watched(x, t):
        seen.append((x.device, x.dtype))
        return SCORE(x, t)

    x_T = SCORE.sample(64, T, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)
    x, path, info = sample(watched, "ode-dopri5", grid=GRID, x_T=x_T.to(device, dtype), rtol=1e-5, atol=1e-5,
                           return_path=True, return_info=True)
    assert (x.dtype, path.dtype, x.device.type, path.device.type) == (dtype, dtype, device.type, device.type)
    assert {(d.type, dt) for d, dt in seen} == {(device.type, dtype)} and len(seen) == info["nfe"]
    # Measured 0.25 (float32) and 0.37 (float64) tolerance units at 1e-5; float32's rounding (6e-8
    # relative) is far below the tolerance. Bound: DOPRI5_BOUND.
    assert tolerance_units(x, exact_flow(x_T.to(device), T_MIN), 1e-5, 1e-5) <= DOPRI5_BOUND


def test_dopri5_agrees_with_scipy_rk45_within_both_tolerances():
    # Both follow the same flow to their tolerance: |dopri5 - RK45| <= dopri5's bound + RK45's.
    # RK45 measured 0.54 units at 1e-8 (scipy's RMS norm over the 2N = 128 numbers could let one
    # reach sqrt(128) = 11 units; bound 12). The difference measured 0.41 units.
    tol = 1e-8
    x, path, _ = run("dopri5", tol, n=64)
    x_scipy = sample(SCORE, "ode-RK45", grid=GRID, x_T=path[0], rtol=tol, atol=tol)
    exact = exact_flow(path[0], T_MIN)
    assert tolerance_units(x_scipy, exact, tol, tol) <= 12
    assert float(((x - x_scipy).abs() / (tol + tol * exact.abs())).max()) <= DOPRI5_BOUND + 12


def test_return_path_reports_the_grid_times_without_changing_the_output():
    x, path, info = run("dopri5", 1e-6, n=32)
    assert path.shape == (GRID.n + 1, 32, 2)
    assert torch.equal(path[-1], x)
    # Output times are interpolated, not stepped to: the steps, hence the output, are the same
    # with or without them.
    alone, alone_info = sample(SCORE, "ode-dopri5", grid=GRID, x_T=path[0], rtol=1e-6, atol=1e-6, return_info=True)
    assert torch.equal(alone, x) and alone_info["nfe"] == info["nfe"]


def test_the_reported_nfe_is_the_number_of_score_evaluations():
    calls = []

    def counted(x, t):
        calls.append(t)
        return SCORE(x, t)

    x_T = SCORE.sample(16, T, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)
    _, info = sample(counted, "ode-bosh3", grid=GRID, x_T=x_T, rtol=1e-4, atol=1e-4, return_info=True)
    assert info["nfe"] == len(calls) > 0
    # Every evaluation is inside [t_min, T] (up to the rounding of T - (T - t_min) in float64),
    # although torchdiffeq's last step passes the last time (measured: to forward time -0.1).
    assert T_MIN - 1e-12 * T <= min(calls) and max(calls) <= T
    calls.clear()
    sampler = resolve_method("ode-bosh3", rtol=1e-4, atol=1e-4)
    _, path, nfe = sampler.runner(sampler, counted, GRID, x_T, GeneratorNoise(None), False, False, True, 100)
    assert path is None and nfe == len(calls) == info["nfe"]


def test_the_adaptive_torchdiffeq_variants_are_declared_like_scipys():
    for solver in ADAPTIVE_SOLVERS:
        sampler = resolve_method(f"ode-{solver}")
        assert sampler.runner is external.run_ode_torchdiffeq
        assert (sampler.weak_order, sampler.noise_draws, sampler.score_evals, sampler.evaluates_at_end,
                sampler.affine) == (None, 0, None, True, False)
        assert sampler.options == {"solver": solver, "rtol": 1e-5, "atol": 1e-5}
    # scipy's keep their runner and their own check (any rtol, atol > 0).
    assert resolve_method("ode-RK45", rtol=2.0, atol=3.0).runner is external.run_ode_adaptive
    assert featured_methods().count("ode-dopri5") == 0


@pytest.mark.parametrize("options,error,fragment", [
    ({"rtol": 0.0}, ValueError, "rtol"),
    ({"rtol": -1e-6}, ValueError, "rtol"),
    ({"atol": 1.0}, ValueError, "atol"),
    ({"atol": math.nan}, ValueError, "atol"),
    ({"rtol": "1e-5"}, TypeError, "rtol"),
    ({"atol": True}, TypeError, "atol"),
    ({"solver": "dopri6"}, ValueError, r"unknown ODE solver 'dopri6'.*heun.*dopri5.*RK45"),
    ({"solver": 5}, TypeError, "solver must be a str"),
    ({"solver": "euler", "rtol": 1e-3}, TypeError, "rtol/atol apply to the adaptive ODE solvers"),
])
def test_bad_options_are_refused_by_name(options, error, fragment):
    with pytest.raises(error, match=fragment):
        resolve_method("ode", **{"solver": "dopri5", **options})


@pytest.mark.parametrize("check_finite", [True, False])
def test_a_score_that_turns_nan_raises_non_finite_sample_error(check_finite):
    def nan_below_one(x, t):
        value = SCORE(x, t)
        return value * math.nan if t < 1.0 else value

    x_T = SCORE.sample(8, T, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)
    with pytest.raises(NonFiniteSampleError, match=r"'ode-dopri5'.*non-finite.*forward time t = 0\.\d+") as caught:
        sample(nan_below_one, "ode-dopri5", grid=GRID, x_T=x_T, check_finite=check_finite)
    # The named time is one where the score was NaN (measured 0.843: the stage past t = 1 of the
    # step that straddled it).
    assert float(str(caught.value).split("forward time t = ")[1].split(",")[0]) < 1.0


def test_a_solver_failure_without_nan_names_the_solver_and_suggests_looser_tolerances(monkeypatch):
    def fail(*args, **kwargs):
        raise ODEFailure("dopri8 stopped (max_num_steps exceeded (100000>=100000))", non_finite=False)

    monkeypatch.setattr(external, "solve", fail)
    with pytest.raises(RuntimeError, match=r"'dopri8'.*max_num_steps.*looser tolerances than rtol = 1e-09"):
        sample(SCORE, "ode-dopri8", grid=GRID, n_samples=4, rtol=1e-9, atol=1e-9)
