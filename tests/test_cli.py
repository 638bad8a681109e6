"""The ``diffsde`` command, end to end at small size: the demo in a real subprocess, the
other commands in-process through ``main([...])``; user errors are one stderr line with
exit status 2 and no traceback; output folders are all-or-nothing and never overwritten
without ``--force``.

The numbers the commands print come from library functions tested elsewhere; here the
check is that the files hold exactly what those functions return for the same arguments."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffsde import __version__, cli, commands, demo, toys
from diffsde._output import MANIFEST
from diffsde.studies import StudyResult, alpha_bar_limit, convergence_study
from diffsde.training import load_checkpoint

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]
SMALL_TRAIN = ["--train-steps", "30", "--batch-size", "64", "--hidden", "16", "--no-progress"]


def run(argv, capsys) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status: int, err: str) -> None:
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("diffsde") and "error:" in err
    assert "Traceback" not in err


def no_leftovers(folder: Path) -> bool:
    """No temporary ``.name.*.partial`` / ``.old`` folders left beside the outputs."""
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# -- the main job, as a user runs it -------------------------------------------------------

def test_demo_end_to_end_in_a_subprocess(tmp_path):
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "diffsde", "demo", "--small", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    payload = json.loads((out / "metrics.json").read_text())
    rows = payload["rows"]
    # 7 methods x (learned, exact) + the noise-floor row, each with every metric, all finite.
    assert [(row["score"], row["method"]) for row in rows[:-1]] == \
        [(score, method) for score in ("learned", "exact") for method in demo.DEMO_METHODS]
    assert rows[-1]["method"] == "exact samples"
    for row in rows:
        for column in ("sw2", "energy", "mode_tv", "mean_err", "cov_err"):
            assert np.isfinite(row[column]) and row[column] >= 0
    # The printed table is the JSON's table, and it names the report folder.
    assert demo.demo_table(rows) in done.stdout
    assert f"report: {out}" in done.stdout
    report = (out / "report.md").read_text()
    assert demo.demo_table(rows) in report
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures == ["alpha_bar.png", "densities.png", "error_vs_nfe.png", "loss.png", "paths.png",
                       "samples_exact.png", "samples_learned.png"]
    for name in figures:
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
        assert f"]({name})" in report
    assert load_checkpoint(out / "checkpoint.pt").step == payload["settings"]["train_config"]["steps"]
    assert no_leftovers(tmp_path)


def test_a_corrupt_checkpoint_is_one_line_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    status, _, err = run(["sample", "--checkpoint", bad, "--out", tmp_path / "s"], capsys)
    assert_one_line_error(status, err)
    assert "not a readable checkpoint" in err
    assert not (tmp_path / "s").exists()


# -- output folders ----------------------------------------------------------------------

def test_existing_output_folder_is_refused_without_force_and_replaced_with_it(tmp_path, capsys):
    out = tmp_path / "lim"
    assert run(["limit", "--n", "100", "1000", "--out", out], capsys)[0] == 0
    first = (out / MANIFEST).read_text()
    status, _, err = run(["limit", "--n", "100", "1000", "--out", out, "--seed", 5], capsys)
    assert_one_line_error(status, err)
    assert "--force" in err
    assert (out / MANIFEST).read_text() == first
    status, _, _ = run(["limit", "--n", "100", "1000", "--out", out, "--seed", 5, "--force"], capsys)
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "alpha_bar.png", "limit.json"]
    assert "--seed 5" in json.loads((out / MANIFEST).read_text())["command"]
    assert no_leftovers(tmp_path)


@pytest.mark.parametrize("where", ["cwd", "cwd-empty", "home", "user-folder"])
def test_force_never_replaces_a_folder_diffsde_did_not_write(where, tmp_path, capsys, monkeypatch):
    # Issue 11, item 1: `cd p; diffsde sample ... --out . --force` deleted p/thesis.txt.
    mine = tmp_path / "p"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    monkeypatch.chdir(mine)
    monkeypatch.setenv("HOME", str(mine))
    out = {"cwd": ".", "cwd-empty": "", "home": "~", "user-folder": str(mine)}[where]
    status, _, err = run(["limit", "--n", "100", "1000", "--out", out, "--force"], capsys)
    assert_one_line_error(status, err)
    assert "not written by diffsde" in err and str(mine) in err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.txt"]
    assert (mine / "thesis.txt").read_text() == "years of work" and no_leftovers(tmp_path)


def test_force_never_deletes_a_file_added_to_a_diffsde_folder(tmp_path, capsys):
    out = tmp_path / "lim"
    assert run(["limit", "--n", "100", "1000", "--out", out], capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    status, _, err = run(["limit", "--n", "100", "1000", "--out", out, "--force"], capsys)
    assert_one_line_error(status, err)
    assert "'notes.txt'" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_a_missing_parent_is_created_only_with_parents(tmp_path, capsys):
    # Issue 11, item 5: --out /nonexistent-parent/deeper/out created the whole path.
    out = tmp_path / "missing" / "deeper" / "out"
    status, _, err = run(["limit", "--n", "100", "1000", "--out", out], capsys)
    assert_one_line_error(status, err)
    assert "--parents" in err and str(out.parent) in err
    assert not (tmp_path / "missing").exists()
    assert run(["limit", "--n", "100", "1000", "--out", out, "--parents"], capsys)[0] == 0
    assert (out / "limit.json").is_file()


def test_existing_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: pytest.fail("ran the demo although the output folder exists"))
    monkeypatch.setattr(demo, "train", lambda *a, **k: pytest.fail("trained although the output folder exists"))
    status, _, err = run(["demo", "--small", "--out", out], capsys)
    assert_one_line_error(status, err)


def test_an_interrupted_command_leaves_no_folder(tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands.plots, "training_loss", interrupt)  # after training, while writing figures
    status, out, err = run(["train", "--out", tmp_path / "t", *SMALL_TRAIN], capsys)
    assert status == 130
    assert err == "diffsde train: interrupted\n"
    assert not (tmp_path / "t").exists() and no_leftovers(tmp_path)


def test_a_file_in_the_way_is_never_replaced(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("data")
    status, _, err = run(["limit", "--n", "100", "1000", "--out", target, "--force"], capsys)
    assert_one_line_error(status, err)
    assert target.read_text() == "data"


# -- the commands --------------------------------------------------------------------------

def test_train_then_sample_from_the_checkpoint(tmp_path, capsys, device):
    status, out, _ = run(["train", "--out", tmp_path / "t", "--device", device, "--toy", "ring", *SMALL_TRAIN], capsys)
    assert status == 0 and "checkpoint:" in out
    summary = json.loads((tmp_path / "t" / "train.json").read_text())
    checkpoint = load_checkpoint(tmp_path / "t" / "checkpoint.pt")
    assert summary["toy"] == "ring" and checkpoint.step == 30 and checkpoint.model_config["hidden"] == 16
    for fmt in ("pt", "npy", "csv"):
        status, out, _ = run(["sample", "--checkpoint", tmp_path / "t", "--method", "ddpm", "--steps", 30,
                              "--n-samples", 64, "--format", fmt, "--device", device, "--no-progress",
                              "--out", tmp_path / f"s_{fmt}"], capsys)
        assert status == 0
        record = json.loads((tmp_path / f"s_{fmt}" / "sample.json").read_text())
        assert record["toy"] == "ring"  # read from the training folder's train.json
        assert record["nfe"] == record["steps"] == 29  # linear(30) grid stopped at its first time >= 1e-3
        assert set(record["metrics"]) == {"sw2", "mmd", "energy", "mode_tv", "mean_err", "cov_err"}
        assert _load_samples(tmp_path / f"s_{fmt}" / f"samples.{fmt}").shape == (64, 2)


def test_the_toy_comes_from_the_checkpoints_run(tmp_path, capsys):
    # Issue 11, item 18: `compare --checkpoint <moons run>` judged the moons network against the ring.
    assert run(["train", "--toy", "moons", "--out", tmp_path / "t", *SMALL_TRAIN], capsys)[0] == 0
    status, _, err = run(["sample", "--checkpoint", tmp_path / "t", "--toy", "ring", "--out", tmp_path / "s"], capsys)
    assert_one_line_error(status, err)
    assert "contradicts" in err and "'moons'" in err and not (tmp_path / "s").exists()
    status, _, err = run(["compare", "--checkpoint", tmp_path / "t" / "checkpoint.pt", "--out", tmp_path / "c"], capsys)
    assert_one_line_error(status, err)
    assert "'moons' has none" in err and not (tmp_path / "c").exists()  # moons has no exact law to judge against
    status, _, _ = run(["sample", "--checkpoint", tmp_path / "t", "--steps", 30, "--n-samples", 32, "--no-progress",
                        "--out", tmp_path / "s"], capsys)
    assert status == 0 and json.loads((tmp_path / "s" / "sample.json").read_text())["toy"] == "moons"
    # A checkpoint file away from its run says nothing of its toy: compare asks for --toy.
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "net.pt").write_bytes((tmp_path / "t" / "checkpoint.pt").read_bytes())
    status, _, err = run(["compare", "--checkpoint", tmp_path / "alone" / "net.pt", "--out", tmp_path / "c"], capsys)
    assert_one_line_error(status, err)
    assert "pass --toy" in err


def _load_samples(path: Path) -> np.ndarray:
    if path.suffix == ".pt":
        return torch.load(path).numpy()
    if path.suffix == ".npy":
        return np.load(path)
    return np.loadtxt(path, delimiter=",", skiprows=1)


def test_sample_with_an_exact_score_is_reproducible(tmp_path, capsys, device):
    def draw(name: str, seed: int) -> np.ndarray:
        status, _, _ = run(["sample", "--toy", "gaussian", "--exact", "--method", "ode-heun", "--steps", 30,
                            "--n-samples", 16, "--seed", seed, "--format", "npy", "--device", device,
                            "--no-progress", "--out", tmp_path / name], capsys)
        assert status == 0
        return np.load(tmp_path / name / "samples.npy")

    first, again, other = draw("a", 1), draw("b", 1), draw("c", 2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("grid", ["log-snr", "karras"])
def test_sample_on_a_log_snr_or_karras_grid_with_a_final_denoising_step(tmp_path, capsys, grid):
    status, _, _ = run(["sample", "--toy", "gaussian", "--exact", "--method", "dpm-solver", "--steps", 12,
                        "--grid", grid, "--final", "denoise", "--t-min", "1e-3", "--n-samples", 8, "--format", "npy",
                        "--prior", "tweedie", "--no-progress", "--out", tmp_path / "s"], capsys)
    assert status == 0
    record = json.loads((tmp_path / "s" / "sample.json").read_text())
    # The Tweedie start, 12 multistep steps and the denoising step; the grid ends at --t-min.
    assert (record["grid"], record["final"], record["prior"], record["steps"], record["nfe"]) == \
        (grid, "denoise", "tweedie", 12, 14)
    assert record["t_end"] == pytest.approx(1e-3, rel=1e-12)


def test_a_final_denoising_step_needs_a_grid_ending_above_zero(tmp_path, capsys):
    status, _, err = run(["sample", "--toy", "gaussian", "--exact", "--method", "ddim", "--steps", 10,
                          "--t-min", "0", "--final", "denoise", "--no-progress", "--out", tmp_path / "s"], capsys)
    assert_one_line_error(status, err)
    assert "--final denoise" in err and not (tmp_path / "s").exists()
    status, _, err = run(["sample", "--toy", "gaussian", "--exact", "--method", "ddim", "--steps", 10,
                          "--t-min", "0", "--grid", "log-snr", "--no-progress", "--out", tmp_path / "s"], capsys)
    assert_one_line_error(status, err)
    assert "--t-min > 0" in err


def test_converge_writes_what_convergence_study_returns(tmp_path, capsys):
    status, out, _ = run(["converge", "--toy", "gaussian", "--methods", "em", "ode-heun", "--ns", 25, 50, 100,
                          "--out", tmp_path / "c"], capsys)
    assert status == 0
    saved = StudyResult.load(tmp_path / "c" / "convergence.json")
    expected = convergence_study(toys.gaussian(), ["em", "ode-heun"], [25, 50, 100])
    assert saved.rows == expected.rows and saved.summary == expected.summary
    assert expected.summary_table(["method", "estimator", "declared_order", "order", "order_ci_low",
                                   "order_ci_high", "fit_points"]) in out
    assert (tmp_path / "c" / "convergence.png").read_bytes()[:8] == PNG_SIGNATURE


def test_compare_with_a_checkpoint_and_with_the_exact_score(tmp_path, capsys):
    assert run(["train", "--out", tmp_path / "t", *SMALL_TRAIN], capsys)[0] == 0
    for name, extra in (("exact", []), ("learned", ["--checkpoint", tmp_path / "t" / "checkpoint.pt"])):
        status, out, _ = run(["compare", "--methods", "ddpm", "ode-euler", "--ns", 21, 30, "--n-samples", 64,
                              "--repeats", 1, "--no-progress", "--out", tmp_path / name, *extra], capsys)
        assert status == 0
        result = StudyResult.load(tmp_path / name / "comparison.json")
        assert [(row["method"], row["n"]) for row in result.rows] == \
            [("ddpm", 21), ("ddpm", 30), ("ode-euler", 21), ("ode-euler", 30)]
        assert result.table() in out
        assert ("EpsilonScore" in result.meta["score"]) == (name == "learned")


def test_compare_plots_the_standard_errors_it_writes(tmp_path, capsys, monkeypatch):
    drawn = {}
    real = commands.plots.error_vs_nfe
    monkeypatch.setattr(commands.plots, "error_vs_nfe", lambda *a, **k: drawn.update(k) or real(*a, **k))
    status, out, _ = run(["compare", "--methods", "ddpm", "--ns", 21, 30, "--n-samples", 64, "--repeats", 2,
                          "--no-progress", "--out", tmp_path / "c"], capsys)
    assert status == 0
    result = StudyResult.load(tmp_path / "c" / "comparison.json")
    assert drawn["se"] == {"ddpm": [row["error_se"] for row in result.rows]}
    floor = result.meta["floor"]
    assert (drawn["floor"], drawn["floor_se"]) == (floor["mean"], floor["se"])
    assert f"{floor['mean']:.4g} ± {floor['se']:.2g}" in out


def test_coarse_step_counts_run(tmp_path, capsys):
    # Issue 11, item 20: step counts below 21 were refused (linear(n) has β >= 1 there); they now
    # run on the linear rate respaced to n steps (diffsde.studies.linear_schedule).
    status, _, _ = run(["sample", "--toy", "ring", "--exact", "--steps", 5, "--n-samples", 64, "--no-progress",
                        "--out", tmp_path / "s"], capsys)
    assert status == 0 and json.loads((tmp_path / "s" / "sample.json").read_text())["nfe"] <= 5
    status, _, _ = run(["compare", "--methods", "ddpm", "--ns", 2, 5, "--n-samples", 64, "--repeats", 1,
                        "--no-progress", "--out", tmp_path / "c"], capsys)
    assert status == 0
    assert [row["n"] for row in StudyResult.load(tmp_path / "c" / "comparison.json").rows] == [2, 5]


def test_limit_prints_the_alpha_bar_table(capsys):
    status, out, _ = run(["limit", "--n", 100, 1000], capsys)
    assert status == 0
    rows, orders = alpha_bar_limit(["linear"], [100, 1000])
    assert commands.format_table(rows, ["schedule", "n", "T", "max_error", "n_times_error", "max_error_exact_times"]) in out
    assert f"fitted order (linear): {orders['linear']:.3f}" in out


def test_limit_writes_its_table_when_asked(tmp_path, capsys):
    assert run(["limit", "--n", 100, 1000, "--out", tmp_path / "l"], capsys)[0] == 0
    saved = json.loads((tmp_path / "l" / "limit.json").read_text())
    rows, orders = alpha_bar_limit(["linear"], [100, 1000])
    assert saved == {"rows": rows, "orders": orders}


@pytest.mark.parametrize("command", ["demo", "train", "sample", "compare", "converge", "nll", "limit"])
def test_every_command_has_help_with_the_common_options(command, capsys):
    status, out, _ = run([command, "--help"], capsys)
    assert status == 0
    for option in ("--seed", "--device", "--out", "--force"):
        assert option in out


def test_the_global_rng_and_thread_count_are_left_alone(capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    assert run(["limit", "--n", 100, 1000, "--threads", 1, "--seed", 7], capsys)[0] == 0
    assert torch.equal(torch.rand(3), expected) and torch.get_num_threads() == threads


def test_every_option_has_a_help_line_and_version_is_printed(capsys):
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps the subparsers here
    for name, command in [("diffsde", parser), *commands.items()]:
        for action in command._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help line"
    status, out, _ = run(["--version"], capsys)
    assert status == 0 and out == f"diffsde {__version__}\n"


# -- user errors -------------------------------------------------------------------------

@pytest.mark.parametrize("argv, fragment", [
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--n-samples", "many"], "--n-samples"),
    (["demo", "--device", "gpu0"], "--device"),
    (["demo", "--steps", "0"], "--steps"),
    (["demo", "--seed", str(2 ** 64)], "--seed"),  # not torch's "Overflow when unpacking long long"
    (["train", "--threads", "100000"], "CPU count"),  # segfaulted in libgomp
    (["limit", "--n", "100", "100", "100"], "distinct"),  # fitted an order of 0.513 with a numpy warning
    (["train", "--lr", "1e30", "--train-steps", "3", "--hidden", "4", "--no-progress"], "diverged"),
    (["train", "--toy", "unicorn"], "--toy"),
    (["train", "--lr", "-1"], "--lr"),
    (["sample", "--method", "rk4", "--toy", "ring", "--exact"], "unknown method 'rk4'"),
    (["sample", "--toy", "ring"], "exactly one of --checkpoint"),
    (["sample", "--exact"], "--exact needs --toy"),
    (["sample", "--toy", "moons", "--exact"], "no exact score"),
    (["sample", "--checkpoint", "no/such/file.pt"], "no checkpoint"),
    (["compare", "--toy", "moons"], "has none"),
    (["compare", "--ns", "50", "25"], "increasing"),
    (["converge", "--ns", "25", "50"], "at least 3"),
    (["limit", "--schedule", "quadratic"], "--schedule"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_are_one_line_on_stderr(argv, fragment, tmp_path, capsys):
    status, out, err = run([*argv, "--out", tmp_path / "out"] if argv[0] != "frobnicate" else argv, capsys)
    assert_one_line_error(status, err)
    assert fragment in err
    assert not (tmp_path / "out").exists()


def test_cuda_is_refused_clearly_when_absent(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    status, _, err = run(["demo", "--device", "cuda"], capsys)
    assert_one_line_error(status, err)
    assert "CUDA is not available" in err


# -- memory ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, size", [
    (["sample", "--toy", "ring", "--exact", "--n-samples", 10 ** 13], "160 TB"),  # 10^13 x 2 x 8 bytes
    (["compare", "--n-samples", 10 ** 13], "160 TB"),
    (["train", "--hidden", 10 ** 7], "PB"),  # two 10^7 x 10^7 float32 blocks, five copies: 4e15 bytes
    (["limit", "--n", 10 ** 13], "320 TB"),  # four float64 arrays of 10^13 values
])
def test_impossible_sizes_are_refused_before_allocating(argv, size, tmp_path, capsys, monkeypatch):
    # Issue 11, item 7: these reached the CLI as ~30-line allocator tracebacks (or the OOM killer).
    for name in ("sharded_sample", "train_network", "compare_samplers", "alpha_bar_limit"):
        monkeypatch.setattr(commands, name, lambda *a, **k: pytest.fail("allocated although the size cannot fit"))
    status, _, err = run([*argv, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(status, err)
    assert size in err and "more than" in err
    assert not (tmp_path / "out").exists()


def test_an_allocation_failure_is_one_line_naming_the_size(tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):  # torch's CPU allocator, word for word
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 12800000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(commands, "sharded_sample", fail)
    status, _, err = run(["sample", "--toy", "ring", "--exact", "--out", tmp_path / "s"], capsys)
    assert_one_line_error(status, err)
    assert "out of memory" in err and "12.8 GB" in err
    assert not (tmp_path / "s").exists() and no_leftovers(tmp_path)
