"""How much memory a device has, and a size check that refuses the obviously impossible before allocating.

The bound is the device's TOTAL memory (physical RAM on the CPU, the card's memory on CUDA), not
what is free right now: a request above it can never succeed, whatever else is running, while one
below it may still fail on a busy machine (then the allocator says so). Devices whose size torch
does not report (e.g. MPS) are not checked.
"""

from __future__ import annotations

import os

import torch

__all__ = ["device_memory_bytes", "check_fits", "format_bytes"]


#: Copies of the weights that training holds: the weights, their gradients, the EMA copy and
#: Adam's two moments.
TRAINING_COPIES = 5

def device_memory_bytes(device: torch.device | str | None) -> int | None:
    """Total memory of ``device`` in bytes (CPU: physical RAM), or None when it cannot be read."""
    device = torch.device("cpu" if device is None else device)
    try:
        if device.type == "cpu":
            return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
        if device.type == "cuda" and torch.cuda.is_available():
            index = device.index if device.index is not None else torch.cuda.current_device()
            return int(torch.cuda.get_device_properties(index).total_memory)
    except (ValueError, OSError, AttributeError, RuntimeError, AssertionError):
        return None
    return None


def format_bytes(count: float) -> str:
    """``1.5e9`` -> ``"1.5 GB"`` (decimal units)."""
    for unit, size in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{int(count)} B"


def check_fits(needed: int, device: torch.device | str | None, what: str) -> None:
    """Raise MemoryError (one line, naming ``what`` and both sizes) when ``needed`` bytes exceed the
    total memory of ``device``."""
    total = device_memory_bytes(device)
    if total is not None and needed > total:
        where = torch.device("cpu" if device is None else device)
        raise MemoryError(f"{what} needs {format_bytes(needed)} ({needed:,} bytes), more than the "
                          f"{format_bytes(total)} of memory of {'this machine' if where.type == 'cpu' else where}")
