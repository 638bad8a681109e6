"""Study results on disk: JSON and CSV round trips, atomic writes, refusal of other files
(diffsde.studies.results)."""

import math

import pytest

from diffsde import GaussianScore
from diffsde.studies import StudyResult, convergence_study

# 2-D, non-zero mean, correlated and anisotropic (eigenvalues ≈ 2.18 and 0.32).
ANISOTROPIC = GaussianScore([1.0, -1.0], [[1.5, 0.9], [0.9, 1.0]])


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
