"""What diffsde expects of a score, an exact score, a network and a data source, as protocols.

These are structural types (:class:`typing.Protocol`, checkable with ``isinstance``): any object
with the right methods is one, whatever its class, as with k-diffusion's "model(x, sigma)"
convention. Times are the OU's own time t (the documentation's conventions, "One time variable"); data are (N, d).

- :class:`Score`: ``score(x, t)`` ≈ ∇_x log p_t(x), e.g. :class:`~diffsde.scores.GaussianScore`,
  :class:`~diffsde.parametrizations.EpsilonScore`, a plain function (which declares no ``dim``:
  give :func:`diffsde.sample` its ``x_T`` or ``dim=``).
- :class:`ExactScore`: a score whose p_t is known in closed form (log-density, samples, moments),
  e.g. :class:`~diffsde.scores.GaussianMixtureScore`; what exact-law and convergence studies need.
- :class:`EpsilonModel`, :class:`DataModel`, :class:`VelocityModel`: a network ``model(x, t)``
  predicting ε, x0 or v (Salimans & Ho 2022); :mod:`diffsde.parametrizations` turns each into a score.
- :class:`DataSource`: ``sample(n, generator=...)`` -> (n, d) data, e.g. a toy.

Besides its methods, an object may *declare* three facts about itself as attributes; they are
read here, in one place, by :func:`declared_dim`, :func:`is_singular_at_zero` and
:func:`accepts_float_time` (an object that declares nothing gets the default):

| attribute | default | meaning |
| --- | --- | --- |
| ``dim`` | None | the data dimension d (lets ``sample`` draw x_T itself; without it, pass ``x_T`` or ``dim=``) |
| ``singular_at_zero`` | False | a score undefined at t = 0 (s = -ε / σ, σ(0) = 0): no grid may evaluate it there |
| ``accepts_float_time`` | False | a network taking a scalar time as a Python float (nothing to synchronise on CUDA) |

The readers use ``getattr`` rather than ``isinstance`` against a protocol with that attribute:
from Python 3.12 on, ``isinstance`` checks protocol members with ``inspect.getattr_static``, which
does not see attributes forwarded by ``__getattr__`` (``torch.compile``'s wrapped modules forward
``dim`` that way), and diffsde supports every Python from 3.10 on.
"""

from __future__ import annotations

from typing import Any, Protocol, Union, runtime_checkable

import torch
from torch import Tensor

from ._checks import ArgumentTypeError, TimeLike

__all__ = [
    "Score",
    "ExactScore",
    "Predictor",
    "EpsilonModel",
    "DataModel",
    "VelocityModel",
    "DataSource",
    "declared_dim",
    "is_singular_at_zero",
    "accepts_float_time",
]

Device = Union[str, torch.device, None]


@runtime_checkable
class Score(Protocol):
    """A score ``s(x, t) ≈ ∇_x log p_t(x)``.

    Call: x of shape (N, d) (exact scores accept (..., d)), t the OU time: a Python float, a 0-d
    tensor or a (N,) tensor of per-sample times, t >= 0 (t > 0 when it declares
    ``singular_at_zero``). Returns a tensor of x's shape, dtype and device (:func:`diffsde.sample`
    checks the shape at the first evaluation).

    Any callable is one; a plain function declares no ``dim``, so :func:`diffsde.sample` needs
    its ``x_T`` (N, d) or ``dim=d`` to draw the start itself.
    """

    def __call__(self, x: Tensor, t: TimeLike) -> Tensor: ...


@runtime_checkable
class ExactScore(Score, Protocol):
    """A score whose marginals p_t are known in closed form at every OU time t >= 0.

    :class:`~diffsde.scores.GaussianMixtureScore` and :class:`~diffsde.scores.GaussianScore`
    are exact scores; a toy with a closed form holds one as ``toy.exact_score``.
    """

    dim: int
    """The data dimension d."""

    singular_at_zero: bool
    """False: an exact score is finite at t = 0 (it is the score of p_0)."""

    def score(self, x: Tensor, t: TimeLike) -> Tensor:
        """``∇_x log p_t(x)``, x (..., d) -> x's shape (the same as calling the object)."""
        ...

    def log_prob(self, x: Tensor, t: TimeLike = 0.0) -> Tensor:
        """``log p_t(x)``, x (..., d) -> (...)."""
        ...

    def sample(self, n: int, t: float = 0.0, generator: torch.Generator | None = None, device: Device = None,
               dtype: torch.dtype | None = None) -> Tensor:
        """n exact samples of p_t, (n, d)."""
        ...

    def mean_and_cov(self, t: float = 0.0) -> tuple[Tensor, Tensor]:
        """Mean (d,) and covariance (d, d) of p_t, float64."""
        ...

    # Optional: ``score_and_divergence(x, t) -> (s (..., d), tr ∇s (...))``, the score and its
    # divergence in closed form (GaussianMixtureScore has it); diffsde.log_likelihood uses it for
    # the exact divergence instead of d backward passes.


@runtime_checkable
class Predictor(Protocol):
    """A network ``model(x, t)`` -> a prediction of x's shape, conditioned on the OU time t.

    x is (N, d); t is a (N,) tensor of OU times on x's device and dtype, or a Python float for
    a model that declares ``accepts_float_time = True``. What the output means is the
    parametrization: :class:`EpsilonModel`, :class:`DataModel`, :class:`VelocityModel`.
    """

    def __call__(self, x: Tensor, t: TimeLike) -> Tensor: ...


@runtime_checkable
class EpsilonModel(Predictor, Protocol):
    """Predicts the noise ε in ``x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε`` (Ho et al. 2020), e.g.
    :class:`~diffsde.nets.EpsilonMLP`; its score is :class:`~diffsde.parametrizations.EpsilonScore`."""


@runtime_checkable
class DataModel(Predictor, Protocol):
    """Predicts the clean data x0 from x_t (the "x0" or "data" prediction of DPM-Solver++; Karras
    et al. 2022's denoiser D); its score is :class:`~diffsde.parametrizations.DataScore`."""


@runtime_checkable
class VelocityModel(Predictor, Protocol):
    """Predicts ``v = α ε - σ x0`` with ``α = e^{-t/2}``, ``σ = sqrt(1 - e^{-t})`` (Salimans & Ho
    2022, "Progressive Distillation", §4); its score is :class:`~diffsde.parametrizations.VelocityScore`."""


@runtime_checkable
class DataSource(Protocol):
    """A distribution to train on: ``sample(n, generator=...)`` -> (n, d) floating tensor, all
    randomness from the generator (a toy, a :class:`~diffsde.scores.GaussianScore`, ...)."""

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor: ...


def declared_dim(obj: Any) -> int | None:
    """The data dimension ``obj`` declares (its ``dim``), or None when it declares none.

    Raises:
        ArgumentTypeError: the declared ``dim`` is neither None nor an int >= 1.
    """
    dim = getattr(obj, "dim", None)
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise ArgumentTypeError(f"{type(obj).__name__} declares dim = {dim!r}; a declared dim must be an int >= 1 "
                                f"or None")
    return dim


def is_singular_at_zero(score: Any) -> bool:
    """Whether ``score`` declares ``singular_at_zero = True``: it cannot be evaluated at t = 0
    (the network adapters of :mod:`diffsde.parametrizations` divide by σ(0) = 0). A score that
    declares nothing is taken to be finite at 0."""
    return bool(getattr(score, "singular_at_zero", False))


def accepts_float_time(model: Any) -> bool:
    """Whether ``model`` declares ``accepts_float_time = True``: handed a scalar time as a Python
    float, it needs no tensor of times (:class:`~diffsde.nets.EpsilonMLP` does)."""
    return bool(getattr(model, "accepts_float_time", False))
