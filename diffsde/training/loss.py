"""DDPM's simple loss, written in the OU's own time."""

from __future__ import annotations

from torch import Tensor, nn

from .._checks import TimeLike, check_data
from ..sde import OU

__all__ = ["eps_loss"]


def eps_loss(model: nn.Module, x0: Tensor, t: TimeLike, noise: Tensor) -> Tensor:
    """DDPM's simple loss ``E ‖ε - ε_θ(x_t, t)‖²`` on ``x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε``
    (Ho et al. 2020, Algorithm 1, in OU time; the mixing is :meth:`diffsde.sde.OU.marginal`).

    The squared error is SUMMED over the data dimensions (Ho et al.'s ``‖·‖²``) and averaged
    over the batch, so a model predicting 0 scores ``E ‖ε‖² = d``.

    Args:
        model: ``model(x, t)`` -> ε of x's shape.
        x0: (batch, d) data.
        t: OU time(s) t > 0: a float, a 0-d tensor or a (batch,) tensor; passed to the model as given.
        noise: (batch, d) the ε that is mixed in.
    Returns:
        a 0-d tensor.
    Raises:
        ValueError: noise and x0 differ in shape, or t < 0 (t = 0 reaches the model, which refuses it).
    """
    check_data(x0, "x0")
    check_data(noise, "noise")
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    mean, std = OU().marginal(x0, t)
    residual = noise - model(mean + std * noise, t)
    return residual.pow(2).flatten(1).sum(-1).mean()
