"""DDPM's discrete chain: its posterior, its ε-parametrised reverse mean, and its variational bound
(a Monte Carlo estimate for any data, its exact expectation for Gaussian data).

DDPM (Ho et al. 2020) is one discretization of the OU (the documentation's conventions page): on a schedule with
``ᾱ_0 = 1 > ᾱ_1 > ... > ᾱ_n``, step i has ``α_i = ᾱ_i / ᾱ_{i-1}`` and ``β_i = 1 - α_i``, and
``q(x_i | x0) = N(sqrt(ᾱ_i) x0, (1 - ᾱ_i) I)`` is the OU marginal at the exact time
``τ_i = -log ᾱ_i``. Everything here is written in terms of the two ᾱ at the ends of a
step, so it serves a schedule (the schedule's ᾱ_i) and a bare grid of times (ᾱ = e^{-t})
alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Union

import torch
from torch import Tensor

from ._checks import broadcast_time, check_data, check_output, check_positive
from .schedules import BetaSchedule
from .scores import GaussianScore
from .sde import OU

__all__ = ["ddpm_posterior", "ddpm_reverse_mean", "predict_x0", "normal_kl", "VLBTerms", "vlb",
           "ExpectedVLB", "expected_vlb", "model_cross_entropy", "gaussian_entropy"]

AlphaBar = Union[float, Tensor]
EpsModel = Callable[[Tensor, float], Tensor]


def ddpm_posterior(x_t: Tensor, x0: Tensor, alpha_bar_t: AlphaBar,
                   alpha_bar_prev: AlphaBar) -> tuple[Tensor, Union[float, Tensor]]:
    """Mean and variance of DDPM's posterior ``q(x_{t-1} | x_t, x0) = N(μ̃, β̃ I)`` (Ho et al. 2020, eqs. 6-7):

        μ̃ = sqrt(ᾱ_{t-1}) β_t / (1 - ᾱ_t) · x0 + sqrt(α_t) (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · x_t,
        β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t,      α_t = ᾱ_t / ᾱ_{t-1},  β_t = 1 - α_t.

    Args:
        x_t: (batch, ...) tensor.
        x0: (batch, ...) tensor of x_t's shape.
        alpha_bar_t: ᾱ at the step's noisier end, ``0 < ᾱ_t < ᾱ_{t-1}``; a Python float, a 0-d
            tensor or a (batch,) tensor.
        alpha_bar_prev: ᾱ at the step's other end, ``ᾱ_t < ᾱ_{t-1} <= 1``; same forms.
    Returns:
        (μ̃ of x_t's shape, β̃ as a float or a tensor that broadcasts against it). At the first
        step (ᾱ_{t-1} = 1) β̃ = 0 and μ̃ = x0.
    Raises:
        ValueError: the ᾱ are not ordered as above, or the shapes of x_t and x0 differ.
    """
    check_data(x_t, "x_t")
    check_data(x0, "x0")
    if x_t.shape != x0.shape:
        raise ValueError(f"x_t and x0 must have the same shape, got {tuple(x_t.shape)} and {tuple(x0.shape)}")
    a_t, a_prev = _alpha_bars(alpha_bar_t, alpha_bar_prev, x_t)
    alpha = a_t / a_prev
    beta = 1 - alpha
    mean = (a_prev ** 0.5 * beta / (1 - a_t)) * x0 + (alpha ** 0.5 * (1 - a_prev) / (1 - a_t)) * x_t
    return mean, (1 - a_prev) / (1 - a_t) * beta


def ddpm_reverse_mean(x_t: Tensor, eps: Tensor, alpha_bar_t: AlphaBar, alpha_bar_prev: AlphaBar) -> Tensor:
    """DDPM's reverse mean from a noise prediction (Ho et al. 2020, eq. 11):
    ``μ_θ = (x_t - β_t / sqrt(1 - ᾱ_t) · ε) / sqrt(α_t)``.

    It is :func:`ddpm_posterior`'s mean at ``x0 = x̂0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t)``.
    Shapes and ᾱ arguments as for :func:`ddpm_posterior`.
    """
    check_data(x_t, "x_t")
    a_t, a_prev = _alpha_bars(alpha_bar_t, alpha_bar_prev, x_t)
    return reverse_mean_unchecked(x_t, eps, a_t, a_prev)


def reverse_mean_unchecked(x_t: Tensor, eps: Tensor, alpha_bar_t: AlphaBar, alpha_bar_prev: AlphaBar) -> Tensor:
    """:func:`ddpm_reverse_mean` without the argument checks, for the sampler's inner loop
    (which checks its grid once, before the first step)."""
    alpha = alpha_bar_t / alpha_bar_prev
    return (x_t - ((1 - alpha) / (1 - alpha_bar_t) ** 0.5) * eps) / alpha ** 0.5


def predict_x0(x_t: Tensor, eps: Tensor, alpha_bar_t: AlphaBar) -> Tensor:
    """``x̂0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t)``: x0 solved from
    ``x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε`` (Ho et al. 2020, eq. 4 solved for x0)."""
    check_data(x_t, "x_t")
    a_t, _ = _alpha_bars(alpha_bar_t, 1.0, x_t, allow_equal=True)
    return (x_t - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5


def normal_kl(mean1: Tensor, var1: AlphaBar, mean2: Tensor, var2: AlphaBar) -> Tensor:
    """``KL(N(mean1, var1 I) || N(mean2, var2 I))`` summed over the last dimension, in nats
    (per coordinate): ``½ Σ [log(var2 / var1) + (var1 + (mean1 - mean2)²) / var2 - 1]``.

    means: (..., d); variances: floats or tensors in (0, inf) broadcasting against them (else
    ValueError naming var1 or var2; a tensor is read on the host). Returns shape (...).
    """
    check_positive(var1, "var1")
    check_positive(var2, "var2")
    var1 = torch.as_tensor(var1, dtype=mean1.dtype, device=mean1.device)
    var2 = torch.as_tensor(var2, dtype=mean1.dtype, device=mean1.device)
    terms = torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1
    return 0.5 * terms.sum(-1)


@dataclass(frozen=True)
class VLBTerms:
    """DDPM's variational bound on ``-log p_θ(x0)`` per data point, in nats (Ho et al. 2020, eqs. 3 and 5).

    Attributes:
        prior: (B,) ``L_T = KL(q(x_n | x0) || N(0, I))``.
        transitions: (B,) ``Σ_{i=2}^{n} L_{i-1}``, ``L_{i-1} = KL(q(x_{i-1} | x_i, x0) || p_θ(x_{i-1} | x_i))``.
        decoder: (B,) ``L_0 = -log p_θ(x0 | x_1)``.
        per_step: (n+1,) batch means, ``per_step[0] = L_0``, ``per_step[j] = L_j`` for 1 <= j < n,
            ``per_step[n] = L_T``.
        dim: data dimension d.
    """

    prior: Tensor
    transitions: Tensor
    decoder: Tensor
    per_step: Tensor
    dim: int

    @property
    def total(self) -> Tensor:
        """(B,) the bound for each x0, ``L_T + Σ L_{i-1} + L_0``, in nats."""
        return self.prior + self.transitions + self.decoder

    @property
    def nats(self) -> float:
        """The bound averaged over the batch, in nats."""
        return float(self.total.mean())

    @property
    def bits_per_dim(self) -> float:
        """The batch-averaged bound in bits per dimension, ``nats / (d log 2)``."""
        return self.nats / (self.dim * math.log(2))

    @property
    def standard_error(self) -> float:
        """Monte Carlo standard error of :attr:`nats` (std of :attr:`total` / sqrt(B))."""
        total = self.total
        return float(total.std() / math.sqrt(total.shape[0])) if total.shape[0] > 1 else math.nan


def vlb(eps_model: EpsModel, x0: Tensor, schedule: BetaSchedule, *, variance: str = "beta",
        generator: torch.Generator | None = None) -> VLBTerms:
    """DDPM's variational bound ``L_T + Σ_{i=2}^{n} L_{i-1} + L_0`` for data x0 (Ho et al. 2020,
    eqs. 5 and 13), with an ε-parametrised reverse chain.

    The reverse kernel is ``p_θ(x_{i-1} | x_i) = N(μ_θ, σ_i² I)`` with μ_θ from ε by
    :func:`ddpm_reverse_mean` (Ho et al. 2020, eq. 11) and ``σ_i² = β_i`` (``variance="beta"``) or
    ``β̃_i`` (``"beta_tilde"``). The decoder ``p_θ(x0 | x_1) = N(μ_θ(x_1), β_1 I)`` is Gaussian
    (continuous data) and always uses β_1, since ``β̃_1 = 0``.

    The ε-model is called as ``eps_model(x_i, τ_i)`` at the schedule's exact times
    ``τ_i = -log ᾱ_i`` (a Python float), where the OU marginal is exactly ``q(x_i | x0)``:
    the exact ε of p_0 at τ_i is then ``E[ε | x_i]`` for the chain, which makes
    ``μ_θ = E[μ̃ | x_i]``, the best mean for every KL term.

    Each term is a Monte Carlo estimate with one draw ``x_i ~ q(x_i | x0)`` per x0 and step,
    made with :meth:`OU.sample_marginal` for i = 1, ..., n in turn (independently across
    steps, which leaves each term's expectation unchanged); L_T is exact. The per-x0 spread
    is O(1) nat whatever n (it comes from the first few steps), so resolving small
    differences between bounds needs many x0. Runs under ``torch.no_grad()`` in x0's dtype and device (float64 is
    advisable for small β).

    Args:
        eps_model: ``eps_model(x, t)`` with x (B, d) and t a float OU time; returns (B, d).
        x0: (B, d) data points.
        schedule: the DDPM chain's β schedule (n steps).
        variance: "beta" or "beta_tilde".
        generator: the source of the x_i draws.
    Raises:
        ValueError: x0 is not (B, d) with B >= 1, has a NaN or infinite entry, ``variance`` is unknown,
            or eps_model returns a shape other than its x's.
        TypeError: x0 is not a floating tensor or ``schedule`` is not a BetaSchedule.
    """
    check_data(x0, "x0")
    if x0.dim() != 2 or x0.shape[0] == 0:
        raise ValueError(f"x0 must have shape (B, d) with B >= 1, got {tuple(x0.shape)}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 must be finite, got a NaN or infinite entry")
    if not isinstance(schedule, BetaSchedule):
        raise TypeError(f"schedule must be a BetaSchedule, got {type(schedule).__name__}")
    if variance not in _VARIANCES:
        raise ValueError(f"variance must be one of {sorted(_VARIANCES)}, got {variance!r}")
    ou = OU()
    alpha_bars = schedule.alpha_bars.tolist()
    times = schedule.exact_times.tolist()
    n, d = schedule.n, x0.shape[-1]
    per_step = torch.zeros(n + 1, dtype=torch.float64)
    with torch.no_grad():
        a_n = alpha_bars[n]
        prior = 0.5 * (a_n * (x0 ** 2 - 1) - math.log1p(-a_n)).sum(-1)
        per_step[n] = prior.mean()
        transitions = torch.zeros_like(prior)
        for i in range(1, n + 1):
            x_i = ou.sample_marginal(x0, times[i], generator=generator)
            eps = check_output(eps_model(x_i, times[i]), x_i, "eps_model")
            mean = ddpm_reverse_mean(x_i, eps, alpha_bars[i], alpha_bars[i - 1])
            beta = 1 - alpha_bars[i] / alpha_bars[i - 1]
            if i == 1:
                decoder = 0.5 * (((x0 - mean) ** 2).sum(-1) / beta + d * math.log(2 * math.pi * beta))
                per_step[0] = decoder.mean()
                continue
            posterior_mean, posterior_var = ddpm_posterior(x_i, x0, alpha_bars[i], alpha_bars[i - 1])
            kl = normal_kl(posterior_mean, posterior_var, mean, _VARIANCES[variance](beta, posterior_var))
            transitions += kl
            per_step[i - 1] = kl.mean()
    return VLBTerms(prior, transitions, decoder, per_step, d)


_VARIANCES = {
    "beta": lambda beta, beta_tilde: beta,
    "beta_tilde": lambda beta, beta_tilde: beta_tilde,
}


def _alpha_bars(alpha_bar_t: AlphaBar, alpha_bar_prev: AlphaBar, x: Tensor,
                allow_equal: bool = False) -> tuple[AlphaBar, AlphaBar]:
    """Check ``0 < ᾱ_t < ᾱ_prev <= 1`` and shape the ᾱ to broadcast against x (floats stay floats)."""
    a_t = broadcast_time(alpha_bar_t, x) if isinstance(alpha_bar_t, Tensor) else _real(alpha_bar_t, "alpha_bar_t")
    a_prev = (broadcast_time(alpha_bar_prev, x) if isinstance(alpha_bar_prev, Tensor)
              else _real(alpha_bar_prev, "alpha_bar_prev"))
    ordered = (a_t <= a_prev) if allow_equal else (a_t < a_prev)
    ok = (a_t > 0) & ordered & (a_prev <= 1)
    if not bool(torch.as_tensor(ok).all()):  # NaN compares False, so it is refused too
        relation = "<=" if allow_equal else "<"
        raise ValueError(f"need 0 < alpha_bar_t {relation} alpha_bar_prev <= 1, got alpha_bar_t={alpha_bar_t!r}, "
                         f"alpha_bar_prev={alpha_bar_prev!r}")
    return a_t, a_prev


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    return float(value)


# -- the exact bound for Gaussian data ---------------------------------------------------------------
#
# For p0 = N(m, C) and an ε-model affine in x (the exact ε of p0, EpsilonFromScore(GaussianScore(m, C)),
# is), every term of the bound has a closed-form expectation and the reverse chain's own law is
# Gaussian. The algebra below is written out independently of the functions above (it reads the
# reverse mean off the ε-model as an affine map), so that tests can check the Monte Carlo `vlb`
# against it.


class ExpectedVLB(NamedTuple):
    """The exact expectation of DDPM's bound over x0 ~ p0 and the chain's draws, in nats.

    Attributes:
        prior: ``E[L_T]``.
        transitions: ``E[Σ_{i=2}^{n} L_{i-1}]``.
        decoder: ``E[L_0]``.
    """

    prior: float
    transitions: float
    decoder: float

    @property
    def total(self) -> float:
        """``E[L_T + Σ L_{i-1} + L_0]``, the expectation of :attr:`VLBTerms.nats`."""
        return self.prior + self.transitions + self.decoder


def gaussian_entropy(p0: GaussianScore) -> float:
    """The differential entropy ``h(p0) = ½ log det(2πe Σ)`` of p0 = N(μ, Σ), in nats: the
    lowest value any model's cross-entropy ``E_{p0}[-log p_θ(x0)]`` (and so its bound) can take.

    Raises:
        TypeError: p0 is not a GaussianScore.
    """
    _, cov = _gaussian_data(p0)
    return 0.5 * float(torch.logdet(2 * math.pi * math.e * cov))


def expected_vlb(eps_model: EpsModel, p0: GaussianScore, schedule: BetaSchedule, *,
                 variance: str = "beta") -> ExpectedVLB:
    """The exact expectation of :func:`vlb` for Gaussian data p0 = N(μ, Σ) and an ε-model affine in x.

    The bound is ``L_T + Σ_{i=2}^{n} L_{i-1} + L_0`` (Sohl-Dickstein et al. 2015; Ho et al. 2020,
    eqs. 5 and 13), with the same reverse chain as :func:`vlb`: mean
    ``μ_θ(x_i) = (x_i - β_i / sqrt(1 - ᾱ_i) ε(x_i, τ_i)) / sqrt(α_i) = M_i x_i + c_i`` (Ho et al.
    2020, eq. 11), variance ``σ_i² = β_i`` or ``β̃_i``. With ``x_i = sqrt(ᾱ_i) x0 + sqrt(1 - ᾱ_i) z``
    and the posterior mean ``a x0 + b x_i`` (Ho et al. 2020, eqs. 6-7), each term is a Gaussian KL
    (or -log N for L_0) whose only random part is a quadratic ``E‖P x0 + Q z + c‖² =
    ‖P μ + c‖² + tr(P Σ Pᵀ + Q Qᵀ)``:

        E[L_T] = ½ (ᾱ_n (tr Σ + ‖μ‖² - d) - d log(1 - ᾱ_n)),
        E[L_{i-1}] = ½ (d (log(σ_i² / β̃_i) + β̃_i / σ_i² - 1) + E‖a x0 + b x_i - M_i x_i - c_i‖² / σ_i²),
        E[L_0] = ½ (E‖x0 - M_1 x_1 - c_1‖² / β_1 + d log(2π β_1)).

    M_i and c_i are read off the ε-model by probing it at x = 0 and the unit vectors (float64, CPU,
    at the exact times ``τ_i = -log ᾱ_i`` as Python floats, as :func:`vlb` calls it), and checked
    at one more point.

    Args:
        eps_model: ``eps_model(x, t)`` affine in x; x is (B, d) float64 on the CPU.
        p0: the data law.
        schedule: the chain's β schedule (n steps).
        variance: "beta" or "beta_tilde".
    Returns:
        :class:`ExpectedVLB` (nats; its total is the expectation of :attr:`VLBTerms.nats`).
    Raises:
        TypeError: p0 is not a GaussianScore, schedule not a BetaSchedule, eps_model not callable.
        ValueError: unknown ``variance``; an ε-model that is not affine in x or returns a shape other than x's.
    """
    mean, cov = _gaussian_data(p0)
    _check_chain(eps_model, schedule, variance)
    d, n = mean.shape[0], schedule.n
    ab = schedule.alpha_bars.tolist()
    eye = torch.eye(d, dtype=torch.float64)

    def mean_square(P: Tensor, Q: Tensor, c: Tensor) -> float:  # E‖P x0 + Q z + c‖², z ~ N(0, I) ⊥ x0
        e = P @ mean + c
        return float(e @ e + torch.trace(P @ cov @ P.T + Q @ Q.T))

    prior = 0.5 * (ab[n] * (float(torch.trace(cov) + mean @ mean) - d) - d * math.log1p(-ab[n]))
    transitions = decoder = 0.0
    for i in range(1, n + 1):
        M, c, beta = _reverse_affine(eps_model, schedule, i, d)
        s, r = math.sqrt(ab[i]), math.sqrt(1 - ab[i])  # x_i = s x0 + r z
        if i == 1:  # -log N(x0; M x_1 + c, β_1 I)
            decoder = 0.5 * (mean_square(eye - s * M, -r * M, -c) / beta + d * math.log(2 * math.pi * beta))
            continue
        a = math.sqrt(ab[i - 1]) * beta / (1 - ab[i])  # q(x_{i-1} | x_i, x0) = N(a x0 + b x_i, β̃ I)
        b = math.sqrt(1 - beta) * (1 - ab[i - 1]) / (1 - ab[i])
        beta_tilde = (1 - ab[i - 1]) / (1 - ab[i]) * beta
        var = beta if variance == "beta" else beta_tilde
        B = b * eye - M
        transitions += 0.5 * (d * (math.log(var / beta_tilde) + beta_tilde / var - 1)
                              + mean_square(a * eye + s * B, r * B, -c) / var)
    return ExpectedVLB(prior, transitions, decoder)


def model_cross_entropy(eps_model: EpsModel, p0: GaussianScore, schedule: BetaSchedule, *,
                        variance: str = "beta") -> float:
    """The chain's exact negative log-likelihood ``E_{p0}[-log p_θ(x0)]`` for Gaussian data, in nats.

    The DDPM chain (Ho et al. 2020, Algorithm 2 with its Gaussian decoder) started from N(0, I) with
    an ε-model affine in x is an affine Gaussian chain, ``x_{i-1} = M_i x_i + c_i + σ_i z``
    (``σ_i² = β_i`` or ``β̃_i``, and β_1 at the last step as in :func:`vlb`), so its output law
    p_θ = N(m, S) is exact and the cross-entropy is
    ``½ (log det(2π S) + tr(S⁻¹ Σ) + (μ - m)ᵀ S⁻¹ (μ - m))``. It lies between the bound
    (:func:`expected_vlb`) and the entropy (:func:`gaussian_entropy`). Arguments and errors as
    :func:`expected_vlb`.
    """
    mean0, cov0 = _gaussian_data(p0)
    _check_chain(eps_model, schedule, variance)
    d = mean0.shape[0]
    ab = schedule.alpha_bars.tolist()
    mean, cov = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    for i in range(schedule.n, 0, -1):
        M, c, beta = _reverse_affine(eps_model, schedule, i, d)
        var = beta if (variance == "beta" or i == 1) else (1 - ab[i - 1]) / (1 - ab[i]) * beta
        mean, cov = M @ mean + c, M @ cov @ M.T + var * torch.eye(d, dtype=torch.float64)
    diff = mean0 - mean
    return 0.5 * float(torch.logdet(2 * math.pi * cov) + torch.trace(torch.linalg.solve(cov, cov0))
                       + diff @ torch.linalg.solve(cov, diff))


def _gaussian_data(p0) -> tuple[Tensor, Tensor]:
    """(μ, Σ) of a Gaussian p0, float64 on the CPU."""
    if not isinstance(p0, GaussianScore):
        raise TypeError(f"p0 must be a GaussianScore (Gaussian data N(μ, Σ)), got {type(p0).__name__}")
    mean, cov = p0.mean_and_cov(0.0)
    return mean.to("cpu", torch.float64), cov.to("cpu", torch.float64)


def _check_chain(eps_model, schedule, variance: str) -> None:
    if not callable(eps_model):
        raise TypeError(f"eps_model must be callable as eps_model(x, t), got {type(eps_model).__name__}")
    if not isinstance(schedule, BetaSchedule):
        raise TypeError(f"schedule must be a BetaSchedule, got {type(schedule).__name__}")
    if variance not in _VARIANCES:
        raise ValueError(f"variance must be one of {sorted(_VARIANCES)}, got {variance!r}")


def _reverse_affine(eps_model: EpsModel, schedule: BetaSchedule, i: int, d: int) -> tuple[Tensor, Tensor, float]:
    """(M, c, β_i) with DDPM's reverse mean ``μ_θ(x) = (x - β_i / sqrt(1 - ᾱ_i) ε(x, τ_i)) / sqrt(α_i)``
    written as ``M x + c``; refuses an ε-model that is not affine in x."""
    ab, tau = schedule.alpha_bars.tolist(), schedule.exact_times.tolist()
    probes = torch.cat([torch.zeros(1, d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)])
    with torch.no_grad():
        out = check_output(eps_model(probes, tau[i]), probes, "eps_model").to("cpu", torch.float64)
        A, b = (out[1:] - out[0]).T, out[0]
        check = torch.linspace(0.5, 1.5, d, dtype=torch.float64)
        at_check = check_output(eps_model(check[None], tau[i]), check[None], "eps_model").to("cpu", torch.float64)[0]
    predicted = A @ check + b
    if not torch.allclose(at_check, predicted, rtol=1e-6, atol=1e-6 * (1 + float(out.abs().max()))):
        raise ValueError(f"eps_model must be affine in x (as the exact ε of Gaussian data is); at t = {tau[i]:.4g} "
                         f"it is not: {at_check.tolist()} at x = {check.tolist()}, affine prediction "
                         f"{predicted.tolist()}")
    alpha = ab[i] / ab[i - 1]
    k = (1 - alpha) / math.sqrt(1 - ab[i])
    return (torch.eye(d, dtype=torch.float64) - k * A) / math.sqrt(alpha), -k * b / math.sqrt(alpha), 1 - alpha
