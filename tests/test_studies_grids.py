"""The studies' grids (diffsde.studies.grids): coarse linear grids respaced, every grid of a sweep
ending at t_min, rows reporting the n asked and the steps taken, and floors with standard errors."""

import math

import pytest
import torch

from diffsde import BetaSchedule, GaussianScore
from diffsde.studies import LINEAR_T, MonteCarlo, compare_samplers, convergence_study
from diffsde.studies.estimators import MonteCarloJudge
from diffsde.studies.grids import grid_factory, linear_schedule

ANISOTROPIC = GaussianScore([1.0, -1.0], [[1.5, 0.9], [0.9, 1.0]])
GAUSSIAN_1D = GaussianScore([0.8], [[0.5]])


def test_linear_schedule_is_linear_from_21_steps_and_respaced_below():
    for n in (21, 50, 1000):
        assert torch.equal(linear_schedule(n).betas, BetaSchedule.linear(n).betas)
    fine = BetaSchedule.linear(1000)
    for n in range(1, 21):  # linear(n) has β_max = 20 / n >= 1 here
        coarse = linear_schedule(n)
        assert torch.equal(coarse.betas, fine.respaced(n, "trailing").betas)
        assert coarse.T == fine.T == pytest.approx(LINEAR_T, rel=1e-12)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        linear_schedule(0)


@pytest.mark.parametrize("n", [1, 2, 5, 20, 21, 100, 250, 1000])
def test_the_linear_grid_ends_exactly_at_t_min_for_every_n(n):
    t_min = 1e-3
    grid = grid_factory("linear", t_min, None)(n)
    times = linear_schedule(n).times
    assert grid.t_min == t_min and grid.T == pytest.approx(LINEAR_T, rel=1e-12)
    # The steps taken are the schedule's times above t_min, t_min itself being the last point: all n
    # for n <= 21 (the first time above 0 is >= 0.1 / 21 > t_min), 99 of 100 (t_1 = 1e-3 = t_min),
    # 249 of 250 (t_1 = 4e-4 < t_min < t_2), 994 of 1000 (t_6 = 9.0e-4 < t_min < t_7 = 1.12e-3).
    assert grid.n == int((times > t_min).sum())
    assert grid.n == {100: 99, 250: 249, 1000: 994}.get(n, n)
    assert torch.equal(grid.times[:-1], times[times > t_min].flip(0))  # the schedule's times, unchanged


def test_without_early_stopping_the_linear_grid_is_the_whole_schedule():
    for n in (21, 250):
        grid, whole = grid_factory("linear", 0.0, None)(n), BetaSchedule.linear(n).grid()
        for name in ("times", "betas", "alpha_bars"):
            assert torch.equal(getattr(grid, name), getattr(whole, name))


def test_a_sweep_reports_the_n_asked_the_steps_taken_and_one_t_end():
    ns = [5, 20, 100, 250]
    result = convergence_study(ANISOTROPIC, ["em"], ns, t_min=1e-3)
    assert [row["n"] for row in result.rows] == ns
    assert [row["steps"] for row in result.rows] == [5, 20, 99, 249]
    assert {row["t_end"] for row in result.rows} == {1e-3}
    assert [row["nfe"] for row in result.rows] == [row["steps"] for row in result.rows]
    # em is first order on every grid of the sweep, coarse respaced ones included: the error falls with n.
    errors = [row["error"] for row in result.rows]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors


def test_compare_reports_the_same_columns_and_one_t_end():
    settings = MonteCarlo(n_samples=200, repeats=2, n_projections=4)
    result = compare_samplers(GAUSSIAN_1D, None, ["em"], [5, 250], t_min=1e-3, monte_carlo=settings)
    assert [(row["n"], row["steps"], row["t_end"]) for row in result.rows] == [(5, 5, 1e-3), (250, 249, 1e-3)]


def test_the_floor_has_a_standard_error_whatever_the_repeats():
    # One repeat used to give a floor of one draw and a NaN standard error; the floor now has its
    # own number of draws (MonteCarlo.floor_draws, 8 by default).
    settings = MonteCarlo(n_samples=200, repeats=1, n_projections=4)
    mean, se = MonteCarloJudge(GAUSSIAN_1D, settings).floor(0.01)
    assert settings.floor_draws == 8 and settings.describe()["floor_draws"] == 8
    assert mean > 0 and math.isfinite(se) and se > 0
    assert MonteCarloJudge(GAUSSIAN_1D, settings).floor(0.01) == (mean, se)  # the same seeds, the same floor
