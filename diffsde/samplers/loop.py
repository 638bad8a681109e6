"""The entry point :func:`sample` and the one step loop of the fixed-grid methods.

Every method integrates from forward OU time T down to t_min over the same :class:`TimeGrid`
(:mod:`diffsde.samplers.grids`), so a comparison changes one thing at a time; a run may start
with the Tweedie start and end with a denoising step (:mod:`diffsde.samplers.ends`). The loop lives once (:func:`run_steps`); it
carries each method's solver state, takes noise from a noise source
(:mod:`diffsde.samplers.noise`) and checks finiteness every ``check_every`` steps without a
per-step host synchronisation. Methods with an external loop (torchsde, scipy) provide a
runner with the same signature (:func:`integrate` dispatches on the record, not the name).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Union

import torch
from torch import Tensor

from .._checks import check_bool, check_choice
from ..schedules import BetaSchedule, TimeGrid
from .ends import PRIORS, check_final, denoise, tweedie_start
from .errors import NonFiniteSampleError
from .grids import GridLike, check_grid, resolve_grid
from .chunks import CounterNoise, check_counter_range, chunk_count, run_chunks
from .noise import GeneratorNoise
from .progress import progress_bar
from .registry import Sampler, resolve_method
from .starts import HALF_DTYPES, checked_start, chunk_start, initial_state, is_seed

__all__ = ["sample", "integrate", "run_steps", "sample_chunks", "checked_run", "run_info", "HALF_DTYPES"]

Score = Callable[[Tensor, Any], Tensor]



def sample(score: Score, method: Union[str, Sampler, tuple], schedule: BetaSchedule | None = None,
           grid: GridLike = None, n_samples: int | None = None, x_T: Tensor | None = None,
           t_min: float | None = None, generator: Union[torch.Generator, int, None] = None,
           return_path: bool = False, progress: bool = False, *, exact_times: bool = False,
           prior: str = "normal", device: Union[str, torch.device, None] = None, dtype: torch.dtype | None = None,
           dim: int | None = None, check_finite: bool = True, check_every: int = 100, return_info: bool = False,
           final: str = "stop", capture: bool = False, **options: Any):
    """Sample p_{t_min} by integrating the reverse problem from T down to t_min with one method
    (and, with ``final="denoise"``, p_0 approximately, by one denoising step from t_min).

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
        generator: an int seed in [0, 2^64) (torch's seed range): counter-based noise
            (:mod:`diffsde.samplers.chunks`), sample i depends only on (seed, i) — the same for
            any n_samples and in any process of a distributed run (bit-for-bit on the CPU; see
            there for the methods whose last partial chunk reads its other rows); the samples are
            integrated in chunks of 16 384. Or a torch.Generator (on the sampling device): all
            noise comes from its sequential stream, one draw per step for the whole batch, so the
            same generator state and n_samples give the same samples. None: torch's global
            generator, sequentially.
        return_path: also return the states at every grid time, shape (n+1, N, d), T first (with
            ``final="denoise"``, (n+2, N, d): the denoised output last).
        progress: show a tqdm bar over the steps.
        exact_times: use the schedule's exact times ``-log ᾱ_i`` (see ``schedule``).
        prior: "normal" (N(0, I), the default), "exact" (the score's own p_T via
            ``score.sample(n, t=T)``; exact scores only) or "tweedie" (N(0, I) draws moved onto
            p_T's mean by one score evaluation, :func:`tweedie_start`; counted in the NFE; a given
            ``x_T`` is then read as the N(0, I) draw it moves). :data:`PRIORS`.
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
            steps, number of score evaluations ``nfe``, the declared orders, the grid, ``final``
            and the wall time.
        final: "stop" (default: return the state at the grid's t_min) or "denoise" (one more
            score evaluation: return Tweedie's ``E[x0 | x_{t_min}] = (x + σ² s(x, t_min)) / α`` with
            ``α = e^{-t_min/2}``, ``σ² = 1 - e^{-t_min}``, the denoised output at t = 0; needs
            t_min > 0). :data:`FINALS`.
        capture: run the fixed-grid loop as one CUDA graph (:mod:`diffsde.samplers.capture`):
            captured at the first call, replayed by later calls with the same score object,
            method, grid, shape, dtype and device (up to 8 graphs are kept, each holding its own
            memory pool: about the loop's working memory, twice the path with ``return_path``).
            The same samples, generator advance and NFE as ``capture=False`` from the same
            generator state (torch's CUDA generator is counter-based Philox, and a replay reads
            its seed and offset when it starts); the warm-up before a capture consumes none of
            the caller's noise. ``return_path`` works (the path is stacked inside the graph);
            the finiteness check runs once on the output, and a non-finite output is replayed
            eagerly to name the step. A prior of "tweedie" and ``final="denoise"`` stay eager
            (one evaluation each). Refused (ValueError) off CUDA, for a method with an external
            runner (torchsde, the adaptive ODE solvers), and with ``progress=True``. Pays where
            kernel launches, not arithmetic, set the pace: small N, many calls.
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
            seed outside [0, 2^64), a score whose output does not have x's shape, ``capture=True``
            where it cannot run (see ``capture``).
        NonFiniteSampleError: a NaN or infinite state (unless ``check_finite=False``).
        RuntimeError: ``capture=True`` with a score or step that a CUDA graph cannot hold (one
            that synchronises with the host, e.g. ``.item()`` or ``bool(tensor)``).
    """
    sampler, time_grid = checked_run(score, method, schedule, grid, t_min, exact_times, final, prior, x_T,
                                     check_every, options)
    capture = check_bool(capture, "capture")
    run_options = {"return_path": return_path, "check_finite": check_finite, "check_every": check_every,
                   "final": final, "start": "tweedie" if prior == "tweedie" else "given"}
    if is_seed(generator) and not capture:
        x_T, n, d, device, dtype = checked_start(score, n_samples, x_T, generator, prior, device, dtype, dim)
        started = time.perf_counter()
        x, path, nfe = sample_chunks(sampler, score, time_grid, range(chunk_count(n)), n, generator,
                                     chunk_start(score, time_grid, x_T, prior, d, device, dtype), progress,
                                     **run_options)
    else:
        x, gen = initial_state(score, time_grid, n_samples, x_T, generator, prior, device, dtype, dim)
        loop = None
        if capture:
            from .capture import captured_loop, check_capture  # imported here: capture imports this module

            check_capture(sampler, x, progress, gen)
            if is_seed(generator):
                raise ValueError("capture=True replays noise from a torch.Generator's Philox stream: pass "
                                 "generator=torch.Generator('cuda').manual_seed(seed) (an int seed selects "
                                 "counter-based noise, drawn chunk by chunk on the host, which a graph cannot hold)")
            loop = captured_loop(score, x.dtype)
        started = time.perf_counter()
        with torch.no_grad():  # sampling never records an autograd graph (it would keep every step alive)
            x, path, nfe = integrate(sampler, score, time_grid, x, GeneratorNoise(gen), progress=progress,
                                     loop=loop, **run_options)
    outputs: list = [x]
    if return_path:
        outputs.append(path)
    if return_info:
        outputs.append(run_info(sampler, time_grid, nfe, final, time.perf_counter() - started))
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def run_info(sampler: Sampler, grid: TimeGrid, nfe: int, final: str, wall_time_s: float) -> dict:
    """:func:`sample`'s ``return_info`` dict."""
    return {"method": sampler.name, "label": sampler.label, "options": dict(sampler.options), "steps": grid.n,
            "nfe": nfe, "weak_order": sampler.weak_order, "strong_order": sampler.strong_order,
            "times": grid.times, "final": final, "wall_time_s": wall_time_s}


def checked_run(score: Score, method, schedule, grid, t_min, exact_times: bool, final: str, prior: str,
                x_T: Tensor | None, check_every: int, options: dict) -> tuple[Sampler, TimeGrid]:
    """:func:`sample`'s checks of everything but the start and the noise: (the sampler, the grid)."""
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
    sampler = resolve_method(method, **options)
    time_grid = resolve_grid(schedule, grid, t_min, exact_times)
    check_grid(sampler, time_grid, score)
    check_final(final, time_grid)
    check_choice(prior, "prior", PRIORS)
    if x_T is not None and prior == "exact":
        raise ValueError("give x_T or prior='exact' (a draw from the score's p_T), not both")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be an int >= 1, got {check_every!r}")
    return sampler, time_grid


def integrate(sampler: Sampler, score: Score, grid: TimeGrid, x: Tensor, noise, *, return_path: bool = False,
              progress: bool = False, check_finite: bool = True, check_every: int = 100, final: str = "stop",
              start: str = "given", loop: Callable | None = None):
    """Run ``sampler`` from ``x`` at grid.T to grid.t_min with noise from ``noise``; no checks of the
    arguments (:func:`sample` and :func:`diffsde.exact_output_law` make them).

    The one place every method's score is called through: the output of its first evaluation must
    have x's shape (a ValueError otherwise, rather than a silent broadcast). A float16 / bfloat16
    state is carried in float32 (noise and every update in float32, as mixed-precision training
    keeps its master weights), the score is evaluated on it rounded to the half dtype and read back
    in float32, and the result (and path) is returned in the half dtype. With ``final="denoise"`` the
    state at t_min is denoised to t = 0 (:func:`denoise`), one more score evaluation, appended to the
    path as its last entry. With ``start="tweedie"`` x is first moved by :func:`tweedie_start` (one
    more evaluation; the path starts from the moved x). ``loop`` replaces :func:`run_steps` for a
    method without a runner (what ``sample(..., capture=True)`` passes, with its signature).

    Returns:
        (x, path or None, nfe).
    """
    runner = sampler.runner or loop or run_steps
    half = x.dtype if x.dtype in HALF_DTYPES else None
    checked = _CheckedScore(score, half)
    x = x if half is None else x.float()
    if start == "tweedie":
        x = tweedie_start(checked, x, grid.T)
    out, path, _ = runner(sampler, checked, grid, x, noise, return_path, progress, check_finite, check_every)
    if final == "denoise":
        out = denoise(checked, out, grid.t_min)
        if check_finite and not bool(torch.isfinite(out).all()):
            raise NonFiniteSampleError(f"the final denoising step from t = {grid.t_min:.6g} to 0 produced non-finite "
                                       f"values (sampler {sampler.name!r}); check the score there")
        if path is not None:
            path = torch.cat([path, out[None]])
    nfe = checked.calls  # what the run made (e.g. Heun's last step to σ = 0 is Euler: one call, not two)
    if half is None:
        return out, path, nfe
    out = out.to(half)
    if check_finite and not bool(torch.isfinite(out).all()):
        raise NonFiniteSampleError(f"sampler {sampler.name!r} produced finite float32 samples that overflow {half} "
                                   f"(largest magnitude {torch.finfo(half).max:.4g}); sample in float32, or pass "
                                   f"check_finite=False to skip this check")
    return out, (path.to(half) if path is not None else None), nfe


def sample_chunks(sampler: Sampler, score: Score, grid: TimeGrid, chunks: range, n_samples: int, seed: int,
                  initial: Callable, progress: bool = False, **run_options):
    """Run ``chunks`` of an ``n_samples`` set with counter-based noise keyed by ``seed``
    (:mod:`diffsde.samplers.chunks`), one :func:`integrate` per chunk; ``initial`` is :func:`chunk_start`'s.

    Returns:
        (x (the chunks' rows, d), path or None, nfe: the most evaluations a chunk made).
    """
    def run(x: Tensor, noise: CounterNoise, chunk_progress: bool):
        return integrate(sampler, score, grid, x, noise, progress=chunk_progress, **run_options)

    check_counter_range(n_samples, grid.n, sampler.noise_draws)
    with torch.no_grad():  # sampling never records an autograd graph (it would keep every step alive)
        return run_chunks(chunks, n_samples, seed, initial, run, progress, sampler.name, pad=sampler.row_wise)


class _CheckedScore:
    """The score as a run calls it: the first output checked to be a tensor of x's shape; with
    ``evaluate_in`` (a half dtype), evaluated on x rounded to it and read back in x's dtype. It
    counts its calls (``calls``): a run's NFE is what it evaluated, not a declared bound."""

    __slots__ = ("score", "evaluate_in", "checked", "calls")

    def __init__(self, score: Score, evaluate_in: torch.dtype | None = None):
        self.score, self.evaluate_in, self.checked, self.calls = score, evaluate_in, False, 0

    def __call__(self, x: Tensor, t: Any) -> Tensor:
        self.calls += 1
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
