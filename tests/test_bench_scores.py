"""Smoke test of benchmarks/bench_scores.py: one small case runs, and the JSON holds the rows, the
machine's rates and the ring's floor.

Besides the JSON's structure, one property that would fail if the forms broke: at N = 1e4 the ring's
form (components x samples, chunks of 16384 rows) allocates less than the batched path, which holds
(N, K, d) coordinates and (N, K) logits at once: 10^4·8·2·4 = 0.64 MB for the coordinates alone,
against the form's (8, N) logits of 0.32 MB and its (N, 3) sums.
"""

import json

import torch

from conftest import load_benchmark


def test_ring_case_writes_rows_rates_and_floor(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("bench_scores", monkeypatch)
    out = tmp_path / "scores.json"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--cases", "ring", "--sizes", "10000", "--repeats", "1", "--threads", "1",
                           "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["benchmark"] == "scores" and result["machine"]["device"] == "cpu"
    rows = {row["layout"]: row for row in result["rows"]}
    assert set(rows) == {"form", "batched"} and rows["form"]["form"] == "shared"
    assert all(row["us_per_call"] > 0 and row["N"] == 10_000 for row in rows.values())
    assert 0 < rows["form"]["peak_mib"] < rows["batched"]["peak_mib"]
    floor = result["ring_floor"]
    assert floor["N"] == 10_000 and floor["floor_us"] == max(floor["memory_us"], floor["compute_us"]) > 0
    assert {target["target"].split(" (")[0] for target in result["targets"]} == {
        "ring score within 1.5x of its floor"}
    assert "ring floor at N = 10000" in capsys.readouterr().out
