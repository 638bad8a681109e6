"""Where a run's noise comes from: a generator, or probe inputs injected by the exact law.

A sampler never draws noise itself: the loop asks a noise source for step k's draws
(``draw(k, count, like)``, shape (count, *like.shape)), and torchsde's solvers ask it for a
Brownian motion (``brownian(...)``). Two sources:

* :class:`GeneratorNoise`: standard normal draws from one ``torch.Generator`` (what
  :func:`diffsde.sample` uses), and torchsde's ``BrownianInterval`` seeded from it;
* :class:`ProbeNoise`: unit vectors placed in probe rows, one block of d rows per scalar draw,
  so the output of a sampler that is affine in (x_T, noise) reveals its noise matrix
  (:func:`diffsde.exact_output_law`); torchsde gets the same unit increments through
  :class:`InjectedBrownian`.

A third, :class:`diffsde.samplers.chunks.CounterNoise`, draws one chunk's noise from streams keyed
by (seed, chunk, draw), for :func:`diffsde.sample` with an int seed.
"""

from __future__ import annotations

import bisect
import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["GeneratorNoise", "ProbeNoise", "InjectedBrownian"]


class GeneratorNoise:
    """Standard normal draws from ``generator`` (None: torch's global generator)."""

    def __init__(self, generator: torch.Generator | None):
        self.generator = generator

    def draw(self, index: int, count: int, like: Tensor) -> Tensor:
        """Step ``index``'s ``count`` draws, shape (count, *like.shape), like's device and dtype."""
        return torch.randn((count,) + tuple(like.shape), generator=self.generator, device=like.device,
                           dtype=like.dtype)

    def brownian(self, times: Sequence[float], first_index: int, dt: float, like: Tensor, levy: str):
        """A torchsde ``BrownianInterval`` on [times[0], times[-1]] seeded from the generator."""
        import torchsde

        gen = self.generator
        entropy = None if gen is None else int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
        return torchsde.BrownianInterval(t0=times[0], t1=times[-1], size=like.shape, dtype=like.dtype,
                                         device=like.device, entropy=entropy, dt=dt, levy_area_approximation=levy)

    def get_state(self):
        """The generator state (to replay a window of steps)."""
        return None if self.generator is None else self.generator.get_state()

    def set_state(self, state) -> None:
        """Restore a state from :meth:`get_state`."""
        if self.generator is not None:
            self.generator.set_state(state)


class ProbeNoise:
    """Unit-vector probes: scalar draw j of step k, coordinate i, is 1 in row
    ``first_row + (k · draws_per_step + j) · d + i`` and 0 elsewhere.

    Args:
        first_row: the first noise-probe row (rows before it probe x_T).
        draws_per_step: the sampler's declared noise draws per step.
        dim: d.
    """

    def __init__(self, first_row: int, draws_per_step: int, dim: int):
        self.first_row, self.draws_per_step, self.dim = first_row, draws_per_step, dim

    def rows(self, steps: int) -> int:
        """Rows needed for ``steps`` steps (x_T probes included)."""
        return self.first_row + steps * self.draws_per_step * self.dim

    def draw(self, index: int, count: int, like: Tensor) -> Tensor:
        if count != self.draws_per_step:
            raise RuntimeError(f"a step asked for {count} draws but its sampler declares {self.draws_per_step}")
        out = torch.zeros((count,) + tuple(like.shape), device=like.device, dtype=like.dtype)
        eye = torch.eye(self.dim, device=like.device, dtype=like.dtype)
        for j in range(count):
            row = self.first_row + (index * count + j) * self.dim
            out[j, row:row + self.dim] = eye
        return out

    def brownian(self, times: Sequence[float], first_index: int, dt: float, like: Tensor, levy: str):
        """An :class:`InjectedBrownian` whose increments are this source's draws."""
        return InjectedBrownian(self, times, first_index, like, levy)

    def get_state(self):
        return None

    def set_state(self, state) -> None:
        pass


class InjectedBrownian:
    """A Brownian motion for ``torchsde.sdeint`` whose increments over the grid intervals are
    given: over interval k, ``W = sqrt(h_k) z_0`` and, with ``levy="space-time"``, the space-time
    Lévy area ``H = sqrt(h_k / 12) z_1`` (independent of W; Foster et al.'s convention, as torchsde's
    ``BrownianInterval`` returns it, ``U = h (W / 2 + H)``), z from ``source.draw(first_index + k)``.
    Only grid intervals may be queried (fixed-step solvers on that grid do exactly that).
    torchsde reads a Brownian motion through its call and its dtype, device, shape and
    levy_area_approximation, which is all this class provides."""

    def __init__(self, source, times: Sequence[float], first_index: int, like: Tensor, levy: str):
        self._source, self._times, self._first = source, list(times), first_index
        self._like, self._levy = like, levy

    def _interval(self, ta: float, tb: float) -> int:
        k = bisect.bisect_left(self._times, ta - 1e-9 * max(1.0, abs(ta)))
        ok = k + 1 < len(self._times)
        if ok:
            h = self._times[k + 1] - self._times[k]
            ok = abs(ta - self._times[k]) <= 1e-6 * h and abs(tb - self._times[k + 1]) <= 1e-6 * h
        if not ok:
            raise RuntimeError(f"injected Brownian increments exist only over the grid's intervals; "
                               f"torchsde asked for [{ta}, {tb}]")
        return k

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None or return_A:
            raise RuntimeError("injected Brownian increments answer interval queries W(ta, tb) (and U) only")
        ta, tb = float(ta), float(tb)
        k = self._interval(ta, tb)
        h = self._times[k + 1] - self._times[k]
        z = self._source.draw(self._first + k, 2 if self._levy == "space-time" else 1, self._like)
        increment = math.sqrt(h) * z[0]
        if not return_U:
            return increment
        space_time = math.sqrt(h / 12.0) * z[1]
        return increment, h * (0.5 * increment + space_time)

    def __repr__(self) -> str:
        return f"InjectedBrownian(intervals={len(self._times) - 1}, levy={self._levy!r})"

    @property
    def dtype(self):
        return self._like.dtype

    @property
    def device(self):
        return self._like.device

    @property
    def shape(self):
        return self._like.shape

    @property
    def levy_area_approximation(self):
        return self._levy
