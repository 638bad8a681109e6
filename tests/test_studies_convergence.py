"""Convergence studies: orders from exact laws, the Monte Carlo estimator against the exact one,
its floor, grids, and bad input (diffsde.studies.convergence, .estimators, .grids)."""

import math

import pytest
import torch

from diffsde import GaussianMixtureScore, GaussianScore, TimeGrid, toys
from diffsde.studies import MonteCarlo, convergence_study

# 2-D, non-zero mean, correlated and anisotropic (eigenvalues ≈ 2.18 and 0.32).
ANISOTROPIC = GaussianScore([1.0, -1.0], [[1.5, 0.9], [0.9, 1.0]])
GAUSSIAN_1D = GaussianScore([0.8], [[0.5]])
MIXTURE_1D = GaussianMixtureScore([0.3, 0.7], [[-2.0], [1.5]], [[[0.25]], [[0.5]]])


def small_mc(device, **changes):
    settings = {"n_samples": 2000, "repeats": 3, "n_projections": 16, "device": device}
    return MonteCarlo(**{**settings, **changes})


# -- convergence orders (exact laws, no Monte Carlo) ---------------------------------------

def test_convergence_orders_match_the_declared_orders():
    ns = [25, 50, 100, 200, 400]
    result = convergence_study(ANISOTROPIC, ["vp", "ddpm", "em", "ode-euler", "ode-heun"], ns)
    assert result.kind == "convergence"
    assert {row["estimator"] for row in result.rows} == {"exact"}
    assert [row["n"] for row in result.rows if row["method"] == "em"] == ns
    for summary in result.summary:
        declared = {"ode-heun": 2.0}.get(summary["method"], 1.0)
        assert summary["declared_order"] == declared
        errors = [row["error"] for row in result.rows if row["method"] == summary["method"]]
        local = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
        # The next term of the error is a relative O(1/n) correction, error ≈ C n^{-p} (1 + a/n),
        # so the local slope between n and 2n misses p by ≈ a / (2 n ln 2), halving per doubling.
        # |a| <= 28 keeps it under 0.05 at n = 200 (measured: a ≈ 10 for vp/ddpm, smaller for
        # the others), and the least-squares order over 25..400 within 0.1 of p.
        deviations = [abs(slope - declared) for slope in local]
        assert deviations[-1] < 0.05, (summary["method"], local)
        assert all(later < earlier for earlier, later in zip(deviations, deviations[1:])), (summary["method"], local)
        assert abs(summary["order"] - declared) < 0.1, summary
        assert summary["order_ci_low"] < summary["order"] < summary["order_ci_high"]
        assert summary["fit_points"] == len(ns)


def test_uniform_grid_ends_at_t_min_and_is_measured_there():
    t_min = 0.05
    result = convergence_study(ANISOTROPIC, ["ode-heun"], [10, 20, 40], grid="uniform", T=8.0, t_min=t_min)
    assert all(row["t_end"] == pytest.approx(t_min, abs=1e-12) for row in result.rows)
    assert result.meta["T"] == pytest.approx(8.0)
    # Heun's error is O(h²); measured against p_{t_min}, the order is 2 within the same
    # pre-asymptotic margin as above (h = 0.2 at n = 40).
    assert abs(result.summary[0]["order"] - 2.0) < 0.15


# -- the Monte Carlo estimator ------------------------------------------------------------

def test_monte_carlo_error_agrees_with_the_exact_one(device):
    """In 1-D the sliced distance is W2 itself, so on a Gaussian target the Monte Carlo error
    must match the exact W2 up to the sample-size floor: by the triangle inequality
    |W2(x̂, ŷ) - W2(p, q)| <= W2(x̂, p) + W2(ŷ, q) ≈ floor (the floor being the distance
    between two independent exact sets), plus 3 standard errors of the means."""
    ns = [4, 8, 16]
    kwargs = {"grid": "uniform", "T": 6.0}
    exact = convergence_study(GAUSSIAN_1D, ["em"], ns, **kwargs)
    mc = convergence_study(GAUSSIAN_1D, ["em"], ns, estimator="monte_carlo", monte_carlo=small_mc(device), **kwargs)
    floor = mc.meta["floor"]
    assert floor["mean"] > 0 and mc.meta["monte_carlo"]["device"] == str(device)
    for exact_row, mc_row in zip(exact.rows, mc.rows):
        assert mc_row["estimator"] == "monte_carlo" and mc_row["nfe"] == mc_row["n"]
        tolerance = floor["mean"] + 3 * floor["se"] + 3 * mc_row["error_se"]
        assert abs(mc_row["error"] - exact_row["error"]) <= tolerance, (mc_row, exact_row)
        assert mc_row["above_floor"]  # the errors (0.1 - 0.4) are far above the floor (≈ 0.02)


def test_monte_carlo_rows_at_the_floor_are_flagged_and_left_out_of_the_fit(device):
    # Heun at n >= 25 on the linear grid is ~1e-3 from exact: far below a 1000-sample floor (≈ 0.05).
    result = convergence_study(MIXTURE_1D, ["ode-heun"], [25, 50, 100],
                               monte_carlo=small_mc(device, n_samples=1000, repeats=2))
    assert {row["estimator"] for row in result.rows} == {"monte_carlo"}
    assert all(row["above_floor"] is False for row in result.rows)
    summary = result.summary[0]
    assert summary["fit_points"] == 0 and math.isnan(summary["order"])


# -- grids and bad input ---------------------------------------------------------------------

def test_callable_grid_is_used_as_given():
    result = convergence_study(ANISOTROPIC, ["ode-euler"], [10, 20, 40], grid=lambda n: TimeGrid.uniform(6.0, 0.1, n))
    assert result.meta["T"] == pytest.approx(6.0)
    assert all(row["t_end"] == pytest.approx(0.1) for row in result.rows)



@pytest.mark.parametrize("call, error, match", [
    (lambda: convergence_study(ANISOTROPIC, ["em"], [50, 25, 100]), ValueError, "strictly increasing"),
    (lambda: convergence_study(ANISOTROPIC, ["em"], [25, 50]), ValueError, "at least 3"),
    (lambda: convergence_study(ANISOTROPIC, ["em"], [0, 25, 50]), ValueError, "positive ints"),
    (lambda: convergence_study(ANISOTROPIC, ["em"], [5, 25, 50], t_min=20.0), ValueError, "leaves no step"),
    (lambda: convergence_study(ANISOTROPIC, ["em", "em"]), ValueError, "distinct labels"),
    (lambda: convergence_study(ANISOTROPIC, []), ValueError, "methods is empty"),
    (lambda: convergence_study(ANISOTROPIC, grid="cosine"), ValueError, "grid must be"),
    (lambda: convergence_study(ANISOTROPIC, T=5.0), ValueError, "T applies to grid='uniform'"),
    (lambda: convergence_study(ANISOTROPIC, grid="uniform", T=0.5, t_min=1.0), ValueError, "T > t_min"),
    (lambda: convergence_study(ANISOTROPIC, t_min=-1.0), ValueError, "t_min must be"),
    (lambda: convergence_study(ANISOTROPIC, prior="uniform"), ValueError, "prior must be"),
    (lambda: convergence_study(ANISOTROPIC, estimator="bootstrap"), ValueError, "estimator must be"),
    (lambda: convergence_study(toys.ring(), estimator="exact"), ValueError, "estimator='exact' needs"),
    (lambda: convergence_study(toys.moons()), TypeError, "target must be"),
    (lambda: convergence_study(ANISOTROPIC, grid=lambda n: None), TypeError, "must return a TimeGrid"),
    (lambda: convergence_study(toys.ring(), monte_carlo=MonteCarlo(repeats=1)), ValueError, "repeats must be >= 2"),
])
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: MonteCarlo(n_samples=1), ValueError, "MonteCarlo.n_samples"),
    (lambda: MonteCarlo(dtype=torch.int64), TypeError, "MonteCarlo.dtype"),
    (lambda: MonteCarlo(floor_draws=1), ValueError, "MonteCarlo.floor_draws must be an int >= 2"),
])
def test_monte_carlo_settings_are_checked(call, error, match):
    with pytest.raises(error, match=match):
        call()
