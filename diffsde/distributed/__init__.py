"""Scale-out on ``torch.distributed`` (launched by ``torchrun``): the process group
(:mod:`~diffsde.distributed.world`), sampling sharded by whole chunks of counter-based noise
(:mod:`~diffsde.distributed.sampling`) and metrics reduced without gathering
(:mod:`~diffsde.distributed.reductions`). The studies (:mod:`diffsde.studies`) and training
(:func:`diffsde.training.train`) read the process group themselves. Without a process group every
function acts for a world of one process. This package imports nothing of the studies or training.
"""

from .sampling import ShardedSample, sample
from .world import (DEFAULT_TIMEOUT_S, DistributedError, World, all_gather_objects, all_reduce_sum, barrier,
                    check_same, init_from_env, map_cells, shard_range, under_launcher, world)

__all__ = ["ShardedSample", "sample", "World", "DistributedError", "DEFAULT_TIMEOUT_S", "world", "init_from_env",
           "under_launcher", "shard_range", "all_gather_objects", "all_reduce_sum", "barrier", "check_same",
           "map_cells"]
