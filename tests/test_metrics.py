"""Metrics: each against a case with a known answer (closed forms, hand computations,
independent scipy routes), plus the input checks."""

import math
from math import comb

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats
import torch

from conftest import make_generator
from diffsde import metrics
from diffsde.metrics import (
    cov_error,
    energy_distance,
    gaussian_kl,
    gaussian_w2,
    ks,
    mean_error,
    mmd,
    mode_weights,
    mode_weights_test,
    sliced_wasserstein,
    w1,
)


def random_spd(rng, d):
    factor = rng.normal(size=(d, d))
    return factor @ factor.T / d + 0.2 * np.eye(d)


def rotation(angle):
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


# -- Gaussian KL -------------------------------------------------------------------------

def test_kl_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mean, cov = rng.normal(size=4), random_spd(rng, 4)
    assert abs(gaussian_kl(mean, cov, mean, cov)) < 1e-12  # rounding only


@pytest.mark.parametrize("m1, s1, m2, s2", [(0.0, 1.0, 0.0, 2.0), (1.0, 0.5, -2.0, 3.0), (0.3, 2.0, 0.0, 1.0)])
def test_kl_matches_the_one_dimensional_closed_form(m1, s1, m2, s2):
    expected = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    assert gaussian_kl(m1, s1**2, m2, s2**2) == pytest.approx(expected, rel=1e-12)
    assert gaussian_kl([m1], [[s1**2]], [m2], [[s2**2]]) == pytest.approx(expected, rel=1e-12)


def test_kl_matches_monte_carlo_of_the_log_density_ratio():
    rng = np.random.default_rng(1)
    mean1, cov1, mean2, cov2 = rng.normal(size=3), random_spd(rng, 3), rng.normal(size=3), random_spd(rng, 3)
    x = rng.multivariate_normal(mean1, cov1, size=200_000)
    ratio = (scipy.stats.multivariate_normal(mean1, cov1).logpdf(x)
             - scipy.stats.multivariate_normal(mean2, cov2).logpdf(x))
    # KL = E_1[log p1/p2]: the Monte Carlo mean is within 5 of its standard errors.
    assert abs(gaussian_kl(mean1, cov1, mean2, cov2) - ratio.mean()) <= 5 * ratio.std() / math.sqrt(x.shape[0])


def test_kl_is_invariant_under_a_common_affine_map():
    rng = np.random.default_rng(2)
    mean1, cov1, mean2, cov2 = rng.normal(size=3), random_spd(rng, 3), rng.normal(size=3), random_spd(rng, 3)
    a, b = rng.normal(size=(3, 3)) + 2 * np.eye(3), rng.normal(size=3)
    moved = gaussian_kl(a @ mean1 + b, a @ cov1 @ a.T, a @ mean2 + b, a @ cov2 @ a.T)
    assert moved == pytest.approx(gaussian_kl(mean1, cov1, mean2, cov2), rel=1e-10)


# -- Gaussian W2 -------------------------------------------------------------------------

def test_w2_with_commuting_covariances():
    # Same eigenvectors: W2² = ‖Δm‖² + ‖√Σ1 - √Σ2‖_F² = ‖Δm‖² + Σ_i (√a_i - √b_i)².
    r = rotation(0.7)
    a, b = np.array([2.0, 0.3]), np.array([0.5, 1.7])
    cov1, cov2 = r @ np.diag(a) @ r.T, r @ np.diag(b) @ r.T
    mean1, mean2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    expected = np.sum((mean1 - mean2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert gaussian_w2(mean1, cov1, mean2, cov2) ** 2 == pytest.approx(expected, rel=1e-12)


def test_w2_one_dimensional_and_singular_cases():
    assert gaussian_w2(1.0, 4.0, -1.0, 1.0) == pytest.approx(math.sqrt(4 + 1), rel=1e-12)
    # N(0, diag(1, 0)) vs N(0, diag(0, 1)): tr Σ1 + tr Σ2 - 2 tr(0) = 2.
    singular = gaussian_w2([0, 0], np.diag([1.0, 0.0]), [0, 0], np.diag([0.0, 1.0]))
    assert singular == pytest.approx(math.sqrt(2), rel=1e-12)
    rng = np.random.default_rng(3)
    mean, cov = rng.normal(size=3), random_spd(rng, 3)
    assert gaussian_w2(mean, cov, mean, cov) < 1e-7  # sqrt of a rounding-level W2²


def test_w2_non_commuting_matches_scipy_sqrtm_and_is_symmetric():
    rng = np.random.default_rng(4)
    mean1, cov1, mean2, cov2 = rng.normal(size=3), random_spd(rng, 3), rng.normal(size=3), random_spd(rng, 3)
    # tr((Σ2^{1/2} Σ1 Σ2^{1/2})^{1/2}) = tr((Σ1 Σ2)^{1/2}): the product's square root by scipy's
    # Schur method is an independent route to the Bures term.
    bures = np.trace(scipy.linalg.sqrtm(cov1 @ cov2)).real
    expected = np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * bures
    forward = gaussian_w2(mean1, cov1, mean2, cov2)
    assert forward**2 == pytest.approx(expected, rel=1e-9)
    assert gaussian_w2(mean2, cov2, mean1, cov1) == pytest.approx(forward, rel=1e-10)


def test_w2_matches_sliced_wasserstein_in_one_dimension():
    # Quantile samples x_i = m + s z_i, z_i = Φ⁻¹((i - ½)/n): sorted pairs differ by
    # Δm + Δs z_i, so SW_2² = Δm² + Δs² mean(z²) (mean z = 0), and mean(z²) → 1.
    n = 20_000
    z = scipy.stats.norm.ppf((np.arange(n) + 0.5) / n)
    m1, s1, m2, s2 = 0.5, 1.0, -1.0, 2.5
    sliced = sliced_wasserstein(m1 + s1 * z, m2 + s2 * z, n_projections=4)
    exact = gaussian_w2(m1, s1**2, m2, s2**2)
    assert abs(np.mean(z**2) - 1) < 1e-3
    assert abs(sliced**2 - exact**2) <= (s1 - s2) ** 2 * abs(np.mean(z**2) - 1) + 1e-12


@pytest.mark.parametrize("function", [gaussian_kl, gaussian_w2])
def test_gaussian_closed_forms_refuse_bad_input(function):
    eye = np.eye(2)
    with pytest.raises(ValueError, match=r"mean2 must have shape \(2,\)"):
        function([0, 0], eye, [0, 0, 0], eye)
    with pytest.raises(ValueError, match=r"cov2 must have shape \(d, d\) = \(2, 2\)"):
        function([0, 0], eye, [0, 0], np.eye(3))
    with pytest.raises(ValueError, match="cov1 must be symmetric"):
        function([0, 0], [[1.0, 0.5], [0.0, 1.0]], [0, 0], eye)
    with pytest.raises(ValueError, match="cov2 must be positive"):
        function([0, 0], eye, [0, 0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="mean1 must be finite"):
        function([np.nan, 0], eye, [0, 0], eye)
    with pytest.raises(TypeError, match="mean1 must hold real numbers"):
        function(["a", "b"], eye, [0, 0], eye)


# -- moment errors -----------------------------------------------------------------------

def test_moment_errors_on_constructed_points(device):
    # Four points (±1, 0), (0, ±1): mean 0, unbiased covariance (2/3) I.
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], device=device)
    assert mean_error(x, [3.0, 4.0]) == pytest.approx(5.0, rel=1e-12)
    assert mean_error(x, [0.0, 0.0]) == 0.0
    assert cov_error(x, np.diag([2 / 3, 2 / 3])) == pytest.approx(0.0, abs=1e-15)
    assert cov_error(x, np.eye(2)) == pytest.approx(math.sqrt(2) / 3, rel=1e-12)


def test_moment_errors_match_numpy(device, generator):
    x = torch.randn(300, 3, generator=generator, device=device, dtype=torch.float64)
    mean, cov = np.array([0.1, -0.2, 0.3]), np.diag([1.0, 2.0, 0.5])
    xn = x.cpu().numpy()
    assert mean_error(x, mean) == pytest.approx(np.linalg.norm(xn.mean(0) - mean), rel=1e-12)
    assert cov_error(x, cov) == pytest.approx(np.linalg.norm(np.cov(xn.T) - cov), rel=1e-12)
    assert mean_error(xn, mean) == pytest.approx(mean_error(x, mean), rel=1e-15)  # numpy input too


# -- sliced Wasserstein ------------------------------------------------------------------

@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_sliced_wasserstein_of_a_1d_shift_is_the_shift(p, device, generator):
    x = torch.randn(500, 1, generator=generator, device=device, dtype=torch.float64)
    # Every projection is ±1 and sorted samples differ by exactly c.
    assert sliced_wasserstein(x, x + 0.7, p=p) == pytest.approx(0.7, rel=1e-12)
    assert sliced_wasserstein(x, x - 1.3, p=p, n_projections=3) == pytest.approx(1.3, rel=1e-12)
    assert sliced_wasserstein(x, x) == 0.0


def test_sliced_wasserstein_of_a_2d_shift_averages_over_directions(device, generator):
    # Projected on θ = (cos φ, sin φ), a shift c moves every point by θ·c, so
    # SW_1 = mean_θ |θ·c| → E|cos φ| ‖c‖ = (2/π)‖c‖, with per-projection std
    # sqrt(½ - 4/π²) ‖c‖: 5 standard errors over 20000 projections.
    x = torch.randn(200, 2, generator=generator, device=device, dtype=torch.float64)
    c = torch.tensor([1.5, -2.0], device=device, dtype=torch.float64)
    projections = 20_000
    value = sliced_wasserstein(x, x + c, n_projections=projections, p=1.0, generator=make_generator(device, 7))
    tolerance = 5 * math.sqrt(0.5 - 4 / math.pi**2) * 2.5 / math.sqrt(projections)
    assert abs(value - 2 / math.pi * 2.5) <= tolerance


def test_sliced_wasserstein_unequal_sizes_is_exact():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=30), rng.normal(size=20) + 0.4
    assert sliced_wasserstein(x, y, p=1.0) == pytest.approx(scipy.stats.wasserstein_distance(x, y), rel=1e-12)
    # Repeating every x 20 times and every y 30 times gives the same laws with equal sizes,
    # where W_p^p is the mean of |sorted differences|^p.
    xs, ys = np.sort(np.repeat(x, 20)), np.sort(np.repeat(y, 30))
    for p in (2.0, 3.0):
        expected = np.mean(np.abs(xs - ys) ** p) ** (1 / p)
        assert sliced_wasserstein(x, y, p=p) == pytest.approx(expected, rel=1e-12)


def test_sliced_wasserstein_projections_come_from_the_generator(device, generator):
    x = torch.randn(100, 3, generator=generator, device=device, dtype=torch.float64)
    y = 1.5 * torch.randn(80, 3, generator=generator, device=device, dtype=torch.float64)
    assert sliced_wasserstein(x, y) == sliced_wasserstein(x, y)  # default: a generator seeded with 0
    first = sliced_wasserstein(x, y, n_projections=5, generator=make_generator(device, 1))
    assert first == sliced_wasserstein(x, y, n_projections=5, generator=make_generator(device, 1))
    assert first != sliced_wasserstein(x, y, n_projections=5, generator=make_generator(device, 2))


# -- MMD ---------------------------------------------------------------------------------

def test_mmd_by_hand():
    # x = {0, 1}, y = {0, 2}, h = 1: within_x = k(1) = e^{-1/2}, within_y = k(2) = e^{-2},
    # cross = (1 + e^{-2} + 2 e^{-1/2}) / 4, so MMD²_u = e^{-2}/2 - 1/2.
    value = mmd([[0.0], [1.0]], [[0.0], [2.0]], bandwidth=1.0)
    assert value == pytest.approx(0.5 * math.exp(-2) - 0.5, rel=1e-12)


def test_mmd_blocks_do_not_change_the_sum(monkeypatch):
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(57, 2)), rng.normal(size=(43, 2)) + 0.3
    whole = mmd(x, y, bandwidth=0.8)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 7)  # blocks of one row
    assert mmd(x, y, bandwidth=0.8) == pytest.approx(whole, rel=1e-12)


def test_mmd_default_bandwidth_is_the_pooled_median_distance():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(60, 2)), rng.normal(size=(40, 2))
    median = np.median(scipy.spatial.distance.pdist(np.concatenate([x, y])))
    assert mmd(x, y) == pytest.approx(mmd(x, y, bandwidth=median), rel=1e-12)


def gaussian_kernel_mean(delta, cov_sum, h):
    """E exp(-‖Z‖²/(2h²)) for Z ~ N(Δ, S): det(I + S/h²)^{-1/2} exp(-½ Δᵀ(S + h² I)⁻¹Δ)."""
    d = len(delta)
    return (np.linalg.det(np.eye(d) + cov_sum / h**2) ** -0.5
            * math.exp(-0.5 * delta @ np.linalg.solve(cov_sum + h**2 * np.eye(d), delta)))


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_mmd_is_unbiased_for_the_closed_form(shift, device, generator):
    # X ~ N(0, I), Y ~ N((shift, 0), I) in 2-D; with a fixed h the population MMD² is
    # E k(X,X') + E k(Y,Y') - 2 E k(X,Y) in closed form. The mean of R independent
    # estimates must match it within 5 standard errors (a V-statistic, biased by
    # 2 (1 - E k(X,X')) / n ≈ 0.005 here, would fail at shift 0 where the SE is ≈ 0.0003).
    h, n, reps = 1.5, 200, 40
    delta = np.array([shift, 0.0])
    same = gaussian_kernel_mean(np.zeros(2), 2 * np.eye(2), h)
    expected = 2 * same - 2 * gaussian_kernel_mean(delta, 2 * np.eye(2), h)
    offset = torch.tensor(delta, device=device)
    values = np.array([
        mmd(torch.randn(n, 2, generator=generator, device=device, dtype=torch.float64),
            torch.randn(n, 2, generator=generator, device=device, dtype=torch.float64) + offset, bandwidth=h)
        for _ in range(reps)])
    assert abs(values.mean() - expected) <= 5 * values.std(ddof=1) / math.sqrt(reps)


def test_mmd_separates_shifted_laws_from_equal_ones(device, generator):
    # Same law: estimates straddle 0; shifted by 1 (population MMD² ≈ 0.11 with the median
    # bandwidth ~ 1.8, null spread ~ 0.002 at n = 300): every shifted estimate exceeds every null one.
    def draw(offset):
        return torch.randn(300, 2, generator=generator, device=device, dtype=torch.float64) + offset

    null = [mmd(draw(0.0), draw(0.0)) for _ in range(10)]
    shifted = [mmd(draw(0.0), draw(torch.tensor([1.0, 0.0], device=device, dtype=torch.float64)))
               for _ in range(10)]
    assert min(null) < 0 < max(null)
    assert min(shifted) > 10 * max(abs(v) for v in null)


def test_mmd_refuses_bad_bandwidths_and_tiny_samples():
    x = np.arange(6.0).reshape(3, 2)
    for bandwidth in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"bandwidth must be in \(0, inf\)"):
            mmd(x, x + 1, bandwidth=bandwidth)
    with pytest.raises(ValueError, match="y must hold at least 2 sample"):
        mmd(x, x[:1])
    with pytest.raises(ValueError, match="median pairwise distance is 0"):
        mmd(np.zeros((5, 2)), np.zeros((5, 2)))


# -- energy distance ---------------------------------------------------------------------

def test_energy_distance_is_scipy_squared_in_1d(device, generator):
    x = torch.randn(70, generator=generator, device=device, dtype=torch.float64)
    y = 2 * torch.randn(45, generator=generator, device=device, dtype=torch.float64) + 0.5
    expected = scipy.stats.energy_distance(x.cpu().numpy(), y.cpu().numpy()) ** 2
    assert energy_distance(x, y) == pytest.approx(expected, rel=1e-10)
    assert energy_distance(x, x) == 0.0


def test_energy_distance_matches_brute_force_in_3d():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) * 1.5
    cdist = scipy.spatial.distance.cdist
    expected = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    assert energy_distance(x, y) == pytest.approx(expected, rel=1e-12)


def expected_abs_normal(mu, sigma):
    """E|Z| for Z ~ N(mu, sigma²): sigma sqrt(2/π) e^{-mu²/(2 sigma²)} + mu (1 - 2 Φ(-mu/sigma))."""
    return (sigma * math.sqrt(2 / math.pi) * math.exp(-mu**2 / (2 * sigma**2))
            + mu * (1 - 2 * scipy.stats.norm.cdf(-mu / sigma)))


@pytest.mark.parametrize("mu, sigma", [(0.0, 1.0), (1.0, 2.0)])
def test_energy_distance_matches_the_gaussian_closed_form(mu, sigma, device, generator):
    # X ~ N(0, 1), Y ~ N(mu, sigma²): D = 2 E|X - Y| - E|X - X'| - E|Y - Y'| with
    # E|X - Y| = E|N(mu, 1 + sigma²)|, E|X - X'| = 2/√π, E|Y - Y'| = 2 sigma/√π. The
    # V-statistic's diagonal zeros shift its mean by E|X - X'|/n + E|Y - Y'|/m. The mean of
    # R estimates must match within 5 standard errors (at mu = 0, sigma = 1, D = 0).
    n, reps = 400, 20
    within_x, within_y = 2 / math.sqrt(math.pi), 2 * sigma / math.sqrt(math.pi)
    population = 2 * expected_abs_normal(mu, math.sqrt(1 + sigma**2)) - within_x - within_y
    expected = population + within_x / n + within_y / n
    values = np.array([
        energy_distance(torch.randn(n, generator=generator, device=device, dtype=torch.float64),
                        mu + sigma * torch.randn(n, generator=generator, device=device, dtype=torch.float64))
        for _ in range(reps)])
    assert abs(values.mean() - expected) <= 5 * values.std(ddof=1) / math.sqrt(reps)


# -- modes -------------------------------------------------------------------------------

MODES = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]


def test_mode_weights_on_constructed_points(device):
    near = torch.tensor([[0.5, -0.5]] * 2 + [[9.0, 1.0]] * 5 + [[-1.0, 11.0]] * 3, device=device)
    assert torch.equal(mode_weights(near, MODES), torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64))
    # A point equidistant from modes 1 and 2 goes to the lower index.
    assert torch.equal(mode_weights([[10.0, 10.0]], MODES), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


def test_mode_weights_test_statistic_by_hand():
    # Counts (20, 50, 30) against equal weights: χ² = (13.3² + 16.7² + 3.3²)/33.3 = 14,
    # and with 2 degrees of freedom the p-value is e^{-χ²/2}.
    x = [[0.5, -0.5]] * 20 + [[9.0, 1.0]] * 50 + [[-1.0, 11.0]] * 30
    statistic, p_value = mode_weights_test(x, MODES, [1 / 3, 1 / 3, 1 / 3])
    assert statistic == pytest.approx(14.0, rel=1e-12)
    assert p_value == pytest.approx(math.exp(-7.0), rel=1e-9)


def test_mode_weights_test_accepts_true_weights_and_rejects_wrong_ones(device, generator):
    from diffsde.toys import mixture

    weights = [0.5, 0.3, 0.2]
    covs = 0.25 * np.stack([np.eye(2)] * 3)  # modes 10 apart, std 0.5: misassignment ~ P(Z > 10)
    x = mixture(weights, MODES, covs).sample(3000, generator=generator, dtype=torch.float64)
    # Under the true weights p ~ U(0, 1): alpha = 1e-3 at a fixed seed.
    assert mode_weights_test(x, MODES, weights).p_value > 1e-3
    # Wrong weights (0.4, 0.4, 0.2): noncentrality n Σ (p - q)²/q = 3000 (0.01/0.4 · 2) = 150
    # on 2 degrees of freedom, so the p-value is astronomically small.
    assert mode_weights_test(x, MODES, [0.4, 0.4, 0.2]).p_value < 1e-12


def test_mode_weights_test_refuses_bad_weights():
    x = [[0.0, 0.0]] * 30 + [[10.0, 0.0]] * 30 + [[0.0, 10.0]] * 30
    with pytest.raises(ValueError, match="weights must sum to 1"):
        mode_weights_test(x, MODES, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="weights must be positive"):
        mode_weights_test(x, MODES, [0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match=r"weights must have shape \(3,\)"):
        mode_weights_test(x, MODES, [0.5, 0.5])
    with pytest.raises(ValueError, match="expected count"):
        mode_weights_test(x[:12], MODES, [1 / 3, 1 / 3, 1 / 3])
    with pytest.raises(ValueError, match=r"means must have shape \(K, 2\)"):
        mode_weights(x, [[0.0, 0.0, 0.0]])


# -- 1-D tests ---------------------------------------------------------------------------

def test_ks_known_cases(device):
    n = 100
    u = torch.tensor((np.arange(n) + 0.5) / n, device=device).unsqueeze(1)  # (n, 1) accepted
    # The midpoint quantiles of U(0, 1) are 1/(2n) from its CDF everywhere, the least D can be.
    statistic, p_value = ks(u, scipy.stats.uniform.cdf)
    assert statistic == pytest.approx(1 / (2 * n), rel=1e-12)
    assert p_value == pytest.approx(1.0)
    # Disjoint samples of sizes 50 and 40: D = 1, exact two-sided p-value 2 / C(90, 50).
    statistic, p_value = ks(np.arange(50.0), np.arange(40.0) + 100)
    assert statistic == 1.0
    assert p_value == pytest.approx(2 / comb(90, 50), rel=1e-9)


def test_w1_known_cases(device):
    x = torch.randn(200, generator=make_generator(device, 9), device=device, dtype=torch.float64)
    assert w1(x, x + 0.8) == pytest.approx(0.8, rel=1e-12)
    assert w1([0.0], [0.0, 1.0]) == pytest.approx(0.5, rel=1e-12)


def test_one_dimensional_tests_refuse_multivariate_samples():
    with pytest.raises(ValueError, match=r"x must be 1-D samples"):
        ks(np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match=r"y must be 1-D samples"):
        w1(np.zeros(5), np.zeros((5, 2)))


# -- input checks shared by the sample metrics -------------------------------------------

TWO_SAMPLE = [sliced_wasserstein, mmd, energy_distance]


@pytest.mark.parametrize("function", TWO_SAMPLE + [w1, ks])
def test_two_sample_metrics_refuse_bad_samples(function):
    good = np.arange(10.0)
    with pytest.raises(ValueError, match="x must be finite"):
        function(np.array([0.0, np.nan, 1.0]), good)
    with pytest.raises(ValueError, match="y must hold at least"):
        function(good, np.zeros(0))
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\) or \(n,\)"):
        function(np.zeros((2, 2, 2)), good)
    with pytest.raises(TypeError, match="y must hold real numbers"):
        function(good, np.array(["a", "b"]))


@pytest.mark.parametrize("function", TWO_SAMPLE)
def test_two_sample_metrics_refuse_mismatched_dimensions(function):
    with pytest.raises(ValueError, match="x and y must have the same dimension"):
        function(np.zeros((4, 2)), np.ones((4, 3)))


def test_moment_errors_refuse_bad_input():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"mean must have shape \(2,\)"):
        mean_error(x, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="x must hold at least 2 sample"):
        cov_error(x[:1], np.eye(2))
    with pytest.raises(ValueError, match="cov must be finite"):
        cov_error(x, [[np.inf, 0.0], [0.0, 1.0]])


def test_sliced_wasserstein_refuses_bad_parameters():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="n_projections must be an int >= 1"):
        sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(ValueError, match=r"p must be in \[1, inf\)"):
        sliced_wasserstein(x, x, p=0.5)
    with pytest.raises(TypeError, match=r"n_projections must be an int >= 1, got float 2.0"):
        sliced_wasserstein(x, x, n_projections=2.0)
    with pytest.raises(TypeError, match=r"p must be a real number in \[1, inf\), got str"):
        sliced_wasserstein(x, x, p="2")
