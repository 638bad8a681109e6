"""Experiments: convergence orders from exact laws, the Monte Carlo estimator against the exact
one, the error budget, sampler comparisons, order fits with intervals, result files, bad input."""

import math

import numpy as np
import pytest
import torch

from diffsde import GaussianMixtureScore, GaussianScore, TimeGrid, toys
from diffsde.experiments import (
    MethodSpec,
    MonteCarlo,
    StudyResult,
    alpha_bar_limit,
    compare_samplers,
    convergence_study,
    error_budget,
    order_fit,
    resolve_method,
)

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


# -- error budget ----------------------------------------------------------------------------

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
    # Switching discretization off keeps the grid's end; switching early stopping off compares
    # with p_{t_end} instead of p_0. Both sources are real here (em on 48 steps, t_end = 0.012).
    assert rows["discretization"]["t_end"] == pytest.approx(rows["total"]["t_end"], rel=1e-9)
    assert rows["discretization"]["steps"] == 16 * rows["total"]["steps"]
    assert rows["discretization"]["contribution"] > 0.1 * rows["total"]["error"]
    assert rows["early_stopping"]["contribution"] > 0.1 * rows["total"]["error"]
    assert rows["early_stopping"]["reference_time"] == rows["total"]["t_end"] > 0
    # |contribution| <= W2 between the two output laws (triangle inequality); the reverse SDE
    # passes a change of its start law at T on damped by ≈ e^{-T/2} (the posterior mean of x0
    # given x_T moves by e^{-T/2} Σ Σ_T^{-1} per unit of x_T), and N(0, I) misses p_T by
    # ≈ e^{-T/2} (|mean| + ‖Σ - I‖), so the contribution is ≈ e^{-T} · 3 ≈ 1e-4 at T = 10.05.
    assert abs(rows["prior"]["contribution"]) < 1e-3
    # With everything off, only the 768-step discretization error is left: O(1/n), 1/16 of
    # the 48-step one, so well under a tenth of the total.
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


# -- sampler comparison --------------------------------------------------------------------

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


# -- order fits ----------------------------------------------------------------------------

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


# -- results on disk -----------------------------------------------------------------------

def test_json_and_csv_round_trip(tmp_path):
    result = convergence_study(ANISOTROPIC, ["em", ("ddpm", {"variance": "beta_tilde"})], [25, 50, 100])
    result.to_json(tmp_path / "study.json")
    assert StudyResult.load(tmp_path / "study.json") == result
    result.to_csv(tmp_path / "study.csv")
    loaded = StudyResult.load(tmp_path / "study.csv")
    assert loaded.rows == result.rows  # floats in full precision, None and str kept
    # Writing is atomic: a temporary file renamed over the target, none left behind.
    result.to_csv(tmp_path / "study.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.csv", "study.json"]
    assert result.summary[1]["method"] == "ddpm(variance=beta_tilde)"
    assert "em |" in result.table() and "order" in result.summary_table()


def test_csv_round_trip_keeps_none_bool_nan_and_text(tmp_path):
    rows = [{"method": "em", "n": 25, "error": 0.1 + 0.2, "flag": True, "exact": None, "gap": math.nan},
            {"method": "ode-heun", "n": 50, "error": 1e-300, "flag": False, "exact": 2.5, "gap": -math.inf}]
    StudyResult("comparison", rows).to_csv(tmp_path / "rows.csv")
    loaded = StudyResult.load(tmp_path / "rows.csv").rows
    assert [{k: v for k, v in row.items() if k != "gap"} for row in loaded] == \
           [{k: v for k, v in row.items() if k != "gap"} for row in rows]
    assert math.isnan(loaded[0]["gap"]) and loaded[1]["gap"] == -math.inf


def test_load_refuses_other_files(tmp_path):
    (tmp_path / "x.txt").write_text("{}")
    with pytest.raises(ValueError, match="suffix must be .json or .csv"):
        StudyResult.load(tmp_path / "x.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        StudyResult.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a diffsde.StudyResult"):
        StudyResult.load(tmp_path / "other.json")
    (tmp_path / "ragged.csv").write_text("a,b\n1\n")
    with pytest.raises(ValueError, match="line 2"):
        StudyResult.load(tmp_path / "ragged.csv")


# -- method specs and bad input ---------------------------------------------------------------

def test_method_specs_resolve_to_sampler_arguments():
    assert resolve_method("ode-heun") == MethodSpec("ode-heun", "ode", {"solver": "heun"})
    assert resolve_method("torchsde-euler") == MethodSpec("torchsde-euler", "torchsde", {"solver": "euler"})
    assert resolve_method("vp") == MethodSpec("vp", "vp", {})
    pair = resolve_method(("pc", {"corrector_steps": 2, "step_size": 0.01}))
    assert pair.method == "pc" and pair.options == {"corrector_steps": 2, "step_size": 0.01}
    assert pair.has_exact_law and not resolve_method("pc").has_exact_law
    assert not resolve_method("torchsde-euler").has_exact_law and resolve_method("ode-heun").weak_order == 2.0


@pytest.mark.parametrize("call, error, match", [
    (lambda: resolve_method("rk4"), ValueError, "unknown method spec 'rk4'"),
    (lambda: resolve_method("ode-rk99"), ValueError, "unknown ode solver 'rk99'"),
    (lambda: resolve_method(("ddpm", {"variance": "big"})), ValueError, "variance must be"),
    (lambda: resolve_method(("em", {"solver": "heun"})), TypeError, "unknown option 'solver'"),
    (lambda: resolve_method(3), TypeError, "a method spec must be"),
    (lambda: convergence_study(ANISOTROPIC, ["em"], [50, 25, 100]), ValueError, "strictly increasing"),
    (lambda: convergence_study(ANISOTROPIC, ["em"], [25, 50]), ValueError, "at least 3"),
    (lambda: convergence_study(ANISOTROPIC, ["em"], [0, 25, 50]), ValueError, "positive ints"),
    (lambda: convergence_study(ANISOTROPIC, ["em"], [10, 25, 50]), ValueError, "n > 20"),
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
    (lambda: compare_samplers(ANISOTROPIC, score=3), TypeError, "score must be callable"),
    (lambda: compare_samplers(ANISOTROPIC, ns=[]), ValueError, "at least 1"),
    (lambda: error_budget(ANISOTROPIC, n=0), ValueError, "n must be a positive int"),
    (lambda: error_budget(ANISOTROPIC, fine_factor=1), ValueError, "fine_factor must be"),
    (lambda: MonteCarlo(n_samples=1), ValueError, "MonteCarlo.n_samples"),
    (lambda: convergence_study(toys.ring(), monte_carlo=MonteCarlo(repeats=1)), ValueError, "repeats must be >= 2"),
    (lambda: MonteCarlo(dtype=torch.int64), TypeError, "MonteCarlo.dtype"),
    (lambda: order_fit([10, 20], [1.0, 0.0]), ValueError, "positive"),
    (lambda: order_fit([10, 20, 40], [1.0, 0.5, 0.2], confidence=1.5), ValueError, "confidence"),
])
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_callable_grid_is_used_as_given():
    result = convergence_study(ANISOTROPIC, ["ode-euler"], [10, 20, 40], grid=lambda n: TimeGrid.uniform(6.0, 0.1, n))
    assert result.meta["T"] == pytest.approx(6.0)
    assert all(row["t_end"] == pytest.approx(0.1) for row in result.rows)


def test_alpha_bar_limit_still_answers_as_the_cli_expects():
    rows, orders = alpha_bar_limit(["linear"], [100, 1000])
    assert [row["n"] for row in rows] == [100, 1000]
    # n · max |ᾱ_i - e^{-t_i}| -> 0.8622 for the linear schedule (schedules.py docstring).
    assert rows[-1]["n_times_error"] == pytest.approx(0.8622, abs=0.01)
    assert orders["linear"] == pytest.approx(1.0, abs=0.02)
