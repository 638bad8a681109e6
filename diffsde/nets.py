"""The ε-network: an MLP conditioned on the OU time t through a sinusoidal embedding.

The network predicts the noise ε in ``x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε`` (Ho et al.
2020, eq. 14 and Algorithm 1, in OU time) and is conditioned on the OU's own time t, never
on a step index. Its score is ``s = -ε / sqrt(1 - e^{-t})`` (:class:`diffsde.scores.EpsilonScore`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._checks import TimeLike, check_data, check_int, check_real, check_time, one_minus_exp_neg

__all__ = ["TimeEmbedding", "EpsilonMLP", "log_snr", "time_bounds"]


def log_snr(t: Tensor) -> Tensor:
    """``λ(t) = log(ᾱ / (1 - ᾱ)) = -t - log(1 - e^{-t})`` with ``ᾱ = e^{-t}``, for t > 0
    (the log signal-to-noise ratio of Kingma et al. 2021, "Variational Diffusion Models", eq. 2,
    in the OU's time): ``log ᾱ = -t`` less the log of the noise variance
    :func:`~diffsde.parametrizations.noise_variance`.

    Computed with ``expm1`` so it is accurate at both ends: ``λ ≈ -log t`` as t -> 0 and
    ``λ ≈ -t`` for large t (no overflow: ``e^{-t}`` only ever underflows to 0).
    """
    return -t - torch.log(one_minus_exp_neg(t))


def time_bounds(dtype: torch.dtype) -> tuple[float, float]:
    """``[finfo.tiny, 1 / finfo.eps]`` of ``dtype`` (about [1.2e-38, 8.4e6] in float32, [2.2e-308, 4.5e15]
    in float64): the OU times :class:`TimeEmbedding` resolves; it reads a time outside as the nearer end.

    Below, t is subnormal or rounds to 0 in ``dtype`` (where λ = +∞); above, λ ≈ -t
    is a float whose sines carry no information (its spacing exceeds 2π) and whose product
    with the frequencies overflows in the low precisions.
    """
    info = torch.finfo(dtype)
    return float(info.tiny), 1.0 / float(info.eps)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of the OU time t, taken through its log signal-to-noise ratio.

    ``e(t) = [sin(ω_k λ(t)), cos(ω_k λ(t))]_{k < K}``, ``λ(t) = -t - log(1 - e^{-t})``,
    ``ω_k = 2π / P_k`` with periods P_k geometrically spaced in [min_period, max_period]
    (``K = embed_dim / 2``). This is Vaswani et al.'s sinusoidal embedding (the one DDPM uses,
    Ho et al. 2020, appendix B) applied to λ(t) instead of a step index.

    Why λ and these periods: over the OU range t in [1e-3, 10] the marginal p_t changes on
    the scale of t itself near 0 (its noise variance is 1 - e^{-t} ≈ t) and on the scale of 1
    at large t (the mean decays like e^{-t/2}). λ(t) is ≈ -log t near 0 and ≈ -t at large t,
    so equal steps in λ are comparable changes of p_t at both ends: t -> t + 1e-3 at
    t = 1e-3 moves λ by log 2 ≈ 0.69, t -> t + 0.05 at t = 10 moves it by 0.05. λ spans
    about [-10, 6.9] on that range. The shortest period (0.5 by default) resolves a step of
    0.05 in λ with a phase change of 0.63 rad in the fastest pair; the longest (64, about four
    times the span) makes the slowest pair nearly monotone, so distant times are never
    aliased onto each other. Frequencies meant for t in [0, 1000] or [0, 1] (the usual
    ``10000^{-k/K}`` on a step index) would instead be nearly constant over t in [0, 10].

    Input t: (batch,) tensor of OU times, t >= 0; a time outside :func:`time_bounds` of its
    dtype is read as the nearer bound (λ(0) = +∞), so the output is finite for every t >= 0
    and unchanged inside the bounds. Output: (batch, embed_dim), in t's dtype.
    """

    def __init__(self, embed_dim: int = 32, min_period: float = 0.5, max_period: float = 64.0):
        super().__init__()
        embed_dim = check_int(embed_dim, "embed_dim", minimum=2)
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be an even int >= 2, got {embed_dim!r}")
        min_period = check_real(min_period, "min_period", 0, low_open=True)
        max_period = check_real(max_period, "max_period", 0, low_open=True)
        if min_period > max_period:
            raise ValueError(f"need 0 < min_period <= max_period < inf, got min_period={min_period!r}, "
                             f"max_period={max_period!r}")
        self.embed_dim = embed_dim
        self.min_period = float(min_period)
        self.max_period = float(max_period)
        periods = torch.logspace(math.log10(min_period), math.log10(max_period), embed_dim // 2,
                                 dtype=torch.float64)
        self.register_buffer("frequencies", (2 * math.pi / periods).to(torch.get_default_dtype()),
                             persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        low, high = time_bounds(t.dtype)
        angles = log_snr(t.clamp(low, high)).unsqueeze(-1) * self.frequencies.to(t.dtype)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, periods of log-SNR in [{self.min_period:g}, {self.max_period:g}]"


class EpsilonMLP(nn.Module):
    """An MLP ε-predictor ``ε_θ(x, t)`` for data of dimension ``dim``, conditioned on OU time t.

    ``h_0 = x``; ``h_{k+1} = SiLU(W_k h_k + U_k e(t) + b_k)`` for k < depth; ``ε = W_out h_depth``,
    where e(t) is :class:`TimeEmbedding` and each block has its own projection U_k of the
    embedding, so time enters every block. ``W_out`` and its bias start at zero, so a fresh
    model predicts ε = 0 exactly (the mean of ε) and training starts from the loss E‖ε‖² = dim.

    Args:
        dim: data dimension d.
        hidden: width of every block.
        depth: number of blocks (>= 1).
        embed_dim: size of the time embedding (even).

    Call: ``model(x, t)`` with x of shape (batch, dim) and t a Python float, a 0-d tensor or
    a (batch,) tensor of finite OU times t > 0 (read inside :func:`time_bounds`); returns
    (batch, dim) in x's dtype (which must be the parameters' dtype). Raises ValueError for a
    wrong x shape (naming the expected dimension), a wrong t shape, or t <= 0, infinite or NaN;
    TypeError for a dtype that is not the parameters'.
    The time check reads a tensor t on the host; it is skipped inside ``torch.compile``, and a
    Python float t (what :class:`diffsde.EpsilonScore` passes, ``accepts_float_time``) needs no
    device synchronisation at all.
    """

    accepts_float_time = True

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, embed_dim: int = 32):
        super().__init__()
        self.dim = check_int(dim, "dim", minimum=1)
        self.hidden = check_int(hidden, "hidden", minimum=1)
        self.depth = check_int(depth, "depth", minimum=1)
        self.embedding = TimeEmbedding(embed_dim)
        widths = [self.dim] + [self.hidden] * self.depth
        self.blocks = nn.ModuleList(nn.Linear(widths[k], self.hidden) for k in range(self.depth))
        self.time_projections = nn.ModuleList(nn.Linear(self.embedding.embed_dim, self.hidden, bias=False)
                                              for _ in range(self.depth))
        self.output = nn.Linear(self.hidden, self.dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    @property
    def config(self) -> dict:
        """The constructor arguments, as a dict of ints (stored in checkpoints)."""
        return {"dim": self.dim, "hidden": self.hidden, "depth": self.depth,
                "embed_dim": self.embedding.embed_dim}

    def forward(self, x: Tensor, t: TimeLike) -> Tensor:
        times = self._times(x, t)
        embedding = self.embedding(times)
        h = x
        for block, projection in zip(self.blocks, self.time_projections):
            h = nn.functional.silu(block(h) + projection(embedding))
        return self.output(h)

    def _times(self, x: Tensor, t: TimeLike) -> Tensor:
        """Check x and t; return t as a (batch,) tensor on x's device and dtype."""
        check_data(x, "x")
        if x.dim() != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}) for this EpsilonMLP(dim={self.dim}), "
                             f"got {tuple(x.shape)}")
        dtype = self.output.weight.dtype
        if x.dtype != dtype:
            raise TypeError(f"x has dtype {x.dtype} but the model's parameters are {dtype}; "
                            f"convert one of them (e.g. model.to({dtype}) or x.to({dtype}))")
        if not torch.compiler.is_compiling():
            check_time(t, "t", strict_low=True)
        if not isinstance(t, Tensor):  # clamped here so that a large t fits x's dtype
            t = min(float(t), time_bounds(x.dtype)[1])
            return torch.full(x.shape[:1], t, device=x.device, dtype=x.dtype)
        t = t.to(device=x.device, dtype=x.dtype)
        if t.dim() == 0:
            return t.expand(x.shape[0])
        if t.shape != x.shape[:1]:
            raise ValueError(f"t must be a float, a 0-d tensor or have shape (batch,) = ({x.shape[0]},), "
                             f"got shape {tuple(t.shape)}")
        return t

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, depth={self.depth}"

