"""The studies' sampling grids: ``grid="linear"``, ``"uniform"`` or a callable ``n -> TimeGrid``.

* ``"linear"``: the schedule :func:`linear_schedule` (Song et al.'s linear rate, T = 10.05 for
  every n, step-sum times), cut to end exactly at t_min: ``linear_schedule(n).grid(t_min,
  end_at_t_min=True)``.
* ``"uniform"``: ``TimeGrid.uniform(T, t_min, n)`` (ends exactly at t_min; T defaults to 10.05).
* a callable ``n -> TimeGrid``: used as given (it sets its own T and end).

Coarse linear grids. ``BetaSchedule.linear(n)`` has β_max = 20 / n, so it is valid for
n >= 21 only. For n <= 20 the linear rate is *respaced*, as diffusers does: the n-step subset
of its 1000-step discretization (DDPM's β from 1e-4 to 0.02), ``BetaSchedule.linear(1000)
.respaced(n, "trailing")``: ᾱ at the evenly spaced indices 1000·i/n, β'_i = 1 - ᾱ_{k_{i+1}} /
ᾱ_{k_i} < 1, on the same time axis, so T = 10.05 still. Every n >= 21 keeps the plain linear
schedule. "trailing" spaces the kept indices evenly from 0 to 1000, so its first time above 0,
t_{1000/n} >= t_50 ≈ 0.029, lies above the usual t_min and all n steps are kept ("linspace"
would spend one of them on the schedule's first β, 1e-4, below t_min = 1e-3).

The end of a sweep. Every grid of a sweep ends exactly at t_min, so every row is measured
against the same law p_{t_min} (one ``t_end`` for the whole sweep). A linear schedule's times
t_i are kept exactly (and refining still reaches the continuous limit on one time axis); only
the step that crosses t_min is cut to end there (:meth:`BetaSchedule.grid` with
``end_at_t_min``). Steps that lie entirely below t_min are dropped, so a grid can have fewer
steps than the n asked for (e.g. ``linear(250)`` with t_min = 1e-3 keeps 249 of its 250 steps:
t_1 = 4e-4 lies below); the studies report both, ``n`` (asked) and ``steps`` (taken). With
t_min = 0 every grid is the whole schedule.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable, Union

from .._checks import check_int
from ..schedules import BetaSchedule, TimeGrid

__all__ = ["GridSpec", "LINEAR_T", "LINEAR_MIN_STEPS", "RESPACE_FROM", "linear_schedule", "grid_factory",
           "fine_grid"]

GridSpec = Union[str, Callable[[int], TimeGrid]]
LINEAR_T = BetaSchedule.linear(21).T  # (beta_min + beta_max) / 2 = 10.05 for every n
RESPACE_FROM = 1000  # coarse linear schedules are respaced from DDPM's 1000-step one
LINEAR_MIN_STEPS = 21  # the fewest steps for which BetaSchedule.linear(n) is valid (β_max = 20 / n < 1)


def linear_schedule(n: int) -> BetaSchedule:
    """The linear rate in n steps: ``BetaSchedule.linear(n)`` for n >= 21, and for n <= 20 (where
    it has β >= 1) ``BetaSchedule.linear(1000).respaced(n, "trailing")`` (module docstring).

    Raises:
        TypeError: n not an int.
        ValueError: n < 1.
    """
    n = check_int(n, "n", minimum=1)
    if n >= LINEAR_MIN_STEPS:
        return BetaSchedule.linear(n)
    return BetaSchedule.linear(RESPACE_FROM).respaced(n, "trailing")


def check_time_arg(value, name: str) -> float:
    """A finite time >= 0 as a float; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, Real) or not (0 <= float(value) < math.inf):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def grid_factory(grid: GridSpec, t_min: float, T: float | None) -> Callable[[int], TimeGrid]:
    """n -> the sampling grid (module docstring for "linear", "uniform" and callables).

    Raises:
        ValueError: an unknown grid name, a bad t_min or T, T given for a grid other than
            "uniform", or T <= t_min.
        TypeError (when called): a callable grid that does not return a TimeGrid.
    """
    t_min = check_time_arg(t_min, "t_min")
    if callable(grid) and not isinstance(grid, str):
        if T is not None:
            raise ValueError("T applies to grid='uniform' only; a callable grid sets its own T")

        def custom(n: int) -> TimeGrid:
            made = grid(n)
            if not isinstance(made, TimeGrid):
                raise TypeError(f"grid({n}) must return a TimeGrid, got {type(made).__name__}")
            return made
        return custom
    if grid == "linear":
        if T is not None:
            raise ValueError(f"T applies to grid='uniform' only; the linear schedule's T is {LINEAR_T:g}")
        return lambda n: linear_schedule(n).grid(t_min, end_at_t_min=True)
    if grid == "uniform":
        final = LINEAR_T if T is None else check_time_arg(T, "T")
        if not final > t_min:
            raise ValueError(f"need T > t_min, got T={final!r}, t_min={t_min!r}")
        return lambda n: TimeGrid.uniform(final, t_min, n)
    raise ValueError(f"grid must be 'linear', 'uniform' or a callable n -> TimeGrid, got {grid!r}")


def fine_grid(grid: GridSpec, make_grid: Callable[[int], TimeGrid], n: int, factor: int,
              t_min: float) -> TimeGrid:
    """The grid with ``factor`` times the steps over the same [t_min, T], so switching off
    discretization leaves early stopping alone: a linear schedule with n >= 21 refined
    (:meth:`BetaSchedule.refine` keeps the coarse times as grid points) and cut at t_min like
    the coarse one; otherwise ``make_grid(factor · n)`` (a respaced linear or a uniform grid also
    ends at t_min; a callable grid at its own end)."""
    if grid == "linear" and n >= LINEAR_MIN_STEPS:
        return BetaSchedule.linear(n).refine(factor).grid(t_min, end_at_t_min=True)
    return make_grid(n * factor)


def describe_grid(grid: GridSpec) -> str:
    """The grid as written in a result's meta: its name, or the callable's repr."""
    return grid if isinstance(grid, str) else repr(grid)
