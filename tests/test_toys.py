"""Toy distributions: exact laws of the closed-form toys, geometry of the sampled ones,
reproducibility, the registry and argument checks."""

import math

import pytest
import scipy.stats
import torch

from conftest import make_generator
from diffsde.toys import TOYS, checkerboard, gaussian, grid, make_toy, mixture, moons, ring, rings, swiss_roll

SAMPLED = ["moons", "swiss_roll", "checkerboard", "rings"]


def three_d_mixture():
    """A 3-D mixture with unequal weights and a correlated component (d != 2 on purpose)."""
    covs = torch.stack([torch.eye(3, dtype=torch.float64),
                        torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64),
                        0.25 * torch.eye(3, dtype=torch.float64)])
    return mixture([0.2, 0.5, 0.3], [[0.0, 0.0, 0.0], [3.0, -1.0, 0.5], [-2.0, 2.0, 1.0]], covs)


def build(name):
    """Every registered toy, with its defaults (the mixture needs parameters)."""
    return three_d_mixture() if name == "mixture" else make_toy(name)


CLOSED = {"gaussian": gaussian, "mixture": three_d_mixture, "ring": ring, "grid": grid}


# -- closed-form toys ------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CLOSED))
@pytest.mark.parametrize("t", [0.0, 0.3, 2.0])
def test_exact_score_is_the_gradient_of_log_prob(name, t):
    toy = CLOSED[name]()
    assert toy.has_exact_score
    x = 4 * torch.randn(200, toy.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x.requires_grad_(True)
    (autograd,) = torch.autograd.grad(toy.log_prob(x, t).sum(), x)
    # Two float64 evaluations of the same closed form: they differ by rounding only.
    assert torch.allclose(toy.score(x.detach(), t), autograd, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n_modes, radius, std", [(8, 4.0, 0.5), (3, 1.0, 0.2), (5, 2.5, 1.0)])
def test_ring_mean_and_cov_closed_form(n_modes, radius, std):
    # Σ_k cos²(2πk/n) = n/2 and Σ_k cos sin = 0 for n >= 3: mean 0, covariance (r²/2 + σ²) I.
    mean, cov = ring(n_modes, radius, std).mean_and_cov()
    assert torch.allclose(mean, torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(cov, (radius**2 / 2 + std**2) * torch.eye(2, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("k, spacing, std", [(5, 2.0, 0.3), (2, 1.5, 0.1), (4, 1.0, 0.5)])
def test_grid_mean_and_cov_closed_form(k, spacing, std):
    # A coordinate is spacing·U + σZ, U uniform on k centred points: variance spacing² (k²-1)/12 + σ².
    toy = grid(k, spacing, std)
    mean, cov = toy.mean_and_cov()
    assert toy.exact_score.n_components == k * k
    assert torch.allclose(mean, torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(cov, (spacing**2 * (k * k - 1) / 12 + std**2) * torch.eye(2, dtype=torch.float64),
                          atol=1e-12)


def test_default_gaussian_is_shifted_correlated_and_anisotropic():
    toy = gaussian()
    mean, cov = toy.mean_and_cov()
    eigvals = torch.linalg.eigvalsh(cov)
    assert float(mean.norm()) > 1.0
    assert float(cov[0, 1]) != 0.0 and float(eigvals[1] / eigvals[0]) > 5
    # Parameters are kept in float64 from the Python literals, not rounded through float32.
    assert float(cov[0, 1]) == 0.9


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_sample_moments_match_the_closed_form(name, device, generator):
    toy = CLOSED[name]()
    n = 20_000
    x = toy.sample(n, generator=generator, dtype=torch.float64).cpu()
    mean, cov = toy.mean_and_cov()
    # CLT: each coordinate of the sample mean is N(μ_j, Σ_jj / n); 5 standard errors
    # (two-sided tail 6e-7 per coordinate) at a fixed seed.
    assert torch.all((x.mean(0) - mean).abs() <= 5 * torch.sqrt(torch.diagonal(cov) / n))
    # Second moments about the true mean: the average of the products (x_i - μ_i)(x_j - μ_j)
    # has standard error std(product) / sqrt(n), estimated from the same sample.
    centred = x - mean
    products = centred.unsqueeze(2) * centred.unsqueeze(1)  # (n, d, d)
    standard_error = products.std(0) / math.sqrt(n)
    assert torch.all((products.mean(0) - cov).abs() <= 5 * standard_error)


# -- sampled-only toys -------------------------------------------------------------------

def test_moons_lie_on_their_half_circles(device, generator):
    scale = 1.5
    x = moons(noise=0.0, scale=scale).sample(4000, generator=generator, dtype=torch.float64).cpu() / scale
    centre = torch.tensor([0.5, 0.25], dtype=torch.float64)
    upper, lower = x + centre, x - centre  # the clean points are (cos θ, sin θ) and -(cos θ, sin θ)
    on_upper = ((upper.norm(dim=1) - 1).abs() < 1e-12) & (upper[:, 1] >= -1e-12)
    on_lower = ((lower.norm(dim=1) - 1).abs() < 1e-12) & (lower[:, 1] <= 1e-12)
    assert bool((on_upper | on_lower).all())
    # Each moon has probability ½: binomial standard error sqrt(¼ / n), 5 of them.
    assert abs(float(on_upper.double().mean()) - 0.5) <= 5 * math.sqrt(0.25 / 4000)


def test_swiss_roll_angle_equals_its_radius(device, generator):
    scale = 0.25
    x = swiss_roll(noise=0.0, scale=scale).sample(4000, generator=generator, dtype=torch.float64).cpu()
    theta = x.norm(dim=1) / scale
    assert bool((theta >= 1.5 * math.pi - 1e-9).all() and (theta <= 4.5 * math.pi + 1e-9).all())
    direction = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    assert torch.allclose(x / x.norm(dim=1, keepdim=True), direction, atol=1e-9)


@pytest.mark.parametrize("k, size", [(4, 8.0), (3, 5.0)])
def test_checkerboard_is_uniform_on_the_dark_cells(k, size, device, generator):
    n = 8000
    x = checkerboard(k, size).sample(n, generator=generator, dtype=torch.float64).cpu()
    assert bool((x.abs() <= size / 2).all())
    cells = torch.floor((x + size / 2) / (size / k)).long().clamp(max=k - 1)
    assert bool(((cells.sum(1) % 2) == 0).all())
    # Within its cell a point is uniform: both fractional coordinates are U(0, 1) (KS, alpha = 1e-3).
    within = (x + size / 2) / (size / k) - cells
    for coordinate in within.T:
        assert scipy.stats.kstest(coordinate.numpy(), scipy.stats.uniform.cdf).pvalue > 1e-3
    # Every dark cell equally likely: Pearson chi-square at a fixed seed, alpha = 1e-3.
    counts = torch.bincount(cells[:, 0] * k + cells[:, 1], minlength=k * k)
    dark = counts[[i * k + j for i in range(k) for j in range(k) if (i + j) % 2 == 0]]
    assert int(dark.sum()) == n
    assert scipy.stats.chisquare(dark.numpy()).pvalue > 1e-3


def test_rings_radii_and_ring_weights(device, generator):
    n_rings, radius, n = 4, 3.0, 8000
    x = rings(n_rings, radius, noise=0.0).sample(n, generator=generator, dtype=torch.float64).cpu()
    index = x.norm(dim=1) * n_rings / radius  # exactly 1, ..., n_rings without noise
    assert torch.allclose(index, index.round(), atol=1e-12)
    counts = torch.bincount(index.round().long(), minlength=n_rings + 1)[1:]
    assert int(counts.sum()) == n
    assert scipy.stats.chisquare(counts.numpy()).pvalue > 1e-3  # equal weights, alpha = 1e-3


@pytest.mark.parametrize("name", SAMPLED)
def test_sampled_toys_refuse_score_and_log_prob(name):
    toy = make_toy(name)
    assert not toy.has_exact_score and toy.exact_score is None
    x = torch.zeros(3, 2)
    with pytest.raises(NotImplementedError, match="no closed-form score"):
        toy.score(x, 0.5)
    with pytest.raises(NotImplementedError, match="no closed-form log_prob"):
        toy.log_prob(x)


# -- every toy ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TOYS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_are_reproducible_and_respect_device_and_dtype(name, dtype, device, seed):
    toy = build(name)
    first = toy.sample(500, generator=make_generator(device, seed), dtype=dtype)
    again = toy.sample(500, generator=make_generator(device, seed), dtype=dtype)
    other = toy.sample(500, generator=make_generator(device, seed + 1), dtype=dtype)
    assert first.shape == (500, toy.dim) and first.dtype == dtype and first.device.type == device.type
    assert bool(torch.isfinite(first).all())
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_default_toys_are_on_a_few_units_scale(name):
    # The documented contract: RMS radius between about 1.5 and 4, so e^{-T/2} at T = 10
    # shrinks the data to a few hundredths. Sampling noise in the RMS is ~1% at n = 20000.
    x = build(name).sample(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rms = float(x.square().sum(1).mean().sqrt())
    assert 1.0 <= rms <= 4.5


def test_registry_names_and_make_toy():
    assert set(TOYS) == {"gaussian", "mixture", "ring", "grid", "moons", "swiss_roll", "checkerboard", "rings"}
    toy = make_toy("ring", n_modes=4, radius=2.0)
    assert toy.name == "ring" and toy.exact_score.n_components == 4
    assert torch.allclose(toy.means.norm(dim=1), torch.full((4,), 2.0, dtype=torch.float64))
    assert make_toy("moons", noise=0.0).params == {"noise": 0.0, "scale": 2.0}


def test_registry_refuses_unknown_names_and_arguments():
    with pytest.raises(ValueError, match=r"unknown toy 'spiral'.*'checkerboard'"):
        make_toy("spiral")
    with pytest.raises(TypeError, match=r"'ring' takes .*'radius'.*unknown \['sigma'\]"):
        make_toy("ring", sigma=1.0)


@pytest.mark.parametrize("factory, kwargs, match", [
    (ring, {"n_modes": 0}, r"n_modes must be an int >= 1"),
    (ring, {"n_modes": 2.5}, r"n_modes must be an int >= 1"),
    (ring, {"radius": -1.0}, r"radius must be in \(0, inf\)"),
    (ring, {"std": 0.0}, r"std must be in \(0, inf\)"),
    (ring, {"std": float("nan")}, r"std must be in \(0, inf\)"),
    (grid, {"k": 0}, r"k must be an int >= 1"),
    (grid, {"spacing": 0.0}, r"spacing must be in \(0, inf\)"),
    (grid, {"std": -0.1}, r"std must be in \(0, inf\)"),
    (moons, {"noise": -0.1}, r"noise must be in \[0, inf\)"),
    (moons, {"scale": 0.0}, r"scale must be in \(0, inf\)"),
    (swiss_roll, {"scale": float("inf")}, r"scale must be in \(0, inf\)"),
    (checkerboard, {"k": 0}, r"k must be an int >= 1"),
    (checkerboard, {"size": -8.0}, r"size must be in \(0, inf\)"),
    (rings, {"n_rings": 0}, r"n_rings must be an int >= 1"),
    (rings, {"noise": -1.0}, r"noise must be in \[0, inf\)"),
    (gaussian, {"mean": [0.0, 0.0]}, r"give both mean and cov"),
    (gaussian, {"mean": [0.0, 0.0], "cov": [[1.0, 2.0], [2.0, 1.0]]}, r"cov must be positive definite"),
    (mixture, {"weights": [0.5, 0.6], "means": [[0.0], [1.0]], "covs": [[[1.0]], [[1.0]]]},
     r"weights must sum to 1"),
])
def test_bad_parameters_are_refused(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


@pytest.mark.parametrize("name", ["ring", "moons"])
def test_sample_refuses_bad_arguments(name):
    toy = make_toy(name)
    for n in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=r"n must be an int >= 1"):
            toy.sample(n)
    for n in (2.5, True, "4"):  # a wrong type is a TypeError (that is also a ValueError, as it was before)
        with pytest.raises(TypeError, match=r"n must be an int >= 1, got"):
            toy.sample(n)
    with pytest.raises(TypeError, match="dtype must be a floating-point"):
        toy.sample(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="must match the generator's device"):
        toy.sample(4, generator=torch.Generator(), device="meta")


def test_the_ou_forgets_the_default_gaussian_by_t_10():
    from diffsde.metrics import gaussian_kl

    # p_10 = N(e^{-5} μ, e^{-10} Σ + (1 - e^{-10}) I): KL to N(0, I) is ½ e^{-10} ‖μ‖² + O(e^{-20})
    # = e^{-10} ≈ 4.5e-5 for μ = (1, -1).
    mean, cov = gaussian().mean_and_cov(10.0)
    kl = gaussian_kl(mean, cov, torch.zeros(2), torch.eye(2))
    assert kl == pytest.approx(math.exp(-10), rel=1e-3)


def test_ring_score_is_finite_far_from_the_data():
    # The default ring (8 modes of std 0.5 at radius 4): at x = (1e20, 0) the mode at (4, 0)
    # takes all the responsibility, so the score is -(x - e^{-1/4} (4, 0)) / λ_t with
    # λ_t = e^{-½}/4 + 1 - e^{-½} ≈ 0.545: ≈ -1.83e20, to float32's rounding (relative 1e-6).
    lam = math.exp(-0.5) * 0.25 - math.expm1(-0.5)
    score = ring().exact_score.score(torch.tensor([[1e20, 0.0]]), 0.5)
    assert bool(torch.isfinite(score).all())
    assert score[0, 0].item() == pytest.approx(-1e20 / lam, rel=1e-6)
    assert abs(score[0, 1].item()) <= 1e-6 * 1e20 / lam


def test_list_parameters_are_float64():
    toy = mixture([0.3, 0.7], [[0.1], [-0.2]], [[[0.9]], [[1.1]]])
    assert toy.means.flatten().tolist() == [0.1, -0.2] and toy.exact_score.covs.flatten().tolist() == [0.9, 1.1]
    assert gaussian([0.1], [[1 - 1e-9]]).exact_score.cov.item() == 1 - 1e-9
