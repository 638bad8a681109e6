"""The shared look of :mod:`diffsde.plots`: panel grids, log axes with readable ticks, error bars,
noise-floor bands and colour bars.

Log axes: matplotlib's default labels every decade and, when the data span less than about
two decades, its minor ticks too ("3×10¹ 4×10¹ 6×10¹" on a step-count axis), which overlap.
:func:`tidy_log_axis` instead picks the coarsest of the sets {1}, {1, 2, 5} and {1, …, 9} × 10^k
that labels 3 to ``max_ticks`` ticks in view (thinning whole decades when the data span many;
evenly spaced ticks when they span too little for any of them), and writes them plainly
(25, 0.002) or, over three decades or more, as powers of ten.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colorbar import Colorbar
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

__all__ = ["TRUTH_COLOR", "grid_shape", "outer_labels", "tidy_log_axis", "tidy_log_axes", "log_label",
           "error_series", "check_errors", "floor_line", "side_colorbar"]

TRUTH_COLOR = "0.35"
"""Colour of exact / reference data (a dark grey, drawn over the samples it is compared with)."""

_SUBS = ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0))
_EVERY = _SUBS[-1]


def grid_shape(count: int, max_columns: int = 4) -> tuple[int, int]:
    """(rows, columns) of a grid of ``count`` panels, at most ``max_columns`` wide."""
    columns = min(count, max_columns)
    return math.ceil(count / columns), columns


def outer_labels(axes: np.ndarray, count: int, xlabel: str, ylabel: str) -> None:
    """Hide the unused panels of a grid; label x under the lowest used panel of each column (with
    its tick labels, which ``sharex`` hides above an unused panel) and y beside the first column."""
    columns = axes.shape[1]
    for index, ax in enumerate(axes.flat):
        if index >= count:
            ax.set_visible(False)
            continue
        if index % columns == 0:
            ax.set_ylabel(ylabel)
        if index + columns >= count:
            ax.set_xlabel(xlabel)
            ax.xaxis.set_tick_params(labelbottom=True)


def log_label(value: float, plain: bool = True) -> str:
    """A tick label for a log axis: plain digits (``0.002``, ``25``) when ``plain`` and the value is in
    [1e-3, 1e5), else ``10^k`` or ``m×10^k`` in mathtext."""
    if plain and 1e-3 <= value < 1e5:
        return f"{value:.6g}"
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = round(value / 10.0**exponent, 6)
    power = rf"10^{{{exponent}}}"
    return rf"${power}$" if mantissa == 1 else rf"${mantissa:g}\times{power}$"


def _ticks(low: float, high: float, subs: Sequence[float]) -> list[float]:
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    slack = 1e-9 * (high - low)
    return [m * 10.0**k for k in range(first, last + 1) for m in subs if low - slack <= m * 10.0**k <= high + slack]


def tidy_log_axis(axis, max_ticks: int = 6, preferred: Sequence[float] | None = None) -> None:
    """Readable ticks on one log-scaled axis (``ax.xaxis`` or ``ax.yaxis``), for its current limits:
    labelled major ticks as described in the module docstring, unlabelled minor ticks. Call it
    after the data are drawn (the ticks are fixed to the view at that moment).

    ``preferred``: values to label instead (e.g. the step counts of a sweep), used when 2 to 8 of
    them are in view and each is at least 1.4 times the previous one (so their labels cannot touch).
    An axis spanning less than a factor of about 3 gets evenly spaced "nice" ticks (0.12, 0.14, ...).
    """
    low, high = sorted(axis.get_view_interval())
    if not (0 < low < high < math.inf):
        return
    chosen = sorted({float(v) for v in (() if preferred is None else preferred) if low <= v <= high})
    if not (2 <= len(chosen) <= 8 and all(b >= 1.4 * a for a, b in zip(chosen, chosen[1:]))):
        candidates = [_ticks(low, high, subs) for subs in _SUBS]
        fitting = [ticks for ticks in candidates if 3 <= len(ticks) <= max_ticks]
        if fitting:
            chosen = fitting[0]
        elif len(candidates[0]) > max_ticks:  # many decades: label every k-th one
            step = math.ceil(len(candidates[0]) / max_ticks)
            chosen = [tick for tick in candidates[0] if round(math.log10(tick)) % step == 0]
        else:  # a narrow range: linear steps of 1, 2, 2.5 or 5 units
            chosen = [v for v in MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
                      if low <= v <= high and v > 0]
    plain = high / low < 1e3
    axis.set_major_locator(FixedLocator(chosen))
    axis.set_major_formatter(FuncFormatter(lambda value, _: log_label(value, plain) if value > 0 else ""))
    axis.set_minor_locator(LogLocator(base=10.0, subs=_EVERY, numticks=100))
    axis.set_minor_formatter(NullFormatter())


def tidy_log_axes(ax: Axes, preferred_x: Sequence[float] | None = None) -> None:
    """:func:`tidy_log_axis` on each log-scaled axis of ``ax`` (``preferred_x``: values to label on x)."""
    if ax.get_xscale() == "log":
        tidy_log_axis(ax.xaxis, preferred=preferred_x)
    if ax.get_yscale() == "log":
        tidy_log_axis(ax.yaxis)


def check_errors(errors: Mapping | None, series: Mapping[str, tuple], name: str) -> dict[str, np.ndarray]:
    """label -> standard errors, one per point of ``series[label]``, finite and >= 0."""
    if errors is None:
        return {}
    if not isinstance(errors, Mapping):
        raise TypeError(f"{name} must be a mapping label -> standard errors, got {type(errors).__name__}")
    out = {}
    for label, values in errors.items():
        label = str(label)
        if label not in series:
            raise ValueError(f"{name} has label {label!r}, which the series lack (labels: {sorted(series)})")
        values = np.asarray(values, dtype=float).reshape(-1)
        if values.shape != series[label][1].shape:
            raise ValueError(f"{name}[{label!r}] has {values.size} standard errors for {series[label][1].size} points")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"{name}[{label!r}] must be finite and >= 0, got {values.tolist()}")
        out[label] = values
    return out


def error_series(ax: Axes, x: np.ndarray, y: np.ndarray, se: np.ndarray | None, fmt: str, **style) -> None:
    """``y`` against ``x`` on log–log axes, with ±``se`` error bars when given. A log axis cannot
    show 0, so a lower bar that would reach it stops at y/10 (one decade down)."""
    if se is None:
        ax.loglog(x, y, fmt, **style)
        return
    ax.errorbar(x, y, yerr=[np.minimum(se, 0.9 * y), se], fmt=fmt, capsize=2.5, elinewidth=0.9, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")


def floor_line(ax: Axes, floor: float | None, floor_se: float | None = None) -> None:
    """A dotted horizontal line at ``floor`` (a Monte Carlo noise floor) and, with ``floor_se``, a grey
    band ``floor ± floor_se`` (its lower edge stops at floor/10 on a log axis)."""
    if floor is None:
        if floor_se is not None:
            raise ValueError("floor_se needs a floor")
        return
    if not (isinstance(floor, (int, float)) and 0 < floor < math.inf):
        raise ValueError(f"floor must be a positive number or None, got {floor!r}")
    if floor_se is None:
        ax.axhline(float(floor), ls=":", color="black", lw=1, label="noise floor")
        return
    if not (isinstance(floor_se, (int, float)) and 0 <= floor_se < math.inf):
        raise ValueError(f"floor_se must be a number >= 0 or None, got {floor_se!r}")
    ax.axhspan(max(floor - floor_se, floor / 10), floor + floor_se, color="0.5", alpha=0.25, lw=0)
    ax.axhline(float(floor), ls=":", color="black", lw=1, label="noise floor ± SE")


def side_colorbar(ax: Axes, image, label: str) -> Colorbar:
    """A colour bar for ``image`` in a thin inset to the right of ``ax`` (not a separate figure axes)."""
    cax = ax.inset_axes([1.04, 0.0, 0.05, 1.0])
    bar = ax.figure.colorbar(image, cax=cax)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return bar
