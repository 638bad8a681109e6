"""Smoke test of benchmarks/bench_likelihood.py: ``--quick`` runs all three parts and writes their JSON.

The script imports its helpers as ``_harness`` (it runs as ``python benchmarks/...``), so the
benchmarks folder goes on sys.path for the import. Besides the JSON's structure, two properties
that hold at quick scale and would fail if the likelihood or the benchmark broke: the tightest
ring tolerance (dopri5, rtol = atol = 1e-4) meets the issue's 1e-3 bits/dim (measured 4e-5; the
per-element error control keeps the solution error per sample near the tolerance, ~1e-4 nats =
7e-5 bits/dim at d = 2), and the benchmark's own trace check (torch.func vs the loop, 1e-10
relative) passed for every case.
"""

import json
import math

import torch

from conftest import load_benchmark


def test_quick_run_writes_every_part(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("bench_likelihood", monkeypatch)
    out = tmp_path / "likelihood.json"
    threads = torch.get_num_threads()
    try:  # one thread: a shared machine's second thread only adds contention at this size
        assert bench.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["benchmark"] == "likelihood" and result["quick"] is True
    assert result["machine"]["device"] == "cpu"

    ring = result["ring"]
    assert {r["solver"] for r in ring["rows"]} == {"dopri5", "bosh3", "rk4", "midpoint"}
    assert all(r["nfe"] > 0 and math.isfinite(r["mean_err_bpd"]) for r in ring["rows"])
    tight = [r for r in ring["rows"] if r["solver"] == "dopri5" and r["tol"] == 1e-4]
    assert tight and tight[0]["mean_err_bpd"] <= bench.TARGET_RING_BPD
    assert ring["met"] and ring["fewest_nfe"]["mean_err_bpd"] <= bench.TARGET_RING_BPD
    assert ring["normal_prior"]["prior"] == "normal"

    hutchinson = result["hutchinson"]
    assert {(r["probes"], r["probe"]) for r in hutchinson["rows"]} == {
        (1, "rademacher"), (4, "rademacher"), (1, "gaussian"), (4, "gaussian")}
    for row in hutchinson["rows"]:
        assert (row["se_median_bpd"] is None) == (row["probes"] == 1)
        assert math.isfinite(row["err_rms_bpd"]) and row["nfe"] > 0
    assert hutchinson["exact_divergence"]["nfe"] > 0 and hutchinson["spread"]
    assert set(hutchinson["met"]) == {"per_sample_median", "per_sample_max", "dataset_mean"}

    loop = result["loop"]["rows"]
    assert [r["dim"] for r in loop] == [2, 8, 8]
    assert all(r["max_rel_diff"] <= bench.RELATIVE_TRACE_TOLERANCE and r["vmap_speedup"] > 0 for r in loop)
    assert [r["closed_form_speedup"] is not None for r in loop] == [True, True, False]  # the MLP has no closed form
    assert "exact divergence: torch.func" in capsys.readouterr().out
