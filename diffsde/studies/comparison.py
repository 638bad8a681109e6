"""Sampler comparison: error against score evaluations and wall time, one table."""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from ..distributed.world import check_same
from ._args import PRIORS, check_choice, check_ns, check_score, exact_target
from .estimators import MonteCarlo, MonteCarloJudge, exact_error, mean_and_se, run_cells, use_exact
from .grids import GridSpec, describe_grid, grid_factory
from .methods import DEFAULT_METHODS, study_methods
from .results import StudyResult

__all__ = ["compare_samplers"]


def compare_samplers(target, score=None, methods: Sequence = DEFAULT_METHODS, ns: Sequence[int] = (25, 50, 100),
                     *, grid: GridSpec = "linear", t_min: float = 0.0, T: float | None = None,
                     prior: str = "normal", monte_carlo: MonteCarlo | None = None) -> StudyResult:
    """Error against score evaluations and wall time, for every (method, n), in one table.

    Every method runs ``score`` (default: the target's exact score; or a learned one, e.g.
    an :class:`diffsde.EpsilonScore`) over ``grid(n)`` from ``prior`` ("normal", N(0, I), as
    users sample, by default; or "exact"), ``monte_carlo.repeats`` times on
    ``monte_carlo.device`` in ``monte_carlo.dtype`` (default float32, what users run). Each
    row holds the number of score evaluations per sample ``nfe`` (``sample(...,
    return_info=True)["nfe"]``), the median wall time of a run in seconds (the sampling loop
    only; timings are noisy on shared machines, so compare them within one table), and the
    Monte Carlo error (sliced W2 against exact samples of p_{t_end}, mean ± standard error,
    with the floor in ``meta["floor"]``), the same estimator for every row so they compare.
    Where the target is Gaussian, the score a GaussianScore and the method fixed-step,
    ``w2_exact`` adds the exact W2 of the output law (else None). In d > 1 the two are
    different distances (the sliced one averages 1-D distances over directions, so
    SW2 <= W2); in 1-D they coincide, and the Monte Carlo error differs from ``w2_exact`` by
    at most about the floor.

    Across processes: under an initialised torch.distributed process group (``torchrun``,
    :mod:`diffsde.distributed.world`) the independent cells, one per (method, n) plus one per
    floor draw, are dealt round-robin over the ranks
    (:func:`diffsde.studies.estimators.run_cells`), and every rank returns the result one
    process gives: every field equal, floats bit for bit (same hardware and thread counts),
    except ``wall_time_s``, measured on whichever rank ran the cell (it varies between runs
    anyway). The cells scale; one cell (a method at one n, all its repeats) always runs on
    one rank, so the slowest cell bounds the time. Every rank must get the same arguments.

    Args:
        target: as :func:`diffsde.studies.convergence_study`.
        score: the score to run (default: the target's exact score).
        methods: method specs (:func:`diffsde.studies.resolve_method`).
        ns: one or more strictly increasing step counts (any n >= 1 on the linear grid:
            :mod:`diffsde.studies.grids`).
        grid: as :func:`diffsde.studies.convergence_study`.
        t_min: as :func:`diffsde.studies.convergence_study`.
        T: as :func:`diffsde.studies.convergence_study`.
        prior: "normal" or "exact".
        monte_carlo: :class:`MonteCarlo` settings (default ``MonteCarlo(dtype=torch.float32)``).

    Returns:
        StudyResult(kind="comparison"): rows (method, n as asked, steps of its grid, t_end,
        nfe, wall_time_s, error, error_se, w2_exact); meta (settings, floor: mean and standard
        error over ``monte_carlo.floor_draws`` pairs of exact sample sets).

    Raises:
        ValueError / TypeError: as :func:`diffsde.studies.convergence_study` (ns needs one
            count or more); a score that is not callable (before any run).
        DistributedError: the ranks were given different settings, or another rank failed.
    """
    exact = exact_target(target)
    score = check_score(exact if score is None else score)
    specs = study_methods(methods)
    ns = check_ns(ns, 1)
    check_choice(prior, "prior", PRIORS)
    settings = monte_carlo if monte_carlo is not None else MonteCarlo(dtype=torch.float32)
    make_grid = grid_factory(grid, t_min, T)
    grids = {n: make_grid(n) for n in ns}
    judge = MonteCarloJudge(exact, settings)
    check_same({"methods": [spec.label for spec in specs], "ns": ns, "steps": [grids[n].n for n in ns],
                "t_end": [grids[n].t_min for n in ns], "T": grids[ns[0]].T, "t_min": float(t_min),
                "prior": prior, "monte_carlo": settings.describe()}, "compare_samplers settings")

    # The cells: the floor's draws, then one per (method, n).
    floor_cells = judge.floor_cells(float(t_min))
    values = run_cells(floor_cells + [functools.partial(_measure, judge, exact, score, spec, grids[n], prior)
                                      for spec in specs for n in ns])
    floor = mean_and_se(values[:len(floor_cells)])
    results = iter(values[len(floor_cells):])
    rows = []
    for spec in specs:
        for n in ns:
            time_grid = grids[n]
            rows.append({"method": spec.label, "n": n, "steps": time_grid.n, "t_end": time_grid.t_min,
                         **next(results)})
    meta = {"target": repr(target), "score": repr(score), "grid": describe_grid(grid),
            "t_min": float(t_min), "T": grids[ns[0]].T, "prior": prior, "ns": ns,
            "monte_carlo": settings.describe(), "floor": {"mean": floor[0], "se": floor[1]}}
    return StudyResult("comparison", rows, [], meta)


def _measure(judge: MonteCarloJudge, exact, score, spec, time_grid, prior: str) -> dict:
    """One cell of the comparison: a method on one grid, as plain data (nfe, wall_time_s,
    error, error_se, w2_exact)."""
    result = judge.run(score, spec, time_grid, prior, time_grid.t_min)
    w2_exact = None
    if use_exact("auto", exact, score, spec):
        w2_exact = exact_error(spec, score, exact, time_grid, prior, time_grid.t_min)
    return {"nfe": result["nfe"], "wall_time_s": result["wall_time_s"], "error": result["error"],
            "error_se": result["error_se"], "w2_exact": w2_exact}
