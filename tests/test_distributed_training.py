"""train(...) under a process group: DistributedDataParallel over 2 gloo ranks on the CPU.

The 2-rank runs happen once, in one spawn (tests/_ranks.py), shared by the tests below through a
module-scoped fixture; the one-process references are computed here in the parent. Multi-process
runs use gloo on the CPU only (the ``device`` fixture does not apply).
"""

import math
import os

import pytest
import torch

import diffsde.training.checkpoints as checkpoints
from _ranks import run_ranks
from diffsde.nets import EpsilonMLP
from diffsde.training import TrainConfig, load_checkpoint, train

CONFIG = TrainConfig(steps=20, batch_size=16, warmup_steps=5, lr=2e-3)


class Interrupted(Exception):
    """Stands for a killed process."""


def data() -> torch.Tensor:
    return torch.randn(64, 2, generator=torch.Generator().manual_seed(11)) * torch.tensor([1.5, 0.5]) + 1.0


def model(seed: int = 0) -> EpsilonMLP:
    torch.manual_seed(seed)
    return EpsilonMLP(2, hidden=16, depth=2)


def weights(result) -> dict:
    return {"model": {k: v.clone() for k, v in result.model.state_dict().items()},
            "ema": {k: v.clone() for k, v in result.ema_model.state_dict().items()},
            "losses": result.losses.clone()}


def first_inputs(network: EpsilonMLP) -> list:
    """The list that will hold the x of the network's first forward call (the first step's x_t rows)."""
    seen = []
    network.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()) if not seen else None)
    return seen


class FailingBatches:
    """An iterable of (16, 2) batches whose batch ``fail_at`` raises (None: never)."""

    def __init__(self, fail_at):
        self.fail_at = fail_at

    def __iter__(self):
        generator = torch.Generator().manual_seed(12)
        for index in range(1000):
            if index == self.fail_at:
                raise Interrupted(f"the data failed at batch {index}")
            yield torch.randn(16, 2, generator=generator)


def outcome(function):
    """``("ok", value)`` or ``(error type name, message)``: one part's failure does not hide the others."""
    try:
        return "ok", function()
    except Exception as err:
        return type(err).__name__, str(err)


def two_rank_worker(folder: str) -> dict:
    rank = torch.distributed.get_rank()
    results = {}
    # (a) Each rank starts from its own initial weights: DDP broadcasts rank 0's (seed 0).
    network = model(seed=rank)
    seen = first_inputs(network)
    results["plain"] = outcome(lambda: weights(train(network, data(), CONFIG)) | {"first x": seen[0]})

    # (b) Checkpoints every 10 steps; only rank 0 may call save_checkpoint.
    real_save, calls = checkpoints.save_checkpoint, []

    def counted(path, state):
        calls.append((os.path.basename(path), state.step))
        real_save(path, state)
        if os.path.basename(path) == "interrupted.pt" and state.step == 10:
            raise Interrupted("killed after the checkpoint of step 10")

    checkpoints.save_checkpoint = counted
    try:
        path = os.path.join(folder, "uninterrupted.pt")
        results["uninterrupted"] = outcome(lambda: weights(train(model(), data(), CONFIG, checkpoint_path=path,
                                                                 checkpoint_every=10)))
        path = os.path.join(folder, "interrupted.pt")
        results["interrupted"] = outcome(lambda: train(model(), data(), CONFIG, checkpoint_path=path,
                                                       checkpoint_every=10))
        results["resumed"] = outcome(lambda: weights(train(model(seed=5), data(), CONFIG, checkpoint_path=path,
                                                           checkpoint_every=10, resume=True)))
    finally:
        checkpoints.save_checkpoint = real_save
    results["save calls"] = calls

    # (c) Bad input: refused on every rank before any step, none of them hanging.
    results["odd batch"] = outcome(lambda: train(model(), data(), TrainConfig(steps=3, batch_size=15)))
    results["odd iterable batch"] = outcome(lambda: train(model(), [torch.ones(5, 2)], TrainConfig(steps=3)))
    results["seeds"] = outcome(lambda: train(model(), data(), TrainConfig(steps=3, batch_size=16, seed=rank)))
    results["generators"] = outcome(lambda: train(model(), data(), TrainConfig(steps=3, batch_size=16),
                                                  generator=torch.Generator().manual_seed(rank)))
    bad_path = "/nonexistent-folder/run.pt" if rank == 1 else None
    results["one rank refuses"] = outcome(lambda: train(model(), data(), TrainConfig(steps=3, batch_size=16),
                                                        checkpoint_path=bad_path))

    # Last, since it leaves the group broken: rank 1's data fails at step 3 and rank 1 exits; rank 0,
    # in that step's collectives (DDP's buffer broadcast or gradient all-reduce), must not hang.
    results["mid-run failure"] = outcome(lambda: train(model(), FailingBatches(3 if rank == 1 else None), CONFIG))
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    return run_ranks(two_rank_worker, 2, (str(folder),), timeout_s=30), folder


def unwrap(result):
    status, value = result
    assert status == "ok", f"{status}: {value}"
    return value


def test_two_ranks_train_the_one_process_run_within_round_off(ranks):
    outcomes, _ = ranks
    network = model(seed=0)
    seen = first_inputs(network)
    reference = weights(train(network, data(), CONFIG))
    rank0, rank1 = (unwrap(outcome["plain"]) for outcome in outcomes)
    # Rank r trained on rows [8r, 8r + 8) of the one-process run's global batch (drawn whole on each rank).
    assert rank0["first x"].shape == (8, 2) and torch.equal(torch.cat([rank0["first x"], rank1["first x"]]), seen[0])
    # The ranks hold the same weights bit for bit: DDP hands both the same averaged gradient.
    for name in ("model", "ema"):
        assert all(torch.equal(rank0[name][k], rank1[name][k]) for k in rank0[name])
    assert torch.equal(rank0["losses"], rank1["losses"])
    # Against one process: each step's gradient differs by float32 round-off only (two local means
    # of 8 rows averaged by DDP vs one mean of 16: a few ulps, relative ~1e-6). Adam's step
    # lr·m̂/(√v̂ + ε) is scale-free, so it changes by ~lr·1e-6 relative per step and the differences
    # add up over the 20 steps to ~20·2e-3·1e-6 = 4e-8, below the weights' own ulp (~1e-7 at |θ| ~ 1;
    # measured: 3e-8).
    # 1e-5 allows 100 ulps; a wrong split (the same rows on both ranks, no gradient average, rank-
    # dependent draws, an EMA of rank 1's own initial weights) moves weights by ~lr = 2e-3 per step.
    for name in ("model", "ema"):
        for key, want in reference[name].items():
            assert torch.allclose(rank0[name][key], want, rtol=0, atol=1e-5), (name, key)
    # Losses: the same global batches, so the same values up to the weights' round-off (measured
    # relative 2e-7; rtol 1e-5).
    assert torch.allclose(rank0["losses"], reference["losses"], rtol=1e-5, atol=0)


def test_two_rank_resume_is_bit_exact_and_only_rank_0_writes(ranks):
    outcomes, folder = ranks
    for rank, outcome in enumerate(outcomes):
        # Rank 0 was "killed" after writing step 10; rank 1 learnt it at the write's barrier.
        expected = ("Interrupted", "killed") if rank == 0 else ("DistributedError", "rank 0 failed the write")
        status, message = outcome["interrupted"]
        assert status == expected[0] and expected[1] in message, (rank, status, message)
        uninterrupted, resumed = unwrap(outcome["uninterrupted"]), unwrap(outcome["resumed"])
        for name in ("model", "ema"):
            assert all(torch.equal(resumed[name][k], uninterrupted[name][k]) for k in uninterrupted[name])
        assert torch.equal(resumed["losses"], uninterrupted["losses"])
    assert outcomes[0]["save calls"] == [("uninterrupted.pt", 10), ("uninterrupted.pt", 20),
                                         ("interrupted.pt", 10), ("interrupted.pt", 20)]
    assert outcomes[1]["save calls"] == []
    assert sorted(os.listdir(folder)) == ["interrupted.pt", "uninterrupted.pt"]  # no temporary left behind
    assert load_checkpoint(folder / "interrupted.pt").step == 20
    assert torch.equal(load_checkpoint(folder / "interrupted.pt").losses, outcomes[0]["uninterrupted"][1]["losses"])


@pytest.mark.parametrize("case, error, fragments", [
    ("odd batch", "ValueError", ["batch_size = 15 must be a multiple of the world size 2"]),
    ("odd iterable batch", "ValueError", ["data batch 0 has B = 5 rows, not a multiple of the world size 2"]),
    ("seeds", "DistributedError", ["config.seed, generator state differ between ranks",
                                   "config.seed: rank 0: 0, rank 1: 1"]),
    ("generators", "DistributedError", ["generator state differs between ranks"]),
])
def test_bad_input_gives_one_clear_error_on_every_rank(ranks, case, error, fragments):
    for rank, outcome in enumerate(ranks[0]):
        status, message = outcome[case]
        assert status == error and all(fragment in message for fragment in fragments), (rank, status, message)


def test_a_failing_rank_stops_the_others_with_a_clear_error(ranks):
    rank0, rank1 = ranks[0]
    # Before any step: rank 1's own error there, a DistributedError naming it on rank 0.
    assert rank1["one rank refuses"][0] == "ValueError" and "does not exist" in rank1["one rank refuses"][1]
    status, message = rank0["one rank refuses"]
    assert status == "DistributedError" and "rank 1 refused the run before any step (ValueError:" in message
    # Mid-run: rank 1's data fails at step 3 and it exits; rank 0 stops in that step's collectives.
    assert rank1["mid-run failure"] == ("Interrupted", "the data failed at batch 3")
    status, message = rank0["mid-run failure"]
    assert status == "DistributedError" and "rank 0: lost the other ranks during step 3" in message, message


def test_without_a_process_group_train_never_calls_torch_distributed(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.distributed used without a process group")

    for name in ("all_reduce", "all_gather_object", "barrier", "broadcast"):
        monkeypatch.setattr(torch.distributed, name, refuse)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", refuse)
    result = train(model(), data(), TrainConfig(steps=3, batch_size=15))  # 15: no world size to divide
    assert result.losses.shape == (3,) and bool(torch.isfinite(result.losses).all())
    assert math.isfinite(float(result.losses[-1]))
