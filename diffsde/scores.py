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
from .mixture_forms import Params, choose_form, sample_scale, shifted_log_probs, softmax_clamped
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
        self._form = choose_form(self.weights, means, covs)
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
    def form(self) -> str:
        """How a scalar-time call is evaluated: "gaussian" (K = 1), "shared" (one covariance for
        every component) or "general" (:mod:`diffsde.mixture_forms`)."""
        return self._form.name

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
        """(log w, μ, eigenvalues, eigenvectors) on x's device in x's dtype, cached."""
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = tuple(p.to(x.dtype) for p in self._float64_params(x.device)[:4])
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
        scale = sample_scale(x.reshape(-1, self.dim)).unsqueeze(-1)  # (M, 1)
        scaled = y / scale.unsqueeze(-1)
        log_norm = log_weights - 0.5 * (torch.log(lam).sum(-1) + self.dim * math.log(2 * math.pi))
        return shifted_log_probs((scaled * scaled / lam).sum(-1), scale, log_norm, -1)

    def _float64_params(self, device: torch.device) -> Params:
        """The parameters in float64 on ``device`` (per-time constants are made from these, on the
        device, and only then rounded to the call's dtype: no host-to-device copy per time)."""
        params = self._cache.get((device, torch.float64, "params"))
        if params is None:
            params = Params(*(p.to(device) for p in (torch.log(self.weights), self.means, self.eigvals,
                                                     self.eigvecs, self.weights @ self.means)))
            self._cache[(device, torch.float64, "params")] = params
        return params

    def _time_terms(self, t: float, x: Tensor) -> tuple[Tensor, ...]:
        """The form's per-time constants (:mod:`diffsde.mixture_forms`) on x's device and dtype,
        cached per t (see the class docstring for the cache's bound)."""
        if x.is_cuda and torch.cuda.is_current_stream_capturing():
            # Inside a CUDA graph capture the cache is neither read nor filled: a cached tensor could
            # be evicted (and its memory reused) while the graph still reads it, and constants made
            # during capture hold their values only once the graph runs. The graph computes its own.
            return self._constants_at(t, x)
        key = (t, x.device, x.dtype)
        terms = self._time_cache.get(key)
        if terms is not None:
            self._time_cache.move_to_end(key)
        else:
            terms = self._constants_at(t, x)
            if x.shape[0] <= _CACHE_MAX_ROWS:
                self._remember(key, terms)
        return terms

    def _constants_at(self, t: float, x: Tensor) -> tuple[Tensor, ...]:
        """The form's constants at t, made in float64 on x's device, then rounded to x's dtype."""
        return tuple(c.to(x.dtype) for c in self._form.constants(t, self._float64_params(x.device)))

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

    def _scalar_time_path(self, x: Tensor, t: TimeLike) -> bool:
        """Whether a call takes the form's path: a Python-number t and no autograd through x
        (checked here, with the cheap test for a finite t >= 0 first: this runs every step)."""
        if not _is_number(t) or (x.requires_grad and torch.is_grad_enabled()):
            return False
        check_data(x, "x", dim=self.dim)
        if not 0.0 <= t < math.inf:
            check_time(t, "t")
        return True

    def _flat(self, x: Tensor) -> Tensor:
        return x if x.dim() == 2 else x.reshape(-1, self.dim)

    def log_prob(self, x: Tensor, t: TimeLike = 0.0) -> Tensor:
        """``log p_t(x)``; x of shape (..., d), returns shape (...)."""
        if self._scalar_time_path(x, t):
            flat = self._flat(x)
            out = self._form.log_prob(flat, self._time_terms(float(t), flat))
            return out if x.dim() == 2 else out.reshape(x.shape[:-1])
        y, lam, log_weights, _, batch_shape = self._whiten(x, t)
        shifted, shift = self._component_log_probs(x, y, lam, log_weights)
        return (torch.logsumexp(shifted, dim=-1) - shift[:, 0]).reshape(batch_shape)

    def score(self, x: Tensor, t: TimeLike) -> Tensor:
        """Exact score ``∇_x log p_t(x)``; x of shape (..., d), returns x's shape.

        ``s = -Σ_k r_k(x) Σ_{t,k}^{-1} (x - e^{-t/2} μ_k)`` with responsibilities
        ``r = softmax_k(log w_k + log N_k(x))``. A Python-number t (what the samplers pass) takes
        the form chosen for this mixture (:attr:`form`, :mod:`diffsde.mixture_forms`) on cached
        per-t constants; tensor times (0-d, per-sample, or needing gradients in t) and inputs
        that require gradients take the batched eigenbasis path. Both compute the same formula
        and are tested against each other.
        """
        if self._scalar_time_path(x, t):
            flat = self._flat(x)
            out = self._form.score(flat, self._time_terms(float(t), flat))
            return out if x.dim() == 2 else out.reshape(x.shape)
        y, lam, log_weights, eigvecs, batch_shape = self._whiten(x, t)
        scaled = y / lam
        if y.shape[1] == 1:
            responsibilities_scaled = scaled
        else:
            responsibilities = softmax_clamped(self._component_log_probs(x, y, lam, log_weights)[0], -1)
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
            responsibilities = softmax_clamped(self._component_log_probs(x, y, lam, log_weights)[0], -1)
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
        out = torch.index_select(means, 0, components).mul_(math.exp(-t / 2))
        if self.form != "general":  # one covariance: x = e^{-t/2} μ_k + U (sqrt(λ_t) ∘ z), one product
            return out.addmm_(z.mul_(std[0]), eigvecs[0].T)
        # Per-sample factors U_k diag(sqrt(λ_t,k)), gathered in row blocks of at most _SAMPLE_BLOCK numbers.
        rows = max(1, _SAMPLE_BLOCK // self.dim ** 2)
        for start in range(0, n, rows):
            which = components[start:start + rows]
            scaled = z[start:start + rows].mul_(std[which])
            out[start:start + rows].add_(torch.bmm(eigvecs[which], scaled.unsqueeze(-1)).squeeze(-1))
        return out

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
_SAMPLE_BLOCK = 2 ** 22  # numbers of the per-sample factors gathered at once by ``sample`` (16 MiB in float32)


def _is_number(t) -> bool:
    return isinstance(t, (float, int)) and not isinstance(t, bool)


def _scalar_time(t: TimeLike) -> float:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"t must be a single time here, got a tensor of shape {tuple(t.shape)}")
        t = float(t)
    check_time(t, "t")
    return float(t)
