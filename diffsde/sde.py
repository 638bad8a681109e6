"""The forward OU process, its Anderson reverse SDE and the probability-flow ODE (seed 000).

All in the OU's own time (DESIGN.md):

* forward SDE (seed 000, eq. "1.5 OU process Noise"): ``dx = -½ x dt + dW``, stationary law N(0, I);
  marginal given x0: ``x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε``, so ``ᾱ(t) = e^{-t}``;
* reverse SDE in backward time ``t' = T - t`` (seed 000, eq. "1.5 reverse diffusion process",
  Anderson 1982): ``dx = (½ x + s(x, T - t')) dt' + dW'``;
* probability-flow ODE (Song et al. 2021, eq. 13 for this OU): ``dx/dt' = ½ x + ½ s(x, T - t')``.

The classes expose ``f(t, y)``, ``g(t, y)``, ``noise_type`` and ``sde_type`` so
``torchsde.sdeint`` accepts them as they are (``y`` of shape (batch, d) there).
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from ._checks import TimeLike, broadcast_time, check_data, check_time, exp_neg, one_minus_exp_neg, sqrt

__all__ = ["OU", "ReverseSDE", "ProbabilityFlowODE", "reverse_sde_drift", "probability_flow_drift",
           "vp_forward_step"]

Score = Callable[[Tensor, TimeLike], Tensor]


def reverse_sde_drift(x: Tensor, score_value: Tensor) -> Tensor:
    """Drift of the reverse SDE in backward time, ``½ x + s`` (seed 000, Langevin decomposition:
    the Langevin drift s minus the forward drift -½ x)."""
    return 0.5 * x + score_value


def probability_flow_drift(x: Tensor, score_value: Tensor) -> Tensor:
    """Velocity of the probability-flow ODE in backward time, ``½ x + ½ s`` (Song et al. 2021, eq. 13)."""
    return 0.5 * (x + score_value)


def vp_forward_step(x: Tensor, beta: float, noise: Tensor) -> Tensor:
    """One step of the VP forward chain, ``sqrt(1 - β) x + sqrt(β) ε`` (seed 000, eq. "1.5 forward
    diffusion process sampling discrete, alt"; DDPM's q(x_i | x_{i-1})). With β the step of OU
    time it discretizes the forward OU; after steps β_0..β_{i-1} the law of x_i given x0 is
    exactly N(sqrt(ᾱ_i) x0, (1 - ᾱ_i) I)."""
    return (1.0 - beta) ** 0.5 * x + beta ** 0.5 * noise


class OU:
    """The forward Ornstein–Uhlenbeck process ``dx = -½ x dt + dW`` on t >= 0 (seed 000).

    Knows nothing of step counts or final times. Times ``t`` may be a Python float, a
    0-d tensor or a (batch,) tensor of per-sample times; ``t < 0`` raises ValueError.
    Also a torchsde SDE (diagonal Itô noise) in forward time.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def drift(self, x: Tensor, t: TimeLike) -> Tensor:
        """Forward drift ``-½ x``; x of shape (batch, ...)."""
        check_time(t, "t")
        return -0.5 * x

    def diffusion(self, t: TimeLike) -> Union[float, Tensor]:
        """Forward diffusion coefficient, 1 (a float, or ones shaped like a tensor ``t``)."""
        check_time(t, "t")
        return torch.ones_like(t) if isinstance(t, Tensor) else 1.0

    def alpha_bar(self, t: TimeLike) -> Union[float, Tensor]:
        """``ᾱ(t) = e^{-t}``, the signal variance kept at time t (seed 000, eq. "alpha bar limit")."""
        check_time(t, "t")
        return exp_neg(t if isinstance(t, Tensor) else float(t))

    def marginal(self, x0: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of ``x_t | x0``: ``(e^{-t/2} x0, sqrt(1 - e^{-t}))``.

        Args:
            x0: (batch, ...) starting points.
            t: float, 0-d or (batch,) OU time(s), t >= 0.
        Returns:
            mean of x0's shape; std as a tensor that broadcasts against it.
        """
        check_data(x0, "x0")
        check_time(t, "t")
        tb = broadcast_time(t, x0)
        mean = sqrt(exp_neg(tb)) * x0
        std = torch.as_tensor(sqrt(one_minus_exp_neg(tb)), dtype=x0.dtype, device=x0.device)
        return mean, std

    def sample_marginal(self, x0: Tensor, t: TimeLike, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε`` exactly (no discretization)."""
        mean, std = self.marginal(x0, t)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return mean + std * noise

    def prior(self, shape: Union[int, Sequence[int]], generator: torch.Generator | None = None,
              device: Union[str, torch.device, None] = None, dtype: torch.dtype | None = None) -> Tensor:
        """Draw from the stationary law N(0, I), the usual start of the reverse process."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def reverse(self, score: Score, T: float) -> "ReverseSDE":
        """The reverse SDE of this process on [0, T] for the given score."""
        return ReverseSDE(score, T)

    def probability_flow(self, score: Score, T: float) -> "ProbabilityFlowODE":
        """The probability-flow ODE of this process on [0, T] for the given score."""
        return ProbabilityFlowODE(score, T)

    # torchsde interface (forward time)
    def f(self, t: TimeLike, y: Tensor) -> Tensor:
        return self.drift(y, t)

    def g(self, t: TimeLike, y: Tensor) -> Tensor:
        check_time(t, "t")
        return torch.ones_like(y)

    def __repr__(self) -> str:
        return "OU(dx = -x/2 dt + dW)"


class _BackwardTimeProcess:
    """Shared bookkeeping of the reverse-time objects: the score, T and the map t = T - t'."""

    def __init__(self, score: Score, T: float, sde_type: str = "ito", noise_type: str = "diagonal"):
        if not callable(score):
            raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
        if isinstance(T, Tensor):
            T = float(T)
        if isinstance(T, bool) or not isinstance(T, (int, float)) or not (T > 0) or T == float("inf"):
            raise ValueError(f"T must be a finite number > 0, got {T!r}")
        if sde_type not in ("ito", "stratonovich"):
            raise ValueError(f"sde_type must be 'ito' or 'stratonovich', got {sde_type!r}")
        if noise_type not in ("diagonal", "additive"):
            raise ValueError(f"noise_type must be 'diagonal' or 'additive', got {noise_type!r}")
        self.score = score
        self.T = float(T)
        # The noise is additive (g does not depend on y), so the Itô and Stratonovich
        # readings of the same equation coincide; the type only selects torchsde's solvers.
        self.sde_type = sde_type
        # torchsde's reading of g: "diagonal" gives g(t, y) of y's shape (batch, d);
        # "additive" gives (batch, d, d), here an expanded identity view (no memory), and
        # selects torchsde's additive-noise schemes (e.g. SRA1 for "srk").
        self.noise_type = noise_type

    def forward_time(self, t_prime: TimeLike) -> TimeLike:
        """Forward OU time ``t = T - t'`` for backward time ``t'`` in [0, T]."""
        # Slack for float32 time tensors that round T up by an ulp (torchsde's ts).
        slack = 1e-6 * max(1.0, self.T)
        check_time(t_prime, "t' (backward time)", low=-slack, high=self.T + slack)
        if isinstance(t_prime, Tensor) and (t_prime.dim() > 0 or t_prime.requires_grad):
            return (self.T - t_prime).clamp(min=0.0, max=self.T)
        # A plain or 0-d time (as torchsde passes) becomes a Python float: exact scores
        # then take their fast scalar-time path.
        return min(max(self.T - float(t_prime), 0.0), self.T)

    def score_at(self, x: Tensor, t_prime: TimeLike) -> Tensor:
        """The score ``s(x, T - t')`` at backward time t'."""
        return self.score(x, self.forward_time(t_prime))

    def f(self, t: TimeLike, y: Tensor) -> Tensor:
        return self.drift(y, t)

    def g(self, t: TimeLike, y: Tensor) -> Tensor:
        if self.noise_type == "additive":
            eye = torch.eye(y.shape[-1], dtype=y.dtype, device=y.device)
            return (self.diffusion(t) * eye).expand(y.shape[0], -1, -1)
        return self.diffusion(t) * torch.ones_like(y)

    def g_prod(self, t: TimeLike, y: Tensor, v: Tensor) -> Tensor:
        """``g(t, y) v`` for torchsde: the diffusion is a multiple of the identity, so this is ``c v``."""
        return self.diffusion(t) * v


class ReverseSDE(_BackwardTimeProcess):
    """Anderson's reverse SDE of the OU in backward time t' = T - t (seed 000):
    ``dx = (½ x + s(x, T - t')) dt' + dW'``, t' in [0, T].

    Args:
        score: callable ``score(x, t)`` giving ∇ log p_t(x) at forward time t.
        T: final forward time (> 0); t' = 0 is forward time T.
        sde_type: "ito" (default) or "stratonovich"; identical here (additive noise).
        noise_type: torchsde's noise type, "diagonal" (default) or "additive".
    """

    def drift(self, x: Tensor, t_prime: TimeLike) -> Tensor:
        """``½ x + s(x, T - t')``."""
        return reverse_sde_drift(x, self.score_at(x, t_prime))

    def diffusion(self, t_prime: TimeLike) -> float:
        """Diffusion coefficient, 1."""
        return 1.0

    def __repr__(self) -> str:
        return f"ReverseSDE(T={self.T:g}, sde_type={self.sde_type!r})"


class ProbabilityFlowODE(_BackwardTimeProcess):
    """The probability-flow ODE of the OU in backward time: ``dx/dt' = ½ x + ½ s(x, T - t')``.

    Shares the reverse SDE's marginals q_{t'} = p_{T - t'} (Song et al. 2021, eq. 13).
    As a torchsde SDE it has zero diffusion; ``ode(t, y)`` is the same velocity for
    ODE solvers that call ``func(t, y)``.
    """

    def drift(self, x: Tensor, t_prime: TimeLike) -> Tensor:
        """``½ x + ½ s(x, T - t')``."""
        return probability_flow_drift(x, self.score_at(x, t_prime))

    def diffusion(self, t_prime: TimeLike) -> float:
        """Diffusion coefficient, 0."""
        return 0.0

    def __call__(self, t: TimeLike, y: Tensor) -> Tensor:
        return self.drift(y, t)

    def __repr__(self) -> str:
        return f"ProbabilityFlowODE(T={self.T:g})"
