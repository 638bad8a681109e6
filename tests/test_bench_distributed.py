"""Smoke test of benchmarks/bench_distributed.py: ``--quick`` runs its three parts through torchrun
(scaling with 1 and 2 ranks, the overhead in a 1-rank group, the metrics over 2 ranks) and the JSON
holds their rows and targets (about 30 s on 2 cores: five torchrun launches).

Besides the JSON's structure, properties that would fail if the distributed path broke: the 2-rank
launch gathers the same bits as the 1-rank one (sha256 of the samples), the 1-rank group's
``distributed.sample`` equals ``diffsde.sample`` with the same seed, and the gather-free metrics count
every one of the N samples (moments, mode counts and histogram).
"""

import json

import pytest
import torch

from conftest import load_benchmark


def test_quick_runs_every_part_through_torchrun(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("bench_distributed", monkeypatch)
    out = tmp_path / "distributed.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "distributed" and result["machine"]["device"] == "cpu"
    assert result["parts"] == ["scaling", "overhead", "metrics"] and result["steps"] == 10

    scaling = {row["ranks"]: row for row in result["scaling"]["rows"]}
    assert set(scaling) == {1, 2} and all(row["N"] == 20_000 and row["seconds"] > 0 for row in scaling.values())
    assert scaling[2]["rows_per_rank"] == "16384/3616" and scaling[1]["sha256"] == scaling[2]["sha256"]
    assert result["scaling"]["raw"]["20000"]["same_bits"]
    assert all(row["startup_s"] > 0 for row in scaling.values())

    overhead = result["overhead"]["rows"]
    assert [row["N"] for row in overhead] == [1_000, 20_000]
    assert all(row["same_bits"] and row["distributed_vs_chunked"] > 0 for row in overhead)

    metrics = result["metrics"]["raw"]
    assert metrics["world_size"] == 2 and metrics["N"] == 40_000
    assert sum(rank["rows"] for rank in metrics["ranks"]) == 40_000
    assert metrics["values"]["count"] == metrics["values"]["histogram_total"] == 40_000
    assert sum(metrics["values"]["mode_counts"]) == 40_000 and metrics["values"]["sliced_wasserstein"] > 0
    assert all(rank["max_rss_mib"] > 0 for rank in metrics["ranks"])
    assert {row["metric"] for row in result["metrics"]["rows"]} == {"moments", "mode_counts", "histogram",
                                                                   "sliced_wasserstein"}

    targets = {target["target"].split(" (")[0]: target for target in result["targets"]}
    assert set(targets) == {"2 ranks >= 1.8x one rank's samples/s", "2 ranks' samples equal one rank's bit for bit",
                            "distributed.sample at world size 1 within 2% of diffsde.sample",
                            "distributed.sample equals diffsde.sample bit for bit",
                            "peak RSS per rank <= 1 GiB, everything the rank holds"}
    assert targets["2 ranks' samples equal one rank's bit for bit"]["met"] == "met"
    assert "BetaSchedule.linear(1000).respaced(10, 'trailing')" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip on a machine without CUDA")
def test_cuda_without_a_gpu_is_skipped(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("bench_distributed", monkeypatch)
    out = tmp_path / "cuda.json"
    assert bench.main(["--quick", "--device", "cuda", "--out", str(out)]) == 0
    assert not out.exists() and "CUDA is not available" in capsys.readouterr().err
