"""What a run's grid must be: the grid a run uses (:func:`resolve_grid`) and the checks a method's
declared grid needs ask for (:func:`check_grid`), made once before any step."""

from __future__ import annotations

import math
import sys
from typing import Any, Callable, Sequence, Union

import torch
from torch import Tensor

from ..protocols import is_singular_at_zero
from ..schedules import BetaSchedule, TimeGrid
from .registry import Sampler

__all__ = ["resolve_grid", "check_grid", "GridLike"]

Score = Callable[[Tensor, Any], Tensor]
GridLike = Union[TimeGrid, Tensor, Sequence[float], None]


def resolve_grid(schedule: BetaSchedule | None = None, grid: GridLike = None, t_min: float | None = None,
                 exact_times: bool = False) -> TimeGrid:
    """The grid a run uses: ``grid`` as given, or ``schedule.grid(t_min, exact_times)``, or
    the linear 1000-step schedule's grid when neither is given."""
    if grid is not None and schedule is not None:
        raise ValueError("give either schedule or grid, not both")
    if grid is not None:
        if t_min is not None or exact_times:
            raise ValueError("t_min and exact_times apply to a schedule; a grid already ends at its own t_min")
        time_grid = grid if isinstance(grid, TimeGrid) else TimeGrid.from_times(grid)
    else:
        if schedule is None:
            schedule = BetaSchedule.linear(1000)
        if not isinstance(schedule, BetaSchedule):
            raise TypeError(f"schedule must be a BetaSchedule, got {type(schedule).__name__}")
        time_grid = schedule.grid(t_min=0.0 if t_min is None else t_min, exact_times=exact_times)
    _check_time_grid(time_grid)
    return time_grid


def _check_time_grid(grid: TimeGrid) -> None:
    """Refuse a grid whose numbers the steps cannot use: the steps read its times, β and ᾱ as
    float64 (Python floats), so the grid must hold them in float64, with n + 1 finite times
    strictly decreasing to t_min >= 0 (no zero-length step) and n β's. A grid built by
    :meth:`TimeGrid.from_times` or a schedule passes; a hand-made one might not."""
    if not isinstance(grid, TimeGrid):
        raise TypeError(f"grid must be a TimeGrid, a tensor or a sequence of times, got {type(grid).__name__}")
    for name in ("times", "betas", "alpha_bars"):
        value = getattr(grid, name)
        if not isinstance(value, Tensor) or value.dtype != torch.float64:
            raise TypeError(f"a TimeGrid's {name} must be a float64 tensor (the steps' coefficients are computed "
                            f"in float64 whatever the state's dtype), got "
                            f"{value.dtype if isinstance(value, Tensor) else type(value).__name__}")
    times = grid.times
    if times.dim() != 1 or times.numel() < 2 or grid.betas.shape != (times.numel() - 1,) \
            or grid.alpha_bars.shape != times.shape:
        raise ValueError(f"a TimeGrid needs times (n+1,), betas (n,) and alpha_bars (n+1,) with n >= 1, got "
                         f"shapes {tuple(times.shape)}, {tuple(grid.betas.shape)}, {tuple(grid.alpha_bars.shape)}")
    if not bool(torch.isfinite(times).all()):
        raise ValueError("a TimeGrid's times must be finite")
    steps = times[:-1] - times[1:]
    if not bool((steps > 0).all()):
        k = int(torch.nonzero(steps <= 0)[0])
        raise ValueError(f"a TimeGrid's times must decrease strictly (no zero-length step); times[{k}] = "
                         f"{float(times[k])!r} is followed by {float(times[k + 1])!r}")
    if float(times[-1]) < 0:
        raise ValueError(f"a TimeGrid's times must be >= 0; the last is {float(times[-1])!r}")


def _betas_below_one(sampler: Sampler, grid: TimeGrid) -> None:
    if float(grid.betas.max()) >= 1.0:
        k = int(torch.nonzero(grid.betas >= 1.0)[0])
        raise ValueError(f"method {sampler.label!r} needs β < 1 on every step; step {k} has "
                         f"β = {float(grid.betas[k]):.4g} (on a bare grid β = Δt)")


# ᾱ is a normal float64 number down to 2.2e-308, i.e. for -log ᾱ <= 708.396 (t on a bare grid, ᾱ = e^-t).
_SMALLEST_ALPHA_BAR = sys.float_info.min
_LARGEST_TIME = -math.log(_SMALLEST_ALPHA_BAR)
# 1 - e^-t is 0 in float64 for t <= 2^-53 (e^-t rounds to 1).
_SMALLEST_TIME = 2.0 ** -53


def _alpha_bars_normal(sampler: Sampler, grid: TimeGrid) -> None:
    """ᾱ a normal float64 number at every grid time: the method divides by ᾱ (ᾱ_from / ᾱ_to)."""
    bad = grid.alpha_bars < _SMALLEST_ALPHA_BAR  # NaN is not bad here: a grid holds no NaN ᾱ
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[-1])  # times decrease: the last bad point is the smallest bad time
        usable = grid.times[~bad]
        largest = f"{float(usable.max()):.6g}" if usable.numel() else "none"
        raise ValueError(f"method {sampler.label!r} divides by ᾱ, but ᾱ = {float(grid.alpha_bars[k]):.3g} at grid "
                         f"time t = {float(grid.times[k]):.6g} (and before) underflows in float64, the precision "
                         f"of the steps' coefficients (ᾱ below {_SMALLEST_ALPHA_BAR:.3g}, i.e. -log ᾱ > "
                         f"{_LARGEST_TIME:.6g}; on a bare grid ᾱ = e^-t); start the grid at a time with "
                         f"-log ᾱ <= {_LARGEST_TIME:.6g} (the largest usable time of this grid is {largest})")


def _alpha_bars_below_one(sampler: Sampler, grid: TimeGrid) -> None:
    """1 - ᾱ > 0 at every step's start: the method divides by sqrt(1 - ᾱ_from)."""
    bad = grid.alpha_bars[:-1] >= 1.0
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0])
        raise ValueError(f"method {sampler.label!r} divides by sqrt(1 - ᾱ) at each step's start, but at grid time "
                         f"t = {float(grid.times[k]):.3g} (step {k}) ᾱ rounds to 1 in float64, so 1 - ᾱ = 0 "
                         f"(on a bare grid ᾱ = e^-t, which rounds to 1 for t <= {_SMALLEST_TIME:.3g}); give the "
                         f"grid no time in (0, {_SMALLEST_TIME:.3g}] before its last")


_GRID_CHECKS = {"betas_below_one": _betas_below_one, "alpha_bars_normal": _alpha_bars_normal,
                "alpha_bars_below_one": _alpha_bars_below_one}


def check_grid(sampler: Sampler, grid: TimeGrid, score: Score) -> None:
    """What the method declares it needs of the grid, checked once before any step; and a
    method that evaluates the score at the grid's end refused at t = 0 for a score singular there."""
    for need in sampler.grid_needs:
        _GRID_CHECKS[need](sampler, grid)
    if sampler.evaluates_at_end and grid.t_min == 0.0 and is_singular_at_zero(score):
        raise ValueError(f"method {sampler.name!r} with options {dict(sampler.options)} evaluates the score at the "
                         f"grid's last time t = 0, where {type(score).__name__} is singular "
                         f"(s = -ε / sqrt(1 - e^-t)); end the grid at t_min > 0 (e.g. t_min=1e-3)")
