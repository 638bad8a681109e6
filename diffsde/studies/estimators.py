"""The studies' two estimators of a sampler's error against the exact law of its target.

* ``"exact"`` (Gaussian target, a GaussianScore, a method with an exact output law): the
  sampler's output law from :func:`diffsde.exact_output_law` and the exact 2-Wasserstein
  distance (:func:`diffsde.metrics.gaussian_w2`) to the exact law; no Monte Carlo at all.
* ``"monte_carlo"`` (otherwise): the sliced 2-Wasserstein distance
  (:func:`diffsde.metrics.sliced_wasserstein`, fixed projections) between the sampler's
  output and exact samples of the target law, over ``repeats`` seeds, mean ± standard error.
  It has a floor from the finite sample size (:meth:`MonteCarloJudge.floor`): the same
  distance between two independent sets of exact samples.

The two are different distances in d > 1 (SW2 <= W2; equal in 1-D), so compare values
within one estimator, and orders across them.

A study's measurements are independent cells; :func:`run_cells` spreads them over the ranks of
a torch.distributed process group, with the same result as one process.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Callable, Sequence, Union

import torch
from torch import Tensor

from ..distributed.world import map_cells
from ..exact_law import exact_output_law
from ..metrics import gaussian_w2, sliced_wasserstein
from ..samplers import sample
from ..schedules import TimeGrid
from ..scores import GaussianMixtureScore, GaussianScore
from ..samplers import Sampler

__all__ = ["MonteCarlo", "MonteCarloJudge", "exact_error", "use_exact", "run_cells"]


@dataclass(frozen=True)
class MonteCarlo:
    """Settings of the Monte Carlo estimator.

    Attributes:
        n_samples: samples per run (and per set of exact reference samples).
        repeats: independent runs (seeds ``seed, seed + 1, ...``); the error is their mean,
            with standard error ``std / sqrt(repeats)`` (NaN for one repeat).
        n_projections: directions of the sliced Wasserstein distance; fixed (drawn from a CPU
            generator seeded with ``projection_seed``) so every error uses the same ones.
        seed: int seed of the first repeat.
        projection_seed: int seed of the projections.
        device: where samples are drawn ("cpu" or "cuda").
        dtype: the samples' precision.
        floor_draws: pairs of independent exact sample sets behind the floor
            (:meth:`MonteCarloJudge.floor`), >= 2 so the floor has a standard error; the first
            ``repeats`` of them use each repeat's reference samples.

    Repeat r uses the same seed for every method and step count (common random numbers),
    which makes differences between rows less noisy than the errors themselves.
    """

    n_samples: int = 2000
    repeats: int = 3
    n_projections: int = 64
    seed: int = 0
    projection_seed: int = 0
    device: Union[str, torch.device] = "cpu"
    dtype: torch.dtype = torch.float64
    floor_draws: int = 8

    def __post_init__(self):
        for name, low in (("n_samples", 2), ("repeats", 1), ("n_projections", 1), ("seed", 0),
                          ("projection_seed", 0), ("floor_draws", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                raise ValueError(f"MonteCarlo.{name} must be an int >= {low}, got {value!r}")
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise TypeError(f"MonteCarlo.dtype must be a floating-point torch.dtype, got {self.dtype!r}")
        torch.device(self.device)  # refuses a malformed device string

    def describe(self) -> dict:
        """The settings as plain data (a result's ``meta["monte_carlo"]``)."""
        return {"n_samples": self.n_samples, "repeats": self.repeats, "n_projections": self.n_projections,
                "seed": self.seed, "projection_seed": self.projection_seed,
                "device": str(torch.device(self.device)), "dtype": str(self.dtype).replace("torch.", ""),
                "floor_draws": self.floor_draws}


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error ``std / sqrt(len)`` (NaN for one value)."""
    mean = float(statistics.fmean(values))
    se = float(statistics.stdev(values) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return mean, se


def exact_error(method: Sampler, score: GaussianScore, exact: GaussianScore, time_grid: TimeGrid,
                prior: str, reference_time: float) -> float:
    """Exact W2 between the sampler's output law (started from the target's p_T for
    ``prior="exact"``, from N(0, I) for ``"normal"``) and the target's p_{reference_time}."""
    start = exact.mean_and_cov(time_grid.T) if prior == "exact" else "normal"  # the target's p_T, not the score's
    mean, cov = exact_output_law(method, score, grid=time_grid, prior=start)
    reference_mean, reference_cov = exact.mean_and_cov(reference_time)
    return gaussian_w2(mean, cov, reference_mean, reference_cov)


class MonteCarloJudge:
    """Runs samplers over the repeats and measures them against cached exact samples.

    Args:
        exact: the target's exact score (it samples p_t).
        settings: the :class:`MonteCarlo` settings.
    """

    def __init__(self, exact: GaussianMixtureScore, settings: MonteCarlo):
        self.exact, self.settings = exact, settings
        self.device = torch.device(settings.device)
        self._references: dict = {}

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def reference(self, t: float, repeat: int) -> Tensor:
        """Exact samples of p_t for one repeat, (n_samples, d), drawn once and cached."""
        key = (t, repeat)
        if key not in self._references:
            gen = self._generator(self.settings.seed + 1_000_003 + repeat)
            self._references[key] = self.exact.sample(self.settings.n_samples, t, generator=gen,
                                                       device=self.device, dtype=self.settings.dtype)
        return self._references[key]

    def distance(self, x: Tensor, y: Tensor) -> float:
        """Sliced W2 between two sample sets, on the fixed projections."""
        projections = torch.Generator().manual_seed(self.settings.projection_seed)
        return sliced_wasserstein(x, y, self.settings.n_projections, p=2.0, generator=projections)

    def run(self, score, method: Sampler, time_grid: TimeGrid, prior: str, reference_time: float) -> dict:
        """Errors over the repeats: dict with error, error_se, nfe, wall_time_s (median)."""
        s = self.settings
        errors, walls, nfe = [], [], None
        for repeat in range(s.repeats):
            gen = self._generator(s.seed + repeat)
            if prior == "exact":
                x_T = self.exact.sample(s.n_samples, time_grid.T, generator=gen, device=self.device, dtype=s.dtype)
            else:
                x_T = torch.randn((s.n_samples, self.exact.dim), generator=gen, device=self.device, dtype=s.dtype)
            with torch.no_grad():  # a learned score builds no autograd graph over the steps
                x, info = sample(score, method, grid=time_grid, x_T=x_T, generator=gen, return_info=True)
            errors.append(self.distance(x, self.reference(reference_time, repeat)))
            walls.append(info["wall_time_s"])
            nfe = info["nfe"]
        error, error_se = mean_and_se(errors)
        return {"error": error, "error_se": error_se, "nfe": nfe, "wall_time_s": float(statistics.median(walls))}

    def floor_draw(self, t: float, draw: int) -> float:
        """One pair behind the floor: the metric between an exact sample set of p_t (seed
        ``seed + 2_000_003 + draw``) and the reference samples of repeat ``draw``."""
        s = self.settings
        gen = self._generator(s.seed + 2_000_003 + draw)
        other = self.exact.sample(s.n_samples, t, generator=gen, device=self.device, dtype=s.dtype)
        return self.distance(other, self.reference(t, draw))

    def floor(self, t: float) -> tuple[float, float]:
        """The metric between two independent exact sample sets of p_t: the estimator's floor,
        (mean, standard error) over ``settings.floor_draws`` independent pairs (:meth:`floor_draw`)."""
        return mean_and_se([self.floor_draw(t, draw) for draw in range(self.settings.floor_draws)])

    def floor_cells(self, t: float) -> list[Callable[[], float]]:
        """The floor's draws as cells for :func:`run_cells`; :func:`mean_and_se` of their values
        is :meth:`floor`."""
        return [functools.partial(self.floor_draw, t, draw) for draw in range(self.settings.floor_draws)]


def use_exact(estimator: str, exact, score, method: Sampler) -> bool:
    """Whether the exact estimator applies; refuse ``estimator="exact"`` where it cannot.

    Raises:
        ValueError: ``estimator="exact"`` without a Gaussian target, a GaussianScore score and a
            method with an exact output law.
    """
    possible = isinstance(exact, GaussianScore) and isinstance(score, GaussianScore) and method.has_exact_law
    if estimator == "exact" and not possible:
        raise ValueError(f"estimator='exact' needs a Gaussian target, a GaussianScore score and a method with an "
                         f"exact output law (fixed-step; pc with a numeric step_size); {method.label!r} on "
                         f"{exact!r} with {type(score).__name__} does not qualify (use 'auto' or 'monte_carlo')")
    return possible and estimator != "monte_carlo"


def _call(cell: Callable[[], Any]) -> Any:
    return cell()


def run_cells(cells: Sequence[Callable[[], Any]]) -> list:
    """``[cell() for cell in cells]``: a study's independent cells (zero-argument callables
    returning plain data), dealt round-robin over the ranks of the default process group and
    merged in order on every rank by :func:`diffsde.distributed.world.map_cells`; a plain loop
    in this process when no group is initialised.

    Every cell draws its random numbers from its own seeds only (:class:`MonteCarloJudge`: the
    repeat's seeds, the floor draw's seed, the fixed projections; no global generator), and the
    caches it reads (exact references per (t, repeat), a score's per-time constants) hold values
    that do not depend on which cells ran before, so a cell returns the same floats on any rank
    as in a serial run, provided the ranks compute as the single process does (same hardware,
    library build and intra-op thread count: torch's CPU reductions may round differently with
    another thread count). Only whole cells are shared out: a cell is never split, and each
    rank draws the reference samples its own cells need, so those draws repeat across ranks.
    A cell that raises stops its rank; the others stop with
    :class:`diffsde.distributed.world.DistributedError` at the merge (at the latest after the
    group's timeout).
    """
    return map_cells(_call, cells)
