"""Discrete β schedules as grids on the OU's time axis (the documentation's conventions, "One time variable").

A schedule β_0 ... β_{n-1} is read two ways:

* the step-sum convention (Song et al. 2021, appendix B): β_j is a step of OU time, so ``times[i] = t_i = Σ_{j<i} β_j``;
* the exact map: ``exact_times[i] = τ_i = -log ᾱ_i`` with ``ᾱ_i = Π_{j<i} (1 - β_j)``, the
  time at which the OU marginal has exactly the VP chain's ᾱ_i (so the VP forward chain
  is an exact OU sampler on that grid).

The two agree to first order: ``log ᾱ_i = -t_i - ½ Σ_{j<i} β_j² + O(β³)``, so
``ᾱ_i - e^{-t_i} = O(max β)`` (Song et al. 2021, appendix B). For the linear schedule,
``n · max_i |ᾱ_i - e^{-t_i}| -> max_s ½ e^{-t(s)} ∫_0^s β(u)² du = 0.8622...``.

Precision: a schedule's arithmetic (its times, ᾱ, grids, refinements and respacings) is
float64 whatever dtype its tensors are moved to with :meth:`BetaSchedule.to`; Python numbers
and lists are read as float64, tensors keep their values (converted exactly).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, NamedTuple, Sequence, Union

import torch
from torch import Tensor

from ._checks import ArgumentTypeError, check_bool, check_choice, check_int, check_real, real_float64
from .coordinates import log_snr, time_from_log_snr, time_from_ve_sigma, ve_sigma

__all__ = ["BetaSchedule", "TimeGrid", "Interval", "SCHEDULES", "SPACINGS"]

SPACINGS = ("trailing", "linspace", "leading")
"""The timestep spacings of :meth:`BetaSchedule.respaced` (diffusers' ``timestep_spacing``)."""

# A schedule time closer than this (times max(1, t_min)) to t_min is t_min itself, up to the
# rounding of the cumulative sums that made it (grid(..., end_at_t_min=True)).
_SAME_TIME = 1e-12


class BetaSchedule:
    """A discrete variance schedule β_0 ... β_{n-1}, each in (0, 1), held in float64.

    Attributes (tensors, float64 on the CPU unless moved with :meth:`to`):
        betas: (n,) the β_j.
        times: (n+1,) step-sum times ``t_0 = 0, t_i = Σ_{j<i} β_j`` (a respaced schedule keeps
            its parent's times instead, :meth:`respaced`).
        alpha_bars: (n+1,) ``ᾱ_0 = 1, ᾱ_i = Π_{j<i} (1 - β_j)``.
        exact_times: (n+1,) ``τ_i = -log ᾱ_i`` (computed as ``-Σ log1p(-β_j)``).
        T: final step-sum time ``t_n`` (a Python float).
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
        zero = torch.zeros(1, dtype=torch.float64)
        # The float64 CPU originals: every computation reads these, whatever `to` did to the attributes.
        self._betas64 = values.clone()
        self._times64 = torch.cat([zero, torch.cumsum(values, 0)])
        self._exact_times64 = torch.cat([zero, -torch.cumsum(torch.log1p(-values), 0)])
        self._alpha_bars64 = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - values, 0)])
        self._respaced = False
        self._publish()

    def _publish(self) -> None:
        """The public attributes: copies of the float64 originals."""
        self.betas, self.times = self._betas64.clone(), self._times64.clone()
        self.exact_times, self.alpha_bars = self._exact_times64.clone(), self._alpha_bars64.clone()

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def linear(cls, n: int = 1000, beta_min: float = 0.1, beta_max: float = 20.0) -> "BetaSchedule":
        """Song et al.'s linear rate ``β(s) = beta_min + (beta_max - beta_min) s`` on s in [0, 1],
        discretized as ``β_i = β(i / (n - 1)) / n`` (the documentation's conventions page).

        At n = 1000 this is DDPM's β from 1e-4 to 0.02; every n has the same
        ``T = (beta_min + beta_max) / 2 = 10.05``, so increasing n refines one continuous
        schedule. With the defaults n must be at least 21 (β_max = 20 / n < 1); for fewer steps
        of the same rate, respace a finer one: ``BetaSchedule.linear(1000).respaced(n)``.

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
                             f"the largest step is beta_max / n = {beta_max / n:.4g}, so use n > {beta_max:g}, or "
                             f"BetaSchedule.linear(1000).respaced({n}) for {n} steps of the same rate")
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
        return int(self._betas64.shape[0])

    @property
    def T(self) -> float:
        """Final step-sum time ``t_n = Σ_j β_j``."""
        return float(self._times64[-1])

    def refine(self, factor: int) -> "BetaSchedule":
        """Split every step β_j into ``factor`` equal steps β_j / factor.

        The step-sum times of the old grid stay grid points (``t_i`` becomes
        ``t_{i·factor}``), so refining walks toward the continuous limit on a fixed time axis.

        Raises:
            ValueError: factor < 1, or a respaced schedule (its times are its parent's, not the
                sums of its β: refine the parent, then respace it).
        """
        factor = check_int(factor, "factor", minimum=1)
        if self._respaced:
            raise ValueError("refine() splits β_j on the schedule's own time axis t_i = Σ_{j<i} β_j; a respaced "
                             "schedule keeps its parent's times instead: refine the parent and respace that")
        return BetaSchedule(torch.repeat_interleave(self._betas64 / factor, factor))

    def respaced(self, n: int, spacing: str = "trailing") -> "BetaSchedule":
        """The n-step subset of this schedule: its ᾱ at n + 1 chosen indices, as diffusers'
        ``DDPMScheduler.set_timesteps`` / ``DDIMScheduler.set_timesteps`` choose them.

        Nichol & Dhariwal 2021 (Improved DDPM, Sec. 4): for indices ``0 = k_0 < k_1 < ... < k_n``
        into this schedule's ᾱ (N = ``self.n`` steps), the respaced schedule has
        ``ᾱ'_i = ᾱ_{k_i}`` and ``β'_i = 1 - ᾱ_{k_{i+1}} / ᾱ_{k_i}``, always in (0, 1) (ᾱ decreases
        strictly), so any n <= N gives a valid schedule even where the same rate with n steps
        would have β >= 1. Its ``times``, ``exact_times`` and ``alpha_bars`` are this schedule's
        at the kept indices (``times'_i = times[k_i]``): the respaced schedule lives on its
        parent's time axis (T is kept whenever k_n = N).

        diffusers' timestep t is the index k = t + 1 here (its ``alphas_cumprod[t]`` is ᾱ after
        t + 1 steps) and its chain ends at ᾱ = 1 (k_0 = 0). The spacings, j = 0 ... n - 1:

        * ``"trailing"`` (default): ``k = round((j + 1) N / n)``: evenly spaced from 0 to N, every
          step about N / n of the parent's (T kept); the spacing Lin et al. 2024 ("Common
          diffusion noise schedules and sample steps are flawed") recommend;
        * ``"linspace"``: ``k = 1 + round(j (N - 1) / (n - 1))``: from index 1 to N (T kept), so
          the last step sampled is the parent's first, β_0 (n = 1 keeps k = 1 alone, as
          diffusers: one step of β_0);
        * ``"leading"``: ``k = 1 + j ⌊N / n⌋`` (diffusers' ``steps_offset = 0``): starts below N.

        Rounding is half to even on the exact rational values; diffusers computes them in
        floating point, which rounds some exact halves the other way (and for "trailing" can
        yield one step too many), so an index can differ from diffusers' by one there.

        Args:
            n: steps of the respaced schedule, 1 <= n <= ``self.n``.
            spacing: one of :data:`SPACINGS`.
        Raises:
            TypeError: n not an int.
            ValueError: n outside [1, self.n], or an unknown spacing.
        """
        big_n = self.n
        n = check_int(n, "n", minimum=1, maximum=big_n)
        check_choice(spacing, "spacing", SPACINGS)
        if spacing == "trailing":
            kept = [round(Fraction((j + 1) * big_n, n)) for j in range(n)]
        elif spacing == "linspace":
            kept = [1 + (round(Fraction(j * (big_n - 1), n - 1)) if n > 1 else 0) for j in range(n)]
        else:
            kept = [1 + j * (big_n // n) for j in range(n)]
        index = torch.tensor([0] + kept, dtype=torch.int64)
        # 1 - ᾱ_{k'} / ᾱ_k = -expm1(-(τ_{k'} - τ_k)) with τ = -log ᾱ: accurate for small β too.
        betas = -torch.expm1(-self._exact_times64[index].diff())
        respaced = BetaSchedule(betas)
        # The kept points themselves, not their recomputation from β' (1 - β' loses digits when β' is near 1).
        respaced._times64 = self._times64[index].clone()
        respaced._exact_times64 = self._exact_times64[index].clone()
        respaced._alpha_bars64 = self._alpha_bars64[index].clone()
        respaced._respaced = True
        respaced._publish()
        return respaced

    def grid(self, t_min: float = 0.0, exact_times: bool = False, *, end_at_t_min: bool = False) -> "TimeGrid":
        """The sampling grid of this schedule: forward times descending from T to t_min, in float64
        whatever dtype this schedule's tensors were moved to.

        Uses step-sum times ``t_i`` (default) or the exact times ``τ_i = -log ᾱ_i``; each
        step keeps this schedule's β_i and ᾱ_i. Where the grid ends:

        * ``end_at_t_min=False`` (default): it keeps the points with time >= t_min, so it ends
          at the first grid time at or above t_min (t_min = 0 keeps them all);
        * ``end_at_t_min=True``: it ends at t_min itself. A schedule time within rounding
          (1e-12 · max(1, t_min)) of t_min becomes t_min; otherwise the step that crosses t_min,
          from t_{j-1} < t_min to t_j, is cut to run from t_j to t_min, with ᾱ(t_min)
          interpolating log ᾱ linearly in time within that step and β = 1 - ᾱ_j / ᾱ(t_min), so
          ``ᾱ_{i+1} = ᾱ_i (1 - β_i)`` holds along the grid as on the schedule (with exact times,
          ᾱ(t_min) = e^{-t_min} exactly). Every other point is the schedule's, unchanged, and
          no step is longer than the schedule's.

        Raises:
            ValueError: t_min outside [0, inf), or a t_min that leaves no step (fewer than two
                points at or above it; with end_at_t_min, no time above it).
        """
        t_min = check_real(t_min, "t_min", 0)
        end_at_t_min = check_bool(end_at_t_min, "end_at_t_min")
        all_times = self._exact_times64 if exact_times else self._times64
        times, betas, alpha_bars = all_times, self._betas64, self._alpha_bars64
        if not end_at_t_min:
            keep = int(torch.count_nonzero(times >= t_min))  # times increase, so a suffix is dropped
            if keep < 2:
                raise ValueError(f"t_min = {t_min!r} leaves fewer than two grid points (the schedule ends at "
                                 f"{float(times[-1]):.6g})")
            first = self.n + 1 - keep
            return TimeGrid(times[first:].flip(0), betas[first:].flip(0), alpha_bars[first:].flip(0),
                            source="schedule")
        same = _SAME_TIME * max(1.0, t_min)
        if not float(times[-1]) > t_min + same:
            raise ValueError(f"t_min = {t_min!r} leaves no step: the schedule ends at {float(times[-1]):.6g}")
        first = self.n + 1 - int(torch.count_nonzero(times >= t_min - same))  # the first time >= t_min, to rounding
        times, betas, alpha_bars = times[first:].clone(), betas[first:].clone(), alpha_bars[first:].clone()
        if abs(float(times[0]) - t_min) <= same:
            times[0] = t_min
        else:  # cut the schedule's step first - 1 at t_min
            lower, upper = float(all_times[first - 1]), float(times[0])
            fraction = (upper - t_min) / (upper - lower)  # in (0, 1): lower < t_min < upper
            beta = -math.expm1(fraction * math.log1p(-float(self._betas64[first - 1])))
            times = torch.cat([times.new_tensor([t_min]), times])
            betas = torch.cat([betas.new_tensor([beta]), betas])
            alpha_bars = torch.cat([alpha_bars[:1] / (1.0 - beta), alpha_bars])
        return TimeGrid(times.flip(0), betas.flip(0), alpha_bars.flip(0), source="schedule")

    def to(self, device: Union[str, torch.device, torch.dtype, None] = None,
           dtype: torch.dtype | None = None) -> "BetaSchedule":
        """A copy whose tensor attributes live on ``device`` with ``dtype`` (like ``Tensor.to``, a
        dtype may come first: ``schedule.to(torch.float32)``).

        Only those attributes change: the copy's arithmetic (``T``, :meth:`grid`, :meth:`refine`,
        :meth:`respaced`) stays in float64 on the CPU, so a float16 copy still gives the float64
        grid (float16 would round 3,554 of the 10,000 steps of ``linear(10000)`` to zero length).

        Raises:
            ArgumentTypeError: ``dtype`` not a floating-point torch.dtype (an integer, boolean or
                complex dtype would turn β in (0, 1) into nonsense).
        """
        if isinstance(device, torch.dtype) and dtype is None:
            device, dtype = None, device
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise ArgumentTypeError(f"dtype must be a floating-point torch.dtype (a schedule's β lie in (0, 1)), "
                                    f"got {dtype!r}")
        moved = copy.copy(self)
        for name in ("betas", "times", "exact_times", "alpha_bars"):
            setattr(moved, name, getattr(self, name).to(device=device, dtype=dtype))
        return moved

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"BetaSchedule(n={self.n}, T={self.T:.6g}, beta in [{float(self._betas64.min()):.3g}, "
                f"{float(self._betas64.max()):.3g}], dtype={self.betas.dtype}, device={self.betas.device})")


SCHEDULES: dict[str, Callable[[int], BetaSchedule]] = {
    "linear": BetaSchedule.linear,
    "cosine": BetaSchedule.cosine,
}
"""The named schedules, name -> constructor of n steps: the one list that training, the studies
and the command line offer (``SCHEDULES[name](n)``)."""


class Interval(NamedTuple):
    """One step of a sampling grid, as Python floats (no tensors, nothing to synchronise).

    ``t_from > t_to`` are forward OU times; the step runs backward in t over ``h = t_from - t_to``.
    ``beta`` is the VP step's β (the schedule's β_i, or Δt on a bare grid, the step-sum
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
            on a bare grid (the step-sum reading of β as a step of OU time).
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

    @classmethod
    def log_snr(cls, T: float, t_min: float, n: int) -> "TimeGrid":
        """n steps uniform in the log-SNR ``λ(t) = log(α / σ)`` (Lu et al. 2022, DPM-Solver, Sec. 3.3's
        "logSNR" step schedule), from T down to t_min: ``λ_i = λ(T) + (i / n) (λ(t_min) - λ(T))``,
        ``t_i = log(1 + e^{-2 λ_i})`` (:mod:`diffsde.coordinates`), computed in float64, with
        ``t_0 = T`` and ``t_n = t_min`` exactly. A bare grid (β = Δt, ᾱ = e^{-t}).

        Raises:
            TypeError: n not an int, or T / t_min not real numbers.
            ValueError: n < 1, t_min <= 0 (t = 0 is λ = +inf), or not t_min < T <= 709.78
                (e^T must be a finite float64 number).
        """
        n, T, t_min = cls._checked_positive_range(T, t_min, n, "log_snr")
        start, end = log_snr(T), log_snr(t_min)
        times = [T] + [time_from_log_snr(start + (i / n) * (end - start)) for i in range(1, n)] + [t_min]
        return cls.from_times(torch.tensor(times, dtype=torch.float64))

    @classmethod
    def karras(cls, T: float, t_min: float, n: int, rho: float = 7.0) -> "TimeGrid":
        """Karras et al. 2022 ("Elucidating the design space", eq. 5) in the VE noise level
        ``σ_VE(t) = sqrt(e^t - 1)``: ``σ_i = (σ_max^{1/ρ} + (i / n) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ``
        for i = 0 ... n (n steps), ``σ_max = σ_VE(T)``, ``σ_min = σ_VE(t_min)``, ``t_i = log(1 + σ_i²)``;
        computed in float64 with ``t_0 = T`` and ``t_n = t_min`` exactly. A bare grid (β = Δt, ᾱ = e^{-t}).

        k-diffusion's ``get_sigmas_karras(n + 1, σ_min, σ_max, rho)`` gives the same σ_i (it appends
        a final σ = 0, which is t = 0 here: ``TimeGrid.from_times([*grid.times, 0.0])``).

        ``rho``: any finite ρ > 0 gives a strictly decreasing grid (as in k-diffusion): ρ = 1 is
        uniform in σ_VE, ρ = 7 is Karras et al.'s choice (ρ = 3 equalises the truncation error of
        their Heun sampler), and ρ -> inf tends to :meth:`log_snr` (uniform in log σ_VE = -λ), the
        difference falling as 1/ρ. ρ < 1 crowds the steps at high noise, the opposite of the
        intent; a tiny ρ overflows σ^{1/ρ} (refused with a ValueError).

        Raises:
            TypeError: n not an int, or T / t_min / rho not real numbers.
            ValueError: n < 1, t_min <= 0, not t_min < T <= 709.78, rho not finite and > 0, or a
                rho so small that σ_max^{1/ρ} overflows float64.
        """
        n, T, t_min = cls._checked_positive_range(T, t_min, n, "karras")
        rho = check_real(rho, "rho", 0, low_open=True)
        try:
            top, bottom = ve_sigma(T) ** (1.0 / rho), ve_sigma(t_min) ** (1.0 / rho)
        except OverflowError:
            top = math.inf
        if not math.isfinite(top):
            raise ValueError(f"rho = {rho!r} is too small for T = {T!r}: σ_VE(T)^(1/rho) overflows float64; "
                             f"use a larger rho (Karras et al. use 7)")
        sigmas = [(top + (i / n) * (bottom - top)) ** rho for i in range(1, n)]
        times = [T] + [time_from_ve_sigma(sigma) for sigma in sigmas] + [t_min]
        return cls.from_times(torch.tensor(times, dtype=torch.float64))

    @classmethod
    def _checked_positive_range(cls, T: float, t_min: float, n: int, name: str) -> tuple[int, float, float]:
        """(n, T, t_min) checked for a grid built in λ or σ_VE: n >= 1 and 0 < t_min < T <= log(float64 max),
        where e^T, and so σ_VE(T)² and e^{-2λ(T)}, stay finite."""
        largest = math.log(torch.finfo(torch.float64).max)  # 709.78
        n = check_int(n, "n", minimum=1)
        T = check_real(T, "T", 0, largest, low_open=True)
        t_min = check_real(t_min, "t_min", 0)
        if t_min == 0.0:
            raise ValueError(f"TimeGrid.{name} needs t_min > 0 (t = 0 is log-SNR λ = +inf, σ_VE = 0), got t_min = 0.0; "
                             f"append t = 0 afterwards if the grid must end there: "
                             f"TimeGrid.from_times([*grid.times.tolist(), 0.0])")
        if not t_min < T:
            raise ValueError(f"need 0 < t_min < T <= {largest:.6g}, got t_min={t_min!r}, T={T!r}")
        return n, T, t_min

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
