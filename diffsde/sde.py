"""The reverse SDE and the probability-flow ODE of a forward process, as torchsde-ready objects.

For a process ``dx = f(x, τ) dτ + g(τ) dW`` on its clock τ ∈ [0, T] (:mod:`diffsde.processes`) and a
score ``s(x, τ) = ∇ log p_τ(x)`` in that process's coordinates, in backward time ``τ' = T - τ``:

* reverse SDE (Anderson 1982; Song et al. 2021, eq. 6): ``dx = [g² s - f](x, T - τ') dτ' + g dW'``;
* probability-flow ODE (Song et al. 2021, eq. 13): ``dx/dτ' = [½ g² s - f](x, T - τ')``.

For the canonical OU (Song et al. 2021, eq. 11 with β ≡ 1) these are ``dx = (½ x + s(x, T - t')) dt' + dW'`` and
``dx/dt' = ½ x + ½ s(x, T - t')``. ``ReverseSDE(score, T)`` (no process) is the OU's, as before.

The classes expose ``f(t, y)``, ``g(t, y)``, ``noise_type`` and ``sde_type`` so
``torchsde.sdeint`` accepts them as they are (``y`` of shape (batch, d) there).
``OU``, ``reverse_sde_drift`` and ``probability_flow_drift`` live in :mod:`diffsde.processes`
and are importable from here as before.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from ._checks import TimeLike, broadcast_time, check_real, check_time
from .processes import OU, Process, Score, probability_flow_drift, reverse_sde_drift

__all__ = ["OU", "ReverseSDE", "ProbabilityFlowODE", "reverse_sde_drift", "probability_flow_drift",
           "vp_forward_step"]

_CANONICAL_OU = OU()


def vp_forward_step(x: Tensor, beta: float, noise: Tensor) -> Tensor:
    """One step of the VP forward chain, ``sqrt(1 - β) x + sqrt(β) ε`` (DDPM's q(x_i | x_{i-1}),
    Ho et al. 2020, eq. 2). With β the step of OU
    time it discretizes the forward OU; after steps β_0..β_{i-1} the law of x_i given x0 is
    exactly N(sqrt(ᾱ_i) x0, (1 - ᾱ_i) I).

    Raises:
        ValueError: β outside [0, 1] (the chain's variance would be negative or complex).
    """
    beta = check_real(beta, "beta", 0, 1)
    return (1.0 - beta) ** 0.5 * x + beta ** 0.5 * noise


def _process_score_and_T(first, second, T, owner: str) -> tuple:
    """Tell ``owner(process, score, T=None)`` from the older ``owner(score, T)``, whose process is
    the OU: by whether the first argument satisfies the :class:`~diffsde.processes.Process` protocol
    (an object without ``ou_time`` cannot, which settles a score without the ~30 µs protocol check)."""
    if hasattr(first, "ou_time") and isinstance(first, Process):
        return first, second, T
    if first is None:  # owner(score=..., T=...)
        return _CANONICAL_OU, second, T
    if second is not None and T is not None:
        raise TypeError(f"{owner}(score, T) got T twice; pass sde_type and noise_type by keyword")
    return _CANONICAL_OU, first, T if second is None else second


class _BackwardTimeProcess:
    """Shared bookkeeping of the reverse-time objects: the process, the score, T and the map
    τ = T - τ'. ``_rule`` names the process's drift rule (``reverse_drift`` or ``flow_drift``)."""

    _rule: str

    def __init__(self, process: Process | Score | None = None, score: Score | float | None = None,
                 T: float | None = None, sde_type: str = "ito", noise_type: str = "diagonal"):
        process, score, T = _process_score_and_T(process, score, T, type(self).__name__)
        if not callable(score):
            raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
        if T is None:
            T = process.T
            if T is None:
                raise ValueError(f"T must be given for {process!r}, whose clock has no end")
        if isinstance(T, Tensor):
            T = float(T)
        if isinstance(T, bool) or not isinstance(T, (int, float)) or not (T > 0) or T == float("inf"):
            raise ValueError(f"T must be a finite number > 0, got {T!r}")
        if process.T is not None and T > process.T:
            raise ValueError(f"T must be in (0, {process.T:g}], the end of the clock of {process!r}, got {T!r}")
        if sde_type not in ("ito", "stratonovich"):
            raise ValueError(f"sde_type must be 'ito' or 'stratonovich', got {sde_type!r}")
        if noise_type not in ("diagonal", "additive"):
            raise ValueError(f"noise_type must be 'diagonal' or 'additive', got {noise_type!r}")
        self.process = process
        self.score = score
        self.T = float(T)
        # The process's rule, bound once: the OU's is reverse_sde_drift / probability_flow_drift
        # itself, so the OU path does no more per call than those functions.
        self._drift_rule = getattr(process, self._rule)
        self._diffusion_constant = process.diffusion_constant
        # The noise is additive (g does not depend on y), so the Itô and Stratonovich
        # readings of the same equation coincide; the type only selects torchsde's solvers.
        self.sde_type = sde_type
        # torchsde's reading of g: "diagonal" gives g(t, y) of y's shape (batch, d);
        # "additive" gives (batch, d, d), here an expanded identity view (no memory), and
        # selects torchsde's additive-noise schemes (e.g. SRA1 for "srk").
        self.noise_type = noise_type

    def forward_time(self, t_prime: TimeLike) -> TimeLike:
        """Forward time ``τ = T - τ'`` in the process's clock for backward time ``τ'`` in [0, T]."""
        # Slack for float32 time tensors that round T up by an ulp (torchsde's ts).
        slack = 1e-6 * max(1.0, self.T)
        check_time(t_prime, "t' (backward time)", low=-slack, high=self.T + slack)
        if isinstance(t_prime, Tensor) and (t_prime.dim() > 0 or t_prime.requires_grad):
            return (self.T - t_prime).clamp(min=0.0, max=self.T)
        # A plain or 0-d time (as torchsde passes) becomes a Python float: exact scores
        # then take their fast scalar-time path.
        return min(max(self.T - float(t_prime), 0.0), self.T)

    def score_at(self, x: Tensor, t_prime: TimeLike) -> Tensor:
        """The score ``s(x, T - τ')`` at backward time τ'."""
        return self.score(x, self.forward_time(t_prime))

    def f(self, t: TimeLike, y: Tensor) -> Tensor:
        return self.drift(y, t)

    def g(self, t: TimeLike, y: Tensor) -> Tensor:
        coefficient = self.diffusion(t)
        if self.noise_type == "additive":
            eye = torch.eye(y.shape[-1], dtype=y.dtype, device=y.device)
            if isinstance(coefficient, Tensor) and coefficient.dim() > 0:
                coefficient = coefficient.to(y).reshape(-1, 1, 1)
            return (coefficient * eye).expand(y.shape[0], -1, -1)
        if isinstance(coefficient, Tensor):
            coefficient = broadcast_time(coefficient, y)
        return coefficient * torch.ones_like(y)

    def g_prod(self, t: TimeLike, y: Tensor, v: Tensor) -> Tensor:
        """``g(t, y) v`` for torchsde: the diffusion is a multiple of the identity, so this is ``c v``."""
        coefficient = self.diffusion(t)
        if isinstance(coefficient, Tensor):
            coefficient = broadcast_time(coefficient, v)
        return coefficient * v


class ReverseSDE(_BackwardTimeProcess):
    """The reverse SDE of a process in backward time τ' = T - τ (Anderson 1982; Song et al. 2021,
    eq. 6): ``dx = [g² s - f](x, T - τ') dτ' + g(T - τ') dW'``, τ' in [0, T]. For the OU:
    ``dx = (½ x + s(x, T - t')) dt' + dW'``.

    ``ReverseSDE(process, score, T=None)``; the older ``ReverseSDE(score, T)`` is the OU's.

    Args:
        process: a :class:`~diffsde.processes.Process` (VP, SubVP, VE, EDM, OU, ...).
        score: callable ``score(x, τ)`` giving ∇ log p_τ(x) in the process's coordinates and clock.
        T: final forward time (> 0, at most ``process.T``); defaults to ``process.T`` (required
            for the OU). τ' = 0 is forward time T.
        sde_type: "ito" (default) or "stratonovich"; identical here (additive noise).
        noise_type: torchsde's noise type, "diagonal" (default) or "additive".

    Raises:
        TypeError: a score that is not callable.
        ValueError: T missing for the OU, not a finite number > 0, or past ``process.T``; an
            unknown sde_type or noise_type.
    """

    _rule = "reverse_drift"

    def drift(self, x: Tensor, t_prime: TimeLike) -> Tensor:
        """``[g² s - f](x, T - τ')``; for the OU ``½ x + s(x, T - t')``."""
        tau = self.forward_time(t_prime)
        return self._drift_rule(x, self.score(x, tau), tau)

    def diffusion(self, t_prime: TimeLike) -> Union[float, Tensor]:
        """Diffusion coefficient ``g(T - τ')``: 1 for the OU."""
        if self._diffusion_constant is not None:
            return self._diffusion_constant
        return self.process.diffusion(self.forward_time(t_prime))

    def __repr__(self) -> str:
        return f"ReverseSDE({self.process!r}, T={self.T:g}, sde_type={self.sde_type!r})"


class ProbabilityFlowODE(_BackwardTimeProcess):
    """The probability-flow ODE of a process in backward time τ' = T - τ (Song et al. 2021, eq. 13):
    ``dx/dτ' = [½ g² s - f](x, T - τ')``; for the OU ``½ x + ½ s(x, T - t')``.

    Shares the reverse SDE's marginals q_{τ'} = p_{T - τ'}. Built as ``ProbabilityFlowODE(process,
    score, T=None)`` or, for the OU, the older ``ProbabilityFlowODE(score, T)``; the arguments and
    errors are :class:`ReverseSDE`'s. As a torchsde SDE it has zero diffusion; ``ode(t, y)`` is the
    same velocity for ODE solvers that call ``func(t, y)``.
    """

    _rule = "flow_drift"

    def drift(self, x: Tensor, t_prime: TimeLike) -> Tensor:
        """``[½ g² s - f](x, T - τ')``; for the OU ``½ x + ½ s(x, T - t')``."""
        tau = self.forward_time(t_prime)
        return self._drift_rule(x, self.score(x, tau), tau)

    def diffusion(self, t_prime: TimeLike) -> float:
        """Diffusion coefficient, 0."""
        return 0.0

    def __call__(self, t: TimeLike, y: Tensor) -> Tensor:
        return self.drift(y, t)

    def __repr__(self) -> str:
        return f"ProbabilityFlowODE({self.process!r}, T={self.T:g})"
