"""The entry point :func:`sample` and the one step loop of the fixed-grid methods.

Every method integrates from forward OU time T down to t_min over the same :class:`TimeGrid`,
so a comparison changes one thing at a time. The loop lives once (:func:`run_steps`); it
carries each method's solver state, takes noise from a noise source
(:mod:`diffsde.samplers.noise`) and checks finiteness every ``check_every`` steps without a
per-step host synchronisation. Methods with an external loop (torchsde, scipy) provide a
runner with the same signature (:func:`integrate` dispatches on the record, not the name).
"""

from __future__ import annotations

import math
import sys
import time
from numbers import Integral
from typing import Any, Callable, Sequence, Union

import torch
from torch import Tensor

from .._checks import ArgumentTypeError, check_data, check_int
from ..protocols import ExactScore, declared_dim, is_singular_at_zero
from ..schedules import BetaSchedule, TimeGrid
from .errors import NonFiniteSampleError
from .noise import GeneratorNoise
from .progress import progress_bar
from .registry import Sampler, resolve_method

__all__ = ["sample", "integrate", "run_steps", "resolve_grid", "check_grid", "HALF_DTYPES"]

Score = Callable[[Tensor, Any], Tensor]
GridLike = Union[TimeGrid, Tensor, Sequence[float], None]

#: State dtypes carried in float32 during a run (the score still sees them; see :func:`integrate`).
HALF_DTYPES = (torch.float16, torch.bfloat16)


def resolve_grid(schedule: BetaSchedule | None = None, grid: GridLike = None, t_min: float | None = None,
                 exact_times: bool = False) -> TimeGrid:
    """The grid a run uses: ``grid`` as given, or ``schedule.grid(t_min, exact_times)``, or
    the linear 1000-step schedule's grid when neither is given."""
    if grid is not None and schedule is not None:
        raise ValueError("give either schedule or grid, not both")
    if grid is not None:
        if t_min is not None or exact_times:
            raise ValueError("t_min and exact_times apply to a schedule; a grid already ends at its own t_min")
        time_grid = grid if isinstance(grid, TimeGrid) else TimeGrid.from_times(grid)
    else:
        if schedule is None:
            schedule = BetaSchedule.linear(1000)
        if not isinstance(schedule, BetaSchedule):
            raise TypeError(f"schedule must be a BetaSchedule, got {type(schedule).__name__}")
        time_grid = schedule.grid(t_min=0.0 if t_min is None else t_min, exact_times=exact_times)
    _check_time_grid(time_grid)
    return time_grid


def _check_time_grid(grid: TimeGrid) -> None:
    """Refuse a grid whose numbers the steps cannot use: the steps read its times, β and ᾱ as
    float64 (Python floats), so the grid must hold them in float64, with n + 1 finite times
    strictly decreasing to t_min >= 0 (no zero-length step) and n β's. A grid built by
    :meth:`TimeGrid.from_times` or a schedule passes; a hand-made one might not."""
    if not isinstance(grid, TimeGrid):
        raise TypeError(f"grid must be a TimeGrid, a tensor or a sequence of times, got {type(grid).__name__}")
    for name in ("times", "betas", "alpha_bars"):
        value = getattr(grid, name)
        if not isinstance(value, Tensor) or value.dtype != torch.float64:
            raise TypeError(f"a TimeGrid's {name} must be a float64 tensor (the steps' coefficients are computed "
                            f"in float64 whatever the state's dtype), got "
                            f"{value.dtype if isinstance(value, Tensor) else type(value).__name__}")
    times = grid.times
    if times.dim() != 1 or times.numel() < 2 or grid.betas.shape != (times.numel() - 1,) \
            or grid.alpha_bars.shape != times.shape:
        raise ValueError(f"a TimeGrid needs times (n+1,), betas (n,) and alpha_bars (n+1,) with n >= 1, got "
                         f"shapes {tuple(times.shape)}, {tuple(grid.betas.shape)}, {tuple(grid.alpha_bars.shape)}")
    if not bool(torch.isfinite(times).all()):
        raise ValueError("a TimeGrid's times must be finite")
    steps = times[:-1] - times[1:]
    if not bool((steps > 0).all()):
        k = int(torch.nonzero(steps <= 0)[0])
        raise ValueError(f"a TimeGrid's times must decrease strictly (no zero-length step); times[{k}] = "
                         f"{float(times[k])!r} is followed by {float(times[k + 1])!r}")
    if float(times[-1]) < 0:
        raise ValueError(f"a TimeGrid's times must be >= 0; the last is {float(times[-1])!r}")


def _betas_below_one(sampler: Sampler, grid: TimeGrid) -> None:
    if float(grid.betas.max()) >= 1.0:
        k = int(torch.nonzero(grid.betas >= 1.0)[0])
        raise ValueError(f"method {sampler.label!r} needs β < 1 on every step; step {k} has "
                         f"β = {float(grid.betas[k]):.4g} (on a bare grid β = Δt)")


# ᾱ is a normal float64 number down to 2.2e-308, i.e. for -log ᾱ <= 708.396 (t on a bare grid, ᾱ = e^-t).
_SMALLEST_ALPHA_BAR = sys.float_info.min
_LARGEST_TIME = -math.log(_SMALLEST_ALPHA_BAR)
# 1 - e^-t is 0 in float64 for t <= 2^-53 (e^-t rounds to 1).
_SMALLEST_TIME = 2.0 ** -53


def _alpha_bars_normal(sampler: Sampler, grid: TimeGrid) -> None:
    """ᾱ a normal float64 number at every grid time: the method divides by ᾱ (ᾱ_from / ᾱ_to)."""
    bad = grid.alpha_bars < _SMALLEST_ALPHA_BAR  # NaN is not bad here: a grid holds no NaN ᾱ
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[-1])  # times decrease: the last bad point is the smallest bad time
        usable = grid.times[~bad]
        largest = f"{float(usable.max()):.6g}" if usable.numel() else "none"
        raise ValueError(f"method {sampler.label!r} divides by ᾱ, but ᾱ = {float(grid.alpha_bars[k]):.3g} at grid "
                         f"time t = {float(grid.times[k]):.6g} (and before) underflows in float64, the precision "
                         f"of the steps' coefficients (ᾱ below {_SMALLEST_ALPHA_BAR:.3g}, i.e. -log ᾱ > "
                         f"{_LARGEST_TIME:.6g}; on a bare grid ᾱ = e^-t); start the grid at a time with "
                         f"-log ᾱ <= {_LARGEST_TIME:.6g} (the largest usable time of this grid is {largest})")


def _alpha_bars_below_one(sampler: Sampler, grid: TimeGrid) -> None:
    """1 - ᾱ > 0 at every step's start: the method divides by sqrt(1 - ᾱ_from)."""
    bad = grid.alpha_bars[:-1] >= 1.0
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0])
        raise ValueError(f"method {sampler.label!r} divides by sqrt(1 - ᾱ) at each step's start, but at grid time "
                         f"t = {float(grid.times[k]):.3g} (step {k}) ᾱ rounds to 1 in float64, so 1 - ᾱ = 0 "
                         f"(on a bare grid ᾱ = e^-t, which rounds to 1 for t <= {_SMALLEST_TIME:.3g}); give the "
                         f"grid no time in (0, {_SMALLEST_TIME:.3g}] before its last")


_GRID_CHECKS = {"betas_below_one": _betas_below_one, "alpha_bars_normal": _alpha_bars_normal,
                "alpha_bars_below_one": _alpha_bars_below_one}


def check_grid(sampler: Sampler, grid: TimeGrid, score: Score) -> None:
    """What the method declares it needs of the grid, checked once before any step; and a
    method that evaluates the score at the grid's end refused at t = 0 for a score singular there."""
    for need in sampler.grid_needs:
        _GRID_CHECKS[need](sampler, grid)
    if sampler.evaluates_at_end and grid.t_min == 0.0 and is_singular_at_zero(score):
        raise ValueError(f"method {sampler.name!r} with options {dict(sampler.options)} evaluates the score at the "
                         f"grid's last time t = 0, where {type(score).__name__} is singular "
                         f"(s = -ε / sqrt(1 - e^-t)); end the grid at t_min > 0 (e.g. t_min=1e-3)")


def _make_generator(generator: Union[torch.Generator, int, None], device: torch.device) -> torch.Generator | None:
    """``generator`` itself (checked to be on ``device``), a new one seeded with an int seed in
    [0, 2^64) (torch's seed range), or None."""
    if generator is None:
        return None
    if isinstance(generator, bool) or not isinstance(generator, (Integral, torch.Generator)):
        raise ArgumentTypeError(f"generator must be a torch.Generator, an int seed in [0, 2**64) or None, got "
                                f"{type(generator).__name__}")
    if isinstance(generator, Integral):
        if not 0 <= generator < 2 ** 64:
            raise ValueError(f"generator must be a torch.Generator, None or an int seed in [0, 2**64) "
                             f"(torch's seed range), got {generator!r}")
        seeded = torch.Generator(device=device)
        seeded.manual_seed(int(generator))
        return seeded
    if torch.device(generator.device).type != device.type:
        raise ValueError(f"generator is on {generator.device} but sampling runs on {device}; "
                         f"pass a generator created with torch.Generator(device='{device}')")
    return generator


def sample(score: Score, method: Union[str, Sampler, tuple], schedule: BetaSchedule | None = None,
           grid: GridLike = None, n_samples: int | None = None, x_T: Tensor | None = None,
           t_min: float | None = None, generator: Union[torch.Generator, int, None] = None,
           return_path: bool = False, progress: bool = False, *, exact_times: bool = False,
           prior: str = "normal", device: Union[str, torch.device, None] = None, dtype: torch.dtype | None = None,
           dim: int | None = None, check_finite: bool = True, check_every: int = 100, return_info: bool = False,
           **options: Any):
    """Sample p_{t_min} by integrating the reverse problem from T down to t_min with one method.

    Args:
        score: ``score(x, t)`` = ∇ log p_t(x) at forward OU time t (an exact score,
            :class:`diffsde.EpsilonScore`, or any callable returning a tensor of x's shape (N, d));
            t is passed as a Python float. A plain callable declares no dimension, so give it
            ``x_T`` or ``dim`` (or give it a ``dim`` attribute, :func:`diffsde.protocols.declared_dim`).
            The output's shape is checked against x's at the first evaluation.
        method: a name or variant of :data:`diffsde.METHODS` ("vp", "ddpm", "em", "ode",
            "ode-heun", "torchsde", "torchsde-srk", "pc", ...), a ``(name, options)`` pair, or a
            configured :class:`diffsde.samplers.Sampler`.
        schedule: a :class:`BetaSchedule` whose grid is used (``times``, or ``exact_times``
            when ``exact_times=True``), stopped at ``t_min`` (default 0).
        grid: instead of a schedule, descending forward times from T to t_min (tensor,
            sequence or :class:`TimeGrid`). Neither given: the linear 1000-step schedule.
        n_samples: number of samples when ``x_T`` is not given.
        x_T: (N, d) starting points at time T; otherwise drawn from ``prior``.
        t_min: where a schedule's grid stops (see ``schedule``).
        generator: torch.Generator (on the sampling device) or an int seed in [0, 2^64) (torch's
            seed range); all noise comes from it, so the same generator state gives the same
            samples (bit-for-bit on the CPU).
        return_path: also return the states at every grid time, shape (n+1, N, d), T first.
        progress: show a tqdm bar over the steps.
        exact_times: use the schedule's exact times ``-log ᾱ_i`` (see ``schedule``).
        prior: "normal" (N(0, I), the default) or "exact" (the score's own p_T via
            ``score.sample(n, t=T)``; exact scores only).
        device: where to sample when ``x_T`` is not given (default: the generator's device
            or the CPU).
        dtype: the precision when ``x_T`` is not given (default float32): float32 or float64
            (results bit-for-bit reproducible), or float16 / bfloat16, for which the run carries
            the state, the noise and every update in float32, evaluates the score on the state
            rounded to that dtype, and returns the samples in it (:func:`integrate`). Grid and
            schedule coefficients are float64 whatever the dtype; integer and complex dtypes are
            refused.
        dim: the data dimension d when ``x_T`` is not given and the score declares none (a
            plain callable); when given it must agree with ``x_T`` and with the score's ``dim``.
        check_finite: raise :class:`NonFiniteSampleError` naming the method, step and time
            if the state becomes NaN or infinite; checked every ``check_every`` steps (no
            per-step host synchronisation) and pinned to the exact step by replaying the window.
        check_every: see ``check_finite``.
        return_info: also return a dict with the method, its label and options, number of
            steps, number of score evaluations ``nfe``, the declared orders, the grid and the
            wall time.
        **options: method options, e.g. ``variance`` ("ddpm"), ``solver``/``rtol``/``atol``
            ("ode", "torchsde"), ``adaptive``/``dt`` ("torchsde"), ``predictor``,
            ``corrector_steps``, ``snr``, ``step_size`` ("pc").

    Sampling records no autograd graph (it runs under ``torch.no_grad``): a learned score's
    graph over a thousand steps would keep every intermediate state alive.

    Returns:
        x (N, d); then the path if ``return_path``; then the info dict if ``return_info``.

    Raises:
        ValueError / TypeError: unknown method or option, an invalid grid (one whose ᾱ
            underflows float64, for a method that divides by it), a method that would evaluate an
            ε-based score at t = 0, mismatched shapes, devices or dtypes, an unknown dimension, a
            seed outside [0, 2^64), a score whose output does not have x's shape.
        NonFiniteSampleError: a NaN or infinite state (unless ``check_finite=False``).
    """
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
    sampler = resolve_method(method, **options)
    time_grid = resolve_grid(schedule, grid, t_min, exact_times)
    check_grid(sampler, time_grid, score)
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be an int >= 1, got {check_every!r}")
    x, gen = _initial_state(score, time_grid, n_samples, x_T, generator, prior, device, dtype, dim)

    started = time.perf_counter()
    with torch.no_grad():  # sampling never records an autograd graph (it would keep every step alive)
        x, path, nfe = integrate(sampler, score, time_grid, x, GeneratorNoise(gen), return_path=return_path,
                                 progress=progress, check_finite=check_finite, check_every=check_every)
    outputs: list = [x]
    if return_path:
        outputs.append(path)
    if return_info:
        outputs.append({"method": sampler.name, "label": sampler.label, "options": dict(sampler.options),
                        "steps": time_grid.n, "nfe": nfe, "weak_order": sampler.weak_order,
                        "strong_order": sampler.strong_order, "times": time_grid.times,
                        "wall_time_s": time.perf_counter() - started})
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def integrate(sampler: Sampler, score: Score, grid: TimeGrid, x: Tensor, noise, *, return_path: bool = False,
              progress: bool = False, check_finite: bool = True, check_every: int = 100):
    """Run ``sampler`` from ``x`` at grid.T to grid.t_min with noise from ``noise``; no checks of the
    arguments (:func:`sample` and :func:`diffsde.exact_output_law` make them).

    The one place every method's score is called through: the output of its first evaluation must
    have x's shape (a ValueError otherwise, rather than a silent broadcast). A float16 / bfloat16
    state is carried in float32 (noise and every update in float32, as mixed-precision training
    keeps its master weights), the score is evaluated on it rounded to the half dtype and read back
    in float32, and the result (and path) is returned in the half dtype.

    Returns:
        (x, path or None, nfe).
    """
    runner = sampler.runner or run_steps
    half = x.dtype if x.dtype in HALF_DTYPES else None
    checked = _CheckedScore(score, half)
    if half is None:
        return runner(sampler, checked, grid, x, noise, return_path, progress, check_finite, check_every)
    out, path, nfe = runner(sampler, checked, grid, x.float(), noise, return_path, progress, check_finite,
                            check_every)
    out = out.to(half)
    if check_finite and not bool(torch.isfinite(out).all()):
        raise NonFiniteSampleError(f"sampler {sampler.name!r} produced finite float32 samples that overflow {half} "
                                   f"(largest magnitude {torch.finfo(half).max:.4g}); sample in float32, or pass "
                                   f"check_finite=False to skip this check")
    return out, (path.to(half) if path is not None else None), nfe


class _CheckedScore:
    """The score as a run calls it: the first output checked to be a tensor of x's shape; with
    ``evaluate_in`` (a half dtype), evaluated on x rounded to it and read back in x's dtype."""

    __slots__ = ("score", "evaluate_in", "checked")

    def __init__(self, score: Score, evaluate_in: torch.dtype | None = None):
        self.score, self.evaluate_in, self.checked = score, evaluate_in, False

    def __call__(self, x: Tensor, t: Any) -> Tensor:
        if self.evaluate_in is None:
            value = self.score(x, t)
        else:
            value = self.score(x.to(self.evaluate_in), t)
        if not self.checked:
            _check_score_output(self.score, value, x)
            self.checked = True
        return value if self.evaluate_in is None else value.to(x.dtype)


def _check_score_output(score: Score, value: Any, x: Tensor) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"the score {type(score).__name__} returned {type(value).__name__}; score(x, t) must "
                        f"return a tensor of x's shape {tuple(x.shape)}")
    if value.shape != x.shape:
        raise ValueError(f"the score {type(score).__name__} returned shape {tuple(value.shape)} for x of shape "
                         f"{tuple(x.shape)}; score(x, t) must return x's shape (N, d) = {tuple(x.shape)}")


def _data_dim(score: Score, dim: int | None) -> int | None:
    """The dimension a run knows: ``dim`` (checked) and the score's declared one, which must agree."""
    declared = declared_dim(score)
    dim = check_int(dim, "dim", 1, none_ok=True)
    if dim is None:
        return declared
    if declared is not None and declared != dim:
        raise ValueError(f"dim = {dim} contradicts the score's declared dim = {declared} ({type(score).__name__})")
    return dim


def _check_dtype(dtype: Any) -> torch.dtype:
    if not isinstance(dtype, torch.dtype):
        raise ArgumentTypeError(f"dtype must be a torch.dtype (e.g. torch.float32), got {type(dtype).__name__} "
                                f"{dtype!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype (float16, bfloat16, float32, float64), got {dtype}")
    return dtype


def _initial_state(score, time_grid, n_samples, x_T, generator, prior, device, dtype, dim=None):
    known_dim = _data_dim(score, dim)
    if dtype is not None:
        _check_dtype(dtype)
    if x_T is not None:
        if n_samples is not None and n_samples != x_T.shape[0]:
            raise ValueError(f"n_samples = {n_samples} does not match x_T's batch size {x_T.shape[0]}")
        if dim is not None and isinstance(x_T, Tensor) and x_T.dim() >= 1 and x_T.shape[-1] != dim:
            raise ValueError(f"dim = {dim} contradicts x_T of shape {tuple(x_T.shape)} (d = {x_T.shape[-1]})")
        check_data(x_T, "x_T", dim=known_dim)
        if x_T.dim() != 2:
            raise ValueError(f"x_T must have shape (N, d), got {tuple(x_T.shape)}")
        if (device is not None and torch.device(device).type != x_T.device.type) or \
                (dtype is not None and dtype != x_T.dtype):
            raise ValueError(f"x_T is {x_T.dtype} on {x_T.device}, which contradicts device={device}, dtype={dtype}")
        if not bool(torch.isfinite(x_T).all()):
            raise ValueError("x_T contains NaN or infinite values")
        return x_T, _make_generator(generator, x_T.device)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"give x_T or n_samples (a positive int), got n_samples={n_samples!r}")
    if known_dim is None:
        raise ValueError(f"the score ({type(score).__name__}) declares no dimension (no dim attribute), so sample "
                         f"cannot draw x_T: pass dim=d (with n_samples), or x_T of shape (N, d)")
    if device is None:
        device = generator.device if isinstance(generator, torch.Generator) else "cpu"
    device = torch.device(device)
    dtype = dtype or torch.float32
    gen = _make_generator(generator, device)
    if prior == "normal":
        return torch.randn((n_samples, known_dim), generator=gen, device=device, dtype=dtype), gen
    if prior == "exact":
        if not isinstance(score, ExactScore):
            raise ValueError(f"prior='exact' needs an exact score (diffsde.protocols.ExactScore: .sample(n, t), "
                             f".log_prob, .mean_and_cov, .dim); {type(score).__name__} is not one")
        return score.sample(n_samples, t=time_grid.T, generator=gen, device=device, dtype=dtype), gen
    raise ValueError(f"prior must be 'normal' or 'exact', got {prior!r}")


def _no_noise(x: Tensor) -> Tensor:
    return x.new_empty((0,))


def run_steps(sampler: Sampler, score: Score, grid: TimeGrid, x: Tensor, noise, return_path: bool,
              progress: bool, check_finite: bool, check_every: int):
    """The one time loop of the fixed-grid methods: ``x, state = step(score, x, interval,
    noise_k, state)`` over the grid's intervals, T first."""
    step, count = sampler.step, sampler.noise_draws
    state = sampler.init(x, grid) if sampler.init is not None else None
    intervals = grid.intervals()
    path = [x] if return_path else None
    # For pinning a non-finite value to its step: the last checked step, state and noise state.
    saved = (0, x, state, noise.get_state()) if check_finite else None
    for interval in progress_bar(intervals, progress, len(intervals), sampler.name):
        draws = noise.draw(interval.index, count, x) if count else _no_noise(x)
        x, state = step(score, x, interval, draws, state)
        if path is not None:
            path.append(x)
        k = interval.index
        if check_finite and ((k + 1) % check_every == 0 or interval.is_last):
            if not bool(torch.isfinite(x).all()):
                _raise_non_finite(sampler, score, intervals, saved, noise)
            saved = (k + 1, x, state, noise.get_state())
    nfe = sampler.score_evals * grid.n
    return x, (torch.stack(path) if path is not None else None), nfe


def _raise_non_finite(sampler: Sampler, score: Score, intervals: list, saved, noise) -> None:
    """Replay the steps since the last finite check, one by one, to name the first bad step."""
    start, x, state, noise_state = saved
    noise.set_state(noise_state)
    bad = intervals[-1]
    for interval in intervals[start:]:
        draws = noise.draw(interval.index, sampler.noise_draws, x) if sampler.noise_draws else _no_noise(x)
        x, state = sampler.step(score, x, interval, draws, state)
        if not bool(torch.isfinite(x).all()):
            bad = interval
            break
    raise NonFiniteSampleError(
        f"sampler {sampler.name!r} produced non-finite values at step {bad.index} of {len(intervals)} "
        f"(forward time t = {bad.t_from:.6g} -> {bad.t_to:.6g}); check the score there, or pass "
        f"check_finite=False to skip this check")
