"""Discrete β schedules as grids on the OU's time axis (seed 000, DESIGN.md "One time variable").

A schedule β_0 ... β_{n-1} is read two ways:

* seed 000's convention: β_j is a step of OU time, so ``times[i] = t_i = Σ_{j<i} β_j``;
* the exact map: ``exact_times[i] = τ_i = -log ᾱ_i`` with ``ᾱ_i = Π_{j<i} (1 - β_j)``, the
  time at which the OU marginal has exactly the VP chain's ᾱ_i (so the VP forward chain
  is an exact OU sampler on that grid).

The two agree to first order: ``log ᾱ_i = -t_i - ½ Σ_{j<i} β_j² + O(β³)``, so
``ᾱ_i - e^{-t_i} = O(max β)`` (seed 000, eq. "alpha bar limit"). For the linear schedule,
``n · max_i |ᾱ_i - e^{-t_i}| -> max_s ½ e^{-t(s)} ∫_0^s β(u)² du = 0.8622...``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence, Union

import torch
from torch import Tensor

from ._checks import check_int, check_real, real_float64

__all__ = ["BetaSchedule", "TimeGrid", "Interval", "SCHEDULES"]


class BetaSchedule:
    """A discrete variance schedule β_0 ... β_{n-1}, each in (0, 1), held in float64.

    Attributes (tensors, float64 on the CPU unless moved with :meth:`to`):
        betas: (n,) the β_j.
        times: (n+1,) seed-000 times ``t_0 = 0, t_i = Σ_{j<i} β_j``.
        alpha_bars: (n+1,) ``ᾱ_0 = 1, ᾱ_i = Π_{j<i} (1 - β_j)``.
        exact_times: (n+1,) ``τ_i = -log ᾱ_i`` (computed as ``-Σ log1p(-β_j)``).
        T: final seed-000 time ``t_n`` (a Python float).
        n: number of steps.

    Raises:
        ValueError: if ``betas`` is empty, not 1-D, or has an entry outside (0, 1) or NaN;
            the message names the first bad index and its value.
        TypeError: if ``betas`` is not a real sequence or tensor.
    """

    def __init__(self, betas: Union[Tensor, Sequence[float]]):
        if isinstance(betas, Tensor):
            if betas.is_complex() or betas.dtype == torch.bool:
                raise TypeError(f"betas must be real, got dtype {betas.dtype}")
            values = betas.detach().to(device="cpu", dtype=torch.float64)
        else:
            try:
                values = torch.as_tensor(betas, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(f"betas must be a 1-D sequence of floats, got {type(betas).__name__}") from err
        if values.dim() != 1:
            raise ValueError(f"betas must be 1-D, got shape {tuple(values.shape)}")
        if values.numel() == 0:
            raise ValueError("betas is empty: a schedule needs at least one step")
        bad = ~((values > 0) & (values < 1))  # NaN compares False, so it is bad too
        if bool(bad.any()):
            index = int(torch.nonzero(bad)[0])
            raise ValueError(f"betas must lie in (0, 1); betas[{index}] = {float(values[index])!r} does not")
        self._betas64 = values.clone()  # kept in float64 on the CPU whatever `to` does
        self.betas = values.clone()
        log_alphas = torch.log1p(-self.betas)
        zero = torch.zeros(1, dtype=torch.float64)
        self.times = torch.cat([zero, torch.cumsum(self.betas, 0)])
        self.exact_times = torch.cat([zero, -torch.cumsum(log_alphas, 0)])
        self.alpha_bars = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - self.betas, 0)])

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def linear(cls, n: int = 1000, beta_min: float = 0.1, beta_max: float = 20.0) -> "BetaSchedule":
        """Song et al.'s linear rate ``β(s) = beta_min + (beta_max - beta_min) s`` on s in [0, 1],
        discretized as ``β_i = β(i / (n - 1)) / n`` (DESIGN.md).

        At n = 1000 this is DDPM's β from 1e-4 to 0.02; every n has the same
        ``T = (beta_min + beta_max) / 2 = 10.05``, so increasing n refines one continuous
        schedule. With the defaults n must be at least 21 (β_max = 20 / n < 1).

        Raises:
            TypeError: n not an int, or beta_min / beta_max not real numbers.
            ValueError: n < 2, not 0 < beta_min <= beta_max < inf, or a β_i >= 1 (n <= beta_max).
        """
        n = check_int(n, "n", minimum=2)
        beta_min = check_real(beta_min, "beta_min", 0, low_open=True)
        beta_max = check_real(beta_max, "beta_max", 0, low_open=True)
        if beta_min > beta_max:
            raise ValueError(f"need 0 < beta_min <= beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        s = torch.arange(n, dtype=torch.float64) / (n - 1)
        betas = (beta_min + (beta_max - beta_min) * s) / n
        if beta_max / n >= 1:
            index = int(torch.nonzero(betas >= 1)[0])
            raise ValueError(f"BetaSchedule.linear(n={n}) has betas[{index}] = {float(betas[index]):.4g} >= 1; "
                             f"the largest step is beta_max / n = {beta_max / n:.4g}, so use n > {beta_max:g}")
        return cls(betas)

    @classmethod
    def cosine(cls, n: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "BetaSchedule":
        """Nichol & Dhariwal's cosine schedule (Improved DDPM, eq. 17):
        ``ᾱ(i) = f(i) / f(0)``, ``f(i) = cos²(((i / n) + s) / (1 + s) · π / 2)``,
        ``β_j = min(1 - ᾱ(j + 1) / ᾱ(j), max_beta)``.

        Raises:
            TypeError: n not an int, or s / max_beta not real numbers.
            ValueError: n < 1, s not in (0, inf), max_beta not in (0, 1).
        """
        n = check_int(n, "n", minimum=1)
        s = check_real(s, "s", 0, low_open=True)
        max_beta = check_real(max_beta, "max_beta", 0, 1, low_open=True, high_open=True)
        grid = torch.arange(n + 1, dtype=torch.float64) / n
        f = torch.cos((grid + s) / (1 + s) * (math.pi / 2)) ** 2
        betas = torch.clamp(1 - f[1:] / f[:-1], max=max_beta)
        return cls(betas)

    # -- derived ------------------------------------------------------------------------

    @property
    def n(self) -> int:
        """Number of steps."""
        return int(self.betas.shape[0])

    @property
    def T(self) -> float:
        """Final seed-000 time ``t_n = Σ_j β_j``."""
        return float(self.times[-1])

    def refine(self, factor: int) -> "BetaSchedule":
        """Split every step β_j into ``factor`` equal steps β_j / factor.

        The seed-000 times of the old grid stay grid points (``t_i`` becomes
        ``t_{i·factor}``), so refining walks toward the continuous limit on a fixed time axis.
        """
        factor = check_int(factor, "factor", minimum=1)
        return BetaSchedule(torch.repeat_interleave(self._betas64 / factor, factor))

    def grid(self, t_min: float = 0.0, exact_times: bool = False) -> "TimeGrid":
        """The sampling grid of this schedule: forward times descending from T to t_min.

        Uses seed-000 times ``t_i`` (default) or the exact times ``τ_i = -log ᾱ_i``; each
        step keeps this schedule's β_i and ᾱ_i. The grid keeps the points with time >= t_min
        (so it ends at the first grid time at or above t_min; t_min = 0 keeps them all).
        """
        t_min = check_real(t_min, "t_min", 0)
        times = (self.exact_times if exact_times else self.times).to(device="cpu", dtype=torch.float64)
        alpha_bars = self.alpha_bars.to(device="cpu", dtype=torch.float64)
        keep = int(torch.count_nonzero(times >= t_min))  # times increase, so a suffix is dropped
        if keep < 2:
            raise ValueError(f"t_min = {t_min!r} leaves fewer than two grid points (the schedule ends at "
                             f"{float(times[-1]):.6g})")
        first = self.n + 1 - keep
        return TimeGrid(times[first:].flip(0), self._betas64[first:].flip(0), alpha_bars[first:].flip(0),
                        source="schedule")

    def to(self, device: Union[str, torch.device, None] = None,
           dtype: torch.dtype | None = None) -> "BetaSchedule":
        """A copy whose tensors live on ``device`` with ``dtype`` (values computed in float64)."""
        moved = copy.copy(self)
        for name in ("betas", "times", "exact_times", "alpha_bars"):
            setattr(moved, name, getattr(self, name).to(device=device, dtype=dtype))
        return moved

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"BetaSchedule(n={self.n}, T={self.T:.6g}, beta in [{float(self.betas.min()):.3g}, "
                f"{float(self.betas.max()):.3g}], dtype={self.betas.dtype}, device={self.betas.device})")


SCHEDULES: dict[str, Callable[[int], BetaSchedule]] = {
    "linear": BetaSchedule.linear,
    "cosine": BetaSchedule.cosine,
}
"""The named schedules, name -> constructor of n steps: the one list that training, the studies
and the command line offer (``SCHEDULES[name](n)``)."""


class Interval(NamedTuple):
    """One step of a sampling grid, as Python floats (no tensors, nothing to synchronise).

    ``t_from > t_to`` are forward OU times; the step runs backward in t over ``h = t_from - t_to``.
    ``beta`` is the VP step's β (the schedule's β_i, or Δt on a bare grid, seed 000's
    convention); ``alpha_bar_from``/``alpha_bar_to`` are ᾱ at the two ends (the schedule's,
    or e^{-t} on a bare grid).
    """

    index: int
    t_from: float
    t_to: float
    beta: float
    alpha_bar_from: float
    alpha_bar_to: float
    is_last: bool

    @property
    def h(self) -> float:
        """Length of the step in OU time."""
        return self.t_from - self.t_to


@dataclass(frozen=True, eq=False)
class TimeGrid:
    """Forward OU times descending from T to t_min, shared by every sampler.

    Attributes (float64, CPU):
        times: (n+1,) strictly decreasing, times[-1] = t_min >= 0.
        betas: (n,) the VP β of each step: a schedule's β_i, or Δt_k = times[k] - times[k+1]
            on a bare grid (seed 000's reading of β as a step of OU time).
        alpha_bars: (n+1,) ᾱ at each time: a schedule's ᾱ_i, or e^{-t} on a bare grid.
        source: "schedule" or "times".
    """

    times: Tensor
    betas: Tensor
    alpha_bars: Tensor
    source: str = "times"

    @classmethod
    def from_times(cls, times: Union[Tensor, Sequence[float]]) -> "TimeGrid":
        """A bare grid from descending forward times (β = Δt, ᾱ = e^{-t}).

        Raises ValueError (naming the first bad index) unless ``times`` is 1-D with at least
        two finite entries, strictly decreasing, and ends at a time >= 0.
        """
        values = real_float64(times, "grid", "a 1-D tensor of times")
        if values.dim() != 1 or values.numel() < 2:
            raise ValueError(f"grid must be 1-D with at least two times, got shape {tuple(values.shape)}")
        if not bool(torch.isfinite(values).all()):
            index = int(torch.nonzero(~torch.isfinite(values))[0])
            raise ValueError(f"grid must be finite; grid[{index}] = {float(values[index])!r}")
        steps = values[:-1] - values[1:]
        if not bool((steps > 0).all()):
            index = int(torch.nonzero(steps <= 0)[0])
            raise ValueError(f"grid must be strictly decreasing (forward times from T down to t_min); "
                             f"grid[{index}] = {float(values[index])!r} is followed by {float(values[index + 1])!r}")
        if float(values[-1]) < 0:
            raise ValueError(f"grid times must be >= 0; the last is {float(values[-1])!r}")
        return cls(values, steps, torch.exp(-values), source="times")

    @classmethod
    def uniform(cls, T: float, t_min: float, n: int) -> "TimeGrid":
        """n equal steps from T down to t_min (OU times).

        Raises:
            TypeError: n not an int, or T / t_min not real numbers.
            ValueError: n < 1, or not 0 <= t_min < T < inf.
        """
        n = check_int(n, "n", minimum=1)
        T = check_real(T, "T", 0, low_open=True)
        t_min = check_real(t_min, "t_min", 0)
        if not t_min < T:
            raise ValueError(f"need 0 <= t_min < T < inf, got t_min={t_min!r}, T={T!r}")
        return cls.from_times(torch.linspace(T, t_min, n + 1, dtype=torch.float64))

    @property
    def n(self) -> int:
        """Number of steps."""
        return int(self.times.shape[0]) - 1

    @property
    def T(self) -> float:
        """First (largest) time."""
        return float(self.times[0])

    @property
    def t_min(self) -> float:
        """Last (smallest) time."""
        return float(self.times[-1])

    def intervals(self) -> list[Interval]:
        """The steps as :class:`Interval` records, in sampling order (T first)."""
        times = self.times.tolist()
        betas = self.betas.tolist()
        alpha_bars = self.alpha_bars.tolist()
        n = len(betas)
        return [Interval(k, times[k], times[k + 1], betas[k], alpha_bars[k], alpha_bars[k + 1], k == n - 1)
                for k in range(n)]

    def __repr__(self) -> str:
        return f"TimeGrid(n={self.n}, T={self.T:.6g}, t_min={self.t_min:.6g}, source={self.source!r})"
