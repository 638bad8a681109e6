"""Matplotlib figures for the toolkit's objects and studies; no display needed.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot, so no global
state and no GUI backend: PNGs are rendered by Agg), returns it, and, when ``path`` is
given, also saves it as a PNG atomically: to a temporary file in the same folder, then
renamed over ``path`` with ``os.replace``, so a crash never leaves a half-written image.

Data arguments are torch tensors or numpy arrays (read on the CPU as float64); samples
are (n, d) with d = 1 or 2 (an (n,) input is n points in 1-D). Times are forward OU times t.
Log axes get readable ticks (1-2-5 steps or a sweep's own step counts, never overlapping); reference
data are drawn in grey, over what they are compared with; densities share one colour scale, shown by a
colour bar; a legend never shows an order that could not be fitted.

* :func:`samples_vs_truth` — samples of one or several samplers over exact samples.
* :func:`sample_paths` — trajectories of the reverse process.
* :func:`marginal_densities` — the exact densities p_t at several t (1-D curves, 2-D maps).
* :func:`alpha_bar_vs_exp` — ᾱ_i against e^{-t_i} on the step-sum times, and their gap.
* :func:`convergence` — log–log error against step count with fitted slopes (and error bars).
* :func:`error_vs_nfe` — error against the number of score evaluations (and error bars).
* :func:`nll_vs_nfe` — a likelihood study's NLL (PF-ODE, VLB, exact) against score evaluations.
* :func:`training_loss` — per-step loss of :func:`diffsde.train` with a running mean.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import torch
from matplotlib.figure import Figure

from ._checks import check_bool
from ._io import write_atomic
from ._plot_inputs import as_array, as_named, as_points, as_series
from ._plot_style import (TRUTH_COLOR, check_errors, error_series, floor_line, grid_shape, log_label, outer_labels,
                          side_colorbar, tidy_log_axes)
from .orders import fit_order
from .schedules import BetaSchedule

__all__ = ["samples_vs_truth", "sample_paths", "marginal_densities", "alpha_bar_vs_exp", "convergence",
           "error_vs_nfe", "nll_vs_nfe", "training_loss", "save_figure"]

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float]]
PathLike = Union[str, os.PathLike]

_DPI = 100


# -- helpers ------------------------------------------------------------------------------

def save_figure(figure: Figure, path: PathLike, dpi: int = _DPI) -> Path:
    """Save ``figure`` as a PNG at ``path`` atomically (temporary file + ``os.replace``).

    Raises:
        ValueError: path does not end in ".png".
        OSError: the folder does not exist or is not writable.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=dpi))
    return path


def _finish(figure: Figure, path: PathLike | None) -> Figure:
    if path is not None:
        save_figure(figure, path)
    return figure


# -- samples ------------------------------------------------------------------------------

def samples_vs_truth(samples: Union[ArrayLike, Mapping[str, ArrayLike]], truth: ArrayLike | None,
                     path: PathLike | None = None, *, title: str | None = None, max_points: int = 2000,
                     bins: int = 60) -> Figure:
    """One panel per sample set, each compared with the exact ``truth`` samples (grey).

    In 2-D a scatter plot (at most ``max_points`` points of each set, the first ones): the samples
    as translucent blue dots, the truth as grey rings drawn over them, so both stay visible where
    they overlap. In 1-D density histograms on shared bins: the truth filled grey, the samples a
    blue outline. All panels share their axes limits; a legend under them names the two.

    Args:
        samples: (n, d) samples, or a mapping label -> (n, d) samples (e.g. one per method).
        truth: (m, d) samples of the target law, same d; or None to draw the samples alone.
        path: where to save a PNG, or None.
        title: the figure's title.
        max_points: points drawn per set in 2-D (>= 1).
        bins: histogram bins in 1-D (>= 1).
    """
    sets = as_named(samples, "samples")
    dims = {points.shape[1] for points in sets.values()}
    if len(dims) > 1:
        raise ValueError(f"every sample set must have the same dimension, got {sorted(dims)}")
    truth = as_points(truth, "truth") if truth is not None else np.empty((0, dims.pop()))
    if {points.shape[1] for points in sets.values()} != {truth.shape[1]}:
        raise ValueError(f"samples and truth must have the same dimension, got {sorted(dims)} and {truth.shape[1]}")
    if max_points < 1 or bins < 1:
        raise ValueError(f"max_points and bins must be >= 1, got {max_points} and {bins}")
    rows, columns = grid_shape(len(sets))
    figure = Figure(figsize=(2.8 * columns, 2.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=truth.shape[1] == 2)
    everything = np.concatenate([truth, *sets.values()])
    low, high = np.quantile(everything, [0.001, 0.999], axis=0)
    margin = 0.05 * (high - low) + 1e-12
    edges = np.linspace(low[0] - margin[0], high[0] + margin[0], bins + 1)
    for ax, (label, points) in zip(axes.flat, sets.items()):
        if truth.shape[1] == 2:
            # The truth is added first (the first collection) but drawn on top (zorder 3).
            if truth.shape[0]:
                ax.scatter(truth[:max_points, 0], truth[:max_points, 1], s=7, facecolors="none",
                           edgecolors=TRUTH_COLOR, linewidths=0.4, alpha=0.55, zorder=3, label="exact samples",
                           rasterized=True)
            ax.scatter(points[:max_points, 0], points[:max_points, 1], s=4, color="C0", alpha=0.75, linewidths=0,
                       zorder=2, label="samples", rasterized=True)
            ax.set_ylim(low[1] - margin[1], high[1] + margin[1])
            ax.set_aspect("equal", adjustable="box")
        else:
            if truth.shape[0]:
                ax.hist(truth[:, 0], bins=edges, density=True, color=TRUTH_COLOR, alpha=0.4, label="exact samples")
            ax.hist(points[:, 0], bins=edges, density=True, histtype="step", color="C0", lw=1.2, label="samples")
        ax.set_xlim(edges[0], edges[-1])
        ax.set_title(label, fontsize=9)
    two_d = truth.shape[1] == 2
    outer_labels(axes, len(sets), "$x_1$" if two_d else "x", "$x_2$" if two_d else "density")
    if truth.shape[0]:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, markerscale=2.5, frameon=False)
    if title:
        figure.suptitle(title)
    return _finish(figure, path)


def sample_paths(trajectories: ArrayLike, times: ArrayLike, path: PathLike | None = None, *,
                 n_paths: int = 32, title: str | None = None) -> Figure:
    """Trajectories of the reverse process, from forward time T down to t_min.

    1-D: each path x(t) against forward time t (the axis runs from T on the left to t_min).
    2-D: each path in the plane, from its start (grey dot, x_T) to its end (black dot), coloured
    by time; plus a second panel of both coordinates against t.

    Args:
        trajectories: (n+1, N, d) states at the grid times, T first (what
            ``sample(..., return_path=True)`` returns), d in {1, 2}.
        times: (n+1,) the forward times of those states, descending.
        n_paths: how many of the N paths to draw (the first ones, >= 1).
    """
    states = as_array(trajectories, "trajectories")
    times = as_array(times, "times").reshape(-1)
    if states.ndim == 2:
        states = states[:, :, None]
    if states.ndim != 3 or states.shape[2] not in (1, 2):
        raise ValueError(f"trajectories must have shape (n+1, N, d) with d in (1, 2), got {states.shape}")
    if times.shape[0] != states.shape[0]:
        raise ValueError(f"times must have one entry per state: {states.shape[0]}, got {times.shape[0]}")
    if n_paths < 1:
        raise ValueError(f"n_paths must be >= 1, got {n_paths}")
    states = states[:, :n_paths]
    d = states.shape[2]
    figure = Figure(figsize=(4.0 * d, 3.6), layout="constrained")
    axes = figure.subplots(1, d, squeeze=False)[0]
    if d == 2:
        plane = axes[0]
        for k in range(states.shape[1]):
            plane.plot(states[:, k, 0], states[:, k, 1], lw=0.6, alpha=0.7, color=f"C{k % 10}")
        plane.scatter(states[0, :, 0], states[0, :, 1], s=8, color="0.65", zorder=3, label="$x_T$")
        plane.scatter(states[-1, :, 0], states[-1, :, 1], s=8, color="black", zorder=3, label="x at t_min")
        plane.set_aspect("equal", adjustable="datalim")
        plane.set_title("paths in the plane", fontsize=9)
        plane.legend(fontsize=7, loc="upper right")
    coordinate_axes = axes[-1]
    for j in range(d):
        for k in range(states.shape[1]):
            coordinate_axes.plot(times, states[:, k, j], lw=0.6, alpha=0.7, color=f"C{j}",
                                 label=f"x[{j}]" if k == 0 else None)
    coordinate_axes.set_xlim(times[0], times[-1])  # T on the left: the reverse process runs left to right
    coordinate_axes.set_xlabel("forward OU time t")
    coordinate_axes.set_ylabel("x")
    coordinate_axes.set_title("coordinates against t", fontsize=9)
    if d > 1:
        coordinate_axes.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    return _finish(figure, path)


# -- exact quantities ---------------------------------------------------------------------

def marginal_densities(density: Union[Callable, object], times: Sequence[float], path: PathLike | None = None, *,
                       limits: tuple[float, float] = (-6.0, 6.0), resolution: int = 200, dim: int | None = None,
                       shared_scale: bool = True, title: str | None = None) -> Figure:
    """The densities p_t at several forward times t, from an exact ``log_prob(x, t)``.

    1-D: every p_t as a curve on one axes. 2-D: one panel per t with p_t as an image on
    ``limits``², with axes x₁, x₂ and a colour bar. The densities are evaluated in float64 on a
    ``resolution``-point grid per axis.

    Args:
        density: an object with ``log_prob(x, t)`` (a :class:`~diffsde.GaussianMixtureScore`
            or a closed-form toy), or that callable itself; x is (m, d) float64.
        times: forward OU times t >= 0.
        limits: (low, high) of every axis.
        resolution: grid points per axis (>= 2).
        dim: the data dimension (1 or 2); default ``density.dim``.
        shared_scale: 2-D only. True: one colour scale [0, max over all panels] for every panel and
            one colour bar, so brightness compares across t. False: each panel on its own scale
            [0, its max], with its own colour bar and "(own scale)" in its title.
    """
    check_bool(shared_scale, "shared_scale")
    log_prob = getattr(density, "log_prob", density)
    if not callable(log_prob):
        raise TypeError(f"density must have a log_prob(x, t) method or be callable, got {type(density).__name__}")
    dim = getattr(density, "dim", None) if dim is None else dim
    if dim not in (1, 2):
        raise ValueError(f"marginal_densities draws 1-D or 2-D densities; dim must be 1 or 2, got {dim!r}")
    times = [float(t) for t in times]
    if not times or any(not (t >= 0) for t in times):
        raise ValueError(f"times must be a non-empty sequence of forward times >= 0, got {times}")
    low, high = (float(v) for v in limits)
    if not low < high:
        raise ValueError(f"limits must be (low, high) with low < high, got {limits}")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    axis = torch.linspace(low, high, resolution, dtype=torch.float64)
    if dim == 1:
        figure = Figure(figsize=(5.0, 3.4), layout="constrained")
        ax = figure.subplots()
        for t in times:
            values = torch.exp(log_prob(axis[:, None], t)).numpy()
            ax.plot(axis.numpy(), values, label=f"t = {t:g}")
        ax.set_xlabel("x")
        ax.set_ylabel("p_t(x)")
        ax.legend(fontsize=8)
    else:
        rows, columns = grid_shape(len(times), max_columns=5)
        figure = Figure(figsize=(2.6 * columns + 0.8, 2.6 * rows + 0.3), layout="constrained")
        axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
        grid_x, grid_y = torch.meshgrid(axis, axis, indexing="xy")
        points = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
        maps = [torch.exp(log_prob(points, t)).reshape(resolution, resolution).numpy() for t in times]
        top = max(float(values.max()) for values in maps)
        for ax, t, values in zip(axes.flat, times, maps):
            image = ax.imshow(values, origin="lower", extent=(low, high, low, high), cmap="viridis", vmin=0.0,
                              vmax=(top if shared_scale else float(values.max())) or 1.0)
            ax.set_title(f"p_t, t = {t:g}" + ("" if shared_scale else " (own scale)"), fontsize=9)
            if not shared_scale:
                side_colorbar(ax, image, "")
        if shared_scale:
            side_colorbar(axes[0, min(len(times), columns) - 1], image, "density $p_t(x)$ (all panels)")
        outer_labels(axes, len(times), "$x_1$", "$x_2$")
    if title:
        figure.suptitle(title)
    return _finish(figure, path)


def alpha_bar_vs_exp(schedules: Union[BetaSchedule, Mapping[str, BetaSchedule]], path: PathLike | None = None, *,
                     title: str | None = None) -> Figure:
    """ᾱ_i against e^{-t_i} on the step-sum times ``t_i = Σ_{j<i} β_j`` (one VP step is an Euler step of
    size β_j, Song et al. 2021, appendix B; ᾱ_i is Ho et al. 2020's, eq. 4).

    Left: ᾱ_i (markers) and e^{-t} (line) against t. Right: the gap ``|ᾱ_i - e^{-t_i}|``
    against t on a log axis, which shrinks like 1/n as the schedule is refined.

    Args:
        schedules: a :class:`BetaSchedule` or a mapping label -> schedule.
    """
    if isinstance(schedules, BetaSchedule):
        schedules = {f"n = {schedules.n}": schedules}
    if not isinstance(schedules, Mapping) or not schedules:
        raise ValueError("schedules must be a BetaSchedule or a non-empty mapping label -> BetaSchedule")
    for label, schedule in schedules.items():
        if not isinstance(schedule, BetaSchedule):
            raise TypeError(f"schedules[{label!r}] must be a BetaSchedule, got {type(schedule).__name__}")
    figure = Figure(figsize=(9.0, 3.6), layout="constrained")
    values_ax, gap_ax = figure.subplots(1, 2)
    longest = max(schedule.T for schedule in schedules.values())
    line = np.linspace(0.0, longest, 400)
    values_ax.plot(line, np.exp(-line), color="black", lw=1, label="$e^{-t}$")
    for k, (label, schedule) in enumerate(schedules.items()):
        times = schedule.times.detach().to("cpu", torch.float64).numpy()
        alpha_bars = schedule.alpha_bars.detach().to("cpu", torch.float64).numpy()
        every = max(1, times.size // 40)  # about 40 markers per schedule
        values_ax.plot(times[::every], alpha_bars[::every], "o", ms=3, color=f"C{k}",
                       label=rf"$\bar\alpha_i$, {label}")
        gap = np.abs(alpha_bars - np.exp(-times))
        positive = gap > 0
        gap_ax.semilogy(times[positive], gap[positive], color=f"C{k}", label=label)
    values_ax.set_xlabel(r"$t_i = \sum_{j<i} \beta_j$")
    values_ax.set_ylabel(r"$\bar\alpha$")
    values_ax.legend(fontsize=8)
    gap_ax.set_xlabel(r"$t_i = \sum_{j<i} \beta_j$")
    gap_ax.set_ylabel(r"$|\bar\alpha_i - e^{-t_i}|$")
    gap_ax.legend(fontsize=8)
    tidy_log_axes(gap_ax)
    figure.suptitle(title or r"$\bar\alpha_i \to e^{-t_i}$ as the schedule is refined")
    return _finish(figure, path)


# -- studies ------------------------------------------------------------------------------

def convergence(series: Mapping[str, tuple[ArrayLike, ArrayLike]], path: PathLike | None = None, *,
                orders: Mapping[str, float] | None = None, floor: float | None = None,
                xlabel: str = "steps n", ylabel: str = "error", title: str | None = None,
                reference_orders: Sequence[float] = (), se: Mapping[str, ArrayLike] | None = None,
                floor_se: float | None = None) -> Figure:
    """Log–log error against step count, one line per series, each with its fitted slope.

    For each label the order p of ``error ≈ C n^{-p}`` is fitted by
    :func:`diffsde.orders.fit_order` (least squares on the logs), or taken from
    ``orders[label]`` when given (e.g. a study's fit that left out points at its noise
    floor); the dashed line has slope -p and the least-squares intercept for that slope, and
    the legend reads ``label (p = …)`` (just ``label`` when p is not finite: no fit, no line).
    ``floor`` draws a horizontal dotted line (a Monte Carlo estimator's noise floor);
    ``reference_orders`` adds thin grey guide lines of those slopes through the first point of
    the first series.

    Args:
        series: label -> (ns, errors), both positive.
        orders: label -> order to draw instead of the fitted one (NaN: no line).
        floor: an error level to mark, or None.
        se: label -> standard errors of that series' errors (one per point, >= 0): error bars.
        floor_se: the standard error of ``floor``: a grey band ``floor ± floor_se``.
    """
    data = as_series(series, "series")
    errors_se = check_errors(se, data, "se")
    orders = dict(orders or {})
    figure = Figure(figsize=(5.2, 4.0), layout="constrained")
    ax = figure.subplots()
    for k, (label, (ns, errors)) in enumerate(data.items()):
        order = float(orders[label]) if label in orders else (fit_order(ns, errors) if ns.size >= 2 else math.nan)
        legend = f"{label} (p = {order:.2f})" if math.isfinite(order) else label
        error_series(ax, ns, errors, errors_se.get(label), "o-", color=f"C{k}", label=legend)
        if math.isfinite(order):
            intercept = np.mean(np.log(errors) + order * np.log(ns))
            ax.loglog(ns, np.exp(intercept) * ns ** (-order), "--", color=f"C{k}", lw=0.8)
    if reference_orders:
        ns, errors = next(iter(data.values()))
        for order in reference_orders:
            ax.loglog(ns, errors[0] * (ns / ns[0]) ** (-float(order)), ":", color=TRUTH_COLOR,
                      label=f"slope −{float(order):g}")
    floor_line(ax, floor, floor_se)
    _finish_log_axes(ax, xlabel, ylabel, title, np.concatenate([ns for ns, _ in data.values()]))
    return _finish(figure, path)


def error_vs_nfe(series: Mapping[str, tuple[ArrayLike, ArrayLike]], path: PathLike | None = None, *,
                 compare: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None, compare_label: str = "reference",
                 floor: float | None = None, ylabel: str = "error", title: str | None = None,
                 se: Mapping[str, ArrayLike] | None = None, compare_se: Mapping[str, ArrayLike] | None = None,
                 floor_se: float | None = None) -> Figure:
    """Error against the number of score evaluations (NFE), log–log, one line per series.

    Args:
        series: label -> (nfe, errors), both positive; solid lines.
        compare: label -> (nfe, errors) for the same labels under another condition (e.g. the
            exact score where ``series`` used a learned one), dashed in the matching colour and
            labelled ``"label (compare_label)"``.
        floor: an error level to mark with a dotted line (a Monte Carlo noise floor), or None.
        se: label -> standard errors of the ``series`` errors, one per point in the order given:
            error bars.
        compare_se: the same for ``compare``.
        floor_se: the standard error of ``floor``: a grey band ``floor ± floor_se``.
    """
    data = as_series(series, "series")
    others = as_series(compare, "compare") if compare is not None else {}
    unknown = sorted(set(others) - set(data))
    if unknown:
        raise ValueError(f"compare has labels that series lacks: {unknown}")
    data_se, others_se = check_errors(se, data, "se"), check_errors(compare_se, others, "compare_se")
    figure = Figure(figsize=(5.2, 4.0), layout="constrained")
    ax = figure.subplots()
    for k, (label, (nfe, errors)) in enumerate(data.items()):
        _sorted_series(ax, nfe, errors, data_se.get(label), "o-", color=f"C{k}", label=label)
        if label in others:
            _sorted_series(ax, *others[label], others_se.get(label), "s--", ms=4, color=f"C{k}",
                           label=f"{label} ({compare_label})")
    floor_line(ax, floor, floor_se)
    _finish_log_axes(ax, "score evaluations (NFE)", ylabel, title)
    return _finish(figure, path)


def nll_vs_nfe(result, path: PathLike | None = None, *, title: str | None = None) -> Figure:
    """A likelihood study's NLL in bits/dim against score evaluations per sample (log x): the
    PF-ODE's estimates as points labelled by tolerance, the VLB as one line per reverse variance
    through its step counts (points labelled by n), the exact −log p0 as a grey horizontal line.

    Error bars are ± one standard error: of the difference to the exact value (paired, the same
    data) where it is known, else of the estimate itself.

    Args:
        result: the :class:`~diffsde.studies.StudyResult` of
            :func:`diffsde.studies.likelihood_study` (or one read back from its JSON or CSV).
    """
    rows = getattr(result, "rows", None)
    if not isinstance(rows, list) or not all(isinstance(row, Mapping) for row in rows):
        raise TypeError(f"result must be the StudyResult of diffsde.studies.likelihood_study, got "
                        f"{type(result).__name__}")
    if getattr(result, "kind", "") not in ("likelihood", ""):
        raise ValueError(f"result must be a likelihood study's, got kind {result.kind!r}")
    if not any(row.get("estimator") in ("pf-ode", "vlb") for row in rows):
        raise ValueError("result has no 'pf-ode' or 'vlb' rows to draw")

    def bits(row: Mapping, key: str) -> float:  # a nats column in bits/dim, by the row's own ratio
        scale = row["bits_per_dim"] / row["nats"] if row["nats"] else 0.0
        return float(row[key]) * scale

    def bars(group: list[Mapping]) -> np.ndarray:
        return np.array([bits(row, "error_se" if row.get("error_se") is not None else "standard_error")
                         for row in group])

    figure = Figure(figsize=(5.6, 4.0), layout="constrained")
    ax = figure.subplots()
    pf_ode = [row for row in rows if row.get("estimator") == "pf-ode"]
    groups = [("PF-ODE", "o", pf_ode, "tol")]
    vlb = {}  # the VLB rows by variance: their setting reads "n=100, σ²=β"
    for row in rows:
        if row.get("estimator") == "vlb":
            vlb.setdefault(str(row["setting"]).split(", ", 1)[-1], []).append(row)
    groups += [(f"VLB, {variance}", "s-", group, "n") for variance, group in vlb.items()]
    for k, (label, fmt, group, key) in enumerate(groups):
        if not group:
            continue
        group = sorted(group, key=lambda row: row["nfe"])
        nfe = np.array([row["nfe"] for row in group], dtype=float)
        nll = np.array([row["bits_per_dim"] for row in group], dtype=float)
        ax.errorbar(nfe, nll, yerr=bars(group), fmt=fmt, ms=5, capsize=2.5, elinewidth=0.9, color=f"C{k}",
                    label=label)
        for row, x, y in zip(group, nfe, nll):  # tolerances under their points, step counts beside theirs
            text, offset, align = ((log_label(row["tol"], plain=False), (0, -11), "center") if key == "tol"
                                   else (f"n={row['n']}", (5, -8), "left"))
            ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=align, va="center", fontsize=7,
                        color=f"C{k}")
    exact = [row for row in rows if row.get("estimator") == "exact"]
    if exact:
        ax.axhline(exact[0]["bits_per_dim"], color=TRUTH_COLOR, lw=1.2, ls="--", label="exact −log p0")
    ax.set_xscale("log")
    ax.margins(x=0.1, y=0.1)  # room for the labels at the ends
    _finish_log_axes(ax, "score evaluations per sample (NFE)", "NLL (bits/dim)", title)
    return _finish(figure, path)


def _sorted_series(ax, x: np.ndarray, y: np.ndarray, se: np.ndarray | None, fmt: str, **style) -> None:
    order = np.argsort(x, kind="stable")
    error_series(ax, x[order], y[order], None if se is None else se[order], fmt, **style)


def _finish_log_axes(ax, xlabel: str, ylabel: str, title: str | None, xs=None) -> None:
    """Labels, a legend in drawing order (error-bar series included, guide lines last), tidy log ticks."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    handles, labels = ax.get_legend_handles_labels()
    last = [k for k, label in enumerate(labels) if label.startswith(("noise floor", "slope"))]
    order = [k for k in range(len(labels)) if k not in last] + last
    ax.legend([handles[k] for k in order], [labels[k] for k in order], fontsize=8)
    if title:
        ax.set_title(title)
    tidy_log_axes(ax, xs)


def training_loss(losses: ArrayLike, path: PathLike | None = None, *, window: int = 50,
                  title: str | None = None) -> Figure:
    """Per-step training loss (thin) and its running mean over ``window`` steps (thick).

    Args:
        losses: (steps,) per-step minibatch losses (``TrainResult.losses``).
        window: running-mean length (>= 1; clipped to the number of steps).
    """
    losses = as_array(losses, "losses").reshape(-1)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    window = min(window, losses.size)
    steps = np.arange(1, losses.size + 1)
    running = np.convolve(losses, np.ones(window) / window, mode="valid")
    figure = Figure(figsize=(5.2, 3.4), layout="constrained")
    ax = figure.subplots()
    ax.plot(steps, losses, lw=0.5, alpha=0.4, color="C0", label="minibatch loss")
    ax.plot(steps[window - 1:], running, lw=1.5, color="C1", label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel(r"$\|\epsilon - \epsilon_\theta\|^2$")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _finish(figure, path)
