"""UniPC (Zhao et al. 2023) and DPM-Solver++(2M)/(3M) SDE (Lu et al. 2022): equal to their peers
(diffusers' UniPCMultistepScheduler, k-diffusion's sample_dpmpp_2m_sde / sample_dpmpp_3m_sde) to
float64 round-off, declared orders by exact-law slopes, exact law = law of the samples, bad
options.

Slopes are fitted on grids uniform in the log-SNR λ (TimeGrid.log_snr: the variable both methods
step in), from T down to t_min = 1e-2 > 0 (a grid ending at t = 0, λ = +inf, makes the last step
first order), with the exact prior p_T, so the error (W2 between the exact output law and p_{t_min})
is pure discretization error. The step counts keep every error >= 1.5e-7, well above gaussian_w2's
~1e-8 round-off floor.
"""

import math

import pytest
import torch

from conftest import make_generator
from diffsde import GaussianScore, TimeGrid, exact_output_law, resolve_method, sample
from diffsde.coordinates import noise_std, signal_scale, ve_sigma
from diffsde.metrics import gaussian_w2
from diffsde.orders import fit_order
from diffsde.samplers.unipc import unipc_weak_order
from peers import diffusers_module, k_diffusion_sampling

Z = 4.5  # standard errors for the Monte Carlo law check (two-sided false alarm 7e-6 per number)

# p0 = N((1, -0.5), [[1.5, 0.4], [0.4, 0.3]]): anisotropic, correlated.
GAUSSIAN = GaussianScore(torch.tensor([1.0, -0.5], dtype=torch.float64),
                         torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64))
T_MIN = 1e-2


def exact_errors(method: str, T: float, ns: list, **options) -> list:
    errors = []
    for n in ns:
        mean, cov = exact_output_law(method, GAUSSIAN, grid=TimeGrid.log_snr(T, T_MIN, n), prior="exact", **options)
        errors.append(gaussian_w2(mean, cov, *GAUSSIAN.mean_and_cov(T_MIN)))
    return errors


# A fixed nonlinear ε(x, t) shared with the peers: σ x (the ε of N(0, I) data) plus a bounded nonlinear
# part, so data predictions stay O(1) and every output is O(1).
_W = torch.tensor([[0.8, -0.3, 0.2], [0.1, 0.5, -0.6], [-0.4, 0.2, 0.7]], dtype=torch.float64)


def epsilon(x: torch.Tensor, t: float) -> torch.Tensor:
    sigma = noise_std(t)
    return sigma * x + 0.3 * sigma * torch.tanh(x @ _W + 0.3 * t)


def epsilon_score(x: torch.Tensor, t: float) -> torch.Tensor:
    return -epsilon(x, t) / noise_std(t)


def assert_round_off(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    # Both sides run in float64 with the same ε and times; the arithmetic differs only in order
    # (coefficients in Python floats vs tensors, weights combined vs divided differences). Measured on
    # outputs of size <= 5: at most 6.3e-14 against diffusers, 4.9e-15 against k-diffusion; 1e-12
    # relative leaves room and still refuses any formula difference (an O(h³) change of one
    # coefficient moves these outputs by more than 1e-6).
    assert torch.isfinite(theirs).all()
    scale = max(1.0, float(theirs.abs().max()))
    assert float((ours - theirs).abs().max()) <= 1e-12 * scale, float((ours - theirs).abs().max())


# --------------------------------------------------------------------------------------
# Equal to diffusers' UniPCMultistepScheduler.
# --------------------------------------------------------------------------------------

UNIPC_PEER_CASES = [
    # (options, steps, diffusers' final_sigmas_type)
    ({"order": 1}, 8, "zero"),
    ({"order": 2}, 5, "zero"),
    ({"order": 2}, 12, "zero"),
    ({"order": 3}, 6, "zero"),
    ({"order": 3}, 12, "zero"),
    ({"order": 3, "corrector": False}, 10, "zero"),
    ({"order": 3, "lower_order_final": False}, 10, "sigma_min"),  # diffusers gives NaN at σ = 0 here
    ({"order": 2, "prediction": "noise"}, 10, "sigma_min"),  # ... and with noise prediction
    ({"order": 3, "prediction": "noise"}, 10, "sigma_min"),
    ({"order": 2, "solver_type": "bh1"}, 10, "sigma_min"),  # ... and with B(h) = h
    ({"order": 3, "solver_type": "bh1"}, 10, "sigma_min"),
]


@pytest.mark.parametrize("options,steps,final", UNIPC_PEER_CASES,
                         ids=[f"{'-'.join(f'{k}={v}' for k, v in o.items())}-n{n}-{f}" for o, n, f in UNIPC_PEER_CASES])
def test_unipc_equals_diffusers(options, steps, final):
    diffusers = diffusers_module()
    full = {"order": 2, "corrector": True, "lower_order_final": True, "prediction": "data", "solver_type": "bh2",
            **options}
    scheduler = diffusers.UniPCMultistepScheduler(
        solver_order=full["order"], predict_x0=full["prediction"] == "data", solver_type=full["solver_type"],
        lower_order_final=full["lower_order_final"], final_sigmas_type=final,
        disable_corrector=[] if full["corrector"] else list(range(steps)))
    scheduler.set_timesteps(steps)
    # diffusers computes every coefficient from its sigmas' dtype: float64 sigmas make it run in float64.
    scheduler.sigmas = scheduler.sigmas.double()
    # Its σ_VE,k (interpolated from alphas_cumprod, stored in float32) fix its ᾱ_k = 1 / (1 + σ_k²):
    # our grid is those very times t_k = log(1 + σ_k²), read in float64 (t = 0 for a final σ = 0).
    times = [math.log1p(float(sigma) ** 2) for sigma in scheduler.sigmas]
    x_T = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x_T.clone()
    for k, timestep in enumerate(scheduler.timesteps):
        x = scheduler.step(epsilon(x, times[k]), timestep, x).prev_sample
    ours = sample(epsilon_score, "unipc", grid=times, x_T=x_T, **options)
    assert_round_off(ours, x)


def test_unipc_steps_to_zero_stay_finite_where_diffusers_gives_nan():
    # A step to t = 0 (λ = +inf) is always the first-order update, written finitely; diffusers' own
    # update there is NaN with lower_order_final=False, noise prediction or B(h) = h.
    grid = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.0]
    x_T = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for options in ({"order": 3, "lower_order_final": False}, {"prediction": "noise"}, {"solver_type": "bh1"}):
        assert torch.isfinite(sample(epsilon_score, "unipc", grid=grid, x_T=x_T, **options)).all(), options


@pytest.mark.parametrize("t_min", [0.0, 0.3])
def test_first_order_unipc_is_ddim_in_both_parametrizations(t_min):
    # UniP-1 is DDIM (Song et al. 2021, eq. 12), whether written with the data or the noise prediction.
    grid = [6.0, 3.0, 1.5, 0.8, t_min]
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    data = sample(epsilon_score, "unipc", grid=grid, x_T=x_T, order=1, corrector=False)
    noise = sample(epsilon_score, "unipc", grid=grid, x_T=x_T, order=1, corrector=False, prediction="noise")
    x = x_T
    for t_from, t_to in zip(grid, grid[1:]):
        x0 = (x - noise_std(t_from) * epsilon(x, t_from)) / signal_scale(t_from)
        x = signal_scale(t_to) * x0 + noise_std(t_to) * epsilon(x, t_from)
    assert_round_off(data, x)
    assert_round_off(noise, x)


def test_unipc_step_is_pure_and_counts_one_evaluation_per_step():
    # The corrector rewrites the previous step's result; that must happen inside the next step, on
    # copies: replaying a step from a saved (x, state) gives the same result and leaves them unchanged.
    sampler = resolve_method("unipc", order=3)
    grid = TimeGrid.log_snr(3.0, T_MIN, 6)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    state = sampler.init(x, grid)
    intervals = grid.intervals()
    for interval in intervals[:3]:
        x, state = sampler.step(GAUSSIAN, x, interval, x.new_empty(0), state)
    saved_x, saved_last = x.clone(), state.last.clone()
    first, _ = sampler.step(GAUSSIAN, x, intervals[3], x.new_empty(0), state)
    again, _ = sampler.step(GAUSSIAN, x, intervals[3], x.new_empty(0), state)
    assert torch.equal(first, again) and torch.equal(x, saved_x) and torch.equal(state.last, saved_last)
    _, info = sample(GAUSSIAN, "unipc", grid=grid, n_samples=3, generator=0, return_info=True)
    assert info["nfe"] == grid.n


# --------------------------------------------------------------------------------------
# Equal to k-diffusion's DPM-Solver++(2M) SDE and (3M) SDE.
# --------------------------------------------------------------------------------------

KD_CASES = [
    {"order": 2}, {"order": 2, "eta": 0.0}, {"order": 2, "eta": 0.5}, {"order": 2, "s_noise": 1.3},
    {"order": 2, "solver_type": "heun"}, {"order": 3}, {"order": 3, "eta": 0.0}, {"order": 3, "eta": 0.5},
    {"order": 3, "s_noise": 1.3},
]


@pytest.mark.parametrize("t_min", [0.0, 0.01], ids=["to-zero", "t_min"])
@pytest.mark.parametrize("options", KD_CASES, ids=["-".join(f"{k}={v}" for k, v in o.items()) for o in KD_CASES])
def test_dpm_solver_sde_equals_k_diffusion(options, t_min):
    sampling = k_diffusion_sampling()
    n = 12
    times = [10.0 * (1 - i / n) ** 2 + t_min * i / n for i in range(n + 1)]  # denser near t_min
    x_T = torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ours = sample(epsilon_score, "dpm-solver-sde", grid=times, x_T=x_T, generator=torch.Generator().manual_seed(11), **options)
    # sample draws one (1, N, d) standard normal per step from the generator, in step order (none when
    # η = 0); k-diffusion gets the same draws, in order, from its noise_sampler (it asks at every step
    # except a final denoising step to σ = 0).
    generator = torch.Generator().manual_seed(11)
    draws = iter([torch.randn((1, *x_T.shape), generator=generator, dtype=torch.float64)[0] for _ in range(n)])
    calls = iter(range(n))

    def denoiser(y, sigma):
        # k-diffusion evaluates at σ_VE = sigmas[i] in step order: that is our grid time times[i].
        t = times[next(calls)]
        x = signal_scale(t) * y
        return (x - noise_std(t) * epsilon(x, t)) / signal_scale(t)

    sigmas = torch.tensor([ve_sigma(t) for t in times], dtype=torch.float64)
    run = sampling.sample_dpmpp_2m_sde if options["order"] == 2 else sampling.sample_dpmpp_3m_sde
    kwargs = {k: v for k, v in options.items() if k != "order"}
    y = run(denoiser, x_T / signal_scale(times[0]), sigmas, noise_sampler=lambda s, s_next: next(draws),
            disable=True, **kwargs)
    assert_round_off(ours, signal_scale(times[-1]) * y)


# --------------------------------------------------------------------------------------
# Declared orders, measured with exact laws.
# --------------------------------------------------------------------------------------

UNIPC_ORDER_CASES = [{"order": p, "corrector": c, "lower_order_final": f}
                     for p in (1, 2, 3) for c in (True, False) for f in (True, False)]


def test_unipc_declares_the_orders_of_its_warm_up_and_final_steps():
    declared = {(o["order"], o["corrector"], o["lower_order_final"]): unipc_weak_order(**o) for o in UNIPC_ORDER_CASES}
    # UniPC-p: p + 1 (Zhao et al. 2023, Theorem 3.3), capped at 3 by the first-order warm-up and at 2 by
    # a first-order last step; UniP-p: p, capped at 2 by the warm-up.
    assert declared == {(1, True, True): 2, (1, True, False): 2, (1, False, True): 1, (1, False, False): 1,
                        (2, True, True): 2, (2, True, False): 3, (2, False, True): 2, (2, False, False): 2,
                        (3, True, True): 2, (3, True, False): 3, (3, False, True): 2, (3, False, False): 2}
    assert resolve_method("unipc").strong_order == resolve_method("unipc").weak_order == 2.0


@pytest.mark.parametrize("options", UNIPC_ORDER_CASES, ids=["-".join(f"{k}={v}" for k, v in o.items())
                                                            for o in UNIPC_ORDER_CASES])
def test_unipc_declared_order_is_the_slope_of_the_exact_error(options):
    # T = 1: the warm-up's error is as large as the others' (at T = 10 it is ∝ e^{-T/2} and hides,
    # below). Measured fits: within 0.08 of the declared order for all 12 variants (the farthest,
    # UniPC-3 with lower_order_final, approaches 2 from above as its O(h³) terms fade: 2.08); ±0.15
    # refuses the next integer. Order-2 errors are larger, so their grids are finer.
    declared = resolve_method("unipc", **options).weak_order
    ns = [10, 20, 40, 80, 160] if declared >= 3 else [80, 160, 320, 640]
    errors = exact_errors("unipc", 1.0, ns, **options)
    assert all(a > b >= 1.5e-7 for a, b in zip(errors, errors[1:])), errors
    assert fit_order(ns, errors) == pytest.approx(declared, abs=0.15), errors


def test_unipc_3_shows_the_papers_order_4_where_its_warm_up_error_is_small():
    # At T = 10 the first-order warm-up step's error is ∝ the data prediction's variation at T
    # (∝ α(T) = e^{-5}), so UniPC-3's slope is the paper's p + 1 = 4 over practical step counts
    # (measured 3.78 here and 3.97 from n = 160 to 1280 by the covariance error), although its
    # asymptotic order is 3.
    ns = [40, 80, 160]
    errors = exact_errors("unipc", 10.0, ns, order=3, lower_order_final=False)
    assert fit_order(ns, errors) > 3.6, errors


SDE_ORDER_CASES = [{"order": p, "eta": eta} for p in (2, 3) for eta in (0.0, 0.5, 1.0, 2.0)] + \
                  [{"order": 2, "solver_type": "heun"}]


@pytest.mark.parametrize("options", SDE_ORDER_CASES, ids=["-".join(f"{k}={v}" for k, v in o.items())
                                                          for o in SDE_ORDER_CASES])
def test_dpm_solver_sde_declared_order_is_the_slope_of_the_exact_error(options):
    # The exact law covers the noise (affine in x_T and the draws). Measured fits over n = 40 ... 640:
    # 1.97 ... 2.03 for every case; the first-order update alone (no multistep correction) gives 1.0.
    declared = resolve_method("dpm-solver-sde", **options).weak_order
    ns = [40, 80, 160, 320, 640]
    errors = exact_errors("dpm-solver-sde", 1.0, ns, **options)
    assert all(a > b >= 1.5e-7 for a, b in zip(errors, errors[1:])), errors
    assert fit_order(ns, errors) == pytest.approx(declared, abs=0.15), errors


def test_dpm_solver_sde_declarations():
    plain = resolve_method("dpm-solver-sde")
    assert (plain.weak_order, plain.strong_order, plain.noise_draws, plain.score_evals) == (2.0, None, 1, 1)
    ode = resolve_method("dpmpp-3m-sde", eta=0.0)
    assert (ode.weak_order, ode.strong_order, ode.noise_draws) == (2.0, 2.0, 0)
    # Mis-scaled noise: the law does not converge to p_t.
    assert resolve_method("dpm-solver-sde", s_noise=1.3).weak_order is None
    assert resolve_method("dpm-solver-sde", s_noise=1.3, eta=0.0).weak_order == 2.0  # no noise at all


# --------------------------------------------------------------------------------------
# The exact output law is the law of what `sample` returns.
# --------------------------------------------------------------------------------------

def gaussian_law_tolerances(cov: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Z standard errors of the sample mean (d,) and covariance (d, d) of n draws of N(·, cov):
    Var(mean_i) = C_ii / n, Var(C_ij) = (C_ii C_jj + C_ij²) / n."""
    diag = torch.diagonal(cov)
    return Z * torch.sqrt(diag / n), Z * torch.sqrt((diag[:, None] * diag[None, :] + cov ** 2) / n)


@pytest.mark.parametrize("method,options", [("dpm-solver-sde", {}), ("dpmpp-3m-sde", {"eta": 0.5}),
                                            ("unipc", {"order": 3})], ids=["2m-sde", "3m-sde-eta0.5", "unipc-3"])
def test_exact_output_law_is_the_law_of_the_samples(device, method, options):
    # Six steps from T = 3 make each law visibly different from p_{t_min} (W2 = 0.019 ... 0.05, 5 to 12
    # standard errors of a coordinate's sample mean), so agreement pins this method's own law.
    grid = TimeGrid.log_snr(3.0, T_MIN, 6)
    law_mean, law_cov = exact_output_law(method, GAUSSIAN, grid=grid, prior="exact", **options)
    assert gaussian_w2(law_mean, law_cov, *GAUSSIAN.mean_and_cov(T_MIN)) > 0.01
    n = 100_000
    x = sample(GAUSSIAN, method, grid=grid, n_samples=n, generator=make_generator(device, 7), device=device,
               dtype=torch.float64, prior="exact", **options).cpu()
    mean_tol, cov_tol = gaussian_law_tolerances(law_cov, n)
    assert bool(((x.mean(0) - law_mean).abs() <= mean_tol).all()), (x.mean(0), law_mean)
    assert bool(((torch.cov(x.T) - law_cov).abs() <= cov_tol).all()), (torch.cov(x.T), law_cov)


# --------------------------------------------------------------------------------------
# Bad options.
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("options,match", [
    ({"order": 0}, r"order must be an int in \[1, 3\], got 0"),
    ({"order": 4}, r"order must be an int in \[1, 3\], got 4"),
    ({"prediction": "v"}, "prediction must be one of"),
    ({"solver_type": "bh3"}, "solver_type must be one of"),
])
def test_unipc_refuses_bad_values(options, match):
    with pytest.raises(ValueError, match=match):
        resolve_method("unipc", **options)


@pytest.mark.parametrize("options,match", [
    ({"order": 1}, r"order must be an int in \[2, 3\], got 1"),
    ({"order": 4}, r"order must be an int in \[2, 3\], got 4"),
    ({"eta": -0.1}, r"eta must be in \[0, inf\), got -0.1"),
    ({"eta": math.inf}, r"eta must be in \[0, inf\), got inf"),
    ({"eta": math.nan}, r"eta must be in \[0, inf\), got nan"),
    ({"s_noise": -1.0}, r"s_noise must be in \[0, inf\), got -1.0"),
    ({"solver_type": "euler"}, "solver_type must be one of"),
])
def test_dpm_solver_sde_refuses_bad_values(options, match):
    with pytest.raises(ValueError, match=match):
        resolve_method("dpm-solver-sde", **options)


@pytest.mark.parametrize("method,options,match", [
    ("unipc", {"eta": 1.0}, "unknown option 'eta' for method 'unipc'"),
    ("dpm-solver-sde", {"corrector": True}, "unknown option 'corrector' for method 'dpm-solver-sde'"),
    ("unipc", {"corrector": 1}, "corrector must be a bool"),
    ("unipc", {"order": 2.0}, "order must be an int"),
    ("dpm-solver-sde", {"eta": "1"}, "eta must be a real number"),
    ("dpmpp-3m-sde", {"solver_type": "heun"}, "solver_type .* applies to order=2"),
])
def test_unknown_options_and_wrong_types_are_type_errors(method, options, match):
    with pytest.raises(TypeError, match=match):
        resolve_method(method, **options)
