"""diffsde.distributed.world without a process group: a world of one that never touches
torch.distributed, torchrun's environment checked before any group is made, shares that cover
every item once."""

from __future__ import annotations

import importlib

import pytest
import torch

from diffsde.distributed.world import DistributedError

w = importlib.import_module("diffsde.distributed.world")  # the module (the package exports a function named world)

TORCHRUN = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_without_a_group_it_is_a_world_of_one():
    assert not torch.distributed.is_initialized()
    assert w.world() == w.World(0, 1, False) and w.world().is_main
    assert w.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert torch.equal(w.all_reduce_sum(torch.tensor([1.0, 2.0])), torch.tensor([1.0, 2.0]))
    assert w.map_cells(lambda cell: cell * cell, [1, 2, 3]) == [1, 4, 9]
    w.check_same(3, "seed")
    w.barrier()
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("count, size", [(0, 2), (1, 2), (3, 2), (62, 2), (10, 3), (7, 7), (5, 8)])
def test_shares_cover_every_item_once_and_differ_by_at_most_one(count, size):
    shares = [w.shard_range(count, rank, size) for rank in range(size)]
    assert [item for share in shares for item in share] == list(range(count))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_the_launchers_environment_is_checked_before_any_group():
    assert w.under_launcher(TORCHRUN) and not w.under_launcher({})
    with pytest.raises(DistributedError, match="not started by torchrun: MASTER_ADDR, MASTER_PORT unset"):
        w.init_from_env(environ={"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    with pytest.raises(DistributedError, match="inconsistent world settings: RANK=2 is not below WORLD_SIZE=2"):
        w.init_from_env(environ={**TORCHRUN, "RANK": "2"})
    with pytest.raises(DistributedError, match="WORLD_SIZE='two'; it must be an int >= 1"):
        w.init_from_env(environ={**TORCHRUN, "WORLD_SIZE": "two"})
    with pytest.raises(DistributedError, match="RANK=-1; it must be an int >= 0"):
        w.init_from_env(environ={**TORCHRUN, "RANK": "-1"})
    for timeout in (0, -1.0, True, "60"):
        with pytest.raises(ValueError, match="timeout_s must be a positive number of seconds"):
            w.init_from_env(timeout_s=timeout, environ=TORCHRUN)
    if not torch.cuda.is_available():
        with pytest.raises(DistributedError, match="LOCAL_RANK=0 but this node sees 0 GPU"):
            w.init_from_env("cuda", environ=TORCHRUN)
    assert not torch.distributed.is_initialized()


def test_nested_settings_are_named_by_their_dotted_keys():
    assert w._flat({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
