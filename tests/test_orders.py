"""Order fits with intervals (diffsde.orders), and plots taking their slope from there."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import diffsde.plots
from diffsde.orders import fit_order, order_fit


def test_fit_order_is_order_fits_slope():
    # Both are the least-squares slope of log(error) on log(n); on an exact power law C n^{-p} the
    # fit is exact up to float64 rounding of the logs (~1e-15 relative).
    ns = [25, 50, 100, 200]
    errors = [0.7 * n ** -2.0 * (1 + 3.0 / n) for n in ns]
    assert fit_order(ns, errors) == pytest.approx(order_fit(ns, errors)["order"], abs=1e-12)
    assert fit_order([10, 100], [1.0, 0.01]) == pytest.approx(2.0, abs=1e-12)


def test_order_fit_recovers_an_exact_power_law():
    ns = [10, 20, 40, 80]
    fit = order_fit(ns, [3.0 * n ** -1.5 for n in ns])
    assert fit["order"] == pytest.approx(1.5, abs=1e-12)
    assert fit["order_se"] < 1e-10 and fit["fit_points"] == 4
    two = order_fit([10, 20], [1.0, 0.5])
    assert two["order"] == pytest.approx(1.0) and math.isnan(two["order_ci_low"])


def test_order_fit_interval_has_its_coverage():
    """With log-normal noise the log-log regression is the textbook linear model, so the
    95 % t-interval covers the true order in 95 % of data sets; over 1000 sets the observed
    rate has standard deviation sqrt(0.95 · 0.05 / 1000) ≈ 0.0069, and 4 of them is 0.028."""
    rng = np.random.default_rng(7)
    ns = np.array([25, 50, 100, 200, 400])
    trials = 1000
    covered = 0
    for _ in range(trials):
        errors = 2.0 * ns ** -1.0 * np.exp(0.2 * rng.standard_normal(ns.size))
        fit = order_fit(ns, errors, confidence=0.95)
        covered += fit["order_ci_low"] <= 1.0 <= fit["order_ci_high"]
    assert abs(covered / trials - 0.95) < 0.028


@pytest.mark.parametrize("call, error, match", [
    (lambda: fit_order([10], [1.0]), ValueError, "at least two"),
    (lambda: fit_order([10, 20], [1.0, -1.0]), ValueError, "positive"),
    (lambda: order_fit([10, 20, 40], [1.0, 0.5]), ValueError, "equal length"),
    (lambda: order_fit([10, 20], [1.0, 0.0]), ValueError, "positive"),
    (lambda: order_fit([10, 20, 40], [1.0, 0.5, 0.2], confidence=1.5), ValueError, "confidence"),
    # One n repeated has no spread in log n: no slope (numpy warned and returned nonsense before).
    (lambda: fit_order([100, 100, 100], [0.1, 0.2, 0.3]), ValueError, "two different step counts"),
    (lambda: order_fit([100, 100], [0.1, 0.2]), ValueError, "two different step counts"),
])
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_plots_take_their_slope_from_orders_not_from_the_studies():
    # The issue's rule: plots does not import the studies' machinery (diffsde.studies or its
    # alias diffsde.experiments); its one fit comes from diffsde.orders.
    tree = ast.parse(Path(diffsde.plots.__file__).read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in modules if m and ("studies" in m or "experiments" in m)}, modules
    assert diffsde.plots.fit_order is fit_order
