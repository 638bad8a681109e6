"""Error budget: a sampler's final error split into score error, discretization, prior mismatch
and early stopping, by switching each off in turn."""

from __future__ import annotations

import functools
from numbers import Integral

import torch

from ..distributed.world import check_same
from ._args import ESTIMATORS, check_choice, check_score, exact_target
from .estimators import MonteCarlo, MonteCarloJudge, exact_error, mean_and_se, run_cells, use_exact
from .grids import GridSpec, describe_grid, fine_grid, grid_factory
from .methods import MethodLike, study_method
from .results import StudyResult

__all__ = ["error_budget"]

_BUDGET_SOURCES = (
    # (source, what is switched off, exact score?, fine grid?, exact prior?, compare with p_{t_end}?)
    ("total", "nothing: all sources on", False, False, False, False),
    ("score", "exact score instead of the given one", True, False, False, False),
    ("discretization", "fine grid (fine_factor x n steps)", False, True, False, False),
    ("prior", "exact p_T instead of N(0, I) at the start", False, False, True, False),
    ("early_stopping", "compared with p_{t_end} instead of p_0", False, False, False, True),
    ("residual", "everything", True, True, True, True),
)


def error_budget(target, score=None, method: MethodLike = "em", n: int = 100, *, grid: GridSpec = "linear",
                 t_min: float = 1e-3, T: float | None = None, fine_factor: int = 16, estimator: str = "auto",
                 monte_carlo: MonteCarlo | None = None) -> StudyResult:
    """The final error split into its sources, by switching each one off in turn.

    The total is the distance between what ``method`` produces with ``score`` on ``grid(n)``
    from N(0, I), stopped at t_end (the grid's last time: t_min for "linear" and "uniform",
    :mod:`diffsde.studies.grids`), and the data law p_0.
    Each source is then switched off alone:

    * score: the target's exact score instead of ``score`` (0 when ``score`` is exact);
    * discretization: ``fine_factor`` times more steps over the same [t_end, T] (the linear
      schedule refined with :meth:`diffsde.BetaSchedule.refine`, or the grid of
      ``fine_factor · n`` steps);
    * prior: the exact p_T instead of N(0, I);
    * early stopping: compare with p_{t_end} instead of p_0.

    Each row's ``contribution`` is the total minus the error with that source off. The
    distances are not additive, so contributions need not sum to the total; the last row
    (everything off) shows what is left: fine-grid error plus, for Monte Carlo, the floor.

    Estimator: exact W2 (:func:`diffsde.exact_output_law`) when the target is Gaussian, the
    score a GaussianScore (the exact one, or a deliberately wrong Gaussian one) and the
    method fixed-step; otherwise Monte Carlo as in :func:`diffsde.studies.convergence_study`
    (the same seeds for every row, so an unchanged configuration gives an identical error).

    Across processes: under an initialised torch.distributed process group (``torchrun``,
    :mod:`diffsde.distributed.world`) the independent cells, one per distinct row
    configuration (at most six; rows that coincide share one) plus one per floor draw for
    Monte Carlo, are dealt round-robin over the ranks
    (:func:`diffsde.studies.estimators.run_cells`), and every rank returns the result one
    process gives: every field equal, floats bit for bit (same hardware and thread counts).
    So at most six configurations run in parallel; one cell always runs on one rank, and the
    fine-grid cells (``fine_factor`` times the steps) bound the time. Every rank must get the
    same arguments.

    Args:
        target: as :func:`diffsde.studies.convergence_study`.
        score: the score to judge (default: the target's exact score).
        method: one method spec.
        n: steps.
        grid: as :func:`diffsde.studies.convergence_study`.
        t_min: as :func:`diffsde.studies.convergence_study`.
        T: as :func:`diffsde.studies.convergence_study`.
        fine_factor: int >= 2, the refinement that switches discretization off.
        estimator: as :func:`diffsde.studies.convergence_study`.
        monte_carlo: as :func:`diffsde.studies.convergence_study` (default
            ``MonteCarlo(dtype=torch.float32)``).

    Returns:
        StudyResult(kind="error_budget"): rows (source, switched_off, steps, t_end, prior,
        reference_time, estimator, error, error_se, contribution); meta (settings, floor).

    Raises:
        ValueError / TypeError: bad method, n, fine_factor, grid, times or estimator (before any run).
        DistributedError: the ranks were given different settings, or another rank failed.
    """
    exact = exact_target(target)
    score = check_score(exact if score is None else score)
    spec = study_method(method)
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(fine_factor, bool) or not isinstance(fine_factor, Integral) or fine_factor < 2:
        raise ValueError(f"fine_factor must be an int >= 2, got {fine_factor!r}")
    check_choice(estimator, "estimator", ESTIMATORS)
    settings = monte_carlo if monte_carlo is not None else MonteCarlo(dtype=torch.float32)
    make_grid = grid_factory(grid, t_min, T)
    coarse = make_grid(int(n))
    grids = {False: coarse, True: fine_grid(grid, make_grid, int(n), int(fine_factor), float(t_min))}
    exact_estimator = use_exact(estimator, exact, score, spec)
    judge = None if exact_estimator else MonteCarloJudge(exact, settings)
    check_same({"method": spec.label, "n": int(n), "fine_factor": int(fine_factor),
                "steps": [grids[False].n, grids[True].n], "t_end": [grids[False].t_min, grids[True].t_min],
                "T": grids[False].T, "t_min": float(t_min), "estimator": estimator,
                "monte_carlo": settings.describe()}, "error_budget settings")

    # The cells: the floor's draws (Monte Carlo only), then one per distinct configuration of the
    # rows (a row whose source is already off, e.g. the score when it is exact, shares its cell).
    planned, cells = [], {}
    for source, switched_off, exact_score, fine, exact_prior, at_end in _BUDGET_SOURCES:
        run_score = exact if exact_score else score
        time_grid = grids[fine]
        prior = "exact" if exact_prior else "normal"
        reference_time = time_grid.t_min if at_end else 0.0
        key = (id(run_score), fine, prior, reference_time)
        if key not in cells:
            cells[key] = functools.partial(_measure, judge, spec, run_score, exact, time_grid, prior, reference_time)
        planned.append((source, switched_off, time_grid, prior, reference_time, key))
    floor_cells = [] if exact_estimator else judge.floor_cells(0.0)
    values = run_cells(floor_cells + list(cells.values()))
    floor = None if exact_estimator else mean_and_se(values[:len(floor_cells)])
    measured = dict(zip(cells, values[len(floor_cells):]))

    rows = []
    for source, switched_off, time_grid, prior, reference_time, key in planned:
        error, error_se = measured[key]
        rows.append({"source": source, "switched_off": switched_off, "steps": time_grid.n,
                     "t_end": time_grid.t_min, "prior": prior, "reference_time": reference_time,
                     "estimator": "exact" if exact_estimator else "monte_carlo", "error": error,
                     "error_se": error_se})
    total = rows[0]["error"]
    for row in rows:
        row["contribution"] = total - row["error"]
    meta = {"target": repr(target), "score": repr(score), "method": spec.label, "n": int(n),
            "fine_factor": int(fine_factor), "grid": describe_grid(grid),
            "t_min": float(t_min), "T": grids[False].T,
            "monte_carlo": None if exact_estimator else settings.describe(),
            "floor": None if floor is None else {"mean": floor[0], "se": floor[1]}}
    return StudyResult("error_budget", rows, [], meta)


def _measure(judge: MonteCarloJudge | None, spec, score, exact, time_grid, prior: str,
             reference_time: float) -> tuple[float, float]:
    """One cell of the budget: (error, error_se) of one configuration, exact without a judge."""
    if judge is None:
        return exact_error(spec, score, exact, time_grid, prior, reference_time), 0.0
    result = judge.run(score, spec, time_grid, prior, reference_time)
    return result["error"], result["error_se"]
