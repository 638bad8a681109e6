"""How a run starts and ends, beyond the grid: the Tweedie start (``prior="tweedie"``) and the final
denoising step (``final="denoise"``), each one score evaluation."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from .._checks import check_choice
from ..coordinates import noise_std, signal_scale
from ..parametrizations import data_from_score
from ..schedules import TimeGrid

__all__ = ["FINALS", "PRIORS", "check_final", "tweedie_start", "denoise"]

Score = Callable[[Tensor, Any], Tensor]

#: How a run ends (``final=``): "stop" returns the state at the grid's t_min; "denoise" adds one
#: score evaluation and returns Tweedie's ``E[x0 | x_{t_min}] = (x + σ² s) / α`` at t_min (Efron 2011),
#: the last step of DDPM/DDIM samplers in practice (Ho et al. 2020's x0-prediction; the final
#: Euler step to σ = 0 of Karras et al. 2022, Algorithm 1).
FINALS = ("stop", "denoise")

#: Where a run starts (``prior=``): "normal" draws x_T ~ N(0, I); "exact" draws from the exact score's own
#: p_T; "tweedie" draws ε ~ N(0, I) and moves it onto p_T's mean with one score evaluation
#: (:func:`tweedie_start`).
PRIORS = ("normal", "exact", "tweedie")


def check_final(final: Any, grid: TimeGrid) -> str:
    """``final`` checked against :data:`FINALS`, and "denoise" refused on a grid ending at t = 0
    (there is nothing left to denoise, and an ε-based score is singular there)."""
    check_choice(final, "final", FINALS)
    if final == "denoise" and grid.t_min == 0.0:
        raise ValueError("final='denoise' takes one denoising step from the grid's t_min to t = 0, but this grid "
                         "already ends at t = 0; end it at t_min > 0 (e.g. t_min=1e-3), or use final='stop'")
    return final


def tweedie_start(score: Score, x: Tensor, T: float) -> Tensor:
    """``x_T = α_T x̂0(x) + σ_T x = (1 + σ_T) x + σ_T² s(x, T)``: a draw x ~ N(0, I), read as the noise of
    x_T, moved onto p_T's mean with Tweedie's ``x̂0(x) = (x + σ_T² s(x, T)) / α_T`` (Efron 2011): one
    score evaluation, (N, d) in and out.

    Why: p_T = law of ``α_T x0 + σ_T ε`` has mean ``α_T E[x0]`` and covariance ``σ_T² I + O(α_T²)``, so
    N(0, I) misses its mean by ``α_T E[x0]`` (W2 ≈ 0.009 at T = 10.12 for the benchmarks' Gaussian),
    a bias the probability-flow ODE carries to t = 0 unchanged in size. At large T,
    ``x̂0(x) = E[x0] + O(α_T)`` for every x, so the moved draw has mean ``α_T E[x0] + O(α_T²)`` and
    covariance ``σ_T² I + O(α_T²)``, as p_T: the mismatch drops from O(α_T) to O(α_T²) (W2 4.5e-5
    there). This start is diffsde's own (no peer has it); it is the DDIM update from T to T
    with the drawn ε in place of the predicted one (Song, Meng & Ermon 2021, eq. 12)."""
    return signal_scale(T) * data_from_score(score(x, T), x, T) + noise_std(T) * x


def denoise(score: Score, x: Tensor, t: float) -> Tensor:
    """Tweedie's ``E[x0 | x_t = x] = (x + σ² s(x, t)) / α`` (Efron 2011), one score evaluation: the
    ``final="denoise"`` step from the grid's t_min to t = 0."""
    return data_from_score(score(x, t), x, t)
