"""The studies spread over the ranks of a process group (diffsde.studies with
diffsde.distributed.world.map_cells): 2 gloo ranks on the CPU give every rank the serial result.

Multi-process tests run on the CPU (gloo) only; tests/_ranks.py spawns the ranks (~3 s a spawn),
so one spawn computes every study and the checks compare in this process.
"""

import json

import torch

from diffsde import GaussianScore, toys
from diffsde.distributed.world import DistributedError, world
from diffsde.studies import MonteCarlo, compare_samplers, convergence_study, error_budget
from diffsde.studies.estimators import MonteCarloJudge

from _ranks import run_ranks

# 2-D, non-zero mean, correlated and anisotropic (eigenvalues ≈ 2.18 and 0.32).
ANISOTROPIC = GaussianScore([1.0, -1.0], [[1.5, 0.9], [0.9, 1.0]])
WRONG = GaussianScore([1.1, -1.0], [[1.4, 0.9], [0.9, 1.0]])  # a stand-in for a learned score


def _small_mc(**changes) -> MonteCarlo:
    # floor_draws = 3: an odd number of floor cells, so the ranks' shares differ.
    return MonteCarlo(**{"n_samples": 200, "repeats": 2, "n_projections": 8, "floor_draws": 3, **changes})


def _all_studies() -> dict:
    """Small versions of the three studies, exact and Monte Carlo cells mixed, as plain data."""
    mc = _small_mc()
    results = {
        # em and ode-heun exact, pc (no exact law) Monte Carlo: 9 cells and 3 floor draws.
        "convergence": convergence_study(ANISOTROPIC, ["em", "pc", "ode-heun"], [4, 8, 16], t_min=1e-2,
                                         monte_carlo=mc),
        "convergence_ring": convergence_study(toys.ring(), ["em", "ddpm"], [10, 20, 40], prior="normal",
                                              monte_carlo=mc),
        "comparison": compare_samplers(ANISOTROPIC, None, ["em", "pc"], [4, 8], monte_carlo=mc),
        "budget_monte_carlo": error_budget(toys.ring(), None, "em", 8, t_min=1e-2, fine_factor=2, monte_carlo=mc),
        "budget_wrong_score": error_budget(ANISOTROPIC, WRONG, "pc", 8, t_min=1e-2, fine_factor=2, monte_carlo=mc),
        "budget_exact": error_budget(ANISOTROPIC, WRONG, "em", 8, t_min=1e-2, fine_factor=2),
    }
    return {name: result.to_dict() for name, result in results.items()}


def _counting(calls: dict):
    """Count this process's Monte Carlo runs and floor draws (the expensive cells)."""
    run, floor_draw = MonteCarloJudge.run, MonteCarloJudge.floor_draw

    def counted_run(self, *args):
        calls["run"] += 1
        return run(self, *args)

    def counted_floor_draw(self, *args):
        calls["floor_draw"] += 1
        return floor_draw(self, *args)

    return counted_run, counted_floor_draw


def _studies_worker() -> dict:
    calls = {"run": 0, "floor_draw": 0}
    MonteCarloJudge.run, MonteCarloJudge.floor_draw = _counting(calls)  # a spawned process: patched here only
    results = _all_studies()
    current = world()
    try:  # a seed given differently to each rank is refused on every rank, before any cell runs
        convergence_study(ANISOTROPIC, ["pc"], [4, 8, 16], monte_carlo=_small_mc(seed=current.rank))
        mismatch = None
    except DistributedError as err:
        mismatch = str(err)
    return {"world": (current.rank, current.size, current.distributed), "calls": dict(calls),
            "results": results, "mismatch": mismatch}


def _without_wall_times(results: dict) -> str:
    """Everything but the rows' wall_time_s, as JSON text: equal text means every field equal
    and every float equal to the last bit (json writes floats by repr, NaN as NaN)."""
    stripped = {name: {**payload, "rows": [{key: value for key, value in row.items() if key != "wall_time_s"}
                                           for row in payload["rows"]]}
                for name, payload in results.items()}
    return json.dumps(stripped, sort_keys=False)


def test_two_ranks_give_every_rank_the_serial_result(monkeypatch):
    ranks = run_ranks(_studies_worker, 2)
    # The serial reference, on one intra-op thread like the ranks (tests/_ranks.py): the claim is
    # bit-for-bit equality for the same computation, and torch's CPU reductions may round
    # differently with another thread count.
    calls = {"run": 0, "floor_draw": 0}
    run, floor_draw = _counting(calls)
    monkeypatch.setattr(MonteCarloJudge, "run", run)
    monkeypatch.setattr(MonteCarloJudge, "floor_draw", floor_draw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = _all_studies()
    finally:
        torch.set_num_threads(threads)

    assert [rank["world"] for rank in ranks] == [(0, 2, True), (1, 2, True)]
    # No tolerance: each cell runs the same code on the same seeds wherever it runs.
    for rank in ranks:
        assert _without_wall_times(rank["results"]) == _without_wall_times(serial)
        assert all(row["wall_time_s"] > 0 for row in rank["results"]["comparison"]["rows"])
    assert any(row["estimator"] == "exact" for row in serial["convergence"]["rows"])
    assert any(row["estimator"] == "monte_carlo" for row in serial["convergence"]["rows"])
    # The expensive cells were shared out, each run once: every rank did some, together all.
    for kind in ("run", "floor_draw"):
        shares = [rank["calls"][kind] for rank in ranks]
        assert all(share > 0 for share in shares) and sum(shares) == calls[kind], (kind, shares, calls)
    for rank in ranks:
        assert "inconsistent world settings" in rank["mismatch"] and "seed" in rank["mismatch"], rank["mismatch"]


class _FailingOnRank:
    """The exact score, except that it raises on one rank (a cell that fails there)."""

    def __init__(self, exact, rank: int):
        self.exact, self.rank = exact, rank

    def __call__(self, x, t):
        if world().rank == self.rank:
            raise RuntimeError(f"score failed on rank {self.rank}")
        return self.exact(x, t)


def _failing_worker() -> None:
    # Cells [floor draws 0, 1, 2, run n = 4, run n = 8] dealt round-robin: rank 1 gets floor draw 1
    # and the n = 4 run, which fails there; rank 0 finishes its cells and waits at the merge.
    compare_samplers(ANISOTROPIC, _FailingOnRank(ANISOTROPIC, 1), ["em"], [4, 8], monte_carlo=_small_mc())


def test_a_cell_failing_on_one_rank_stops_the_other_without_a_hang():
    outcomes = run_ranks(_failing_worker, 2, timeout_s=10, wait_s=60, expect_errors=True)
    assert outcomes[1].error is not None and "score failed on rank 1" in outcomes[1].error[1], outcomes
    assert outcomes[0].error is not None and outcomes[0].error[0] == "DistributedError", outcomes
    assert "independent cells" in outcomes[0].error[1], outcomes
