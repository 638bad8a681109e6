"""Studies the toolkit exists for: the continuous-time limit and sampler comparisons.

* :func:`alpha_bar_limit`: how fast ᾱ_i -> e^{-t_i} (seed 000, eq. "alpha bar limit").
* :func:`convergence_study`: error against the number of steps, per method, with fitted
  orders and confidence intervals.
* :func:`compare_samplers`: error against score evaluations and wall time, one table.
* :func:`error_budget`: the final error split into score error, discretization, prior
  mismatch and early stopping, by switching each off in turn.

The *target* is an exact score (:class:`~diffsde.GaussianScore`,
:class:`~diffsde.GaussianMixtureScore`) or a toy with one (``diffsde.toys.gaussian()``,
``ring()``, ...): it supplies the exact p_t every error is measured against. Two estimators:

* ``"exact"`` (Gaussian target, an affine score, a fixed-step method): the sampler's output
  law from :func:`diffsde.exact_output_law` and the exact 2-Wasserstein distance
  (:func:`diffsde.metrics.gaussian_w2`) to the exact law; no Monte Carlo at all.
* ``"monte_carlo"`` (otherwise): the sliced 2-Wasserstein distance
  (:func:`diffsde.metrics.sliced_wasserstein`, fixed projections) between the sampler's
  output and exact samples of the target law, over ``repeats`` seeds, mean ± standard error.
  It has a floor from the finite sample size, reported as ``floor`` in ``meta``: the same
  distance between two independent sets of exact samples.

The two are different distances in d > 1 (SW2 <= W2; equal in 1-D), so compare values
within one estimator, and orders across them; every row names its estimator.

Methods are given as specs: ``"vp"``, ``"ddpm"``, ``"em"``, ``"pc"``, ``"ode-euler"``,
``"ode-heun"``, ``"ode-RK45"`` (any ode solver), ``"torchsde-euler"`` (any torchsde solver),
or a ``(spec, options)`` pair such as ``("ddpm", {"variance": "beta_tilde"})``; see
:func:`resolve_method`.

Grids: ``grid="linear"`` uses ``BetaSchedule.linear(n).grid(t_min)`` (Song et al.'s linear
rate, T = 10.05 for every n, seed-000 times; the grid ends at its first time >= t_min, so for
t_min > 0 its end ``t_end`` moves with n, and errors are measured against p_{t_end});
``grid="uniform"`` uses ``TimeGrid.uniform(T, t_min, n)`` (ends exactly at t_min; T defaults
to 10.05); a callable ``n -> TimeGrid`` is used as given.

Results are :class:`StudyResult` objects: plain lists of dict rows (plus summary rows and
settings) that print as tables and save to JSON/CSV and load back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import scipy.stats
import torch
from torch import Tensor

from ._io import write_text_atomic
from ._table import format_table
from .exact_law import exact_output_law, has_exact_law
from .metrics import gaussian_w2, sliced_wasserstein
from .samplers import ODE_ADAPTIVE, ODE_FIXED, TORCHSDE_SOLVERS, plan, sample
from .schedules import BetaSchedule, TimeGrid
from .scores import GaussianMixtureScore, GaussianScore

__all__ = [
    "alpha_bar_limit",
    "fit_order",
    "order_fit",
    "MethodSpec",
    "resolve_method",
    "MonteCarlo",
    "StudyResult",
    "convergence_study",
    "compare_samplers",
    "error_budget",
]

SCHEDULES: dict[str, Callable[[int], BetaSchedule]] = {
    "linear": BetaSchedule.linear,
    "cosine": BetaSchedule.cosine,
}

DEFAULT_METHODS = ("vp", "ddpm", "em", "ode-euler", "ode-heun")
LINEAR_T = BetaSchedule.linear(21).T  # (beta_min + beta_max) / 2 = 10.05 for every n
ESTIMATORS = ("auto", "exact", "monte_carlo")
PRIORS = ("normal", "exact")

PathLike = Union[str, os.PathLike]
GridSpec = Union[str, Callable[[int], TimeGrid]]


# --------------------------------------------------------------------------------------
# The ᾱ limit and order fits.
# --------------------------------------------------------------------------------------

def fit_order(ns: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of ``-log(error)`` against ``log(n)``: the convergence order p in
    ``error ≈ C n^{-p}``."""
    ns = np.asarray(ns, dtype=float)
    errors = np.asarray(errors, dtype=float)
    if ns.size < 2 or ns.size != errors.size:
        raise ValueError(f"need at least two (n, error) pairs of equal length, got {ns.size} and {errors.size}")
    if not (np.all(ns > 0) and np.all(errors > 0)):
        raise ValueError("fit_order needs positive step counts and positive errors")
    slope = np.polyfit(np.log(ns), np.log(errors), 1)[0]
    return float(-slope)


def order_fit(ns: Sequence[float], errors: Sequence[float], confidence: float = 0.95) -> dict:
    """The order p in ``error ≈ C n^{-p}`` with a confidence interval.

    Ordinary least squares of ``log(error)`` on ``log(n)`` (the same slope as
    :func:`fit_order`); the interval is ``p ± t_{(1+confidence)/2, m-2} · se(p)`` with the
    slope's least-squares standard error and Student's t on m - 2 degrees of freedom (m
    points). For exact errors the scatter it measures is the curvature of the log-log line
    (higher-order terms), not noise: a narrow interval says the asymptotic regime is reached.
    With m = 2 the interval is undefined (NaN).

    Returns:
        dict with ``order``, ``order_se``, ``order_ci_low``, ``order_ci_high``, ``fit_points``.

    Raises:
        ValueError: fewer than two pairs, unequal lengths, non-positive n or error, or
            ``confidence`` outside (0, 1).
    """
    ns_array = np.asarray(ns, dtype=float)
    errors_array = np.asarray(errors, dtype=float)
    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if ns_array.size < 2 or ns_array.size != errors_array.size:
        raise ValueError(f"need at least two (n, error) pairs of equal length, "
                         f"got {ns_array.size} and {errors_array.size}")
    if not (np.all(ns_array > 0) and np.all(errors_array > 0) and np.all(np.isfinite(errors_array))):
        raise ValueError("order_fit needs positive step counts and positive finite errors")
    fit = scipy.stats.linregress(np.log(ns_array), np.log(errors_array))
    m = int(ns_array.size)
    if m > 2:
        se = float(fit.stderr)
        half_width = float(scipy.stats.t.ppf(0.5 + confidence / 2, m - 2)) * se
    else:
        se = half_width = math.nan
    order = -float(fit.slope)
    return {"order": order, "order_se": se, "order_ci_low": order - half_width,
            "order_ci_high": order + half_width, "fit_points": m}


def alpha_bar_limit(schedules: Sequence[str] | Mapping[str, Callable[[int], BetaSchedule]] = ("linear",),
                    ns: Sequence[int] = (100, 1000, 10000)) -> tuple[list[dict], dict[str, float]]:
    """How fast ᾱ_i -> e^{-t_i} (seed 000, eq. "alpha bar limit").

    For each schedule and n: ``max_i |ᾱ_i - e^{-t_i}|`` on seed-000 times ``t_i = Σ_{j<i} β_j``,
    ``n`` times that error, and the same error on exact times ``τ_i = -log ᾱ_i`` (zero up
    to rounding). Returns (rows, fitted order per schedule). For the linear schedule the
    order is 1 and ``n · error -> 0.8622``.
    """
    if isinstance(schedules, Mapping):
        factories = dict(schedules)
    else:
        unknown = [name for name in schedules if name not in SCHEDULES]
        if unknown:
            raise ValueError(f"unknown schedule {unknown[0]!r}; choose from {sorted(SCHEDULES)}")
        factories = {name: SCHEDULES[name] for name in schedules}
    rows: list[dict] = []
    orders: dict[str, float] = {}
    for name, factory in factories.items():
        errors = []
        for n in ns:
            schedule = factory(int(n))
            error = float((schedule.alpha_bars - torch.exp(-schedule.times)).abs().max())
            exact = float((schedule.alpha_bars - torch.exp(-schedule.exact_times)).abs().max())
            errors.append(error)
            rows.append({"schedule": name, "n": int(n), "T": schedule.T, "max_error": error,
                         "n_times_error": n * error, "max_error_exact_times": exact})
        orders[name] = fit_order(ns, errors) if len(ns) > 1 else math.nan
    return rows, orders


# --------------------------------------------------------------------------------------
# Results: one plain-data class for every study.
# --------------------------------------------------------------------------------------

RESULT_FORMAT = "diffsde.StudyResult"
RESULT_VERSION = 1
_INT_TEXT = re.compile(r"[+-]?\d+")


@dataclass
class StudyResult:
    """The result of a study: plain data that prints as a table and saves to JSON or CSV.

    Attributes:
        kind: which study made it ("convergence", "comparison", "error_budget"; "" when
            loaded from CSV, which holds the rows only).
        rows: the main table, one dict of scalars (str, int, float, bool or None) per row.
        summary: a second, smaller table (e.g. fitted orders per method); may be empty.
        meta: the settings and global figures (grid, t_min, Monte Carlo floor, ...).
    """

    kind: str
    rows: list[dict]
    summary: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def table(self, columns: Sequence[str] | None = None) -> str:
        """The rows as a Markdown table (:func:`diffsde._table.format_table`)."""
        return format_table(self.rows, columns)

    def summary_table(self, columns: Sequence[str] | None = None) -> str:
        """The summary rows as a Markdown table."""
        return format_table(self.summary, columns)

    def to_dict(self) -> dict:
        return {"format": RESULT_FORMAT, "version": RESULT_VERSION, "kind": self.kind,
                "rows": self.rows, "summary": self.summary, "meta": self.meta}

    @classmethod
    def from_dict(cls, payload: Any, where: str = "payload") -> "StudyResult":
        if not isinstance(payload, dict) or payload.get("format") != RESULT_FORMAT:
            raise ValueError(f"{where} is not a {RESULT_FORMAT} (no matching 'format' field)")
        if payload.get("version") != RESULT_VERSION:
            raise ValueError(f"{where} has version {payload.get('version')!r}; this diffsde reads "
                             f"version {RESULT_VERSION}")
        rows, summary, meta = payload.get("rows"), payload.get("summary", []), payload.get("meta", {})
        if not (isinstance(rows, list) and all(isinstance(row, dict) for row in rows)
                and isinstance(summary, list) and isinstance(meta, dict)):
            raise ValueError(f"{where}: 'rows' and 'summary' must be lists of objects, 'meta' an object")
        return cls(str(payload.get("kind", "")), rows, summary, meta)

    def to_json(self, path: PathLike) -> None:
        """Write everything (kind, rows, summary, meta) as JSON, atomically (temp file + rename).
        NaN is written as the token ``NaN`` (Python's json reads it back)."""
        _write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def to_csv(self, path: PathLike) -> None:
        """Write the rows as CSV, atomically. Columns are the union of the rows' keys in order
        of first appearance; None is written as an empty cell, floats in full precision."""
        columns: list[str] = []
        for row in self.rows:
            columns += [key for key in row if key not in columns]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in self.rows:
            writer.writerow(["" if row.get(key) is None else repr(row[key]) if isinstance(row[key], float)
                             else row[key] for key in columns])
        _write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: PathLike) -> "StudyResult":
        """Read a result written by :meth:`to_json` (everything) or :meth:`to_csv` (rows only).

        CSV cells are read back as None (empty), bool ("True"/"False"), int, float (including
        "nan" and "inf") or str, in that order of preference, so a text column whose values
        look like numbers comes back as numbers.

        Raises:
            ValueError: unknown suffix (not .json or .csv) or a malformed file.
            OSError: the file cannot be read.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from err
            return cls.from_dict(payload, str(path))
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header is None:
                    raise ValueError(f"{path} is empty: expected a CSV header line")
                rows = []
                for number, cells in enumerate(reader, start=2):
                    if len(cells) != len(header):
                        raise ValueError(f"{path}, line {number}: {len(cells)} cells for {len(header)} columns")
                    rows.append({key: _parse_cell(cell) for key, cell in zip(header, cells)})
            return cls("", rows)
        raise ValueError(f"cannot tell the format of {path}: the suffix must be .json or .csv, got {suffix!r}")


def _parse_cell(cell: str):
    if cell == "":
        return None
    if cell in ("True", "False"):
        return cell == "True"
    if _INT_TEXT.fullmatch(cell):
        return int(cell)
    try:
        return float(cell)
    except ValueError:
        return cell


def _write_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, os.replace)."""
    write_text_atomic(path, text)


# --------------------------------------------------------------------------------------
# Inputs: methods, targets, grids, step counts, Monte Carlo settings.
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MethodSpec:
    """A resolved method: its table label, the ``sample`` method name and its options."""

    label: str
    method: str
    options: dict

    @property
    def weak_order(self) -> float | None:
        """The order the sampler declares (None where it has none, e.g. pc with a corrector)."""
        return plan(self.method, self.options).weak_order

    @property
    def has_exact_law(self) -> bool:
        """Whether :func:`diffsde.exact_output_law` handles it: a fixed-step method, and pc only
        with a numeric step_size (Song's snr rule uses batch statistics, not an affine map)."""
        return has_exact_law(self.method, **self.options)

    def evals_per_step(self) -> int | None:
        """Score evaluations per step of a fixed-step method (None for adaptive/torchsde)."""
        run_plan = plan(self.method, self.options)
        return None if run_plan.fixed is None else run_plan.fixed.evals_per_step


_PLAIN_METHODS = ("vp", "ddpm", "em", "ode", "pc", "torchsde")
_SOLVER_METHODS = {"ode": (*ODE_FIXED, *ODE_ADAPTIVE), "torchsde": tuple(TORCHSDE_SOLVERS)}


def resolve_method(spec: Union[str, tuple, MethodSpec]) -> MethodSpec:
    """Turn a method spec into the ``sample(...)`` / ``exact_output_law(...)`` arguments.

    ``"vp"``, ``"ddpm"``, ``"em"``, ``"ode"``, ``"pc"``, ``"torchsde"`` are the samplers with
    their default options; ``"ode-<solver>"`` (euler, heun, RK45, ...) and
    ``"torchsde-<solver>"`` (euler, milstein, srk, ...) pick a solver; a ``(spec, options)``
    pair adds options, e.g. ``("pc", {"corrector_steps": 2})``, and is labelled
    ``"pc(corrector_steps=2)"``.

    Raises:
        ValueError / TypeError: an unknown name, solver or option (the sampler's own checks).
    """
    if isinstance(spec, MethodSpec):
        return spec
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[0], str) or not isinstance(spec[1], Mapping):
            raise TypeError(f"a method spec pair must be (name, options dict), got {spec!r}")
        base = resolve_method(spec[0])
        extra = dict(spec[1])
        options = {**base.options, **extra}
        label = base.label + ("(" + ", ".join(f"{k}={v}" for k, v in extra.items()) + ")" if extra else "")
        resolved = MethodSpec(label, base.method, options)
    elif isinstance(spec, str):
        name, _, solver = spec.partition("-")
        if name in _PLAIN_METHODS and not solver:
            resolved = MethodSpec(spec, name, {})
        elif name in _SOLVER_METHODS and solver:
            if solver not in _SOLVER_METHODS[name]:
                raise ValueError(f"unknown {name} solver {solver!r} in method spec {spec!r}; "
                                 f"choose from {list(_SOLVER_METHODS[name])}")
            resolved = MethodSpec(spec, name, {"solver": solver})
        else:
            raise ValueError(f"unknown method spec {spec!r}; use one of {list(_PLAIN_METHODS)}, "
                             f"'ode-<solver>', 'torchsde-<solver>', or a (spec, options) pair")
    else:
        raise TypeError(f"a method spec must be a str or a (name, options) pair, got {type(spec).__name__}")
    plan(resolved.method, resolved.options)  # refuses unknown options now, before any work
    return resolved


def _resolve_methods(methods) -> list[MethodSpec]:
    if isinstance(methods, (str, MethodSpec)) or (isinstance(methods, tuple) and len(methods) == 2
                                                  and isinstance(methods[1], Mapping)):
        methods = [methods]
    specs = [resolve_method(spec) for spec in methods]
    if not specs:
        raise ValueError("methods is empty: give at least one method spec")
    labels = [spec.label for spec in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"methods must have distinct labels; {duplicates[0]!r} appears twice")
    return specs


def _exact_target(target) -> GaussianMixtureScore:
    """The exact score of a target: the score itself, or a toy's ``exact_score``."""
    if isinstance(target, GaussianMixtureScore):
        return target
    exact = getattr(target, "exact_score", None)
    if getattr(target, "has_exact_score", False) and isinstance(exact, GaussianMixtureScore):
        return exact
    raise TypeError(f"target must be a GaussianScore, a GaussianMixtureScore or a toy with an exact score "
                    f"(e.g. diffsde.toys.ring()); got {target!r}, which has no closed-form p_t")


def _check_ns(ns, minimum: int) -> list[int]:
    try:
        values = list(ns)
    except TypeError as err:
        raise TypeError(f"ns must be a sequence of step counts, got {type(ns).__name__}") from err
    for n in values:
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
            raise ValueError(f"ns must hold positive ints, got {n!r}")
    values = [int(n) for n in values]
    if len(values) < minimum:
        raise ValueError(f"ns must hold at least {minimum} step counts, got {len(values)}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"ns must be strictly increasing, got {values}")
    return values


def _check_time_arg(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (0 <= float(value) < math.inf):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _grid_factory(grid: GridSpec, t_min: float, T: float | None) -> Callable[[int], TimeGrid]:
    """n -> the sampling grid: see the module docstring for "linear" and "uniform"."""
    t_min = _check_time_arg(t_min, "t_min")
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
        final = LINEAR_T if T is None else _check_time_arg(T, "T")
        if not final > t_min:
            raise ValueError(f"need T > t_min, got T={final!r}, t_min={t_min!r}")
        return lambda n: TimeGrid.uniform(final, t_min, n)
    raise ValueError(f"grid must be 'linear', 'uniform' or a callable n -> TimeGrid, got {grid!r}")


def _check_choice(value, name: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


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

    def __post_init__(self):
        for name, low in (("n_samples", 2), ("repeats", 1), ("n_projections", 1), ("seed", 0),
                          ("projection_seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                raise ValueError(f"MonteCarlo.{name} must be an int >= {low}, got {value!r}")
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise TypeError(f"MonteCarlo.dtype must be a floating-point torch.dtype, got {self.dtype!r}")
        torch.device(self.device)  # refuses a malformed device string

    def describe(self) -> dict:
        return {"n_samples": self.n_samples, "repeats": self.repeats, "n_projections": self.n_projections,
                "seed": self.seed, "projection_seed": self.projection_seed,
                "device": str(torch.device(self.device)), "dtype": str(self.dtype).replace("torch.", "")}


def _mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    mean = float(statistics.fmean(values))
    se = float(statistics.stdev(values) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return mean, se


# --------------------------------------------------------------------------------------
# The two estimators.
# --------------------------------------------------------------------------------------

def _exact_error(spec: MethodSpec, score: GaussianScore, exact: GaussianScore, time_grid: TimeGrid,
                 prior: str, reference_time: float) -> float:
    """Exact W2 between the sampler's output law (started from the target's p_T or N(0, I))
    and the target's p_{reference_time}."""
    start = exact.mean_and_cov(time_grid.T) if prior == "exact" else "prior"
    mean, cov = exact_output_law(spec.method, score, grid=time_grid, start=start, **spec.options)
    reference_mean, reference_cov = exact.mean_and_cov(reference_time)
    return gaussian_w2(mean, cov, reference_mean, reference_cov)


class _MonteCarloJudge:
    """Runs samplers over the repeats and measures them against cached exact samples."""

    def __init__(self, exact: GaussianMixtureScore, settings: MonteCarlo):
        self.exact, self.settings = exact, settings
        self.device = torch.device(settings.device)
        self._references: dict = {}

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def reference(self, t: float, repeat: int) -> Tensor:
        key = (t, repeat)
        if key not in self._references:
            gen = self._generator(self.settings.seed + 1_000_003 + repeat)
            self._references[key] = self.exact.sample(self.settings.n_samples, t, generator=gen,
                                                       device=self.device, dtype=self.settings.dtype)
        return self._references[key]

    def distance(self, x: Tensor, y: Tensor) -> float:
        projections = torch.Generator().manual_seed(self.settings.projection_seed)
        return sliced_wasserstein(x, y, self.settings.n_projections, p=2.0, generator=projections)

    def run(self, score, spec: MethodSpec, time_grid: TimeGrid, prior: str, reference_time: float) -> dict:
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
                x, info = sample(score, spec.method, grid=time_grid, x_T=x_T, generator=gen, return_info=True,
                                 **spec.options)
            errors.append(self.distance(x, self.reference(reference_time, repeat)))
            walls.append(info["wall_time_s"])
            nfe = info["nfe"]
        error, error_se = _mean_and_se(errors)
        return {"error": error, "error_se": error_se, "nfe": nfe, "wall_time_s": float(statistics.median(walls))}

    def floor(self, t: float) -> tuple[float, float]:
        """The metric between two independent exact sample sets of p_t: the estimator's floor."""
        s = self.settings
        values = []
        for repeat in range(s.repeats):
            gen = self._generator(s.seed + 2_000_003 + repeat)
            other = self.exact.sample(s.n_samples, t, generator=gen, device=self.device, dtype=s.dtype)
            values.append(self.distance(other, self.reference(t, repeat)))
        return _mean_and_se(values)


def _use_exact(estimator: str, exact, score, spec: MethodSpec) -> bool:
    """Whether the exact estimator applies; refuse estimator="exact" where it cannot."""
    possible = isinstance(exact, GaussianScore) and isinstance(score, GaussianScore) and spec.has_exact_law
    if estimator == "exact" and not possible:
        raise ValueError(f"estimator='exact' needs a Gaussian target, a GaussianScore score and a method with an "
                         f"exact output law (fixed-step; pc with a numeric step_size); {spec.label!r} on "
                         f"{exact!r} with {type(score).__name__} does not qualify (use 'auto' or 'monte_carlo')")
    return possible and estimator != "monte_carlo"


# --------------------------------------------------------------------------------------
# Studies.
# --------------------------------------------------------------------------------------

def convergence_study(target, methods: Sequence = DEFAULT_METHODS,
                      ns: Sequence[int] = (25, 50, 100, 200, 400), *, grid: GridSpec = "linear",
                      t_min: float = 0.0, T: float | None = None, prior: str = "exact",
                      estimator: str = "auto", monte_carlo: MonteCarlo | None = None,
                      confidence: float = 0.95) -> StudyResult:
    """Error against the number of steps n for each method, with fitted orders and intervals.

    Each method integrates the target's *exact* score over ``grid(n)`` (module docstring),
    started from the exact p_T (``prior="exact"``, the default: only discretization error is
    left) or from N(0, I) (``prior="normal"``: prior mismatch adds an n-independent floor of
    about e^{-T/2} ≈ 0.007 · |mean| and spoils the fit), and is compared with the exact
    p_{t_end} at the grid's last time t_end (= t_min for t_min = 0 or a uniform grid).

    * Gaussian target, fixed-step method: exact W2 of :func:`diffsde.exact_output_law`
      against p_{t_end} (no Monte Carlo).
    * Otherwise: sliced W2 against exact samples, mean ± standard error over
      ``monte_carlo.repeats`` seeds. The estimate cannot go below the floor set by the
      sample size (``meta["floor"]``); rows whose error is not clearly above it
      (``error - 2 se <= floor + 2 floor_se``) have ``above_floor = False`` and are left
      out of the fit, since the floor flattens the slope.

    Orders come from :func:`order_fit` (least squares in log-log, Student-t interval at
    ``confidence``) and are listed with the order each method declares.

    Args:
        target: GaussianScore, GaussianMixtureScore or a toy with an exact score.
        methods: method specs (:func:`resolve_method`).
        ns: at least three strictly increasing step counts (three so the interval exists);
            the linear grid needs n >= 21.
        grid: "linear", "uniform" or a function of n returning a TimeGrid (module docstring).
        t_min: where the grids end (module docstring).
        T: where "uniform" grids start (module docstring).
        prior: "exact" or "normal".
        estimator: "auto" (exact where possible), "exact" (refuse otherwise), "monte_carlo".
        monte_carlo: :class:`MonteCarlo` settings (default ``MonteCarlo()``); the Monte
            Carlo estimate needs ``repeats >= 2`` (its error bars).

    Returns:
        StudyResult(kind="convergence"): rows (method, n, t_end, nfe, estimator, error,
        error_se, above_floor); summary per method (declared_order, order, order_se,
        order_ci_low, order_ci_high, fit_points); meta (settings, floor).

    Raises:
        ValueError / TypeError: unknown method or option, bad ns, grid, t_min, T, prior or
            estimator; a target without an exact score.
    """
    exact = _exact_target(target)
    specs = _resolve_methods(methods)
    ns = _check_ns(ns, 3)
    _check_choice(prior, "prior", PRIORS)
    _check_choice(estimator, "estimator", ESTIMATORS)
    settings = monte_carlo if monte_carlo is not None else MonteCarlo()
    make_grid = _grid_factory(grid, t_min, T)
    grids = {n: make_grid(n) for n in ns}  # every grid is built (and checked) before any run
    use_exact = {spec.label: _use_exact(estimator, exact, exact, spec) for spec in specs}
    if not all(use_exact.values()) and settings.repeats < 2:
        raise ValueError(f"the Monte Carlo estimate needs error bars: monte_carlo.repeats must be >= 2, "
                         f"got {settings.repeats}")
    judge = _MonteCarloJudge(exact, settings)
    floor = judge.floor(float(t_min)) if not all(use_exact.values()) else None

    rows, summary = [], []
    for spec in specs:
        method_rows = []
        for n in ns:
            time_grid = grids[n]
            t_end = time_grid.t_min
            if use_exact[spec.label]:
                error = _exact_error(spec, exact, exact, time_grid, prior, t_end)
                measured = {"nfe": spec.evals_per_step() * time_grid.n, "estimator": "exact", "error": error,
                            "error_se": 0.0, "above_floor": None}
            else:
                result = judge.run(exact, spec, time_grid, prior, t_end)
                above = result["error"] - 2 * result["error_se"] > floor[0] + 2 * floor[1]
                measured = {"nfe": result["nfe"], "estimator": "monte_carlo", "error": result["error"],
                            "error_se": result["error_se"], "above_floor": bool(above)}
            method_rows.append({"method": spec.label, "n": n, "t_end": t_end, **measured})
        rows += method_rows
        fitted = [row for row in method_rows if row["above_floor"] is not False and row["error"] > 0]
        if len(fitted) >= 2:
            fit = order_fit([row["n"] for row in fitted], [row["error"] for row in fitted], confidence)
        else:
            fit = {"order": math.nan, "order_se": math.nan, "order_ci_low": math.nan,
                   "order_ci_high": math.nan, "fit_points": len(fitted)}
        summary.append({"method": spec.label, "estimator": method_rows[0]["estimator"],
                        "declared_order": spec.weak_order, **fit})
    meta = {"target": repr(target), "grid": grid if isinstance(grid, str) else repr(grid), "t_min": float(t_min),
            "T": grids[ns[0]].T, "prior": prior, "confidence": confidence, "ns": ns,
            "monte_carlo": settings.describe() if floor is not None else None,
            "floor": None if floor is None else {"mean": floor[0], "se": floor[1]}}
    return StudyResult("convergence", rows, summary, meta)


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

    Returns:
        StudyResult(kind="comparison"): rows (method, n, t_end, nfe, wall_time_s, error,
        error_se, w2_exact); meta (settings, floor).

    Raises:
        ValueError / TypeError: as :func:`convergence_study` (ns needs one count or more).
    """
    exact = _exact_target(target)
    score = exact if score is None else score
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
    specs = _resolve_methods(methods)
    ns = _check_ns(ns, 1)
    _check_choice(prior, "prior", PRIORS)
    settings = monte_carlo if monte_carlo is not None else MonteCarlo(dtype=torch.float32)
    make_grid = _grid_factory(grid, t_min, T)
    grids = {n: make_grid(n) for n in ns}
    judge = _MonteCarloJudge(exact, settings)
    floor = judge.floor(float(t_min))

    rows = []
    for spec in specs:
        for n in ns:
            time_grid = grids[n]
            result = judge.run(score, spec, time_grid, prior, time_grid.t_min)
            w2_exact = None
            if _use_exact("auto", exact, score, spec):
                w2_exact = _exact_error(spec, score, exact, time_grid, prior, time_grid.t_min)
            rows.append({"method": spec.label, "n": n, "t_end": time_grid.t_min, "nfe": result["nfe"],
                         "wall_time_s": result["wall_time_s"], "error": result["error"],
                         "error_se": result["error_se"], "w2_exact": w2_exact})
    meta = {"target": repr(target), "score": repr(score), "grid": grid if isinstance(grid, str) else repr(grid),
            "t_min": float(t_min), "T": grids[ns[0]].T, "prior": prior, "ns": ns,
            "monte_carlo": settings.describe(), "floor": {"mean": floor[0], "se": floor[1]}}
    return StudyResult("comparison", rows, [], meta)


def _fine_grid(grid: GridSpec, make_grid: Callable[[int], TimeGrid], coarse: TimeGrid, n: int,
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


_BUDGET_SOURCES = (
    # (source, what is switched off, exact score?, fine grid?, exact prior?, compare with p_{t_end}?)
    ("total", "nothing: all sources on", False, False, False, False),
    ("score", "exact score instead of the given one", True, False, False, False),
    ("discretization", "fine grid (fine_factor x n steps)", False, True, False, False),
    ("prior", "exact p_T instead of N(0, I) at the start", False, False, True, False),
    ("early_stopping", "compared with p_{t_end} instead of p_0", False, False, False, True),
    ("residual", "everything", True, True, True, True),
)


def error_budget(target, score=None, method="em", n: int = 100, *, grid: GridSpec = "linear",
                 t_min: float = 1e-3, T: float | None = None, fine_factor: int = 16, estimator: str = "auto",
                 monte_carlo: MonteCarlo | None = None) -> StudyResult:
    """The final error split into its sources, by switching each one off in turn.

    The total is the distance between what ``method`` produces with ``score`` on ``grid(n)``
    from N(0, I), stopped at t_end (the grid's last time, >= t_min), and the data law p_0.
    Each source is then switched off alone:

    * score: the target's exact score instead of ``score`` (0 when ``score`` is exact);
    * discretization: ``fine_factor`` times more steps over the same [t_end, T] (the linear
      schedule refined with :meth:`BetaSchedule.refine`, a uniform grid with more steps);
    * prior: the exact p_T instead of N(0, I);
    * early stopping: compare with p_{t_end} instead of p_0.

    Each row's ``contribution`` is the total minus the error with that source off. The
    distances are not additive, so contributions need not sum to the total; the last row
    (everything off) shows what is left: fine-grid error plus, for Monte Carlo, the floor.

    Estimator: exact W2 (:func:`diffsde.exact_output_law`) when the target is Gaussian, the
    score a GaussianScore (the exact one, or a deliberately wrong Gaussian one) and the
    method fixed-step; otherwise Monte Carlo as in :func:`convergence_study` (the same seeds
    for every row, so an unchanged configuration gives an identical error).

    Args:
        target: as :func:`convergence_study`.
        score: the score to judge (default: the target's exact score).
        method: one method spec.
        n: steps.
        fine_factor: int >= 2, the refinement that switches discretization off.
        grid: as :func:`convergence_study`.
        t_min: as :func:`convergence_study`.
        T: as :func:`convergence_study`.
        estimator: as :func:`convergence_study`.
        monte_carlo: as :func:`convergence_study`.

    Returns:
        StudyResult(kind="error_budget"): rows (source, switched_off, steps, t_end, prior,
        reference_time, estimator, error, error_se, contribution); meta (settings, floor).

    Raises:
        ValueError / TypeError: bad method, n, fine_factor, grid, times or estimator.
    """
    exact = _exact_target(target)
    score = exact if score is None else score
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
    spec = resolve_method(method)
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(fine_factor, bool) or not isinstance(fine_factor, Integral) or fine_factor < 2:
        raise ValueError(f"fine_factor must be an int >= 2, got {fine_factor!r}")
    _check_choice(estimator, "estimator", ESTIMATORS)
    settings = monte_carlo if monte_carlo is not None else MonteCarlo(dtype=torch.float32)
    make_grid = _grid_factory(grid, t_min, T)
    coarse = make_grid(int(n))
    grids = {False: coarse, True: _fine_grid(grid, make_grid, coarse, int(n), int(fine_factor))}
    use_exact = _use_exact(estimator, exact, score, spec)
    judge = None if use_exact else _MonteCarloJudge(exact, settings)
    floor = None if use_exact else judge.floor(0.0)

    cache: dict = {}
    rows = []
    for source, switched_off, exact_score, fine, exact_prior, at_end in _BUDGET_SOURCES:
        run_score = exact if exact_score else score
        time_grid = grids[fine]
        prior = "exact" if exact_prior else "normal"
        reference_time = time_grid.t_min if at_end else 0.0
        key = (id(run_score), fine, prior, reference_time)
        if key not in cache:
            if use_exact:
                cache[key] = (_exact_error(spec, run_score, exact, time_grid, prior, reference_time), 0.0)
            else:
                result = judge.run(run_score, spec, time_grid, prior, reference_time)
                cache[key] = (result["error"], result["error_se"])
        error, error_se = cache[key]
        rows.append({"source": source, "switched_off": switched_off, "steps": time_grid.n,
                     "t_end": time_grid.t_min, "prior": prior, "reference_time": reference_time,
                     "estimator": "exact" if use_exact else "monte_carlo", "error": error, "error_se": error_se})
    total = rows[0]["error"]
    for row in rows:
        row["contribution"] = total - row["error"]
    meta = {"target": repr(target), "score": repr(score), "method": spec.label, "n": int(n),
            "fine_factor": int(fine_factor), "grid": grid if isinstance(grid, str) else repr(grid),
            "t_min": float(t_min), "T": grids[False].T,
            "monte_carlo": None if use_exact else settings.describe(),
            "floor": None if floor is None else {"mean": floor[0], "se": floor[1]}}
    return StudyResult("error_budget", rows, [], meta)
