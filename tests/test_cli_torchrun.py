"""``torchrun --nproc-per-node=2 -m diffsde COMMAND``: the same files as one process (samples bit for
bit, studies equal but for wall times, trained weights within float32 round-off), written once by
rank 0, printed once; refusals are one line per rank and nothing is left half-written. Real
torchrun subprocesses (``--standalone``: a free local port), gloo on the CPU; small sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from diffsde import cli
from diffsde.training import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def torchrun(argv: list, cwd: Path, processes: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "diffsde", *map(str, argv), "--no-progress", "--dist-timeout", "60"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def single(argv: list, capsys) -> str:
    """The command in this process, as without torchrun: no process group is ever made."""
    assert cli.main([*map(str, argv), "--no-progress"]) == 0
    assert not torch.distributed.is_initialized()
    return capsys.readouterr().out


def ours(err: str) -> list[str]:
    """diffsde's own lines on stderr (torchrun adds its banner and its failure report)."""
    return [line for line in err.splitlines() if line.startswith("diffsde ") and "error:" in line]


def _no_traceback_of_ours(err: str) -> bool:
    """No frame of diffsde's source on stderr (torchrun prints its own traceback when a worker fails)."""
    return f"{os.sep}diffsde{os.sep}" not in err


def test_sample_across_two_processes_is_the_single_process_sample(tmp_path, capsys):
    argv = ["sample", "--toy", "ring", "--exact", "--method", "em", "--steps", "20", "--n-samples", "20000",
            "--seed", "3"]
    done = torchrun([*argv, "--out", tmp_path / "two"], tmp_path)
    assert done.returncode == 0, done.stderr
    printed = single([*argv, "--out", tmp_path / "one"], capsys)
    assert done.stdout.count("20000 samples with em") == 1 and "20000 samples with em" in printed  # rank 0 prints
    assert torch.equal(torch.load(tmp_path / "two" / "samples.pt"), torch.load(tmp_path / "one" / "samples.pt"))
    two, one = (json.loads((tmp_path / name / "sample.json").read_text()) for name in ("two", "one"))
    assert two["world_size"] == 2 and one["world_size"] == 1 and two["metrics"] == one["metrics"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no scratch or partial folders


def test_converge_across_two_processes_equals_one_process(tmp_path, capsys):
    argv = ["converge", "--toy", "ring", "--methods", "em", "ddpm", "--ns", "5", "10", "20", "--n-samples", "300",
            "--repeats", "2"]
    done = torchrun([*argv, "--out", tmp_path / "two"], tmp_path)
    assert done.returncode == 0, done.stderr
    single([*argv, "--out", tmp_path / "one"], capsys)
    two, one = (json.loads((tmp_path / name / "convergence.json").read_text()) for name in ("two", "one"))
    for result in (two, one):
        for row in result["rows"]:
            row.pop("wall_time_s", None)
    assert two["rows"] == one["rows"] and two["summary"] == one["summary"]


def test_train_across_two_processes_matches_one_process(tmp_path, capsys):
    # DDP averages the two ranks' gradients of their half-batch means, the gradient of the global mean:
    # equal in exact arithmetic, so the weights agree within float32 round-off accumulated over the steps
    # (Adam's update is scale-free, so each step moves a weight by at most lr · (a few ulps) ≈ 3e-3 · 1e-6;
    # 20 steps stay below 1e-6; 1e-5 leaves room).
    argv = ["train", "--toy", "ring", "--train-steps", "20", "--batch-size", "64", "--hidden", "16", "--depth", "1"]
    done = torchrun([*argv, "--out", tmp_path / "two"], tmp_path)
    assert done.returncode == 0, done.stderr
    single([*argv, "--out", tmp_path / "one"], capsys)
    assert done.stdout.count("trained EpsilonMLP") == 1
    two, one = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("two", "one"))
    assert two.step == one.step == 20
    for key, value in one.ema_state.items():
        assert torch.allclose(two.ema_state[key], value, rtol=0, atol=1e-5), key


def test_a_refusal_every_rank_reaches_is_one_line_from_rank_0_and_writes_nothing(tmp_path):
    # Every rank reaches these refusals at once; rank 0 reports them (the others wait for it, and
    # torchrun stops them when it exits): one line, no traceback of diffsde's, nothing written.
    cases = [(["sample", "--toy", "ring", "--exact", "--n-samples", "10", "--out", tmp_path / "taken"],
              "diffsde sample: error: output folder"),
             (["train", "--toy", "ring", "--train-steps", "5", "--batch-size", "63", "--out", tmp_path / "odd"],
              "diffsde train: error: batch_size = 63 must be a multiple of the world size 2"),
             (["limit", "--schedule", "linear"], "diffsde limit: error: `diffsde limit` runs in one process")]
    (tmp_path / "taken").mkdir()
    for argv, expected in cases:
        done = torchrun(argv, tmp_path)
        lines = ours(done.stderr)
        assert done.returncode != 0 and len(lines) == 1 and lines[0].startswith(expected), done.stderr
        assert _no_traceback_of_ours(done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"] and list((tmp_path / "taken").iterdir()) == []
