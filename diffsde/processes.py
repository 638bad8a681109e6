"""Linear-Gaussian forward processes, each the canonical OU seen through a change of clock and scale.

A process ``x_τ = a(τ) x0 + b(τ) ε`` in its own clock τ ∈ [0, T], with ``dx = f(x, τ) dτ + g(τ) dW``
and ``f(x, τ) = k(τ) x``, is the OU ``dx = -½ x dt + dW`` (Song et al. 2021, eq. 11 with β ≡ 1) through (the
documentation's conventions, "Processes in OU coordinates"):

    t(τ) = log(1 + b²/a²),   c(τ) = sqrt(a² + b²),   x_ou = x / c,

since then ``x_ou = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε``: (a/c)² = 1 / (1 + b²/a²) = e^{-t} and
(b/c)² = 1 - e^{-t}. The mean and variance follow ``da/dτ = k a`` and ``d(b²)/dτ = 2 k b² + g²``
(the moment equations of Särkkä & Solin 2019 that Song et al. 2021, "Score-Based Generative
Modeling through SDEs", appendix B, use for their kernels). With β(s) = β_min + s (β_max - β_min),
its integral ``B(s) = β_min s + ½ s² (β_max - β_min)`` and σ(s) = σ_min (σ_max/σ_min)^s:

| process | k(τ) | g(τ)² | a(τ) | b(τ) | source |
| --- | --- | --- | --- | --- | --- |
| OU | -½ | 1 | e^{-t/2} | sqrt(1 - e^{-t}) | Song et al. 2021, eq. 11 with β ≡ 1 |
| VP | -½ β(s) | β(s) | e^{-B/2} | sqrt(1 - e^{-B}) | Song et al. 2021, §3.4 and appendix B |
| SubVP | -½ β(s) | β(s) (1 - e^{-2B}) | e^{-B/2} | 1 - e^{-B} | Song et al. 2021, §3.4 and appendix B |
| VE | 0 | 2 σ(s)² log(σ_max/σ_min) | 1 | sqrt(σ(s)² - σ_min²) | Song et al. 2021, §3.4 and appendix B |
| EDM | 0 | 2τ | 1 | τ | Karras et al. 2022, Table 1 (σ(τ) = τ, s(τ) = 1) |

VP is the OU with the new clock t = B(s) and c = 1. Times are Python floats, 0-d tensors or
(batch,) tensors of per-sample times; a float gives floats back, a tensor gives tensors of its
dtype. A time outside [0, T] raises ValueError (a relative slack of 1e-6 admits a float32 T).
Processes know nothing of step counts.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence, Union, runtime_checkable

import torch
from torch import Tensor

from ._checks import TimeLike, broadcast_time, check_data, check_real, check_time, exp_neg, one_minus_exp_neg, sqrt

__all__ = ["Process", "OU", "VP", "SubVP", "VE", "EDM", "reverse_sde_drift", "probability_flow_drift"]

Score = Callable[[Tensor, TimeLike], Tensor]
Shape = Union[int, Sequence[int]]
Device = Union[str, torch.device, None]

OU_RATE = 0.5
"""The OU's drift rate: ``dx = -OU_RATE x dt + dW`` (Song et al. 2021, eq. 11 with β ≡ 1); the one ½."""

_SLACK = 1e-6  # relative slack on the end of a clock, for float32 times


def reverse_sde_drift(x: Tensor, score_value: Tensor, tau: TimeLike | None = None) -> Tensor:
    """Drift of the OU's reverse SDE in backward time, ``½ x + s`` = g² s - f with g = 1, f = -½ x
    (Anderson 1982; Song et al. 2021, eq. 6). ``tau`` is unused (the OU's
    rule does not depend on time); it makes this the OU's ``reverse_drift``."""
    return OU_RATE * x + score_value


def probability_flow_drift(x: Tensor, score_value: Tensor, tau: TimeLike | None = None) -> Tensor:
    """Velocity of the OU's probability-flow ODE in backward time, ``½ x + ½ s`` = ½ g² s - f
    (Song et al. 2021, eq. 13). ``tau`` is unused; it makes this the OU's ``flow_drift``."""
    return OU_RATE * (x + score_value)


@runtime_checkable
class Process(Protocol):
    """A linear-Gaussian forward process ``x_τ = a(τ) x0 + b(τ) ε`` with its map to the OU.

    ``T`` is the end of the clock (None for the OU, which has none); ``diffusion_constant`` is g
    when it does not depend on τ (the OU: 1), else None. ``reverse_drift(x, s, τ) = g² s - f`` and
    ``flow_drift(x, s, τ) = ½ g² s - f`` are the backward-time drifts of Song et al. 2021 eqs. 6
    and 13, given the score value s; they do not check τ (the callers have).
    """

    T: float | None
    noise_type: str
    sde_type: str
    diffusion_constant: float | None

    def drift(self, x: Tensor, tau: TimeLike) -> Tensor: ...
    def diffusion(self, tau: TimeLike) -> Union[float, Tensor]: ...
    def scales(self, tau: TimeLike) -> tuple: ...
    def marginal(self, x0: Tensor, tau: TimeLike) -> tuple[Tensor, Tensor]: ...
    def sample_marginal(self, x0: Tensor, tau: TimeLike, generator: torch.Generator | None = None) -> Tensor: ...
    def prior(self, shape: Shape, generator: torch.Generator | None = None, device: Device = None,
              dtype: torch.dtype | None = None) -> Tensor: ...
    def prior_log_prob(self, x: Tensor) -> Tensor: ...
    def ou_time(self, tau: TimeLike) -> Union[float, Tensor]: ...
    def process_time(self, t: TimeLike) -> Union[float, Tensor]: ...
    def ou_scale(self, tau: TimeLike) -> Union[float, Tensor]: ...
    def to_ou(self, x: Tensor, tau: TimeLike) -> Tensor: ...
    def from_ou(self, x_ou: Tensor, tau: TimeLike) -> Tensor: ...
    def reverse_drift(self, x: Tensor, score_value: Tensor, tau: TimeLike) -> Tensor: ...
    def flow_drift(self, x: Tensor, score_value: Tensor, tau: TimeLike) -> Tensor: ...
    def f(self, t: TimeLike, y: Tensor) -> Tensor: ...
    def g(self, t: TimeLike, y: Tensor) -> Tensor: ...


def _ops(t):
    """``torch`` for a tensor time, ``math`` for a float: the closed forms below read both."""
    return torch if isinstance(t, Tensor) else math


def _full(value: float, like: Union[float, Tensor]) -> Union[float, Tensor]:
    return torch.full_like(like, value) if isinstance(like, Tensor) else value


class _LinearProcess:
    """What every process derives from its closed forms. A subclass defines, on unchecked times
    (floats or broadcast tensors): ``_rate`` (k), ``_g2`` (g²), ``_scales`` (a, b) and
    ``_process_time`` (the inverse of t(τ) = log(1 + b²/a²)); and ``T``, ``prior_std``."""

    T: float | None = None
    prior_std: float = 1.0
    diffusion_constant: float | None = None
    noise_type = "diagonal"
    sde_type = "ito"
    _time_name = "tau"

    def _time(self, tau: TimeLike) -> Union[float, Tensor]:
        high = None if self.T is None else self.T + _SLACK * max(1.0, self.T)
        check_time(tau, self._time_name, high=high)
        if isinstance(tau, Tensor):
            return tau if tau.is_floating_point() else tau.to(torch.get_default_dtype())
        return float(tau)

    def drift(self, x: Tensor, tau: TimeLike) -> Tensor:
        """Forward drift ``f(x, τ) = k(τ) x``; x of shape (batch, ...)."""
        return self._rate(broadcast_time(self._time(tau), x)) * x

    def diffusion(self, tau: TimeLike) -> Union[float, Tensor]:
        """Forward diffusion coefficient g(τ): a float, or a tensor of ``tau``'s shape."""
        tau = self._time(tau)
        return _ops(tau).sqrt(self._g2(tau))

    def scales(self, tau: TimeLike) -> tuple:
        """``(a(τ), b(τ))``: ``x_τ = a x0 + b ε``; floats, or tensors of ``tau``'s shape."""
        return self._scales(self._time(tau))

    def marginal(self, x0: Tensor, tau: TimeLike) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of ``x_τ | x0``, ``(a(τ) x0, b(τ))``: the mean of x0's shape
        (batch, ...), the std a tensor that broadcasts against it; tau a float, 0-d or (batch,)."""
        check_data(x0, "x0")
        a, b = self._scales(broadcast_time(self._time(tau), x0))
        return a * x0, torch.as_tensor(b, dtype=x0.dtype, device=x0.device)

    def sample_marginal(self, x0: Tensor, tau: TimeLike, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``x_τ = a(τ) x0 + b(τ) ε`` exactly (no discretization)."""
        mean, std = self.marginal(x0, tau)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return mean + std * noise

    def prior(self, shape: Shape, generator: torch.Generator | None = None, device: Device = None,
              dtype: torch.dtype | None = None) -> Tensor:
        """Draw from the prior N(0, prior_std² I) that starts the reverse process at T
        (Song et al. 2021: N(0, I) for VP and sub-VP, N(0, σ_max² I) for VE; Karras et al. 2022
        for EDM). It approximates p_T; the exact p_T is available through :meth:`exact_score`."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return x if self.prior_std == 1.0 else x.mul_(self.prior_std)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """``log N(x; 0, prior_std² I)``; x of shape (..., d), returns shape (...)."""
        check_data(x, "x")
        d, std = x.shape[-1], self.prior_std
        return -0.5 * (x * x).sum(-1) / std**2 - d * (math.log(std) + 0.5 * math.log(2 * math.pi))

    def ou_time(self, tau: TimeLike) -> Union[float, Tensor]:
        """The OU time ``t(τ) = log(1 + b²/a²)``: 0 at τ = 0, increasing."""
        return self._ou_time(self._time(tau))

    def process_time(self, t: TimeLike) -> Union[float, Tensor]:
        """The inverse of :meth:`ou_time` (closed form), clamped to [0, T]; t in [0, t(T)]."""
        if self.T is None:
            check_time(t, "t")
            return t if isinstance(t, Tensor) else float(t)
        t_max = self._ou_time(float(self.T))
        check_time(t, "t", high=t_max + _SLACK * max(1.0, t_max))
        tau = self._process_time(t if isinstance(t, Tensor) else float(t))
        return tau.clamp(0.0, self.T) if isinstance(tau, Tensor) else min(max(tau, 0.0), self.T)

    def ou_scale(self, tau: TimeLike) -> Union[float, Tensor]:
        """The scale ``c(τ) = sqrt(a² + b²)`` with ``x_ou = x / c``."""
        return self._ou_scale(self._time(tau))

    def to_ou(self, x: Tensor, tau: TimeLike) -> Tensor:
        """The state in OU coordinates, ``x / c(τ)``; x of shape (batch, ...)."""
        return x / self._ou_scale(broadcast_time(self._time(tau), x))

    def from_ou(self, x_ou: Tensor, tau: TimeLike) -> Tensor:
        """The inverse of :meth:`to_ou`, ``c(τ) x_ou``."""
        return self._ou_scale(broadcast_time(self._time(tau), x_ou)) * x_ou

    def reverse_drift(self, x: Tensor, score_value: Tensor, tau: TimeLike) -> Tensor:
        """``g(τ)² s - f(x, τ)`` (Song et al. 2021, eq. 6); tau is not checked."""
        tau = broadcast_time(tau, x)
        return self._g2(tau) * score_value - self._rate(tau) * x

    def flow_drift(self, x: Tensor, score_value: Tensor, tau: TimeLike) -> Tensor:
        """``½ g(τ)² s - f(x, τ)`` (Song et al. 2021, eq. 13); tau is not checked."""
        tau = broadcast_time(tau, x)
        return (0.5 * self._g2(tau)) * score_value - self._rate(tau) * x

    def reverse(self, score: Score, T: float | None = None):
        """The reverse SDE :class:`diffsde.sde.ReverseSDE` of this process for ``score(x, τ)``."""
        from .sde import ReverseSDE
        return ReverseSDE(self, score, T)

    def probability_flow(self, score: Score, T: float | None = None):
        """The probability-flow ODE :class:`diffsde.sde.ProbabilityFlowODE` of this process."""
        from .sde import ProbabilityFlowODE
        return ProbabilityFlowODE(self, score, T)

    def exact_score(self, ou_exact):
        """An exact OU score (e.g. a :class:`~diffsde.scores.GaussianMixtureScore`) in this process's
        coordinates and clock: :class:`~diffsde.process_scores.ProcessExactScore`."""
        from .process_scores import ProcessExactScore
        return ProcessExactScore(self, ou_exact)

    def ou_score(self, score: Score):
        """A score ``s(x, τ)`` of this process as an OU score: :class:`~diffsde.process_scores.ScoreAsOU`."""
        from .process_scores import ScoreAsOU
        return ScoreAsOU(self, score)

    def _ou_time(self, tau):
        a, b = self._scales(tau)
        return _ops(a).log1p((b / a) ** 2)

    def _ou_scale(self, tau):
        a, b = self._scales(tau)
        return _ops(a).sqrt(a * a + b * b)

    # torchsde interface (forward time)
    def f(self, t: TimeLike, y: Tensor) -> Tensor:
        return self.drift(y, t)

    def g(self, t: TimeLike, y: Tensor) -> Tensor:
        coefficient = self.diffusion(t)
        if isinstance(coefficient, Tensor):
            coefficient = broadcast_time(coefficient, y)
        return coefficient * torch.ones_like(y)


class OU(_LinearProcess):
    """The forward Ornstein–Uhlenbeck process ``dx = -½ x dt + dW`` on t >= 0 (Song et al. 2021, eq. 11 with β ≡ 1): the
    canonical process, with t its own OU time (c = 1). It has no natural end (``T = None``).

    Knows nothing of step counts or final times. Times ``t`` may be a Python float, a
    0-d tensor or a (batch,) tensor of per-sample times; ``t < 0`` raises ValueError.
    Also a torchsde SDE (diagonal Itô noise) in forward time.
    """

    diffusion_constant = 1.0
    _time_name = "t"
    reverse_drift = staticmethod(reverse_sde_drift)
    flow_drift = staticmethod(probability_flow_drift)

    def drift(self, x: Tensor, t: TimeLike) -> Tensor:
        """Forward drift ``-½ x``; x of shape (batch, ...)."""
        return super().drift(x, t)

    def diffusion(self, t: TimeLike) -> Union[float, Tensor]:
        """Forward diffusion coefficient, 1 (a float, or ones shaped like a tensor ``t``)."""
        return super().diffusion(t)

    def marginal(self, x0: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of ``x_t | x0``, ``(e^{-t/2} x0, sqrt(1 - e^{-t}))``; x0 of
        shape (batch, ...), t a float, 0-d or (batch,) OU time(s) >= 0."""
        return super().marginal(x0, t)

    def sample_marginal(self, x0: Tensor, t: TimeLike, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε`` exactly (no discretization)."""
        return super().sample_marginal(x0, t, generator)

    def prior(self, shape: Shape, generator: torch.Generator | None = None, device: Device = None,
              dtype: torch.dtype | None = None) -> Tensor:
        """Draw from the stationary law N(0, I), the usual start of the reverse process."""
        return super().prior(shape, generator, device, dtype)

    def alpha_bar(self, t: TimeLike) -> Union[float, Tensor]:
        """``ᾱ(t) = e^{-t}``, the signal variance kept at time t (Song et al. 2021, appendix B)."""
        return exp_neg(self._time(t))

    def exact_score(self, ou_exact):
        """``ou_exact`` itself: the OU's coordinates are the OU's."""
        return ou_exact

    def ou_score(self, score: Score) -> Score:
        """``score`` itself: the OU's coordinates are the OU's."""
        return score

    def _rate(self, t):
        return -OU_RATE

    def _g2(self, t):
        return _full(1.0, t)

    def _scales(self, t):
        return sqrt(exp_neg(t)), sqrt(one_minus_exp_neg(t))

    def _ou_time(self, t):
        return t

    def _ou_scale(self, t):
        return _full(1.0, t)

    def __repr__(self) -> str:
        return "OU(dx = -x/2 dt + dW)"


class _LinearBeta(_LinearProcess):
    """β(s) = β_min + s (β_max - β_min) on s ∈ [0, 1] and its integral B(s) (Song et al. 2021)."""

    T = 1.0

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = check_real(beta_min, "beta_min", low=0.0, low_open=True)
        self.beta_max = check_real(beta_max, "beta_max", low=self.beta_min,
                                   interval=f"[beta_min, inf) = [{self.beta_min:g}, inf)")

    def _beta(self, s):
        return self.beta_min + s * (self.beta_max - self.beta_min)

    def _integral(self, s):
        """B(s) = ∫₀ˢ β = β_min s + ½ s² (β_max - β_min)."""
        return s * (self.beta_min + 0.5 * s * (self.beta_max - self.beta_min))

    def _inverse_integral(self, B):
        """s with B(s) = B: the positive root of ½Δ s² + β_min s - B, as 2B / (β_min + sqrt(β_min² + 2ΔB))
        (no cancellation, and Δ = β_max - β_min = 0 allowed)."""
        return 2 * B / (self.beta_min + _ops(B).sqrt(self.beta_min**2 + 2 * (self.beta_max - self.beta_min) * B))

    def _rate(self, s):
        return -0.5 * self._beta(s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"


class VP(_LinearBeta):
    """Song et al. 2021's variance-preserving SDE (§3.4), ``dx = -½ β(s) x ds + sqrt(β(s)) dW``,
    β(s) = β_min + s (β_max - β_min), s ∈ [0, T = 1] (DDPM's continuous limit).

    ``a = e^{-B/2}``, ``b = sqrt(1 - e^{-B})`` with B(s) = ∫₀ˢ β: the OU with the clock t = B(s)
    and c = 1. Prior N(0, I).

    Raises:
        ValueError: beta_min <= 0, beta_max < beta_min, or a non-finite parameter.
    """

    def _g2(self, s):
        return self._beta(s)

    def _scales(self, s):
        B = self._integral(s)
        ops = _ops(B)
        return ops.exp(-0.5 * B), ops.sqrt(-ops.expm1(-B))

    def _ou_time(self, s):
        return self._integral(s)

    def _process_time(self, t):
        return self._inverse_integral(t)

    def _ou_scale(self, s):
        return _full(1.0, s)


class SubVP(_LinearBeta):
    """Song et al. 2021's sub-VP SDE (§3.4), ``dx = -½ β(s) x ds + sqrt(β(s)(1 - e^{-2B(s)})) dW``,
    s ∈ [0, T = 1], with the VP's β(s) and B(s) = ∫₀ˢ β.

    ``a = e^{-B/2}``, ``b = 1 - e^{-B}`` (their appendix B): the variance stays below the VP's.
    OU map: ``t = log(1 + (1 - e^{-B})² e^B) = log(1 + 4 sinh²(B/2))``, inverted in closed form as
    ``B = 2 asinh(sqrt(e^t - 1) / 2)``. Prior N(0, I).

    Raises:
        ValueError: beta_min <= 0, beta_max < beta_min, or a non-finite parameter.
    """

    def _g2(self, s):
        return self._beta(s) * -_ops(s).expm1(-2 * self._integral(s))

    def _scales(self, s):
        B = self._integral(s)
        ops = _ops(B)
        return ops.exp(-0.5 * B), -ops.expm1(-B)

    def _process_time(self, t):
        ops = _ops(t)
        return self._inverse_integral(2 * ops.asinh(0.5 * ops.sqrt(ops.expm1(t))))


class VE(_LinearProcess):
    """Song et al. 2021's variance-exploding SDE (§3.4, SMLD's continuous limit),
    ``dx = σ(s) sqrt(2 log(σ_max/σ_min)) dW`` with σ(s) = σ_min (σ_max/σ_min)^s, s ∈ [0, T = 1].

    The exact transition kernel of this SDE is used (Song et al. 2021, appendix B:
    p_0s = N(x0, [σ(s)² - σ(0)²] I)): ``a = 1``, ``b = sqrt(σ(s)² - σ_min²)``, so s = 0 is the
    data itself. score_sde's reference code (``VESDE.marginal_prob``) uses std σ(s) instead,
    treating the data as already smoothed by σ_min; the difference is deliberate.
    OU map: ``t = log(1 + b²)``, ``c = sqrt(1 + b²)``. Prior N(0, σ_max² I).

    Raises:
        ValueError: sigma_min <= 0, sigma_max <= sigma_min, or a non-finite parameter.
    """

    T = 1.0

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = check_real(sigma_min, "sigma_min", low=0.0, low_open=True)
        self.sigma_max = check_real(sigma_max, "sigma_max", low=self.sigma_min, low_open=True,
                                    interval=f"(sigma_min, inf) = ({self.sigma_min:g}, inf)")
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def _b2(self, s):
        """b² = σ(s)² - σ_min² = σ_min² (e^{2 s log(σ_max/σ_min)} - 1), without cancellation."""
        return self.sigma_min**2 * _ops(s).expm1(2 * self._log_ratio * s)

    def _rate(self, s):
        return _full(0.0, s)

    def _g2(self, s):
        return self.sigma_min**2 * _ops(s).exp(2 * self._log_ratio * s) * (2 * self._log_ratio)

    def _scales(self, s):
        return _full(1.0, s), _ops(s).sqrt(self._b2(s))

    def _process_time(self, t):
        ops = _ops(t)
        return ops.log1p(ops.expm1(t) / self.sigma_min**2) / (2 * self._log_ratio)

    def __repr__(self) -> str:
        return f"VE(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"


class EDM(_LinearProcess):
    """Karras et al. 2022's process (EDM: σ(τ) = τ and scale s(τ) = 1, their Table 1):
    ``dx = sqrt(2τ) dW`` on τ ∈ [0, T = σ_max], so ``x_τ = x0 + τ ε`` (a = 1, b = τ).

    OU map: ``t = log(1 + τ²)``, ``c = sqrt(1 + τ²)``, τ = sqrt(e^t - 1). Prior N(0, σ_max² I).

    Raises:
        ValueError: sigma_max <= 0 or non-finite.
    """

    def __init__(self, sigma_max: float = 80.0):
        self.sigma_max = check_real(sigma_max, "sigma_max", low=0.0, low_open=True)
        self.T = self.prior_std = self.sigma_max

    def _rate(self, tau):
        return _full(0.0, tau)

    def _g2(self, tau):
        return 2 * tau

    def _scales(self, tau):
        return _full(1.0, tau), tau

    def _process_time(self, t):
        return _ops(t).sqrt(_ops(t).expm1(t))

    def __repr__(self) -> str:
        return f"EDM(sigma_max={self.sigma_max:g})"
