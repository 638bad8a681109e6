"""Samplers of the reverse problem, all on one grid of forward OU times (DESIGN.md "Samplers share one grid").

Every method integrates from forward time T down to t_min over the same :class:`TimeGrid`,
so a comparison changes one thing at a time. Fixed-step methods are a *step*: a pure
function of (score, x, interval, noise) returning the next x. The time loop lives once
(:func:`_run_fixed_steps`), and the same steps drive :func:`diffsde.exact_output_law`.

Methods (``SAMPLERS``), with the weak order each has on this additive-noise problem:

* ``vp`` (1): seed 000's backward step ``x <- (x + s β) / sqrt(1 - β) + sqrt(β) z``.
* ``ddpm`` (1): Ho et al.'s ancestral step (seed 001, eqs. 8-9), σ² = β or β̃, no noise at the last step.
* ``em`` (1): Euler–Maruyama on the reverse SDE.
* ``ode`` (euler 1, heun 2, adaptive by tolerance): the probability-flow ODE.
* ``torchsde``: the reverse SDE handed to ``torchsde.sdeint``.
* ``pc``: a predictor step followed by Langevin corrector steps (Song et al. 2021).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._checks import TimeLike, check_data
from .schedules import BetaSchedule, Interval, TimeGrid
from .ddpm import reverse_mean_unchecked
from .scores import epsilon_from_score
from .sde import ProbabilityFlowODE, ReverseSDE, probability_flow_drift

__all__ = ["sample", "SAMPLERS", "NonFiniteSampleError", "langevin_step", "resolve_grid"]

Score = Callable[[Tensor, TimeLike], Tensor]


class NonFiniteSampleError(FloatingPointError):
    """A sampler produced NaN or infinite values; the message names the method, step and time."""


# --------------------------------------------------------------------------------------
# Pure steps. `noise` has shape (m, *x.shape): the m standard normal vectors of this step.
# --------------------------------------------------------------------------------------

def vp_step(score: Score, x: Tensor, interval: Interval, noise: Tensor) -> Tensor:
    """Seed 000, eq. "1.5 backward diffusion process sampling discrete, alt":
    ``x <- (x + s(x, t) β) / sqrt(1 - β) + sqrt(β) z`` at the step's larger time t."""
    beta = interval.beta
    scale = 1.0 / math.sqrt(1.0 - beta)
    # One new tensor, then in place on it: 3 passes over x instead of 5 (inputs untouched).
    out = x * scale
    out.add_(score(x, interval.t_from), alpha=beta * scale)
    return out.add_(noise[0], alpha=math.sqrt(beta))


def ddpm_step(score: Score, x: Tensor, interval: Interval, noise: Tensor, variance: str = "beta") -> Tensor:
    """Ho et al.'s ancestral step (seed 001, eqs. 8-9), driven by a score:
    ``ε = -sqrt(1 - ᾱ_t) s``, ``x <- (x - β / sqrt(1 - ᾱ_t) ε) / sqrt(α) + σ z`` with
    ``α = ᾱ_{t-1} ... = ᾱ_to / ᾱ_from``, ``β = 1 - α`` and ``σ² = β`` or
    ``β̃ = (1 - ᾱ_to) / (1 - ᾱ_from) β`` (eq. 6); no noise at the last step."""
    alpha_bar_from, alpha_bar_to = interval.alpha_bar_from, interval.alpha_bar_to
    eps = epsilon_from_score(score(x, interval.t_from), math.sqrt(1.0 - alpha_bar_from))
    mean = reverse_mean_unchecked(x, eps, alpha_bar_from, alpha_bar_to)
    if interval.is_last:
        return mean
    beta = 1.0 - alpha_bar_from / alpha_bar_to
    variance_value = beta if variance == "beta" else (1.0 - alpha_bar_to) / (1.0 - alpha_bar_from) * beta
    return mean + math.sqrt(variance_value) * noise[0]


def em_step(score: Score, x: Tensor, interval: Interval, noise: Tensor) -> Tensor:
    """Euler–Maruyama on the reverse SDE (seed 000, eq. "1.5 reverse diffusion process"; Song et al.
    2021, eq. 6 for the VP SDE with β = 1): ``x <- x + h (½ x + s(x, t)) + sqrt(h) z``."""
    h = interval.h
    # x + h (½ x + s) + sqrt(h) z as one new tensor and in-place updates on it (3 passes, not 6).
    out = x * (1.0 + 0.5 * h)
    out.add_(score(x, interval.t_from), alpha=h)
    return out.add_(noise[0], alpha=math.sqrt(h))


def ode_euler_step(score: Score, x: Tensor, interval: Interval, noise: Tensor) -> Tensor:
    """Euler on the probability-flow ODE (Song et al. 2021, eq. 13 with f = -½x, g = 1):
    ``x <- x + h (½ x + ½ s(x, t))``."""
    return x + interval.h * probability_flow_drift(x, score(x, interval.t_from))


def ode_heun_step(score: Score, x: Tensor, interval: Interval, noise: Tensor) -> Tensor:
    """Heun (explicit trapezoid; Karras et al. 2022, Algorithm 1) on the probability-flow ODE
    (Song et al. 2021, eq. 13): ``x̃ = x + h v(x, t)``, ``x <- x + ½ h (v(x, t) + v(x̃, t - h))``
    with ``v = ½ x + ½ s``; evaluates the score at both ends of the step."""
    h = interval.h
    velocity = probability_flow_drift(x, score(x, interval.t_from))
    predicted = x + h * velocity
    velocity_end = probability_flow_drift(predicted, score(predicted, interval.t_to))
    return x + (0.5 * h) * (velocity + velocity_end)


def langevin_step(x: Tensor, score_value: Tensor, step_size: Union[float, Tensor], noise: Tensor) -> Tensor:
    """One unadjusted Langevin step for p_t at fixed t: ``x <- x + ε s + sqrt(2 ε) z``, the
    Euler–Maruyama step of ``dx = s dτ + sqrt(2) dW`` (seed 000, eq. "langevin dynamics app2")."""
    root = math.sqrt(2.0 * step_size) if isinstance(step_size, float) else torch.sqrt(2.0 * step_size)
    return x + step_size * score_value + root * noise


def snr_step_size(score_value: Tensor, noise: Tensor, snr: float, alpha: float) -> Tensor:
    """Song et al. 2021 (Algorithm 5, VP): ``ε = 2 α (r ‖z‖ / ‖s‖)²`` with ‖·‖ the batch mean of
    per-sample norms; a 0-d tensor, computed without leaving the device.

    Where the score is zero everywhere (e.g. a freshly initialised ε-network) the rule would
    give an infinite step; there is nothing to correct toward, so the step size is 0 instead."""
    grad_norm = torch.linalg.vector_norm(score_value.reshape(score_value.shape[0], -1), dim=-1).mean()
    noise_norm = torch.linalg.vector_norm(noise.reshape(noise.shape[0], -1), dim=-1).mean()
    ratio = torch.where(grad_norm > 0, snr * noise_norm / grad_norm, torch.zeros_like(grad_norm))
    return 2.0 * alpha * ratio ** 2


# --------------------------------------------------------------------------------------
# Methods: what each declares (order, noise, where it evaluates) and how it runs.
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FixedStepMethod:
    """A fixed-step method: its pure step and what it declares about itself."""

    name: str
    step: Callable[..., Tensor]
    weak_order: float | None
    noise_count: int = 1
    evals_per_step: int = 1
    evaluates_at_end: bool = False
    description: str = ""


FIXED_STEPS: dict[str, FixedStepMethod] = {
    "vp": FixedStepMethod("vp", vp_step, 1.0, description="seed 000's discrete VP backward step"),
    "ddpm": FixedStepMethod("ddpm", ddpm_step, 1.0, description="Ho et al.'s ancestral step"),
    "em": FixedStepMethod("em", em_step, 1.0, description="Euler–Maruyama on the reverse SDE"),
    "ode-euler": FixedStepMethod("ode-euler", ode_euler_step, 1.0, noise_count=0,
                                 description="Euler on the probability-flow ODE"),
    "ode-heun": FixedStepMethod("ode-heun", ode_heun_step, 2.0, noise_count=0, evals_per_step=2,
                                evaluates_at_end=True, description="Heun on the probability-flow ODE"),
}

ODE_FIXED = {"euler": "ode-euler", "heun": "ode-heun"}
ODE_ADAPTIVE = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
TORCHSDE_SOLVERS = {  # name -> sde_type; additive noise makes Itô and Stratonovich agree
    "euler": "ito", "milstein": "ito", "srk": "ito",
    "midpoint": "stratonovich", "heun": "stratonovich", "reversible_heun": "stratonovich",
}


@dataclass
class Plan:
    """A resolved run: the fixed step (None for torchsde and the adaptive ODE), the keyword
    arguments of that step, the resolved options (for reports), whether the method evaluates
    the score at a step's end time, and the declared weak order (None where it has none)."""

    method: str
    fixed: FixedStepMethod | None
    step_options: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    evaluates_at_end: bool = False
    weak_order: float | None = None

    @classmethod
    def of(cls, method: str, fixed: FixedStepMethod, step_options: dict | None = None,
           options: dict | None = None) -> "Plan":
        return cls(method, fixed, step_options or {}, options or {}, fixed.evaluates_at_end, fixed.weak_order)


def _take(options: dict, allowed: dict, method: str) -> dict:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r} for method {method!r}; allowed: {sorted(allowed) or 'none'}")
    return {**allowed, **options}


def _plan_vp(options: dict) -> Plan:
    _take(options, {}, "vp")
    return Plan.of("vp", FIXED_STEPS["vp"])


def _plan_em(options: dict) -> Plan:
    _take(options, {}, "em")
    return Plan.of("em", FIXED_STEPS["em"])


def _plan_ddpm(options: dict) -> Plan:
    opts = _take(options, {"variance": "beta"}, "ddpm")
    if opts["variance"] not in ("beta", "beta_tilde"):
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {opts['variance']!r}")
    return Plan.of("ddpm", FIXED_STEPS["ddpm"], {"variance": opts["variance"]}, opts)


def _plan_ode(options: dict) -> Plan:
    opts = _take(options, {"solver": "euler", "rtol": 1e-5, "atol": 1e-5}, "ode")
    solver = opts["solver"]
    if solver in ODE_FIXED:
        if "rtol" in options or "atol" in options:
            raise TypeError(f"rtol/atol apply to the adaptive ODE solvers {list(ODE_ADAPTIVE)}, not to {solver!r}")
        return Plan.of("ode", FIXED_STEPS[ODE_FIXED[solver]], options={"solver": solver})
    if solver in ODE_ADAPTIVE:
        for name in ("rtol", "atol"):
            if isinstance(opts[name], bool) or not (isinstance(opts[name], (int, float)) and opts[name] > 0):
                raise ValueError(f"{name} must be a number > 0, got {opts[name]!r}")
        return Plan("ode", None, {}, opts, evaluates_at_end=True)
    raise ValueError(f"unknown ODE solver {solver!r}; choose from {sorted(ODE_FIXED)} (fixed step) "
                     f"or {list(ODE_ADAPTIVE)} (adaptive, scipy.integrate.solve_ivp)")


def _plan_torchsde(options: dict) -> Plan:
    opts = _take(options, {"solver": "euler", "adaptive": False, "rtol": 1e-3, "atol": 1e-3, "dt": None},
                 "torchsde")
    if opts["solver"] not in TORCHSDE_SOLVERS:
        raise ValueError(f"unknown torchsde solver {opts['solver']!r}; choose from {sorted(TORCHSDE_SOLVERS)}")
    if not opts["adaptive"] and (opts["dt"] is not None or "rtol" in options or "atol" in options):
        raise TypeError("dt, rtol and atol apply only with adaptive=True (fixed steps follow the grid)")
    # Euler and Milstein evaluate the drift at the left end of a step only; the others reach the end.
    at_end = opts["solver"] not in ("euler", "milstein") or bool(opts["adaptive"])
    orders = {"euler": 1.0, "milstein": 1.0, "srk": 1.0, "midpoint": 1.0, "heun": 1.0, "reversible_heun": 1.0}
    return Plan("torchsde", None, {}, opts, evaluates_at_end=at_end,
                weak_order=None if opts["adaptive"] else orders[opts["solver"]])


def _plan_pc(options: dict) -> Plan:
    predictor_name = options.get("predictor", "em")
    predictor_options = {k: v for k, v in options.items()
                         if k not in ("predictor", "corrector_steps", "snr", "step_size")}
    if predictor_name not in ("vp", "ddpm", "em", "ode"):
        raise ValueError(f"predictor must be one of 'vp', 'ddpm', 'em', 'ode' (fixed-step), got {predictor_name!r}")
    predictor = PLANNERS[predictor_name](predictor_options)
    if predictor.fixed is None:
        raise ValueError("the pc predictor must be a fixed-step method (ode solver 'euler' or 'heun')")
    corrector_steps = options.get("corrector_steps", 1)
    snr = options.get("snr", 0.16)
    step_size = options.get("step_size")
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an int >= 0, got {corrector_steps!r}")
    if isinstance(snr, bool) or not (isinstance(snr, (int, float)) and snr > 0):
        raise ValueError(f"snr must be a number > 0, got {snr!r}")
    if step_size is not None and (isinstance(step_size, bool) or
                                  not (isinstance(step_size, (int, float)) and step_size > 0)):
        raise ValueError(f"step_size must be None (Song et al.'s snr rule) or a number > 0, got {step_size!r}")
    fixed = predictor.fixed
    # A Langevin corrector with a step size that does not shrink with the grid leaves an O(ε)
    # bias at every time, so pc has no order in n unless corrector_steps = 0.
    method = FixedStepMethod("pc", pc_step, weak_order=None if corrector_steps else fixed.weak_order,
                             noise_count=fixed.noise_count + corrector_steps,
                             evals_per_step=fixed.evals_per_step + corrector_steps,
                             evaluates_at_end=corrector_steps > 0 or fixed.evaluates_at_end,
                             description=f"{fixed.name} predictor + {corrector_steps} Langevin corrector step(s)")
    step_options = {"predictor": fixed, "predictor_options": predictor.step_options,
                    "corrector_steps": corrector_steps, "snr": float(snr),
                    "step_size": None if step_size is None else float(step_size)}
    options_out = {"predictor": predictor_name, **predictor.options, "corrector_steps": corrector_steps,
                   "snr": snr, "step_size": step_size}
    return Plan.of("pc", method, step_options, options_out)


def pc_step(score: Score, x: Tensor, interval: Interval, noise: Tensor, *, predictor: FixedStepMethod,
            predictor_options: dict, corrector_steps: int, snr: float, step_size: float | None) -> Tensor:
    """Predictor–corrector (Song et al. 2021, Algorithm 1 with the predictor first): one predictor
    step to ``t_to``, then ``corrector_steps`` Langevin steps for p_{t_to}, each with step size
    ``step_size`` or Song's snr rule ``ε = 2 α (r ‖z‖ / ‖s‖)²`` with ``α = ᾱ_to / ᾱ_from``."""
    count = predictor.noise_count
    x = predictor.step(score, x, interval, noise[:count], **predictor_options)
    alpha = interval.alpha_bar_from / interval.alpha_bar_to
    for j in range(corrector_steps):
        z = noise[count + j]
        score_value = score(x, interval.t_to)
        epsilon = step_size if step_size is not None else snr_step_size(score_value, z, snr, alpha)
        x = langevin_step(x, score_value, epsilon, z)
    return x


PLANNERS: dict[str, Callable[[dict], Plan]] = {
    "vp": _plan_vp,
    "ddpm": _plan_ddpm,
    "em": _plan_em,
    "ode": _plan_ode,
    "torchsde": _plan_torchsde,
    "pc": _plan_pc,
}
SAMPLERS = tuple(PLANNERS)


def plan(method: str, options: dict) -> Plan:
    """Resolve a method name and its options, refusing unknown ones clearly."""
    if method not in PLANNERS:
        raise ValueError(f"unknown method {method!r}; choose from {list(PLANNERS)}")
    return PLANNERS[method](dict(options))


# --------------------------------------------------------------------------------------
# The entry point.
# --------------------------------------------------------------------------------------

def resolve_grid(schedule: BetaSchedule | None = None, grid: Union[TimeGrid, Tensor, Sequence[float], None] = None,
                 t_min: float | None = None, exact_times: bool = False) -> TimeGrid:
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


def check_grid_for(plan_: Plan, grid: TimeGrid, score: Score) -> None:
    """Method-specific checks of a grid, once, before any step."""
    if plan_.method in ("vp",) or (plan_.method == "pc" and plan_.step_options["predictor"].name == "vp"):
        if float(grid.betas.max()) >= 1.0:
            k = int(torch.nonzero(grid.betas >= 1.0)[0])
            raise ValueError(f"method 'vp' needs β < 1 on every step; step {k} has β = {float(grid.betas[k]):.4g} "
                             f"(on a bare grid β = Δt)")
    if plan_.evaluates_at_end and grid.t_min == 0.0 and getattr(score, "singular_at_zero", False):
        raise ValueError(f"method {plan_.method!r} with options {plan_.options} evaluates the score at the grid's "
                         f"last time t = 0, where {type(score).__name__} is singular (s = -ε / sqrt(1 - e^-t)); "
                         f"end the grid at t_min > 0 (e.g. t_min=1e-3)")


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


def sample(score: Score, method: str, schedule: BetaSchedule | None = None,
           grid: Union[TimeGrid, Tensor, Sequence[float], None] = None, n_samples: int | None = None,
           x_T: Tensor | None = None, t_min: float | None = None, generator: Union[torch.Generator, int, None] = None,
           return_path: bool = False, progress: bool = False, *, exact_times: bool = False,
           prior: str = "normal", device: Union[str, torch.device, None] = None, dtype: torch.dtype | None = None,
           check_finite: bool = True, check_every: int = 100, return_info: bool = False, **options: Any):
    """Sample p_{t_min} by integrating the reverse problem from T down to t_min with one method.

    Args:
        score: ``score(x, t)`` = ∇ log p_t(x) at forward OU time t (an exact score,
            :class:`diffsde.EpsilonScore`, or any callable); t is passed as a Python float.
        method: one of ``SAMPLERS``: "vp", "ddpm", "em", "ode", "torchsde", "pc".
        schedule: a :class:`BetaSchedule` whose grid is used (seed-000 ``times``, or
            ``exact_times`` when ``exact_times=True``), stopped at ``t_min`` (default 0).
        grid: instead of a schedule, descending forward times from T to t_min (tensor,
            sequence or :class:`TimeGrid`). Neither given: the linear 1000-step schedule.
        n_samples: number of samples when ``x_T`` is not given.
        x_T: (N, d) starting points at time T; otherwise drawn from ``prior``.
        generator: torch.Generator (on the sampling device) or int seed; all noise comes from it,
            so the same generator state gives the same samples (bit-for-bit on the CPU).
        return_path: also return the states at every grid time, shape (n+1, N, d), T first.
        progress: show a tqdm bar over the steps.
        prior: "normal" (N(0, I), the default) or "exact" (the score's own p_T via
            ``score.sample(n, t=T)``; exact scores only).
        device: where to sample when ``x_T`` is not given (default: the generator's device
            or the CPU).
        dtype: the precision when ``x_T`` is not given (default float32).
        check_finite: raise :class:`NonFiniteSampleError` naming the method, step and time
            if the state becomes NaN or infinite; checked every ``check_every`` steps (no
            per-step host synchronisation) and pinned to the exact step by replaying the window.
        return_info: also return a dict with the method, options, number of steps, number of
            score evaluations ``nfe``, the grid and the wall time.
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
    run_plan = plan(method, options)
    time_grid = resolve_grid(schedule, grid, t_min, exact_times)
    check_grid_for(run_plan, time_grid, score)
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be an int >= 1, got {check_every!r}")
    x, gen = _initial_state(score, time_grid, n_samples, x_T, generator, prior, device, dtype)

    started = time.perf_counter()
    runner = _run_fixed_steps if run_plan.fixed is not None else _RUNNERS[run_plan.method]
    with torch.no_grad():  # sampling never records an autograd graph (it would keep every step alive)
        x, path, nfe = runner(score, run_plan, time_grid, x, gen, return_path, progress, check_finite, check_every)
    outputs: list = [x]
    if return_path:
        outputs.append(path)
    if return_info:
        outputs.append({"method": run_plan.method, "options": run_plan.options, "steps": time_grid.n, "nfe": nfe,
                        "weak_order": run_plan.weak_order, "times": time_grid.times,
                        "wall_time_s": time.perf_counter() - started})
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _initial_state(score, time_grid, n_samples, x_T, generator, prior, device, dtype):
    if x_T is not None:
        if n_samples is not None and n_samples != x_T.shape[0]:
            raise ValueError(f"n_samples = {n_samples} does not match x_T's batch size {x_T.shape[0]}")
        check_data(x_T, "x_T", dim=getattr(score, "dim", None))
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
    dim = getattr(score, "dim", None)
    if not isinstance(dim, int):
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
        if not hasattr(score, "sample"):
            raise ValueError(f"prior='exact' needs a score with .sample(n, t) (an exact score); "
                             f"{type(score).__name__} has none")
        return score.sample(n_samples, t=time_grid.T, generator=gen, device=device, dtype=dtype), gen
    raise ValueError(f"prior must be 'normal' or 'exact', got {prior!r}")


def _progress(iterable, enabled: bool, total: int, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def _noise(gen, count: int, x: Tensor) -> Tensor:
    return torch.randn((count,) + tuple(x.shape), generator=gen, device=x.device, dtype=x.dtype)


def _run_fixed_steps(score, run_plan: Plan, time_grid: TimeGrid, x: Tensor, gen, return_path: bool,
                     progress: bool, check_finite: bool, check_every: int):
    """The one time loop of the fixed-step methods."""
    step, step_options, count = run_plan.fixed.step, run_plan.step_options, run_plan.fixed.noise_count
    intervals = time_grid.intervals()
    path = [x] if return_path else None
    # For pinning a non-finite value to its step: the last checked state and generator state.
    saved = (0, x, gen.get_state() if gen is not None else None) if check_finite else None
    for interval in _progress(intervals, progress, len(intervals), run_plan.method):
        noise = _noise(gen, count, x) if count else x.new_empty((0,))
        x = step(score, x, interval, noise, **step_options)
        if path is not None:
            path.append(x)
        k = interval.index
        if check_finite and ((k + 1) % check_every == 0 or interval.is_last):
            if not bool(torch.isfinite(x).all()):
                _raise_non_finite(score, run_plan, intervals, saved, gen)
            saved = (k + 1, x, gen.get_state() if gen is not None else None)
    return x, (torch.stack(path) if path is not None else None), run_plan.fixed.evals_per_step * time_grid.n


def _raise_non_finite(score, run_plan: Plan, intervals: list, saved, gen) -> None:
    """Replay the steps since the last finite check, one by one, to name the first bad step."""
    start, x, state = saved
    if gen is not None:
        gen.set_state(state)
    count = run_plan.fixed.noise_count
    bad = intervals[-1]
    for interval in intervals[start:]:
        noise = _noise(gen, count, x) if count else x.new_empty((0,))
        x = run_plan.fixed.step(score, x, interval, noise, **run_plan.step_options)
        if not bool(torch.isfinite(x).all()):
            bad = interval
            break
    raise NonFiniteSampleError(
        f"sampler {run_plan.method!r} produced non-finite values at step {bad.index} of {len(intervals)} "
        f"(forward time t = {bad.t_from:.6g} -> {bad.t_to:.6g}); check the score there, or pass "
        f"check_finite=False to skip this check")


def _check_final(run_plan: Plan, x: Tensor, time_grid: TimeGrid, check_finite: bool) -> None:
    if check_finite and not bool(torch.isfinite(x).all()):
        raise NonFiniteSampleError(f"sampler {run_plan.method!r} with options {run_plan.options} produced "
                                   f"non-finite values by the end of integration (t = {time_grid.t_min:.6g})")


def _run_ode_adaptive(score, run_plan: Plan, time_grid: TimeGrid, x: Tensor, gen, return_path: bool,
                      progress: bool, check_finite: bool, check_every: int):
    """The probability-flow ODE by ``scipy.integrate.solve_ivp`` in backward time t' = T - t, on the
    whole batch as one state vector (so the error control is shared across samples)."""
    from scipy.integrate import solve_ivp

    ode = ProbabilityFlowODE(score, time_grid.T)
    shape, device, dtype = x.shape, x.device, x.dtype
    counter = {"nfe": 0}

    def velocity(t_prime: float, y: np.ndarray) -> np.ndarray:
        counter["nfe"] += 1
        state = torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)
        out = ode.drift(state, min(max(float(t_prime), 0.0), ode.T))
        return out.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(-1)

    backward_times = (time_grid.T - time_grid.times).numpy()
    backward_times[0], backward_times[-1] = 0.0, time_grid.T - time_grid.t_min
    solution = solve_ivp(velocity, (0.0, float(backward_times[-1])), x.detach().cpu().double().numpy().reshape(-1),
                         method=run_plan.options["solver"], rtol=run_plan.options["rtol"],
                         atol=run_plan.options["atol"], t_eval=backward_times if return_path else None)
    if not solution.success:
        raise RuntimeError(f"ode solver {run_plan.options['solver']!r} failed: {solution.message}")
    final = torch.from_numpy(solution.y[:, -1].copy()).reshape(shape).to(device=device, dtype=dtype)
    _check_final(run_plan, final, time_grid, check_finite)
    path = None
    if return_path:
        path = torch.from_numpy(solution.y.T.copy()).reshape((-1,) + tuple(shape)).to(device=device, dtype=dtype)
    return final, path, counter["nfe"]


class _CountingScore:
    """Counts score evaluations (for methods whose inner loop is not ours) and repeats the
    last one when asked again at the same (x, t): ``torchsde.sdeint`` evaluates the drift at
    its first point once to check shapes and again in its first step."""

    def __init__(self, score):
        self.score, self.count, self._last = score, 0, None

    def __call__(self, x, t):
        key = (x, x._version, float(t))
        if self._last is not None and self._last[0] is x and self._last[1:3] == key[1:]:
            return self._last[3]
        self.count += 1
        value = self.score(x, t)
        self._last = (*key, value)
        return value


def _is_uniform(times: Tensor) -> bool:
    steps = times[:-1] - times[1:]
    return float(steps.max() - steps.min()) <= 1e-12 * float(steps.max())


def _run_torchsde(score, run_plan: Plan, time_grid: TimeGrid, x: Tensor, gen, return_path: bool,
                  progress: bool, check_finite: bool, check_every: int):
    """The reverse SDE by ``torchsde.sdeint`` in backward time t' = T - t.

    Fixed steps land exactly on the grid: one sdeint call with ``dt = Δt`` when the grid is
    uniform; otherwise one call per interval, each with its own Brownian increment over that
    interval (sdeint alone steps with a constant dt and interpolates, and one Brownian tree
    queried at every non-dyadic grid point is slow at large batch). ``adaptive=True`` makes
    one call with torchsde's error control. Noise comes from ``gen`` through the Brownian
    motions' entropy, so runs are reproducible.
    """
    import torchsde

    opts = run_plan.options
    counting = _CountingScore(score)
    sde = ReverseSDE(counting, time_grid.T, sde_type=TORCHSDE_SOLVERS[opts["solver"]], noise_type="additive")
    flat = x.reshape(x.shape[0], -1)
    backward = (time_grid.T - time_grid.times).tolist()
    backward[0], backward[-1] = 0.0, time_grid.T - time_grid.t_min
    levy = "space-time" if opts["solver"] == "srk" else "none"

    def brownian(t0: float, t1: float, dt: float):
        entropy = None if gen is None else int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
        return torchsde.BrownianInterval(t0=t0, t1=t1, size=flat.shape, dtype=x.dtype, device=x.device,
                                         entropy=entropy, dt=dt, levy_area_approximation=levy)

    def integrate(y0: Tensor, ts: list, dt: float, **extra) -> Tensor:
        times = torch.tensor(ts, dtype=torch.float64, device=x.device)
        return torchsde.sdeint(sde, y0, times, dt=dt, bm=brownian(ts[0], ts[-1], dt), method=opts["solver"],
                               options={"grad_free": True} if opts["solver"] == "milstein" else None, **extra)

    with warnings.catch_warnings():
        # torchsde warns about adaptive Euler for non-additive noise; ours is additive.
        warnings.filterwarnings("ignore", message=".*adaptive time-stepping with the Euler.*")
        if opts["adaptive"]:
            ys = integrate(flat, backward if return_path else backward[::len(backward) - 1],
                           opts["dt"] or backward[-1] / time_grid.n, adaptive=True, rtol=opts["rtol"], atol=opts["atol"])
        elif _is_uniform(time_grid.times):
            # A hair over Δt so accumulated rounding never leaves a spurious last micro-step.
            step = backward[-1] / time_grid.n * (1 + 1e-12)
            ys = integrate(flat, backward if return_path else backward[::len(backward) - 1], step)
        else:
            states = [flat]
            for k in _progress(range(time_grid.n), progress, time_grid.n, "torchsde"):
                pair = backward[k:k + 2]
                states.append(integrate(states[-1], pair, pair[1] - pair[0])[-1])
                if not return_path:
                    states = states[-1:]
            ys = torch.stack(states)
    final = ys[-1].reshape(x.shape)
    _check_final(run_plan, final, time_grid, check_finite)
    path = ys.reshape((ys.shape[0],) + tuple(x.shape)) if return_path else None
    return final, path, counting.count


_RUNNERS = {"ode": _run_ode_adaptive, "torchsde": _run_torchsde}
