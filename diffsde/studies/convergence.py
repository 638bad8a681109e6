"""Convergence study: a sampler's error against its number of steps, with fitted orders."""

from __future__ import annotations

import functools
import math
from numbers import Real
from typing import Sequence

from ..distributed.world import check_same
from ..orders import order_fit
from ._args import ESTIMATORS, PRIORS, check_choice, check_ns, exact_target
from .estimators import MonteCarlo, MonteCarloJudge, exact_error, mean_and_se, run_cells, use_exact
from .grids import GridSpec, describe_grid, grid_factory
from .methods import DEFAULT_METHODS, study_methods
from .results import StudyResult

__all__ = ["convergence_study"]


def convergence_study(target, methods: Sequence = DEFAULT_METHODS,
                      ns: Sequence[int] = (25, 50, 100, 200, 400), *, grid: GridSpec = "linear",
                      t_min: float = 0.0, T: float | None = None, prior: str = "exact",
                      estimator: str = "auto", monte_carlo: MonteCarlo | None = None,
                      confidence: float = 0.95) -> StudyResult:
    """Error against the number of steps n for each method, with fitted orders and intervals.

    Each method integrates the target's *exact* score over ``grid(n)``
    (:mod:`diffsde.studies.grids`), started from the exact p_T (``prior="exact"``, the
    default: only discretization error is left) or from N(0, I) (``prior="normal"``: prior
    mismatch adds an n-independent floor of about e^{-T/2} ≈ 0.007 · |mean| and spoils the
    fit), and is compared with the exact p_{t_end} at the grid's last time t_end (= t_min for
    the linear and uniform grids, the same for every row; a grid may take fewer ``steps`` than
    the ``n`` asked when schedule steps lie below t_min, :mod:`diffsde.studies.grids`). Orders
    are fitted against the n asked.

    * Gaussian target, fixed-step method: exact W2 of :func:`diffsde.exact_output_law`
      against p_{t_end} (no Monte Carlo).
    * Otherwise: sliced W2 against exact samples, mean ± standard error over
      ``monte_carlo.repeats`` seeds. The estimate cannot go below the floor set by the
      sample size (``meta["floor"]``); rows whose error is not clearly above it
      (``error - 2 se <= floor + 2 floor_se``) have ``above_floor = False`` and are left
      out of the fit, since the floor flattens the slope.

    Orders come from :func:`diffsde.orders.order_fit` (least squares in log-log, Student-t
    interval at ``confidence``) and are listed with the order each method declares.

    Across processes: under an initialised torch.distributed process group (``torchrun``,
    :mod:`diffsde.distributed.world`) the independent cells, one per (method, n) plus one per
    floor draw when a row is Monte Carlo, are dealt round-robin over the ranks
    (:func:`diffsde.studies.estimators.run_cells`), and every rank returns the result one
    process gives: every field equal, floats bit for bit (same hardware and thread counts).
    The cells scale; one cell (a method at one n, all its repeats) always runs on one rank,
    so the slowest cell bounds the time, and exact cells cost far less than Monte Carlo ones.
    Every rank must get the same arguments.

    Args:
        target: GaussianScore, GaussianMixtureScore or a toy with an exact score.
        methods: method specs (:func:`diffsde.studies.resolve_method`).
        ns: at least three strictly increasing step counts (three so the interval exists);
            the linear grid respaces the linear rate for n <= 20 (:mod:`diffsde.studies.grids`).
        grid: "linear", "uniform" or a function of n returning a TimeGrid.
        t_min: where the grids end.
        T: where "uniform" grids start.
        prior: "exact" or "normal".
        estimator: "auto" (exact where possible), "exact" (refuse otherwise), "monte_carlo".
        monte_carlo: :class:`MonteCarlo` settings (default ``MonteCarlo()``); the Monte
            Carlo estimate needs ``repeats >= 2`` (its error bars).
        confidence: the level of the order intervals, in (0, 1).

    Returns:
        StudyResult(kind="convergence"): rows (method, n as asked, steps of its grid, t_end,
        nfe, estimator, error, error_se, above_floor); summary per method (declared_order,
        order, order_se, order_ci_low, order_ci_high, fit_points); meta (settings, floor).

    Raises:
        ValueError / TypeError: unknown method or option, bad ns, grid, t_min, T, prior,
            estimator or confidence; a target without an exact score (before any run).
        DistributedError: the ranks were given different settings, or another rank failed.
    """
    exact = exact_target(target)
    specs = study_methods(methods)
    ns = check_ns(ns, 3)
    check_choice(prior, "prior", PRIORS)
    check_choice(estimator, "estimator", ESTIMATORS)
    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")  # as order_fit, before any run
    settings = monte_carlo if monte_carlo is not None else MonteCarlo()
    make_grid = grid_factory(grid, t_min, T)
    grids = {n: make_grid(n) for n in ns}  # every grid is built (and checked) before any run
    exact_for = {spec.label: use_exact(estimator, exact, exact, spec) for spec in specs}
    if not all(exact_for.values()) and settings.repeats < 2:
        raise ValueError(f"the Monte Carlo estimate needs error bars: monte_carlo.repeats must be >= 2, "
                         f"got {settings.repeats}")
    judge = MonteCarloJudge(exact, settings)
    with_floor = not all(exact_for.values())
    check_same({"methods": [spec.label for spec in specs], "ns": ns, "steps": [grids[n].n for n in ns],
                "t_end": [grids[n].t_min for n in ns], "T": grids[ns[0]].T, "t_min": float(t_min),
                "prior": prior, "estimator": estimator, "confidence": confidence,
                "monte_carlo": settings.describe()}, "convergence_study settings")

    # The cells: the floor's draws (when a Monte Carlo row needs it), then one per (method, n).
    floor_cells = judge.floor_cells(float(t_min)) if with_floor else []
    values = run_cells(floor_cells + [functools.partial(_measure, judge, exact, spec, grids[n], prior,
                                                        exact_for[spec.label])
                                      for spec in specs for n in ns])
    floor = mean_and_se(values[:len(floor_cells)]) if with_floor else None
    results = iter(values[len(floor_cells):])

    rows, summary = [], []
    for spec in specs:
        method_rows = []
        for n in ns:
            time_grid = grids[n]
            measured = next(results)
            if measured["estimator"] == "monte_carlo":
                above = measured["error"] - 2 * measured["error_se"] > floor[0] + 2 * floor[1]
                measured["above_floor"] = bool(above)
            method_rows.append({"method": spec.label, "n": n, "steps": time_grid.n, "t_end": time_grid.t_min,
                                **measured})
        rows += method_rows
        fitted = [row for row in method_rows if row["above_floor"] is not False and row["error"] > 0]
        if len(fitted) >= 2:
            fit = order_fit([row["n"] for row in fitted], [row["error"] for row in fitted], confidence)
        else:
            fit = {"order": math.nan, "order_se": math.nan, "order_ci_low": math.nan,
                   "order_ci_high": math.nan, "fit_points": len(fitted)}
        summary.append({"method": spec.label, "estimator": method_rows[0]["estimator"],
                        "declared_order": spec.weak_order, **fit})
    meta = {"target": repr(target), "grid": describe_grid(grid), "t_min": float(t_min),
            "T": grids[ns[0]].T, "prior": prior, "confidence": confidence, "ns": ns,
            "monte_carlo": settings.describe() if floor is not None else None,
            "floor": None if floor is None else {"mean": floor[0], "se": floor[1]}}
    return StudyResult("convergence", rows, summary, meta)


def _measure(judge: MonteCarloJudge, exact, spec, time_grid, prior: str, exact_estimator: bool) -> dict:
    """One cell of the study: a method's error on one grid, as plain data (nfe, estimator,
    error, error_se, above_floor: None here, set against the floor once every cell is in)."""
    t_end = time_grid.t_min
    if exact_estimator:
        error = exact_error(spec, exact, exact, time_grid, prior, t_end)
        nfe = None if spec.score_evals is None else spec.score_evals * time_grid.n
        return {"nfe": nfe, "estimator": "exact", "error": error, "error_se": 0.0, "above_floor": None}
    result = judge.run(exact, spec, time_grid, prior, t_end)
    return {"nfe": result["nfe"], "estimator": "monte_carlo", "error": result["error"],
            "error_se": result["error_se"], "above_floor": None}
