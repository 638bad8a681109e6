"""The entry point :func:`sample` and the one step loop of the fixed-grid methods.

Every method integrates from forward OU time T down to t_min over the same :class:`TimeGrid`,
so a comparison changes one thing at a time. The loop lives once (:func:`run_steps`); it
carries each method's solver state, takes noise from a noise source
(:mod:`diffsde.samplers.noise`) and checks finiteness every ``check_every`` steps without a
per-step host synchronisation. Methods with an external loop (torchsde, scipy) provide a
runner with the same signature (:func:`integrate` dispatches on the record, not the name).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence, Union

import torch
from torch import Tensor

from .._checks import check_data
from ..protocols import ExactScore, declared_dim, is_singular_at_zero
from ..schedules import BetaSchedule, TimeGrid
from .errors import NonFiniteSampleError
from .noise import GeneratorNoise
from .progress import progress_bar
from .registry import Sampler, resolve_method

__all__ = ["sample", "integrate", "run_steps", "resolve_grid", "check_grid"]

Score = Callable[[Tensor, Any], Tensor]
GridLike = Union[TimeGrid, Tensor, Sequence[float], None]


def resolve_grid(schedule: BetaSchedule | None = None, grid: GridLike = None, t_min: float | None = None,
                 exact_times: bool = False) -> TimeGrid:
    """The grid a run uses: ``grid`` as given, or ``schedule.grid(t_min, exact_times)``, or
    the linear 1000-step schedule's grid when neither is given."""
    if grid is not None and schedule is not None:
        raise ValueError("give either schedule or grid, not both")
    if grid is not None:
        if t_min is not None or exact_times:
            raise ValueError("t_min and exact_times apply to a schedule; a grid already ends at its own t_min")
        return grid if isinstance(grid, TimeGrid) else TimeGrid.from_times(grid)
    if schedule is None:
        schedule = BetaSchedule.linear(1000)
    if not isinstance(schedule, BetaSchedule):
        raise TypeError(f"schedule must be a BetaSchedule, got {type(schedule).__name__}")
    return schedule.grid(t_min=0.0 if t_min is None else t_min, exact_times=exact_times)


def _betas_below_one(sampler: Sampler, grid: TimeGrid) -> None:
    if float(grid.betas.max()) >= 1.0:
        k = int(torch.nonzero(grid.betas >= 1.0)[0])
        raise ValueError(f"method {sampler.label!r} needs β < 1 on every step; step {k} has "
                         f"β = {float(grid.betas[k]):.4g} (on a bare grid β = Δt)")


_GRID_CHECKS = {"betas_below_one": _betas_below_one}


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
    if generator is None:
        return None
    if isinstance(generator, bool) or not isinstance(generator, (int, torch.Generator)):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    if isinstance(generator, int):
        seeded = torch.Generator(device=device)
        seeded.manual_seed(generator)
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
           check_finite: bool = True, check_every: int = 100, return_info: bool = False, **options: Any):
    """Sample p_{t_min} by integrating the reverse problem from T down to t_min with one method.

    Args:
        score: ``score(x, t)`` = ∇ log p_t(x) at forward OU time t (an exact score,
            :class:`diffsde.EpsilonScore`, or any callable); t is passed as a Python float.
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
        generator: torch.Generator (on the sampling device) or int seed; all noise comes from it,
            so the same generator state gives the same samples (bit-for-bit on the CPU).
        return_path: also return the states at every grid time, shape (n+1, N, d), T first.
        progress: show a tqdm bar over the steps.
        exact_times: use the schedule's exact times ``-log ᾱ_i`` (see ``schedule``).
        prior: "normal" (N(0, I), the default) or "exact" (the score's own p_T via
            ``score.sample(n, t=T)``; exact scores only).
        device: where to sample when ``x_T`` is not given (default: the generator's device
            or the CPU).
        dtype: the precision when ``x_T`` is not given (default float32).
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
        ValueError / TypeError: unknown method or option, an invalid grid, a method that
            would evaluate an ε-based score at t = 0, mismatched shapes, devices or dtypes.
        NonFiniteSampleError: a NaN or infinite state (unless ``check_finite=False``).
    """
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
    sampler = resolve_method(method, **options)
    time_grid = resolve_grid(schedule, grid, t_min, exact_times)
    check_grid(sampler, time_grid, score)
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be an int >= 1, got {check_every!r}")
    x, gen = _initial_state(score, time_grid, n_samples, x_T, generator, prior, device, dtype)

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

    Returns:
        (x, path or None, nfe).
    """
    runner = sampler.runner or run_steps
    return runner(sampler, score, grid, x, noise, return_path, progress, check_finite, check_every)


def _initial_state(score, time_grid, n_samples, x_T, generator, prior, device, dtype):
    if x_T is not None:
        if n_samples is not None and n_samples != x_T.shape[0]:
            raise ValueError(f"n_samples = {n_samples} does not match x_T's batch size {x_T.shape[0]}")
        check_data(x_T, "x_T", dim=declared_dim(score))
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
    dim = declared_dim(score)
    if dim is None:
        raise ValueError("the score does not declare its dimension (score.dim); pass x_T of shape (N, d)")
    if device is None:
        device = generator.device if isinstance(generator, torch.Generator) else "cpu"
    device = torch.device(device)
    dtype = dtype or torch.float32
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    gen = _make_generator(generator, device)
    if prior == "normal":
        return torch.randn((n_samples, dim), generator=gen, device=device, dtype=dtype), gen
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
