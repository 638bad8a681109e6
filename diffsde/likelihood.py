"""log p_0(x) through the probability-flow ODE: the instantaneous change of variables (Chen et al.
2018, "Neural Ordinary Differential Equations", Thm. 1) applied to the flow of Song et al. 2021
("Score-Based Generative Modeling through SDEs", §4.3 and App. D.2).

Along the OU's probability-flow ODE in forward time, ``dx/dt = v(x, t) = -½ x - ½ s(x, t)``, the
continuity equation gives ``d/dt log p_t(x(t)) = -∇·v(x(t), t)``, so for the flow started at data x:

    log p_{t_min}(x) = log p_T(x_T) + ∫_{t_min}^{T} ∇·v(x(t), t) dt,   ∇·v = -d/2 - ½ tr ∇s.

:func:`log_likelihood` integrates x and the divergence's integral together by an adaptive
Runge–Kutta pair on the data's device (:mod:`diffsde.odeint`), then adds the prior's log-density
at x_T (N(0, I), or the exact p_T of a score with a closed form) and, where the score has one,
the exact ``log p_0(x) - log p_{t_min}(x)``. The divergence is the Jacobian's trace, computed
exactly by ``torch.func`` (one forward pass and d vectorized backward passes, no Python loop) or
in closed form by a score that offers ``score_and_divergence`` (the exact mixture scores), or
estimated by Hutchinson's (1989) / Skilling's (1989) trace estimator ``E[εᵀ J ε]`` with Rademacher
or Gaussian probes held fixed along the trajectory (as in FFJORD, Grathwohl et al. 2019), whose
standard error over the probes is returned.

Where this differs from score_sde's ``likelihood.py`` (Song et al.'s reference code): the prior
may be the exact p_T (theirs is always N(0, I), which at T = 10.05 misses p_T's mean e^{-T/2} μ);
the error control is per element, in the data's dtype (theirs RMS over the batch, in float32);
several probes give a standard error; the result is a continuous density in nats (no
dequantization offset for 8-bit images) with bits/dim = nats / (d log 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ._checks import check_choice, check_data, check_int, check_output, check_real
from .odeint import ADAPTIVE_SOLVERS, FIXED_SOLVERS, ODE_SOLVERS, ODEFailure, check_tolerances, solve
from .processes import probability_flow_drift
from .protocols import Score, declared_dim, is_singular_at_zero
from .samplers.errors import NonFiniteSampleError
from .schedules import BetaSchedule, TimeGrid

__all__ = ["Likelihood", "log_likelihood", "velocity_divergence", "DIVERGENCES", "PROBES", "EXACT_DIVERGENCE_MAX_DIM",
           "DEFAULT_T", "SINGULAR_T_MIN"]

DIVERGENCES = ("auto", "exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
PRIORS = ("normal", "exact")
T_MIN_CORRECTIONS = ("auto", "exact", "none")

EXACT_DIVERGENCE_MAX_DIM = 32
"""``divergence="auto"`` takes the exact trace up to this d (d backward passes per evaluation),
Hutchinson's estimate above it."""

DEFAULT_T = BetaSchedule.linear().T
"""The default end time: the linear schedule's T = 10.05 (Song et al. 2021's VP SDE at s = 1)."""

SINGULAR_T_MIN = 1e-5
"""The default t_min for a score that declares ``singular_at_zero`` (a network's s = -ε/σ): score_sde's
``eps = 1e-5``. A score finite at 0 (an exact one) starts at t_min = 0."""

Velocity = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Likelihood:
    """What :func:`log_likelihood` measured, per sample (N,) and averaged.

    Attributes:
        log_prob: (N,) the estimate of log p_0(x) in nats (of log p_{t_min}(x) when no t_min
            correction was added): ``prior_log_prob + delta_log_prob (+ t_min_correction)``.
        log_prob_se: (N,) Hutchinson's standard error of each ``log_prob`` over its probes
            (std / sqrt(probes)); None with the exact divergence or a single probe.
        prior_log_prob: (N,) the prior's log-density at x_T.
        delta_log_prob: (N,) ``∫_{t_min}^{T} ∇·v dt`` along each trajectory (the mean over probes).
        t_min_correction: (N,) the exact ``log p_0(x) - log p_{t_min}(x)`` that was added, or None.
        prior_mismatch: (N,) ``log N(x_T; 0, I) - log p_T(x_T)`` where the score has a closed-form
            p_T (what the N(0, I) prior gets wrong), else None.
        x_T: (N, d) the end of the flow (the latent code).
        nfe: velocity evaluations (each one score evaluation, and its Jacobian's trace or probes).
        dim: the data dimension d.
        T, t_min: the OU times integrated between.
        prior, divergence, probes, solver, rtol, atol: the settings used (``probes`` 0 for the exact
            divergence).
    """

    log_prob: Tensor
    log_prob_se: Tensor | None
    prior_log_prob: Tensor
    delta_log_prob: Tensor
    t_min_correction: Tensor | None
    prior_mismatch: Tensor | None
    x_T: Tensor
    nfe: int
    dim: int
    T: float
    t_min: float
    prior: str
    divergence: str
    probes: int
    solver: str
    rtol: float
    atol: float

    @property
    def nats(self) -> float:
        """The negative log-likelihood averaged over the batch, in nats."""
        return float(-self.log_prob.double().mean())

    @property
    def bits_per_dim(self) -> float:
        """:attr:`nats` in bits per dimension, ``nats / (d log 2)``."""
        return self.nats / (self.dim * math.log(2))

    @property
    def standard_error(self) -> float:
        """Standard error of :attr:`nats` as an estimate of the data's expected NLL: the spread of
        ``log_prob`` over the batch / sqrt(N) (probe noise included, since probes are independent
        across samples); NaN for N = 1."""
        n = self.log_prob.shape[0]
        return float(self.log_prob.double().std() / math.sqrt(n)) if n > 1 else math.nan

    @property
    def probe_standard_error(self) -> float:
        """The part of :attr:`nats`'s error due to Hutchinson's probes alone,
        ``sqrt(Σ se_i²) / N``; 0 for the exact divergence, NaN for a single probe."""
        if self.divergence == "exact":
            return 0.0
        if self.log_prob_se is None:
            return math.nan
        return float(self.log_prob_se.double().square().sum().sqrt() / self.log_prob_se.shape[0])

    def to_dict(self) -> dict:
        """The scalar results and settings (no tensors), for JSON."""
        return {"nats": self.nats, "bits_per_dim": self.bits_per_dim, "standard_error": self.standard_error,
                "probe_standard_error": self.probe_standard_error, "nfe": self.nfe, "n": self.log_prob.shape[0],
                "dim": self.dim, "T": self.T, "t_min": self.t_min, "prior": self.prior,
                "divergence": self.divergence, "probes": self.probes, "solver": self.solver, "rtol": self.rtol,
                "atol": self.atol,
                "prior_mismatch": None if self.prior_mismatch is None else float(self.prior_mismatch.double().mean()),
                "t_min_correction": (None if self.t_min_correction is None
                                     else float(self.t_min_correction.double().mean()))}


def velocity_divergence(velocity: Velocity, x: Tensor, probes: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``velocity(x)`` and its divergence per sample, for a velocity that maps each sample on its own.

    Args:
        velocity: (N, d) -> (N, d), sample n's output depending on sample n's input only (no batch
            statistics), differentiable by ``torch.func``.
        x: (N, d).
        probes: None for the exact trace ``Σ_j ∂v_j/∂x_j`` (one forward pass, d backward passes
            vectorized by ``torch.func.vmap``); or (k, N, d) probes ε for Hutchinson's ``εᵀ J ε``.
    Returns:
        (v (N, d), the trace (N,)) or, with probes, (v, the k estimates (k, N)).
    """
    value, pullback = torch.func.vjp(velocity, x)
    if probes is None:
        n, d = x.shape
        basis = torch.eye(d, dtype=x.dtype, device=x.device).unsqueeze(1).expand(d, n, d)
        (rows,) = torch.func.vmap(pullback, chunk_size=_chunk(d, x))(basis)  # rows[j, n] = ∂v_j/∂x of sample n
        return value, rows.diagonal(dim1=0, dim2=2).sum(-1)
    (rows,) = torch.func.vmap(pullback, chunk_size=_chunk(probes.shape[0], x))(probes)  # εᵀ J, (k, N, d)
    return value, (rows * probes).sum(-1)


# Pull-backs vectorized together hold at most this many x-sized entries: on a CPU, 2 MiB of float64
# (a cache-sized working set: at N = 256, d = 64 the exact mixture's vectorized trace ran 2.9x faster
# in chunks of 4 than all 64 at once); elsewhere 128 MiB (a GPU wants wide batches).
_CHUNK_ELEMENTS = {"cpu": 2**18}
_CHUNK_ELEMENTS_ELSEWHERE = 2**24


def _chunk(count: int, x: Tensor) -> int | None:
    """How many of ``count`` pull-backs to vectorize at once (None: all), so that the vectorized
    backward pass, whose intermediates are that many times a single one's, stays bounded."""
    bound = _CHUNK_ELEMENTS.get(x.device.type, _CHUNK_ELEMENTS_ELSEWHERE)
    size = max(1, bound // max(1, x.numel()))
    return None if size >= count else size


def log_likelihood(score: Score, x: Tensor, *, T: float | None = None, t_min: float | None = None,
                   prior: str = "normal", divergence: str = "auto", probes: int = 4, probe: str = "rademacher",
                   generator: torch.Generator | None = None, solver: str = "dopri5", rtol: float = 1e-5,
                   atol: float = 1e-5, grid: TimeGrid | None = None, t_min_correction: str = "auto",
                   max_steps: int = 100_000) -> Likelihood:
    """log p_0(x) for each row of x under the probability-flow ODE of ``score`` (module docstring).

    Args:
        score: ``score(x, t)`` ≈ ∇ log p_t(x) at OU time t (a Python float), treating samples
            independently; differentiable by ``torch.func``.
        x: (N, d) data, floating, finite; the computation runs in its dtype and on its device
            (float64 for accuracy below ~1e-4 nats).
        T: where the flow ends (default :data:`DEFAULT_T` = 10.05).
        t_min: where it starts: default 0 for a score finite at t = 0, :data:`SINGULAR_T_MIN` for
            one that declares ``singular_at_zero``.
        prior: "normal" (N(0, I), as sampling starts) or "exact" (the score's closed-form p_T:
            then the only errors are the ODE's and, without a correction, t_min's).
        divergence: "exact", "hutchinson", or "auto": exact for d <= :data:`EXACT_DIVERGENCE_MAX_DIM`
            or for a score that offers ``score_and_divergence(x, t)`` (the trace in closed form, e.g.
            :class:`~diffsde.scores.GaussianMixtureScore`, which the exact divergence then uses).
        probes: Hutchinson's probes per sample, k >= 1 (each its own trajectory integral, one shared
            trajectory; k >= 2 gives a standard error). Unused by the exact divergence.
        probe: "rademacher" (±1, the smaller variance) or "gaussian".
        generator: the source of the probes (on x's device).
        solver: a torchdiffeq method: adaptive (:data:`diffsde.odeint.ADAPTIVE_SOLVERS`, default
            "dopri5") between t_min and T, or fixed-step (:data:`diffsde.odeint.FIXED_SOLVERS`) on ``grid``.
        rtol: the adaptive solver's relative tolerance per element, in (0, 1).
        atol: its absolute tolerance per element, in (0, 1).
        grid: the times of a fixed-step solver (a :class:`TimeGrid`, descending from T to t_min; T and
            t_min are then its own, so leave them None).
        t_min_correction: "exact" adds the closed-form ``log p_0(x) - log p_{t_min}(x)`` (scores with
            a ``log_prob``), "none" reports log p_{t_min}(x), "auto" does the first where possible.
        max_steps: the adaptive solver's step budget.
    Returns:
        :class:`Likelihood` (log-probabilities in x's dtype on x's device; ``nats``, ``bits_per_dim``).
    Raises:
        ValueError / TypeError: each bad argument, named with what is allowed.
        NonFiniteSampleError: the velocity became NaN or infinite and the solver stopped.
    """
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
    check_data(x, "x")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, d) with N >= 1, got {tuple(x.shape)}")
    check_data(x, "x", dim=declared_dim(score))
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite, got a NaN or infinite entry")
    check_choice(prior, "prior", PRIORS)
    check_choice(divergence, "divergence", DIVERGENCES)
    check_choice(probe, "probe", PROBES)
    check_choice(solver, "solver", ODE_SOLVERS)
    check_choice(t_min_correction, "t_min_correction", T_MIN_CORRECTIONS)
    probes = check_int(probes, "probes", minimum=1)
    max_steps = check_int(max_steps, "max_steps", minimum=1)
    rtol, atol = check_tolerances(rtol, atol)
    closed_form = _closed_form(score)
    if prior == "exact" and closed_form is None:
        raise ValueError("prior='exact' needs a score with a closed-form p_T (a log_prob(x, t) method, e.g. "
                         f"GaussianMixtureScore); {type(score).__name__} has none: use prior='normal'")
    if t_min_correction == "exact" and closed_form is None:
        raise ValueError(f"t_min_correction='exact' needs a score with a closed-form log_prob(x, t); "
                         f"{type(score).__name__} has none: use 'none'")
    times, T, t_min = _times(score, solver, grid, T, t_min)
    n, d = x.shape
    score_and_divergence = _closed_form_divergence(score)
    if divergence == "auto":
        divergence = "exact" if d <= EXACT_DIVERGENCE_MAX_DIM or score_and_divergence else "hutchinson"
    if generator is not None and divergence == "hutchinson":
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if generator.device.type != x.device.type:
            raise ValueError(f"generator is on {generator.device} but x is on {x.device}: the probes are drawn on "
                             f"x's device, so give a generator there")
    probe_draws = None if divergence == "exact" else _draw_probes(probe, probes, x, generator)

    def velocity(t: float, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        if probe_draws is None and score_and_divergence is not None:
            # v = -(½ x + ½ s) in forward time, so ∇·v = -d/2 - ½ Δ log p_t, both in closed form.
            score_value, laplacian = score_and_divergence(state[0], t)
            return -probability_flow_drift(state[0], score_value), -0.5 * (d + laplacian)

        def flow(y: Tensor) -> Tensor:  # forward time: dx/dt = -(½ x + ½ s)
            return -probability_flow_drift(y, check_output(score(y, t), y, "score"))
        return velocity_divergence(flow, state[0], probe_draws)

    accumulated = torch.zeros((n,) if probe_draws is None else (probes, n), dtype=x.dtype, device=x.device)
    with torch.no_grad():
        try:
            states, nfe = solve(velocity, (x.detach(), accumulated), times, solver=solver, rtol=rtol, atol=atol,
                                max_steps=max_steps)
        except ODEFailure as failure:
            if failure.non_finite:
                raise NonFiniteSampleError(f"log_likelihood: the probability-flow velocity or its divergence "
                                           f"(from the score) became NaN or infinite at t = "
                                           f"{failure.non_finite_at:.6g} (between t_min = {t_min:g} and T = {T:g}), "
                                           f"and {failure}; check the score") from failure
            raise RuntimeError(f"log_likelihood: {failure}; loosen rtol/atol or raise max_steps") from failure
        x_T, delta = states[0][-1], states[1][-1]
        gaussian = -0.5 * (x_T * x_T).sum(-1) - 0.5 * d * math.log(2 * math.pi)
        exact_prior = None if closed_form is None else closed_form.log_prob(x_T, T)
        prior_log_prob = gaussian if prior == "normal" else exact_prior
        correction = None
        if t_min_correction == "exact" or (t_min_correction == "auto" and closed_form is not None and t_min > 0):
            correction = closed_form.log_prob(x.detach(), 0.0) - closed_form.log_prob(x.detach(), t_min)
        per_probe = prior_log_prob + delta + (0 if correction is None else correction)
        if probe_draws is None:
            log_prob, se, delta_mean = per_probe, None, delta
        else:
            log_prob, delta_mean = per_probe.mean(0), delta.mean(0)
            se = per_probe.std(0) / math.sqrt(probes) if probes > 1 else None
        if not bool(torch.isfinite(log_prob).all()):
            raise NonFiniteSampleError("log_likelihood: the log-likelihood is NaN or infinite (the flow's end point "
                                       "or its divergence overflowed); check the score")
    return Likelihood(log_prob=log_prob, log_prob_se=se, prior_log_prob=prior_log_prob, delta_log_prob=delta_mean,
                      t_min_correction=correction,
                      prior_mismatch=None if exact_prior is None else gaussian - exact_prior, x_T=x_T, nfe=nfe, dim=d,
                      T=T, t_min=t_min, prior=prior, divergence=divergence,
                      probes=0 if probe_draws is None else probes, solver=solver, rtol=rtol, atol=atol)


def _closed_form_divergence(score) -> Callable[[Tensor, float], tuple[Tensor, Tensor]] | None:
    """The score's ``score_and_divergence(x, t)`` (the score and tr ∇s in closed form, as
    :class:`~diffsde.scores.GaussianMixtureScore` offers), or None."""
    method = getattr(score, "score_and_divergence", None)
    return method if callable(method) else None


def _closed_form(score) -> object | None:
    """The score itself when it has a closed-form ``log_prob(x, t)`` (an exact score), else None."""
    return score if callable(getattr(score, "log_prob", None)) else None


def _draw_probes(kind: str, k: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """k probes per sample, (k, N, d), fixed for the whole trajectory: Rademacher ±1 or standard normal."""
    shape = (k, *x.shape)
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    signs = torch.randint(0, 2, shape, generator=generator, device=x.device)
    return (2 * signs - 1).to(x.dtype)


def _times(score, solver: str, grid: TimeGrid | None, T: float | None, t_min: float | None):
    """(ascending times to integrate through, T, t_min), checked."""
    singular = is_singular_at_zero(score)
    if solver in FIXED_SOLVERS:
        if grid is None:
            raise ValueError(f"solver {solver!r} is fixed-step: give grid= (a TimeGrid, e.g. "
                             f"TimeGrid.log_snr(T, t_min, n)); the adaptive ones are {sorted(ADAPTIVE_SOLVERS)}")
        if not isinstance(grid, TimeGrid):
            raise TypeError(f"grid must be a TimeGrid, got {type(grid).__name__}")
        if T is not None or t_min is not None:
            raise ValueError("with grid=, T and t_min are the grid's own: leave them None")
        if singular and grid.t_min <= 0:
            raise ValueError(f"{type(score).__name__} is singular at t = 0: the grid must end at t_min > 0")
        return grid.times.flip(0).tolist(), float(grid.T), float(grid.t_min)
    if grid is not None:
        raise ValueError(f"grid= is for the fixed-step solvers {sorted(FIXED_SOLVERS)}; solver {solver!r} is "
                         f"adaptive and runs from t_min to T")
    T = DEFAULT_T if T is None else check_real(T, "T", 0, low_open=True)
    if t_min is None:
        t_min = SINGULAR_T_MIN if singular else 0.0
    t_min = check_real(t_min, "t_min", 0, T, high_open=True, interval=f"[0, T) = [0, {T:g})")
    if singular and t_min <= 0:
        raise ValueError(f"t_min must be > 0 for {type(score).__name__}, which is singular at t = 0 (s = -ε/σ)")
    return [t_min, T], T, t_min
