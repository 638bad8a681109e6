"""Exact scores, log-densities and samples of p_t for Gaussian and Gaussian-mixture data
(seed 000, DESIGN.md "Exact scores are first-class").

Under the OU, a component N(μ, Σ) of p_0 becomes at time t

    N(e^{-t/2} μ, Σ_t),   Σ_t = e^{-t} Σ + (1 - e^{-t}) I,

so p_t of a mixture Σ_k w_k N(μ_k, Σ_k) is the mixture of the moved components. Σ_t has
the eigenvectors of Σ and eigenvalues ``λ_t = e^{-t} λ + 1 - e^{-t}``, which lie between
min(λ_min, 1) and max(λ_max, 1): one symmetric eigendecomposition at construction turns
every later solve with Σ_t into a diagonal one, at any t, batched over per-sample times,
with no matrix inverse and no refactorisation per t (a Cholesky factor of Σ_t would
have to be recomputed for every t). Mixture responsibilities use log-sum-exp.

The network adapters (ε-, x0- and v-prediction <-> score) live in :mod:`diffsde.parametrizations`;
``noise_std``, ``score_from_epsilon``, ``epsilon_from_score``, ``EpsilonScore`` and
``EpsilonFromScore`` are importable from here too, as before.
"""

from __future__ import annotations

import math
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


def _as_float64(value: ArrayLike, name: str) -> Tensor:
    out = real_float64(value, name, "a tensor or a nested sequence of numbers")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} must be finite, got a NaN or infinite entry")
    return out


class GaussianMixtureScore:
    """Exact score, log-density and sampler of p_t for ``p_0 = Σ_k w_k N(μ_k, Σ_k)`` in any dimension d.

    The OU maps each component to ``N(e^{-t/2} μ_k, e^{-t} Σ_k + (1 - e^{-t}) I)`` (seed 000's
    marginal x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε applied to a Gaussian; DESIGN.md "Exact
    scores are first-class"), so ``s = -Σ_k r_k(x) Σ_{t,k}^{-1} (x - e^{-t/2} μ_k)`` with
    responsibilities r_k (docs/theory/forward.md).

    Args:
        weights: (K,) non-negative, summing to 1 (within 1e-6; then renormalised).
        means: (K, d).
        covs: (K, d, d) symmetric positive-definite.

    Parameters are kept in float64; calls run in the dtype and on the device of their
    input (converted parameters are cached per device and dtype). ``t`` is the OU time:
    a float, a 0-d tensor or a tensor of per-sample times of shape x.shape[:-1]; t >= 0.

    Raises:
        ValueError / TypeError: for negative or non-normalised weights, shape
            mismatches, non-finite entries, or covariances that are not symmetric
            positive-definite.
    """

    singular_at_zero = False

    def __init__(self, weights: ArrayLike, means: ArrayLike, covs: ArrayLike):
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
        self._time_cache: dict = {}

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

    @staticmethod
    def _component_log_probs(y: Tensor, lam: Tensor, log_weights: Tensor) -> Tensor:
        d = y.shape[-1]
        log_det = torch.log(lam).sum(-1)
        return log_weights - 0.5 * ((y * y / lam).sum(-1) + log_det + d * math.log(2 * math.pi))

    def _time_terms(self, t: float, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-time constants of the scalar-time path, on x's device and dtype, cached per t.

        With ``W_k = U_k diag(λ_t^{-1/2})`` (so ``Σ_{t,k}^{-1} = W_k W_kᵀ``): ``whiten`` (K·d, d)
        stacks the ``W_kᵀ``, ``offset`` (K·d, 1) stacks ``e^{-t/2} W_kᵀ μ_k``, and ``log_norm``
        (K, 1) is ``log w_k - ½ Σ log λ_t - (d/2) log 2π``.
        """
        key = (t, x.device, x.dtype)
        terms = self._time_cache.get(key)
        if terms is None:
            log_weights, means, eigvals, eigvecs = self._params(x)
            decay = math.exp(-t)
            lam = decay * eigvals + (-math.expm1(-t))  # (K, d)
            k, d = lam.shape
            whiten_t = (eigvecs * torch.rsqrt(lam).unsqueeze(-2)).transpose(-1, -2)  # (K, d, d): W_kᵀ
            offset = math.sqrt(decay) * torch.einsum("ked,kd->ke", whiten_t, means)
            log_norm = log_weights - 0.5 * torch.log(lam).sum(-1) - 0.5 * d * math.log(2 * math.pi)
            terms = (whiten_t.reshape(k * d, d).contiguous(), offset.reshape(k * d, 1), log_norm.reshape(k, 1))
            if len(self._time_cache) >= _TIME_CACHE_SIZE:
                self._time_cache.pop(next(iter(self._time_cache)))
            self._time_cache[key] = terms
        return terms

    def _whitened_scalar_time(self, x: Tensor, t: float) -> tuple[Tensor, Tensor, Tensor]:
        """(z (K, d, M), log_norm (K, 1), whiten (K·d, d)) with ``z_k = W_kᵀ (x - e^{-t/2} μ_k)``.

        Samples run along the last axis so every reduction over components or coordinates
        is an elementwise pass over the batch (reductions over a short last axis are slow).
        """
        whiten, offset, log_norm = self._time_terms(t, x)
        flat = x.reshape(-1, self.dim)
        z = torch.addmm(offset, whiten, flat.T, beta=-1)  # W_kᵀ x - offset, (K·d, M)
        return z.view(-1, self.dim, flat.shape[0]), log_norm, whiten

    def log_prob(self, x: Tensor, t: TimeLike = 0.0) -> Tensor:
        """``log p_t(x)``; x of shape (..., d), returns shape (...)."""
        if _is_number(t):
            check_data(x, "x", dim=self.dim)
            check_time(t, "t")
            z, log_norm, _ = self._whitened_scalar_time(x, float(t))
            log_probs = torch.add(log_norm, (z * z).sum(1), alpha=-0.5)  # (K, M)
            return torch.logsumexp(log_probs, dim=0).reshape(x.shape[:-1])
        y, lam, log_weights, _, batch_shape = self._whiten(x, t)
        return torch.logsumexp(self._component_log_probs(y, lam, log_weights), dim=-1).reshape(batch_shape)

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
            z, log_norm, whiten = self._whitened_scalar_time(x, float(t))
            if z.shape[0] > 1:  # responsibilities, in place on our own buffers
                logits = z[:, 0].square()
                for i in range(1, z.shape[1]):
                    logits.addcmul_(z[:, i], z[:, i])
                logits.mul_(-0.5).add_(log_norm)
                logits.sub_(logits.amax(0)).exp_()
                logits.div_(logits.sum(0))
                z.mul_(logits.unsqueeze(1))
            # s = -Σ_k r_k W_k z_k, as rows: -(r z)ᵀ (M, K·d) @ [W_kᵀ] (K·d, d)
            return torch.mm(z.view(-1, z.shape[-1]).T, whiten).neg_().reshape(x.shape)
        y, lam, log_weights, eigvecs, batch_shape = self._whiten(x, t)
        scaled = y / lam
        if y.shape[1] == 1:
            responsibilities_scaled = scaled
        else:
            responsibilities = torch.softmax(self._component_log_probs(y, lam, log_weights), dim=-1)
            responsibilities_scaled = scaled * responsibilities.unsqueeze(-1)
        return -torch.einsum("mke,kde->md", responsibilities_scaled, eigvecs).reshape(x.shape)

    __call__ = score

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

    ``p_t = N(e^{-t/2} mean, e^{-t} cov + (1 - e^{-t}) I)`` (seed 000's marginal applied to a
    Gaussian; DESIGN.md "Exact scores are first-class"); the score is affine in x,
    which is what makes :func:`diffsde.exact_output_law` possible.

    Args:
        mean: (d,).
        cov: (d, d) symmetric positive-definite.
    """

    def __init__(self, mean: ArrayLike, cov: ArrayLike):
        mean = _as_float64(mean, "mean")
        cov = _as_float64(cov, "cov")
        if mean.dim() != 1 or mean.numel() == 0:
            raise ValueError(f"mean must have shape (d,), got {tuple(mean.shape)}")
        d = mean.shape[0]
        if cov.shape != (d, d):
            raise ValueError(f"cov must have shape (d, d) = ({d}, {d}), got {tuple(cov.shape)}")
        super().__init__(torch.ones(1, dtype=torch.float64), mean.unsqueeze(0), cov.unsqueeze(0))

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


_TIME_CACHE_SIZE = 8192  # per-t constants kept (a few hundred bytes each for small K and d)


def _is_number(t) -> bool:
    return isinstance(t, (float, int)) and not isinstance(t, bool)


def _scalar_time(t: TimeLike) -> float:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"t must be a single time here, got a tensor of shape {tuple(t.shape)}")
        t = float(t)
    check_time(t, "t")
    return float(t)
