"""Argument checks and the one helper that broadcasts time against data.

Every public entry point checks its inputs here, once, with messages that name the
argument, what was expected and what came. Times are the OU's own time (DESIGN.md).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Union

import torch
from torch import Tensor

TimeLike = Union[float, int, Tensor]


def check_time(t: TimeLike, name: str = "t", *, low: float = 0.0, high: float | None = None,
               strict_low: bool = False) -> None:
    """Refuse a time outside ``[low, high]`` (or ``(low, high]`` when ``strict_low``).

    ``t`` may be a Python number, a 0-d tensor or a tensor of per-sample times. A tensor
    check reads its values on the host (a device synchronisation on CUDA); the samplers
    avoid it by passing grid times as Python floats.
    """
    if isinstance(t, Tensor):
        if t.is_complex() or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
            raise TypeError(f"{name} must be a real number or a real tensor, got dtype {t.dtype}")
        if t.numel() == 0:
            raise ValueError(f"{name} is empty")
        values = t.detach()
        t_low = float(values.min())
        t_high = float(values.max())
        bad_nan = bool(torch.isnan(values).any())
    elif isinstance(t, Real) and not isinstance(t, bool):
        t_low = t_high = float(t)
        bad_nan = math.isnan(t_low)
    else:
        raise TypeError(f"{name} must be a float, a 0-d tensor or a 1-d tensor of times, "
                        f"got {type(t).__name__}")
    interval = f"{'(' if strict_low else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
    if bad_nan:
        raise ValueError(f"{name} must be in {interval}, got NaN")
    if math.isinf(t_high) or math.isinf(t_low):
        raise ValueError(f"{name} must be a finite time in {interval}, got {t_high if math.isinf(t_high) else t_low:g}")
    if t_low < low or (strict_low and t_low <= low):
        raise ValueError(f"{name} must be in {interval}, got {t_low:g}")
    if high is not None and t_high > high:
        raise ValueError(f"{name} must be in {interval}, got {t_high:g}")


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def broadcast_time(t: TimeLike, x: Tensor) -> Union[float, Tensor]:
    """Return ``t`` in a form that broadcasts against ``x`` of shape (batch, ...).

    A Python number stays a Python float (no tensor is made, nothing is synchronised);
    a 0-d tensor stays 0-d; a tensor of shape (batch,) becomes (batch, 1, ..., 1). Tensors
    are moved to ``x``'s device and dtype.
    """
    if not isinstance(t, Tensor):
        return float(t)
    t = t.to(device=x.device, dtype=x.dtype)
    if t.dim() == 0:
        return t
    if t.dim() != 1 or x.dim() == 0 or t.shape[0] != x.shape[0]:
        raise ValueError(f"per-sample times must have shape (batch,) = ({x.shape[0] if x.dim() else '?'},) "
                         f"to match x of shape {tuple(x.shape)}, got t of shape {tuple(t.shape)}")
    return t.reshape((-1,) + (1,) * (x.dim() - 1))


def exp_neg(t: Union[float, Tensor]) -> Union[float, Tensor]:
    """e^{-t} for a float or a tensor."""
    return math.exp(-t) if isinstance(t, float) else torch.exp(-t)


def one_minus_exp_neg(t: Union[float, Tensor]) -> Union[float, Tensor]:
    """1 - e^{-t}, computed as -expm1(-t) so it stays accurate for small t."""
    return -math.expm1(-t) if isinstance(t, float) else -torch.expm1(-t)


def sqrt(v: Union[float, Tensor]) -> Union[float, Tensor]:
    """Square root of a float or a tensor."""
    return math.sqrt(v) if isinstance(v, float) else torch.sqrt(v)


def check_data(x: Tensor, name: str = "x", *, dim: int | None = None) -> None:
    """Refuse a non-tensor, non-floating or wrongly shaped data tensor (..., dim)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have shape (..., d), got a 0-d tensor")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} must have last dimension {dim}, got shape {tuple(x.shape)}")


def real_float64(value, name: str, expected: str) -> Tensor:
    """``value`` (a tensor or nested sequence of numbers) as a float64 CPU tensor, detached.

    Raises TypeError naming ``name`` (``"{name} must be {expected}"``) for something that is
    not numbers, and for complex or boolean values.
    """
    try:
        out = torch.as_tensor(value.detach() if isinstance(value, Tensor) else value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}") from err
    if out.is_complex() or out.dtype == torch.bool:
        raise TypeError(f"{name} must be real, got dtype {out.dtype}")
    return out.to(device="cpu", dtype=torch.float64)

