"""Convergence orders: the slope p of ``error ≈ C n^{-p}`` fitted in log-log coordinates.

* :func:`fit_order`: the least-squares slope alone (plots, quick checks).
* :func:`order_fit`: the same slope with its standard error and a Student-t confidence
  interval (the studies' summaries).

Shared by :mod:`diffsde.studies` and :mod:`diffsde.plots`, so it depends on neither.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

import numpy as np
import scipy.stats

__all__ = ["fit_order", "order_fit"]


def fit_order(ns: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of ``-log(error)`` against ``log(n)``: the convergence order p in
    ``error ≈ C n^{-p}``.

    Args:
        ns: step counts (or any positive abscissae), at least two.
        errors: positive errors, one per n.

    Raises:
        ValueError: fewer than two pairs, unequal lengths, a non-positive n or error, or fewer
            than two distinct n (no slope to fit).
    """
    ns = np.asarray(ns, dtype=float)
    errors = np.asarray(errors, dtype=float)
    if ns.size < 2 or ns.size != errors.size:
        raise ValueError(f"need at least two (n, error) pairs of equal length, got {ns.size} and {errors.size}")
    if not (np.all(ns > 0) and np.all(errors > 0)):
        raise ValueError("fit_order needs positive step counts and positive errors")
    _check_distinct(ns)
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
        ValueError: fewer than two pairs, unequal lengths, non-positive n or error, fewer than
            two distinct n, or ``confidence`` outside (0, 1).
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
    _check_distinct(ns_array)
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


def _check_distinct(ns: np.ndarray) -> None:
    """Refuse step counts that are all the same: log n has no spread, so there is no slope."""
    if np.unique(ns).size < 2:
        raise ValueError(f"an order needs at least two different step counts, got only n = {ns[0]:g}")
