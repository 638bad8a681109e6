"""Memory for the ``diffsde`` command: sizes that cannot fit are refused before anything is allocated,
and an allocation that fails anyway becomes one line naming the size that was asked for.

The bound is the device's total memory (:mod:`diffsde.training._memory`): a request above it
can never succeed; one below it may still fail on a busy machine, and then the allocator's own
report (``tried to allocate N bytes``) is turned into :func:`allocation_failure`'s line.
"""

from __future__ import annotations

import math
import re

import torch

from .nets import EpsilonMLP
from .training._memory import TRAINING_COPIES, check_fits, format_bytes
from .training.models import state_shapes

__all__ = ["check_fits", "network_fits", "samples_fit", "allocation_failure"]


def network_fits(dim: int, hidden: int, depth: int, device: torch.device) -> None:
    """Refuse (MemoryError) an EpsilonMLP whose training cannot fit: it holds the float32 parameters
    five times (weights, gradients, two Adam moments, the EMA copy)."""
    shapes = state_shapes(EpsilonMLP, {"dim": dim, "hidden": hidden, "depth": depth})  # closed form, no allocation
    parameters = sum(math.prod(shape) for shape in shapes.values())
    check_fits(TRAINING_COPIES * 4 * parameters, device,
               f"--hidden {hidden} --depth {depth} ({parameters:,} float32 parameters with their gradients, "
               f"Adam moments and EMA copy)")


def samples_fit(n: int, dim: int, device: torch.device) -> None:
    """Refuse (MemoryError) ``n`` samples of dimension ``dim`` that cannot fit in float64 (as the metrics read them)."""
    check_fits(8 * n * dim, device, f"--n-samples {n} ({n:,} x {dim} samples in float64, as the metrics read them)")


def allocation_failure(err: BaseException) -> str | None:
    """One line for a failed allocation, naming the size asked for when the allocator says it; None
    for any other error."""
    text = " ".join(str(err).split())
    if isinstance(err, MemoryError):  # check_fits' own line, numpy's "Unable to allocate 7.45 GiB ...", or bare
        return text if text else "out of memory"
    if not isinstance(err, RuntimeError):
        return None
    asked = re.search(r"tried to allocate (\d+) bytes", text, re.IGNORECASE)  # torch's CPU allocator
    if asked:
        size = int(asked.group(1))
        return f"out of memory: an allocation of {format_bytes(size)} ({size:,} bytes) failed; ask for less"
    if isinstance(err, torch.OutOfMemoryError) or "out of memory" in text.lower():
        asked = re.search(r"tried to allocate ([\d.]+ [KMGT]?i?B)", text, re.IGNORECASE)  # CUDA's
        return f"out of memory: an allocation of {asked.group(1)} failed; ask for less" if asked else \
            f"out of memory; ask for less ({text[:200]})"
    return None
