"""The ᾱ limit (diffsde.studies.limit)."""

import pytest

from diffsde.studies import alpha_bar_limit


def test_alpha_bar_limit_still_answers_as_the_cli_expects():
    rows, orders = alpha_bar_limit(["linear"], [100, 1000])
    assert [row["n"] for row in rows] == [100, 1000]
    # n · max |ᾱ_i - e^{-t_i}| -> 0.8622 for the linear schedule (schedules.py docstring).
    assert rows[-1]["n_times_error"] == pytest.approx(0.8622, abs=0.01)
    assert orders["linear"] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("ns, error, match", [
    ([100, 100, 100], ValueError, "distinct step counts; 100 appears 3 times"),
    ([100, 1000, 100], ValueError, "distinct step counts; 100 appears 2 times"),
    ([], ValueError, "at least one step count"),
    ([100, 1000.0], TypeError, "step counts must be an int"),
])
def test_alpha_bar_limit_refuses_repeated_or_bad_step_counts(ns, error, match):
    # `limit --n 100 100 100` used to fit an order of 0.513 to three copies of one point, with a numpy warning.
    with pytest.raises(error, match=match):
        alpha_bar_limit(["linear"], ns)
