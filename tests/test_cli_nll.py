"""``diffsde nll``: the likelihood study from the command line (tiny runs, in-process through
``main([...])``); user errors are one stderr line with exit status 2 and no output folder."""

import pytest

from diffsde import toys
from diffsde.studies import StudyResult, likelihood_study
from diffsde.studies.likelihood import TABLE_COLUMNS, likelihood_reading
from test_cli import assert_one_line_error as one_line_error
from test_cli import run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ["--tolerances", "1e-3", "1e-4", "--ns", "10", "30", "--n-samples", "40", "--no-progress"]


def assert_one_line_error(status: int, err: str) -> None:
    one_line_error(status, err)
    assert err.startswith("diffsde nll: error:")


def without_times(rows):
    return [{key: value for key, value in row.items() if key != "wall_time_s"} for row in rows]


def test_nll_writes_and_prints_what_the_study_returns(tmp_path, capsys):
    status, out, _ = run(["nll", "--toy", "gaussian", "--seed", 5, *TINY, "--out", tmp_path / "n"], capsys)
    assert status == 0
    saved = StudyResult.load(tmp_path / "n" / "nll.json")
    expected = likelihood_study(toys.gaussian(), tolerances=(1e-3, 1e-4), ns=(10, 30), n_samples=40, seed=5)
    assert saved.kind == "likelihood" and without_times(saved.rows) == without_times(expected.rows)
    assert without_times(StudyResult.load(tmp_path / "n" / "nll.csv").rows) == without_times(saved.rows)
    assert (tmp_path / "n" / "nll.png").read_bytes()[:8] == PNG_SIGNATURE
    assert saved.table(TABLE_COLUMNS) in out
    assert likelihood_reading(saved) in out and "PF-ODE NLL" in out and "VLB at n=30" in out
    assert f"written: {tmp_path / 'n'} (nll.json, nll.csv, nll.png)" in out


def test_nll_of_a_checkpoint_reads_its_toy_and_refuses_the_exact_prior(tmp_path, capsys):
    train = ["train", "--toy", "gaussian", "--train-steps", 20, "--batch-size", 64, "--hidden", 8, "--depth", 1,
             "--no-progress", "--out", tmp_path / "t"]
    assert run(train, capsys)[0] == 0
    status, _, err = run(["nll", "--checkpoint", tmp_path / "t", "--prior", "exact", *TINY, "--out", tmp_path / "x"],
                         capsys)
    assert_one_line_error(status, err)
    assert "--prior exact" in err and not (tmp_path / "x").exists()
    status, out, _ = run(["nll", "--checkpoint", tmp_path / "t", *TINY, "--out", tmp_path / "n"], capsys)
    assert status == 0
    saved = StudyResult.load(tmp_path / "n" / "nll.json")
    # The data and the exact -log p0 are the gaussian toy's (from the run); the flow starts at 1e-5.
    assert saved.meta["target"] == repr(toys.gaussian()) and saved.meta["score"].startswith("EpsilonScore")
    assert saved.meta["t_min"] == 1e-5 and [row["estimator"] for row in saved.rows][:2] == ["exact", "pf-ode"]
    assert saved.table(TABLE_COLUMNS) in out


@pytest.mark.parametrize("argv, fragment", [
    (["--tolerances", "2"], "tolerances"),
    (["--tolerances", "0"], "--tolerances"),
    (["--ns", "100", "10"], "increasing"),
    (["--n-samples", "1"], "--n-samples"),
    (["--probes", "0"], "--probes"),
    (["--divergence", "trace"], "--divergence"),
    (["--toy", "moons"], "no exact score"),
    (["--checkpoint", "no/such/file.pt"], "no checkpoint"),
])
def test_bad_arguments_are_one_line_on_stderr(argv, fragment, tmp_path, capsys):
    status, _, err = run(["nll", *argv, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(status, err)
    assert fragment in err and not (tmp_path / "out").exists()


def test_nll_has_help_with_the_common_options(capsys):
    status, out, _ = run(["nll", "--help"], capsys)
    assert status == 0
    for option in ("--seed", "--device", "--out", "--force", "--tolerances", "--ns", "--prior", "--checkpoint"):
        assert option in out
