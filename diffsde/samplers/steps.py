"""Pure steps of the fixed-grid samplers, all in OU coordinates (forward OU time t, ᾱ = e^{-t}).

A step is a pure function ``step(score, x, interval, noise, state) -> (x_next, state_next)``:
``x`` is the (N, d) state at forward time ``interval.t_from``, ``noise`` the (m, N, d) standard
normal draws of this step (m declared by the method; empty for deterministic methods) and
``state`` the solver state carried between steps (None for one-step methods; multistep
methods keep past score evaluations there). Nothing else is read: the same function samples,
propagates probe inputs for :func:`diffsde.exact_output_law`, and replays a window to pin a
non-finite value to its step.

The drift formulas come from the one place that owns them (:mod:`diffsde.sde`: the reverse
drift ``½ x + s`` and the probability-flow velocity ``½ x + ½ s`` of the OU); the VP and DDPM
steps share one mean, ``(x + β s) / sqrt(1 - β)`` (DDPM's ε-form mean of :mod:`diffsde.ddpm` with
``ε = -sqrt(1 - ᾱ) s``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Union

import torch
from torch import Tensor

from ..schedules import Interval
from ..sde import probability_flow_drift

__all__ = ["vp_step", "ddpm_step", "em_step", "ode_euler_step", "ode_heun_step", "pc_step", "langevin_step",
           "snr_step_size"]

Score = Callable[[Tensor, Any], Tensor]
Step = Callable[[Score, Tensor, Interval, Tensor, Any], "tuple[Tensor, Any]"]


def vp_step(score: Score, x: Tensor, interval: Interval, noise: Tensor, state: Any = None) -> tuple[Tensor, Any]:
    """The discrete VP backward step ``x <- (x + s(x, t) β) / sqrt(1 - β) + sqrt(β) z`` at the step's
    larger time t: Song et al. 2021's ancestral sampler of the VP SDE (Appendix E), with β the
    step's VP β (a schedule's β_i; Δt on a bare grid). One noise draw."""
    beta = interval.beta
    return _ancestral_mean(score, x, interval.t_from, beta).add_(noise[0], alpha=math.sqrt(beta)), state


def _ancestral_mean(score: Score, x: Tensor, t: float, beta: float) -> Tensor:
    """``(x + β s(x, t)) / sqrt(1 - β)``, the mean of the VP and DDPM backward steps, as one new
    tensor updated in place (2 passes over x; the caller adds its noise in place: 3 in all)."""
    scale = 1.0 / math.sqrt(1.0 - beta)
    out = x * scale
    return out.add_(score(x, t), alpha=beta * scale)


def ddpm_step(score: Score, x: Tensor, interval: Interval, noise: Tensor, state: Any = None, *,
              variance: str = "beta") -> tuple[Tensor, Any]:
    """Ho et al. 2020's ancestral step (eqs. 6–9 and Algorithm 2), driven by a score:
    ``ε = -sqrt(1 - ᾱ_from) s``, ``x <- (x - β / sqrt(1 - ᾱ_from) ε) / sqrt(α) + σ z`` with
    ``α = ᾱ_from / ᾱ_to``, ``β = 1 - α`` and ``σ² = β`` or ``β̃ = (1 - ᾱ_to) / (1 - ᾱ_from) β``
    (eq. 7); no noise at the last step. One noise draw (unused at the last step)."""
    alpha_bar_from, alpha_bar_to = interval.alpha_bar_from, interval.alpha_bar_to
    beta = 1.0 - alpha_bar_from / alpha_bar_to
    # With ε = -sqrt(1 - ᾱ_from) s, eq. 11's mean (x - β / sqrt(1 - ᾱ_from) ε) / sqrt(α) is the VP
    # step's (x + β s) / sqrt(1 - β) (:func:`diffsde.ddpm.reverse_mean` keeps the ε form; they agree
    # to rounding): 3 passes over x instead of 6.
    mean = _ancestral_mean(score, x, interval.t_from, beta)
    if interval.is_last:
        return mean, state
    variance_value = beta if variance == "beta" else (1.0 - alpha_bar_to) / (1.0 - alpha_bar_from) * beta
    return mean.add_(noise[0], alpha=math.sqrt(variance_value)), state


def em_step(score: Score, x: Tensor, interval: Interval, noise: Tensor, state: Any = None) -> tuple[Tensor, Any]:
    """Euler–Maruyama on the reverse SDE in backward time (Anderson 1982; Song et al. 2021, eq. 6
    with f = -½ x, g = 1): ``x <- x + h (½ x + s(x, t)) + sqrt(h) z``. One noise draw."""
    h = interval.h
    # x + h (½ x + s) + sqrt(h) z as one new tensor and in-place updates on it (3 passes, not 6).
    out = x * (1.0 + 0.5 * h)
    out.add_(score(x, interval.t_from), alpha=h)
    return out.add_(noise[0], alpha=math.sqrt(h)), state


def ode_euler_step(score: Score, x: Tensor, interval: Interval, noise: Tensor,
                   state: Any = None) -> tuple[Tensor, Any]:
    """Euler on the probability-flow ODE (Song et al. 2021, eq. 13 with f = -½ x, g = 1):
    ``x <- x + h (½ x + ½ s(x, t))``. Deterministic."""
    return x + interval.h * probability_flow_drift(x, score(x, interval.t_from)), state


def ode_heun_step(score: Score, x: Tensor, interval: Interval, noise: Tensor,
                  state: Any = None) -> tuple[Tensor, Any]:
    """Heun (explicit trapezoid; Karras et al. 2022, Algorithm 1) on the probability-flow ODE
    (Song et al. 2021, eq. 13): ``x̃ = x + h v(x, t)``, ``x <- x + ½ h (v(x, t) + v(x̃, t - h))``
    with ``v = ½ x + ½ s``; evaluates the score at both ends of the step. Deterministic."""
    h = interval.h
    velocity = probability_flow_drift(x, score(x, interval.t_from))
    predicted = x + h * velocity
    velocity_end = probability_flow_drift(predicted, score(predicted, interval.t_to))
    return x + (0.5 * h) * (velocity + velocity_end), state


def langevin_step(x: Tensor, score_value: Tensor, step_size: Union[float, Tensor], noise: Tensor) -> Tensor:
    """One unadjusted Langevin step for p_t at fixed t: ``x <- x + ε s + sqrt(2 ε) z``, the
    Euler–Maruyama step of ``dx = s dτ + sqrt(2) dW``, which leaves p_t invariant
    (Song et al. 2021, Algorithm 5's corrector)."""
    root = math.sqrt(2.0 * step_size) if isinstance(step_size, float) else torch.sqrt(2.0 * step_size)
    return x + step_size * score_value + root * noise


def snr_step_size(score_value: Tensor, noise: Tensor, snr: float, alpha: float) -> Tensor:
    """Song et al. 2021 (Algorithm 5, VP): ``ε = 2 α (r ‖z‖ / ‖s‖)²`` with ‖·‖ the batch mean of
    per-sample norms; a 0-d tensor, computed without leaving the device.

    Where the score is zero everywhere (e.g. a freshly initialised ε-network) the rule would
    give an infinite step; there is nothing to correct toward, so the step size is 0 instead."""
    grad_norm = torch.linalg.vector_norm(score_value.reshape(score_value.shape[0], -1), dim=-1).mean()
    noise_norm = torch.linalg.vector_norm(noise.reshape(noise.shape[0], -1), dim=-1).mean()
    ratio = torch.where(grad_norm > 0, snr * noise_norm / grad_norm, torch.zeros_like(grad_norm))
    return 2.0 * alpha * ratio ** 2


def pc_step(score: Score, x: Tensor, interval: Interval, noise: Tensor, state: Any = None, *,
            predictor: Step, predictor_draws: int, corrector_steps: int, snr: float,
            step_size: float | None) -> tuple[Tensor, Any]:
    """Predictor–corrector (Song et al. 2021, Algorithm 1 with the predictor first): one predictor
    step to ``t_to``, then ``corrector_steps`` Langevin steps for p_{t_to}, each with step size
    ``step_size`` or Song's snr rule ``ε = 2 α (r ‖z‖ / ‖s‖)²`` with ``α = ᾱ_from / ᾱ_to = 1 - β``.
    The predictor takes the first ``predictor_draws`` noise draws, each corrector step one more."""
    x, state = predictor(score, x, interval, noise[:predictor_draws], state)
    # Only the snr rule reads α: no other pc divides by ᾱ_to (the registry declares the need so).
    alpha = interval.alpha_bar_from / interval.alpha_bar_to if step_size is None and corrector_steps else None
    for j in range(corrector_steps):
        z = noise[predictor_draws + j]
        score_value = score(x, interval.t_to)
        epsilon = step_size if step_size is not None else snr_step_size(score_value, z, snr, alpha)
        x = langevin_step(x, score_value, epsilon, z)
    return x, state
