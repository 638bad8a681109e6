"""Distances between samples and distributions, for judging samplers on toy data.

Closed forms between Gaussians (:func:`gaussian_kl`, :func:`gaussian_w2`), moment errors
against a reference law (:func:`mean_error`, :func:`cov_error`), two-sample distances
(:func:`sliced_wasserstein`, :func:`mmd`, :func:`energy_distance`), mode coverage
(:func:`mode_weights`, :func:`mode_weights_test`) and 1-D tests (:func:`ks`, :func:`w1`).

Samples are (n, d) torch tensors or numpy arrays (an (n,) input is n points in 1-D); they
are read in float64 on the tensor's device. Scalar results are Python floats. Empty
inputs, wrong shapes and NaN or infinite entries raise ValueError; non-numeric inputs
raise TypeError.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Union

import numpy as np
import scipy.stats
import torch
from torch import Tensor

from ._checks import check_int, check_real, check_spd, check_symmetric

__all__ = [
    "StatResult",
    "gaussian_kl",
    "gaussian_w2",
    "mean_error",
    "cov_error",
    "sliced_wasserstein",
    "mmd",
    "energy_distance",
    "mode_weights",
    "mode_weights_test",
    "ks",
    "w1",
]

ArrayLike = Union[Tensor, np.ndarray]

# Pairwise sums are taken in row blocks of at most this many distances (32 MiB in float64),
# so 10k x 10k samples never hold the full distance matrix.
_BLOCK_ELEMENTS = 1 << 22
# The median heuristic looks at pairwise distances among at most this many pooled points.
_MEDIAN_POINTS = 1000


class StatResult(NamedTuple):
    """A test statistic and its p-value."""

    statistic: float
    p_value: float


# -- input conversion ---------------------------------------------------------------------

def _tensor(value, name: str) -> Tensor:
    """A real float64 tensor from a tensor, numpy array or nested sequence, checked finite."""
    if isinstance(value, Tensor):
        out = value.detach()
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a torch.Tensor or a numpy array of numbers") from err
        if array.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers, got numpy dtype {array.dtype}")
        out = torch.from_numpy(array.copy())
    if out.is_complex() or out.dtype == torch.bool:
        raise TypeError(f"{name} must be real, got dtype {out.dtype}")
    out = out.to(torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} must be finite, got a NaN or infinite entry")
    return out


def _samples(x, name: str, *, min_n: int = 1, device: torch.device | None = None) -> Tensor:
    """Samples as an (n, d) float64 tensor with n >= min_n; (n,) is read as (n, 1)."""
    out = _tensor(x, name)
    if device is not None:
        out = out.to(device)
    if out.dim() == 1:
        out = out.unsqueeze(1)
    if out.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d) or (n,), got {tuple(out.shape)}")
    if out.shape[1] == 0:
        raise ValueError(f"{name} must have d >= 1 coordinates, got shape {tuple(out.shape)}")
    if out.shape[0] < min_n:
        raise ValueError(f"{name} must hold at least {min_n} sample(s), got {out.shape[0]}")
    return out


def _sample_pair(x, y, *, min_n: int = 1) -> tuple[Tensor, Tensor]:
    """Two sample sets of the same dimension on one device (y follows x, or x follows y)."""
    if isinstance(x, Tensor) and isinstance(y, Tensor) and x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")
    device = x.device if isinstance(x, Tensor) else (y.device if isinstance(y, Tensor) else None)
    x = _samples(x, "x", min_n=min_n, device=device)
    y = _samples(y, "y", min_n=min_n, device=device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension d, "
                         f"got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


def _one_dim(x, name: str) -> np.ndarray:
    """1-D samples, (n,) or (n, 1), as a float64 numpy array."""
    out = _samples(x, name)
    if out.shape[1] != 1:
        raise ValueError(f"{name} must be 1-D samples of shape (n,) or (n, 1), got {tuple(out.shape)}")
    return out[:, 0].cpu().numpy()


def _vector(value, name: str, device: torch.device | None = None) -> Tensor:
    out = _tensor(value, name)
    if out.dim() == 0:
        out = out.reshape(1)
    if out.dim() != 1 or out.numel() == 0:
        raise ValueError(f"{name} must have shape (d,), got {tuple(out.shape)}")
    return out if device is None else out.to(device)


def _matrix(value, name: str, d: int, device: torch.device | None = None) -> Tensor:
    """A symmetric (d, d) matrix; a scalar is accepted as a 1 x 1 matrix when d == 1."""
    out = _tensor(value, name)
    if out.dim() == 0 and d == 1:
        out = out.reshape(1, 1)
    if tuple(out.shape) != (d, d):
        raise ValueError(f"{name} must have shape (d, d) = ({d}, {d}), got {tuple(out.shape)}")
    check_symmetric(out, name)
    return out if device is None else out.to(device)


def _psd_sqrt(cov: Tensor, name: str) -> Tensor:
    """Symmetric square root ``V diag(sqrt λ) Vᵀ`` of a positive semi-definite matrix
    (eigenvalues down to -1e-10 of the largest count as rounding and are clamped to 0)."""
    eigvals, eigvecs = torch.linalg.eigh(cov)
    tol = 1e-10 * max(float(eigvals.abs().max()), 1e-300)
    if float(eigvals[0]) < -tol:
        raise ValueError(f"{name} must be positive semi-definite, got eigenvalue {float(eigvals[0]):.3g}")
    return (eigvecs * eigvals.clamp(min=0).sqrt()) @ eigvecs.T


def _gaussian_args(mean1, cov1, mean2, cov2) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The parameters of two Gaussians, checked, as float64 CPU tensors (the closed forms are tiny)."""
    cpu = torch.device("cpu")
    mean1 = _vector(mean1, "mean1", device=cpu)
    d = mean1.shape[0]
    mean2 = _vector(mean2, "mean2", device=cpu)
    if mean2.shape[0] != d:
        raise ValueError(f"mean2 must have shape ({d},) like mean1, got {tuple(mean2.shape)}")
    return mean1, _matrix(cov1, "cov1", d, device=cpu), mean2, _matrix(cov2, "cov2", d, device=cpu)


# -- closed forms between Gaussians -------------------------------------------------------

def gaussian_kl(mean1: ArrayLike, cov1: ArrayLike, mean2: ArrayLike, cov2: ArrayLike) -> float:
    """KL(N(mean1, cov1) || N(mean2, cov2)) in closed form, float64.

    ``½ [tr(Σ2⁻¹ Σ1) + (μ2 - μ1)ᵀ Σ2⁻¹ (μ2 - μ1) - d + log det Σ2 - log det Σ1]``
    (the standard closed form; e.g. Rasmussen & Williams, *Gaussian Processes for Machine
    Learning*, 2006, App. A), evaluated with Cholesky factors ``Σ = L Lᵀ``: ``tr(Σ2⁻¹Σ1) = ‖L2⁻¹ L1‖_F²``, the quadratic form is
    ``‖L2⁻¹ Δμ‖²`` and ``log det Σ = 2 Σ log diag L``. Sensitive to every difference between
    the two Gaussians, and without bound as Σ2 shrinks against Σ1 (it is not symmetric).

    Args:
        mean1: (d,) (or a scalar when d = 1).
        cov1: (d, d) symmetric positive-definite (or a scalar variance when d = 1).
        mean2: (d,) (or a scalar when d = 1).
        cov2: (d, d) symmetric positive-definite (or a scalar variance when d = 1).

    Raises:
        ValueError: shape mismatch, non-finite entries, or a covariance that is not
            symmetric positive-definite. TypeError: non-numeric input.
    """
    mean1, cov1, mean2, cov2 = _gaussian_args(mean1, cov1, mean2, cov2)
    chol1 = check_spd(cov1, "cov1")
    chol2 = check_spd(cov2, "cov2")
    d = mean1.shape[0]
    whitened_cov = torch.linalg.solve_triangular(chol2, chol1, upper=False)
    whitened_diff = torch.linalg.solve_triangular(chol2, (mean2 - mean1).unsqueeze(1), upper=False)
    log_det_ratio = 2 * (torch.log(torch.diagonal(chol2)).sum() - torch.log(torch.diagonal(chol1)).sum())
    kl = 0.5 * (whitened_cov.square().sum() + whitened_diff.square().sum() - d + log_det_ratio)
    return float(kl)


def gaussian_w2(mean1: ArrayLike, cov1: ArrayLike, mean2: ArrayLike, cov2: ArrayLike) -> float:
    """2-Wasserstein distance between N(mean1, cov1) and N(mean2, cov2), float64.

    ``W2² = ‖μ1 - μ2‖² + tr(Σ1 + Σ2 - 2 (Σ2^{1/2} Σ1 Σ2^{1/2})^{1/2})`` (Dowson & Landau
    1982; Givens & Shortt 1984); returns W2 itself (not squared). The square roots are
    symmetric PSD roots by eigendecomposition, and only the trace of the outer one is
    needed: the sum of the square roots of the eigenvalues of ``Σ2^{1/2} Σ1 Σ2^{1/2}``.
    Sensitive to location and spread on the data's own scale (in data units, unlike KL),
    and finite for singular covariances.

    Args:
        mean1: (d,) (or a scalar when d = 1).
        cov1: (d, d) symmetric positive semi-definite (or a scalar variance when d = 1).
        mean2: (d,) (or a scalar when d = 1).
        cov2: (d, d) symmetric positive semi-definite (or a scalar variance when d = 1).

    Raises:
        ValueError: shape mismatch, non-finite entries, or a covariance that is not
            symmetric positive semi-definite. TypeError: non-numeric input.
    """
    mean1, cov1, mean2, cov2 = _gaussian_args(mean1, cov1, mean2, cov2)
    _psd_sqrt(cov1, "cov1")  # only to refuse a cov1 that is not PSD
    root2 = _psd_sqrt(cov2, "cov2")
    cross = root2 @ cov1 @ root2
    cross_trace = torch.linalg.eigvalsh(0.5 * (cross + cross.T)).clamp(min=0).sqrt().sum()
    w2_squared = (mean1 - mean2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross_trace
    return math.sqrt(max(float(w2_squared), 0.0))


# -- moment errors ------------------------------------------------------------------------

def mean_error(x: ArrayLike, mean: ArrayLike) -> float:
    """Euclidean norm ``‖x̄ - μ‖₂`` of the sample mean's error against a reference mean.

    Sensitive only to the first moment: blind to spread, shape and missing modes that
    leave the mean in place. Its sampling noise is ``sqrt(tr Σ / n)`` in RMS.

    Args:
        x: samples (n, d), n >= 1. mean: reference mean (d,).

    Raises:
        ValueError: bad shapes, empty or non-finite input.
    """
    x = _samples(x, "x")
    mean = _vector(mean, "mean", device=x.device)
    if mean.shape[0] != x.shape[1]:
        raise ValueError(f"mean must have shape ({x.shape[1]},) to match x, got {tuple(mean.shape)}")
    return float(torch.linalg.vector_norm(x.mean(0) - mean))


def cov_error(x: ArrayLike, cov: ArrayLike) -> float:
    """Frobenius norm ``‖S - Σ‖_F`` of the unbiased sample covariance's error against a reference.

    ``S = (1/(n-1)) Σ_i (x_i - x̄)(x_i - x̄)ᵀ``. Sensitive to second moments (spread,
    anisotropy, correlation), blind to the mean and to higher-order structure.

    Args:
        x: samples (n, d), n >= 2. cov: reference covariance (d, d) (a scalar when d = 1).

    Raises:
        ValueError: bad shapes, n < 2, non-finite input or a non-symmetric cov.
    """
    x = _samples(x, "x", min_n=2)
    cov = _matrix(cov, "cov", x.shape[1], device=x.device)
    centred = x - x.mean(0)
    sample_cov = centred.T @ centred / (x.shape[0] - 1)
    return float(torch.linalg.matrix_norm(sample_cov - cov))


# -- two-sample distances -----------------------------------------------------------------

def _wasserstein_1d_power(xs: Tensor, ys: Tensor, p: float) -> Tensor:
    """``W_p^p`` between 1-D empirical laws, batched: xs (P, n) and ys (P, m) sorted along dim 1.

    ``W_p^p = ∫_0^1 |F⁻¹(u) - G⁻¹(u)|^p du`` with both quantile functions piecewise
    constant; it is summed exactly over the merged breakpoints {i/n} ∪ {j/m}, kept as
    integers in units of 1/(n m). Equal sizes reduce to ``mean_i |x_(i) - y_(i)|^p``.
    """
    n, m = xs.shape[1], ys.shape[1]
    if n == m:  # the merged breakpoints are i/n (each twice): the mean over paired order statistics
        differences = (xs - ys).abs_()
        return (differences.square_() if p == 2.0 else differences.pow_(p)).mean(1)
    device = xs.device
    breaks = torch.cat([torch.arange(1, n + 1, device=device) * m, torch.arange(1, m + 1, device=device) * n])
    breaks = breaks.sort().values
    previous = torch.cat([breaks.new_zeros(1), breaks[:-1]])
    widths = (breaks - previous).to(torch.float64) / (n * m)
    # On the open interval (previous, break), F⁻¹ = x_(⌊u n⌋) (0-indexed) at its midpoint u.
    index_x = ((previous + breaks) // (2 * m)).clamp(max=n - 1)
    index_y = ((previous + breaks) // (2 * n)).clamp(max=m - 1)
    return ((xs[:, index_x] - ys[:, index_y]).abs().pow(p) * widths).sum(1)


def sliced_wasserstein(x: ArrayLike, y: ArrayLike, n_projections: int = 128, p: float = 2.0,
                       generator: torch.Generator | None = None) -> float:
    """Sliced p-Wasserstein distance between two samples.

    ``SW_p = (mean_θ W_p^p(θᵀx, θᵀy))^{1/p}`` over ``n_projections`` directions θ drawn
    uniformly on the unit sphere (Rabin et al. 2011; Bonneel et al. 2015); each
    1-D ``W_p`` is exact between the projected empirical laws (sorting, and the exact
    quantile-function integral when the sizes differ). Sensitive to location and shape
    along the sampled directions; a difference confined to directions none of the
    projections sees is missed (in 1-D every projection is ±1, so SW_p is exactly W_p).

    Args:
        x: (n, d), y: (m, d) samples; n and m may differ.
        n_projections: number of directions, >= 1.
        p: order, >= 1.
        generator: source of the directions, used on its own device; by default a
            CPU generator seeded with 0, so repeated calls use the same directions.

    Raises:
        ValueError: bad shapes, empty or non-finite samples, n_projections < 1, p < 1.
    """
    x, y = _sample_pair(x, y)
    n_projections = check_int(n_projections, "n_projections", minimum=1)
    p = check_real(p, "p", 1)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    directions = torch.randn(x.shape[1], n_projections, generator=generator, device=generator.device,
                             dtype=torch.float64).to(x.device)
    directions = directions / torch.linalg.vector_norm(directions, dim=0, keepdim=True)
    xs = (x @ directions).T.sort(dim=1).values
    ys = (y @ directions).T.sort(dim=1).values
    return float(_wasserstein_1d_power(xs, ys, float(p)).mean() ** (1 / float(p)))


def _pairwise_sum(a: Tensor, b: Tensor, transform: Callable[[Tensor], Tensor]) -> float:
    """``Σ_{i,j} transform(‖a_i - b_j‖)`` in row blocks of at most _BLOCK_ELEMENTS distances.

    Distances are computed directly (not through ``‖a‖² + ‖b‖² - 2 a·b``), so coincident
    points are exactly 0 apart; ``transform`` receives a fresh block and may work in place.
    """
    rows = max(1, _BLOCK_ELEMENTS // b.shape[0])
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[0], rows):
        distances = torch.cdist(a[start:start + rows], b, compute_mode="donot_use_mm_for_euclid_dist")
        total += transform(distances).sum()
    return float(total)


def _median_distance(x: Tensor, y: Tensor) -> float:
    """Median pairwise distance among the pooled samples (at most _MEDIAN_POINTS of them,
    taken at evenly spaced indices, so the result is deterministic)."""
    pooled = torch.cat([x, y])
    if pooled.shape[0] > _MEDIAN_POINTS:
        pooled = pooled[torch.linspace(0, pooled.shape[0] - 1, _MEDIAN_POINTS, device=pooled.device).long()]
    distances = torch.cdist(pooled, pooled, compute_mode="donot_use_mm_for_euclid_dist")
    upper = torch.triu_indices(pooled.shape[0], pooled.shape[0], offset=1, device=pooled.device)
    # torch.quantile averages the two middle values of an even count (Tensor.median does not).
    return float(torch.quantile(distances[upper[0], upper[1]], 0.5))


def mmd(x: ArrayLike, y: ArrayLike, bandwidth: float | None = None) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy MMD² with a Gaussian (RBF) kernel.

    ``MMD²_u = 1/(n(n-1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m-1)) Σ_{i≠j} k(y_i, y_j)
    - 2/(n m) Σ_{i,j} k(x_i, y_j)``, ``k(a, b) = exp(-‖a - b‖² / (2 h²))`` (Gretton et al.,
    "A kernel two-sample test", JMLR 2012, eq. 3). Being unbiased it can be slightly
    negative; under equal laws it is zero-mean with standard error O(1/n). The default
    bandwidth h is the median pairwise distance of the pooled samples (Gretton et al.
    2012, §8). Sensitive to any difference between the laws (the kernel is
    characteristic), most to those at length scales near h; weak for differences much
    finer or much coarser than h. Pairwise sums run in blocks, so 10k x 10k samples use
    tens of MiB.

    Args:
        x: (n, d), y: (m, d) samples, n, m >= 2.
        bandwidth: h > 0, or None for the median heuristic.

    Raises:
        ValueError: bad shapes, fewer than 2 samples, non-finite input, a bandwidth not in
            (0, inf), or a zero median distance (identical points: pass a bandwidth).
    """
    x, y = _sample_pair(x, y, min_n=2)
    bandwidth = check_real(bandwidth, "bandwidth", 0, low_open=True, none_ok=True)
    if bandwidth is None:
        bandwidth = _median_distance(x, y)
        if bandwidth == 0:
            raise ValueError("the median pairwise distance is 0 (most points coincide); pass bandwidth > 0")
    scale = -0.5 / float(bandwidth) ** 2

    def kernel(distances: Tensor) -> Tensor:
        return distances.square_().mul_(scale).exp_()

    n, m = x.shape[0], y.shape[0]
    # k(x_i, x_i) = 1 exactly (distance 0), so the off-diagonal sums are the full sums minus n.
    within_x = (_pairwise_sum(x, x, kernel) - n) / (n * (n - 1))
    within_y = (_pairwise_sum(y, y, kernel) - m) / (m * (m - 1))
    cross = _pairwise_sum(x, y, kernel) / (n * m)
    return within_x + within_y - 2 * cross


def energy_distance(x: ArrayLike, y: ArrayLike) -> float:
    """Energy distance ``2 E‖X - Y‖ - E‖X - X'‖ - E‖Y - Y'‖`` between the two empirical laws.

    Székely & Rizzo, "Energy statistics", J. Stat. Plan. Inference 2013: the
    expectations are averages over all pairs, diagonal included (a V-statistic), so the
    result is >= 0 and is the energy distance between the empirical laws; it equals the
    square of ``scipy.stats.energy_distance`` in 1-D. Under equal laws it is positive
    with mean O(1/n). Zero only for equal laws (among laws with a first moment);
    sensitive to location and spread at every scale, less to fine local structure.

    Args:
        x: (n, d), y: (m, d) samples, n, m >= 1.

    Raises:
        ValueError: bad shapes, empty or non-finite input.
    """
    x, y = _sample_pair(x, y)
    n, m = x.shape[0], y.shape[0]

    def identity(distances: Tensor) -> Tensor:
        return distances

    cross = _pairwise_sum(x, y, identity) / (n * m)
    within_x = _pairwise_sum(x, x, identity) / (n * n)
    within_y = _pairwise_sum(y, y, identity) / (m * m)
    return max(2 * cross - within_x - within_y, 0.0)


# -- modes --------------------------------------------------------------------------------

def _mode_counts(x, means) -> Tensor:
    """Counts (K,) int64 of samples whose nearest mean (Euclidean; ties to the lower index) is each mode."""
    x = _samples(x, "x")
    means = _samples(means, "means", device=x.device)
    if means.shape[1] != x.shape[1]:
        raise ValueError(f"means must have shape (K, {x.shape[1]}) to match x, got {tuple(means.shape)}")
    nearest = torch.cdist(x, means, compute_mode="donot_use_mm_for_euclid_dist").argmin(dim=1)
    return torch.bincount(nearest, minlength=means.shape[0]).cpu()


def mode_weights(x: ArrayLike, means: ArrayLike) -> Tensor:
    """Fraction of the samples whose nearest mode is each of ``means``, a (K,) float64 CPU tensor.

    Each sample goes to its nearest mean in Euclidean distance (ties to the lower index).
    Sensitive to mode dropping and mis-weighting; blind to the shape within a mode. It
    estimates the mixture weights only when the modes are well separated against their
    spread (a misassigned tail otherwise biases it).

    Args:
        x: (n, d) samples. means: (K, d) modes.

    Raises:
        ValueError: bad shapes, empty or non-finite input.
    """
    counts = _mode_counts(x, means)
    return counts.to(torch.float64) / counts.sum()


def mode_weights_test(x: ArrayLike, means: ArrayLike, weights: ArrayLike) -> StatResult:
    """Pearson chi-square goodness-of-fit test of the nearest-mode counts against ``weights``.

    ``χ² = Σ_k (c_k - n w_k)² / (n w_k)`` with K - 1 degrees of freedom
    (``scipy.stats.chisquare``; Pearson 1900). A small p-value says the samples do not
    put the expected mass on the modes. Same caveats as :func:`mode_weights`; the
    chi-square law is an approximation that needs every expected count ``n w_k >= 5``.

    Args:
        x: (n, d) samples. means: (K, d) modes. weights: (K,) positive, summing to 1
            (within 1e-6).

    Returns:
        StatResult(statistic, p_value).

    Raises:
        ValueError: bad shapes, empty or non-finite input, weights not positive or not
            summing to 1, or an expected count below 5.
    """
    counts = _mode_counts(x, means)
    weights = _vector(weights, "weights", device=torch.device("cpu"))
    if weights.shape[0] != counts.shape[0]:
        raise ValueError(f"weights must have shape ({counts.shape[0]},), one per mode, got {tuple(weights.shape)}")
    if bool((weights <= 0).any()):
        raise ValueError(f"weights must be positive, got min {float(weights.min())!r}")
    if abs(float(weights.sum()) - 1) > 1e-6:
        raise ValueError(f"weights must sum to 1 (within 1e-6), got sum {float(weights.sum())!r}")
    n = int(counts.sum())
    expected = n * weights.numpy() / float(weights.sum())
    if expected.min() < 5:
        raise ValueError(f"every expected count n * weights[k] must be >= 5 for the chi-square law to hold; "
                         f"got {expected.min():.3g} with n = {n}: draw more samples")
    statistic, p_value = scipy.stats.chisquare(counts.numpy(), expected)
    return StatResult(float(statistic), float(p_value))


# -- 1-D ----------------------------------------------------------------------------------

def ks(x: ArrayLike, y: Union[ArrayLike, Callable]) -> StatResult:
    """Kolmogorov–Smirnov test in 1-D: ``D = sup_u |F_x(u) - G(u)|`` and its p-value.

    G is the empirical CDF of y (two-sample, ``scipy.stats.ks_2samp``) or y itself when y
    is a CDF callable (one-sample, ``scipy.stats.kstest``). Sensitive to the largest
    vertical gap between CDFs, so mostly to differences near the median; weak in the tails.

    Args:
        x: (n,) or (n, 1) samples. y: (m,) or (m, 1) samples, or a vectorised CDF.

    Raises:
        ValueError: samples that are not 1-D, empty or non-finite.
    """
    x = _one_dim(x, "x")
    if callable(y):
        result = scipy.stats.kstest(x, y)
    else:
        result = scipy.stats.ks_2samp(x, _one_dim(y, "y"))
    return StatResult(float(result.statistic), float(result.pvalue))


def w1(x: ArrayLike, y: ArrayLike) -> float:
    """1-Wasserstein distance ``∫ |F_x(u) - F_y(u)| du`` between two 1-D samples.

    Computed by ``scipy.stats.wasserstein_distance``.
    Sensitive to location and spread in the data's units; every part of the CDFs
    counts, the tails included.

    Args:
        x: (n,) or (n, 1), y: (m,) or (m, 1) samples.

    Raises:
        ValueError: samples that are not 1-D, empty or non-finite.
    """
    return float(scipy.stats.wasserstein_distance(_one_dim(x, "x"), _one_dim(y, "y")))
