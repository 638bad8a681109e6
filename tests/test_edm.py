"""The "edm" sampler (Karras et al. 2022, Algorithm 2 in σ_VE): equality with k-diffusion's
sample_euler / sample_heun, declared orders measured with exact laws, the score's evaluation
times and counts, the churn window, and refused options."""

import math

import pytest
import torch

from conftest import make_generator
from diffsde import GaussianScore, TimeGrid, exact_output_law, resolve_method, sample
from diffsde.coordinates import ve_sigma
from diffsde.metrics import gaussian_w2
from diffsde.orders import fit_order
from peers import k_diffusion_sampling

# p0 = N((1, -0.5), [[1.5, 0.4], [0.4, 0.3]]): anisotropic, correlated.
GAUSSIAN = GaussianScore(torch.tensor([1.0, -0.5], dtype=torch.float64),
                         torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64))
T, T_MIN = 10.0, 1e-2


def epsilon(x: torch.Tensor, t: float) -> torch.Tensor:
    """A fixed nonlinear ε(x, t), mixing the coordinates, the same function for both sides."""
    sigma = math.sqrt(-math.expm1(-t))
    return 0.9 * sigma * x + 0.3 * torch.tanh(x.flip(-1) - 0.5 * x + 0.2 * t) + 0.05 * math.sin(t)


def score(x: torch.Tensor, t: float) -> torch.Tensor:
    """Our side: s = -ε / sqrt(1 - e^{-t})."""
    return -epsilon(x, t) / math.sqrt(-math.expm1(-t))


def denoiser(y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """k-diffusion's side: D(y; σ) = E[x0 | x_t = y / sqrt(1 + σ²)] = y - σ ε(x, t) at t = log(1 + σ²)."""
    s = float(sigma[0])
    t = math.log1p(s * s)
    return y - s * epsilon(y / math.sqrt(1.0 + s * s), t)


def grid_for(n: int, to_zero: bool) -> TimeGrid:
    grid = TimeGrid.karras(T, T_MIN, n)
    return TimeGrid.from_times([*grid.times.tolist(), 0.0]) if to_zero else grid


CHURNS = [
    {},
    {"churn": 2.0},
    {"churn": 2.0, "s_tmin": 0.3, "s_tmax": 20.0, "s_noise": 1.007},
    {"churn": 80.0},  # γ = min(80 / n, sqrt(2) - 1) hits the cap
]


@pytest.mark.parametrize("to_zero", [False, True], ids=["to-t_min", "to-0"])
@pytest.mark.parametrize("options", CHURNS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "churn=0")
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_edm_equals_k_diffusion(solver, options, to_zero, monkeypatch):
    sampling = k_diffusion_sampling()
    grid = grid_for(12, to_zero)
    x_T = torch.randn(64, 2, generator=make_generator("cpu", 0), dtype=torch.float64)
    ours = sample(score, "edm", grid=grid, x_T=x_T, generator=make_generator("cpu", 7), solver=solver, **options)
    # Our noise: one (1, N, d) draw per step from the generator when churn > 0; k-diffusion draws
    # randn_like(x) every step (even where γ = 0): hand it the same draws in the same order.
    draws = make_generator("cpu", 7)
    monkeypatch.setattr(torch, "randn_like", lambda x: torch.randn((1, *x.shape), generator=draws, dtype=x.dtype)[0])
    sigmas = torch.tensor([ve_sigma(t) for t in grid.times.tolist()], dtype=torch.float64)
    kd_options = {"s_churn": options.get("churn", 0.0), **{k: v for k, v in options.items() if k != "churn"}}
    kd_sample = sampling.sample_heun if solver == "heun" else sampling.sample_euler
    theirs = kd_sample(denoiser, x_T * math.exp(T / 2), sigmas, disable=True, **kd_options)
    theirs = theirs * math.exp(-grid.t_min / 2)  # y = x / α back to the OU state
    # Both in float64, the outputs up to ~7.5 (one ulp: 8.9e-16): measured max differences 1.8e-15
    # to 5.3e-15 over these cases, a few ulps; 1e-13 is float64 round-off, far below a float32 ulp
    # (5e-7 at 7.5). A draw sequence shifted by one seed gives differences of ~5.
    assert float((ours - theirs).abs().max()) <= 1e-13


# --------------------------------------------------------------------------------------
# Declared orders, measured exactly.
# --------------------------------------------------------------------------------------

ORDER_CASES = [
    ({"solver": "euler"}, "karras"),
    ({"solver": "heun"}, "karras"),
    ({"solver": "euler"}, "log_snr"),
    ({"solver": "heun"}, "log_snr"),
    ({"solver": "euler", "churn": 1.0}, "karras"),
    ({"solver": "heun", "churn": 1.0}, "karras"),
    ({"solver": "heun", "churn": 5.0, "s_tmin": 0.5, "s_tmax": 20.0}, "log_snr"),
]


def exact_errors(options: dict, kind: str, ns) -> list[float]:
    m0, c0 = GAUSSIAN.mean_and_cov(T_MIN)
    errors = []
    for n in ns:
        mean, cov = exact_output_law("edm", GAUSSIAN, grid=getattr(TimeGrid, kind)(T, T_MIN, n), prior="exact",
                                     **options)
        errors.append(float(gaussian_w2(mean, cov, m0, c0)))
    return errors


@pytest.mark.parametrize("options,kind", ORDER_CASES, ids=lambda c: str(c))
def test_declared_weak_order_is_the_fitted_slope_of_the_exact_error(options, kind):
    # The exact output law against p_{t_min} (prior="exact"): discretization error only,
    # C / n^p + D / n^(p+1) + ... On these grids (T = 10, t_min = 1e-2) the least-squares slope over
    # n = 16 ... 128 departs from p by the D-term only: measured 0.95 / 2.07 (karras), 0.96 / 2.08
    # (log_snr) without churn, 0.95 / 2.08 with churn = 1, 2.02 with churn = 5 in a window; the errors
    # stay >= 5e-4, far above gaussian_w2's 1e-8 floor. So ±0.15 holds the declared order.
    # (With churn the added noise is the exact forward noise from σ_i to σ̂, and the ODE step
    # σ̂ -> σ_{i+1} is O(1/n), so the law keeps the solver's order.)
    sampler = resolve_method("edm", **options)
    ns = [16, 32, 64, 128]
    errors = exact_errors(options, kind, ns)
    assert min(errors) >= 1e-7
    assert abs(fit_order(ns, errors) - sampler.weak_order) <= 0.15


def test_s_noise_other_than_one_leaves_a_bias_that_does_not_shrink():
    # The added variance is off by (s_noise² - 1)(σ̂² - σ²) every step, and γ = churn / n makes the
    # sum over n steps O(churn): the error stalls (measured 1.35e-2 at n = 64, 1.06e-2 at 256) while
    # s_noise = 1 falls 16-fold (order 2). Hence weak_order None.
    assert resolve_method("edm", churn=1.0, s_noise=1.01).weak_order is None
    biased = exact_errors({"churn": 1.0, "s_noise": 1.01}, "karras", [64, 256])
    exact = exact_errors({"churn": 1.0}, "karras", [64, 256])
    assert biased[1] > 0.5 * biased[0] and exact[1] < exact[0] / 10


def test_declarations():
    expected = {  # options -> (weak, strong, noise_draws, score_evals)
        (): (2.0, 2.0, 0, 2),
        (("solver", "euler"),): (1.0, 1.0, 0, 1),
        (("churn", 1.0),): (2.0, None, 1, 2),
        (("solver", "euler"), ("churn", 1.0)): (1.0, None, 1, 1),
        (("churn", 1.0), ("s_noise", 1.003)): (None, None, 1, 2),
        (("s_noise", 1.003),): (2.0, 2.0, 0, 2),  # no churn: s_noise is never used
    }
    for options, (weak, strong, draws, evals) in expected.items():
        sampler = resolve_method("edm", **dict(options))
        assert (sampler.weak_order, sampler.strong_order, sampler.noise_draws, sampler.score_evals) == \
               (weak, strong, draws, evals), options
        assert sampler.affine and not sampler.evaluates_at_end and sampler.step is not None
    assert resolve_method("edm").options["solver"] == "heun"
    assert resolve_method("edm-euler").label == "edm-euler"
    assert resolve_method("edm-heun").options["solver"] == "heun"


# --------------------------------------------------------------------------------------
# Where the score is evaluated.
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("solver,to_zero,evaluations", [("euler", False, 10), ("euler", True, 11),
                                                        ("heun", False, 20), ("heun", True, 21)])
def test_score_evaluations_and_never_at_t_zero(solver, to_zero, evaluations):
    # Heun's last step to σ = 0 is an Euler step (one evaluation), as k-diffusion's sample_heun:
    # 2n - 1 evaluations on a grid ending at t = 0 (the declared per-step count, 2, is the bound).
    grid = grid_for(10, to_zero)
    times = []

    def recording(x, t):
        times.append(t)
        return score(x, t)

    x = sample(recording, "edm", grid=grid, x_T=torch.randn(8, 2, dtype=torch.float64), solver=solver)
    assert len(times) == evaluations and min(times) > 0 and bool(torch.isfinite(x).all())


def test_churn_evaluates_above_the_grid_time_and_only_inside_its_window():
    grid = TimeGrid.karras(T, T_MIN, 8)
    sigmas = [ve_sigma(t) for t in grid.times.tolist()]
    times = []

    def recording(x, t):
        times.append(t)
        return score(x, t)

    # churn = 4 over 8 steps: γ = 0.5, capped at sqrt(2) - 1; window [1, 50] in σ_VE.
    sample(recording, "edm", grid=grid, x_T=torch.randn(4, 2, dtype=torch.float64), generator=0, solver="euler",
           churn=4.0, s_tmin=1.0, s_tmax=50.0)
    for t_from, sigma, t in zip(grid.times.tolist(), sigmas, times):
        inside = 1.0 <= sigma <= 50.0
        assert (t == pytest.approx(math.log1p(2 * sigma ** 2), rel=1e-14)) if inside else (t == t_from)


def test_churn_outside_every_grid_sigma_is_algorithm_1():
    grid = TimeGrid.karras(T, T_MIN, 8)
    x_T = torch.randn(16, 2, generator=make_generator("cpu", 3), dtype=torch.float64)
    plain = sample(GAUSSIAN, "edm", grid=grid, x_T=x_T)
    windowless = sample(GAUSSIAN, "edm", grid=grid, x_T=x_T, generator=1, churn=3.0, s_tmin=500.0, s_tmax=600.0)
    assert torch.equal(plain, windowless)


def test_same_generator_same_samples(device):
    grid = TimeGrid.karras(T, T_MIN, 6)
    runs = [sample(GAUSSIAN, "edm", grid=grid, n_samples=32, generator=make_generator(device, seed), device=device,
                   prior="exact", churn=1.0) for seed in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert runs[0].device.type == device.type and bool(torch.isfinite(runs[0]).all())


# --------------------------------------------------------------------------------------
# Refused options.
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("options,error,match", [
    ({"solver": "rk4"}, ValueError, "solver must be one of"),
    ({"solver": 2}, ValueError, "solver must be one of"),
    ({"churn": -1.0}, ValueError, "churn must be in"),
    ({"churn": math.inf}, ValueError, "churn must be in"),
    ({"churn": math.nan}, ValueError, "churn must be in"),
    ({"churn": "1"}, TypeError, "churn must be a real number"),
    ({"s_noise": -0.5}, ValueError, "s_noise must be in"),
    ({"s_noise": math.inf}, ValueError, "s_noise must be in"),
    ({"s_tmin": -1.0}, ValueError, "s_tmin must be in"),
    ({"s_tmin": math.inf}, ValueError, "s_tmin must be in"),
    ({"s_tmax": math.nan}, ValueError, "s_tmax must be in"),
    ({"s_tmin": 2.0, "s_tmax": 1.0}, ValueError, "need s_tmin <= s_tmax"),
    ({"eta": 1.0}, TypeError, "unknown option 'eta'"),
])
def test_bad_options_are_refused(options, error, match):
    with pytest.raises(error, match=match):
        resolve_method("edm", **options)
