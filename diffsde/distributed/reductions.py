"""Metrics of one sample set sharded across ranks, reduced without gathering the samples.

Rank r holds rows ``x_local`` (n_r, d) of a global set X (N = Σ_r n_r rows, the ranks' rows in rank
order). Each function returns on every rank, bit-identical across ranks, what :mod:`diffsde.metrics`'
function of the same name returns on X (within the round-off its docstring states; integer results
exactly), with no rank holding more than O(N / W) samples. In a world of one each calls
:mod:`diffsde.metrics` itself on ``x_local``: single-process results are bit-for-bit unchanged.

A rank that refuses its input raises its own ValueError/TypeError and the others DistributedError
naming it (each function's first collective carries every rank's verdict, so none waits on a failed
one); arguments that must agree across ranks (references, bins, ranges, directions) are compared.
Collectives run on the backend's device (gloo: CPU, NCCL: CUDA).
"""

from __future__ import annotations

import builtins
import hashlib
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from .. import metrics
from .._checks import check_int, check_real
from ..metrics import ArrayLike, _matrix, _samples, _vector
from .sorting import OVERSAMPLING, comm_device, sample_sort
from .world import DistributedError, all_gather_objects, all_reduce_sum, same_across_ranks, world

__all__ = ["Moments", "Histogram", "moments", "mean_error", "cov_error", "mode_counts", "mode_weights",
           "histogram", "sliced_wasserstein"]

# Projections sorted together hold at most this many values per rank and sample set (32 MiB in float64).
_BATCH_ELEMENTS = 1 << 22
# Rows binned at a time by histogram (on the CPU).
_HISTOGRAM_ROWS = 1 << 20


class Moments(NamedTuple):
    """Global sample count, mean (d,) and unbiased covariance (d, d), float64 CPU tensors."""

    count: int
    mean: Tensor
    cov: Tensor


class Histogram(NamedTuple):
    """Global counts, int64 CPU (bins_0, ..., bins_{d-1}), and the d bin edges, float64 (bins_i + 1,)."""

    counts: Tensor
    edges: tuple[Tensor, ...]


# -- plumbing -----------------------------------------------------------------------------

def _alone() -> bool:
    return world().size == 1


def _digest(value: Tensor) -> str:
    """A fingerprint of a tensor's shape and float64 values, to compare arguments across ranks."""
    value = value.detach().to("cpu", torch.float64).contiguous()
    return hashlib.sha256(str(tuple(value.shape)).encode() + value.numpy().tobytes()).hexdigest()[:16]


def _gather_checked(local: Callable[[], tuple[Any, Any]], what: str) -> tuple[Any, list]:
    """Run ``local() -> (kept, shared)`` and gather every rank's ``shared`` (small) with its verdict.

    A rank whose ``local`` raised (a refused input, or any other exception) re-raises it; the others
    then raise DistributedError naming that rank. Returns (this rank's ``kept``, the ``shared`` list in rank order).
    """
    kept = shared = refusal = error = None
    try:
        kept, shared = local()
    except Exception as err:  # shared, so that no other rank waits for this one
        refusal, error = f"{type(err).__name__}: {err}", err
    parts = all_gather_objects((shared, refusal), what)
    if error is not None:
        raise error
    for rank, (_, other) in enumerate(parts):
        if other is not None:
            raise DistributedError(f"rank {rank} refused its input to {what} ({other})")
    return kept, [part for part, _ in parts]


def _total(counts: list[int], name: str) -> int:
    total = sum(counts)
    if total == 0:
        raise ValueError(f"{name} must hold at least 1 sample over all ranks together, got 0")
    return total


# -- moments ------------------------------------------------------------------------------

def _local_moments(x: Tensor) -> tuple[int, Tensor, Tensor]:
    """(n, mean (d,), M2 = Σ (x_i - x̄)(x_i - x̄)ᵀ (d, d)) of this rank's rows, float64 on the CPU;
    the same two-pass products as :func:`diffsde.metrics.cov_error`."""
    n, d = x.shape
    if n == 0:
        return 0, torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
    mean = x.mean(0)
    centred = x - mean
    return n, mean.cpu(), (centred.T @ centred).cpu()


def _merge(parts: list[tuple[int, Tensor, Tensor]]) -> tuple[int, Tensor, Tensor]:
    """Pool (n, mean, M2) triples in rank order by Chan, Golub & LeVeque's pairwise update
    ("Updating formulae and a pairwise algorithm for computing sample variances", 1979):
    ``δ = x̄_b - x̄_a``, ``x̄ = x̄_a + δ n_b/n``, ``M2 = M2_a + M2_b + δδᵀ n_a n_b/n``. The same
    order on every rank, so every rank gets the same bits; a lone non-empty part passes unchanged."""
    count, mean, m2 = parts[0]
    for n, mean_b, m2_b in parts[1:]:
        if n == 0:
            continue
        pooled = count + n
        delta = mean_b - mean
        mean = mean + delta * (n / pooled)
        m2 = m2 + m2_b + torch.outer(delta, delta) * (count * n / pooled)
        count = pooled
    return count, mean, m2


def _pooled_moments(x_local: ArrayLike, what: str, reference: Callable[[int], Tensor] | None = None,
                    reference_name: str = "") -> tuple[int, Tensor, Tensor, Any]:
    """Merged (N, mean, M2) over the ranks, and ``reference(d)`` (checked equal on every rank)."""
    def local():
        x = _samples(x_local, "x_local", min_n=0)
        ref = None if reference is None else reference(x.shape[1])
        return ref, (x.shape[1], _local_moments(x), None if ref is None else _digest(ref))

    ref, parts = _gather_checked(local, what)
    same_across_ranks([part[0] for part in parts], "dimension d of x_local")
    same_across_ranks([part[2] for part in parts], reference_name)
    return (*_merge([part[1] for part in parts]), ref)


def moments(x_local: ArrayLike) -> Moments:
    """Count N, mean (d,) and unbiased covariance ``M2 / (N - 1)`` (d, d) of the global sample.

    The covariance is :func:`diffsde.metrics.cov_error`'s S (and ``torch.cov``'s default). Each
    rank's (n, mean, M2) is taken by two passes in float64 and pooled by :func:`_merge` (Chan, Golub
    & LeVeque 1979). Against the two-pass values of the gathered set, the entries differ by
    round-off: at most about N·eps·max|x| for the mean and N·eps·max|x - x̄|² for the covariance
    (float64 summation bounds, eps = 2.2e-16; typically far less). In a world of one the values
    are bit-for-bit the two-pass ones of :func:`diffsde.metrics.cov_error`.

    Args:
        x_local: (n_r, d) this rank's rows (n_r may be 0); N >= 2 over all ranks.

    Raises:
        ValueError: bad shapes, non-finite entries or N < 2. DistributedError: d differs between ranks.
    """
    count, mean, m2, _ = _pooled_moments(x_local, "the pooling of the sample moments")
    if count < 2:
        raise ValueError(f"x_local must hold at least 2 samples over all ranks for a covariance, got {count}")
    return Moments(count, mean, m2 / (count - 1))


def mean_error(x_local: ArrayLike, mean: ArrayLike) -> float:
    """:func:`diffsde.metrics.mean_error` of the global sample ``‖x̄ - μ‖₂``; mean (d,) the same on
    every rank. Round-off against the gathered value: about N·eps·max|x| (see :func:`moments`)."""
    if _alone():
        return metrics.mean_error(x_local, mean)

    def reference(d: int) -> Tensor:
        ref = _vector(mean, "mean")
        if ref.shape[0] != d:
            raise ValueError(f"mean must have shape ({d},) to match x_local, got {tuple(ref.shape)}")
        return ref.cpu()

    count, pooled, _, ref = _pooled_moments(x_local, "the pooling of the sample mean", reference, "mean")
    _total([count], "x_local")
    return float(torch.linalg.vector_norm(pooled - ref))


def cov_error(x_local: ArrayLike, cov: ArrayLike) -> float:
    """:func:`diffsde.metrics.cov_error` of the global sample ``‖S - Σ‖_F``; cov (d, d) the same on
    every rank, N >= 2. Round-off: about N·eps·max|x - x̄|² (see :func:`moments`)."""
    if _alone():
        return metrics.cov_error(x_local, cov)
    count, _, m2, ref = _pooled_moments(x_local, "the pooling of the sample covariance",
                                        lambda d: _matrix(cov, "cov", d).cpu(), "cov")
    if count < 2:
        raise ValueError(f"x_local must hold at least 2 samples over all ranks, got {count}")
    return float(torch.linalg.matrix_norm(m2 / (count - 1) - ref))


# -- modes --------------------------------------------------------------------------------

def mode_counts(x_local: ArrayLike, means: ArrayLike) -> Tensor:
    """Global counts (K,) int64 (CPU) of samples whose nearest mean is each mode: this rank's counts
    by :func:`diffsde.metrics._mode_counts`' rule (Euclidean, ties to the lower index), summed
    exactly over the ranks. means (K, d) must be the same on every rank."""
    if _alone():
        return metrics._mode_counts(x_local, means)

    def local():
        x = _samples(x_local, "x_local", min_n=0)
        modes = _samples(means, "means", device=x.device)
        if modes.shape[1] != x.shape[1]:
            raise ValueError(f"means must have shape (K, {x.shape[1]}) to match x_local, got {tuple(modes.shape)}")
        counts = metrics._mode_counts(x, modes) if x.shape[0] else torch.zeros(modes.shape[0], dtype=torch.int64)
        return None, (x.shape[1], _digest(modes), counts)

    _, parts = _gather_checked(local, "the nearest-mode counts")
    same_across_ranks([part[0] for part in parts], "dimension d of x_local")
    same_across_ranks([part[1] for part in parts], "means")
    counts = torch.stack([part[2] for part in parts]).sum(0)  # exact: int64 in rank order
    _total([int(counts.sum())], "x_local")
    return counts


def mode_weights(x_local: ArrayLike, means: ArrayLike) -> Tensor:
    """:func:`diffsde.metrics.mode_weights` of the global sample, (K,) float64 CPU: exactly, from
    the exact counts of :func:`mode_counts`."""
    if _alone():
        return metrics.mode_weights(x_local, means)
    counts = mode_counts(x_local, means)
    return counts.to(torch.float64) / counts.sum()


# -- histogram ----------------------------------------------------------------------------

def _bins(bins: int | Sequence[int], d: int) -> list[int]:
    if isinstance(bins, Sequence):
        if len(bins) != d:
            raise ValueError(f"bins must be an int or {d} ints (one per dimension), got {len(bins)}")
        return [check_int(count, f"bins[{i}]", minimum=1) for i, count in enumerate(bins)]
    return [check_int(bins, "bins", minimum=1)] * d


def _range(span: Sequence, d: int) -> list[float]:
    """``range`` as torch.histogramdd takes it: [low_0, high_0, low_1, high_1, ...]."""
    if isinstance(span, Sequence) and d == 1 and len(span) == 2 and not isinstance(span[0], Sequence):
        span = [span]
    if (not isinstance(span, Sequence) or len(span) != d
            or any(not isinstance(pair, Sequence) or len(pair) != 2 for pair in span)):
        raise ValueError(f"range must be {d} (low, high) pairs, one per dimension, got {span!r}")
    flat = []
    for i, (low, high) in enumerate(span):
        low, high = check_real(low, f"range[{i}][0]"), check_real(high, f"range[{i}][1]")
        if not low < high:
            raise ValueError(f"range[{i}] must have low < high, got ({low!r}, {high!r})")
        flat += [low, high]
    return flat


def histogram(x_local: ArrayLike, bins: int | Sequence[int] = 64, range: Sequence | None = None) -> Histogram:
    """Global d-dimensional histogram of the sample: exact int64 counts, the same on every rank.

    Bins are ``torch.histogramdd``'s: along dimension i, ``bins[i]`` equal-width bins over
    ``[low_i, high_i]``, half-open ``[e_k, e_{k+1})`` but the last, closed; samples outside are not
    counted. ``range=None`` takes each coordinate's global min and max (widened to v ± 0.5 where
    they are equal, as torch and numpy do): the counts then equal ``torch.histogramdd(X, bins)``
    of the gathered float64 set X. Binning runs on the CPU, ``_HISTOGRAM_ROWS`` rows at a time.

    Args:
        x_local: (n_r, d) this rank's rows (n_r may be 0); N >= 1 over all ranks.
        bins: bins per dimension, an int >= 1 or d of them; the same on every rank.
        range: d (low, high) pairs with low < high ((low, high) alone when d = 1), or None.

    Raises:
        ValueError: bad shapes, non-finite entries, bad bins or range, N = 0.
        DistributedError: d, bins or range differ between ranks.
    """
    def local():
        x = _samples(x_local, "x_local", min_n=0)
        d = x.shape[1]
        span = None if range is None else _range(range, d)
        extremes = (x.min(0).values.cpu(), x.max(0).values.cpu()) if x.shape[0] else None
        return x, (d, _bins(bins, d), span, x.shape[0], extremes)

    x, parts = _gather_checked(local, "the histogram's range")
    for index, name in enumerate(("dimension d of x_local", "bins", "range")):
        same_across_ranks([part[index] for part in parts], name)
    _, counts_per_dim, span, _, _ = parts[0]
    _total([part[3] for part in parts], "x_local")
    if span is None:
        lows = torch.stack([part[4][0] for part in parts if part[4] is not None]).min(0).values
        highs = torch.stack([part[4][1] for part in parts if part[4] is not None]).max(0).values
        span = [value for pair in zip(lows.tolist(), highs.tolist()) for value in pair]
    empty = torch.histogramdd(x[:0].cpu(), bins=counts_per_dim, range=span)
    counts = torch.zeros(counts_per_dim, dtype=torch.int64)
    for start in builtins.range(0, x.shape[0], _HISTOGRAM_ROWS):
        chunk = x[start:start + _HISTOGRAM_ROWS].cpu()
        counts += torch.histogramdd(chunk, bins=counts_per_dim, range=span).hist.to(torch.int64)
    if not _alone():
        counts = all_reduce_sum(counts.to(comm_device()), "the histogram's counts").cpu()
    return Histogram(counts, tuple(empty.bin_edges))


# -- sliced Wasserstein -------------------------------------------------------------------

def sliced_wasserstein(x_local: ArrayLike, y_local: ArrayLike, n_projections: int = 128, p: float = 2.0,
                       generator: torch.Generator | None = None) -> float:
    """:func:`diffsde.metrics.sliced_wasserstein` of two global samples of equal size N, gather-free.

    ``SW_p = (mean_θ W_p^p(θᵀX, θᵀY))^{1/p}`` (Rabin et al. 2011; Bonneel et al. 2015) over the same
    directions θ as :mod:`diffsde.metrics` (the same draw from ``generator``, by default a CPU
    generator seeded with 0; it must give the same directions on every rank). With equal sizes
    ``W_p^p = (1/N) Σ_i |x_(i) - y_(i)|^p``: each projection of X and of Y is sorted across the
    ranks by :func:`diffsde.distributed.sorting.sample_sort`, each rank sums its share of the order
    statistics, and the sums are added with one all_reduce. Projections go ``_BATCH_ELEMENTS // max n_r`` at a time (at
    least one), so a rank holds O(n_r) values at once beyond its rows.

    Round-off against the gathered value: the order statistics are the same numbers (up to
    projection round-off, ~d·eps·max|x|), the sums of N positive terms differ by at most about
    2N·eps relatively; so the result agrees to about 2N·eps/p relatively (typically far less).
    In a world of one this is :func:`diffsde.metrics.sliced_wasserstein` itself, which also takes
    unequal sizes; across ranks unequal global sizes are refused.

    Args:
        x_local: (n_r, d), y_local: (m_r, d) this rank's rows (either may be empty); Σ n_r = Σ m_r >= 1.
        n_projections: number of directions, >= 1. p: order, >= 1. generator: see above.

    Raises:
        ValueError: bad shapes, non-finite entries, unequal global sizes, n_projections < 1, p < 1.
        DistributedError: d or the directions differ between ranks.
    """
    if _alone():
        return metrics.sliced_wasserstein(x_local, y_local, n_projections, p, generator)

    def local():
        if isinstance(x_local, Tensor) and isinstance(y_local, Tensor) and x_local.device != y_local.device:
            raise ValueError(f"x_local and y_local must be on the same device, "
                             f"got {x_local.device} and {y_local.device}")
        x = _samples(x_local, "x_local", min_n=0)
        y = _samples(y_local, "y_local", min_n=0, device=x.device)
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"x_local and y_local must have the same dimension d, "
                             f"got shapes {tuple(x.shape)} and {tuple(y.shape)}")
        count = check_int(n_projections, "n_projections", minimum=1)
        order = check_real(p, "p", 1)
        source = torch.Generator().manual_seed(0) if generator is None else generator
        directions = torch.randn(x.shape[1], count, generator=source, device=source.device,
                                 dtype=torch.float64).to(x.device)
        directions = directions / torch.linalg.vector_norm(directions, dim=0, keepdim=True)
        return (x, y, directions, order), (x.shape[1], _digest(directions), x.shape[0], y.shape[0])

    (x, y, directions, order), parts = _gather_checked(local, "the sliced Wasserstein distance")
    same_across_ranks([part[0] for part in parts], "dimension d of x_local and y_local")
    same_across_ranks([part[1] for part in parts], "projection directions", " (seed the generator alike on every rank)")
    x_sizes, y_sizes = [part[2] for part in parts], [part[3] for part in parts]
    total = _total(x_sizes, "x_local")
    if sum(y_sizes) != total:
        raise ValueError(f"x and y must have the same global size N for the distributed sliced Wasserstein "
                         f"distance, got N = {total} for x_local and {sum(y_sizes)} for y_local")
    count = directions.shape[1]
    batch = max(1, min(count, _BATCH_ELEMENTS // max(*x_sizes, *y_sizes, OVERSAMPLING * len(parts) ** 2)))
    sums = []
    for start in range(0, count, batch):
        theta = directions[:, start:start + batch]
        x_sorted = sample_sort((x @ theta).T.contiguous().sort(dim=1).values, x_sizes, "the projections of x")
        y_sorted = sample_sort((y @ theta).T.contiguous().sort(dim=1).values, y_sizes, "the projections of y")
        differences = (x_sorted - y_sorted).abs_()
        sums.append((differences.square_() if order == 2.0 else differences.pow_(order)).sum(1))
    totals = all_reduce_sum(torch.cat(sums).to(comm_device()), "the sum of the sliced distances")
    return float((totals.cpu() / total).mean() ** (1 / order))
