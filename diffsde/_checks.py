"""Argument checks, and the helpers that broadcast time against data and evaluate e^{-t}.

Every public entry point checks its inputs with these, once, at the door, with messages that
name the argument, what was allowed and what came (torchsde's ``sdeint`` checks the same way).
One policy: a wrong type raises :class:`ArgumentTypeError` (a TypeError), a value of the right
type outside the allowed range or set raises ValueError.

- numbers: :func:`check_int`, :func:`check_real`, :func:`check_bool`, :func:`check_choice`;
- tensors: :func:`check_data` (a floating (..., d) data tensor), :func:`check_spd` and
  :func:`check_symmetric` (covariance matrices), :func:`real_float64` (parameters read into float64),
  :func:`check_positive` (scales and variances), :func:`check_output` (what a score or a network returned);
- times: :func:`check_time` (the OU's own time t, the documentation's conventions page), :func:`broadcast_time`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any, Union

import torch
from torch import Tensor

TimeLike = Union[float, int, Tensor]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a bool or a string where a number belongs, ...).

    A TypeError. It is also a ValueError because several entry points (the toys, the metrics,
    :class:`~diffsde.nets.EpsilonMLP`) refused a wrong type with ValueError before these checks
    were shared, and code that catches ValueError there keeps working.
    """


def check_time(t: TimeLike, name: str = "t", *, low: float = 0.0, high: float | None = None,
               strict_low: bool = False) -> None:
    """Refuse a time outside ``[low, high]`` (or ``(low, high]`` when ``strict_low``).

    ``t`` may be a Python number, a 0-d tensor or a tensor of per-sample times. A tensor
    check reads its values on the host (a device synchronisation on CUDA); the samplers
    avoid it by passing grid times as Python floats.
    """
    if isinstance(t, Tensor):
        if t.is_complex() or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
            raise ArgumentTypeError(f"{name} must be a real number or a real tensor, got dtype {t.dtype}")
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
        raise ArgumentTypeError(f"{name} must be a float, a 0-d tensor or a 1-d tensor of times, "
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
        raise ArgumentTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ArgumentTypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have shape (..., d), got a 0-d tensor")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} must have last dimension {dim}, got shape {tuple(x.shape)}")


def real_float64(value, name: str, expected: str) -> Tensor:
    """``value`` (a tensor or nested sequence of numbers) as a float64 CPU tensor, detached.

    Python numbers are read as float64 directly (``torch.as_tensor`` of a list would round
    them through the default dtype, float32: 0.1 would become 0.10000000149); a tensor or an
    array keeps its own values, converted exactly.

    Raises :class:`ArgumentTypeError` naming ``name`` (``"{name} must be {expected}"``) for
    something that is not numbers, and for complex or boolean values.
    """
    try:
        out = value.detach() if isinstance(value, Tensor) else torch.as_tensor(value)
        if not isinstance(value, Tensor) and out.is_floating_point():
            out = torch.as_tensor(value, dtype=torch.float64)  # the same numbers, not rounded to float32
    except (TypeError, ValueError, RuntimeError) as err:
        raise ArgumentTypeError(f"{name} must be {expected}, got {type(value).__name__}") from err
    if out.is_complex() or out.dtype == torch.bool:
        raise ArgumentTypeError(f"{name} must be real, got dtype {out.dtype}")
    return out.to(device="cpu", dtype=torch.float64)


def check_positive(value: Union[float, Tensor], name: str) -> None:
    """Refuse a scale or a variance (a number, or a tensor of them) outside (0, inf): zero,
    negative, NaN or infinite. A tensor is read on the host (a device synchronisation on CUDA).

    Raises:
        ArgumentTypeError: not a real number or a real tensor.
        ValueError: an entry outside (0, inf), named with its value.
    """
    if not isinstance(value, Tensor):
        check_real(value, name, 0, low_open=True)
        return
    if value.is_complex() or not (value.is_floating_point() or value.dtype in _INT_DTYPES):
        raise ArgumentTypeError(f"{name} must be a real number or a real tensor, got dtype {value.dtype}")
    bad = ~(torch.isfinite(value) & (value > 0))
    if bool(bad.any()):
        raise ValueError(f"{name} must be in (0, inf), got {float(value.detach()[bad][0])!r}")


def check_output(output: Any, x: Tensor, name: str) -> Tensor:
    """``output`` of a callable evaluated at x (a score, an ε-network, ...) when it is a tensor of
    x's shape; anything else raises ValueError naming both shapes, never broadcast silently."""
    if not isinstance(output, Tensor):
        raise ValueError(f"{name} must return a tensor of x's shape {tuple(x.shape)}, got {type(output).__name__}")
    if output.shape != x.shape:
        raise ValueError(f"{name} must return x's shape {tuple(x.shape)}, got shape {tuple(output.shape)}")
    return output


# -- numbers ----------------------------------------------------------------------------------
#
# A wrong TYPE raises ArgumentTypeError (a TypeError); a value of the right type outside the
# allowed range or set raises ValueError. Every message names the argument, what is allowed
# and what came: "steps must be an int >= 1, got 0", "lr must be in (0, inf), got nan",
# "time_sampling must be one of ['grid', 'uniform'], got 'log'". The checks return the value
# converted to a plain Python int / float, so numpy scalars never reach a checkpoint or a cache key.


def check_int(value: Any, name: str, minimum: int | None = None, maximum: int | None = None, *,
              none_ok: bool = False) -> int | None:
    """``value`` as a Python int in ``[minimum, maximum]`` (either end may be None: unbounded).

    Any integral number is accepted (int, numpy integers); a bool is refused although Python
    counts it as an int. With ``none_ok``, None is accepted and returned.

    Raises:
        ArgumentTypeError: not an integral number (a float such as 2.0 included), or a bool.
        ValueError: outside ``[minimum, maximum]``.
    """
    if none_ok and value is None:
        return None
    allowed = _int_range(minimum, maximum) + (" or None" if none_ok else "")
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ArgumentTypeError(f"{name} must be an int{allowed}, got {type(value).__name__} {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an int{allowed}, got {value!r}")
    return int(value)


def _int_range(minimum: int | None, maximum: int | None) -> str:
    if minimum is None and maximum is None:
        return ""
    if maximum is None:
        return f" >= {minimum}"
    if minimum is None:
        return f" <= {maximum}"
    return f" in [{minimum}, {maximum}]"


def check_real(value: Any, name: str, low: float | None = None, high: float | None = None, *,
               low_open: bool = False, high_open: bool = False, finite: bool = True,
               none_ok: bool = False, interval: str | None = None) -> float | None:
    """``value`` as a Python float in the interval from ``low`` to ``high``.

    ``low``/``high`` of None leave that end unbounded; ``low_open``/``high_open`` exclude the
    end itself. NaN is always refused; ±inf is refused unless ``finite=False`` (and the
    interval reaches it). With ``none_ok``, None is accepted and returned. ``interval`` replaces
    the interval written in the message (e.g. ``"(0, T) = (0, 10.5)"`` when a bound is another
    argument).

    Raises:
        ArgumentTypeError: not a real number (int, float, numpy scalar), or a bool.
        ValueError: NaN, infinite (unless allowed) or outside the interval.
    """
    if none_ok and value is None:
        return None
    if interval is None:
        left = ("[" if not finite else "(") + "-inf" if low is None else f"{'(' if low_open else '['}{low:g}"
        right = "inf" + (")" if finite else "]") if high is None else f"{high:g}{')' if high_open else ']'}"
        interval = f"{left}, {right}"
    interval += " or None" if none_ok else ""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentTypeError(f"{name} must be a real number in {interval}, got {type(value).__name__} {value!r}")
    number = float(value)
    inside = not math.isnan(number) and (math.isfinite(number) or not finite)
    if low is not None:
        inside = inside and (number > low if low_open else number >= low)
    if high is not None:
        inside = inside and (number < high if high_open else number <= high)
    if not inside:
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return number


def check_choice(value: Any, name: str, allowed: Iterable) -> Any:
    """``value`` itself when it is one of ``allowed`` (a dict's keys, a tuple of names, ...).

    Raises:
        ValueError: anything else (an unhashable value included), listing the allowed values.
    """
    allowed = list(allowed)
    try:
        ok = value in allowed
    except (TypeError, ValueError, RuntimeError):  # e.g. a tensor or an array, whose == is elementwise
        ok = False
    if isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed):
        ok = False  # True == 1, but True is not the choice 1
    if not ok:
        try:
            listing = sorted(allowed)
        except TypeError:
            listing = allowed
        raise ValueError(f"{name} must be one of {listing}, got {value!r}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """``value`` when it is a bool (True or False, not 0 or 1); anything else raises ArgumentTypeError."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_spd(matrix: Tensor, name: str) -> Tensor:
    """Refuse a matrix (d, d), or a stack of them (K, d, d), that is not symmetric positive-definite;
    return the lower Cholesky factor(s) L with ``L Lᵀ`` = the matrix, of the same shape.

    Symmetry is checked to 1e-10 of each matrix's largest entry; definiteness by a Cholesky
    factorisation. A stack's messages name the bad entry as ``name[k]``.

    Raises:
        ArgumentTypeError: not a real floating-point tensor.
        ValueError: not square (d, d) or (K, d, d) with d >= 1, a NaN or infinite entry, not
            symmetric, or not positive-definite (the message gives the smallest eigenvalue).
    """
    if not isinstance(matrix, Tensor) or not matrix.is_floating_point():
        raise ArgumentTypeError(f"{name} must be a floating-point tensor, got "
                                f"{matrix.dtype if isinstance(matrix, Tensor) else type(matrix).__name__}")
    if matrix.dim() not in (2, 3) or matrix.shape[-1] != matrix.shape[-2] or matrix.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (d, d) or (K, d, d) with d >= 1, got {tuple(matrix.shape)}")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError(f"{name} must be finite, got a NaN or infinite entry")
    stack = matrix if matrix.dim() == 3 else matrix.unsqueeze(0)
    labels = [f"{name}[{k}]" for k in range(stack.shape[0])] if matrix.dim() == 3 else [name]
    for label, single in zip(labels, stack):
        check_symmetric(single, label)
    factors, info = torch.linalg.cholesky_ex(stack)
    if bool((info != 0).any()):
        k = int(torch.nonzero(info)[0])
        raise ValueError(f"{labels[k]} must be positive definite; its Cholesky factorisation failed "
                         f"(smallest eigenvalue {float(torch.linalg.eigvalsh(stack[k])[0]):.3g})")
    return factors if matrix.dim() == 3 else factors[0]


def check_symmetric(matrix: Tensor, name: str) -> None:
    """Refuse a square matrix (d, d) that is not symmetric to 1e-10 of its largest entry
    (``max |C - Cᵀ| <= 1e-10 max |C|``: rounding, not a different matrix)."""
    scale = float(matrix.abs().max())
    asym = float((matrix - matrix.T).abs().max())
    if asym > 1e-10 * max(scale, 1e-300):
        raise ValueError(f"{name} must be symmetric; max |C - C^T| = {asym:.3g}")
