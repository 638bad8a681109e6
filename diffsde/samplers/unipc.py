"""UniPC: the unified predictor–corrector multistep solver of the probability-flow ODE.

Zhao, Bai, Rao, Zhou & Lu 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
of Diffusion Models" (NeurIPS), Sec. 3: the predictor UniP-p and the corrector UniC-p with
B(h) = e^h - 1 ("bh2", the default) or B(h) = h ("bh1"), in the data-prediction form (diffusers'
``predict_x0=True``) or the noise-prediction form, as diffusers' ``UniPCMultistepScheduler``
computes them (``multistep_uni_p_bh_update``, ``multistep_uni_c_bh_update``). The coordinates:
the OU state x, with the log-SNR λ(t) = log(α / σ) as the step variable. A step from s to t has
h = λ(t) - λ(s) and, with the data prediction m = x0(x, s) = (x + σ_s² s(x, s)) / α_s,

    x_t = (σ_t / σ_s) x_s - α_t (e^{-h} - 1) m_s - α_t B(-h) Σ_k ρ_k D_k,

D_k = (m_{s_k} - m_s) / r_k the divided differences of earlier outputs (r_k = (λ_{s_k} - λ_s) / h)
and ρ the solution of UniPC's order conditions (the matrix R of powers of r, the vector of
φ-functions); the noise form uses ε = -σ s with (α_t / α_s) x_s and σ_t in place of α_t.

One score evaluation per grid step, at the step's start. Step k receives x_k as the previous
step predicted it, evaluates m_k at it, corrects x_k with UniC (from x_{k-1}, the stored outputs and
m_k) and then predicts x_{k+1} with UniP from the corrected x_k, reusing m_k (evaluated at the
uncorrected x_k): diffusers' ``UniPCMultistepScheduler.step`` with ``disable_corrector=[]``. The
last step's prediction is returned as it is, uncorrected (as diffusers returns it; correcting it
would take one more evaluation); a returned path likewise holds the uncorrected predictions.
The orders follow diffusers: step k uses ``min(order, k + 1)`` (the warm-up) and, with
``lower_order_final``, at most ``n - k`` (so the last step is first order, the one before at most
second, ...; diffusers' UniPC applies this whatever n is). A step to t = 0 (λ = +inf) is always the
first-order (DDIM) update, written finitely: x_0 = m (data) or x_0 = α_0 (x - σ_s ε) / α_s (noise),
diffusers' ``final_sigmas_type="zero"`` (where, with ``lower_order_final=False``, noise prediction
or B(h) = h, diffusers' own update gives NaN).

The times are read from the grid (ᾱ = e^{-t} at each time): on a schedule's grid with
``exact_times=True``, and on a bare grid, these are the schedule's ᾱ_i.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

from torch import Tensor

from .._checks import check_bool, check_choice, check_int
from ..coordinates import log_snr, noise_std, signal_scale
from ..parametrizations import data_from_score, epsilon_from_score
from ..schedules import Interval
from .registry import Method, Sampler, _options, register

__all__ = ["UniPCState", "unipc_step", "unipc_coefficients"]

_DEFAULTS = {"order": 2, "corrector": True, "lower_order_final": True, "prediction": "data", "solver_type": "bh2"}


class UniPCState(NamedTuple):
    """UniPC's history between steps (immutable: a step returns a new one).

    Attributes:
        steps: the grid's number of steps n (``lower_order_final`` reads n - k).
        outputs: the model outputs (data or noise predictions, each (N, d)) of the last steps,
            oldest first, at most ``order`` of them.
        times: the OU times at which they were evaluated (the steps' starts).
        last: the state the last predictor started from (x_{k-1}, corrected), or None.
        last_order: that predictor's order, which is the next corrector's.
    """

    steps: int
    outputs: tuple = ()
    times: tuple = ()
    last: Tensor | None = None
    last_order: int = 0


def unipc_init(x: Tensor, grid) -> UniPCState:
    """The empty history of a run over ``grid``."""
    return UniPCState(steps=grid.n)


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting for UniPC's small (<= 3 x 3) order conditions."""
    n = len(rhs)
    rows = [list(row) + [value] for row, value in zip(matrix, rhs)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, n):
            factor = rows[r][col] / rows[col][col]
            rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col])]
    out = [0.0] * n
    for r in reversed(range(n)):
        out[r] = (rows[r][n] - sum(rows[r][c] * out[c] for c in range(r + 1, n))) / rows[r][r]
    return out


@functools.lru_cache(maxsize=4096)
def unipc_coefficients(t_s: float, t_t: float, earlier: tuple, order: int, corrector: bool, data: bool,
                       bh2: bool) -> tuple[float, tuple, float]:
    """UniP-p (``corrector=False``) or UniC-p (``corrector=True``) from time ``t_s`` to ``t_t`` as
    ``x_t = c_x x_s + Σ_j w_j m_j + w_t m_t``: m_0 the output at t_s, m_j (j >= 1) the outputs at the
    times ``earlier`` (most recent first, order - 1 of them), m_t the corrector's new output at t_t.

    The φ-vector b, the matrix R = (r_k^{i-1}) and ρ (ρ_p = 1/2 for UniP-2, ρ_c = 1/2 for UniC-1) are
    diffusers' ``multistep_uni_p_bh_update`` / ``multistep_uni_c_bh_update``, in float64.

    Returns:
        (c_x, (w_0, ..., w_{order-1}), w_t), w_t = 0 for the predictor.
    """
    alpha_s, sigma_s, alpha_t, sigma_t = signal_scale(t_s), noise_std(t_s), signal_scale(t_t), noise_std(t_t)
    if t_t == 0.0:  # λ = +inf: the first-order (DDIM) update, finite (the caller asks for no more)
        return (0.0, (1.0,), 0.0) if data else (alpha_t / alpha_s, (-alpha_t * sigma_s / alpha_s,), 0.0)
    lam_s = log_snr(t_s)
    h = log_snr(t_t) - lam_s
    hh = -h if data else h
    h_phi_1 = math.expm1(hh)
    b_h = math.expm1(hh) if bh2 else hh
    outer = alpha_t if data else sigma_t
    c_x = sigma_t / sigma_s if data else alpha_t / alpha_s
    rks = [(log_snr(t) - lam_s) / h for t in earlier]
    if corrector and order == 1:
        rhos = [0.5]
    elif not corrector and order <= 2:
        rhos = [0.5] * (order - 1)
    else:
        b, h_phi_k, factorial = [], h_phi_1 / hh - 1.0, 1
        for i in range(1, order + 1):
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial
        matrix = [[r ** i for r in rks + [1.0]] for i in range(order)]
        rhos = _solve(matrix, b) if corrector else _solve([row[:-1] for row in matrix[:-1]], b[:-1])
    scale = -outer * b_h
    weights = [-outer * h_phi_1]
    for rho, r in zip(rhos, rks):  # ρ_k D_k = ρ_k (m_k - m_0) / r_k
        weights.append(scale * rho / r)
        weights[0] -= scale * rho / r
    w_t = scale * rhos[-1] if corrector else 0.0
    weights[0] -= w_t
    return c_x, tuple(weights), w_t


def _combine(x: Tensor, c_x: float, outputs: list, weights: list) -> Tensor:
    out = x * c_x
    for m, w in zip(outputs, weights):
        out.add_(m, alpha=w)
    return out


def unipc_step(score, x: Tensor, interval: Interval, noise: Tensor, state: UniPCState, *, order: int,
               corrector: bool, lower_order_final: bool, prediction: str,
               solver_type: str) -> tuple[Tensor, UniPCState]:
    """One UniPC step (module docstring): evaluate the model output at x = x_k (t_from), correct x_k
    with UniC (k > 0, ``corrector``), predict x_{k+1} at t_to with UniP. x (N, d); no noise."""
    data, bh2, k = prediction == "data", solver_type == "bh2", interval.index
    t = interval.t_from
    value = score(x, t)
    model = data_from_score(value, x, t) if data else epsilon_from_score(value, noise_std(t))
    if corrector and state.last is not None:
        p = state.last_order
        c_x, weights, w_t = unipc_coefficients(state.times[-1], t, state.times[-2:-p - 1:-1] if p > 1 else (),
                                               p, True, data, bh2)
        x = _combine(state.last, c_x, [*state.outputs[:-p - 1:-1], model], [*weights, w_t])
    outputs, times = (*state.outputs, model)[-order:], (*state.times, t)[-order:]
    this_order = min(order, len(outputs), state.steps - k if lower_order_final else order)
    if interval.t_to == 0.0:
        this_order = 1
    c_x, weights, _ = unipc_coefficients(t, interval.t_to, times[-2:-this_order - 1:-1] if this_order > 1 else (),
                                         this_order, False, data, bh2)
    x_next = _combine(x, c_x, list(outputs[:-this_order - 1:-1]), list(weights))
    return x_next, UniPCState(state.steps, outputs, times, x, this_order)


def unipc_weak_order(order: int, corrector: bool, lower_order_final: bool) -> float:
    """The declared weak (= strong: deterministic) order of this implementation, diffusers' warm-up and
    final steps included.

    UniPC-p is of order p + 1 with the corrector (Zhao et al. 2023, Theorem 3.3) and UniP-p alone of
    order p, given starting values of that order. diffusers' warm-up starts with the
    first-order predictor (corrected by UniC-1: local error O(h³); alone: O(h²)), which caps the global
    order at 3 with the corrector and at 2 without; with ``lower_order_final`` the last step is the
    first-order predictor, uncorrected (local error O(h²)): order at most 2. So UniPC-3 is of order 3,
    not 4: its warm-up error is ∝ the data prediction's variation at T, small for T ≈ 10, where slopes
    near 4 show up to n ≈ 1000 (tests/test_unipc_sde.py measures both)."""
    cap = 2 if lower_order_final else (3 if corrector else 2)
    return float(min(order + 1 if corrector else order, cap))


def _unipc(**options: Any) -> Sampler:
    opts = _options(options, _DEFAULTS, "unipc")
    order = check_int(opts["order"], "order", 1, 3)
    corrector = check_bool(opts["corrector"], "corrector")
    lower_order_final = check_bool(opts["lower_order_final"], "lower_order_final")
    prediction = check_choice(opts["prediction"], "prediction", ("data", "noise"))
    solver_type = check_choice(opts["solver_type"], "solver_type", ("bh1", "bh2"))
    resolved = {"order": order, "corrector": corrector, "lower_order_final": lower_order_final,
                "prediction": prediction, "solver_type": solver_type}
    weak = unipc_weak_order(order, corrector, lower_order_final)
    step = functools.partial(unipc_step, **resolved)
    name = f"UniPC-{order}" if corrector else f"UniP-{order}"
    # The data prediction divides by α = sqrt(ᾱ), the noise form by α_s: ᾱ must not underflow.
    return Sampler("unipc", "unipc", resolved, weak_order=weak, strong_order=weak, noise_draws=0, score_evals=1,
                   evaluates_at_end=False, affine=True, grid_needs=("alpha_bars_normal",), coordinates="log_snr",
                   step=step, init=unipc_init,
                   description=f"{name} ({solver_type}, {prediction} prediction) on the probability-flow ODE "
                               f"(Zhao et al. 2023)")


register(Method("unipc", _unipc, "UniPC multistep predictor-corrector (Zhao et al. 2023)",
                variants={"unipc-3": {"order": 3}}, featured=()))
