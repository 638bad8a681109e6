"""DDPM's posterior (Ho et al. 2020, eqs. 6-7 and 11) and variational bound (eqs. 5 and 13) against exact Gaussian results.

With p0 = N(m, C) and the exact ε at the exact times τ_i, ε is affine in x, so every term of the
bound has a closed-form expectation and the DDPM chain's output law is Gaussian (its
cross-entropy against p0 is exact too). ``diffsde.ddpm.expected_vlb`` and ``model_cross_entropy``
compute them with affine algebra written independently of ``vlb``; the library's Monte Carlo
``vlb`` is checked against them within its standard error and, term by term, against this file's
own affine algebra on replayed draws (exact to rounding); the ordering
E[VLB] >= cross-entropy >= h(p0) and the shrinking gaps are checked on the exact values (no
Monte Carlo noise to resolve: the n = 1000 gap is 2e-3 nats, while the per-sample spread of the
Monte Carlo bound is ~1.5 nats, dominated by the first few steps near t = 0).
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import make_generator
from diffsde.ddpm import (ExpectedVLB, ddpm_posterior, ddpm_reverse_mean, expected_vlb, gaussian_entropy,
                          model_cross_entropy, normal_kl, predict_x0, vlb)
from diffsde.schedules import BetaSchedule
from diffsde.scores import EpsilonFromScore, GaussianScore

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64)
P0 = GaussianScore(MEAN, COV)
ENTROPY = 0.5 * float(torch.logdet(2 * math.pi * math.e * COV))  # h(p0), nats


def exact_eps():
    return EpsilonFromScore(GaussianScore(MEAN, COV))


def affine_map(f, d):
    """(M, c) with f(x) = M x + c, read off the probes 0, e_1..e_d (float64)."""
    out = f(torch.cat([torch.zeros(1, d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)]))
    return (out[1:] - out[0]).T, out[0]


def reverse_affine(eps, schedule, i, d):
    """This file's own read-off, for replaying vlb's draws: (M, c, β) with DDPM's reverse mean
    μ_θ(x) = (x - β/sqrt(1-ᾱ_i) ε(x, τ_i)) / sqrt(α_i) = M x + c."""
    ab, tau = schedule.alpha_bars.tolist(), schedule.exact_times.tolist()
    A, b = affine_map(lambda x: eps(x, tau[i]), d)
    alpha = ab[i] / ab[i - 1]
    k = (1 - alpha) / math.sqrt(1 - ab[i])
    return (torch.eye(d, dtype=torch.float64) - k * A) / math.sqrt(alpha), -k * b / math.sqrt(alpha), 1 - alpha


# -- the posterior and the reverse mean --------------------------------------------------------

@given(st.floats(1e-4, 1.0), st.floats(1e-3, 0.5), st.integers(0, 2**31 - 1))
def test_posterior_mean_at_predicted_x0_is_the_eq8_reverse_mean(alpha_bar_prev, beta, seed):
    alpha_bar_t = alpha_bar_prev * (1 - beta)
    gen = torch.Generator().manual_seed(seed)
    x_t, eps = torch.randn(2, 16, 3, generator=gen, dtype=torch.float64)
    x0_hat = predict_x0(x_t, eps, alpha_bar_t)
    mean, _ = ddpm_posterior(x_t, x0_hat, alpha_bar_t, alpha_bar_prev)
    # Eq. 7 at x0 = x̂0 and eq. 8 are the same affine map written two ways; the coefficients are
    # O(1 / sqrt(ᾱ_t)) <= ~200 here, so float64 agrees to ~1e-12 relative.
    assert torch.allclose(mean, ddpm_reverse_mean(x_t, eps, alpha_bar_t, alpha_bar_prev), rtol=1e-10, atol=1e-10)


def test_posterior_is_gaussian_conditioning(device):
    # q(x_{t-1} | x0) = N(sqrt(ᾱ_{t-1}) x0, 1 - ᾱ_{t-1}); x_t = sqrt(α) x_{t-1} + sqrt(β) z. Condition
    # x_{t-1} on x_t with the Gaussian formulas (not eqs. 6-7): mean = m + k (x_t - sqrt(ᾱ_t) x0),
    # k = Cov(x_{t-1}, x_t) / Var(x_t), variance = Var(x_{t-1}) - k Cov(x_{t-1}, x_t).
    gen = make_generator(device, 0)
    x_t, x0 = torch.randn(2, 32, 2, generator=gen, device=device, dtype=torch.float64)
    a_prev = torch.rand(32, generator=gen, device=device, dtype=torch.float64) * 0.9 + 0.05
    alpha = 1 - torch.rand(32, generator=gen, device=device, dtype=torch.float64) * 0.3
    a_t = a_prev * alpha
    cov = alpha.sqrt() * (1 - a_prev)
    k = cov / (1 - a_t)
    expected_mean = a_prev.sqrt()[:, None] * x0 + k[:, None] * (x_t - a_t.sqrt()[:, None] * x0)
    expected_var = (1 - a_prev) - k * cov
    mean, var = ddpm_posterior(x_t, x0, a_t, a_prev)
    assert torch.allclose(mean, expected_mean, rtol=1e-12, atol=1e-12)
    assert torch.allclose(var.reshape(-1), expected_var, rtol=1e-12, atol=1e-14)
    # Python floats give the same as 0-d tensors.
    m_float, v_float = ddpm_posterior(x_t, x0, 0.3, 0.5)
    m_tensor, v_tensor = ddpm_posterior(x_t, x0, torch.tensor(0.3, dtype=torch.float64),
                                       torch.tensor(0.5, dtype=torch.float64))
    assert torch.allclose(m_float, m_tensor, rtol=1e-15, atol=1e-15) and abs(v_float - float(v_tensor)) < 1e-15


def test_first_step_posterior_is_a_point_mass_at_x0():
    x_t, x0 = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, var = ddpm_posterior(x_t, x0, 0.99, 1.0)
    assert var == 0.0 and torch.allclose(mean, x0, rtol=0, atol=1e-15)


@pytest.mark.parametrize("a_t, a_prev", [(0.5, 0.5), (0.6, 0.5), (0.0, 0.5), (0.5, 1.5), (math.nan, 0.5),
                                         (torch.tensor([0.4, 0.6]), 0.5)])
def test_posterior_refuses_misordered_alpha_bars(a_t, a_prev):
    with pytest.raises(ValueError, match="alpha_bar"):
        ddpm_posterior(torch.zeros(2, 2), torch.zeros(2, 2), a_t, a_prev)


def test_normal_kl_matches_torch_distributions(device):
    gen = make_generator(device, 1)
    m1, m2 = torch.randn(2, 10, 3, generator=gen, device=device, dtype=torch.float64)
    v1, v2 = 0.3, torch.rand(10, 1, generator=gen, device=device, dtype=torch.float64) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(m1, math.sqrt(v1)),
                                                 torch.distributions.Normal(m2, v2.sqrt())).sum(-1)
    assert torch.allclose(normal_kl(m1, v1, m2, v2), expected, rtol=1e-12, atol=1e-12)


# -- the variational bound ------------------------------------------------------------------------

@pytest.mark.parametrize("kind, variance", [("linear", "beta"), ("cosine", "beta_tilde")])
def test_monte_carlo_vlb_matches_its_exact_expectation(device, kind, variance):
    schedule = getattr(BetaSchedule, kind)(50)
    gen = make_generator(device, 2)
    p0 = GaussianScore(MEAN, COV)
    x0 = p0.sample(20000, generator=gen, device=device, dtype=torch.float64)
    terms = vlb(exact_eps(), x0, schedule, variance=variance, generator=gen)
    prior, transitions, decoder = expected_vlb(exact_eps(), P0, schedule, variance=variance)
    # Each group is a mean of 20000 iid per-x0 values; 4.5 standard errors (two-sided
    # p = 7e-6 each) separates a correct estimator from a wrong formula (which is off by far
    # more: e.g. dropping the log-variance term moves the bound by ~d/2 per step).
    for estimate, exact in ((terms.prior, prior), (terms.transitions, transitions), (terms.decoder, decoder)):
        standard_error = float(estimate.std()) / math.sqrt(estimate.shape[0])
        assert abs(float(estimate.mean()) - exact) < 4.5 * standard_error + 1e-12
    total = prior + transitions + decoder
    assert abs(terms.nats - total) < 4.5 * terms.standard_error
    assert terms.nats >= model_cross_entropy(exact_eps(), P0, schedule, variance=variance) - 4.5 * terms.standard_error


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_vlb_terms_match_an_independent_computation_on_the_same_draws(device, variance):
    # vlb draws x_i = sqrt(ᾱ_i) x0 + sqrt(1 - ᾱ_i) z_i with z_i ~ randn(x0.shape), i = 1..n in turn, from
    # its generator. Replaying the draws and recomputing every term with the affine algebra above
    # (not diffsde.ddpm) must agree to float64 rounding: a term at the wrong time or with a wrong
    # coefficient shows at once, where the Monte Carlo test above could only see it beyond its noise.
    schedule, d = BetaSchedule.cosine(30), 2
    x0 = GaussianScore(MEAN, COV).sample(64, generator=make_generator(device, 5), device=device, dtype=torch.float64)
    terms = vlb(exact_eps(), x0, schedule, variance=variance, generator=make_generator(device, 6))
    replay = make_generator(device, 6)
    ab = schedule.alpha_bars.tolist()
    per_sample = []
    for i in range(1, schedule.n + 1):
        x_i = math.sqrt(ab[i]) * x0 + math.sqrt(1 - ab[i]) * torch.randn(x0.shape, generator=replay, device=device,
                                                                          dtype=torch.float64)
        M, c, beta = reverse_affine(exact_eps(), schedule, i, d)
        mu = x_i @ M.T.to(device) + c.to(device)
        if i == 1:
            per_sample.append(0.5 * (((x0 - mu) ** 2).sum(-1) / beta + d * math.log(2 * math.pi * beta)))
            continue
        beta_tilde = (1 - ab[i - 1]) / (1 - ab[i]) * beta
        posterior = (math.sqrt(ab[i - 1]) * beta * x0 + math.sqrt(1 - beta) * (1 - ab[i - 1]) * x_i) / (1 - ab[i])
        var = beta if variance == "beta" else beta_tilde
        per_sample.append(0.5 * (d * (math.log(var / beta_tilde) + beta_tilde / var - 1)
                                 + ((posterior - mu) ** 2).sum(-1) / var))
    # Coefficients up to ~1 / β_1 ≈ 4e3 on O(1) values: float64 agrees to ~1e-12 relative.
    assert torch.allclose(terms.decoder, per_sample[0], rtol=1e-9, atol=1e-9)
    assert torch.allclose(terms.transitions, sum(per_sample[1:]), rtol=1e-9, atol=1e-9)
    means = torch.stack([v.mean() for v in per_sample]).cpu()
    assert torch.allclose(terms.per_step[:-1], means, rtol=1e-9, atol=1e-9)


def test_vlb_units_and_per_step_bookkeeping():
    schedule = BetaSchedule.linear(30)
    x0 = GaussianScore(MEAN, COV).sample(500, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    terms = vlb(exact_eps(), x0, schedule, generator=torch.Generator().manual_seed(4))
    assert terms.per_step.shape == (31,)
    assert math.isclose(float(terms.per_step.sum()), terms.nats, rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(float(terms.per_step[0]), float(terms.decoder.mean()), rel_tol=1e-12)
    assert math.isclose(float(terms.per_step[-1]), float(terms.prior.mean()), rel_tol=1e-12)
    assert math.isclose(terms.bits_per_dim, terms.nats / (2 * math.log(2)), rel_tol=1e-15)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_bound_exceeds_cross_entropy_exceeds_entropy_and_gap_shrinks(kind, variance):
    gaps = []
    for n in (50, 200, 1000):  # the linear schedule needs n >= 21 (β_max = 20 / n < 1)
        schedule = getattr(BetaSchedule, kind)(n)
        bound = sum(expected_vlb(exact_eps(), P0, schedule, variance=variance))
        cross_entropy = model_cross_entropy(exact_eps(), P0, schedule, variance=variance)
        # Exact float64 values (sums of ~n terms of size O(1)): rounding is < 1e-10.
        assert bound >= cross_entropy - 1e-10
        assert cross_entropy >= ENTROPY - 1e-10
        gaps.append(bound - ENTROPY)
    # Measured gaps E[VLB] - h (nats): linear/beta 0.0373, 0.00932, 0.00189 (~1.9 / n);
    # cosine/beta 0.0204, 0.00516, 0.00104; linear/beta_tilde 4.17, 1.74, 0.92 and
    # cosine/beta_tilde 1.76, 1.24, 0.81, which level off near ln 2 (= 0.69 at n = 4000):
    # σ² = β̃ is too small in the first steps near t = 0 whatever n.
    assert gaps[0] > gaps[1] > gaps[2] > 0
    if variance == "beta":
        assert gaps[2] < 2.5 / 1000  # first order in 1/n with the β variance


@pytest.mark.parametrize("kwargs, error", [({"variance": "sigma"}, ValueError), ({"schedule": "linear"}, TypeError),
                                           ({"x0": torch.tensor([[0.0, math.nan]])}, ValueError),
                                           ({"x0": torch.zeros(0, 2)}, ValueError)])
def test_vlb_refuses_bad_arguments(kwargs, error):
    arguments = {"eps_model": exact_eps(), "x0": torch.zeros(4, 2, dtype=torch.float64),
                 "schedule": BetaSchedule.linear(30)} | kwargs
    with pytest.raises(error):
        vlb(**arguments)


# -- the exact bound's own checks ------------------------------------------------------------------

def test_gaussian_entropy_is_torchs():
    expected = float(torch.distributions.MultivariateNormal(MEAN, COV).entropy())
    assert gaussian_entropy(P0) == pytest.approx(expected, rel=1e-12)
    assert gaussian_entropy(P0) == pytest.approx(ENTROPY, rel=1e-12)


def test_expected_vlb_terms_add_up_and_the_prior_term_is_the_exact_kl():
    schedule = BetaSchedule.linear(40)
    terms = expected_vlb(exact_eps(), P0, schedule)
    assert isinstance(terms, ExpectedVLB) and terms.total == sum(terms)
    # E[L_T] = E_x0 KL(N(sqrt(ᾱ_n) x0, (1 - ᾱ_n) I) || N(0, I)): by the Gaussian KL
    # averaged over x0 ~ N(m, C), ½ (ᾱ_n (tr C + ‖m‖²) + d (1 - ᾱ_n) - d - d log(1 - ᾱ_n)); equal to
    # float64 rounding.
    a, d = float(schedule.alpha_bars[-1]), 2
    expected = 0.5 * (a * float(torch.trace(COV) + MEAN @ MEAN) + d * (1 - a) - d - d * math.log(1 - a))
    assert terms.prior == pytest.approx(expected, rel=1e-12, abs=1e-15)


def not_affine(x, t):
    return exact_eps()(x, t) + 0.1 * x ** 2


@pytest.mark.parametrize("call, error, match", [
    (lambda: expected_vlb(exact_eps(), MEAN, BetaSchedule.linear(30)), TypeError, "p0 must be a GaussianScore"),
    (lambda: expected_vlb(exact_eps(), P0, "linear"), TypeError, "schedule must be a BetaSchedule"),
    (lambda: expected_vlb(exact_eps(), P0, BetaSchedule.linear(30), variance="sigma"), ValueError, "variance must be"),
    (lambda: expected_vlb(None, P0, BetaSchedule.linear(30)), TypeError, "eps_model must be callable"),
    (lambda: expected_vlb(not_affine, P0, BetaSchedule.linear(30)), ValueError, "must be affine"),
    (lambda: model_cross_entropy(not_affine, P0, BetaSchedule.linear(30)), ValueError, "must be affine"),
    (lambda: model_cross_entropy(exact_eps(), P0, BetaSchedule.linear(30), variance="big"), ValueError, "variance"),
    (lambda: gaussian_entropy(COV), TypeError, "p0 must be a GaussianScore"),
])
def test_exact_bound_refuses_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("var1, var2, message", [
    (0.0, 1.0, r"^var1 must be in \(0, inf\), got 0.0$"),
    (-0.5, 1.0, r"^var1 must be in \(0, inf\), got -0.5$"),
    (1.0, torch.tensor([[1.0], [0.0]]), r"^var2 must be in \(0, inf\), got 0.0$"),
    (math.nan, 1.0, r"^var1 must be in \(0, inf\), got nan$"),
])
def test_normal_kl_refuses_variances_outside_zero_to_inf(var1, var2, message):
    with pytest.raises(ValueError, match=message):
        normal_kl(torch.zeros(2, 3), var1, torch.zeros(2, 3), var2)


def wrong_shape(x, t):
    """An ε-model returning (B, 1) for x (B, 2): it would broadcast silently into (B, 2)."""
    return exact_eps()(x, t)[:, :1]


def test_vlb_refuses_a_model_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"^eps_model must return x's shape \(4, 2\), got shape \(4, 1\)$"):
        vlb(wrong_shape, torch.zeros(4, 2, dtype=torch.float64), BetaSchedule.linear(30))


@pytest.mark.parametrize("bound", [expected_vlb, model_cross_entropy])
def test_exact_bound_refuses_a_model_of_the_wrong_shape(bound):
    # The probes are 0 and the unit vectors: x of shape (d + 1, d) = (3, 2).
    with pytest.raises(ValueError, match=r"^eps_model must return x's shape \(3, 2\), got shape \(3, 1\)$"):
        bound(wrong_shape, P0, BetaSchedule.linear(30))
