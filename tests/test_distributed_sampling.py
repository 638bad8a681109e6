"""Sampling sharded over 2 gloo ranks (diffsde.distributed.sample): the union of the ranks' rows is
the single-process sample set bit for bit, whatever the method; a shard can be empty; gathering
brings the set to rank 0; bad settings are refused on every rank and a failing rank stops the
others. CPU / gloo only (the spawned processes have no GPU to share)."""

from __future__ import annotations

import pytest
import torch

import diffsde
from diffsde import TimeGrid, toys
from diffsde.distributed import DistributedError, ShardedSample
from diffsde.samplers.chunks import CHUNK_ROWS

from _ranks import run_ranks

GRID = TimeGrid.uniform(10.0, 1e-3, 10)
RUNS = [("em", 2 * CHUNK_ROWS + 100, {}), ("ddpm", 100, {}), ("ode-dopri5", CHUNK_ROWS + 30, {}),
        ("torchsde-euler", CHUNK_ROWS + 30, {"prior": "exact"})]


def _ring():
    return toys.make_toy("ring").exact_score


def _sharded_runs() -> dict:
    """On each rank: every run's local rows, the gathered set (rank 0), and the refusals."""
    from diffsde.distributed import sample, world

    out = {"rank": world().rank, "runs": []}
    for method, n, options in RUNS:
        shard = sample(_ring(), method, grid=GRID, n_samples=n, seed=12, **options)
        out["runs"].append({"x": shard.x, "rows": shard.rows, "gathered": shard.gather(), "info": shard.info})
    refusals = {}
    for name, call in (("too_few", lambda: sample(_ring(), "em", grid=GRID, n_samples=1, seed=0)),
                       ("seeds", lambda: sample(_ring(), "em", grid=GRID, n_samples=8, seed=world().rank)),
                       ("steps", lambda: sample(_ring(), "em", grid=TimeGrid.uniform(10.0, 1e-3, 10 + world().rank),
                                                n_samples=8, seed=0))):
        try:
            call()
        except (ValueError, DistributedError) as err:
            refusals[name] = (type(err).__name__, str(err))
    out["refusals"] = refusals
    return out


@pytest.fixture(scope="module")
def sharded():
    return run_ranks(_sharded_runs, 2)


def test_the_ranks_rows_are_the_single_process_samples(sharded):
    for index, (method, n, options) in enumerate(RUNS):
        serial = diffsde.sample(_ring(), method, grid=GRID, n_samples=n, generator=12, **options)
        first, second = (rank["runs"][index] for rank in sharded)
        # Whole chunks per rank: rank 0 gets chunk 0 of 3 (or of 2), rank 1 the rest; with one chunk, rank 1 none.
        assert first["rows"].start == 0 and first["rows"].stop == second["rows"].start and second["rows"].stop == n
        assert first["rows"].stop in (0, CHUNK_ROWS, n)
        assert torch.equal(torch.cat([first["x"], second["x"]]), serial), method
        assert torch.equal(first["gathered"], serial) and second["gathered"] is None
        # The info is merged (largest NFE and wall time over the ranks): the same on both.
        times = [rank["info"].pop("times") for rank in (first, second)]
        assert torch.equal(*times) and first["info"] == second["info"] and first["info"]["world_size"] == 2


def test_an_empty_shard_is_a_0_row_tensor(sharded):
    # 100 samples are one chunk; shard_range gives it to rank 1 (chunks [r·1//2, (r+1)·1//2)), rank 0 holds none.
    empty, full = sharded[0]["runs"][1], sharded[1]["runs"][1]
    assert empty["x"].shape == (0, 2) and empty["rows"] == range(0, 0) and full["rows"] == range(0, 100)


def test_bad_settings_are_refused_on_every_rank(sharded):
    for rank in sharded:
        kind, message = rank["refusals"]["too_few"]
        assert kind == "ValueError" and "n_samples = 1 is smaller than the world size 2" in message
        for name, key in (("seeds", "seed"), ("steps", "times")):
            kind, message = rank["refusals"][name]
            assert kind == "DistributedError" and f"the sampling settings differ between ranks in {key} (" in message


def test_without_a_process_group_it_is_sample_with_an_int_seed():
    shard = diffsde.distributed.sample(_ring(), "em", grid=GRID, n_samples=300, seed=4)
    assert isinstance(shard, ShardedSample) and shard.rows == range(300) and shard.info["world_size"] == 1
    assert torch.equal(shard.x, diffsde.sample(_ring(), "em", grid=GRID, n_samples=300, generator=4))
    assert shard.gather() is shard.x
    with pytest.raises(TypeError, match="seed must be an int"):
        diffsde.distributed.sample(_ring(), "em", grid=GRID, n_samples=3, seed=torch.Generator())


class _FailsOnRank1:
    """The ring's score, raising on rank 1 at its fifth evaluation."""

    dim = 2

    def __init__(self):
        self.calls, self.score = 0, _ring()

    def __call__(self, x, t):
        from diffsde.distributed import world

        self.calls += 1
        if world().rank == 1 and self.calls == 5:
            raise RuntimeError("a score failure on rank 1")
        return self.score(x, t)


def _failing_run():
    from diffsde.distributed import sample

    return sample(_FailsOnRank1(), "em", grid=GRID, n_samples=2 * CHUNK_ROWS, seed=0).x.shape


def test_a_rank_that_fails_stops_the_others_with_a_clear_error():
    first, second = run_ranks(_failing_run, 2, timeout_s=20, wait_s=120, expect_errors=True)
    assert second.error == ("RuntimeError", "a score failure on rank 1")
    assert first.error[0] == "DistributedError" and "rank 0: lost the other ranks" in first.error[1]
