"""Counter-based noise in chunks: sample i's value depends only on (seed, i), never on the batch.

An int seed names a sample set. Samples are grouped in chunks of :data:`CHUNK_ROWS` rows
(sample i lies in chunk i // CHUNK_ROWS); a chunk is integrated on its own, and every random
number it uses comes from a stream keyed by (seed, chunk, slot) alone (slot 0: the starting draw;
slot 1 + k·m + j: draw j of step k for a method drawing m per step), as counter-based generators
do (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"). So the same seed gives
the same samples whether they are drawn 50 or 5 000 000 at a time, and whichever process of a
distributed run draws a chunk (:mod:`diffsde.distributed.sampling` deals whole chunks to ranks).

How a stream is made: torch's CPU generator is a Mersenne Twister seeded with 32 bits, so the
stream key is a keyed bijection of the 32-bit index ``slot · 2^15 + chunk`` (keys from the 64-bit
seed by SplitMix64, Steele et al. 2014): within a run no two (chunk, slot) pairs share a stream.
That bounds a run at 2^15 chunks (5.4e8 samples) and 2^17 - 1 draws per sample (a refusal beyond).
A stream fills its rows with ``torch.randn`` of the chunk's numbers rounded up to a multiple of 16;
on the CPU torch draws uniforms in order and transforms them 16 at a time, so the first r·d
numbers do not depend on how many more are drawn (a test pins this); on CUDA the whole chunk is
drawn and sliced. For a row-wise method (:attr:`diffsde.samplers.Sampler.row_wise`) a partial
chunk is padded to a multiple of :data:`ROW_QUANTUM` rows (the padding rows take the streams' next
numbers, or zeros after a given x_T, and are discarded at the end), so torch's vectorised kernels
take the same path for every real row whatever the chunk's size: bit-for-bit equal rows on the CPU
for exact scores and networks (tested). Methods whose steps read the whole batch (pc's snr-based
step size, adaptive solvers' error control) run a partial chunk's real rows alone: every method's
samples are the same across world sizes (a chunk always holds the same rows), theirs in a partial
chunk depend on n. torchsde's Brownian motion is drawn at the (padded) chunk's size, so its
partial chunk is not promised to be n-invariant either.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .progress import progress_bar

__all__ = ["CHUNK_ROWS", "ROW_QUANTUM", "CounterNoise", "stream_seed", "check_counter_range", "chunk_count",
           "chunk_rows_of", "run_chunks"]

#: Rows per chunk: the unit of randomness and of work. 2^14 rows of d = 2 float32 is 128 KiB: a chunk's
#: state and temporaries stay in a CPU core's L2 cache.
CHUNK_ROWS = 2 ** 14
#: A partial chunk is padded to a multiple of this many rows (see the module docstring).
ROW_QUANTUM = 128
_CHUNK_BITS, _SLOT_BITS = 15, 17
_MASK32, _MASK64 = 2 ** 32 - 1, 2 ** 64 - 1


def _splitmix64(value: int) -> int:
    """SplitMix64's output function (Steele, Lea & Flood 2014): a bijection of 64-bit ints."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stream_seed(seed: int, chunk: int, slot: int) -> int:
    """The 32-bit generator seed of stream (seed, chunk, slot): for a fixed seed, a bijection of
    ``slot · 2^15 + chunk`` (xor, odd multiplications, xor-shifts and an addition mod 2^32 are each
    invertible), so distinct (chunk, slot) pairs never share a stream."""
    return _keyed_stream(_splitmix64(int(seed)), chunk, slot)


def _keyed_stream(keys: int, chunk: int, slot: int) -> int:
    """:func:`stream_seed` with the seed's SplitMix64 keys computed once."""
    if not 0 <= chunk < 2 ** _CHUNK_BITS:
        raise ValueError(f"counter-based noise covers at most 2^{_CHUNK_BITS} chunks of {CHUNK_ROWS} rows "
                         f"({2 ** _CHUNK_BITS * CHUNK_ROWS:,} samples) per seed; chunk {chunk} is beyond")
    if not 0 <= slot < 2 ** _SLOT_BITS:
        raise ValueError(f"counter-based noise covers at most {2 ** _SLOT_BITS - 1} draws per sample; this run "
                         f"needs draw {slot} (fewer steps, or pass a torch.Generator)")
    x = ((slot << _CHUNK_BITS) | chunk) ^ (keys & _MASK32)
    x = (x * 0x9E3779B1) & _MASK32
    x ^= x >> 16
    x = (x + (keys >> 32)) & _MASK32
    x = (x * 0x85EBCA6B) & _MASK32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


def check_counter_range(n_samples: int, steps: int, draws_per_step: int) -> None:
    """Refuse, before any work, a run beyond the streams' index range (2^15 chunks, 2^17 - 1 draws per
    sample: the start's and ``steps · draws_per_step``)."""
    _keyed_stream(0, chunk_count(n_samples) - 1, steps * draws_per_step)


def chunk_count(n_samples: int) -> int:
    """How many chunks ``n_samples`` samples fill (the last may be partial)."""
    return -(-n_samples // CHUNK_ROWS)


def chunk_rows_of(chunk: int, n_samples: int) -> range:
    """The global rows of ``chunk`` in a set of ``n_samples`` samples."""
    return range(chunk * CHUNK_ROWS, min((chunk + 1) * CHUNK_ROWS, n_samples))


def _padded(rows: int) -> int:
    return -(-rows // ROW_QUANTUM) * ROW_QUANTUM


class CounterNoise:
    """The noise of one chunk: step k's draw j is stream (seed, chunk, 1 + k·m + j)'s first normals,
    row after row (the real rows', then the padding rows').

    Args:
        seed: the run's int seed in [0, 2^64).
        chunk: the chunk's index.
        rows: its real rows (the state ``like`` passed to :meth:`draw` may have padding rows after them;
            on CUDA a stream draws the whole chunk's numbers, whatever its rows, and is sliced).
    """

    def __init__(self, seed: int, chunk: int, rows: int):
        self.seed, self.chunk, self.rows = int(seed), chunk, rows
        self._keys = _splitmix64(self.seed)
        self._device: torch.device | None = None
        self._generator: torch.Generator | None = None

    def generator(self, device: torch.device, slot: int) -> torch.Generator:
        """A generator on ``device`` at the start of stream ``slot``."""
        if self._generator is None or device != self._device:
            self._device, self._generator = device, torch.Generator(device=device)
        return self._generator.manual_seed(_keyed_stream(self._keys, self.chunk, slot))

    def _values(self, slot: int, rows: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Stream ``slot``'s first ``rows · width`` normals, flat: a draw of that count rounded up to a
        multiple of 16 (at least 16) on the CPU, of a whole chunk's ``CHUNK_ROWS · width`` on CUDA
        (whose kernels lay draws out by size); sliced when longer."""
        count = rows * width
        drawn = max(16, -(-count // 16) * 16) if device.type == "cpu" else CHUNK_ROWS * width
        values = torch.randn(drawn, generator=self.generator(device, slot), device=device, dtype=dtype)
        return values if drawn == count else values[:count]

    def normals(self, slot: int, out: Tensor) -> Tensor:
        """Fill ``out`` (rows, d), contiguous, with stream ``slot``'s first normals and return it."""
        return out.copy_(self._values(slot, out.shape[0], out.shape[1], out.device, out.dtype).view(out.shape))

    def draw(self, index: int, count: int, like: Tensor) -> Tensor:
        """Step ``index``'s ``count`` draws, shape (count, *like.shape), like's device and dtype: each
        the first normals of its stream, row after row, so the real rows' draws do not depend on the
        padding rows after them (whose draws are discarded with them)."""
        rows, width = like.shape
        if count == 1:
            return self._values(1 + index, rows, width, like.device, like.dtype).view(1, rows, width)
        draws = [self._values(1 + index * count + j, rows, width, like.device, like.dtype) for j in range(count)]
        return torch.cat(draws).view(count, rows, width)

    def brownian(self, times, first_index: int, dt: float, like: Tensor, levy: str):
        """A torchsde ``BrownianInterval`` over ``times`` for the chunk's padded rows, seeded by
        (seed, chunk, first_index): a run that calls once per grid interval gets independent motions."""
        import torchsde

        entropy = _splitmix64(_splitmix64(self.seed) ^ (self.chunk << 32 | first_index)) >> 2
        return torchsde.BrownianInterval(t0=times[0], t1=times[-1], size=like.shape, dtype=like.dtype,
                                         device=like.device, entropy=entropy, dt=dt, levy_area_approximation=levy)

    def get_state(self):
        """Nothing: a draw is a function of its step index alone (a replay redraws it)."""
        return None

    def set_state(self, state) -> None:
        pass


def run_chunks(chunks: range, n_samples: int, seed: int, start: Callable[[int, CounterNoise, int], Tensor],
               run: Callable, progress: bool, label: str, pad: bool = True):
    """Integrate ``chunks`` of an ``n_samples`` set one by one and stack their real rows.

    Args:
        chunks: the chunk indices to run (consecutive).
        start: ``start(chunk, noise, padded_rows)`` -> the chunk's (padded_rows, d) starting state.
        run: ``run(x, noise, progress)`` -> (x, path or None, nfe), e.g. :func:`~diffsde.samplers.integrate`.
        progress: one bar over the steps for a single chunk, over the chunks otherwise.
        pad: pad a partial chunk to a multiple of :data:`ROW_QUANTUM` rows (for row-wise methods,
            :attr:`diffsde.samplers.Sampler.row_wise`; a method whose steps read the whole batch
            runs its real rows alone, since padding rows would steer its step control).

    Returns:
        (x (rows of the chunks, d), path (steps + 1, rows, d) or None, nfe: the largest count of a chunk).
    """
    outputs, paths, nfe = [], [], 0
    several = len(chunks) > 1
    for chunk in progress_bar(chunks, progress and several, len(chunks), f"{label} chunks"):
        rows = len(chunk_rows_of(chunk, n_samples))
        noise = CounterNoise(seed, chunk, rows)
        x = start(chunk, noise, _padded(rows) if pad else rows)
        out, path, chunk_nfe = run(x, noise, progress and not several)
        outputs.append(out[:rows])
        if path is not None:
            paths.append(path[:, :rows])
        nfe = max(nfe, chunk_nfe)
    x = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    path = None if not paths else paths[0] if len(paths) == 1 else torch.cat(paths, dim=1)
    return x, path, nfe
