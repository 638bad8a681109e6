"""Memory for the ``diffsde`` command: sizes that cannot fit are refused before anything is allocated,
and an allocation that fails anyway becomes one line naming the size that was asked for.

The bound is the device's total memory (:mod:`diffsde.training._memory`): a request above it
can never succeed; one below it may still fail on a busy machine, and then the allocator's own
report (``tried to allocate N bytes``) is turned into :func:`allocation_failure`'s line.
"""

from __future__ import annotations

import re

import torch
from torch.overrides import TorchFunctionMode

from .nets import EpsilonMLP
from .training._memory import check_fits, format_bytes

__all__ = ["check_fits", "network_fits", "samples_fit", "parameter_count", "allocation_failure"]


class _SizedOnMeta(TorchFunctionMode):
    """Tensors made from a size (``torch.empty``, ``zeros``, ``ones``, ``full``, ``rand``, ``randn``:
    what layers make their parameters with) go to the meta device, which allocates nothing. Unlike
    ``with torch.device("meta")`` this leaves small buffers (``torch.logspace``) on the CPU, which
    spares the second or so torch takes to load its meta kernels for them on first use."""

    _SIZED = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self._SIZED:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def parameter_count(cls, config: dict) -> int | None:
    """Parameters of ``cls(**config)``, built with its parameters on the meta device (no memory);
    None when the class cannot be built that way (then nothing is checked)."""
    try:
        with _SizedOnMeta():
            model = cls(**config)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - a class this cannot build is checked by its own allocation
        return None


def network_fits(dim: int, hidden: int, depth: int, device: torch.device) -> None:
    """Refuse (MemoryError) an EpsilonMLP whose training cannot fit: it holds the float32 parameters
    five times (weights, gradients, two Adam moments, the EMA copy)."""
    parameters = parameter_count(EpsilonMLP, {"dim": dim, "hidden": hidden, "depth": depth}) or 0
    check_fits(5 * 4 * parameters, device, f"--hidden {hidden} --depth {depth} ({parameters:,} float32 parameters "
                                           f"with their gradients, Adam moments and EMA copy)")


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
