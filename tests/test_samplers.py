"""The samplers on one grid: declared orders, exact output laws, recovery, determinism, guards.

Tolerances: Gaussian outputs are compared through their exact law (``exact_output_law``), so
a Monte Carlo check only needs the standard errors of a sample mean and covariance of that
law (computed from it, not estimated); non-Gaussian outputs use standard errors estimated
from the samples. ``Z = 4.5`` standard errors gives a two-sided false-alarm rate of 7e-6 per
compared number; with the fixed seeds below the tests are deterministic anyway.
"""

import math

import pytest
import torch

from conftest import make_generator
from diffsde import (METHODS, SAMPLERS, BetaSchedule, EpsilonMLP, EpsilonScore, GaussianScore, NonFiniteSampleError,
                     TimeGrid, exact_output_law, has_exact_law, resolve_method, sample)
from diffsde.orders import fit_order
from diffsde.metrics import gaussian_w2, mode_weights
from diffsde.samplers import TORCHSDE_SOLVERS, langevin_step, plan, snr_step_size, tweedie_start
from diffsde.toys import ring

Z = 4.5

# p0 = N((1, -0.5), [[1.5, 0.4], [0.4, 0.3]]): anisotropic (variances on both sides of 1), correlated.
GAUSSIAN = GaussianScore(torch.tensor([1.0, -0.5], dtype=torch.float64),
                         torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64))

def fixed_grid_methods() -> list[tuple[str, dict]]:
    """Every registered variant that steps on diffsde's own loop and is affine (so it has an exact
    law), once per distinct (name, options), read from the registry; plus ddpm with σ² = β̃."""
    seen, methods = set(), []
    for variant in METHODS.variants():
        sampler = resolve_method(variant)
        key = (sampler.name, tuple(sorted(sampler.options.items())))
        if sampler.runner is None and sampler.affine and key not in seen:
            seen.add(key)
            methods.append((sampler.name, dict(sampler.options)))
    return methods + [("ddpm", {"variance": "beta_tilde"})]


FIXED_METHODS = fixed_grid_methods()
ALL_METHODS = FIXED_METHODS + [
    ("ode", {"solver": "RK45", "rtol": 1e-4, "atol": 1e-4}),
    ("torchsde", {"solver": "euler"}),
    ("pc", {}),
]


def label(method: str, options: dict) -> str:
    return "-".join([method, *map(str, options.values())])


def gaussian_law_tolerances(cov: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Z standard errors of the sample mean (d,) and sample covariance (d, d) of n draws of a
    Gaussian with covariance ``cov``: Var(mean_i) = C_ii / n, Var(C_ij) = (C_ii C_jj + C_ij²) / n."""
    diag = torch.diagonal(cov)
    return Z * torch.sqrt(diag / n), Z * torch.sqrt((diag[:, None] * diag[None, :] + cov ** 2) / n)


def sample_tolerances(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Z standard errors of the sample mean and covariance, estimated from the samples themselves:
    the covariance entry C_ij is the mean of (x_i - m_i)(x_j - m_j), whose variance is estimated."""
    centred = x - x.mean(0)
    products = centred[:, :, None] * centred[:, None, :]
    n = x.shape[0]
    return Z * centred.std(0) / math.sqrt(n), Z * products.std(0) / math.sqrt(n)


# --------------------------------------------------------------------------------------
# Declared orders, measured exactly.
# --------------------------------------------------------------------------------------

# Step counts per declared order: the errors must stay well above gaussian_w2's round-off floor
# (~1e-8: the Bures term cancels to 1e-16 before its square root), so order 2 stops earlier; it starts at
# n = 50, where unipc-2 (whose warm-up is damped by α_T) has left its pre-asymptotic range.
ORDER_NS = {1.0: [25, 50, 100, 200, 400, 800, 1600], 2.0: [50, 100, 200, 400, 800]}
# The grids end at t_min > 0 and the error is measured against p_{t_min}: a step to t = 0 is infinitely
# long in log-SNR, where the exponential integrators (and Heun in σ_VE) take a first-order step.
ORDER_T_MIN = 1e-2


def order_cases() -> list:
    """Every fixed-grid method of declared order 1 or 2 on a grid uniform in log-SNR, and those stepping in
    OU time also on the linear schedule's grids (step-sum and exact times). A grid uniform in t is
    pre-asymptotic for the λ- and σ_VE-methods at these n (their steps near t_min are long in λ), and
    order 3 reaches the W2 floor before its asymptotic range on a common n range: those are checked on
    λ-uniform grids with their own n ranges (tests/test_ddim_dpm_solver.py, tests/test_unipc_sde.py)."""
    cases = []
    for method, options in FIXED_METHODS:
        sampler = plan(method, options)
        if sampler.weak_order not in ORDER_NS:
            continue
        kinds = ["seed-times", "exact-times", "log-snr"] if sampler.coordinates == "t" else ["log-snr"]
        cases += [pytest.param(method, options, kind, id=f"{label(method, options)}-{kind}") for kind in kinds]
    return cases


@pytest.mark.parametrize("method,options,grid_kind", order_cases())
def test_declared_weak_order_is_the_fitted_slope_of_the_exact_error(method, options, grid_kind):
    # The error of the exact output law against the exact p_{t_min} (T = 10.05 down to t_min = 0.01) has no
    # Monte Carlo noise, only discretization error C / n^p + D / n^(p+1) + .... The least-squares slope over
    # these ranges departs from the asymptotic p through the D-term: measured at most 0.084 (vp on log-SNR,
    # 1.084; unipc-2 2.05, whose local slopes come down from 2.4 at n = 50), so ±0.15 accepts every correct
    # order and refuses a wrong one (0.5 from mis-scaled noise, 1 for Heun).
    declared = plan(method, options).weak_order
    ns = ORDER_NS[declared]
    errors = []
    for n in ns:
        if grid_kind == "log-snr":
            grid = TimeGrid.log_snr(10.05, ORDER_T_MIN, n)
        else:
            grid = BetaSchedule.linear(n).grid(t_min=ORDER_T_MIN, exact_times=grid_kind == "exact-times",
                                               end_at_t_min=True)
        mean, cov = exact_output_law(method, GAUSSIAN, grid=grid, prior="exact", **options)
        errors.append(gaussian_w2(mean, cov, *GAUSSIAN.mean_and_cov(ORDER_T_MIN)))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert fit_order(ns, errors) == pytest.approx(declared, abs=0.15), errors


# On a linear drift (Gaussian data) midpoint and reversible Heun gain an order: the f'' term of the
# Itô–Taylor expansion they do not match vanishes there. Their declared (general) order is 1.
LINEAR_GAIN = {"midpoint", "reversible_heun"}


@pytest.mark.parametrize("solver", sorted(TORCHSDE_SOLVERS))
def test_torchsde_declared_weak_order_is_the_fitted_slope_of_the_exact_error(solver):
    # As above, with torchsde's fixed-step solvers fed injected Brownian increments (and areas):
    # exact laws from the exact p_T on the linear schedule's grids, no Monte Carlo noise. Measured
    # slopes: euler/milstein 1.02, srk 2.02, heun 2.07, midpoint 2.03 (its linear gain); ±0.15 as above.
    declared = plan("torchsde", {"solver": solver}).weak_order
    expected = declared + 1.0 if solver in LINEAR_GAIN else declared
    ns = [25, 50, 100, 200, 400]
    errors = [gaussian_w2(*exact_output_law("torchsde", GAUSSIAN, schedule=BetaSchedule.linear(n), prior="exact",
                                            solver=solver), *GAUSSIAN.mean_and_cov(0.0)) for n in ns]
    assert fit_order(ns, errors) == pytest.approx(expected, abs=0.15), errors


def test_every_method_declares_its_order():
    declared = {label(m, o): plan(m, o).weak_order for m, o in FIXED_METHODS}
    assert {key: declared[key] for key in ("vp", "ddpm-beta", "ddpm-beta_tilde", "em", "ode-euler", "ode-heun")} == {"vp": 1.0, "ddpm-beta": 1.0, "ddpm-beta_tilde": 1.0, "em": 1.0, "ode-euler": 1.0,
                        "ode-heun": 2.0}
    assert plan("torchsde", {"solver": "euler"}).weak_order == 1.0
    # Rößler's SRA1 and the additive-noise Heun scheme are weak order 2; strong 1.5 and 1.
    assert (plan("torchsde", {"solver": "srk"}).weak_order, plan("torchsde", {"solver": "srk"}).strong_order) == (2.0, 1.5)
    assert plan("torchsde", {"solver": "heun"}).weak_order == 2.0
    # A Langevin corrector with a fixed step leaves an O(step) bias: no order in n.
    assert plan("pc", {"step_size": 0.01}).weak_order is None
    assert plan("pc", {"corrector_steps": 0}).weak_order == 1.0
    assert set(SAMPLERS) == {"vp", "ddpm", "em", "ode", "torchsde", "pc", "ddim", "dpm-solver", "unipc",
                             "dpm-solver-sde", "edm"}


# --------------------------------------------------------------------------------------
# The exact output law is the law of what `sample` returns.
# --------------------------------------------------------------------------------------

LAW_METHODS = FIXED_METHODS + [("pc", {"predictor": "em", "corrector_steps": 2, "step_size": 0.02})]


@pytest.mark.parametrize("start,prior", [("exact", "exact"), ("prior", "normal")])
@pytest.mark.parametrize("method,options", LAW_METHODS, ids=[label(*m) for m in LAW_METHODS])
def test_exact_output_law_is_the_law_of_the_samples(device, method, options, start, prior):
    # A coarse grid (25 steps) makes every method's law visibly different from p_0 and from
    # each other's, so agreement here pins the law of this very method.
    schedule = BetaSchedule.linear(25)
    law_mean, law_cov = exact_output_law(method, GAUSSIAN, schedule=schedule, start=start, **options)
    n = 200_000
    x = sample(GAUSSIAN, method, schedule=schedule, n_samples=n, generator=make_generator(device, 3),
               device=device, dtype=torch.float64, prior=prior, **options).cpu()
    mean_tol, cov_tol = gaussian_law_tolerances(law_cov, n)
    assert bool(((x.mean(0) - law_mean).abs() <= mean_tol).all()), (x.mean(0), law_mean)
    assert bool(((torch.cov(x.T) - law_cov).abs() <= cov_tol).all()), (torch.cov(x.T), law_cov)


def test_torchsde_euler_has_exactly_the_law_of_em(device):
    # Same scheme on the same grid: torchsde's Euler must have em's exact law (coarse grid,
    # where em's law is far from p_0's: W2 = 0.06, 13 standard errors of the mean).
    schedule = BetaSchedule.linear(25)
    law_mean, law_cov = exact_output_law("em", GAUSSIAN, schedule=schedule, prior="exact")
    n = 200_000
    x = sample(GAUSSIAN, "torchsde", schedule=schedule, n_samples=n, generator=make_generator(device, 5),
               device=device, dtype=torch.float64, prior="exact", solver="euler").cpu()
    mean_tol, cov_tol = gaussian_law_tolerances(law_cov, n)
    assert bool(((x.mean(0) - law_mean).abs() <= mean_tol).all())
    assert bool(((torch.cov(x.T) - law_cov).abs() <= cov_tol).all())


def test_probability_flow_ode_solved_adaptively_is_the_exact_transport_map(device):
    # For Gaussian p0 every Σ_t = e^{-t} Σ0 + (1 - e^{-t}) I shares Σ0's eigenvectors U, and the
    # probability-flow ODE moves x - m_t along each eigenvector as sqrt(v_i(t)), v_i(t) = e^{-t}
    # λ_i + 1 - e^{-t}. So x_{t_min} = m_{t_min} + U diag(sqrt(v(t_min) / v(T))) Uᵀ (x_T - m_T).
    T, t_min = 8.0, 0.05
    grid = TimeGrid.uniform(T, t_min, 10)
    x_T = GAUSSIAN.sample(64, t=T, generator=make_generator(device, 1), device=device, dtype=torch.float64)
    x, info = sample(GAUSSIAN, "ode", grid=grid, x_T=x_T, solver="DOP853", rtol=1e-10, atol=1e-10,
                     return_info=True)
    eigvals, eigvecs = torch.linalg.eigh(GAUSSIAN.cov)

    def variances(t):
        return math.exp(-t) * eigvals + (1 - math.exp(-t))

    flow = eigvecs @ torch.diag(torch.sqrt(variances(t_min) / variances(T))) @ eigvecs.T
    mean_T, _ = GAUSSIAN.mean_and_cov(T)
    mean_min, _ = GAUSSIAN.mean_and_cov(t_min)
    expected = mean_min + (x_T.cpu() - mean_T) @ flow.T
    assert torch.allclose(x.cpu(), expected, atol=1e-7, rtol=0)
    assert info["nfe"] > 10 and info["steps"] == 10


# --------------------------------------------------------------------------------------
# Mixture recovery with the exact score.
# --------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method,options", ALL_METHODS, ids=[label(*m) for m in ALL_METHODS])
def test_every_method_recovers_the_ring_mixture(device, method, options):
    # 8 Gaussians on a circle of radius 4 (std 0.5), exact score, the linear 1000-step
    # schedule. Weights: the 0.01 (the standard error of a weight 1/8 at N = 1e5 is
    # 0.001, and discretization at 1000 steps moves them by ~1e-3). Mean and covariance: Z
    # standard errors estimated from the samples (the discretization bias at 1000 steps, ~1e-3
    # in W2 for a Gaussian, is a tenth of one standard error here).
    toy = ring()
    n = 100_000
    x = sample(toy.exact_score, method, schedule=BetaSchedule.linear(1000), n_samples=n,
               generator=make_generator(device, 11), device=device, **options).cpu().double()
    weights = mode_weights(x, toy.means)
    assert float((weights - toy.weights).abs().max()) <= 0.01
    mean, cov = toy.mean_and_cov(0.0)
    mean_tol, cov_tol = sample_tolerances(x)
    assert bool(((x.mean(0) - mean).abs() <= mean_tol).all()), x.mean(0)
    assert bool(((torch.cov(x.T) - cov).abs() <= cov_tol).all()), torch.cov(x.T)


def test_em_and_torchsde_euler_agree_in_law_on_the_mixture():
    # Two independent samples; their mode weights, means and covariances differ by no more
    # than Z standard errors of a difference (the two SEs added in quadrature).
    toy = ring()
    schedule = BetaSchedule.linear(200)
    n = 50_000
    em = sample(toy.exact_score, "em", schedule=schedule, n_samples=n, generator=1).double()
    sde = sample(toy.exact_score, "torchsde", schedule=schedule, n_samples=n, generator=2, solver="euler").double()
    w_em, w_sde = mode_weights(em, toy.means), mode_weights(sde, toy.means)
    weight_se = torch.sqrt(2 * w_em * (1 - w_em) / n)
    assert bool(((w_em - w_sde).abs() <= Z * weight_se).all())
    (m1, c1), (m2, c2) = sample_tolerances(em), sample_tolerances(sde)
    assert bool(((em.mean(0) - sde.mean(0)).abs() <= torch.hypot(m1, m2)).all())
    assert bool(((torch.cov(em.T) - torch.cov(sde.T)).abs() <= torch.hypot(c1, c2)).all())


@pytest.mark.parametrize("solver", sorted(TORCHSDE_SOLVERS))
def test_every_torchsde_solver_samples_the_gaussian(solver):
    # 1000 steps: each solver is weak order 1 here, a bias of ~1e-3 against the standard errors
    # (~0.03 on the mean at n = 4000), so the exact p_0 law's tolerances apply.
    n = 4000
    x, info = sample(GAUSSIAN, "torchsde", schedule=BetaSchedule.linear(1000), n_samples=n, generator=4,
                     dtype=torch.float64, solver=solver, return_info=True)
    mean, cov = GAUSSIAN.mean_and_cov(0.0)
    mean_tol, cov_tol = gaussian_law_tolerances(cov, n)
    assert bool(((x.mean(0) - mean).abs() <= mean_tol).all())
    assert bool(((torch.cov(x.T) - cov).abs() <= cov_tol).all())
    assert info["nfe"] >= 1000


def test_torchsde_adaptive_and_non_uniform_grids_land_on_the_grid():
    n = 20_000
    schedule = BetaSchedule.linear(100)  # non-uniform: one sdeint call per interval
    x_T = torch.randn(n, 2, generator=make_generator("cpu", 9), dtype=torch.float64)
    x, path = sample(GAUSSIAN, "torchsde", schedule=schedule, x_T=x_T, generator=9, return_path=True)
    assert path.shape == (101, n, 2) and torch.equal(path[0], x_T) and torch.equal(path[-1], x)
    mean, cov = GAUSSIAN.mean_and_cov(0.0)
    adaptive, info = sample(GAUSSIAN, "torchsde", grid=TimeGrid.uniform(10.0, 0.0, 10), n_samples=n, generator=9,
                            dtype=torch.float64, adaptive=True, rtol=1e-3, atol=1e-3, return_info=True)
    for out in (x, adaptive):
        # Adaptive Euler's bias at these tolerances is ~1e-2 on the mean; the allowance is 0.02.
        mean_tol, cov_tol = gaussian_law_tolerances(cov, n)
        assert bool(((out.mean(0) - mean).abs() <= mean_tol + 0.02).all())
        assert bool(((torch.cov(out.T) - cov).abs() <= cov_tol + 0.02).all())
    assert info["nfe"] > 0 and info["weak_order"] is None


# --------------------------------------------------------------------------------------
# Steps are the published formulas.
# --------------------------------------------------------------------------------------

def test_vp_step_on_a_bare_grid_uses_beta_equal_to_the_time_step():
    # The VP step: x <- (x + s(x, t) β) / sqrt(1 - β) + sqrt(β) z with β = Δt on a bare grid.
    x_T = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    grid = [2.0, 1.75]
    generator = make_generator("cpu", 0)
    x = sample(GAUSSIAN, "vp", grid=grid, x_T=x_T, generator=generator)
    z = torch.randn(1, 2, generator=make_generator("cpu", 0), dtype=torch.float64)
    beta = 0.25
    expected = (x_T + beta * GAUSSIAN.score(x_T, 2.0)) / math.sqrt(1 - beta) + math.sqrt(beta) * z
    assert torch.allclose(x, expected, rtol=1e-14, atol=1e-14)


def test_ddpm_step_on_a_schedule_is_ho_et_al_with_the_schedules_alpha_bars():
    # Ho et al. 2020, eq. 11 and Algorithm 2, with ε = -sqrt(1 - ᾱ_t) s: two steps (the last one without noise).
    schedule = BetaSchedule.linear(30)
    grid = schedule.grid()
    x_T = torch.tensor([[0.3, -1.2], [2.0, 0.1]], dtype=torch.float64)
    alpha_bars = schedule.alpha_bars.flip(0)
    times = schedule.times.flip(0)
    # Run only the last two steps: a schedule grid cut at t_2 has the same last two steps.
    small = TimeGrid(grid.times[-3:], grid.betas[-2:], grid.alpha_bars[-3:], source="schedule")
    x = sample(GAUSSIAN, "ddpm", grid=small, x_T=x_T, generator=make_generator("cpu", 0), variance="beta_tilde")
    z = torch.randn((1,) + tuple(x_T.shape), generator=make_generator("cpu", 0), dtype=torch.float64)[0]
    state = x_T
    for k, noisy in ((-3, True), (-2, False)):
        a_t, a_prev = float(alpha_bars[k]), float(alpha_bars[k + 1])
        alpha, beta = a_t / a_prev, 1 - a_t / a_prev
        eps = -math.sqrt(1 - a_t) * GAUSSIAN.score(state, float(times[k]))
        state = (state - beta / math.sqrt(1 - a_t) * eps) / math.sqrt(alpha)
        if noisy:
            state = state + math.sqrt((1 - a_prev) / (1 - a_t) * beta) * z
    assert torch.allclose(x, state, rtol=1e-13, atol=1e-13)


def test_langevin_corrector_pulls_a_coarse_predictor_toward_the_target():
    # Langevin steps for p_t leave p_t nearly invariant and contract toward it, so on a
    # coarse grid (25 steps) adding corrector steps lowers the exact W2 error monotonically.
    schedule = BetaSchedule.linear(25)
    target = GAUSSIAN.mean_and_cov(0.0)
    errors = []
    for steps in (0, 1, 3, 10):
        law = exact_output_law("pc", GAUSSIAN, schedule=schedule, predictor="em", corrector_steps=steps,
                               step_size=0.01)
        errors.append(gaussian_w2(*law, *target))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0]


def test_langevin_step_and_snr_rule_are_the_published_formulas():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    score_value = torch.tensor([[0.5, -0.5], [1.0, 0.0]])
    noise = torch.tensor([[0.1, 0.2], [-0.3, 0.4]])
    assert torch.allclose(langevin_step(x, score_value, 0.04, noise), x + 0.04 * score_value + math.sqrt(0.08) * noise)
    # Song et al. 2021, Algorithm 5: ε = 2 α (r ‖z‖ / ‖s‖)², norms averaged over the batch.
    grad_norm = (math.sqrt(0.5) + 1.0) / 2
    noise_norm = (math.sqrt(0.05) + 0.5) / 2
    expected = 2 * 0.9 * (0.16 * noise_norm / grad_norm) ** 2
    assert float(snr_step_size(score_value, noise, 0.16, 0.9)) == pytest.approx(expected, rel=1e-6)
    # A zero score (a fresh ε-network) gives no correction rather than an infinite step.
    assert float(snr_step_size(torch.zeros_like(score_value), noise, 0.16, 0.9)) == 0.0


# --------------------------------------------------------------------------------------
# Determinism, shapes, dtypes, batching.
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,options", ALL_METHODS, ids=[label(*m) for m in ALL_METHODS])
def test_same_generator_same_samples(device, method, options):
    schedule = BetaSchedule.linear(50)
    runs = [sample(GAUSSIAN, method, schedule=schedule, n_samples=64, generator=make_generator(device, seed),
                   device=device, **options) for seed in (1, 1, 2)]
    if device.type == "cpu":
        assert torch.equal(runs[0], runs[1])  # bit-for-bit
    else:
        assert torch.allclose(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def random_gaussian(d: int, seed: int) -> GaussianScore:
    generator = torch.Generator().manual_seed(seed)
    factor = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return GaussianScore(torch.randn(d, generator=generator, dtype=torch.float64),
                         factor @ factor.T / d + 0.2 * torch.eye(d, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [1, 2, 16])
@pytest.mark.parametrize("method,options", ALL_METHODS, ids=[label(*m) for m in ALL_METHODS])
def test_shapes_dtypes_and_paths(device, method, options, d, dtype):
    score = random_gaussian(d, d)
    schedule = BetaSchedule.linear(30)
    x, path, info = sample(score, method, schedule=schedule, n_samples=5, generator=make_generator(device, 0),
                           device=device, dtype=dtype, return_path=True, return_info=True, **options)
    assert x.shape == (5, d) and x.dtype == dtype and x.device.type == device.type
    assert path.shape == (31, 5, d) and path.dtype == dtype and torch.equal(path[-1], x)
    assert bool(torch.isfinite(path).all())
    assert info["steps"] == 30 and info["nfe"] >= 1 and info["wall_time_s"] > 0


def test_deterministic_methods_treat_samples_independently(device):
    score = random_gaussian(3, 1)
    x_T = torch.randn(40, 3, generator=make_generator(device, 2), device=device, dtype=torch.float64)
    for options in ({"solver": "euler"}, {"solver": "heun"}):
        whole = sample(score, "ode", schedule=BetaSchedule.linear(40), x_T=x_T, **options)
        parts = torch.cat([sample(score, "ode", schedule=BetaSchedule.linear(40), x_T=chunk, **options)
                           for chunk in x_T.split(7)])
        assert torch.allclose(whole, parts, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# Guards.
# --------------------------------------------------------------------------------------

class NaNBelow:
    """The Gaussian's score, but NaN for t < threshold: a stand-in for a broken network."""

    dim = 2

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, x, t):
        value = GAUSSIAN.score(x, t)
        return value * math.nan if t < self.threshold else value


@pytest.mark.parametrize("check_every", [1, 7, 100])
def test_non_finite_values_name_the_method_step_and_time(check_every):
    grid = TimeGrid.uniform(10.0, 0.0, 50)  # t_k = 10 - 0.2 k: the first t_from below 3.1 is k = 35
    with pytest.raises(NonFiniteSampleError, match=r"'em'.*step 35 of 50.*t = 3 ->"):
        sample(NaNBelow(3.1), "em", grid=grid, n_samples=4, generator=0, check_every=check_every)
    x = sample(NaNBelow(3.1), "em", grid=grid, n_samples=4, generator=0, check_finite=False)
    assert bool(torch.isnan(x).all())


def test_non_finite_values_from_torchsde_and_the_adaptive_ode_are_refused():
    grid = TimeGrid.uniform(10.0, 0.0, 50)
    for method, options in (("torchsde", {}), ("ode", {"solver": "RK45"})):
        with pytest.raises((NonFiniteSampleError, ValueError, RuntimeError)):
            sample(NaNBelow(3.1), method, grid=grid, n_samples=4, generator=0, **options)


def tiny_epsilon_score() -> EpsilonScore:
    torch.manual_seed(0)
    return EpsilonScore(EpsilonMLP(2, hidden=8, depth=1, embed_dim=8))


def test_final_denoise_is_one_tweedie_step_after_the_run(device):
    # Tweedie's E[x0 | x_t] = (x + σ² s) / α at the grid's t_min, one more evaluation, the same noise.
    grid, t_min = TimeGrid.uniform(8.0, 0.05, 20), 0.05
    kwargs = dict(grid=grid, n_samples=64, generator=make_generator(device, 3), device=device, dtype=torch.float64)
    stopped = sample(GAUSSIAN, "em", **kwargs)
    kwargs["generator"] = make_generator(device, 3)
    denoised, path, info = sample(GAUSSIAN, "em", final="denoise", return_path=True, return_info=True, **kwargs)
    alpha, variance = math.exp(-t_min / 2), -math.expm1(-t_min)
    torch.testing.assert_close(denoised, (stopped + variance * GAUSSIAN(stopped, t_min)) / alpha, rtol=0, atol=1e-14)
    assert info["nfe"] == 21 and info["final"] == "denoise" and path.shape == (22, 64, 2)
    torch.testing.assert_close(path[-2], stopped, rtol=0, atol=0)
    # Its exact law: the affine Tweedie map J x + c with J = (I - σ² Σ_t^{-1}) / α applied to the stop law.
    mean, cov = exact_output_law("em", GAUSSIAN, grid=grid)
    mean_d, cov_d = exact_output_law("em", GAUSSIAN, grid=grid, final="denoise")
    _, cov_t = GAUSSIAN.mean_and_cov(t_min)
    jacobian = (torch.eye(2, dtype=torch.float64) - variance * torch.linalg.inv(cov_t)) / alpha
    torch.testing.assert_close(mean_d, (mean + variance * GAUSSIAN(mean[None], t_min)[0]) / alpha, rtol=0, atol=1e-13)
    torch.testing.assert_close(cov_d, jacobian @ cov @ jacobian.T, rtol=0, atol=1e-13)


def test_tweedie_start_moves_normal_draws_onto_the_mean_of_p_T(device):
    # x_T = α_T x̂0(ε) + σ_T ε with Tweedie's x̂0 at T: p_T's mean α_T μ is matched to O(α_T²) and its
    # covariance σ_T² I + α_T² Σ to O(α_T²), where N(0, I) misses the mean by α_T μ.
    T = 6.0
    grid = TimeGrid.uniform(T, 0.05, 30)
    mean_T, cov_T = GAUSSIAN.mean_and_cov(T)
    start_mean, start_cov = exact_output_law("ode-euler", GAUSSIAN, grid=TimeGrid.uniform(T, T - 1e-12, 1),
                                             prior="tweedie")
    alpha2 = math.exp(-T)
    assert float((start_mean - mean_T).norm()) < 2 * alpha2 * math.exp(-T / 2) * float(GAUSSIAN.mean.norm()) + 1e-12
    assert float((start_cov - cov_T).abs().max()) < 2 * alpha2 * 1.6  # O(α_T²) with Σ's largest entry 1.5
    assert float(mean_T.norm()) > 100 * float((start_mean - mean_T).norm())  # N(0, I) misses by all of it
    # sample(prior="tweedie") moves its draws (one more evaluation) and its law is the exact law's.
    x_T = torch.randn(4, 2, generator=make_generator(device, 4), dtype=torch.float64, device=device)
    moved, info = sample(GAUSSIAN, "em", grid=grid, x_T=x_T, prior="tweedie", generator=make_generator(device, 5),
                         return_info=True)
    plain = sample(GAUSSIAN, "em", grid=grid, x_T=tweedie_start(GAUSSIAN, x_T, T), generator=make_generator(device, 5))
    torch.testing.assert_close(moved, plain, rtol=0, atol=1e-14)
    assert info["nfe"] == 31
    x = sample(GAUSSIAN, "ode-heun", grid=grid, n_samples=40_000, prior="tweedie", generator=make_generator(device, 6),
               device=device, dtype=torch.float64).cpu()
    mean, cov = exact_output_law("ode-heun", GAUSSIAN, grid=grid, prior="tweedie")
    mean_tol, cov_tol = gaussian_law_tolerances(cov, x.shape[0])
    assert bool(((x.mean(0) - mean).abs() <= mean_tol).all()) and bool(((torch.cov(x.T) - cov).abs() <= cov_tol).all())


def test_a_given_x_T_and_prior_exact_are_refused_together():
    with pytest.raises(ValueError, match="not both"):
        sample(GAUSSIAN, "em", grid=TimeGrid.uniform(5.0, 0.1, 10), x_T=torch.zeros(3, 2), prior="exact")
    with pytest.raises(ValueError, match="prior"):
        sample(GAUSSIAN, "em", grid=TimeGrid.uniform(5.0, 0.1, 10), x_T=torch.zeros(3, 2), prior="uniform")


def test_final_denoise_needs_a_grid_ending_above_zero_and_a_known_choice():
    with pytest.raises(ValueError, match="already ends at t = 0"):
        sample(GAUSSIAN, "em", grid=TimeGrid.uniform(5.0, 0.0, 10), n_samples=4, final="denoise")
    with pytest.raises(ValueError, match="already ends at t = 0"):
        exact_output_law("em", GAUSSIAN, grid=TimeGrid.uniform(5.0, 0.0, 10), final="denoise")
    with pytest.raises(ValueError, match="final"):
        sample(GAUSSIAN, "em", grid=TimeGrid.uniform(5.0, 0.1, 10), n_samples=4, final="tweedie")


def test_a_grid_ending_at_zero_is_refused_only_where_an_epsilon_score_would_be_evaluated_there():
    score = tiny_epsilon_score()
    schedule = BetaSchedule.linear(30)  # its grid ends at t = 0
    for method, options in (("vp", {}), ("ddpm", {}), ("em", {}), ("ode", {"solver": "euler"})):
        with torch.no_grad():
            x = sample(score, method, schedule=schedule, n_samples=3, generator=0, **options)
        assert bool(torch.isfinite(x).all())
    for method, options in (("ode", {"solver": "heun"}), ("ode", {"solver": "RK45"}), ("pc", {}),
                            ("torchsde", {"solver": "heun"})):
        with pytest.raises(ValueError, match="t = 0"):
            sample(score, method, schedule=schedule, n_samples=3, generator=0, **options)
        with torch.no_grad():  # the same with t_min > 0 runs
            x = sample(score, method, schedule=schedule, t_min=1e-3, n_samples=3, generator=0, **options)
        assert bool(torch.isfinite(x).all())


@pytest.mark.parametrize("kwargs,error,fragment", [
    ({"method": "heun"}, ValueError, "unknown method 'heun'"),
    ({"method": "em", "solver": "euler"}, TypeError, "unknown option 'solver' for method 'em'"),
    ({"method": "ode", "solver": "rk4"}, ValueError, "unknown ODE solver"),
    ({"method": "ode", "solver": "euler", "rtol": 1e-3}, TypeError, "rtol/atol"),
    ({"method": "ode", "solver": "RK45", "rtol": -1.0}, ValueError, "rtol must be a number > 0"),
    ({"method": "ddpm", "variance": "sigma"}, ValueError, "variance must be"),
    ({"method": "torchsde", "solver": "rk4"}, ValueError, "unknown torchsde solver"),
    ({"method": "torchsde", "rtol": 1e-3}, TypeError, "adaptive=True"),
    ({"method": "pc", "predictor": "torchsde"}, ValueError, "predictor must be"),
    ({"method": "pc", "corrector_steps": -1}, ValueError, "corrector_steps"),
    ({"method": "pc", "snr": 0.0}, ValueError, "snr must be"),
    ({"method": "em", "grid": [1.0, 2.0]}, ValueError, "strictly decreasing"),
    ({"method": "em", "grid": [1.0, -0.5]}, ValueError, "must be >= 0"),
    ({"method": "em", "grid": [1.0, float("nan")]}, ValueError, "finite"),
    ({"method": "em", "grid": [1.0]}, ValueError, "at least two"),
    ({"method": "vp", "grid": [3.0, 1.5, 0.0]}, ValueError, "β < 1"),
    ({"method": "em", "schedule": BetaSchedule.linear(30), "grid": [1.0, 0.0]}, ValueError, "not both"),
    ({"method": "em", "schedule": [0.1, 0.2]}, TypeError, "BetaSchedule"),
    ({"method": "em", "n_samples": 0}, ValueError, "n_samples"),
    ({"method": "em", "n_samples": None}, ValueError, "n_samples"),
    ({"method": "em", "x_T": torch.zeros(4, 3)}, ValueError, "last dimension 2"),
    ({"method": "em", "x_T": torch.zeros(4, 2), "n_samples": 5}, ValueError, "does not match"),
    ({"method": "em", "x_T": torch.zeros(4, 2), "dtype": torch.float64}, ValueError, "contradicts"),
    ({"method": "em", "x_T": torch.full((4, 2), math.inf)}, ValueError, "NaN or infinite"),
    ({"method": "em", "n_samples": 4, "dtype": torch.int64}, TypeError, "floating-point"),
    ({"method": "em", "n_samples": 4, "generator": "seed"}, TypeError, "generator"),
    ({"method": "em", "n_samples": 4, "prior": "uniform"}, ValueError, "prior must be"),
    ({"method": "em", "n_samples": 4, "check_every": 0}, ValueError, "check_every"),
])
def test_bad_arguments_are_refused_clearly(kwargs, error, fragment):
    kwargs = dict(kwargs)
    method = kwargs.pop("method")
    kwargs.setdefault("n_samples", None if "x_T" in kwargs else 4)
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        sample(GAUSSIAN, method, **kwargs)


def test_exact_output_law_refuses_what_it_cannot_propagate():
    with pytest.raises(TypeError, match="GaussianScore"):
        exact_output_law("em", ring().exact_score)
    # Adaptive steps depend on the state, so the output is not an affine map of the noise.
    with pytest.raises(ValueError, match="affine"):
        exact_output_law("torchsde", GAUSSIAN, adaptive=True)
    with pytest.raises(ValueError, match="affine"):
        exact_output_law("ode", GAUSSIAN, solver="RK45")
    with pytest.raises(ValueError, match="step_size"):
        exact_output_law("pc", GAUSSIAN)
    with pytest.raises(ValueError, match="start must be"):
        exact_output_law("em", GAUSSIAN, start="uniform")
    with pytest.raises(ValueError, match="prior must be"):
        exact_output_law("em", GAUSSIAN, prior="uniform")
    with pytest.raises(TypeError, match="not both"):
        exact_output_law("em", GAUSSIAN, prior="exact", start="exact")
    # has_exact_law says the same thing before any work.
    assert [has_exact_law(m, **o) for m, o in FIXED_METHODS] == [True] * len(FIXED_METHODS)
    assert not has_exact_law("torchsde", adaptive=True) and not has_exact_law("ode", solver="RK45")
    assert not has_exact_law("pc")
    # torchsde's fixed-grid solvers are affine too: their law comes from injected increments.
    assert all(has_exact_law("torchsde", solver=solver) for solver in TORCHSDE_SOLVERS)
    assert has_exact_law("pc", step_size=0.01) and has_exact_law("pc", corrector_steps=0)


def test_progress_bar_is_shown_on_request(capsys):
    sample(GAUSSIAN, "em", schedule=BetaSchedule.linear(30), n_samples=4, generator=0, progress=True)
    err = capsys.readouterr().err  # tqdm writes (and, leave=False, then clears) its bar on stderr
    assert "em:" in err and "/30" in err


def test_sampling_a_learned_score_records_no_autograd_graph():
    # A graph over every step would keep all intermediate states alive (gigabytes at N = 5000).
    score = tiny_epsilon_score()
    x = sample(score, "em", schedule=BetaSchedule.linear(30), n_samples=8, generator=0)
    assert not x.requires_grad and x.grad_fn is None


