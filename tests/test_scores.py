"""Exact scores and densities of p_t for Gaussian and mixture data (the ε <-> score adapters:
tests/test_parametrizations.py)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.stats import multivariate_normal

from conftest import make_generator
from diffsde import GaussianMixtureScore, GaussianScore
from diffsde.protocols import ExactScore, Score, is_singular_at_zero


@st.composite
def mixtures(draw, dims=(1, 2, 5)):
    """Random mixtures: K in 1..4, weights bounded away from 0, SPD covariances
    A Aᵀ + 0.05 I with eigenvalues between 0.05 and ~10."""
    d = draw(st.sampled_from(dims))
    k = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    raw = torch.rand(k, generator=gen, dtype=torch.float64) + 0.1
    means = 3 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    factors = torch.randn(k, d, d, generator=gen, dtype=torch.float64)
    covs = factors @ factors.transpose(-1, -2) / d + 0.05 * torch.eye(d, dtype=torch.float64)
    return GaussianMixtureScore(raw / raw.sum(), means, covs), gen


def autograd_score(mixture, x, t):
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.log_prob(x, t).sum(), x)
    return grad


@given(mixtures(), st.floats(0.0, 8.0))
def test_score_is_the_gradient_of_log_prob(case, t):
    mixture, gen = case
    x = 3 * torch.randn(64, mixture.dim, generator=gen, dtype=torch.float64)
    # Both sides are float64 closed forms of the same function; they differ by rounding only.
    # The score is O(|x| / λ_min) <= ~300 here, so 1e-9 relative plus 1e-9 absolute is ample.
    assert torch.allclose(mixture.score(x, t), autograd_score(mixture, x, t), rtol=1e-9, atol=1e-9)


@given(mixtures(), st.floats(0.0, 8.0))
def test_score_and_divergence_are_the_gradient_and_laplacian_of_log_prob(case, t):
    mixture, gen = case
    x = 3 * torch.randn(32, mixture.dim, generator=gen, dtype=torch.float64)
    score, divergence = mixture.score_and_divergence(x, t)
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.log_prob(leaf, t).sum(), leaf, create_graph=True)
    laplacian = sum(torch.autograd.grad(grad[:, j].sum(), leaf, retain_graph=True)[0][:, j]
                    for j in range(mixture.dim))
    # Float64 closed forms against autograd of log p_t: rounding only. The Laplacian is a sum of d
    # terms of size up to ~|x|²/λ_min² ~ 1e4, so 1e-8 relative plus 1e-8 absolute is ample.
    assert torch.allclose(score, grad.detach(), rtol=1e-9, atol=1e-9)
    assert torch.allclose(divergence, laplacian.detach(), rtol=1e-8, atol=1e-8)
    times = torch.rand(32, generator=gen, dtype=torch.float64) * 5  # per-sample times: the same formula
    per_sample = mixture.score_and_divergence(x, times)[1]
    one_by_one = torch.cat([mixture.score_and_divergence(x[i:i + 1], float(times[i]))[1] for i in range(32)])
    assert torch.allclose(per_sample, one_by_one, rtol=1e-12, atol=1e-12)


@given(mixtures(dims=(2, 5)))
def test_per_sample_times_match_scalar_times(case):
    mixture, gen = case
    x = torch.randn(16, mixture.dim, generator=gen, dtype=torch.float64)
    times = torch.rand(16, generator=gen, dtype=torch.float64) * 5
    batched = mixture.score(x, times)
    one_by_one = torch.cat([mixture.score(x[i:i + 1], float(times[i])) for i in range(16)])
    assert torch.allclose(batched, one_by_one, rtol=1e-12, atol=1e-12)
    assert torch.allclose(mixture.log_prob(x, times),
                          torch.cat([mixture.log_prob(x[i:i + 1], times[i]) for i in range(16)]),
                          rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t", [0.0, 0.1, 1.0, 5.0])
def test_log_prob_integrates_to_one_in_1d(t):
    mixture = GaussianMixtureScore([0.2, 0.5, 0.3], [[-4.0], [0.0], [3.0]], [[[0.1]], [[1.0]], [[0.5]]])
    density = lambda v: math.exp(float(mixture.log_prob(torch.tensor([[v]], dtype=torch.float64), t)))  # noqa: E731
    # Split at the component means so quad resolves the narrow peaks; quad's own error
    # estimate is below 1e-9, so 1e-8 is the tolerance.
    total = sum(quad(density, a, b, limit=200)[0] for a, b in
                [(-np.inf, -4.0), (-4.0, 0.0), (0.0, 3.0), (3.0, np.inf)])
    assert total == pytest.approx(1.0, abs=1e-8)


def test_gaussian_log_prob_matches_scipy():
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    gaussian = GaussianScore(mean, cov)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (0.0, 0.3, 2.0):
        cov_t = math.exp(-t) * cov + (1 - math.exp(-t)) * torch.eye(2, dtype=torch.float64)
        expected = multivariate_normal(mean=(math.exp(-t / 2) * mean).numpy(), cov=cov_t.numpy()).logpdf(x.numpy())
        assert np.allclose(gaussian.log_prob(x, t).numpy(), expected, rtol=1e-12, atol=1e-12)
        # The score of N(m, C) is -C^{-1}(x - m), solved here by numpy as an independent check.
        expected_score = -np.linalg.solve(cov_t.numpy(), (x - math.exp(-t / 2) * mean).numpy().T).T
        assert np.allclose(gaussian.score(x, t).numpy(), expected_score, rtol=1e-12, atol=1e-12)
        m_t, c_t = gaussian.mean_and_cov(t)
        assert torch.allclose(c_t, cov_t, atol=1e-15) and torch.allclose(m_t, math.exp(-t / 2) * mean, atol=1e-15)


def test_mixture_moments_by_total_covariance():
    mixture = GaussianMixtureScore([0.25, 0.75], [[0.0, 0.0], [4.0, 0.0]],
                                   [torch.eye(2).tolist(), (2 * torch.eye(2)).tolist()])
    mean, cov = mixture.mean_and_cov(0.0)
    # mean = 0.75·4 = 3; Var(x_1) = E Var + Var E = (0.25·1 + 0.75·2) + 0.25·0.75·16 = 4.75.
    assert torch.allclose(mean, torch.tensor([3.0, 0.0], dtype=torch.float64))
    assert torch.allclose(cov, torch.tensor([[4.75, 0.0], [0.0, 1.75]], dtype=torch.float64))


@pytest.mark.parametrize("t", [0.0, 0.7])
def test_sample_matches_the_marginal_moments(device, t):
    mixture = GaussianMixtureScore([0.3, 0.7], [[-2.0, 1.0], [2.0, 0.0]],
                                   [[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 2.0]]])
    n = 200_000
    x = mixture.sample(n, t=t, generator=make_generator(device, 1), dtype=torch.float64)
    assert x.shape == (n, 2) and x.device.type == device.type
    mean, cov = mixture.mean_and_cov(t)
    sample_mean = x.mean(0).cpu()
    sample_cov = torch.cov(x.T).cpu()
    # 5-sigma bounds: the sample mean has std sqrt(C_ii / n); a sample covariance entry has
    # variance (C_ii C_jj + C_ij²) / n for a Gaussian and more for a mixture (kurtosis), so
    # we allow twice the Gaussian value.
    mean_tol = 5 * torch.sqrt(torch.diagonal(cov) / n)
    cov_tol = 5 * torch.sqrt(2 * (torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov**2) / n)
    assert bool(((sample_mean - mean).abs() <= mean_tol).all())
    assert bool(((sample_cov - cov).abs() <= cov_tol).all())


def test_float32_agrees_with_float64(device):
    mixture = GaussianMixtureScore([0.5, 0.5], [[-3.0, 0.0], [3.0, 0.0]], [torch.eye(2).tolist()] * 2)
    x64 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    s64 = mixture.score(x64, 0.2)
    s32 = mixture.score(x64.float().to(device), 0.2)
    assert s32.dtype == torch.float32 and s32.device.type == device.type
    # float32 carries ~6e-8 relative error per operation and a few dozen operations; the
    # score is O(5) here, so 1e-5 absolute is generous and still catches any real mistake.
    assert torch.allclose(s32.double().cpu(), s64, rtol=1e-5, atol=1e-5)


def test_far_points_stay_finite_in_float32(device):
    # log-sum-exp responsibilities: at |x| = 1e3 every component density underflows in
    # float32, yet the score is the nearest component's -Σ_t^{-1}(x - μ_t).
    mixture = GaussianMixtureScore([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [[[0.01, 0.0], [0.0, 0.01]]] * 2)
    x = torch.tensor([[1000.0, 0.0], [-1000.0, 5.0]], device=device)
    score = mixture.score(x, 0.0)
    assert bool(torch.isfinite(score).all()) and bool(torch.isfinite(mixture.log_prob(x, 0.0)).all())
    expected = -torch.tensor([[999.0, 0.0], [-999.0, 5.0]], device=device) / 0.01
    assert torch.allclose(score, expected, rtol=1e-5)


def test_batch_shapes(device):
    mixture = GaussianMixtureScore([1.0], [[0.0, 0.0, 0.0]], [torch.eye(3).tolist()])
    x = torch.randn(4, 5, 3, device=device)
    assert mixture.score(x, 1.0).shape == (4, 5, 3)
    assert mixture.log_prob(x, 1.0).shape == (4, 5)
    assert mixture.score(x, torch.full((4, 5), 1.0, device=device)).shape == (4, 5, 3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights=[0.5, -0.1, 0.6], means=[[0.0]] * 3, covs=[[[1.0]]] * 3), r"weights\[1\] = -0.1"),
    (dict(weights=[0.5, 0.4], means=[[0.0]] * 2, covs=[[[1.0]]] * 2), "sum to 1"),
    (dict(weights=[1.0], means=[[0.0, 0.0]], covs=[[[1.0, 0.5], [0.0, 1.0]]]), "symmetric"),
    (dict(weights=[1.0], means=[[0.0, 0.0]], covs=[[[1.0, 2.0], [2.0, 1.0]]]), "positive definite"),
    (dict(weights=[0.5, 0.5], means=[[0.0, 0.0]], covs=[[[1.0]]] * 2), r"means must have shape \(K, d\) = \(2, d\)"),
    (dict(weights=[1.0], means=[[0.0, 0.0]], covs=[[[1.0]]]), r"covs must have shape"),
    (dict(weights=[1.0], means=[[float("nan")]], covs=[[[1.0]]]), "finite"),
])
def test_bad_mixture_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixtureScore(**kwargs)


def test_bad_gaussian_parameters_and_calls():
    with pytest.raises(ValueError, match="cov must be positive definite"):
        GaussianScore([0.0, 0.0], [[1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match=r"cov must have shape \(d, d\) = \(2, 2\)"):
        GaussianScore([0.0, 0.0], [[1.0]])
    gaussian = GaussianScore([0.0, 0.0], torch.eye(2))
    with pytest.raises(ValueError, match="t must be in"):
        gaussian(torch.zeros(3, 2), -0.5)
    with pytest.raises(ValueError, match="last dimension 2"):
        gaussian(torch.zeros(3, 3), 0.5)
    with pytest.raises(ValueError, match="per-sample times"):
        gaussian(torch.zeros(3, 2), torch.ones(4))
    with pytest.raises(TypeError, match="floating-point"):
        gaussian(torch.zeros(3, 2, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        gaussian.sample(0)
    with pytest.raises(TypeError, match="n must be an int >= 1"):
        gaussian.sample(2.0)


def test_exact_scores_are_exact_scores_by_protocol():
    mixture = GaussianMixtureScore([0.5, 0.5], [[0.0], [1.0]], [[[1.0]], [[2.0]]])
    gaussian = GaussianScore([0.0, 0.0], torch.eye(2))
    for exact in (mixture, gaussian):
        assert isinstance(exact, ExactScore) and isinstance(exact, Score)
        assert not is_singular_at_zero(exact)  # finite at t = 0: it is the score of p_0
    assert not isinstance(lambda x, t: -x, ExactScore)


def test_a_stack_of_covariances_names_the_bad_one():
    covs = [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]]
    with pytest.raises(ValueError, match=r"covs\[2\] must be positive definite"):
        GaussianMixtureScore([0.2, 0.3, 0.5], [[0.0, 0.0]] * 3, covs)


def test_python_lists_are_read_in_float64():
    # Lists and floats are float64 until the user asks otherwise: never rounded through float32.
    assert GaussianScore([0.1], [[1.0]]).mean.item() == 0.1
    mixture = GaussianMixtureScore([0.3, 0.7], [[0.1], [-0.2]], [[[0.9]], [[1.1]]])
    assert mixture.means.flatten().tolist() == [0.1, -0.2] and mixture.covs.flatten().tolist() == [0.9, 1.1]
    # Positive definite in float64 (eigenvalues 1e-9 and 2 - 1e-9); in float32 1 - 1e-9 rounds to 1.
    nearly = GaussianScore([0, 0], [[1, 1 - 1e-9], [1 - 1e-9, 1]])
    assert float(nearly.eigvals.min()) == pytest.approx(1e-9, rel=1e-6)
    # A tensor keeps its own dtype's values (float32 0.1, converted exactly).
    assert GaussianScore(torch.tensor([0.1]), torch.eye(1)).mean.item() == float(torch.tensor(0.1))


@pytest.mark.parametrize("dtype, far", [(torch.float32, 1e20), (torch.float64, 1e155), (torch.float64, 1e300)])
def test_mixture_score_stays_finite_far_from_the_data(device, dtype, far):
    # Two components of covariance 0.25 I at (±4, 0); at t = 0.5, λ_t = e^{-½}/4 + 1 - e^{-½}.
    # Far along +x the responsibility of (4, 0) is 1 (the log-odds are 2·4·2·far/λ_t), so the score
    # is -(x - e^{-1/4} (4, 0)) / λ_t: -far / λ_t in the first coordinate, 0 in the second, up to
    # the rounding of numbers of size far (relative 1e-6 in float32, 1e-15 in float64).
    mixture = GaussianMixtureScore([0.5, 0.5], [[4.0, 0.0], [-4.0, 0.0]], [(0.25 * torch.eye(2)).tolist()] * 2)
    lam = math.exp(-0.5) * 0.25 - math.expm1(-0.5)
    x = torch.tensor([[far, 0.0], [0.0, -far]], dtype=dtype, device=device)
    expected = torch.tensor([[-far / lam, 0.0], [0.0, far / lam]], dtype=dtype, device=device)
    rtol = 1e-6 if dtype == torch.float32 else 1e-14
    for t in (0.5, torch.tensor(0.5, dtype=dtype, device=device), torch.full((2,), 0.5, dtype=dtype, device=device)):
        score = mixture.score(x, t)  # a float t takes the fast path, tensors the batched one
        assert bool(torch.isfinite(score).all())
        assert torch.allclose(score, expected, rtol=rtol, atol=rtol * far / lam)


def test_log_prob_stays_finite_where_it_is_representable(device):
    # log p_t(x) ≈ -½ q with q = |x - μ|² / λ_t of the nearest component; q overflows before
    # ½ q does (float32 at |x| = 1.5e19: q ≈ 4e38 > 3.4e38 > ½ q; float64 at 1e154 likewise).
    # The other terms are below the rounding of ½ q (relative 1e-6 in float32, 1e-14 in float64).
    mixture = GaussianMixtureScore([0.5, 0.5], [[4.0, 0.0], [-4.0, 0.0]], [(0.25 * torch.eye(2)).tolist()] * 2)
    lam = math.exp(-0.5) * 0.25 - math.expm1(-0.5)
    for dtype, far, rtol in ((torch.float32, 1.5e19, 1e-6), (torch.float64, 1e154, 1e-14)):
        x = torch.tensor([[far, 0.0]], dtype=dtype, device=device)
        expected = -(0.5 * far / math.sqrt(lam)) * (far / math.sqrt(lam))
        for t in (0.5, torch.full((1,), 0.5, dtype=dtype, device=device)):
            assert mixture.log_prob(x, t).item() == pytest.approx(expected, rel=rtol)


def big_mixture(k: int, d: int, **kwargs) -> GaussianMixtureScore:
    gen = torch.Generator().manual_seed(11)
    factors = torch.randn(k, d, d, generator=gen, dtype=torch.float64)
    covs = factors @ factors.transpose(-1, -2) / d + 0.1 * torch.eye(d, dtype=torch.float64)
    means = 3 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    return GaussianMixtureScore(torch.full((k,), 1.0 / k, dtype=torch.float64), means, covs, **kwargs)


def cached_bytes(mixture: GaussianMixtureScore) -> int:
    return sum(term.nbytes for terms in mixture._time_cache.values() for term in terms)


def test_time_cache_is_bounded_in_bytes_and_changes_no_result():
    # One cached time holds K·(d² + d + 1) numbers: 40·(64 + 8 + 1)·8 = 23,360 bytes in float64.
    bound = 50_000  # room for two times
    small, uncached = big_mixture(40, 8, cache_bytes=bound), big_mixture(40, 8, cache_bytes=0)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    times = [0.1 * (i % 7) for i in range(30)]  # 7 distinct times, each revisited after eviction
    for t in times:
        assert torch.equal(small.score(x, t), uncached.score(x, t))
        assert torch.equal(small.log_prob(x, t), uncached.log_prob(x, t))
        assert 0 < cached_bytes(small) <= bound and small._time_cache_nbytes == cached_bytes(small)
    assert cached_bytes(uncached) == 0
    # Least recently used out first: after t1, t2, t1, t3 the cache holds t1 and t3.
    small.score(x, 1.0), small.score(x, 2.0), small.score(x, 1.0), small.score(x, 3.0)
    assert [key[0] for key in small._time_cache] == [1.0, 3.0]


def test_default_cache_bound_holds_for_a_large_mixture():
    # K = 1000, d = 16: K·(d² + d + 1)·4 = 1,092,000 bytes a time in float32 (K = 1000, d = 64
    # would be 16.6 MB), so the default 64 MiB keeps 61 times of the 70 asked for.
    mixture = big_mixture(1000, 16)
    assert mixture.cache_bytes == 64 * 2**20
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    for i in range(70):
        mixture.score(x, 0.01 * (i + 1))
        assert cached_bytes(mixture) <= mixture.cache_bytes
    assert len(mixture._time_cache) == mixture.cache_bytes // 1_092_000
    # An entry larger than the bound is not kept at all.
    tight = big_mixture(40, 8, cache_bytes=1000)
    tight.score(torch.zeros(1, 8), 0.5)
    assert cached_bytes(tight) == 0


@pytest.mark.parametrize("value, error", [(-1, ValueError), (1.5, TypeError), (None, TypeError)])
def test_cache_bound_is_checked(value, error):
    with pytest.raises(error, match="cache_bytes must be an int >= 0"):
        GaussianScore([0.0], [[1.0]], cache_bytes=value)


def test_large_calls_do_not_fill_the_time_cache():
    # One small tensor kept per time between calls with large temporaries fragments the C heap
    # (a 1000-step run at N = 1e5 peaked at up to 2.9 GB resident); calls above 2048 rows
    # recompute their per-time constants, which then cost a small share of the call.
    score = GaussianMixtureScore([0.5, 0.5], [[1.0, 0.0], [-1.0, 0.0]], torch.eye(2).repeat(2, 1, 1))
    large, small = torch.zeros(4096, 2), torch.zeros(16, 2)
    first = score.score(large, 0.5)
    assert len(score._time_cache) == 0
    assert torch.equal(score.score(small, 0.5), first[:16])
    assert len(score._time_cache) == 1
    assert torch.equal(score.score(large, 0.5), first)  # now read from the cache: the same numbers
