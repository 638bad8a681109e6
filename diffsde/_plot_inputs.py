"""What :mod:`diffsde.plots` accepts: tensors, arrays or sequences, read on the CPU as float64
numpy arrays and checked (finite, non-empty, the right shape), with messages naming the argument."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

__all__ = ["as_array", "as_points", "as_named", "as_series"]


def as_array(values, name: str) -> np.ndarray:
    """A float64 numpy copy of a tensor / array / sequence, checked finite."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numeric (a tensor, array or sequence), got {type(values).__name__}") from err
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} has NaN or infinite entries")
    return array


def as_points(values, name: str) -> np.ndarray:
    """(n, d) points with d in {1, 2}; an (n,) input is n points in 1-D."""
    array = as_array(values, name)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] not in (1, 2):
        raise ValueError(f"{name} must have shape (n,), (n, 1) or (n, 2), got {array.shape}")
    return array


def as_named(samples, name: str) -> dict[str, np.ndarray]:
    """A mapping name -> points, from one array or a mapping of them."""
    if isinstance(samples, Mapping):
        if not samples:
            raise ValueError(f"{name} is an empty mapping")
        return {str(key): as_points(value, f"{name}[{key!r}]") for key, value in samples.items()}
    return {"samples": as_points(samples, name)}


def as_series(series: Mapping[str, tuple], name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (x, y), positive, equal lengths (for log–log axes)."""
    if not isinstance(series, Mapping) or not series:
        raise ValueError(f"{name} must be a non-empty mapping label -> (x values, y values)")
    out = {}
    for label, pair in series.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{name}[{label!r}] must be a pair (x values, y values)")
        x, y = (as_array(v, f"{name}[{label!r}]").reshape(-1) for v in pair)
        if x.shape != y.shape:
            raise ValueError(f"{name}[{label!r}] has {x.size} x values but {y.size} y values")
        if np.any(x <= 0) or np.any(y <= 0):
            raise ValueError(f"{name}[{label!r}] needs positive values for log–log axes")
        out[str(label)] = (x, y)
    return out
