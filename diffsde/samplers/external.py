"""Runners whose inner loop is not ours, all in backward time t' = T - t: ``torchsde.sdeint`` on the
reverse SDE, and two adaptive backends for the probability-flow ODE: torchdiffeq's embedded
Runge–Kutta pairs through :func:`diffsde.odeint.solve` (``solver="dopri5"``, ...; on the state's
device and dtype, error controlled per element) and scipy's ``solve_ivp`` (``solver="RK45"``, ...;
on the host in float64, the state copied there at every evaluation, one error norm over the batch).

A runner has the step loop's signature, ``runner(sampler, score, grid, x, noise, return_path,
progress, check_finite, check_every) -> (x, path, nfe)``: x (N, ...) at forward time grid.T in,
x at grid.t_min out (same shape, device and dtype), the path (n + 1, N, ...) at the grid's times
(from T down to t_min) or None, and the score evaluations made. :func:`diffsde.sample` and
:func:`diffsde.exact_output_law` call it the same way (:mod:`diffsde.samplers.loop`).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..odeint import ADAPTIVE_SOLVERS, ODEFailure, solve
from ..schedules import TimeGrid
from ..sde import ProbabilityFlowODE, ReverseSDE
from .errors import NonFiniteSampleError
from .progress import progress_bar

__all__ = ["TORCHSDE_SOLVERS", "ODE_ADAPTIVE", "ODE_ADAPTIVE_TORCHDIFFEQ", "run_torchsde", "run_ode_adaptive",
           "run_ode_torchdiffeq"]


class TorchsdeSolver(NamedTuple):
    """How diffsde hands a torchsde method its SDE: the SDE type it needs, the drift
    evaluations per step (None: reversible Heun reuses one across steps of one sdeint call)
    and the Lévy area its Brownian motion must provide ("none" or "space-time")."""

    sde_type: str
    score_evals: int | None
    levy: str = "none"

    @property
    def noise_draws(self) -> int:
        """Standard normal draws per step: the increment, plus the space-time Lévy area."""
        return 2 if self.levy == "space-time" else 1


# Additive noise makes the Itô and Stratonovich readings of the reverse SDE agree, so every
# torchsde method solves the same equation.
TORCHSDE_SOLVERS = {
    "euler": TorchsdeSolver("ito", 1), "milstein": TorchsdeSolver("ito", 1),
    "srk": TorchsdeSolver("ito", 2, "space-time"), "midpoint": TorchsdeSolver("stratonovich", 2),
    "heun": TorchsdeSolver("stratonovich", 2), "reversible_heun": TorchsdeSolver("stratonovich", None),
}
#: scipy ``solve_ivp``'s methods for the probability-flow ODE (on the host).
ODE_ADAPTIVE = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
#: torchdiffeq's adaptive pairs for the probability-flow ODE (on the state's device).
ODE_ADAPTIVE_TORCHDIFFEQ = tuple(ADAPTIVE_SOLVERS)


def check_finite_output(sampler, x: Tensor, grid: TimeGrid, check_finite: bool) -> None:
    """Refuse a non-finite end state of an external runner (whose steps we cannot replay)."""
    if check_finite and not bool(torch.isfinite(x).all()):
        raise NonFiniteSampleError(f"sampler {sampler.name!r} with options {dict(sampler.options)} produced "
                                   f"non-finite values by the end of integration (t = {grid.t_min:.6g})")


def _backward_times(grid: TimeGrid) -> list[float]:
    """Backward times t' = T - t of the grid, with both ends exact."""
    backward = (grid.T - grid.times).tolist()
    backward[0], backward[-1] = 0.0, grid.T - grid.t_min
    return backward


class _CountingScore:
    """Counts score evaluations (for methods whose inner loop is not ours) and repeats the
    last one when asked again at the same (x, t): ``torchsde.sdeint`` evaluates the drift at
    its first point once to check shapes and again in its first step."""

    def __init__(self, score):
        self.score, self.count, self._last = score, 0, None

    def __call__(self, x, t):
        key = (x, x._version, float(t))
        if self._last is not None and self._last[0] is x and self._last[1:3] == key[1:]:
            return self._last[3]
        self.count += 1
        value = self.score(x, t)
        self._last = (*key, value)
        return value


def _is_uniform(times: Tensor) -> bool:
    steps = times[:-1] - times[1:]
    return float(steps.max() - steps.min()) <= 1e-12 * float(steps.max())


def run_torchsde(sampler, score, grid: TimeGrid, x: Tensor, noise, return_path: bool, progress: bool,
                 check_finite: bool, check_every: int):
    """The reverse SDE by ``torchsde.sdeint`` in backward time t' = T - t.

    Fixed steps land exactly on the grid: one sdeint call with ``dt = Δt`` when the grid is
    uniform; otherwise one call per interval, each with its own Brownian motion over that
    interval (sdeint alone steps with a constant dt and interpolates, and one Brownian tree
    queried at every non-dyadic grid point is slow at large batch). ``adaptive=True`` makes
    one call with torchsde's error control (its options are checked by the registry: torchsde
    checks none of them); a NaN error estimate there raises :class:`NonFiniteSampleError`. The
    Brownian motions come from ``noise`` (a generator-seeded ``BrownianInterval``, or injected
    increments for the exact law).
    """
    import torchsde

    opts = sampler.options
    solver = TORCHSDE_SOLVERS[opts["solver"]]
    adaptive = bool(opts.get("adaptive", False))
    counting = _CountingScore(score)
    sde = ReverseSDE(counting, grid.T, sde_type=solver.sde_type, noise_type="additive")
    flat = x.reshape(x.shape[0], -1)
    backward = _backward_times(grid)

    def integrate(y0: Tensor, grid_times: list, first_index: int, dt: float, **extra) -> Tensor:
        # The Brownian motion spans the grid times of this call; sdeint reports the outputs only.
        ts = grid_times if return_path else grid_times[::len(grid_times) - 1]
        times = torch.tensor(ts, dtype=torch.float64, device=x.device)
        bm = noise.brownian(grid_times, first_index, dt, flat, solver.levy)
        return torchsde.sdeint(sde, y0, times, dt=dt, bm=bm, method=opts["solver"],
                               options={"grad_free": True} if opts["solver"] == "milstein" else None, **extra)

    with warnings.catch_warnings():
        # torchsde warns about adaptive Euler for non-additive noise; ours is additive.
        warnings.filterwarnings("ignore", message=".*adaptive time-stepping with the Euler.*")
        if adaptive:
            try:
                ys = integrate(flat, backward, 0, opts["dt"] or backward[-1] / grid.n, adaptive=True,
                               rtol=opts["rtol"], atol=opts["atol"])
            except AssertionError as err:  # torchsde asserts a finite error estimate (the options are checked)
                if "nan" not in str(err).lower():
                    raise
                raise NonFiniteSampleError(f"sampler {sampler.label!r} with options {dict(opts)}: torchsde's error "
                                           f"estimate became NaN, so the drift (from the score) or the state is "
                                           f"non-finite; check the score") from err
        elif _is_uniform(grid.times):
            # A hair over Δt so accumulated rounding never leaves a spurious last micro-step;
            # the Brownian motion still sees the grid's own points.
            step = backward[-1] / grid.n * (1 + 1e-12)
            ys = integrate(flat, backward, 0, step)
        else:
            states = [flat]
            for k in progress_bar(range(grid.n), progress, grid.n, "torchsde"):
                pair = backward[k:k + 2]
                states.append(integrate(states[-1], pair, k, pair[1] - pair[0])[-1])
                if not return_path:
                    states = states[-1:]
            ys = torch.stack(states)
    final = ys[-1].reshape(x.shape)
    check_finite_output(sampler, final, grid, check_finite)
    path = ys.reshape((ys.shape[0],) + tuple(x.shape)) if return_path else None
    return final, path, counting.count


def run_ode_adaptive(sampler, score, grid: TimeGrid, x: Tensor, noise, return_path: bool, progress: bool,
                     check_finite: bool, check_every: int):
    """The probability-flow ODE by ``scipy.integrate.solve_ivp`` in backward time t' = T - t, on the
    whole batch as one state vector (so the error control is shared across samples).

    A non-finite velocity (from the score) makes scipy's solvers shrink their step until they give
    up, or refuse it outright (Radau, BDF); that failure raises :class:`NonFiniteSampleError` naming
    the first forward time where the velocity was non-finite, whatever ``check_finite`` (there is no
    output to return)."""
    from scipy.integrate import solve_ivp

    ode = ProbabilityFlowODE(score, grid.T)
    shape, device, dtype = x.shape, x.device, x.dtype
    counter = {"nfe": 0, "non_finite_at": None}

    def velocity(t_prime: float, y: np.ndarray) -> np.ndarray:
        counter["nfe"] += 1
        state = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
        out = ode.drift(state, min(max(float(t_prime), 0.0), ode.T))
        value = out.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(-1)
        # The velocity is on the host already, so watching it costs no synchronisation. A solver
        # fed NaN only shrinks its step until it gives up, so its failure is then named for the cause.
        if counter["non_finite_at"] is None and not np.isfinite(value).all():
            counter["non_finite_at"] = float(t_prime)
        return value

    backward_times = np.asarray(_backward_times(grid))
    options = sampler.options
    def non_finite(message: str) -> NonFiniteSampleError:
        return NonFiniteSampleError(
            f"sampler {sampler.label!r} with options {dict(options)} met a non-finite probability-flow velocity "
            f"(from the score) at forward time t = {grid.T - counter['non_finite_at']:.6g}, and scipy's "
            f"{options['solver']} stopped ({message}); check the score there")

    try:
        solution = solve_ivp(velocity, (0.0, float(backward_times[-1])),
                             x.detach().cpu().double().numpy().reshape(-1), method=options["solver"],
                             rtol=options["rtol"], atol=options["atol"], t_eval=backward_times if return_path else None)
    except ValueError as err:  # the implicit solvers (Radau, BDF) refuse a NaN Jacobian outright
        if counter["non_finite_at"] is None:
            raise
        raise non_finite(str(err)) from err
    if not solution.success:
        if counter["non_finite_at"] is not None:
            raise non_finite(solution.message)
        raise RuntimeError(f"ode solver {options['solver']!r} failed: {solution.message}")
    final = torch.from_numpy(solution.y[:, -1].copy()).reshape(shape).to(device=device, dtype=dtype)
    check_finite_output(sampler, final, grid, check_finite)
    path = None
    if return_path:
        path = torch.from_numpy(solution.y.T.copy()).reshape((-1,) + tuple(shape)).to(device=device, dtype=dtype)
    return final, path, counter["nfe"]


def run_ode_torchdiffeq(sampler, score, grid: TimeGrid, x: Tensor, noise, return_path: bool, progress: bool,
                        check_finite: bool, check_every: int):
    """The probability-flow ODE by one of torchdiffeq's adaptive Runge–Kutta pairs
    (:func:`diffsde.odeint.solve`) in backward time t' = T - t, on x's device and dtype.

    The whole batch is one state but the error is controlled per element (no sample's error hides
    behind the others'); the state never leaves its device, only the step control's scalars do.
    With ``return_path`` the states are reported at the grid's times (interpolated by the solver,
    which does not step on the grid); the last step lands on the end time.

    A non-finite velocity (from the score) makes the solver shrink its step until it gives up: that
    raises :class:`NonFiniteSampleError` naming the latest forward time where the velocity was
    non-finite, whatever ``check_finite``; any other failure (the step budget) a RuntimeError."""
    options = sampler.options
    ode = ProbabilityFlowODE(score, grid.T)
    backward_times = _backward_times(grid)
    end = backward_times[-1]

    def velocity(t_prime: float, y: Tensor) -> Tensor:
        # float32 times may round the end by an ulp: the score's time stays inside [t_min, T].
        return ode.drift(y, min(max(t_prime, 0.0), end))

    try:
        states, nfe = solve(velocity, x, backward_times if return_path else [0.0, end], solver=options["solver"],
                            rtol=options["rtol"], atol=options["atol"])
    except ODEFailure as err:
        if err.non_finite:
            raise NonFiniteSampleError(
                f"sampler {sampler.label!r} with options {dict(options)} met a non-finite probability-flow velocity "
                f"(from the score) at forward time t = {grid.T - err.non_finite_at:.6g}, and torchdiffeq's {err}; "
                f"check the score there") from err
        raise RuntimeError(f"ode solver {options['solver']!r} (torchdiffeq) failed: {err}; try looser tolerances than "
                           f"rtol = {options['rtol']:g}, atol = {options['atol']:g}") from err
    final = states[-1]
    check_finite_output(sampler, final, grid, check_finite)
    return final, (states if return_path else None), nfe
