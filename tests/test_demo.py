"""The demo as a library: ``run_demo`` returns the whole report and writes nothing,
``write_report`` writes it, and ``diffsde demo`` writes exactly what ``write_report`` writes.
The same seed gives the same report, number for number and pixel for pixel.

The numbers themselves come from library functions tested elsewhere (samplers, metrics,
studies); here the checks are the report's structure, its reproducibility and its files."""

import math
import os

import pytest
import torch

from conftest import DEVICES
from diffsde import BetaSchedule, cli, demo, plots, toys
from diffsde._output import MANIFEST
from diffsde.demo import (DEMO_COLUMNS, DEMO_METHODS, DEMO_T_MIN, FLOOR_DRAWS, DemoReport, DemoSettings, demo_grid,
                          demo_table, judge, noise_floor, run_demo, write_report)
from diffsde.studies import StudyResult
from diffsde.studies.estimators import mean_and_se

FIGURES = ["alpha_bar.png", "densities.png", "error_vs_nfe.png", "loss.png", "paths.png", "samples_exact.png",
           "samples_learned.png"]
METRICS = ("sw2", "energy", "mode_tv", "mean_err", "cov_err")
TIMES = ("time_s", "wall_time_s")


def files_under(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, dirs, names in os.walk(folder) for name in names + dirs)


@pytest.fixture(scope="module", params=DEVICES)
def small(request, tmp_path_factory):
    """A demo at ``--small`` size on each device, run from an empty working folder with one
    torch thread (as ``diffsde demo`` runs): (report, what appeared in that folder)."""
    where = tmp_path_factory.mktemp("demo_cwd")
    before, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(where)
    torch.set_num_threads(1)
    rng = torch.random.get_rng_state()
    try:
        report = run_demo(DemoSettings(device=request.param).small())
        rng_kept = torch.equal(torch.random.get_rng_state(), rng)
    finally:
        os.chdir(before)
        torch.set_num_threads(threads)
    return report, files_under(where), rng_kept


def without_times(value):
    """A report record with its wall times dropped: what must repeat exactly for the same seed."""
    if isinstance(value, dict):
        return {key: without_times(item) for key, item in value.items() if key not in TIMES}
    if isinstance(value, list):
        return [without_times(item) for item in value]
    return value


def test_run_demo_returns_the_report_and_writes_nothing(small):
    report, written, rng_kept = small
    assert written == [] and rng_kept
    assert isinstance(report, DemoReport) and report.checkpoint_path is None
    assert report.settings.train_steps == demo.SMALL_SIZES["train_steps"] == len(report.training.losses)
    # 7 methods x (learned, exact) + the noise-floor row, each with every metric, all finite.
    assert [(row["score"], row["method"]) for row in report.rows[:-1]] == \
        [(score, method) for score in ("learned", "exact") for method in DEMO_METHODS]
    assert report.rows[-1]["method"] == "exact samples"
    for row in report.rows:
        for column in METRICS:
            assert math.isfinite(row[column]) and row[column] >= 0
    # Every run reports the steps asked for (n) and those its grid takes above t_min (steps).
    grid = demo_grid(report.settings.steps)
    assert all((row["n"], row["steps"]) == (report.settings.steps, grid.n) for row in report.rows[:-1])
    assert report.metrics["settings"]["grid_steps"] == grid.n
    # The noise floor is a mean ± standard error over FLOOR_DRAWS draws, and the table shows it so.
    floor = report.rows[-1]
    assert floor["draws"] == FLOOR_DRAWS
    assert all(math.isfinite(floor[f"{column}_se"]) and floor[f"{column}_se"] > 0 for column in METRICS)
    assert report.table == demo_table(report.rows)
    assert report.table.splitlines()[-1].count("±") == len(METRICS)
    assert "±" not in "\n".join(report.table.splitlines()[:-1])
    assert report.metrics["rows"] is report.rows and report.metrics["columns"] == DEMO_COLUMNS
    assert report.metrics["settings"]["device"] == str(report.settings.device)
    assert sorted(report.sweep) == ["exact", "learned"]
    for name, result in report.sweep.items():
        assert report.metrics["sweep"][name] == result.to_dict()
        assert math.isfinite(result.meta["floor"]["se"])  # one repeat, but a floor of several draws
        assert sorted({row["n"] for row in result.rows}) == list(demo.SMALL_SIZES["sweep"])
    # The markdown holds the table, the sweep's tables and a link to every figure; no checkpoint was written.
    assert list(report.figures) == FIGURES
    assert report.table in report.markdown
    for result in report.sweep.values():
        assert result.table(["method", "n", "nfe", "error", "wall_time_s"]) in report.markdown
    for name in FIGURES:
        assert f"]({name})" in report.markdown
    assert "checkpoint" not in report.markdown


def test_the_figures_are_the_pngs_the_plot_functions_write(small, tmp_path):
    report, _, _ = small
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in report.figures.values())
    plots.training_loss(report.training.losses, tmp_path / "loss.png", title="training loss")
    assert (tmp_path / "loss.png").read_bytes() == report.figures["loss.png"]


def test_the_cli_writes_exactly_what_write_report_writes_and_the_same_seed_repeats(small, tmp_path, capsys,
                                                                                    monkeypatch):
    report, _, _ = small
    if report.settings.device.type != "cpu":
        pytest.skip("the command runs on the CPU here; the CUDA report is checked above")
    made = []

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    real = demo.run_demo
    monkeypatch.setattr(demo, "run_demo", recording)
    assert cli.main(["demo", "--small", "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    (by_cli,) = made
    write_report(by_cli, tmp_path / "lib")
    # Every file the command wrote is the one write_report writes, byte for byte; training added the
    # checkpoint, and the output folder its manifest (the mark of a folder diffsde wrote).
    assert files_under(tmp_path / "cli") == sorted(files_under(tmp_path / "lib") + ["checkpoint.pt", MANIFEST])
    for name in files_under(tmp_path / "lib"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "lib" / name).read_bytes(), name
    # Training wrote the checkpoint into the temporary folder that was then renamed to --out.
    assert by_cli.checkpoint_path.name == "checkpoint.pt" and by_cli.checkpoint_path.parent.parent == tmp_path
    assert "`checkpoint.pt`" in by_cli.markdown
    assert by_cli.table in out and f"report: {tmp_path / 'cli'}" in out
    # The same seed gives the same report: every number but wall times, and every figure's pixels.
    assert by_cli.settings == report.settings
    assert without_times(by_cli.metrics["rows"]) == without_times(report.rows)
    assert without_times(by_cli.metrics["sweep"]) == without_times(report.metrics["sweep"])
    assert torch.equal(by_cli.training.losses, report.training.losses)
    for name in FIGURES:
        assert by_cli.figures[name] == report.figures[name], name


@pytest.mark.parametrize("field, value, error, fragment", [
    ("seed", -1, ValueError, "seed must be an int >= 0"),
    ("steps", 0, ValueError, "steps must be an int >= 1"),
    ("n_samples", 8, ValueError, "n_samples must be an int >= 16"),
    ("train_steps", 1.5, TypeError, "train_steps must be an int"),
    ("hidden", True, TypeError, "hidden must be an int"),
    ("lr", 0.0, ValueError, r"lr must be in \(0, inf\)"),
    ("lr", float("nan"), ValueError, r"lr must be in \(0, inf\)"),
    ("lr", "0.1", TypeError, "lr must be a real number"),
    ("sweep", (), ValueError, "sweep must hold at least one"),
    ("sweep", (5, 0), ValueError, "sweep's step counts must be an int >= 1"),
    ("sweep", 5, TypeError, "sweep must be a sequence"),
    ("sweep", (5, 10.0), TypeError, "sweep's step counts must be an int"),
    ("device", "gpu0", RuntimeError, "gpu0"),
])
def test_bad_settings_are_refused_naming_the_field(field, value, error, fragment):
    with pytest.raises(error, match=fragment):
        DemoSettings(**{field: value})


def test_settings_small_changes_only_the_sizes():
    settings = DemoSettings(seed=4, lr=1e-3, depth=2)
    small = settings.small()
    assert (small.seed, small.lr, small.depth, small.device) == (4, 1e-3, 2, torch.device("cpu"))
    assert {name: getattr(small, name) for name in demo.SMALL_SIZES} == demo.SMALL_SIZES


def test_judge_is_zero_for_identical_samples_and_names_its_distances(device):
    # Identical sample sets: sliced W2 and the energy distance (a V-statistic) are 0 up to the rounding
    # of float64 sums of O(1) terms (MMD² is the unbiased estimate, not 0 here).
    toy = toys.ring()
    law = toy.exact_score
    x = demo.reference_samples(toy, 400, 0.01, torch.Generator(device=device).manual_seed(0))
    assert x.device.type == device.type and x.dtype == torch.float32 and x.shape == (400, 2)
    row = judge(x, x, law, 0.01)
    assert set(row) == {"sw2", "mmd", "energy", "mode_tv", "mean_err", "cov_err"}
    assert row["sw2"] == pytest.approx(0.0, abs=1e-12) and row["energy"] == pytest.approx(0.0, abs=1e-12)
    # Without an exact law only the sample distances; a one-component law has no mode weights.
    assert set(judge(x, x, None, 0.01)) == {"sw2", "mmd", "energy"}
    gaussian = toys.gaussian().exact_score
    assert "mode_tv" not in judge(x, x, gaussian, 0.01)


def test_the_demo_grid_keeps_the_linear_grid_and_respaces_coarse_ones():
    # From 21 steps the demo keeps the grid it always had, bit for bit: linear(steps) cut at the
    # first time >= t_min (250 steps keep 248: t_1 = 4e-4 and t_2 = 1.12e-3).
    for steps in (21, 250):
        grid, before = demo_grid(steps), BetaSchedule.linear(steps).grid(t_min=DEMO_T_MIN)
        for name in ("times", "betas", "alpha_bars"):
            assert torch.equal(getattr(grid, name), getattr(before, name))
    assert demo_grid(250).n == 248
    # Below 21, linear(steps) has β >= 1: the 1000-step linear rate respaced, all steps kept, ending at t_min.
    for steps in (1, 5, 20):
        grid = demo_grid(steps)
        assert (grid.n, grid.t_min) == (steps, DEMO_T_MIN) and float(grid.betas.max()) < 1
        assert grid.T == BetaSchedule.linear(1000).T
    DemoSettings(steps=5)  # accepted
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        demo_grid(0)


def test_the_noise_floor_is_a_mean_and_standard_error_over_independent_draws():
    toy = toys.ring()
    t = 0.01
    truth = demo.reference_samples(toy, 200, t, torch.Generator().manual_seed(1))
    floor = noise_floor(toy, truth, t, torch.Generator().manual_seed(2), draws=4)
    # The same draws, one by one, from the same generator: the floor is their mean ± standard error,
    # and its first draw is the single draw the demo's floor row used to be.
    generator = torch.Generator().manual_seed(2)
    draws = [judge(demo.reference_samples(toy, 200, t, generator), truth, toy.exact_score, t) for _ in range(4)]
    for key in draws[0]:
        assert (floor[key], floor[f"{key}_se"]) == mean_and_se([draw[key] for draw in draws])
    assert floor["draws"] == 4 and floor["sw2_se"] > 0
    with pytest.raises(ValueError, match="draws must be an int >= 2"):
        noise_floor(toy, truth, t, generator, draws=1)


def test_the_table_shows_standard_errors_where_a_row_has_them():
    rows = [{"score": "exact", "method": "em", "n": 250, "steps": 248, "nfe": 248, "sw2": 0.125, "time_s": 0.5},
            {"score": "-", "method": "exact samples", "n": 0, "steps": 0, "nfe": 0, "sw2": 0.14, "sw2_se": 0.0256,
             "time_s": 0.0}]
    lines = demo_table(rows).splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[1:-1]] == DEMO_COLUMNS
    assert "0.125 " in lines[2] and "±" not in lines[2]
    assert "0.14 ± 0.026" in lines[3]


def test_error_se_series_gives_the_plots_their_error_bars():
    result = StudyResult("comparison", [
        {"method": "em", "n": 5, "nfe": 5, "error": 1.0, "error_se": 0.1},
        {"method": "em", "n": 10, "nfe": 10, "error": 0.5, "error_se": 0.05},
        {"method": "ode-euler", "n": 5, "nfe": 5, "error": 1.2, "error_se": math.nan}])  # one repeat: no SE
    assert demo.error_se_series(result) == {"em": [0.1, 0.05]}
    assert demo.nfe_series(result) == {"em": ([5, 10], [1.0, 0.5]), "ode-euler": ([5], [1.2])}


def test_demo_grid_takes_any_t_min():
    # The sample command's linear grid: the same rule at its --t-min.
    assert torch.equal(demo_grid(100, 0.05).times, BetaSchedule.linear(100).grid(t_min=0.05).times)
    coarse = demo_grid(4, 0.05)
    assert (coarse.n, coarse.t_min) == (4, 0.05)
