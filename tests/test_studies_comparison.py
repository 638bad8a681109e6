"""Sampler comparisons: nfe, wall time and the Monte Carlo error against the exact one
(diffsde.studies.comparison)."""

import math

import pytest

from diffsde import GaussianScore, toys
from diffsde.studies import MonteCarlo, compare_samplers

# 2-D, non-zero mean, correlated and anisotropic (eigenvalues ≈ 2.18 and 0.32).
ANISOTROPIC = GaussianScore([1.0, -1.0], [[1.5, 0.9], [0.9, 1.0]])
GAUSSIAN_1D = GaussianScore([0.8], [[0.5]])


def small_mc(device, **changes):
    settings = {"n_samples": 2000, "repeats": 3, "n_projections": 16, "device": device}
    return MonteCarlo(**{**settings, **changes})


def test_compare_samplers_reports_nfe_time_and_error(device):
    settings = small_mc(device, n_samples=500, repeats=2)
    result = compare_samplers(toys.ring(), None, ["em", "ode-heun", "ddpm"], [25, 50], monte_carlo=settings)
    assert result.kind == "comparison" and len(result.rows) == 6
    nfe_per_step = {"em": 1, "ode-heun": 2, "ddpm": 1}
    for row in result.rows:
        assert row["nfe"] == nfe_per_step[row["method"]] * row["n"]
        assert row["wall_time_s"] > 0
        assert math.isfinite(row["error"]) and row["error"] > 0
        assert row["w2_exact"] is None  # a mixture has no exact output law
    assert result.meta["floor"]["mean"] > 0


def test_compare_samplers_monte_carlo_error_matches_the_exact_one(device):
    # Same bound as test_monte_carlo_error_agrees_with_the_exact_one (1-D: sliced W2 = W2),
    # here from N(0, I).
    result = compare_samplers(GAUSSIAN_1D, None, ["em", "ode-euler"], [4, 16], grid="uniform", T=6.0,
                              monte_carlo=small_mc(device))
    floor = result.meta["floor"]
    for row in result.rows:
        tolerance = floor["mean"] + 3 * floor["se"] + 3 * row["error_se"]
        assert abs(row["error"] - row["w2_exact"]) <= tolerance, row


@pytest.mark.parametrize("call, error, match", [
    (lambda: compare_samplers(ANISOTROPIC, score=3), TypeError, "score must be callable"),
    (lambda: compare_samplers(ANISOTROPIC, ns=[]), ValueError, "at least 1"),
])
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()
