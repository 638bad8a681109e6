"""Adaptive and fixed-step ODE integration on the state's own device, by torchdiffeq's ``odeint``
(Chen et al. 2018, "Neural Ordinary Differential Equations"; the adaptive Runge–Kutta pairs of
Dormand & Prince 1980 and Bogacki & Shampine 1989).

One function, :func:`solve`, used by the likelihood (:mod:`diffsde.likelihood`) and by the
probability-flow sampler (``sample(method="ode", solver="dopri5")``): the state never leaves its
device (scipy's ``solve_ivp`` copies it to host memory at every evaluation), the step-size
control reads one scalar per step, and the evaluations are counted.

The error is controlled per element (the infinity norm of ``error / (atol + rtol·|y|)``, not
torchdiffeq's default RMS over the whole state): with a batch in one state, no sample's error
hides behind the others' (an RMS over N samples lets one sample's error be sqrt(N) times the
tolerance).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from ._checks import check_choice, check_real

__all__ = ["ADAPTIVE_SOLVERS", "FIXED_SOLVERS", "ODE_SOLVERS", "solve", "check_tolerances", "ODEFailure"]

State = Union[Tensor, tuple]

ADAPTIVE_SOLVERS = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "adaptive_heun": 2, "fehlberg2": 2}
"""torchdiffeq's embedded Runge–Kutta pairs, with the order of the solution they advance."""

FIXED_SOLVERS = {"euler": 1, "midpoint": 2, "heun3": 3, "rk4": 4}
"""torchdiffeq's fixed-grid Runge–Kutta methods (``rk4`` is its 3/8-rule variant), with their order."""

ODE_SOLVERS = {**ADAPTIVE_SOLVERS, **FIXED_SOLVERS}


class ODEFailure(RuntimeError):
    """The integrator gave up (its step underflowed or it exceeded its step budget); ``non_finite``
    says whether the velocity was NaN or infinite somewhere along the way, and ``non_finite_at`` the
    first such time in the direction of integration (None when it never was)."""

    def __init__(self, message: str, non_finite: bool, non_finite_at: float | None = None):
        super().__init__(message)
        self.non_finite = non_finite
        self.non_finite_at = non_finite_at


def check_tolerances(rtol: float, atol: float) -> tuple[float, float]:
    """rtol and atol as floats in (0, 1); anything else raises ValueError naming the argument."""
    return (check_real(rtol, "rtol", 0, 1, low_open=True, high_open=True),
            check_real(atol, "atol", 0, 1, low_open=True, high_open=True))


def _infinity_norm(state: Union[Tensor, Sequence[Tensor]]) -> Tensor:
    if isinstance(state, Tensor):
        return state.abs().amax()
    return torch.stack([part.abs().amax() for part in state]).amax()


def solve(velocity: Callable[[float, State], State], state: State, times: Sequence[float], *, solver: str = "dopri5",
          rtol: float = 1e-6, atol: float = 1e-6, max_steps: int = 100_000) -> tuple[State, int]:
    """Integrate ``d state / dt = velocity(t, state)`` through ``times`` (increasing or decreasing).

    Args:
        velocity: ``velocity(t, state)`` with t a Python float; returns a state of the same structure.
        state: a tensor, or a tuple of tensors of one dtype, on one device.
        times: at least two distinct times, monotone. An adaptive solver reports the state at
            each; a fixed-step solver steps from each time to the next.
        solver: a name of :data:`ODE_SOLVERS`.
        rtol: the adaptive solvers' relative tolerance per element (ignored by the fixed ones).
        atol: their absolute tolerance per element.
        max_steps: the adaptive solvers' step budget.
    Returns:
        (states at every time, stacked along a new first axis (a tuple of them for a tuple
        state), the number of velocity evaluations).
    Raises:
        ODEFailure: the adaptive step underflowed or the budget ran out.
    """
    from torchdiffeq import odeint

    check_choice(solver, "solver", ODE_SOLVERS)
    first = state[0] if isinstance(state, tuple) else state
    grid = torch.tensor([float(t) for t in times], dtype=torch.float64, device=first.device)
    if first.dtype != torch.float64:
        grid = grid.to(first.dtype)
    count = {"nfe": 0}
    start, direction = float(times[0]), 1.0 if float(times[-1]) > float(times[0]) else -1.0
    # How far along the integration the velocity was first non-finite (inf: never), on the device
    # and read only if the solver fails, so watching costs no synchronisation.
    first_non_finite = torch.full((), math.inf, dtype=torch.float64, device=first.device)

    def func(t: Tensor, y: State) -> State:
        nonlocal first_non_finite
        count["nfe"] += 1
        time = float(t)
        out = velocity(time, y)
        parts = out if isinstance(out, tuple) else (out,)
        finite = torch.stack([torch.isfinite(part).all() for part in parts]).all()
        first_non_finite = torch.where(finite, first_non_finite, first_non_finite.clamp(max=direction * (time - start)))
        return out

    options = None
    if solver in ADAPTIVE_SOLVERS:
        # step_t: the last step lands on the end time (otherwise torchdiffeq steps past it, evaluating
        # the velocity beyond the interval, and interpolates back).
        options = {"norm": _infinity_norm, "max_num_steps": max_steps, "dtype": torch.float64, "step_t": grid[-1:]}
    try:
        states = odeint(func, state, grid, rtol=rtol, atol=atol, method=solver, options=options)
    except AssertionError as err:  # torchdiffeq asserts: "underflow in dt", "max_num_steps exceeded", finite state
        offset = float(first_non_finite)
        non_finite_at = None if math.isinf(offset) else start + direction * offset
        raise ODEFailure(f"{solver} stopped ({err})", non_finite_at is not None, non_finite_at) from err
    return states, count["nfe"]
