"""DDIM (Song, Meng & Ermon 2021) and DPM-Solver(++) (Lu et al. 2022, 2023): exact laws, declared
orders, identities between methods, equality with diffusers' schedulers, and option errors.

Orders are measured on exact output laws (no Monte Carlo): error = W2 to p_{t_min} on grids
uniform in log-SNR λ from T = 10 down to t_min = 0.1 (a grid ending at t = 0 makes every
λ-method first order in its last step, λ = inf). The step counts of each fit keep the errors
above 1e-7 (gaussian_w2's round-off floor is ~1e-8) and in the range where the local slopes
(tabulated when these tests were written) are within 0.15 of the declared order.
"""

import math
import warnings

import pytest
import torch

from conftest import make_generator
from diffsde import (BetaSchedule, GaussianMixtureScore, GaussianScore, TimeGrid, exact_output_law, resolve_method,
                     sample)
from diffsde.coordinates import log_snr, noise_std, time_from_log_snr, ve_sigma
from diffsde.metrics import gaussian_w2
from diffsde.orders import fit_order
from diffsde.samplers import integrate
from diffsde.samplers.ddim import ddim_step
from diffsde.schedules import Interval
from peers import diffusers_module

# p0 = N((1, -0.5), [[1.5, 0.4], [0.4, 0.3]]): anisotropic, correlated.
GAUSSIAN = GaussianScore(torch.tensor([1.0, -0.5], dtype=torch.float64),
                         torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64))
MIXTURE = GaussianMixtureScore(torch.tensor([0.3, 0.7], dtype=torch.float64),
                               torch.tensor([[-1.0, 0.5], [1.2, -0.4]], dtype=torch.float64),
                               torch.stack([0.2 * torch.eye(2, dtype=torch.float64),
                                            torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=torch.float64)]))
T, T_MIN = 10.0, 0.1


def log_snr_grid(n: int, t_max: float = T, t_min: float = T_MIN) -> TimeGrid:
    """n steps uniform in λ from t_max down to t_min."""
    a, b = log_snr(t_max), log_snr(t_min)
    return TimeGrid.from_times([time_from_log_snr(a + (b - a) * i / n) for i in range(n + 1)])


def law_error(method: str, n: int, **options) -> float:
    mean, cov = exact_output_law(method, GAUSSIAN, grid=log_snr_grid(n), prior="exact", **options)
    return gaussian_w2(mean, cov, *GAUSSIAN.mean_and_cov(T_MIN))


def law_gap(a: tuple, b: tuple) -> float:
    return max(float((a[0] - b[0]).abs().max()), float((a[1] - b[1]).abs().max()))


# -- declared orders --------------------------------------------------------------------------

@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_is_first_order(eta):
    sampler = resolve_method("ddim", eta=eta)
    assert sampler.weak_order == 1.0 and sampler.noise_draws == (0 if eta == 0 else 1)
    assert sampler.strong_order == (1.0 if eta == 0 else None)
    ns = [32, 64, 128]  # local slopes 0.93-0.99 (η = 1 is the slowest to settle)
    assert fit_order(ns, [law_error("ddim", n, eta=eta) for n in ns]) == pytest.approx(1.0, abs=0.15)


# Step counts per (order, multistep): errors 1e-2 ... 3e-7, local slopes within 0.15 of the order.
# Order 3 multistep starts above 3 (3.3 at n = 32) and settles from n ~ 100.
ORDER_NS = {(1, True): [32, 64, 128], (1, False): [32, 64, 128], (2, True): [48, 96, 192],
            (2, False): [48, 96, 192], (3, True): [96, 128, 192], (3, False): [48, 64, 96]}


@pytest.mark.parametrize("prediction", ["data", "noise"])
@pytest.mark.parametrize("order,multistep,third_order", [(1, True, None), (1, False, None), (2, True, None),
                                                         (2, False, None), (3, True, "published"),
                                                         (3, True, "taylor"), (3, False, None)])
def test_dpm_solver_has_its_declared_order(order, multistep, third_order, prediction):
    options = dict(order=order, multistep=multistep, prediction=prediction)
    if third_order is not None:
        options["third_order"] = third_order
    sampler = resolve_method("dpm-solver", **options)
    # The published third-order multistep update (Lu et al. 2023; diffusers) has D2 ≈ h² x0''/2 where the
    # Taylor term needs h² x0'': an O(h³) local error, so order 2; the "taylor" form has order 3.
    declared = 2.0 if third_order == "published" else order
    assert sampler.weak_order == sampler.strong_order == declared and sampler.noise_draws == 0
    assert sampler.score_evals == (1 if multistep else order)
    ns = ORDER_NS[order, multistep]
    errors = [law_error("dpm-solver", n, **options) for n in ns]
    assert min(errors) > 1e-7
    assert fit_order(ns, errors) == pytest.approx(declared, abs=0.15)


def test_multistep_third_order_loses_an_order_to_its_warm_up_on_a_short_grid():
    # From T = 3 the first (Euler) warm-up step's O(h²) error is no longer damped by α_T: the
    # documented limit of a lower-order start (diffusers' warm-up); singlestep keeps order 3.
    def error(n, **options):
        mean, cov = exact_output_law("dpm-solver", GAUSSIAN, grid=log_snr_grid(n, t_max=3.0), prior="exact",
                                     order=3, third_order="taylor", **options)
        return gaussian_w2(mean, cov, *GAUSSIAN.mean_and_cov(T_MIN))
    ns = [32, 64, 128]
    assert fit_order(ns, [error(n) for n in ns]) == pytest.approx(2.0, abs=0.15)


# -- identities ---------------------------------------------------------------------------------

@pytest.mark.parametrize("grid_options", [{"grid": TimeGrid.uniform(T, 0.0, 25)},
                                          {"schedule": BetaSchedule.linear(60), "exact_times": True}],
                         ids=["bare-grid", "schedule-exact-times"])
def test_ddim_eta_one_has_the_law_of_ddpm_with_beta_tilde(grid_options):
    # Song et al. 2021 (DDIM), eq. 16 with η = 1 is Ho et al.'s σ² = β̃; on a grid ending at 0 the last
    # step of both adds no noise (ddpm skips it, DDIM's σ_η is 0 there). A schedule's grid with
    # exact_times=True has ᾱ_i = e^{-t_i}, as a bare grid. Measured: ~1e-15.
    ddim = exact_output_law("ddim", GAUSSIAN, prior="normal", eta=1.0, **grid_options)
    ddpm = exact_output_law("ddpm", GAUSSIAN, prior="normal", variance="beta_tilde", **grid_options)
    assert law_gap(ddim, ddpm) < 1e-12


def test_ddim_eta_one_keeps_the_last_noise_before_t_min():
    # Ending at t_min > 0, DDIM adds its last step's noise (as diffusers does) and ddpm does not:
    # the same mean, different covariances.
    grid = TimeGrid.uniform(T, 1e-3, 25)
    ddim = exact_output_law("ddim", GAUSSIAN, grid=grid, eta=1.0)
    ddpm = exact_output_law("ddpm", GAUSSIAN, grid=grid, variance="beta_tilde")
    assert float((ddim[0] - ddpm[0]).abs().max()) < 1e-12 and law_gap(ddim, ddpm) > 1e-6


def test_ddim_eta_zero_is_euler_in_ve_coordinates():
    # y = x / α, σ_VE = σ / α: DDIM(η=0) is y_next = y + (σ_VE(t_to) - σ_VE(t_from)) ε (DDIM, eq. 14).
    x = torch.randn(7, 2, generator=make_generator("cpu", 3), dtype=torch.float64)
    t_from, t_to = 1.3, 0.4
    interval = Interval(0, t_from, t_to, t_from - t_to, math.exp(-t_from), math.exp(-t_to), True)
    out, _ = ddim_step(MIXTURE, x, interval, x.new_empty((0,)))
    eps = -noise_std(t_from) * MIXTURE(x, t_from)
    y_next = x * math.exp(0.5 * t_from) + (ve_sigma(t_to) - ve_sigma(t_from)) * eps
    torch.testing.assert_close(out * math.exp(0.5 * t_to), y_next, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("t_min", [0.0, 0.05])
@pytest.mark.parametrize("multistep", [True, False])
@pytest.mark.parametrize("prediction", ["data", "noise"])
def test_first_order_dpm_solver_is_ddim(device, t_min, multistep, prediction):
    # Lu et al. 2022, Sec. 4.1: DPM-Solver-1 is DDIM(η=0); also with a mixture's nonlinear score.
    grid = log_snr_grid(12, t_min=t_min) if t_min else TimeGrid.uniform(T, 0.0, 12)
    x_T = torch.randn(64, 2, generator=make_generator(device, 1), device=device, dtype=torch.float64)
    ddim = sample(MIXTURE, "ddim", grid=grid, x_T=x_T)
    dpm = sample(MIXTURE, "dpm-solver", grid=grid, x_T=x_T, order=1, multistep=multistep, prediction=prediction)
    torch.testing.assert_close(dpm, ddim, rtol=1e-12, atol=1e-12)


def test_a_grid_shorter_than_the_order_warms_up():
    # Multistep order 3 on 1 step is first order (DDIM); on 2 steps without lower_order_final it is
    # first then second order, i.e. the order-2 method; with it (n < 15) both steps are first order.
    x_T = torch.randn(32, 2, generator=make_generator("cpu", 2), dtype=torch.float64)
    one, two = log_snr_grid(1), log_snr_grid(2)
    ddim1, ddim2 = (sample(MIXTURE, "ddim", grid=g, x_T=x_T) for g in (one, two))
    torch.testing.assert_close(sample(MIXTURE, "dpm-solver", grid=one, x_T=x_T, order=3), ddim1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sample(MIXTURE, "dpm-solver", grid=two, x_T=x_T, order=3), ddim2, rtol=1e-12, atol=1e-12)
    order2 = sample(MIXTURE, "dpm-solver", grid=two, x_T=x_T, order=2, lower_order_final=False)
    order3 = sample(MIXTURE, "dpm-solver", grid=two, x_T=x_T, order=3, lower_order_final=False)
    torch.testing.assert_close(order3, order2, rtol=1e-12, atol=1e-12)
    assert float((order2 - ddim2).abs().max()) > 1e-3


def test_lower_order_final_acts_only_below_15_steps():
    x_T = torch.randn(32, 2, generator=make_generator("cpu", 4), dtype=torch.float64)
    for n, same in ((14, False), (15, True)):
        grid = log_snr_grid(n)
        on, off = (sample(MIXTURE, "dpm-solver", grid=grid, x_T=x_T, order=3, lower_order_final=flag)
                   for flag in (True, False))
        assert (float((on - off).abs().max()) == 0.0) == same


def test_singlestep_step_to_zero_is_first_order_and_finite():
    grid = TimeGrid.uniform(T, 0.0, 6)
    x_T = torch.randn(16, 2, generator=make_generator("cpu", 5), dtype=torch.float64)
    for prediction in ("data", "noise"):
        out, _, nfe = integrate(resolve_method("dpm-solver", order=3, multistep=False, prediction=prediction),
                                MIXTURE, grid, x_T, Injected(None))
        assert bool(torch.isfinite(out).all()) and nfe == 3 * 5 + 1


# -- equality with diffusers ---------------------------------------------------------------------

def eps_fn(x: torch.Tensor, t: float) -> torch.Tensor:
    """A fixed nonlinear ε(x, t) fed to both sides: N(0, I) data's ε = σ x plus a bounded nonlinear
    term scaled by α, so that x0 = (x - σ ε) / α stays of order 1 at large t."""
    w = torch.tensor([[0.8, -0.3], [0.5, 0.6]], dtype=x.dtype, device=x.device)
    bend = 0.5 * torch.tanh(x @ w + 0.1 * t) + 0.2 * torch.sin(x + t)
    return noise_std(t) * x + math.exp(-0.5 * t) * bend


def eps_score(x: torch.Tensor, t: float) -> torch.Tensor:
    return -eps_fn(x, t) / noise_std(t)


class Injected:
    """A noise source handing step k the given draws (noise[k], one draw)."""

    def __init__(self, noise):
        self.noise = noise

    def draw(self, index, count, like):
        return self.noise[index][None]

    def get_state(self):
        return None

    def set_state(self, state):
        pass


@pytest.mark.parametrize("alpha_to_one", [True, False])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_equals_diffusers(eta, alpha_to_one):
    diffusers = diffusers_module()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, trained_betas=BetaSchedule.linear(1000).betas.numpy(),
                                        clip_sample=False, set_alpha_to_one=alpha_to_one, prediction_type="epsilon",
                                        timestep_spacing="leading", steps_offset=1)
    n = 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2's __array__ copy keyword, in diffusers
        scheduler.set_timesteps(n)
    # Its ᾱ's in float64 (the same float32 values) so that its coefficients are computed in float64.
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
    steps = scheduler.timesteps.tolist()
    # "leading" spacing: diffusers' previous timestep (t - 1000 // n) is the next one of the list.
    times = [-math.log(float(scheduler.alphas_cumprod[k])) for k in steps]
    times.append(abs(-math.log(float(scheduler.final_alpha_cumprod))))
    generator = make_generator("cpu", 7)
    x_T = torch.randn(16, 2, generator=generator, dtype=torch.float64)
    noise = torch.randn(n, 16, 2, generator=generator, dtype=torch.float64)
    x = x_T
    for i, k in enumerate(steps):
        x = scheduler.step(eps_fn(x, times[i]), k, x, eta=eta, variance_noise=noise[i] if eta else None).prev_sample
    ours, _, _ = integrate(resolve_method("ddim", eta=eta), eps_score, TimeGrid.from_times(times), x_T, Injected(noise))
    # Both in float64: the measured max difference is 9e-16 ... 4e-15 on values of size ~1.5 (the ᾱ = e^{-t}
    # and ε = -σ s round trips); with diffusers' float32 ᾱ's in its coefficients it would be 5e-8 ... 9e-7.
    assert float((ours - x).abs().max()) < 1e-12


def taylor_third_order(diffusers):
    """diffusers' DPMSolverMultistepScheduler with its third-order D2 term doubled: D2 ≈ h² x0'' / 2 there,
    and the Taylor term is K g3(z) h² x0'' (see diffsde.samplers.dpm_solver)."""

    class Taylor(diffusers.DPMSolverMultistepScheduler):
        def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, noise=None,
                                                    **kwargs):
            x_t = super().multistep_dpm_solver_third_order_update(model_output_list, *args, sample=sample,
                                                                  noise=noise, **kwargs)
            i = self.step_index
            sig = [float(self.sigmas[j]) for j in (i + 1, i, i - 1, i - 2)]
            lam = [-math.log(s) for s in sig]  # λ = log α - log σ = -log σ_VE
            h, h0, h1 = lam[0] - lam[1], lam[1] - lam[2], lam[2] - lam[3]
            r0, r1 = h0 / h, h1 / h
            m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
            d2 = ((m0 - m1) / r0 - (m1 - m2) / r1) / (r0 + r1)
            alpha_t = 1.0 / math.sqrt(sig[0] ** 2 + 1.0)
            if self.config.algorithm_type == "dpmsolver++":
                k, phi3 = alpha_t, (math.expm1(-h) / h + 1.0) / h - 0.5
            else:
                k, phi3 = sig[0] * alpha_t, (math.expm1(h) / h - 1.0) / h - 0.5
            return x_t - (k * phi3) * d2

    return Taylor


@pytest.mark.parametrize("n", [8, 20])
@pytest.mark.parametrize("prediction,final", [("data", "zero"), ("data", "sigma_min"), ("noise", "sigma_min")])
@pytest.mark.parametrize("order,third_order", [(2, None), (3, "published"), (3, "taylor")])
def test_multistep_equals_diffusers(order, third_order, prediction, final, n):
    # diffusers refuses final_sigmas_type="zero" for its noise-prediction "dpmsolver". Our "taylor" third
    # order is compared with diffusers' scheduler with the D2 term completed (taylor_third_order).
    diffusers = diffusers_module()
    cls = taylor_third_order(diffusers) if third_order == "taylor" else diffusers.DPMSolverMultistepScheduler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "dpmsolver" is deprecated in diffusers
        scheduler = cls(num_train_timesteps=1000, trained_betas=BetaSchedule.linear(1000).betas.numpy(),
                        solver_order=order, prediction_type="epsilon",
                        algorithm_type="dpmsolver++" if prediction == "data" else "dpmsolver",
                        solver_type="midpoint", lower_order_final=True, final_sigmas_type=final)
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2's __array__ copy keyword, in diffusers
        scheduler.set_timesteps(n)
    # Its steps read only its (float32) VE sigmas σ_k: our grid is t_k = log(1 + σ_k²), in float64.
    times = [math.log1p(s * s) for s in scheduler.sigmas.double().tolist()]
    x_T = torch.randn(16, 2, generator=make_generator("cpu", 8), dtype=torch.float64)
    x = x_T
    for i, k in enumerate(scheduler.timesteps):
        x = scheduler.step(eps_fn(x, times[i]), k, x).prev_sample
    ours = sample(eps_score, "dpm-solver", grid=TimeGrid.from_times(times), x_T=x_T, order=order,
                  prediction=prediction, **({"third_order": third_order} if third_order else {}))
    # diffusers' step rounds the state to float32 (sample.to(torch.float32)), so it cannot run in float64:
    # the measured max difference is 1.7e-7 ... 9.8e-7 on values of size ~1.5, i.e. 1 to 8 float32 ulps
    # (1.2e-7 at 1), accumulated over the steps. (The taylor form differs from unpatched diffusers by 3e-3 ... 0.4.)
    assert float((ours - x).abs().max()) < 3e-6 * max(1.0, float(x.abs().max()))


# -- options -------------------------------------------------------------------------------------

@pytest.mark.parametrize("eta", [-0.1, 1.5, float("nan")])
def test_ddim_refuses_eta_outside_zero_one(eta):
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        resolve_method("ddim", eta=eta)


@pytest.mark.parametrize("order", [0, 4, 2.0])
def test_dpm_solver_refuses_order(order):
    with pytest.raises(ValueError, match=r"order must be an int in \[1, 3\]"):
        resolve_method("dpm-solver", order=order)


def test_dpm_solver_refuses_unknown_prediction():
    with pytest.raises(ValueError, match="prediction must be one of"):
        resolve_method("dpm-solver", prediction="v")


@pytest.mark.parametrize("name", ["multistep", "lower_order_final"])
def test_dpm_solver_refuses_non_bool_flags(name):
    with pytest.raises(ValueError, match=f"{name} must be a bool"):
        resolve_method("dpm-solver", **{name: 1})


def test_lower_order_final_needs_multistep():
    with pytest.raises(TypeError, match="lower_order_final applies only with multistep=True"):
        resolve_method("dpm-solver", multistep=False, lower_order_final=False)


def test_unknown_options_are_refused():
    with pytest.raises(TypeError, match="unknown option"):
        resolve_method("ddim", order=2)
    with pytest.raises(TypeError, match="unknown option"):
        resolve_method("dpm-solver", eta=0.5)


def test_options_round_trip():
    for name, options in (("ddim", {"eta": 0.3}), ("dpm-solver", {"order": 3, "multistep": False}),
                          ("dpm-solver", {"order": 1, "prediction": "noise"})):
        sampler = resolve_method(name, **options)
        assert resolve_method(name, **sampler.options).options == sampler.options


def test_third_order_form_applies_only_to_the_third_order_multistep_update():
    with pytest.raises(TypeError, match="third_order applies only"):
        resolve_method("dpm-solver", order=2, third_order="taylor")
    with pytest.raises(TypeError, match="third_order applies only"):
        resolve_method("dpm-solver", order=3, multistep=False, third_order="taylor")
    with pytest.raises(ValueError, match="third_order"):
        resolve_method("dpm-solver", order=3, third_order="exact")
    # The variants name the published and the Taylor third-order forms.
    assert resolve_method("dpm-solver-3m").options["third_order"] == "published"
    assert resolve_method("dpm-solver-3m-taylor").weak_order == 3.0
    assert resolve_method("dpm-solver-3m").weak_order == 2.0
