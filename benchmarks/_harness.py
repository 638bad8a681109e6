"""Shared timing, memory and machine-description helpers for the benchmark scripts.

Plain Python, no pytest-benchmark: the scripts import this module as ``_harness`` (they
run as ``python benchmarks/<script>.py``, so this folder is on ``sys.path``).

* :func:`interleaved` times several contenders round-robin, the starting contender
  rotating every repetition, so slow drifts of a shared machine's load hit every
  contender alike; ratios are then taken per repetition (:func:`paired_ratio`) and
  summarised by their median.
* :func:`peak_memory` measures the peak memory torch allocates during one call (CPU:
  ``torch.profiler``'s allocation and free events; CUDA: ``torch.cuda.max_memory_allocated``).
  ``tracemalloc`` cannot see torch's allocations, and resident memory measures malloc's
  choices as much as the run's, hence these.
* :func:`machine_info` describes the machine (CPU model, cores, threads, torch, device,
  load average) for the JSON every script writes with :func:`write_json` (temp file +
  rename, so a crash never leaves half a file).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from diffsde._io import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"


# -- machine ------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info(device: torch.device) -> dict:
    """CPU model, cores, torch threads, versions, device (and GPU name) and load average."""
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "load_average_1_5_15min": load_average(),
        # glibc malloc tuning changes large-N CPU timings (page faults); record it
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"},
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def package_versions(names: Sequence[str]) -> dict:
    """Installed versions of the named distributions (None when absent)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, refusing CUDA when it is not available (one clear message)."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise SystemExit(f"--device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    return device


def setup(device_name: str, threads: int | None) -> torch.device:
    """The scripts' common start: the device (:func:`resolve_device`) and, when given, torch's
    thread count."""
    device = resolve_device(device_name)
    if threads:
        torch.set_num_threads(threads)
    return device


# -- timing -------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call of ``fn``, synchronised with the device at both ends."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of every contender, ``repeats`` times each, run round-robin.

    Repetition r starts at contender ``r mod k`` (k contenders), so no contender always
    runs first or last. ``warmup`` untimed rounds come first (caches, lazy imports).
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        start = r % len(names)
        for name in names[start:] + names[:start]:
            times[name].append(time_call(contenders[name], device))
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over repetitions of numerator[r] / denominator[r] (times taken in the same round)."""
    return median([a / b for a, b in zip(numerator, denominator)])


# -- memory -------------------------------------------------------------------------------

def peak_memory(fn: Callable[[], object], device: torch.device) -> dict:
    """Peak memory torch allocates during one call of ``fn``, above what it held before, in MiB.

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats`` minus ``memory_allocated``
    before (the caching allocator's own count). CPU: every allocation and free torch makes
    during the call, in order, from ``torch.profiler``'s memory events (``profile_memory=True``),
    and the peak of their running sum. Both count what torch's tensors hold, not what the C
    heap keeps or hands back (resident memory depends on malloc's choices and on the heap's
    history, so it varied 10x between identical runs). The returned ``how`` says which was used.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return {"peak_mib": (torch.cuda.max_memory_allocated(device) - before) / 2**20,
                "how": "torch.cuda.max_memory_allocated"}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    running = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return {"peak_mib": peak / 2**20, "how": "torch.profiler memory events (running allocations minus frees)"}


# -- output -------------------------------------------------------------------------------

def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically (diffsde's temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
    return path
