"""The error budget: each source switched off in turn, exact and Monte Carlo (diffsde.studies.budget)."""

import math

import pytest

from diffsde import BetaSchedule, GaussianScore, toys
from diffsde.studies import MonteCarlo, error_budget

# 2-D, non-zero mean, correlated and anisotropic (eigenvalues ≈ 2.18 and 0.32).
ANISOTROPIC = GaussianScore([1.0, -1.0], [[1.5, 0.9], [0.9, 1.0]])


def small_mc(device, **changes):
    settings = {"n_samples": 2000, "repeats": 3, "n_projections": 16, "device": device}
    return MonteCarlo(**{**settings, **changes})


def rows_by_source(result):
    return {row["source"]: row for row in result.rows}


def test_error_budget_with_the_exact_score_has_no_score_error():
    # A separate but equal exact score, so the score row is really recomputed, not reused.
    same = GaussianScore(ANISOTROPIC.mean, ANISOTROPIC.cov)
    result = error_budget(ANISOTROPIC, same, "em", 50, t_min=1e-2)
    rows = rows_by_source(result)
    assert set(rows) == {"total", "score", "discretization", "prior", "early_stopping", "residual"}
    assert all(row["estimator"] == "exact" for row in rows.values())
    assert rows["score"]["contribution"] == 0.0
    # Switching discretization off keeps the grid's end, t_min itself; switching early stopping off
    # compares with p_{t_end} instead of p_0. Both sources are real here (em on 49 steps, t_end = 0.01).
    assert rows["discretization"]["t_end"] == rows["total"]["t_end"] == 1e-2
    # The fine grid is linear(50) refined 16 times and cut at t_min like the coarse one: its steps are
    # its times above t_min (t_min becomes the last point), 16 per coarse step above t_2 = 0.0121 and
    # the 4 of the 16 in [t_1, t_2] = [0.002, 0.0121] above 0.01.
    assert rows["total"]["steps"] == 49
    assert rows["discretization"]["steps"] == int((BetaSchedule.linear(50).refine(16).times > 1e-2).sum()) \
        == 16 * 48 + 4
    assert rows["discretization"]["contribution"] > 0.1 * rows["total"]["error"]
    assert rows["early_stopping"]["contribution"] > 0.1 * rows["total"]["error"]
    assert rows["early_stopping"]["reference_time"] == rows["total"]["t_end"] > 0
    # |contribution| <= W2 between the two output laws (triangle inequality); the reverse SDE
    # passes a change of its start law at T on damped by ≈ e^{-T/2} (the posterior mean of x0
    # given x_T moves by e^{-T/2} Σ Σ_T^{-1} per unit of x_T), and N(0, I) misses p_T by
    # ≈ e^{-T/2} (|mean| + ‖Σ - I‖), so the contribution is ≈ e^{-T} · 3 ≈ 1e-4 at T = 10.05.
    assert abs(rows["prior"]["contribution"]) < 1e-3
    # With everything off, only the 772-step discretization error is left: O(1/n), about 1/16 of
    # the 49-step one, so well under a tenth of the total.
    assert rows["residual"]["error"] < 0.1 * rows["total"]["error"]


def test_error_budget_charges_a_wrong_score():
    wrong = GaussianScore([1.1, -1.0], [[1.4, 0.9], [0.9, 1.0]])  # a stand-in for a learned score
    rows = rows_by_source(error_budget(ANISOTROPIC, wrong, "em", 50, t_min=1e-2))
    exact_rows = rows_by_source(error_budget(ANISOTROPIC, None, "em", 50, t_min=1e-2))
    # Switching the score off gives exactly the exact-score total.
    assert rows["score"]["error"] == exact_rows["total"]["error"]
    # The mean is off by 0.1 at t = 0 and the reverse process carries it to the output.
    assert rows["score"]["contribution"] > 0.05
    assert rows["residual"]["error"] == exact_rows["residual"]["error"]


def test_error_budget_monte_carlo_reuses_seeds(device):
    settings = small_mc(device, n_samples=500, repeats=2)
    ring = toys.ring()
    wrapped = lambda x, t: ring.exact_score(x, t)  # the exact score, but not the same object
    result = error_budget(ring, wrapped, "em", 25, t_min=1e-2, fine_factor=2, monte_carlo=settings)
    rows = rows_by_source(result)
    assert all(row["estimator"] == "monte_carlo" for row in rows.values())
    # Same seeds, same score values, same grid, same prior: the very same samples, so exactly zero.
    assert rows["score"]["contribution"] == 0.0
    assert result.meta["floor"]["mean"] > 0
    assert all(math.isfinite(row["error"]) and row["error"] > 0 for row in rows.values())
    # The score of a ring of radius 6 instead of 4 pulls every mode out by up to 2; the score
    # contribution must exceed 3 standard errors of each of the two errors it subtracts
    # (a conservative bound on the noise of the difference: measured 0.93 against 0.37).
    wrong = toys.ring(radius=6.0).exact_score
    wrong_rows = rows_by_source(error_budget(ring, wrong, "em", 25, t_min=1e-2, fine_factor=2, monte_carlo=settings))
    assert wrong_rows["score"]["error"] == rows["total"]["error"]
    noise = 3 * (wrong_rows["total"]["error_se"] + wrong_rows["score"]["error_se"])
    assert wrong_rows["score"]["contribution"] > noise


@pytest.mark.parametrize("call, error, match", [
    (lambda: error_budget(ANISOTROPIC, n=0), ValueError, "n must be a positive int"),
    (lambda: error_budget(ANISOTROPIC, fine_factor=1), ValueError, "fine_factor must be"),
])
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_error_budget_on_a_coarse_linear_grid():
    # n = 10 < 21: the linear rate respaced (diffsde.studies.grids), all 10 steps above t_min; its
    # fine grid is the linear grid of 16 x 10 = 160 steps over the same [t_min, T], whose first step
    # (t_1 = 0.1 / 160 < t_min) lies below t_min.
    rows = rows_by_source(error_budget(ANISOTROPIC, None, "em", 10, t_min=1e-3))
    assert (rows["total"]["steps"], rows["discretization"]["steps"]) == (10, 159)
    assert rows["total"]["t_end"] == rows["discretization"]["t_end"] == 1e-3
    assert rows["discretization"]["contribution"] > 0.5 * rows["total"]["error"]
