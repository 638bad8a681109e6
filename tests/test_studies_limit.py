"""The ᾱ limit (diffsde.studies.limit)."""

import pytest

from diffsde.studies import alpha_bar_limit


def test_alpha_bar_limit_still_answers_as_the_cli_expects():
    rows, orders = alpha_bar_limit(["linear"], [100, 1000])
    assert [row["n"] for row in rows] == [100, 1000]
    # n · max |ᾱ_i - e^{-t_i}| -> 0.8622 for the linear schedule (schedules.py docstring).
    assert rows[-1]["n_times_error"] == pytest.approx(0.8622, abs=0.01)
    assert orders["linear"] == pytest.approx(1.0, abs=0.02)
