"""Scores carried between a process's coordinates and the OU's, through the map of
:mod:`diffsde.processes` (the documentation's conventions, "Processes in OU coordinates").

With ``x = c(τ) y`` and ``t = t(τ)``, the law of x at τ is the OU's law of y at t pushed forward by
a scaling, so (change of variables, then the chain rule)::

    p(x, τ) = p_ou(x / c, t) / c^d,     ∇_x log p(x, τ) = s_ou(x / c, t) / c,
    s_ou(y, t) = c · s(c y, τ(t)).

:class:`ProcessExactScore` reads the first line (an exact OU score seen in a process's
coordinates), :class:`ScoreAsOU` the second (a process's score seen by the OU samplers).
Both are generic over any object with the :class:`diffsde.processes.Process` interface.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch
from torch import Tensor

from ._checks import TimeLike, broadcast_time, check_data
from .protocols import declared_dim, is_singular_at_zero

__all__ = ["ProcessExactScore", "ScoreAsOU"]


class ProcessExactScore:
    """An exact OU-coordinates score (``score(y, t)``, ``log_prob(y, t)``, ``sample(n, t, ...)``,
    ``dim``; e.g. :class:`diffsde.GaussianMixtureScore` or a toy's ``exact_score``) in a process's
    coordinates and clock: ``score(x, τ) = s_ou(x / c, t(τ)) / c``,
    ``log_prob(x, τ) = log p_ou(x / c, t) - d log c``, ``sample(n, τ) = c · sample_ou(n, t)``.

    Made by ``process.exact_score(ou_exact)``. Times τ are floats, 0-d or (batch,) tensors in
    [0, T]; x has shape (batch, d). Callable as ``score(x, τ)``.
    """

    singular_at_zero = False

    def __init__(self, process, ou_exact):
        self.process = process
        self.ou_exact = ou_exact

    @property
    def dim(self) -> int:
        """Data dimension d."""
        return self.ou_exact.dim

    def _coordinates(self, x: Tensor, tau: TimeLike):
        check_data(x, "x", dim=self.dim)
        return self.process.ou_time(tau), self.process.ou_scale(tau)

    def score(self, x: Tensor, tau: TimeLike) -> Tensor:
        """``∇_x log p(x, τ) = s_ou(x / c, t) / c``; returns x's shape."""
        t, c = self._coordinates(x, tau)
        c = broadcast_time(c, x)
        return self.ou_exact.score(x / c, t) / c

    __call__ = score

    def log_prob(self, x: Tensor, tau: TimeLike = 0.0) -> Tensor:
        """``log p(x, τ) = log p_ou(x / c, t) - d log c``; x of shape (batch, d), returns (batch,)."""
        t, c = self._coordinates(x, tau)
        log_c = torch.log(c.to(device=x.device, dtype=x.dtype)) if isinstance(c, Tensor) else math.log(c)
        return self.ou_exact.log_prob(x / broadcast_time(c, x), t) - self.dim * log_c

    def sample(self, n: int, tau: float = 0.0, generator: torch.Generator | None = None,
               device: Union[str, torch.device, None] = None, dtype: torch.dtype | None = None) -> Tensor:
        """n exact draws of p(·, τ), ``c(τ) · sample_ou(n, t(τ))``, shape (n, d); τ a single time."""
        tau = float(tau)
        return self.process.ou_scale(tau) * self.ou_exact.sample(n, self.process.ou_time(tau), generator=generator,
                                                                 device=device, dtype=dtype)

    def mean_and_cov(self, tau: float = 0.0) -> tuple[Tensor, Tensor]:
        """Mean (d,) and covariance (d, d) of p(·, τ): ``c m_ou(t)`` and ``c² Σ_ou(t)`` (needs
        ``ou_exact.mean_and_cov``, as Gaussian and mixture scores have)."""
        tau = float(tau)
        mean, cov = self.ou_exact.mean_and_cov(self.process.ou_time(tau))
        c = self.process.ou_scale(tau)
        return c * mean, c * c * cov

    def __repr__(self) -> str:
        return f"ProcessExactScore({self.process!r}, {self.ou_exact!r})"


class ScoreAsOU:
    """A score ``s(x, τ)`` in a process's coordinates and clock, seen as an OU score:
    ``s_ou(y, t) = c · s(c y, τ(t))`` with ``τ(t) = process.process_time(t)`` and ``c = c(τ)``.

    Made by ``process.ou_score(score)``, so the OU samplers (:func:`diffsde.sample`) can run a
    process's learned or exact score. ``dim`` and ``singular_at_zero`` are the wrapped score's.
    """

    def __init__(self, process, score: Callable[[Tensor, TimeLike], Tensor]):
        if not callable(score):
            raise TypeError(f"score must be callable as score(x, tau), got {type(score).__name__}")
        self.process = process
        self.score_in_process = score
        self.dim = declared_dim(score)
        self.singular_at_zero = is_singular_at_zero(score)

    def score(self, y: Tensor, t: TimeLike) -> Tensor:
        """``c · s(c y, τ(t))``; y of shape (batch, d) in OU coordinates, t the OU time(s)."""
        tau = self.process.process_time(t)
        c = broadcast_time(self.process.ou_scale(tau), y)
        return c * self.score_in_process(c * y, tau)

    __call__ = score

    def __repr__(self) -> str:
        return f"ScoreAsOU({self.process!r}, {self.score_in_process!r})"
