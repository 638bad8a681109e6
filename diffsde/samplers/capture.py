"""The fixed-grid loop captured as one CUDA graph: ``diffsde.sample(..., capture=True)``.

A CUDA graph records the kernels of the whole loop (every step, every score evaluation) once
and replays them with one launch (PyTorch, "CUDA Graphs",
https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs). What it removes is the host's
cost of launching each kernel (a few µs each, and a loop of 1000 steps with a mixture score
launches tens of thousands), so it pays for small batches, where launches rather than
arithmetic set the pace, and for repeated calls: a captured graph is kept, and later calls
with the same score object, method, grid, shape, dtype and device only replay it.

How a run goes (:func:`captured_loop`, the runner :func:`diffsde.samplers.integrate` is handed):

* first call for a key: warm up the first :data:`WARMUP_STEPS` steps on a side stream (what the
  PyTorch notes ask), with the generator state saved before and restored after, so the warm-up
  consumes none of the caller's noise; then capture :func:`diffsde.samplers.run_steps` over the
  whole grid on that stream, with no finiteness check inside (a check reads the device on the
  host, which a capture cannot contain). The capture intercepts every tensor operation
  (:class:`_KeepInputs`), which makes it the costly call: about 0.1 ms per operation measured on
  a 2-core CPU, 2 s for 1000 ``em`` steps on the ring's score;
* every call: copy x into the graph's static input, replay, clone the outputs out, and check
  the output once for NaN or infinite values; if there are any, the run is replayed eagerly
  from the same state and generator state, which names the first bad step
  (:class:`NonFiniteSampleError`).

Noise: the same samples as ``capture=False`` from the same generator state. torch's CUDA
generator is Philox, counter based: a draw is a function of (seed, offset), each draw advances
the offset by a fixed amount, and a replay reads the generator's seed and offset when it
starts and advances the offset by the total the capture recorded, so the graph draws exactly
the numbers the eager loop would, and leaves the generator where the eager loop would. With
``generator=None`` the graph draws from the default CUDA generator, which every capture
registers. A caller's ``torch.Generator`` is not bound to the graph: the graph owns a private
generator, registered at capture, whose state is set from the caller's before each replay and
copied back after it, so calls with new generators (or int seeds) replay the same graph.

Memory: each graph keeps its private memory pool (about the loop's peak working memory: a few
(N, d) states and the score's temporaries; with ``return_path`` also all n+1 states and their
(n+1, N, d) stack, about twice the path) and every tensor it read that was made before the
capture (the score's parameters and cached constants), for as long as it stays in the cache:
at most :data:`CACHE_SIZE` graphs, least recently used dropped first, all dropped by
:func:`clear_capture_cache`; :func:`capture_cache_info` reports the bytes each capture reserved.
A replay reruns the recorded kernels: a score whose Python-side behaviour or parameter tensors
(replaced, not updated in place) change between calls needs :func:`clear_capture_cache`.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..schedules import TimeGrid
from .errors import NonFiniteSampleError
from .loop import run_steps
from .noise import GeneratorNoise
from .registry import Sampler

__all__ = ["check_capture", "captured_loop", "clear_capture_cache", "capture_cache_info", "CACHE_SIZE",
           "WARMUP_STEPS"]

#: Captured graphs kept at once (least recently used dropped first).
CACHE_SIZE = 8
#: Steps run eagerly on the capture stream before the first capture (lazy initialisation:
#: cuBLAS workspaces, the score's converted parameters); their noise is not the caller's.
WARMUP_STEPS = 2


def check_capture(sampler: Sampler, x: Tensor, progress: bool, generator: torch.Generator | None) -> None:
    """Refuse what ``capture=True`` cannot run, naming it: a method with an external runner,
    ``progress=True``, a state not on a CUDA device, a generator this torch cannot capture."""
    if sampler.runner is not None:
        runner = getattr(sampler.runner, "__name__", type(sampler.runner).__name__)
        raise ValueError(f"capture=True needs a fixed-grid method stepped by diffsde's own loop; {sampler.label!r} "
                         f"integrates with an external runner ({runner}), which cannot be captured: pass "
                         f"capture=False, or a fixed-grid method (e.g. 'em', 'vp', 'ddpm', 'ode-heun', 'pc')")
    if progress:
        raise ValueError("capture=True replays the whole loop as one graph launch, with no host work between steps "
                         "to advance a progress bar: pass progress=False (or capture=False)")
    if x.device.type != "cuda":
        why = "; on the CPU there is no per-launch cost to remove" if x.device.type == "cpu" else ""
        raise ValueError(f"capture=True needs a CUDA device (this run is on {x.device}){why}: pass capture=False")
    if generator is not None:
        check_generator_api(torch.cuda.CUDAGraph, torch.Generator)


def check_generator_api(graph_type: type, generator_type: type) -> None:
    """Refuse a torch whose CUDA graphs capture only the default generator: a graph with a
    ``torch.Generator`` needs ``CUDAGraph.register_generator_state`` (torch >= 2.4), or the
    lazy registration of later versions (which keep ``Generator.graphsafe_get_state``)."""
    if hasattr(graph_type, "register_generator_state") or hasattr(generator_type, "graphsafe_get_state"):
        return
    raise ValueError(f"capture=True with a torch.Generator needs torch >= 2.4 (CUDA graphs that draw from a "
                     f"non-default generator: torch.cuda.CUDAGraph.register_generator_state); this is torch "
                     f"{torch.__version__}: pass generator=None (the default CUDA generator, which every graph "
                     f"captures) or capture=False")


def captured_loop(owner: Callable, data_dtype: torch.dtype) -> Callable:
    """The runner for :func:`diffsde.samplers.integrate` that captures and replays the loop.

    Args:
        owner: the score the caller passed (the cache key holds it by identity).
        data_dtype: the caller's dtype (a half dtype is carried in float32 by the loop, and the
            score sees it rounded: part of the key).
    """
    return functools.partial(_run_captured, owner=owner, data_dtype=data_dtype)


# -- the cache -----------------------------------------------------------------------------------


@dataclass
class _Captured:
    """One captured loop: the graph, its static input and outputs, what it must keep alive."""

    graph: Any  # torch.cuda.CUDAGraph
    owner: Any  # the score object (its id is in the key: kept so the id stays its own)
    sampler: Sampler
    static_x: Tensor
    static_out: Tensor
    static_path: Tensor | None
    generator: torch.Generator | None  # the graph's private generator; None: the default one
    nfe: int  # score evaluations one run makes
    nbytes: int  # device memory reserved by the capture (its private pool)
    kept: list = field(default_factory=list)  # tensors made before the capture that it reads


class _GraphCache:
    """Least-recently-used captured graphs, at most ``size``; counts captures and hits."""

    def __init__(self, size: int):
        self.size, self.entries, self.captures, self.hits = size, OrderedDict(), 0, 0

    def get(self, key: tuple) -> Any:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            self.hits += 1
        return entry

    def put(self, key: tuple, entry: Any) -> None:
        self.entries[key] = entry
        self.entries.move_to_end(key)
        self.captures += 1
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


_CACHE = _GraphCache(CACHE_SIZE)


def clear_capture_cache() -> None:
    """Drop every captured graph (their memory pools go back to torch's caching allocator)."""
    _CACHE.entries.clear()


def capture_cache_info() -> dict:
    """``{"graphs", "size", "captures", "hits", "bytes"}``: graphs held, the bound, captures and
    replays of a held graph since import, and the device bytes the held captures reserved."""
    return {"graphs": len(_CACHE.entries), "size": _CACHE.size, "captures": _CACHE.captures, "hits": _CACHE.hits,
            "bytes": sum(entry.nbytes for entry in _CACHE.entries.values())}


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a method's step, init or option: partials by their function and
    arguments (a record rebuilt from the same name and options gets the same key), unhashable
    values by identity (the cached record keeps them alive)."""
    if isinstance(value, functools.partial):
        return ("partial", _freeze(value.func), tuple(_freeze(a) for a in value.args),
                tuple(sorted((k, _freeze(v)) for k, v in value.keywords.items())))
    if isinstance(value, Mapping):
        return ("mapping", tuple(sorted((k, _freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("sequence", tuple(_freeze(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


def _method_key(sampler: Sampler) -> tuple:
    return (sampler.name, sampler.label, _freeze(sampler.options), sampler.noise_draws, _freeze(sampler.step),
            _freeze(sampler.init))


def _owner_key(owner: Any) -> tuple:
    """The score by identity; a bound method (``toy.score``, a new object at each access) by its
    object and function. The cached entry holds the score, so these ids stay its own."""
    if inspect.ismethod(owner):
        return ("method", id(owner.__self__), owner.__func__)
    return ("object", id(owner))


def _grid_key(grid: TimeGrid) -> tuple:
    return (grid.source, tuple(grid.times.tolist()), tuple(grid.betas.tolist()), tuple(grid.alpha_bars.tolist()))


# -- tensors a graph reads but did not make --------------------------------------------------------


class _KeepInputs(TorchDispatchMode):
    """While active, keeps a reference to every tensor on ``device_type`` that an op reads but no
    op run under it made: the tensors a capture reads from outside its private pool (the static
    input, the score's parameters and cached constants). A graph replays raw addresses, so these
    must outlive it; a per-time cache that later drops an entry would otherwise hand its memory to
    someone else while the graph still reads it."""

    def __init__(self, device_type: str):
        super().__init__()
        self.device_type = device_type
        self.made: set[int] = set()  # storage addresses of what the ops returned
        self.kept: dict[int, Tensor] = {}  # storage address -> a tensor read from outside

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in tree_flatten((args, kwargs))[0]:
            address = self._address(value)
            if address and address not in self.made and address not in self.kept:
                self.kept[address] = value
        out = func(*args, **kwargs)
        for value in tree_flatten(out)[0]:
            address = self._address(value)
            if address:
                self.made.add(address)
        return out

    def _address(self, value: Any) -> int:
        if not isinstance(value, Tensor) or value.device.type != self.device_type:
            return 0
        try:
            return value.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):  # a tensor without storage: nothing to keep
            return 0


# -- capture and replay ------------------------------------------------------------------------------


def _register(graph: Any, generator: torch.Generator) -> None:
    """Register ``generator`` with ``graph`` before capture (torch >= 2.4); later versions register
    on first use and may deprecate the call, whose warning is then irrelevant here."""
    register = getattr(graph, "register_generator_state", None)
    if register is None:
        check_generator_api(type(graph), torch.Generator)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        register(generator)


def _generator_of(source: torch.Generator | None, device: torch.device) -> torch.Generator:
    """The generator noise is drawn from: ``source``, or the default CUDA generator of ``device``."""
    return source if source is not None else torch.cuda.default_generators[device.index]


def _warm_up(sampler: Sampler, score, grid: TimeGrid, x: Tensor, noise: GeneratorNoise) -> None:
    state = sampler.init(x, grid) if sampler.init is not None else None
    for interval in grid.intervals()[:WARMUP_STEPS]:
        draws = noise.draw(interval.index, sampler.noise_draws, x) if sampler.noise_draws else x.new_empty((0,))
        x, state = sampler.step(score, x, interval, draws, state)


def _capture(sampler: Sampler, score, grid: TimeGrid, x: Tensor, source: torch.Generator | None,
             return_path: bool, owner: Any) -> _Captured:
    device = x.device
    graph = torch.cuda.CUDAGraph()
    private = None
    if source is not None:
        private = torch.Generator(device=device)
        _register(graph, private)
    drawing = private if private is not None else _generator_of(None, device)
    saved = _generator_of(source, device).get_state()
    drawing.set_state(saved)  # (a no-op for the default generator)
    noise = GeneratorNoise(private)  # None: the default CUDA generator, registered by every capture
    static_x = x.clone(memory_format=torch.contiguous_format)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    try:
        with torch.cuda.stream(stream):  # the score's own errors (a wrong shape, ...) surface here, eagerly
            _warm_up(sampler, score, grid, static_x.clone(), noise)
        stream.synchronize()
    finally:
        drawing.set_state(saved)  # the warm-up's draws are forgotten
    torch.cuda.empty_cache()  # what the capture reserves is then its own pool
    reserved = torch.cuda.memory_reserved(device)
    calls = getattr(score, "calls", 0)
    keep = _KeepInputs(device.type)
    try:
        with torch.cuda.stream(stream):
            graph.capture_begin()
            try:
                with keep:
                    out, path, _ = run_steps(sampler, score, grid, static_x, noise, return_path, False, False, 1)
            finally:
                graph.capture_end()
                drawing.set_state(saved)  # no capture should advance it; restored whatever the torch version
    except Exception as err:
        raise RuntimeError(f"capturing sampler {sampler.label!r} as a CUDA graph failed ({type(err).__name__}: "
                           f"{err}); every step and score evaluation must run on the device without a host "
                           f"synchronisation (no .item(), bool(tensor), .cpu() or printing of a tensor) and "
                           f"without new host-device copies: run with capture=False") from err
    torch.cuda.current_stream(device).wait_stream(stream)
    return _Captured(graph, owner, sampler, static_x, out, path, private, getattr(score, "calls", 0) - calls,
                     torch.cuda.memory_reserved(device) - reserved, list(keep.kept.values()))


def _run_captured(sampler: Sampler, score, grid: TimeGrid, x: Tensor, noise, return_path: bool, progress: bool,
                  check_finite: bool, check_every: int, *, owner: Any, data_dtype: torch.dtype):
    """:func:`diffsde.samplers.run_steps`'s contract, run as a replay of a captured graph."""
    if not isinstance(noise, GeneratorNoise):
        raise TypeError(f"a captured loop draws from a generator (GeneratorNoise), got {type(noise).__name__}")
    source, device = noise.generator, x.device
    key = (_owner_key(owner), _method_key(sampler), _grid_key(grid), tuple(x.shape), x.dtype, data_dtype, str(device),
           bool(return_path), source is None)
    calls = getattr(score, "calls", 0)
    start = _generator_of(source, device).get_state()
    with torch.cuda.device(device):
        entry = _CACHE.get(key)
        if entry is None:
            entry = _capture(sampler, score, grid, x, source, return_path, owner)
            _CACHE.put(key, entry)
        if entry.generator is not None:
            entry.generator.set_state(start)
        entry.static_x.copy_(x)
        entry.graph.replay()
        if entry.generator is not None:
            source.set_state(entry.generator.get_state())  # where the eager loop would have left it
        out = entry.static_out.clone()
        path = entry.static_path.clone() if entry.static_path is not None else None
    if hasattr(score, "calls"):
        score.calls = calls + entry.nfe  # the run's NFE, not the warm-up's or the capture's
    if check_finite and not bool(torch.isfinite(out).all()):
        _name_bad_step(sampler, score, grid, x, source, start, check_every)
    return out, path, entry.nfe


def _name_bad_step(sampler: Sampler, score, grid: TimeGrid, x: Tensor, source: torch.Generator | None, start,
                   check_every: int) -> None:
    """Replay the run eagerly from its start and generator state: the checked loop raises
    :class:`NonFiniteSampleError` naming the first bad step."""
    _generator_of(source, x.device).set_state(start)
    run_steps(sampler, score, grid, x, GeneratorNoise(source), False, False, True, check_every)
    raise NonFiniteSampleError(f"sampler {sampler.name!r} produced non-finite values in its captured run, but an "
                               f"eager replay from the same state did not; pass capture=False to investigate, or "
                               f"check_finite=False to skip this check")
