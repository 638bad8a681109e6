"""log p0 through the probability-flow ODE (diffsde.likelihood): exact against closed forms,
Hutchinson against the exact trace, the affine flow of Gaussian data, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from diffsde import GaussianMixtureScore, GaussianScore, TimeGrid, log_likelihood
from diffsde.likelihood import velocity_divergence
from diffsde.orders import fit_order
from diffsde.samplers import NonFiniteSampleError

F64 = torch.float64


def _random_gaussian(d: int, seed: int) -> GaussianScore:
    generator = torch.Generator().manual_seed(seed)
    root = torch.randn(d, d, generator=generator, dtype=F64)
    cov = root @ root.T / d + 0.2 * torch.eye(d, dtype=F64)  # eigenvalues from ~0.2 to a few
    return GaussianScore(torch.randn(d, generator=generator, dtype=F64), cov)


def _random_mixture(d: int, seed: int, k: int = 3) -> GaussianMixtureScore:
    generator = torch.Generator().manual_seed(seed)
    roots = torch.randn(k, d, d, generator=generator, dtype=F64)
    covs = roots @ roots.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=F64)
    means = 2.5 * torch.randn(k, d, generator=generator, dtype=F64)
    weights = torch.rand(k, generator=generator, dtype=F64) + 0.5
    return GaussianMixtureScore(weights / weights.sum(), means, covs)


def _data(score, n: int, device, dtype=F64, seed: int = 7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return score.sample(n, generator=generator, dtype=dtype).to(device)


# -- exact divergence, exact prior: only the ODE's error is left --------------------------------

class _WithoutClosedFormTrace:
    """An exact score seen without its ``score_and_divergence``: the trace then comes from torch.func."""

    def __init__(self, exact):
        self.exact, self.dim = exact, exact.dim

    def __call__(self, x, t):
        return self.exact(x, t)

    def log_prob(self, x, t=0.0):
        return self.exact.log_prob(x, t)


@pytest.mark.parametrize("trace", ["closed-form", "torch.func"])
@pytest.mark.parametrize("kind", ["gaussian", "mixture"])
@pytest.mark.parametrize("d", [1, 2, 8])
def test_exact_log_likelihood_within_a_ten_thousandth_nat_at_tolerance_one_millionth(kind, d, trace, device):
    exact_score = (_random_gaussian if kind == "gaussian" else _random_mixture)(d, seed=d)
    score = exact_score if trace == "closed-form" else _WithoutClosedFormTrace(exact_score)
    x = _data(exact_score, 64, device)
    result = log_likelihood(score, x, prior="exact", divergence="exact", rtol=1e-6, atol=1e-6)
    exact = exact_score.log_prob(x, 0.0)
    # With the exact p_T and t_min = 0 the only error is the integrator's. dopri5 keeps each step's
    # estimated local error <= atol + rtol |y| per element and advances the fifth-order solution
    # (local extrapolation), whose true error is far below that estimate; over the ~20 accepted
    # steps the log-density's global error stays within 100 x tol = 1e-4 nats (measured: <= 1e-5
    # at d = 8, 2e-6 to 4e-6 at d = 1, 2).
    assert float((result.log_prob - exact).abs().max()) <= 1e-4
    assert result.log_prob.dtype == F64 and result.log_prob.device.type == torch.device(device).type
    assert result.divergence == "exact" and result.log_prob_se is None and result.t_min == 0.0
    assert result.nfe > 0 and result.x_T.shape == x.shape


def test_error_falls_with_the_tolerance_and_costs_evaluations():
    score = _random_mixture(2, seed=3)
    x = _data(score, 64, "cpu")
    exact = score.log_prob(x, 0.0)
    errors, nfes = [], []
    for tol in (1e-4, 1e-6, 1e-8):
        result = log_likelihood(score, x, prior="exact", rtol=tol, atol=tol)
        errors.append(float((result.log_prob - exact).abs().max()))
        nfes.append(result.nfe)
    # dopri5's error per unit step scales as tol; two decades of tolerance buy at least one decade
    # of error (measured: about two) and cost more evaluations.
    assert errors[1] < errors[0] / 10 and errors[2] < errors[1] / 10
    assert nfes[0] < nfes[1] < nfes[2]


def test_fixed_step_rk4_converges_with_order_four_on_a_log_snr_grid():
    score = _random_gaussian(2, seed=5)
    x = _data(score, 32, "cpu")
    t_min = 1e-2
    exact = score.log_prob(x, t_min)
    ns, errors = [8, 16, 32, 64], []
    for n in ns:
        result = log_likelihood(score, x, prior="exact", solver="rk4", grid=TimeGrid.log_snr(10.0, t_min, n),
                                t_min_correction="none")
        errors.append(float((result.log_prob - exact).abs().mean()))
        assert result.nfe == 4 * n and result.solver == "rk4"
    # Classical fourth order on a smooth flow; errors from ~1e-3 down to ~1e-7, far above float64
    # round-off, so the fitted slope is the method's to within ±0.3 (pre-asymptotic at n = 8).
    assert fit_order(ns, errors) == pytest.approx(4.0, abs=0.3)


# -- the prior and t_min ---------------------------------------------------------------------

def test_normal_prior_differs_from_the_exact_one_by_the_reported_mismatch():
    score = GaussianScore(torch.tensor([3.0, -2.0], dtype=F64), torch.tensor([[0.5, 0.1], [0.1, 0.3]], dtype=F64))
    x = _data(score, 16, "cpu")
    exact_prior = log_likelihood(score, x, prior="exact", T=4.0)
    normal_prior = log_likelihood(score, x, prior="normal", T=4.0)
    # One trajectory (the flow does not depend on the prior); only the end term changes.
    assert torch.equal(exact_prior.x_T, normal_prior.x_T)
    torch.testing.assert_close(normal_prior.log_prob - exact_prior.log_prob, normal_prior.prior_mismatch,
                               rtol=0, atol=1e-12)
    gaussian = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    torch.testing.assert_close(normal_prior.prior_log_prob, gaussian.log_prob(normal_prior.x_T))
    torch.testing.assert_close(exact_prior.prior_log_prob, score.log_prob(exact_prior.x_T, 4.0))
    # At T = 4, p_T's mean e^{-2} (3, -2) is far from 0: the mismatch is visible, of either sign.
    assert float(normal_prior.prior_mismatch.abs().mean()) > 0.05


def test_t_min_correction_is_the_closed_form_and_can_be_left_out():
    score = _random_mixture(2, seed=11)
    x = _data(score, 32, "cpu")
    corrected = log_likelihood(score, x, prior="exact", t_min=0.05, rtol=1e-7, atol=1e-7)
    plain = log_likelihood(score, x, prior="exact", t_min=0.05, rtol=1e-7, atol=1e-7, t_min_correction="none")
    assert plain.t_min_correction is None
    torch.testing.assert_close(corrected.t_min_correction, score.log_prob(x, 0.0) - score.log_prob(x, 0.05))
    # Same flow: 'none' estimates log p_{t_min}(x), the correction brings it to log p_0(x) (to 1e-5:
    # at tol 1e-7 the integrator's error is ~1e-6, see the tolerance test).
    assert float((plain.log_prob - score.log_prob(x, 0.05)).abs().max()) <= 1e-5
    assert float((corrected.log_prob - score.log_prob(x, 0.0)).abs().max()) <= 1e-5


# -- Gaussian data: the flow is affine and its log-determinant is known ---------------------------

def test_gaussian_flow_is_the_affine_map_with_the_closed_form_log_determinant():
    # For p_0 = N(μ, Σ), p_t = N(m_t, Σ_t) with m_t = e^{-t/2} μ and Σ_t = e^{-t} Σ + (1 - e^{-t}) I share
    # Σ's eigenvectors. In that basis u = x - m_t obeys du/dt = ½ u (1/s_t - 1) = ½ u (ds_t/dt) / s_t
    # per eigenvalue s_t, so u ∝ sqrt(s_t): x_T = m_T + Σ_T^{1/2} Σ_a^{-1/2} (x - m_a), whose
    # log-determinant ∫ ∇·v dt is ½ log det Σ_T - ½ log det Σ_a, the same for every x.
    score = _random_gaussian(3, seed=2)
    t_a, T = 0.05, 3.0
    x = _data(score, 16, "cpu")
    result = log_likelihood(score, x, T=T, t_min=t_a, rtol=1e-9, atol=1e-9, t_min_correction="none")
    (m_a, cov_a), (m_T, cov_T) = score.mean_and_cov(t_a), score.mean_and_cov(T)
    eigvals, eigvecs = torch.linalg.eigh(score.cov)

    def power(t: float, exponent: float) -> torch.Tensor:
        s = math.exp(-t) * eigvals - math.expm1(-t)
        return eigvecs @ torch.diag(s ** exponent) @ eigvecs.T

    flow_map = power(T, 0.5) @ power(t_a, -0.5)
    expected_x_T = m_T + (x - m_a) @ flow_map.T
    log_det = 0.5 * (torch.logdet(cov_T) - torch.logdet(cov_a))
    # tol 1e-9 on values of size ~1: the end point and the integral agree to ~1e-8 (measured ~1e-10).
    torch.testing.assert_close(result.x_T, expected_x_T, rtol=0, atol=1e-8)
    torch.testing.assert_close(result.delta_log_prob, log_det.expand(16), rtol=0, atol=1e-8)


# -- the divergence: torch.func against a loop and a closed form ---------------------------------

def test_exact_divergence_equals_a_loop_over_dimensions_and_the_mixture_closed_form():
    score = _random_mixture(5, seed=4)
    x = _data(score, 20, "cpu")
    t = 0.3

    def velocity(y):
        return -0.5 * (y + score(y, t))

    value, trace = velocity_divergence(velocity, x)
    # A plain autograd loop, one backward pass per coordinate.
    leaf = x.clone().requires_grad_(True)
    out = velocity(leaf)
    loop = sum(torch.autograd.grad(out[:, j].sum(), leaf, retain_graph=True)[0][:, j] for j in range(5))
    torch.testing.assert_close(trace, loop, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(value, out.detach())
    # Closed form: div s = Σ_k r_k (|g_k|² - tr Σ_{t,k}^{-1}) - |s|² with g_k = Σ_{t,k}^{-1} (x - m_{t,k})
    # (differentiate s = -Σ_k r_k g_k, with ∇r_k = -r_k (g_k + s)); and ∇·v = -d/2 - ½ div s.
    weights, means, covs = score.component_marginals(t)
    precisions = torch.linalg.inv(covs)
    g = torch.einsum("kij,nkj->nki", precisions, x[:, None, :] - means[None])
    log_r = torch.log(weights) + torch.distributions.MultivariateNormal(means, covs).log_prob(x[:, None, :])
    r = torch.softmax(log_r, dim=1)
    s = -(r[..., None] * g).sum(1)
    div_s = (r * ((g * g).sum(-1) - torch.diagonal(precisions, dim1=1, dim2=2).sum(-1))).sum(1) - (s * s).sum(-1)
    torch.testing.assert_close(trace, -2.5 - 0.5 * div_s, rtol=1e-10, atol=1e-10)


# -- Hutchinson ------------------------------------------------------------------------------

def test_hutchinson_is_unbiased_and_its_standard_error_falls_as_one_over_sqrt_probes():
    score = _random_mixture(8, seed=8)
    x = _data(score, 48, "cpu")
    exact = log_likelihood(score, x, prior="exact", divergence="exact")
    ses = {}
    for probes in (2, 8, 32):
        estimate = log_likelihood(score, x, prior="exact", divergence="hutchinson", probes=probes,
                                  generator=torch.Generator().manual_seed(probes))
        assert estimate.divergence == "hutchinson" and estimate.probes == probes
        # The batch mean averages 48 x probes independent probe estimates, so it is normal to good
        # accuracy: it lies within 4 of its standard errors of the exact-divergence value (the
        # integrator's error at tol 1e-5, ~1e-4, is a few percent of the smallest SE, 0.006).
        assert abs(estimate.nats - exact.nats) <= 4 * estimate.probe_standard_error
        ses[probes] = estimate.log_prob_se.square().mean().sqrt()
    # The rms per-sample SE goes as 1/sqrt(probes): each ratio is 2 in expectation. The mean of 48
    # sample variances with k - 1 >= 1 degrees of freedom has a relative spread of about
    # sqrt(2/(k-1)/48) ≈ 0.2 at k = 2, i.e. ±10% on the SE (heavier-tailed probe estimates add
    # some), so ±30% holds at four sigma.
    assert float(ses[2] / ses[8]) == pytest.approx(2.0, rel=0.3)
    assert float(ses[8] / ses[32]) == pytest.approx(2.0, rel=0.3)


def test_hutchinson_per_sample_estimates_sit_within_a_few_standard_errors():
    score = _random_gaussian(8, seed=9)
    x = _data(score, 64, "cpu")
    exact = score.log_prob(x, 0.0)
    estimate = log_likelihood(score, x, prior="exact", divergence="hutchinson", probes=32, probe="gaussian",
                              generator=torch.Generator().manual_seed(1), rtol=1e-7, atol=1e-7)
    z = (estimate.log_prob - exact) / estimate.log_prob_se
    # With 32 probes z is close to Student-t with 31 degrees of freedom: P(|z| > 4) ≈ 4e-4 per
    # sample, so all 64 pass with probability ≈ 0.97 (and the fixed seed makes it deterministic).
    assert float(z.abs().max()) <= 4.0
    assert 0.5 <= float(z.std()) <= 1.5  # unit spread: the reported SE is the estimate's real error


def test_probes_are_reproducible_from_the_generator_and_one_probe_has_no_standard_error():
    score = _random_mixture(3, seed=1)
    x = _data(score, 8, "cpu")

    def run(seed, probes=3):
        return log_likelihood(score, x, divergence="hutchinson", probes=probes,
                              generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(0).log_prob, run(0).log_prob)
    assert not torch.equal(run(0).log_prob, run(1).log_prob)
    single = run(0, probes=1)
    assert single.log_prob_se is None and math.isnan(single.probe_standard_error)


def test_auto_divergence_is_exact_up_to_32_dimensions_or_with_a_closed_form_trace():
    small = _WithoutClosedFormTrace(_random_gaussian(32, seed=0))
    result = log_likelihood(small, _data(small.exact, 4, "cpu"), T=1.0)
    assert result.divergence == "exact" and result.probes == 0
    big = _WithoutClosedFormTrace(GaussianScore(torch.zeros(33, dtype=F64), torch.eye(33, dtype=F64)))
    result = log_likelihood(big, torch.zeros(4, 33, dtype=F64), T=1.0, generator=torch.Generator().manual_seed(0))
    assert result.divergence == "hutchinson" and result.probes == 4
    result = log_likelihood(big.exact, torch.zeros(4, 33, dtype=F64), T=1.0)
    assert result.divergence == "exact"
    # N(0, I) data: the flow stands still, log p0 is the normal density in closed form.
    torch.testing.assert_close(result.log_prob, torch.full((4,), -16.5 * math.log(2 * math.pi), dtype=F64))


# -- units, dtypes, networks -----------------------------------------------------------------

def test_nats_bits_per_dim_and_standard_error():
    score = _random_gaussian(2, seed=3)
    x = _data(score, 50, "cpu")
    result = log_likelihood(score, x, prior="exact")
    assert result.nats == pytest.approx(float(-result.log_prob.mean()), rel=1e-15)
    assert result.bits_per_dim == pytest.approx(result.nats / (2 * math.log(2)), rel=1e-15)
    assert result.standard_error == pytest.approx(float(result.log_prob.std()) / math.sqrt(50), rel=1e-12)
    summary = result.to_dict()
    assert summary["nfe"] == result.nfe and summary["prior"] == "exact" and summary["n"] == 50


def test_float32_keeps_its_dtype_and_device(device):
    score = _random_mixture(2, seed=6)
    x = _data(score, 32, device, dtype=torch.float32)
    result = log_likelihood(score, x, prior="exact")
    assert result.log_prob.dtype == torch.float32 and result.x_T.dtype == torch.float32
    assert result.log_prob.device.type == torch.device(device).type
    # float32 round-off (~1e-7 relative on log-densities of size ~5, over ~20 steps) stays below 1e-3.
    assert float((result.log_prob.double() - score.log_prob(x.double(), 0.0)).abs().max()) <= 1e-3


def test_a_network_score_starts_at_its_default_t_min():
    from diffsde import EpsilonMLP, EpsilonScore

    torch.manual_seed(0)
    score = EpsilonScore(EpsilonMLP(2, hidden=16))
    x = torch.randn(8, 2)
    result = log_likelihood(score, x, divergence="hutchinson", probes=2, generator=torch.Generator().manual_seed(0),
                            rtol=1e-3, atol=1e-3)
    assert result.t_min == 1e-5 and result.t_min_correction is None and result.prior_mismatch is None
    assert bool(torch.isfinite(result.log_prob).all())
    exact_trace = log_likelihood(score, x, rtol=1e-3, atol=1e-3)  # d = 2: exact divergence by default
    assert exact_trace.divergence == "exact"


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    ({"rtol": 0.0}, ValueError, "rtol"),
    ({"atol": -1e-6}, ValueError, "atol"),
    ({"rtol": 1.0}, ValueError, "rtol"),
    ({"probes": 0}, ValueError, "probes"),
    ({"probes": 2.0}, TypeError, "probes"),
    ({"prior": "tweedie"}, ValueError, "prior"),
    ({"divergence": "loop"}, ValueError, "divergence"),
    ({"probe": "uniform"}, ValueError, "probe"),
    ({"solver": "RK45"}, ValueError, "solver"),
    ({"T": 0.0}, ValueError, "T"),
    ({"t_min": 2.0, "T": 1.0}, ValueError, "t_min"),
    ({"t_min": -1e-3}, ValueError, "t_min"),
    ({"solver": "rk4"}, ValueError, "grid"),
    ({"grid": TimeGrid.uniform(1.0, 0.0, 4)}, ValueError, "fixed-step"),
    ({"solver": "rk4", "grid": TimeGrid.uniform(1.0, 0.0, 4), "T": 1.0}, ValueError, "grid's own"),
    ({"t_min_correction": "decoder"}, ValueError, "t_min_correction"),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    score = _random_gaussian(2, seed=0)
    with pytest.raises(error, match=match):
        log_likelihood(score, torch.zeros(4, 2, dtype=F64), **kwargs)


@pytest.mark.parametrize("x, error, match", [
    (torch.zeros(4, 3, dtype=F64), ValueError, "last dimension 2"),
    (torch.zeros(4, dtype=F64), ValueError, r"\(N, d\)"),
    (torch.zeros(2, 4, 2, dtype=F64), ValueError, r"\(N, d\)"),
    (torch.zeros(0, 2, dtype=F64), ValueError, "N >= 1"),
    (torch.zeros(4, 2, dtype=torch.int64), TypeError, "floating"),
    (torch.tensor([[0.0, float("nan")]], dtype=F64), ValueError, "finite"),
    (torch.tensor([[0.0, float("inf")]], dtype=F64), ValueError, "finite"),
    ([[0.0, 1.0]], TypeError, "torch.Tensor"),
])
def test_bad_data_is_refused(x, error, match):
    with pytest.raises(error, match=match):
        log_likelihood(_random_gaussian(2, seed=0), x)


def test_exact_prior_and_correction_need_a_closed_form():
    def score(x, t):
        return -x

    x = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match="prior='exact' needs a score with a closed-form p_T"):
        log_likelihood(score, x, prior="exact")
    with pytest.raises(ValueError, match="t_min_correction='exact'"):
        log_likelihood(score, x, t_min_correction="exact")
    with pytest.raises(TypeError, match="score must be callable"):
        log_likelihood("ring", x)
    # N(0, I) data with its own score: the flow stands still and log p0 is the normal density.
    result = log_likelihood(score, x)
    torch.testing.assert_close(result.log_prob, torch.full((3,), -math.log(2 * math.pi), dtype=F64))


def test_a_score_that_turns_nan_is_named():
    def score(x, t):
        return -x if t < 1.0 else torch.full_like(x, float("nan"))

    with pytest.raises(NonFiniteSampleError, match="NaN or infinite"):
        log_likelihood(score, torch.zeros(3, 2, dtype=F64), T=2.0)


def test_a_singular_score_refuses_t_min_zero():
    from diffsde import EpsilonMLP, EpsilonScore

    score = EpsilonScore(EpsilonMLP(2, hidden=8))
    with pytest.raises(ValueError, match="singular at t = 0"):
        log_likelihood(score, torch.zeros(2, 2), t_min=0.0)


@pytest.mark.slow  # a 1500-step training run (shared with tests/test_training.py through fit_gaussian's cache)
def test_a_learned_networks_nll_is_finite_and_below_its_discrete_bound():
    from diffsde import BetaSchedule
    from diffsde.ddpm import vlb
    from diffsde.studies.recovery import FAST, fit_gaussian, gaussian_2d

    score = fit_gaussian("cpu", FAST).score()
    p0 = gaussian_2d()
    x = p0.sample(2000, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    flow = log_likelihood(score, x, rtol=1e-4, atol=1e-4)
    assert bool(torch.isfinite(flow.log_prob).all())
    # The network's PF-ODE density is close to the data's: measured 0.009 ± 0.002 nats above the true
    # NLL (2.22 nats); allow 0.1 nats, a tenth of a nat being far beyond a well-fit 2-D Gaussian.
    true_nll = -float(p0.log_prob(x.double(), 0.0).mean())
    assert abs(flow.nats - true_nll) <= 0.1
    for variance in ("beta", "beta_tilde"):
        bound = vlb(score.model, x, BetaSchedule.linear(1000), variance=variance,
                    generator=torch.Generator().manual_seed(0))
        # Same x0, so compare per sample: the VLB's per-sample spread is ~1.5 nats (its Monte Carlo
        # draws), so its excess over the PF-ODE NLL is measured to ±0.033 (β) and ±0.044 (β̃); the
        # excess must not be significantly negative (measured +0.020 for β and +0.96 for β̃).
        excess = bound.total.double() + flow.log_prob.double()
        assert float(excess.mean()) >= -3 * float(excess.std()) / math.sqrt(x.shape[0])


def test_score_sde_procedure_in_its_own_clock_gives_the_same_log_likelihood():
    # score_sde's likelihood.py (Song et al. 2021's reference code) integrates the VP SDE's flow
    # dx/ds = -½ β(s) (x + s_θ(x, s)), β(s) = 0.1 + 19.9 s, from eps = 1e-5 to 1 with scipy's RK45 and
    # scores x(1) under N(0, I). In OU time t(s) = ∫β = 0.1 s + 9.95 s², the same flow (an ODE is
    # invariant under a change of clock), from t(eps) to t(1) = 10.05. Replayed here with an exact
    # trace (autograd, one coordinate at a time) instead of their Hutchinson probe, in float64.
    import numpy as np
    from scipy.integrate import solve_ivp

    score = _random_mixture(2, seed=12)
    x = _data(score, 16, "cpu")
    eps = 1e-5

    def ou_time(s):
        return 0.1 * s + 9.95 * s * s

    def rhs(s, flat):
        y = torch.from_numpy(flat[:-16].reshape(16, 2)).requires_grad_(True)
        beta = 0.1 + 19.9 * s
        drift = -0.5 * beta * (y + score(y, ou_time(s)))
        trace = sum(torch.autograd.grad(drift[:, j].sum(), y, retain_graph=True)[0][:, j] for j in range(2))
        return np.concatenate([drift.detach().numpy().reshape(-1), trace.detach().numpy()])

    solution = solve_ivp(rhs, (eps, 1.0), np.concatenate([x.numpy().reshape(-1), np.zeros(16)]), rtol=1e-8,
                         atol=1e-8, method="RK45")
    z, delta = torch.from_numpy(solution.y[:-16, -1].reshape(16, 2)), torch.from_numpy(solution.y[-16:, -1])
    theirs = -0.5 * (z * z).sum(-1) - math.log(2 * math.pi) + delta
    ours = log_likelihood(score, x, T=ou_time(1.0), t_min=ou_time(eps), prior="normal", t_min_correction="none",
                          rtol=1e-8, atol=1e-8)
    # Both integrators at tolerance 1e-8 on values of size ~3: scipy's RK45 controls an RMS over the 48
    # entries of its state, so one entry may carry sqrt(48) times its share, accumulated over ~50
    # steps: agreement to 1e-6 (measured 1.6e-7).
    torch.testing.assert_close(ours.log_prob, theirs, rtol=0, atol=1e-6)


def test_a_score_of_the_wrong_shape_or_a_generator_elsewhere_is_refused():
    x = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"score must return x's shape \(4, 2\), got shape \(4, 1\)"):
        log_likelihood(lambda y, t: -y[:, :1], x)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        log_likelihood(_random_gaussian(2, seed=0), x, divergence="hutchinson", generator=3)


def test_chunked_pullbacks_give_the_same_trace(monkeypatch):
    import diffsde.likelihood as likelihood_module

    score = _random_mixture(6, seed=2)
    x = _data(score, 40, "cpu")

    def velocity(y):
        return -0.5 * (y + score(y, 0.2))

    probes = torch.randn(5, 40, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    whole = velocity_divergence(velocity, x)[1], velocity_divergence(velocity, x, probes)[1]
    monkeypatch.setattr(likelihood_module, "_CHUNK_ELEMENTS", {"cpu": 2 * x.numel()})  # two pull-backs at a time
    chunked = velocity_divergence(velocity, x)[1], velocity_divergence(velocity, x, probes)[1]
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-14, atol=1e-14)
