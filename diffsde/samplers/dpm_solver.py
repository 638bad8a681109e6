"""DPM-Solver: exponential integrators of the probability-flow ODE in the log-SNR λ.

In λ = log(α / σ) (:func:`diffsde.coordinates.log_snr`, increasing as t decreases) the
probability-flow ODE has an exactly integrable linear part; a step from s to t with
``h = λ_t - λ_s > 0`` integrates it exactly and approximates the rest with a Taylor expansion
of the network's prediction in λ:

* ``prediction="noise"`` (DPM-Solver, Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for
  Diffusion Probabilistic Model Sampling in Around 10 Steps", Sec. 3 and Algorithms 1-2):
  ε = -σ s, ``x_t = (α_t/α_s) x - σ_t (e^h - 1) ε_s + ...``;
* ``prediction="data"`` (DPM-Solver++, Lu et al. 2023, "DPM-Solver++: Fast Solver for Guided
  Sampling of Diffusion Probabilistic Models", Sec. 4 and Algorithms 1-2):
  x0 = (x + σ² s) / α, ``x_t = (σ_t/σ_s) x - α_t (e^{-h} - 1) x0_s + ...``.

Both are written once with ``z = h`` (noise) or ``z = -h`` (data), ``K = σ_t`` or ``α_t``,
``g1(z) = e^z - 1``, ``g2(z) = (e^z - 1 - z) / z``, ``g3(z) = (e^z - 1 - z - z²/2) / z²``
(series for small |z|). Order 1 is DDIM(η=0) exactly (Lu et al. 2022, Sec. 4.1).

* ``multistep=True`` (the default; Lu et al. 2023, Sec. 4 and Algorithm 2, and its third-order
  extension): one score evaluation per step; past predictions and their λ's are carried in the
  solver state. Order 2 is the "midpoint" form ``x_t = c x - K g1(z) (D0 + ½ D1)``, Lu et al.
  2023's Algorithm 2 and diffusers' default ``solver_type="midpoint"``. Order 3 is the
  published third-order update, ``x_t = c x - K (g1 D0 + g2 D1 + g3 D2)`` with backward
  differences D1 ≈ h x0' and ``D2 = (D1_0 - D1_1) / (r0 + r1)`` — Lu et al. 2023's multistep
  third-order formula as their reference code and diffusers' ``multistep_dpm_solver_third_order_update``
  implement it (``third_order="published"``, the default, equal to diffusers to round-off). That
  D2 is ≈ h² x0'' / 2, half the Taylor term g3 multiplies, which leaves an O(h³) local error: the
  published 3M converges with order 2 (measured on exact laws: 2.03 data, 1.99 noise), and this
  is what it declares. ``third_order="taylor"`` (a deliberate deviation, not in any peer) uses
  ``D2 = 2 (D1_0 - D1_1) / (r0 + r1) ≈ h² x0''`` and converges with order 3 (3.09, 3.11).
  Warm-up as diffusers' DPMSolverMultistepScheduler: step k (from 0) uses order
  min(order, k + 1), so a grid with fewer steps than the order is valid (it never reaches the
  full order). The first-order first step leaves an O(h²) error scaled by the prediction's
  λ-derivative at T, a power of α_T = e^{-T/2}: negligible from T ≈ 10 (where p_T ≈ N(0, I)),
  but on a grid starting at a small T (e.g. 3) order 3 multistep converges with order 2.
  With ``lower_order_final`` and a grid of fewer than 15 steps, the last step is first order
  and the one before at most second order.
* ``multistep=False``: each grid step is one singlestep update with ``order`` evaluations at
  intermediate λ's: order 2 is Lu et al. 2022's Algorithm 1 (r1 = ½; DPM-Solver++(2S) for data),
  order 3 their Algorithm 2 (r1 = ⅓, r2 = ⅔; its data form from the authors' reference code).

A step to t = 0 (λ = +inf, σ = 0) is always first order, written to stay finite (data:
``x_t = α_t x0``), as diffusers' ``final_sigmas_type="zero"``; singlestep then evaluates once.
The score is never evaluated at t = 0.

The steps read the interval's *times*: α, σ, λ at ``t_from``/``t_to`` from ᾱ = e^{-t}, the ᾱ at
which ``score(x, t)`` is ∇ log p_t; on a bare grid and a schedule's grid with
``exact_times=True`` that is the schedule's own ᾱ_i. Shapes: x (N, d); no noise.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

from torch import Tensor

from .._checks import ArgumentTypeError, check_bool, check_choice, check_int
from ..coordinates import log_snr, noise_std, signal_scale, time_from_log_snr
from ..parametrizations import data_from_score, epsilon_from_score
from ..schedules import Interval
from .registry import Method, Sampler, _options, register

__all__ = ["dpm_solver_step", "DPMHistory"]

PREDICTIONS = ("data", "noise")
#: The third-order multistep update: Lu et al. 2023's as published (diffusers), or the full Taylor term.
THIRD_ORDERS = ("published", "taylor")
#: diffusers' DPMSolverMultistepScheduler lowers the final orders on grids with fewer steps.
FEW_STEPS = 15


class DPMHistory(NamedTuple):
    """A multistep solver's state: the grid's step count and the last predictions, oldest first."""

    n_steps: int | None
    lambdas: tuple[float, ...] = ()
    outputs: tuple[Tensor, ...] = ()


def _init(x: Tensor, grid) -> DPMHistory:
    return DPMHistory(grid.n)


def _g(k: int, z: float) -> float:
    """``g1 = e^z - 1``, ``g2 = (e^z - 1 - z)/z``, ``g3 = (e^z - 1 - z - z²/2)/z²``; for |z| < ½
    the series ``g_k(z) = Σ_{m>=1} z^m / (m + k - 1)!`` (k >= 2) avoids the cancellation."""
    if k == 1:
        return math.expm1(z)
    if abs(z) >= 0.5:
        return (math.expm1(z) - z) / z if k == 2 else (math.expm1(z) - z - 0.5 * z * z) / (z * z)
    total, term = 0.0, 1.0 / math.factorial(k - 1)
    for m in range(1, 25):
        term *= z / (m + k - 1)
        total += term
    return total


class _Step(NamedTuple):
    """One exponential-integrator step s -> t in a prediction's form: x_t = c x - K (...)."""

    c: float    # σ_t/σ_s (data) or α_t/α_s (noise)
    K: float    # α_t (data) or σ_t (noise)
    z: float    # -h (data) or h (noise)
    Kg1: float  # K g1(z), finite at t = 0


def _frame(t_s: float, t_t: float, prediction: str) -> _Step:
    alpha_s, sigma_s = signal_scale(t_s), noise_std(t_s)
    alpha_t, sigma_t = signal_scale(t_t), noise_std(t_t)
    h = log_snr(t_t) - log_snr(t_s)                     # +inf at t_t = 0
    if prediction == "data":
        return _Step(sigma_t / sigma_s, alpha_t, -h, alpha_t * math.expm1(-h))
    # σ_t (e^h - 1) = (α_t σ_s / α_s)(1 - e^{-h}): finite for h = inf (σ_t = 0).
    ratio = math.exp(0.5 * (t_s - t_t))
    return _Step(ratio, sigma_t, h, -ratio * sigma_s * math.expm1(-h))


def _predict(score, x: Tensor, t: float, prediction: str) -> Tensor:
    """x0 = (x + σ² s) / α (Tweedie) or ε = -σ s at time t (:mod:`diffsde.parametrizations`)."""
    s = score(x, t)
    return epsilon_from_score(s, noise_std(t)) if prediction == "noise" else data_from_score(s, x, t)


def _multistep(score, x: Tensor, interval: Interval, state: DPMHistory | None, order: int,
               prediction: str, lower_order_final: bool, third_order: str) -> tuple[Tensor, DPMHistory]:
    history = state if state is not None else DPMHistory(None)
    t_s, t_t = interval.t_from, interval.t_to
    m0, lam_s = _predict(score, x, t_s, prediction), log_snr(t_s)
    k = min(order, len(history.lambdas) + 1)             # warm-up: order min(order, step + 1)
    few = lower_order_final and history.n_steps is not None and history.n_steps < FEW_STEPS
    if t_t == 0.0 or (few and interval.is_last):
        k = 1
    elif few and interval.index == history.n_steps - 2:
        k = min(k, 2)
    f = _frame(t_s, t_t, prediction)
    if k == 1:
        x_next = f.c * x - f.Kg1 * m0
    else:
        h = -f.z if prediction == "data" else f.z
        m1 = history.outputs[-1]
        r0 = (lam_s - history.lambdas[-1]) / h
        d1_0 = (m0 - m1) / r0
        if k == 2:                                         # midpoint (diffusers' default)
            x_next = f.c * x - f.Kg1 * (m0 + 0.5 * d1_0)
        else:
            m2 = history.outputs[-2]
            r1 = (history.lambdas[-1] - history.lambdas[-2]) / h
            d1_1 = (m1 - m2) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)    # ≈ h x0'
            # published: ≈ h² x0'' / 2 (Lu et al. 2023; diffusers); taylor: ≈ h² x0''
            d2 = (d1_0 - d1_1) * ((1.0 if third_order == "published" else 2.0) / (r0 + r1))
            x_next = f.c * x - f.Kg1 * m0 - (f.K * _g(2, f.z)) * d1 - (f.K * _g(3, f.z)) * d2
    keep = order - 1
    lambdas = (history.lambdas + (lam_s,))[-keep:] if keep else ()
    outputs = (history.outputs + (m0,))[-keep:] if keep else ()
    return x_next, DPMHistory(history.n_steps, lambdas, outputs)


def _singlestep(score, x: Tensor, interval: Interval, order: int, prediction: str) -> Tensor:
    t_s, t_t = interval.t_from, interval.t_to
    m_s = _predict(score, x, t_s, prediction)
    f = _frame(t_s, t_t, prediction)
    if order == 1 or t_t == 0.0:
        return f.c * x - f.Kg1 * m_s
    lam_s = log_snr(t_s)
    h = log_snr(t_t) - lam_s
    r1 = 0.5 if order == 2 else 1.0 / 3.0
    t_1 = time_from_log_snr(lam_s + r1 * h)
    f1 = _frame(t_s, t_1, prediction)
    m_1 = _predict(score, f1.c * x - f1.Kg1 * m_s, t_1, prediction)
    if order == 2:                                          # Lu et al. 2022, Algorithm 1
        return f.c * x - f.Kg1 * m_s - (0.5 / r1) * f.Kg1 * (m_1 - m_s)
    r2 = 2.0 / 3.0                                          # Lu et al. 2022, Algorithm 2
    t_2 = time_from_log_snr(lam_s + r2 * h)
    f2 = _frame(t_s, t_2, prediction)
    u_2 = f2.c * x - f2.Kg1 * m_s - ((r2 / r1) * f2.K * _g(2, f2.z)) * (m_1 - m_s)
    m_2 = _predict(score, u_2, t_2, prediction)
    return f.c * x - f.Kg1 * m_s - ((1.0 / r2) * f.K * _g(2, f.z)) * (m_2 - m_s)


def dpm_solver_step(score, x: Tensor, interval: Interval, noise: Tensor, state: Any = None, *, order: int = 2,
                    multistep: bool = True, prediction: str = "data", lower_order_final: bool = True,
                    third_order: str = "published") -> tuple[Tensor, Any]:
    """One DPM-Solver step from ``interval.t_from`` to ``interval.t_to`` (see the module's
    docstring); ``state`` is the multistep :class:`DPMHistory` (None for singlestep)."""
    if multistep:
        return _multistep(score, x, interval, state, order, prediction, lower_order_final, third_order)
    return _singlestep(score, x, interval, order, prediction), state


def _label(order: int, multistep: bool, prediction: str) -> str:
    return f"dpm-solver{'++' if prediction == 'data' else ''}({order}{'M' if multistep else 'S'})"


def _dpm_solver(**options: Any) -> Sampler:
    opts = _options(options, {"order": 2, "multistep": True, "prediction": "data", "lower_order_final": True,
                              "third_order": "published"}, "dpm-solver")
    order = check_int(opts["order"], "order", 1, 3)
    multistep = check_bool(opts["multistep"], "multistep")
    prediction = check_choice(opts["prediction"], "prediction", PREDICTIONS)
    lower_order_final = check_bool(opts["lower_order_final"], "lower_order_final")
    third_order = check_choice(opts["third_order"], "third_order", THIRD_ORDERS)
    if not multistep and "lower_order_final" in options:
        raise ArgumentTypeError("lower_order_final applies only with multistep=True (a singlestep update "
                                "needs no history, so its order never drops before the end)")
    if "third_order" in options and not (multistep and order == 3):
        raise ArgumentTypeError("third_order applies only with order=3 and multistep=True (the third-order "
                                "multistep update)")
    acting = {"order": order, "multistep": multistep, "prediction": prediction}
    if multistep:
        acting["lower_order_final"] = lower_order_final
    if multistep and order == 3:
        acting["third_order"] = third_order
    step = functools.partial(dpm_solver_step, order=order, multistep=multistep, prediction=prediction,
                             lower_order_final=lower_order_final, third_order=third_order)
    kind = "DPM-Solver++ (data prediction)" if prediction == "data" else "DPM-Solver (noise prediction)"
    # The published third-order multistep update converges with order 2 (module docstring).
    declared = 2.0 if (multistep and order == 3 and third_order == "published") else float(order)
    # Deterministic: the path error is the error, so strong = weak (checked on exact laws).
    return Sampler("dpm-solver", _label(order, multistep, prediction), acting, coordinates="log_snr",
                   weak_order=declared,
                   strong_order=declared, noise_draws=0, score_evals=1 if multistep else order,
                   evaluates_at_end=False, grid_needs=("alpha_bars_normal",), step=step,
                   init=_init if multistep else None,
                   description=f"{kind}, order {order}{' (' + third_order + ')' if 'third_order' in acting else ''}, "
                               f"{'multistep' if multistep else 'singlestep'}, in log-SNR")


register(Method("dpm-solver", _dpm_solver, "DPM-Solver(++) exponential integrators in log-SNR",
                variants={"dpm-solver-2m": {"order": 2}, "dpm-solver-3m": {"order": 3},
                          "dpm-solver-3m-taylor": {"order": 3, "third_order": "taylor"},
                          "dpm-solver-2s": {"order": 2, "multistep": False},
                          "dpm-solver-3s": {"order": 3, "multistep": False}}))
