"""How a Gaussian mixture's score and log-density are evaluated at one time t: the arithmetic
behind :class:`diffsde.GaussianMixtureScore`, one form per shape of mixture, chosen once when
the mixture is built (the class owns the checks, the closed forms and the per-time cache).

At OU time t component k of p_t is ``N(m_k, Σ_{t,k})`` with ``m_k = e^{-t/2} μ_k`` and
``Σ_{t,k} = e^{-t} Σ_k + (1 - e^{-t}) I`` (the OU marginal of Song et al. 2021, ICLR, eq. 29,
in the documentation's OU time), and the score is ``s = -Σ_k r_k P_k (x - m_k)`` with
``P_k = Σ_{t,k}^{-1}`` and responsibilities ``r = softmax_k(log w_k + log N_k(x))``.

Forms (:func:`choose_form`):

* ``"gaussian"`` (K = 1): ``s = -P (x - m)`` is affine in x: one matrix product on cached
  ``(-P, P m)``.
* ``"shared"`` (every Σ_k equal, as for the toys' rings and grids): the quadratic ``xᵀ P x``
  is common to all components and cancels from the responsibilities, so their logits are
  affine in x, ``l_k = x̃ᵀ P m̃_k - ½ m̃_kᵀ P m̃_k + log w_k`` with x̃ and m̃ centred on the
  mixture's mean, and ``s = P (Σ_k r_k m̃_k - x̃)``: one product stacks the logits over x̃
  itself, one normalisation, one product maps the stack to s.
* ``"general"``: whitened coordinates ``z_k = W_kᵀ (x - m_k)`` with ``W_k W_kᵀ = P_k`` for
  all k at once, one ``(K·d, d + 1)`` product, the squared norms, the responsibilities and
  one product back (:meth:`GeneralForm.whitened`, which bounds z however far x lies).

Layout: components along rows and samples along the last axis, ``(K, N)``: every reduction
over components is then an elementwise pass over the samples. On the 2-core Xeon of
docs/benchmarks.md section 9 the ``(N, K)`` softmax form (the batched path of
:class:`~diffsde.GaussianMixtureScore`, per-sample times) is as fast at N <= 1e3 and 1.8x
(N = 1e5, 1e6) to 7x slower above; the forms therefore use ``(K, N)`` at every N. On the CPU
large batches are cut into row chunks whose temporaries fit a core's L2 cache (:func:`chunk_rows`),
which also bounds the memory a call needs.

Exponentials: logits are shifted by their per-sample maximum and clamped below at
:data:`LOG_FLOOR` before ``exp``. torch's vectorized CPU ``exp`` (and ``softmax``, which uses
it) leaves its fast path for arguments below the log of the smallest normal number (-87.3 in
float32, -708 in float64) and then runs 100-200x slower; far-off components land there all
the time. A weight clamped from below e^{-80} ≈ 1.8e-35 (relative to the largest, which is 1)
is below the rounding of every floating dtype, so the clamp changes no result beyond rounding.

Precision of the "shared" form: its logits are differences of terms of size
``|x̃| |P m̃_k|`` rather than squared distances to each mean, so in float32 a responsibility
carries an error of about ``|x̃| |P m̃| ε`` (ε = 6e-8), the same order as what rounding x
itself to float32 does to the exact score (``|x| |∇s| ε``): for the 8-mode ring at t = 0 a few
units in the fifth significant digit of s between modes, none at a mode.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["LOG_FLOOR", "Params", "choose_form", "normalised_exp_", "softmax_clamped", "chunk_rows"]

#: exp's argument floor after the max-shift (see the module docstring).
LOG_FLOOR = -80.0

# Numbers in the widest (width x rows) temporary of one chunk, on any device: 2^24 (64 MiB in float32)
# bounds what a call needs however large N, K and d are.
_CHUNK_ELEMENTS = 2 ** 24
# Per device type, for the "shared" form: 2^18 float32 = 1 MiB, half this Xeon's 2 MiB L2 per core,
# measured 15% faster than one piece at N = 1e6 (2^17 measured the same); at K + d <= 16 a sampler's
# chunk of 2^14 rows (diffsde.samplers.chunks) is one piece. (The "general" form measured fastest unchunked.)
_CACHE_CHUNK_ELEMENTS = {"cpu": 2 ** 18}
_MIN_CHUNK_ROWS = 512
_ROW_BLOCK = 128


def chunk_rows(x: Tensor, width: int, cache_sized: bool = False) -> int:
    """Rows per chunk for a call on ``x`` (M, d) whose temporaries are ``width`` numbers a row: a
    multiple of 128, so a row's result does not depend on how many rows follow it (torch's CPU
    reductions over the components take a different summation order in a chunk's last columns when
    its length is not a multiple of the vector block; :mod:`diffsde.samplers.chunks` pads its
    batches to multiples of 128 for the same reason)."""
    budget = _CHUNK_ELEMENTS
    if cache_sized:
        budget = min(budget, _CACHE_CHUNK_ELEMENTS.get(x.device.type, budget))
    return max(_MIN_CHUNK_ROWS, budget // max(width, 1) // _ROW_BLOCK * _ROW_BLOCK)


def normalised_exp_(logits: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``exp(l - max l)`` along ``dim``, clamped at :data:`LOG_FLOOR`, in place; returns
    (the weights, whose largest is 1 per sample, and the max, keepdim)."""
    top = logits.amax(dim, keepdim=True)
    return logits.sub_(top).clamp_min_(LOG_FLOOR).exp_(), top


def softmax_clamped(logits: Tensor, dim: int) -> Tensor:
    """``softmax(logits, dim)`` with exp's argument clamped at :data:`LOG_FLOOR` (out of place, so
    autograd can run through it; the clamped weights' gradients are below rounding)."""
    weights = (logits - logits.detach().amax(dim, keepdim=True)).clamp_min(LOG_FLOOR).exp()
    return weights / weights.sum(dim, keepdim=True)


class Params(NamedTuple):
    """A mixture's parameters on one device, float64: log w (K,), μ (K, d), the eigenvalues (K, d)
    and eigenvectors (K, d, d) of Σ_k, and the mixture's mean Σ_k w_k μ_k (d,)."""

    log_weights: Tensor
    means: Tensor
    eigvals: Tensor
    eigvecs: Tensor
    center: Tensor


def _eigen_at(eigvals: Tensor, t: float) -> Tensor:
    """Eigenvalues of Σ_t = e^{-t} Σ + (1 - e^{-t}) I from Σ's: ``e^{-t} λ + 1 - e^{-t}``."""
    return math.exp(-t) * eigvals + (-math.expm1(-t))


def _log_normaliser(lam: Tensor) -> Tensor:
    """``-½ Σ log λ - (d/2) log 2π`` over the last axis."""
    return -0.5 * torch.log(lam).sum(-1) - 0.5 * lam.shape[-1] * math.log(2 * math.pi)


class GaussianForm:
    """K = 1: ``s = x (-P) + P m`` in one ``addmm``; ``log p = -|(x - m) W / √2|² + log_norm``."""

    name = "gaussian"

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        pass

    def constants(self, t: float, params: Params) -> tuple[Tensor, ...]:
        """(-P (d, d), P m (d,), W / √2 (d, d), m (d,), log_norm (1,)) at time t, in params' dtype."""
        lam = _eigen_at(params.eigvals[0], t)
        mean = math.exp(-t / 2) * params.means[0]
        eigvecs = params.eigvecs[0]
        precision = (eigvecs / lam) @ eigvecs.T
        half_whiten = eigvecs * torch.rsqrt(2 * lam)
        return -precision, precision @ mean, half_whiten, mean, _log_normaliser(lam).reshape(1)

    def score(self, x: Tensor, constants: tuple[Tensor, ...]) -> Tensor:
        neg_precision, offset = constants[:2]
        return torch.addmm(offset, x, neg_precision)

    def log_prob(self, x: Tensor, constants: tuple[Tensor, ...]) -> Tensor:
        half_whiten, mean, log_norm = constants[2:]
        whitened = torch.mm(x - mean, half_whiten)
        return log_norm - whitened.square().sum(-1)


class SharedForm:
    """Every Σ_k equal: affine logits in the ``(K, N)`` layout (see the module docstring)."""

    name = "shared"

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        # Centre on the mixture's mean only where it lies further from 0 than every mean lies from it
        # (then the logits' terms |x| |P m_k| would be larger than |x̃| |P m̃_k| by more than 2x).
        center = weights @ means
        self.centred = bool(center.norm() > (means - center).norm(dim=-1).max())
        # Σ = c I (then Σ_t = (e^{-t} c + 1 - e^{-t}) I is isotropic too).
        cov = covs[0]
        self.isotropic = bool((cov == cov[0, 0] * torch.eye(cov.shape[0], dtype=cov.dtype)).all())

    def constants(self, t: float, params: Params) -> tuple[Tensor, ...]:
        """(lift (K + d, d), bias (K + d, 1), combine (d, K + d), c (d,), W / √2 (d, d), log_norm (1,))
        at time t, in params' dtype: ``lift @ x̃ᵀ + bias`` stacks the K logits over x̃ᵀ itself (the
        identity's rows reproduce x̃ exactly), and ``combine = [P m̃_1 ... P m̃_K, -P]`` maps the
        responsibilities stacked over x̃ᵀ to s = Σ_k r_k P m̃_k - P x̃."""
        lam = _eigen_at(params.eigvals[0], t)
        eigvecs = params.eigvecs[0]
        d = lam.shape[0]
        decay = math.exp(-t / 2)
        center = params.center if self.centred else torch.zeros_like(params.center)
        centred_means = decay * (params.means - center)  # m̃_k = m_k - c_t, (K, d)
        eye = torch.eye(d, dtype=lam.dtype, device=lam.device)
        # Isotropic: exactly I / λ (eigh's eigenvectors of c I need not be exactly I).
        precision = eye / lam[0] if self.isotropic else (eigvecs / lam) @ eigvecs.T
        projected = centred_means @ precision  # rows P m̃_k
        bias = params.log_weights - 0.5 * (projected * centred_means).sum(-1)
        lift = torch.cat([projected, eye])
        bias = torch.cat([bias, bias.new_zeros(d)]).reshape(-1, 1)
        combine = torch.cat([projected.T, -precision], dim=1)
        return (lift, bias, combine, decay * center, eigvecs * torch.rsqrt(2 * lam),
                _log_normaliser(lam).reshape(1))

    def _stacked(self, x: Tensor, constants: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """(the (K + d, M) stack of logits over x̃ᵀ, x̃ (M, d))."""
        lift, bias, center = constants[0], constants[1], constants[3]
        centred = x - center if self.centred else x
        return torch.addmm(bias, lift, centred.T), centred

    def score(self, x: Tensor, constants: tuple[Tensor, ...]) -> Tensor:
        out = torch.empty_like(x)
        combine = constants[2]
        d, n = x.shape[1], x.shape[0]
        k = combine.shape[1] - d
        rows = chunk_rows(x, k + d, cache_sized=True)
        for start in range(0, n, rows):
            part, target = (x, out) if rows >= n else (x[start:start + rows], out[start:start + rows])
            stacked, _ = self._stacked(part, constants)
            weights, _ = normalised_exp_(stacked[:k], 0)
            weights.div_(weights.sum(0))
            # s = Σ_k r_k P m̃_k - P x̃ in one product, written straight into the (M, d) rows (BLAS
            # writes a transposed output in place: no transposing copy of a (d, M) result).
            torch.mm(combine, stacked, out=target.T)
        return out

    def log_prob(self, x: Tensor, constants: tuple[Tensor, ...]) -> Tensor:
        half_whiten, log_norm = constants[4], constants[5]
        d = x.shape[1]
        k = constants[0].shape[0] - d
        out = x.new_empty(x.shape[0])
        rows = chunk_rows(x, k + d, cache_sized=True)
        for start in range(0, x.shape[0], rows):
            stacked, centred = self._stacked(x[start:start + rows], constants)
            weights, top = normalised_exp_(stacked[:k], 0)
            quadratic = torch.mm(centred, half_whiten).square_().sum(-1)  # ½ x̃ᵀ P x̃
            torch.sub(weights.sum(0).log_().add_(top[0]), quadratic, out=out[start:start + rows]).add_(log_norm)
        return out


class GeneralForm:
    """Distinct covariances: whitened coordinates of x in every component at once."""

    name = "general"

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        pass

    def constants(self, t: float, params: Params) -> tuple[Tensor, ...]:
        """(affine (K·d, d + 1), log_norm (K, 1)) at time t, in params' dtype: with
        ``W_k = U_k diag(λ_t^{-1/2})`` (so ``P_k = W_k W_kᵀ``), ``affine`` stacks the rows
        ``[W_kᵀ, -e^{-t/2} W_kᵀ μ_k]``."""
        lam = _eigen_at(params.eigvals, t)  # (K, d)
        k, d = lam.shape
        whiten_t = (params.eigvecs * torch.rsqrt(lam).unsqueeze(-2)).transpose(-1, -2)  # (K, d, d): W_kᵀ
        offset = -math.exp(-t / 2) * torch.einsum("ked,kd->ke", whiten_t, params.means)
        affine = torch.cat([whiten_t.reshape(k * d, d), offset.reshape(k * d, 1)], dim=1)
        return affine, (params.log_weights + _log_normaliser(lam)).reshape(k, 1)

    @staticmethod
    def whitened(x: Tensor, affine: Tensor) -> tuple[Tensor, Tensor]:
        """(z (K, d, M), scale (M,)) with ``scale · z_k = W_kᵀ (x - m_k)``, ``scale`` a power of two
        per sample (exact).

        Dividing by the scale keeps ``|z_k| <= ‖W_k‖ (2 sqrt(d) + |m_k|)``, so the squares of z
        never overflow however far x is.
        """
        d = x.shape[1]
        rhs = torch.cat([x.T, torch.ones_like(x[:, :1]).T], dim=0)  # [x; 1], (d + 1, M)
        scale = sample_scale(x)
        z = torch.mm(affine, rhs.div_(scale))
        return z.view(-1, d, x.shape[0]), scale

    def _weights(self, z: Tensor, scale: Tensor, log_norm: Tensor) -> tuple[Tensor, Tensor]:
        """(e (K, M) with max 1 per sample, shift (1, M)): ``log w_k N_k(x) = log e_k + top - shift``."""
        squares = z[:, 0].square()  # Σ_i z_i², (K, M): in place over the d rows, no (K, d, M) temporary
        for i in range(1, z.shape[1]):
            squares.addcmul_(z[:, i], z[:, i])
        shifted, shift = shifted_log_probs(squares, scale, log_norm, 0)
        weights, top = normalised_exp_(shifted, 0)
        return weights, top - shift

    def score(self, x: Tensor, constants: tuple[Tensor, ...]) -> Tensor:
        affine, log_norm = constants
        k, d = log_norm.shape[0], x.shape[1]
        out = torch.empty_like(x)
        rows = chunk_rows(x, k * (d + 1))
        for start in range(0, x.shape[0], rows):
            part = x[start:start + rows]
            z, scale = self.whitened(part, affine)
            weights, _ = self._weights(z, scale, log_norm)
            z.mul_(weights.div_(weights.sum(0)).unsqueeze(1))
            # s = -Σ_k r_k W_k z_k scale: -(r z)ᵀ (M, K·d) @ [W_kᵀ] (K·d, d), times the scale
            torch.mm(z.view(k * d, -1).T, affine[:, :d], out=out[start:start + rows])
            out[start:start + rows].mul_(scale.unsqueeze(1).neg_())
        return out

    def log_prob(self, x: Tensor, constants: tuple[Tensor, ...]) -> Tensor:
        affine, log_norm = constants
        k, d = log_norm.shape[0], x.shape[1]
        out = x.new_empty(x.shape[0])
        rows = chunk_rows(x, k * (d + 1))
        for start in range(0, x.shape[0], rows):
            z, scale = self.whitened(x[start:start + rows], affine)
            weights, offset = self._weights(z, scale, log_norm)
            torch.add(weights.sum(0).log_(), offset[0], out=out[start:start + rows])
        return out


def choose_form(weights: Tensor, means: Tensor, covs: Tensor) -> GaussianForm | SharedForm | GeneralForm:
    """The form for a mixture (float64 parameters): "gaussian" for K = 1, "shared" when every
    covariance equals the first exactly, "general" otherwise."""
    if means.shape[0] == 1:
        return GaussianForm(weights, means, covs)
    if bool((covs == covs[:1]).all()):
        return SharedForm(weights, means, covs)
    return GeneralForm(weights, means, covs)


def sample_scale(flat: Tensor) -> Tensor:
    """A power of two ``2^e >= 1`` per sample of x (M, d) with ``max_i |x_i| / 2^e < 2``, (M,):
    dividing by it is exact, and it bounds what it divides."""
    with torch.no_grad():
        top = math.frexp(torch.finfo(flat.dtype).max)[1] - 1
        exponent = torch.frexp(flat.abs().amax(-1)).exponent.clamp(0, top)
        return torch.ldexp(torch.ones_like(flat[:, 0]), exponent)


def shifted_log_probs(sq: Tensor, scale: Tensor, log_norm: Tensor, dim: int) -> tuple[Tensor, Tensor]:
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

