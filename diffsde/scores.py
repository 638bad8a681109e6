"""Exact scores, log-densities and samples of p_t for Gaussian and Gaussian-mixture data
(the documentation's conventions, "Exact scores are first-class").

Under the OU, a component N(μ, Σ) of p_0 becomes at time t

    N(e^{-t/2} μ, Σ_t),   Σ_t = e^{-t} Σ + (1 - e^{-t}) I,

so p_t of a mixture Σ_k w_k N(μ_k, Σ_k) is the mixture of the moved components. Σ_t has
the eigenvectors of Σ and eigenvalues ``λ_t = e^{-t} λ + 1 - e^{-t}``, which lie between
min(λ_min, 1) and max(λ_max, 1): one symmetric eigendecomposition at construction turns
every later solve with Σ_t into a diagonal one, at any t, batched over per-sample times,
with no matrix inverse and no refactorisation per t (a Cholesky factor of Σ_t would
have to be recomputed for every t). Mixture responsibilities use log-sum-exp on squared
Mahalanobis distances scaled by a power of two per sample, so they stay finite however far
x lies from the data (where the distances themselves overflow).

The network adapters (ε-, x0- and v-prediction <-> score) live in :mod:`diffsde.parametrizations`;
``noise_std``, ``score_from_epsilon``, ``epsilon_from_score``, ``EpsilonScore`` and
``EpsilonFromScore`` are importable from here too, as before.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence, Union

import torch
from torch import Tensor

from ._checks import (TimeLike, broadcast_time, check_data, check_int, check_spd, check_time, exp_neg,
                      one_minus_exp_neg, real_float64, sqrt)
# Moved to diffsde.parametrizations; re-exported so that ``from diffsde.scores import ...`` keeps working.
from .parametrizations import (EpsilonFromScore, EpsilonScore, epsilon_from_score, noise_std,  # noqa: F401
                               score_from_epsilon)

__all__ = [
    "GaussianMixtureScore",
    "GaussianScore",
]

ArrayLike = Union[Tensor, Sequence]
DEFAULT_CACHE_BYTES = 64 * 2**20  # the per-time cache's default bound: 64 MiB


def _as_float64(value: ArrayLike, name: str) -> Tensor:
    out = real_float64(value, name, "a tensor or a nested sequence of numbers")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} must be finite, got a NaN or infinite entry")
    return out


class GaussianMixtureScore:
    """Exact score, log-density and sampler of p_t for ``p_0 = Σ_k w_k N(μ_k, Σ_k)`` in any dimension d.

    The OU maps each component to ``N(e^{-t/2} μ_k, e^{-t} Σ_k + (1 - e^{-t}) I)`` (the OU
    marginal x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε applied to a Gaussian), so ``s = -Σ_k r_k(x) Σ_{t,k}^{-1} (x - e^{-t/2} μ_k)`` with
    responsibilities r_k (docs/theory/forward.md).

    Args:
        weights: (K,) non-negative, summing to 1 (within 1e-6; then renormalised).
        means: (K, d).
        covs: (K, d, d) symmetric positive-definite.
        cache_bytes: bound, in bytes, on the per-time constants kept between calls (default
            64 MiB; 0 keeps none).

    Python lists and numbers are read as float64 (never through float32).

    Parameters are kept in float64; calls run in the dtype and on the device of their
    input (converted parameters are cached per device and dtype). ``t`` is the OU time:
    a float, a 0-d tensor or a tensor of per-sample times of shape x.shape[:-1]; t >= 0.

    A Python-float t reuses per-time constants of K·(d² + d + 1) numbers (16 MiB in float32
    for K = 1000, d = 64): they are kept in a least-recently-used cache of at most
    ``cache_bytes`` bytes (and 8192 times); an entry larger than the bound is not kept, nor
    one made by a call of more than 2048 rows (there the constants cost little, and keeping
    them between large calls fragments the heap).
    Results are the same with or without the cache.

    Raises:
        ValueError / TypeError: for negative or non-normalised weights, shape
            mismatches, non-finite entries, or covariances that are not symmetric
            positive-definite.
    """

    singular_at_zero = False

    def __init__(self, weights: ArrayLike, means: ArrayLike, covs: ArrayLike, *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.cache_bytes = check_int(cache_bytes, "cache_bytes", minimum=0)
        weights = _as_float64(weights, "weights")
        means = _as_float64(means, "means")
        covs = _as_float64(covs, "covs")
        if weights.dim() != 1 or weights.numel() == 0:
            raise ValueError(f"weights must have shape (K,) with K >= 1, got {tuple(weights.shape)}")
        k = weights.shape[0]
        if means.dim() != 2 or means.shape[0] != k or means.shape[1] == 0:
            raise ValueError(f"means must have shape (K, d) = ({k}, d), got {tuple(means.shape)}")
        d = means.shape[1]
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape (K, d, d) = ({k}, {d}, {d}), got {tuple(covs.shape)}")
        if bool((weights < 0).any()):
            index = int(torch.nonzero(weights < 0)[0])
            raise ValueError(f"weights must be non-negative; weights[{index}] = {float(weights[index])!r}")
        total = float(weights.sum())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1 (within 1e-6), got sum {total!r}")
        self._check_covs(covs)
        self.weights = weights / total
        self.means = means
        self.covs = covs
        self.eigvals, self.eigvecs = torch.linalg.eigh(0.5 * (covs + covs.transpose(-1, -2)))
        self._cache: dict = {}
        self._time_cache: OrderedDict = OrderedDict()  # least recently used first
        self._time_cache_nbytes = 0

    @staticmethod
    def _check_covs(covs: Tensor) -> None:
        check_spd(covs, "covs")

    @property
    def dim(self) -> int:
        """Data dimension d."""
        return int(self.means.shape[1])

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return int(self.means.shape[0])

    # -- closed forms at time t (float64) -------------------------------------------------

    def component_marginals(self, t: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
        """(weights (K,), means (K, d), covs (K, d, d)) of p_t's components, float64:
        ``e^{-t/2} μ_k`` and ``e^{-t} Σ_k + (1 - e^{-t}) I``."""
        t = _scalar_time(t)
        eye = torch.eye(self.dim, dtype=torch.float64)
        return (self.weights.clone(), math.exp(-t / 2) * self.means,
                math.exp(-t) * self.covs + (-math.expm1(-t)) * eye)

    def mean_and_cov(self, t: float = 0.0) -> tuple[Tensor, Tensor]:
        """Mean (d,) and covariance (d, d) of p_t, float64 (law of total covariance)."""
        weights, means, covs = self.component_marginals(t)
        mean = weights @ means
        centred = means - mean
        cov = torch.einsum("k,kij->ij", weights, covs) + torch.einsum("k,ki,kj->ij", weights, centred, centred)
        return mean, cov

    # -- evaluation -----------------------------------------------------------------------

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = tuple(p.to(device=x.device, dtype=x.dtype) for p in
                                     (torch.log(self.weights), self.means, self.eigvals, self.eigvecs))
        return self._cache[key]

    def _whiten(self, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple]:
        """Coordinates of x in every component's eigenbasis at time t.

        Returns (y, lam, log_weights, eigvecs, batch_shape) with y = U_k^T (x - e^{-t/2} μ_k) of
        shape (M, K, d), lam = e^{-t} λ_k + 1 - e^{-t} of shape (K, d) or (M, K, d).
        """
        check_data(x, "x", dim=self.dim)
        check_time(t, "t")
        batch_shape = tuple(x.shape[:-1])
        flat = x.reshape(-1, self.dim)
        if isinstance(t, Tensor) and t.dim() > 0:
            if tuple(t.shape) != batch_shape:
                raise ValueError(f"per-sample times must have shape {batch_shape} to match x of shape "
                                 f"{tuple(x.shape)}, got t of shape {tuple(t.shape)}")
            t = t.reshape(-1)
        log_weights, means, eigvals, eigvecs = self._params(x)
        tb = broadcast_time(t, flat)  # float, 0-d, or (M, 1)
        if isinstance(tb, Tensor) and tb.dim() > 0:
            tb = tb.unsqueeze(-1)  # (M, 1, 1) against (M, K, d)
        decay = exp_neg(tb)
        lam = decay * eigvals + one_minus_exp_neg(tb)
        centred = flat.unsqueeze(1) - sqrt(decay) * means  # (M, K, d)
        y = torch.einsum("mkd,kde->mke", centred, eigvecs)
        return y, lam, log_weights, eigvecs, batch_shape

    def _component_log_probs(self, x: Tensor, y: Tensor, lam: Tensor, log_weights: Tensor) -> tuple[Tensor, Tensor]:
        """(a (M, K), b (M, 1)) with ``log w_k N_k(x) = a_k - b`` (see :func:`_shifted_log_probs`)."""
        scale = _sample_scale(x.reshape(-1, self.dim)).unsqueeze(-1)  # (M, 1)
        scaled = y / scale.unsqueeze(-1)
        log_norm = log_weights - 0.5 * (torch.log(lam).sum(-1) + self.dim * math.log(2 * math.pi))
        return _shifted_log_probs((scaled * scaled / lam).sum(-1), scale, log_norm, -1)

    def _time_terms(self, t: float, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-time constants of the scalar-time path, on x's device and dtype, cached per t.

        With ``W_k = U_k diag(λ_t^{-1/2})`` (so ``Σ_{t,k}^{-1} = W_k W_kᵀ``): ``affine`` (K·d, d + 1)
        stacks the rows ``[W_kᵀ, -e^{-t/2} W_kᵀ μ_k]``, and ``log_norm`` (K, 1) is
        ``log w_k - ½ Σ log λ_t - (d/2) log 2π``.
        """
        key = (t, x.device, x.dtype)
        terms = self._time_cache.get(key)
        if terms is not None:
            self._time_cache.move_to_end(key)
        else:
            log_weights, means, eigvals, eigvecs = self._params(x)
            decay = math.exp(-t)
            lam = decay * eigvals + (-math.expm1(-t))  # (K, d)
            k, d = lam.shape
            whiten_t = (eigvecs * torch.rsqrt(lam).unsqueeze(-2)).transpose(-1, -2)  # (K, d, d): W_kᵀ
            offset = -math.sqrt(decay) * torch.einsum("ked,kd->ke", whiten_t, means)
            log_norm = log_weights - 0.5 * torch.log(lam).sum(-1) - 0.5 * d * math.log(2 * math.pi)
            affine = torch.cat([whiten_t.reshape(k * d, d), offset.reshape(k * d, 1)], dim=1)
            terms = (affine, log_norm.reshape(k, 1))
            if x.shape[0] <= _CACHE_MAX_ROWS:
                self._remember(key, terms)
        return terms

    def _remember(self, key: tuple, terms: tuple[Tensor, ...]) -> None:
        """Keep ``terms`` under ``key``, evicting the least recently used entries so that the
        cache holds at most ``cache_bytes`` bytes and ``_TIME_CACHE_SIZE`` entries."""
        nbytes = sum(term.nbytes for term in terms)
        if nbytes > self.cache_bytes:
            return
        while self._time_cache and (self._time_cache_nbytes + nbytes > self.cache_bytes
                                    or len(self._time_cache) >= _TIME_CACHE_SIZE):
            _, evicted = self._time_cache.popitem(last=False)
            self._time_cache_nbytes -= sum(term.nbytes for term in evicted)
        self._time_cache[key] = terms
        self._time_cache_nbytes += nbytes

    def _whitened_scalar_time(self, x: Tensor, t: float, scaled: bool = True) -> tuple:
        """(z (K, d, M), scale (M,), log_norm (K, 1), whiten (K·d, d)) with
        ``scale · z_k = W_kᵀ (x - e^{-t/2} μ_k)``, ``scale`` a power of two per sample (exact);
        with ``scaled=False``, z is unscaled and scale is None.

        Dividing by the scale keeps ``|z_k| <= ‖W_k‖ (2 sqrt(d) + |μ_k|)``, so the squares of z
        never overflow however far x is. Samples run along the last axis so every reduction over
        components or coordinates is an elementwise pass over the batch (reductions over a
        short last axis are slow).
        """
        affine, log_norm = self._time_terms(t, x)
        flat = x.reshape(-1, self.dim)
        rhs = torch.cat([flat.T, torch.ones_like(flat[:, :1]).T], dim=0)  # [x; 1], (d + 1, M)
        scale = _sample_scale(flat) if scaled else None
        z = torch.mm(affine, rhs if scale is None else rhs.div_(scale))  # W_kᵀ (x - e^{-t/2} μ_k) / scale
        return z.view(-1, self.dim, flat.shape[0]), scale, log_norm, affine[:, :self.dim]

    def log_prob(self, x: Tensor, t: TimeLike = 0.0) -> Tensor:
        """``log p_t(x)``; x of shape (..., d), returns shape (...)."""
        if _is_number(t):
            check_data(x, "x", dim=self.dim)
            check_time(t, "t")
            z, scale, log_norm, _ = self._whitened_scalar_time(x, float(t))
            shifted, shift = _shifted_log_probs((z * z).sum(1), scale, log_norm, 0)  # (K, M), (1, M)
            return (torch.logsumexp(shifted, dim=0) - shift[0]).reshape(x.shape[:-1])
        y, lam, log_weights, _, batch_shape = self._whiten(x, t)
        shifted, shift = self._component_log_probs(x, y, lam, log_weights)
        return (torch.logsumexp(shifted, dim=-1) - shift[:, 0]).reshape(batch_shape)

    def score(self, x: Tensor, t: TimeLike) -> Tensor:
        """Exact score ``∇_x log p_t(x)``; x of shape (..., d), returns x's shape.

        ``s = -Σ_k r_k(x) Σ_{t,k}^{-1} (x - e^{-t/2} μ_k)`` with responsibilities
        ``r = softmax_k(log w_k + log N_k(x))``. A Python-number t takes a fast path of a
        few matrix products and in-place passes on cached per-t constants; tensor times
        (0-d, per-sample, or needing gradients in t) and inputs that require gradients take
        the batched eigenbasis path. Both compute the same formula and are tested against
        each other.
        """
        if _is_number(t) and not (x.requires_grad and torch.is_grad_enabled()):
            check_data(x, "x", dim=self.dim)
            check_time(t, "t")
            z, scale, log_norm, whiten = self._whitened_scalar_time(x, float(t), scaled=self.n_components > 1)
            if scale is not None:  # responsibilities, in place on our own buffers
                logits = z[:, 0].square()
                for i in range(1, z.shape[1]):
                    logits.addcmul_(z[:, i], z[:, i])
                logits, _ = _shifted_log_probs(logits, scale, log_norm, 0)
                logits.sub_(logits.amax(0)).exp_()
                logits.div_(logits.sum(0))
                z.mul_(logits.unsqueeze(1))
            # s = -Σ_k r_k W_k z_k scale, as rows: -(r z)ᵀ (M, K·d) @ [W_kᵀ] (K·d, d), times the scale
            out = torch.mm(z.view(-1, z.shape[-1]).T, whiten)
            return (out if scale is None else out.mul_(scale.unsqueeze(1))).neg_().reshape(x.shape)
        y, lam, log_weights, eigvecs, batch_shape = self._whiten(x, t)
        scaled = y / lam
        if y.shape[1] == 1:
            responsibilities_scaled = scaled
        else:
            responsibilities = torch.softmax(self._component_log_probs(x, y, lam, log_weights)[0], dim=-1)
            responsibilities_scaled = scaled * responsibilities.unsqueeze(-1)
        return -torch.einsum("mke,kde->md", responsibilities_scaled, eigvecs).reshape(x.shape)

    __call__ = score

    def score_and_divergence(self, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        """The score and its divergence ``tr ∇_x s = Δ log p_t(x)`` in closed form, one pass.

        Differentiating ``s = -Σ_k r_k g_k`` with ``g_k = Σ_{t,k}^{-1} (x - e^{-t/2} μ_k)`` and
        ``∇r_k = -r_k (g_k + s)`` gives ``∇s = -Σ_k r_k Σ_{t,k}^{-1} + Σ_k r_k g_k (g_k + s)ᵀ``,
        whose trace is ``Σ_k r_k (|g_k + s|² - tr Σ_{t,k}^{-1})`` (a spread about the mean, so no
        cancellation far from the data). About the cost of one score evaluation: what
        :func:`diffsde.log_likelihood` uses for an exact score instead of d backward passes.

        Returns:
            (s of x's shape (..., d), the divergence of shape (...)), in x's dtype.
        """
        y, lam, log_weights, eigvecs, batch_shape = self._whiten(x, t)
        scaled = y / lam  # g_k in component k's eigenbasis, (M, K, d)
        g = torch.einsum("mke,kde->mkd", scaled, eigvecs)
        if y.shape[1] == 1:
            responsibilities = torch.ones_like(g[..., 0])
        else:
            responsibilities = torch.softmax(self._component_log_probs(x, y, lam, log_weights)[0], dim=-1)
        score = -(responsibilities.unsqueeze(-1) * g).sum(1)  # (M, d)
        spread = (g + score.unsqueeze(1)).square().sum(-1)  # |g_k + s|², (M, K)
        divergence = (responsibilities * (spread - lam.reciprocal().sum(-1))).sum(-1)
        return score.reshape(x.shape), divergence.reshape(batch_shape)

    def sample(self, n: int, t: float = 0.0, generator: torch.Generator | None = None,
               device: Union[str, torch.device, None] = None, dtype: torch.dtype | None = None) -> Tensor:
        """Draw n exact samples of p_t, shape (n, d).

        Components are drawn with ``torch.multinomial`` and then ``e^{-t/2} μ_k + U_k sqrt(λ_t) z``.
        ``device`` defaults to the generator's (or the CPU), ``dtype`` to torch's default.
        """
        n = check_int(n, "n", minimum=1)
        t = _scalar_time(t)
        if device is None:
            device = generator.device if generator is not None else "cpu"
        dtype = dtype or torch.get_default_dtype()
        probe = torch.empty(0, device=device, dtype=dtype)
        log_weights, means, eigvals, eigvecs = self._params(probe)
        components = torch.multinomial(log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn((n, self.dim), generator=generator, device=device, dtype=dtype)
        std = torch.sqrt(math.exp(-t) * eigvals + (-math.expm1(-t)))  # (K, d)
        offsets = torch.einsum("nde,ne->nd", eigvecs[components], std[components] * z)
        return math.exp(-t / 2) * means[components] + offsets

    def __repr__(self) -> str:
        return f"{type(self).__name__}(K={self.n_components}, d={self.dim})"


class GaussianScore(GaussianMixtureScore):
    """Exact score, log-density and sampler of p_t for ``p_0 = N(mean, cov)``.

    ``p_t = N(e^{-t/2} mean, e^{-t} cov + (1 - e^{-t}) I)`` (the OU marginal applied to a
    Gaussian); the score is affine in x,
    which is what makes :func:`diffsde.exact_output_law` possible.

    Args:
        mean: (d,).
        cov: (d, d) symmetric positive-definite.
        cache_bytes: as for :class:`GaussianMixtureScore`.
    """

    def __init__(self, mean: ArrayLike, cov: ArrayLike, *, cache_bytes: int = DEFAULT_CACHE_BYTES):
        mean = _as_float64(mean, "mean")
        cov = _as_float64(cov, "cov")
        if mean.dim() != 1 or mean.numel() == 0:
            raise ValueError(f"mean must have shape (d,), got {tuple(mean.shape)}")
        d = mean.shape[0]
        if cov.shape != (d, d):
            raise ValueError(f"cov must have shape (d, d) = ({d}, {d}), got {tuple(cov.shape)}")
        super().__init__(torch.ones(1, dtype=torch.float64), mean.unsqueeze(0), cov.unsqueeze(0),
                         cache_bytes=cache_bytes)

    @staticmethod
    def _check_covs(covs: Tensor) -> None:
        check_spd(covs[0], "cov")

    @property
    def mean(self) -> Tensor:
        """Mean of p_0, (d,) float64."""
        return self.means[0]

    @property
    def cov(self) -> Tensor:
        """Covariance of p_0, (d, d) float64."""
        return self.covs[0]

    def __repr__(self) -> str:
        return f"GaussianScore(d={self.dim})"


_TIME_CACHE_SIZE = 8192  # at most this many times kept (a few hundred bytes each for small K and d)
# Calls with more rows than this do not add to the per-time cache: there the constants are a small
# share of a call, and keeping one small tensor per time between calls whose temporaries are large
# fragments the C heap (a 1000-step `vp` run on the ring at N = 1e5 peaked at 0.26 to 2.9 GB of
# resident memory, depending on the heap's layout, against 0.26 GB without the cache).
_CACHE_MAX_ROWS = 2048


def _sample_scale(flat: Tensor) -> Tensor:
    """A power of two ``2^e >= 1`` per sample of x (M, d) with ``max_i |x_i| / 2^e < 2``, (M,):
    dividing by it is exact, and it bounds what it divides."""
    with torch.no_grad():
        top = math.frexp(torch.finfo(flat.dtype).max)[1] - 1
        exponent = torch.frexp(flat.abs().amax(-1)).exponent.clamp(0, top)
        return torch.ldexp(torch.ones_like(flat[:, 0]), exponent)


def _shifted_log_probs(sq: Tensor, scale: Tensor, log_norm: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Component log-densities ``log_norm_k - ½ q_k`` as ``a_k - b``, without overflow, in place on ``sq``.

    ``sq`` holds the squared Mahalanobis distances q_k divided by ``scale²`` (components along
    ``dim``); ``a_k = log_norm_k - ½ (sq_k - min_k sq) scale²`` and ``b = ½ min_k sq scale²``.
    The nearest component's a_k is log_norm_k however far x is, so softmax and log-sum-exp of
    a never meet all -inf (q_k itself overflows from |x| ~ 1e19 in float32, 1e154 in float64);
    scale² is never formed, as it may overflow on its own.
    """
    low = sq.detach().amin(dim, keepdim=True)
    minus_half = -0.5 * scale
    shifted = sq.sub_(low).mul_(minus_half).mul_(scale).add_(log_norm)
    return shifted, low.mul_(minus_half).mul_(scale).neg_()


def _is_number(t) -> bool:
    return isinstance(t, (float, int)) and not isinstance(t, bool)


def _scalar_time(t: TimeLike) -> float:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"t must be a single time here, got a tensor of shape {tuple(t.shape)}")
        t = float(t)
    check_time(t, "t")
    return float(t)
