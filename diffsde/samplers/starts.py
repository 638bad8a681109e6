"""Where a run starts: the checked starting point and its first draws, for :func:`diffsde.sample`.

A run starts from a given ``x_T`` or from draws of its prior ("normal": N(0, I); "tweedie": the
same draws, moved later by one score evaluation; "exact": the score's own p_T). With a
torch.Generator (or None) the draws come from its stream in one batch (:func:`initial_state`);
with an int seed each chunk draws its own from its slot-0 stream (:func:`chunk_start`,
:mod:`diffsde.samplers.chunks`).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Callable, Union

import torch
from torch import Tensor

from .._checks import ArgumentTypeError, check_data, check_int
from ..protocols import ExactScore, declared_dim
from ..schedules import TimeGrid
from .chunks import CHUNK_ROWS, CounterNoise
from .ends import PRIORS

__all__ = ["HALF_DTYPES", "check_generator", "make_generator", "is_seed", "checked_start", "initial_state",
           "chunk_start"]

Score = Callable[[Tensor, Any], Tensor]

#: State dtypes carried in float32 during a run (the score still sees them; see :func:`diffsde.samplers.integrate`).
HALF_DTYPES = (torch.float16, torch.bfloat16)


def check_generator(generator: Union[torch.Generator, int, None], device: torch.device) -> None:
    """Refuse anything but None, a torch.Generator on ``device``'s type, or an int seed in [0, 2^64)
    (torch's seed range)."""
    if generator is None:
        return
    if isinstance(generator, bool) or not isinstance(generator, (Integral, torch.Generator)):
        raise ArgumentTypeError(f"generator must be a torch.Generator, an int seed in [0, 2**64) or None, got "
                                f"{type(generator).__name__}")
    if isinstance(generator, Integral):
        if not 0 <= generator < 2 ** 64:
            raise ValueError(f"generator must be a torch.Generator, None or an int seed in [0, 2**64) "
                             f"(torch's seed range), got {generator!r}")
    elif torch.device(generator.device).type != device.type:
        raise ValueError(f"generator is on {generator.device} but sampling runs on {device}; "
                         f"pass a generator created with torch.Generator(device='{device}')")


def make_generator(generator: Union[torch.Generator, int, None], device: torch.device) -> torch.Generator | None:
    """``generator`` itself (checked to be on ``device``), a new one seeded with an int seed in
    [0, 2^64) (torch's seed range), or None."""
    check_generator(generator, device)
    if isinstance(generator, Integral):
        return torch.Generator(device=device).manual_seed(int(generator))
    return generator


def _data_dim(score: Score, dim: int | None) -> int | None:
    """The dimension a run knows: ``dim`` (checked) and the score's declared one, which must agree."""
    declared = declared_dim(score)
    dim = check_int(dim, "dim", 1, none_ok=True)
    if dim is None:
        return declared
    if declared is not None and declared != dim:
        raise ValueError(f"dim = {dim} contradicts the score's declared dim = {declared} ({type(score).__name__})")
    return dim


def _check_dtype(dtype: Any) -> torch.dtype:
    if not isinstance(dtype, torch.dtype):
        raise ArgumentTypeError(f"dtype must be a torch.dtype (e.g. torch.float32), got {type(dtype).__name__} "
                                f"{dtype!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype (float16, bfloat16, float32, float64), got {dtype}")
    return dtype


def initial_state(score, time_grid, n_samples, x_T, generator, prior, device, dtype, dim=None):
    x_T, n_samples, known_dim, device, dtype = checked_start(score, n_samples, x_T, generator, prior, device, dtype,
                                                              dim)
    gen = make_generator(generator, device)
    if x_T is not None:
        return x_T, gen
    if prior in ("normal", "tweedie"):  # "tweedie" moves the draw in integrate (one score evaluation)
        return torch.randn((n_samples, known_dim), generator=gen, device=device, dtype=dtype), gen
    return score.sample(n_samples, t=time_grid.T, generator=gen, device=device, dtype=dtype), gen


def checked_start(score, n_samples, x_T, generator, prior, device, dtype, dim=None):
    """The checked starting point: (x_T or None, N, d, device, dtype)."""
    known_dim = _data_dim(score, dim)
    if dtype is not None:
        _check_dtype(dtype)
    if x_T is not None:
        if n_samples is not None and n_samples != x_T.shape[0]:
            raise ValueError(f"n_samples = {n_samples} does not match x_T's batch size {x_T.shape[0]}")
        if dim is not None and isinstance(x_T, Tensor) and x_T.dim() >= 1 and x_T.shape[-1] != dim:
            raise ValueError(f"dim = {dim} contradicts x_T of shape {tuple(x_T.shape)} (d = {x_T.shape[-1]})")
        check_data(x_T, "x_T", dim=known_dim)
        if x_T.dim() != 2:
            raise ValueError(f"x_T must have shape (N, d), got {tuple(x_T.shape)}")
        if (device is not None and torch.device(device).type != x_T.device.type) or \
                (dtype is not None and dtype != x_T.dtype):
            raise ValueError(f"x_T is {x_T.dtype} on {x_T.device}, which contradicts device={device}, dtype={dtype}")
        if not bool(torch.isfinite(x_T).all()):
            raise ValueError("x_T contains NaN or infinite values")
        check_generator(generator, x_T.device)
        return x_T, x_T.shape[0], x_T.shape[1], x_T.device, x_T.dtype
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"give x_T or n_samples (a positive int), got n_samples={n_samples!r}")
    if known_dim is None:
        raise ValueError(f"the score ({type(score).__name__}) declares no dimension (no dim attribute), so sample "
                         f"cannot draw x_T: pass dim=d (with n_samples), or x_T of shape (N, d)")
    if device is None:
        device = generator.device if isinstance(generator, torch.Generator) else "cpu"
    device = torch.device(device)
    check_generator(generator, device)
    if prior == "exact" and not isinstance(score, ExactScore):
        raise ValueError(f"prior='exact' needs an exact score (diffsde.protocols.ExactScore: .sample(n, t), "
                         f".log_prob, .mean_and_cov, .dim); {type(score).__name__} is not one")
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {list(PRIORS)}, got {prior!r}")
    return None, n_samples, known_dim, device, dtype or torch.float32


def is_seed(generator: Any) -> bool:
    """Whether ``generator`` is an int seed (which selects counter-based noise, :mod:`diffsde.samplers.chunks`)."""
    return isinstance(generator, Integral) and not isinstance(generator, bool)


def chunk_start(score, time_grid: TimeGrid, x_T: Tensor | None, prior: str, dim: int, device: torch.device,
                dtype: torch.dtype) -> Callable:
    """``start(chunk, noise, padded_rows)`` -> the chunk's starting state (padded_rows, d): its rows of
    ``x_T`` (then zero padding rows), or drawn from ``prior`` with the chunk's slot-0 stream (its first
    normals; an exact score's ``sample`` of a whole chunk, sliced, since a mixture's draws are not
    prefixes of longer ones). Half precision starts are drawn in float32 and rounded."""
    drawn_dtype = torch.float32 if dtype in HALF_DTYPES else dtype

    def start(chunk: int, noise: CounterNoise, padded_rows: int) -> Tensor:
        if x_T is not None:
            first, rows = chunk * CHUNK_ROWS, noise.rows
            x = x_T.new_zeros((padded_rows, dim))
            x[:rows] = x_T[first:first + rows]
            return x
        if prior == "exact":
            x = score.sample(CHUNK_ROWS, t=time_grid.T, generator=noise.generator(device, 0), device=device,
                             dtype=drawn_dtype)[:padded_rows]
        else:
            x = noise.normals(0, torch.empty((padded_rows, dim), device=device, dtype=drawn_dtype))
        return x if drawn_dtype == dtype else x.to(dtype)

    return start
