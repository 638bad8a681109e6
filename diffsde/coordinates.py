"""The coordinates samplers step in, as maps of the OU time t (Python floats, float64).

Under the OU, ``x_t = α x0 + σ ε`` with ``α(t) = e^{-t/2}`` and ``σ(t) = sqrt(1 - e^{-t})``
(Ho et al. 2020, eq. 4 in OU time). Three other clocks of the same process name the samplers
built on them:

* the log signal-to-noise ratio ``λ(t) = log(α / σ) = -½ log(e^t - 1)`` (Kingma et al. 2021,
  "Variational diffusion models"; the variable of DPM-Solver, Lu et al. 2022, Sec. 3.1), which
  decreases from +inf at t = 0; ``t = log(1 + e^{-2λ})``;
* the variance-exploding noise level ``σ_VE(t) = σ / α = sqrt(e^t - 1) = e^{-λ}`` of the scaled
  state ``y = x / α`` (Karras et al. 2022, "Elucidating the design space", Sec. 2 and Table 1:
  σ(t) = t, s(t) = 1; Song et al. 2021, DDIM Sec. 4.3 eq. 14), so ``t = log(1 + σ_VE²)``;
* t itself, the OU's own clock.

Every function takes and returns Python floats (a step's coefficients are computed once per
step in float64, whatever the state's dtype) and is accurate for t small and large: ``1 - e^{-t}``
is computed as ``-expm1(-t)``. :class:`diffsde.processes.EDM` maps tensors the same way.
"""

from __future__ import annotations

import math

__all__ = ["signal_scale", "noise_std", "log_snr", "time_from_log_snr", "ve_sigma", "time_from_ve_sigma"]


def signal_scale(t: float) -> float:
    """``α(t) = e^{-t/2}``."""
    return math.exp(-0.5 * t)


def noise_std(t: float) -> float:
    """``σ(t) = sqrt(1 - e^{-t})`` (0 at t = 0)."""
    return math.sqrt(-math.expm1(-t))


def log_snr(t: float) -> float:
    """``λ(t) = log(α / σ) = -t/2 - ½ log(1 - e^{-t})``; +inf at t = 0."""
    if t == 0.0:
        return math.inf
    return -0.5 * t - 0.5 * math.log(-math.expm1(-t))


def time_from_log_snr(lam: float) -> float:
    """The OU time with log-SNR ``lam``: ``t = log(1 + e^{-2λ})`` (0 for λ = +inf)."""
    return math.log1p(math.exp(-2.0 * lam))


def ve_sigma(t: float) -> float:
    """``σ_VE(t) = sqrt(e^t - 1) = σ / α``, the noise level of ``y = x / α`` (Karras et al. 2022)."""
    return math.sqrt(math.expm1(t))


def time_from_ve_sigma(sigma: float) -> float:
    """The OU time with VE noise level ``sigma``: ``t = log(1 + σ²)``."""
    return math.log1p(sigma * sigma)
