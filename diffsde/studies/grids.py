"""The studies' sampling grids: ``grid="linear"``, ``"uniform"`` or a callable ``n -> TimeGrid``.

* ``"linear"``: ``BetaSchedule.linear(n).grid(t_min)`` (Song et al.'s linear rate, T = 10.05
  for every n, seed-000 times; the grid ends at its first time >= t_min, so for t_min > 0
  its end ``t_end`` moves with n, and errors are measured against p_{t_end}).
* ``"uniform"``: ``TimeGrid.uniform(T, t_min, n)`` (ends exactly at t_min; T defaults to 10.05).
* a callable ``n -> TimeGrid``: used as given (it sets its own T and end).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable, Union

from ..schedules import BetaSchedule, TimeGrid

__all__ = ["GridSpec", "LINEAR_T", "grid_factory", "fine_grid"]

GridSpec = Union[str, Callable[[int], TimeGrid]]
LINEAR_T = BetaSchedule.linear(21).T  # (beta_min + beta_max) / 2 = 10.05 for every n


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
        return lambda n: BetaSchedule.linear(n).grid(t_min)
    if grid == "uniform":
        final = LINEAR_T if T is None else check_time_arg(T, "T")
        if not final > t_min:
            raise ValueError(f"need T > t_min, got T={final!r}, t_min={t_min!r}")
        return lambda n: TimeGrid.uniform(final, t_min, n)
    raise ValueError(f"grid must be 'linear', 'uniform' or a callable n -> TimeGrid, got {grid!r}")


def fine_grid(grid: GridSpec, make_grid: Callable[[int], TimeGrid], coarse: TimeGrid, n: int,
              factor: int) -> TimeGrid:
    """The grid with ``factor`` times the steps that ends where ``coarse`` ends, so switching off
    discretization leaves early stopping alone: the linear schedule refined
    (:meth:`BetaSchedule.refine` keeps the coarse times as grid points) and cut at the coarse
    t_end; a uniform grid with more steps (it ends at t_min anyway); a callable grid called
    with ``factor · n`` (its own end)."""
    if grid == "linear":
        # The coarse end is a point of the refined schedule; the margin absorbs cumsum rounding.
        end = max(0.0, coarse.t_min - 1e-12 * max(1.0, coarse.t_min))
        return BetaSchedule.linear(n).refine(factor).grid(end)
    return make_grid(n * factor)


def describe_grid(grid: GridSpec) -> str:
    """The grid as written in a result's meta: its name, or the callable's repr."""
    return grid if isinstance(grid, str) else repr(grid)
