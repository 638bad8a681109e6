"""Sorting 1-D values spread over the ranks, for metrics that need global order statistics.

:func:`sample_sort` sorts rows of values held in pieces by the ranks and hands rank r the order
statistics of its equal share [r·N // W, (r + 1)·N // W), with two ``all_to_all_single`` exchanges
and no rank ever holding more than about N / W values of a row: sorting by regular sampling (Shi &
Schaeffer, "Parallel sorting by regular sampling", 1992; Blelloch et al., "A comparison of sorting
algorithms for the Connection Machine CM-2", 1991). :mod:`diffsde.distributed.reductions` uses it
for the sliced Wasserstein distance.
"""

from __future__ import annotations

from itertools import accumulate

import torch
from torch import Tensor

from .world import _collective, all_gather_objects, world

__all__ = ["OVERSAMPLING", "comm_device", "sample_sort"]

#: Regular samples per rank and row for the splitters: this many times the world size.
OVERSAMPLING = 8


def comm_device() -> torch.device:
    """Where tensor collectives run: the current CUDA device under NCCL, else the CPU (gloo)."""
    if str(torch.distributed.get_backend()) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _exchange(outgoing: list[list[Tensor]], incoming: list[list[int]], what: str) -> list[list[Tensor]]:
    """One ``torch.distributed.all_to_all_single`` with uneven splits (gloo and NCCL both take it):
    ``outgoing[t][b]`` (1-D) goes to rank t; ``incoming[s][b]`` values come from rank s, returned
    as ``received[s][b]``. Tensors travel on the backend's device and come back on the senders'."""
    origin = outgoing[0][0].device
    device = comm_device()
    send = torch.cat([piece for pieces in outgoing for piece in pieces]).to(device)
    received = torch.empty(sum(map(sum, incoming)), dtype=send.dtype, device=device)
    with _collective(what):
        torch.distributed.all_to_all_single(received, send, list(map(sum, incoming)),
                                            [sum(piece.numel() for piece in pieces) for pieces in outgoing])
    pieces = iter(torch.split(received.to(origin), [length for lengths in incoming for length in lengths]))
    return [[next(pieces) for _ in lengths] for lengths in incoming]


def sample_sort(rows: Tensor, sizes: list[int], what: str) -> Tensor:
    """Rank r's share ``[N·r // W, N·(r+1) // W)`` of the order statistics of each global row.

    ``rows`` (B, n_r) holds this rank's values of B rows, each sorted; ``sizes`` every rank's n_r.
    Sorting by regular sampling (Shi & Schaeffer, "Parallel sorting by regular sampling", 1992;
    Blelloch et al., "A comparison of sorting algorithms for the Connection Machine CM-2", 1991):
    each rank contributes ``OVERSAMPLING·W`` evenly spaced values per row, weighted by its n_r;
    the gathered samples' weighted quantiles k/W (k = 1..W-1) split each row into W buckets, which
    ``all_to_all_single`` delivers to the ranks and each rank sorts; a second exchange moves the
    sorted buckets onto the canonical equal shares. Values are ordered by (value, global index), a
    strict order, so ties cannot unbalance the buckets: each holds at most about
    ``N/W + 2N/(OVERSAMPLING·W)`` values. Only values move, so the shares are exact.
    """
    current = world()
    rank, size = current.rank, current.size
    batch, n = rows.shape
    total = sum(sizes)
    offsets = [0, *accumulate(sizes)]
    per_rank = OVERSAMPLING * size

    def positions(count: int) -> Tensor:  # evenly spaced local indices of the regular samples
        return (2 * torch.arange(per_rank) + 1) * count // (2 * per_rank)

    picks = rows[:, positions(n).to(rows.device)].cpu() if n else torch.zeros(batch, per_rank, dtype=torch.float64)
    values = torch.stack(all_gather_objects(picks, f"the splitters of {what}"), 1).reshape(batch, -1)
    keys = torch.cat([offsets[r] + positions(sizes[r]) for r in range(size)])  # global indices, ascending
    weights = torch.tensor(sizes).repeat_interleave(per_rank)
    order = values.sort(dim=1, stable=True).indices  # stable: ties keep rank-major order, i.e. key order
    cumulative = weights[order].cumsum(1) * size  # samples at or below each one, in units of N / (per_rank·W)
    targets = (torch.arange(1, size) * per_rank * total).expand(batch, -1).contiguous()
    chosen = order.gather(1, torch.searchsorted(cumulative, targets))  # (B, W - 1): the splitters
    split_values, split_keys = values.gather(1, chosen).to(rows.device), keys[chosen].to(rows.device)
    cuts = torch.zeros(batch, size - 1, dtype=torch.int64, device=rows.device)
    if n:  # local values at or below each splitter (value, key): lower values, then ties by index
        low = torch.searchsorted(rows, split_values)
        high = torch.searchsorted(rows, split_values, right=True)
        cuts = low + torch.minimum((split_keys - offsets[rank] + 1 - low).clamp(min=0), high - low)
    bounds = torch.cat([torch.zeros(batch, 1, dtype=torch.int64), cuts.cpu(),
                        torch.full((batch, 1), n, dtype=torch.int64)], 1)
    counts = torch.stack(all_gather_objects(bounds.diff(dim=1), f"the bucket sizes of {what}"))  # (W, B, W)
    edges = bounds.tolist()
    received = _exchange([[rows[b, edges[b][t]:edges[b][t + 1]] for b in range(batch)] for t in range(size)],
                         counts[:, :, rank].tolist(), f"the sort of {what}")
    del rows  # freed here when the caller passed a temporary: memory stays near 4 copies of a share
    buckets = [torch.cat([pieces[b] for pieces in received]).sort().values for b in range(batch)]
    del received

    starts = [[0, *accumulate(row)] for row in counts.sum(0).tolist()]  # (B, W + 1): buckets' global starts
    share = [t * total // size for t in range(size + 1)]

    def overlap(b: int, holder: int, owner: int) -> tuple[int, int]:
        """(start, stop) of bucket ``holder``'s values of row b that fall in rank ``owner``'s share."""
        first, last = starts[b][holder], starts[b][holder + 1]
        low, high = max(first, share[owner]), min(last, share[owner + 1])
        return low - first, max(low, high) - first

    outgoing = [[buckets[b][slice(*overlap(b, rank, t))] for b in range(batch)] for t in range(size)]
    incoming = [[stop - start for start, stop in (overlap(b, s, rank) for b in range(batch))] for s in range(size)]
    received = _exchange(outgoing, incoming, f"the re-partition of {what}")
    return torch.stack([torch.cat([pieces[b] for pieces in received]) for b in range(batch)])
