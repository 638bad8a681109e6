"""What a network predicts, and its score: ε-, x0- and v-prediction <-> s, in the OU's own time.

Under the OU, ``x_t = α x0 + σ ε`` with ``α(t) = e^{-t/2}``, ``σ(t) = sqrt(1 - e^{-t})`` (Ho et al.
2020, eq. 4 in OU time; ᾱ = α² = e^{-t} and α² + σ² = 1). Tweedie's formula
``E[x0 | x_t] = (x_t + σ² s) / α`` (Efron 2011) and ``E[ε | x_t] = -σ s`` (Vincent
2011) tie each prediction a network may be trained for to the score s = ∇ log p_t:

| prediction | from the score | to the score |
| --- | --- | --- |
| ε (Ho et al. 2020) | ``ε = -σ s`` | ``s = -ε / σ`` |
| x0, "data" (DPM-Solver++; Karras et al. 2022) | ``x0 = (x + σ² s) / α`` | ``s = (α x0 - x) / σ²`` |
| v = α ε - σ x0 (Salimans & Ho 2022, §4) | ``v = -(σ / α) (x + s)`` | ``ε = σ x + α v``, then ``s = -ε / σ`` |

The score adapters (:class:`EpsilonScore`, :class:`DataScore`, :class:`VelocityScore`) wrap a
network and are singular at t = 0 (σ(0) = 0), so they refuse ``t <= 0``; the inverse adapters
(:class:`EpsilonFromScore`, :class:`DataFromScore`, :class:`VelocityFromScore`) make the exact
ε, x0 or v predictor of a score (e.g. of Gaussian data, for the VLB or for tests).
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from ._checks import (TimeLike, broadcast_time, check_data, check_output, check_positive, check_time, exp_neg,
                      one_minus_exp_neg, sqrt)
from .protocols import Predictor, Score, accepts_float_time, declared_dim

__all__ = [
    "signal_scale",
    "noise_variance",
    "noise_std",
    "score_from_epsilon",
    "epsilon_from_score",
    "score_from_data",
    "data_from_score",
    "score_from_velocity",
    "velocity_from_score",
    "EpsilonScore",
    "DataScore",
    "VelocityScore",
    "EpsilonFromScore",
    "DataFromScore",
    "VelocityFromScore",
]

Scale = Union[float, Tensor]


# -- the OU's coefficients ---------------------------------------------------------------------

def _time(t: TimeLike) -> Scale:
    return t if isinstance(t, Tensor) else float(t)


def signal_scale(t: TimeLike) -> Scale:
    """``α(t) = e^{-t/2} = sqrt(ᾱ(t))``, the scale of x0 in x_t (Ho et al. 2020, eq. 4 in OU time). A float for a number,
    a tensor for a tensor (as are the other coefficients).

    Raises ValueError unless every t is a finite OU time >= 0 (as do the other coefficients;
    a tensor is read on the host).
    """
    check_time(t, "t")
    return _signal_scale(_time(t))


def noise_variance(t: TimeLike) -> Scale:
    """``σ²(t) = 1 - ᾱ(t) = 1 - e^{-t}``, computed as ``-expm1(-t)`` so it is accurate for small t."""
    check_time(t, "t")
    return _noise_variance(_time(t))


def noise_std(t: TimeLike) -> Scale:
    """``sqrt(1 - e^{-t})``, the standard deviation of the noise in x_t given x0
    (Ho et al. 2020, eq. 4 in OU time: ``x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε``)."""
    check_time(t, "t")
    return _noise_std(_time(t))


# Unchecked forms, for times already checked (the adapters below check t once, at the door).
def _signal_scale(t: Scale) -> Scale:
    return exp_neg(0.5 * t)


def _noise_variance(t: Scale) -> Scale:
    return one_minus_exp_neg(t)


def _noise_std(t: Scale) -> Scale:
    return sqrt(one_minus_exp_neg(t))


# -- conversions at one time -------------------------------------------------------------------

def score_from_epsilon(eps: Tensor, sigma: Scale) -> Tensor:
    """``s = -ε / σ`` with ``σ = sqrt(1 - ᾱ)`` (Vincent 2011; Ho et al. 2020, §3.2).

    Raises ValueError unless σ (a number or a tensor, read on the host) is in (0, inf).
    """
    check_positive(sigma, "sigma")
    return _score_from_epsilon(eps, sigma)


def _score_from_epsilon(eps: Tensor, sigma: Scale) -> Tensor:
    return -eps / sigma


def epsilon_from_score(score_value: Tensor, sigma: Scale) -> Tensor:
    """``ε = -σ s`` with ``σ = sqrt(1 - ᾱ)`` (Vincent 2011), the inverse of
    :func:`score_from_epsilon`."""
    return -sigma * score_value


def score_from_data(x0: Tensor, x: Tensor, t: TimeLike) -> Tensor:
    """``s = (α x0 - x) / σ²`` from a prediction x0 of the data at x = x_t (Tweedie's formula).

    ``t`` is the OU time: a number, a 0-d tensor or a (N,) tensor for x of shape (N, d) (as for
    the other conversions below).
    """
    return _score_from_data(x0, x, broadcast_time(t, x))


def data_from_score(score_value: Tensor, x: Tensor, t: TimeLike) -> Tensor:
    """``x0 = (x + σ² s) / α = E[x0 | x_t = x]``, the inverse of :func:`score_from_data`."""
    t = broadcast_time(t, x)
    return (x + _noise_variance(t) * score_value) / _signal_scale(t)


def score_from_velocity(v: Tensor, x: Tensor, t: TimeLike) -> Tensor:
    """``s = -ε / σ`` with ``ε = σ x + α v`` from a prediction of ``v = α ε - σ x0`` at x = x_t
    (Salimans & Ho 2022, §4; α² + σ² = 1)."""
    return _score_from_velocity(v, x, broadcast_time(t, x))


def velocity_from_score(score_value: Tensor, x: Tensor, t: TimeLike) -> Tensor:
    """``v = α ε - σ x0 = -(σ / α) (x + s)``, the inverse of :func:`score_from_velocity`
    (with ε = -σ s, x0 = (x + σ² s) / α and α² + σ² = 1)."""
    t = broadcast_time(t, x)
    return -(_noise_std(t) / _signal_scale(t)) * (x + score_value)


def _score_from_data(x0: Tensor, x: Tensor, t: Scale) -> Tensor:
    """:func:`score_from_data` at a time already broadcast against x."""
    return (_signal_scale(t) * x0 - x) / _noise_variance(t)


def _score_from_velocity(v: Tensor, x: Tensor, t: Scale) -> Tensor:
    """:func:`score_from_velocity` at a time already broadcast against x."""
    sigma = _noise_std(t)
    return _score_from_epsilon(sigma * x + _signal_scale(t) * v, sigma)


# -- a network's score -------------------------------------------------------------------------

class _NetworkScore:
    """The score of a network ``model(x, t)``; subclasses say how its output becomes s.

    Checks x and t once (t > 0: the conversions divide by σ(t), and σ(0) = 0), hands the model
    its times (a Python float when it declares ``accepts_float_time``, else a (N,) tensor of
    x's dtype and device), checks that it returned x's shape (a ValueError naming both shapes,
    never a silent broadcast) and converts the output at ``broadcast_time(t, x)``.
    """

    singular_at_zero = True

    def __init__(self, model: Predictor, name: str):
        if not callable(model):
            raise TypeError(f"{name} must be callable as {name}(x, t), got {type(model).__name__}")
        self.model = model
        self._name = name

    @property
    def dim(self) -> int | None:
        """The model's data dimension, when it declares one (``model.dim``)."""
        return declared_dim(self.model)

    def __call__(self, x: Tensor, t: TimeLike) -> Tensor:
        check_data(x, "x")
        check_time(t, "t", strict_low=True)
        if isinstance(t, (float, int)) and not isinstance(t, bool) and accepts_float_time(self.model):
            # The model takes the (already checked) Python float itself: no tensor of times to
            # re-check on the host, so a CUDA sampling loop never synchronises here.
            t_model = float(t)
        else:
            t_model = t.to(device=x.device, dtype=x.dtype) if isinstance(t, Tensor) else None
            if t_model is None or t_model.dim() == 0:
                t_model = torch.full(x.shape[:1], float(t), device=x.device, dtype=x.dtype)
        prediction = check_output(self.model(x, t_model), x, self._name)
        return self._to_score(prediction, x, broadcast_time(t, x))

    def score(self, x: Tensor, t: TimeLike) -> Tensor:
        """The same as calling the object."""
        return self(x, t)

    def _to_score(self, prediction: Tensor, x: Tensor, t: Scale) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"


class EpsilonScore(_NetworkScore):
    """The score of an ε-predictor: ``s(x, t) = -ε(x, t) / sqrt(1 - e^{-t})``
    (Vincent 2011; Ho et al. 2020, §3.2).

    Args:
        eps_model: callable ``eps_model(x, t)`` with x of shape (batch, d) and t a (batch,)
            tensor of OU times, returning ε of x's shape (an ``nn.Module`` such as
            :class:`diffsde.EpsilonMLP`). A model with ``accepts_float_time = True`` is
            handed a scalar time as a Python float instead.

    The division is singular at t = 0, so ``t <= 0`` raises ValueError: samplers stop at
    ``t_min > 0`` or take a final step that does not evaluate the score at 0.
    """

    def __init__(self, eps_model: Predictor):
        super().__init__(eps_model, "eps_model")

    @property
    def eps_model(self) -> Predictor:
        """The wrapped ε-network (also ``.model``)."""
        return self.model

    def _to_score(self, prediction: Tensor, x: Tensor, t: Scale) -> Tensor:
        return _score_from_epsilon(prediction, _noise_std(t))


class DataScore(_NetworkScore):
    """The score of an x0-predictor: ``s(x, t) = (e^{-t/2} x̂0(x, t) - x) / (1 - e^{-t})``
    (Tweedie's formula; :func:`score_from_data`).

    Args:
        data_model: callable ``data_model(x, t)`` -> the predicted clean data x̂0, x's shape;
            called as an ε-model is by :class:`EpsilonScore` (float times when it declares
            ``accepts_float_time``).

    Singular at t = 0 (division by 1 - e^{-t}): ``t <= 0`` raises ValueError.
    """

    def __init__(self, data_model: Predictor):
        super().__init__(data_model, "data_model")

    def _to_score(self, prediction: Tensor, x: Tensor, t: Scale) -> Tensor:
        return _score_from_data(prediction, x, t)


class VelocityScore(_NetworkScore):
    """The score of a v-predictor, ``v = α ε - σ x0`` with ``α = e^{-t/2}``, ``σ = sqrt(1 - e^{-t})``
    (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models", §4):
    ``ε = σ x + α v`` and ``s = -ε / σ`` (:func:`score_from_velocity`).

    Args:
        velocity_model: callable ``velocity_model(x, t)`` -> v, x's shape; called as an ε-model
            is by :class:`EpsilonScore`.

    Singular at t = 0 (division by σ): ``t <= 0`` raises ValueError.
    """

    def __init__(self, velocity_model: Predictor):
        super().__init__(velocity_model, "velocity_model")

    def _to_score(self, prediction: Tensor, x: Tensor, t: Scale) -> Tensor:
        return _score_from_velocity(prediction, x, t)


# -- a score's predictions ---------------------------------------------------------------------

class _ScorePrediction:
    """A predictor ``model(x, t)`` made from a score; ``dim`` is the score's."""

    def __init__(self, score: Score):
        if not callable(score):
            raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
        self.score = score
        self.dim = declared_dim(score)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.score).__name__})"


class EpsilonFromScore(_ScorePrediction):
    """An ε-predictor made from a score: ``ε(x, t) = -sqrt(1 - e^{-t}) s(x, t)``
    (Vincent 2011); e.g. the exact ε of Gaussian data for the VLB."""

    def __call__(self, x: Tensor, t: TimeLike) -> Tensor:
        return epsilon_from_score(check_output(self.score(x, t), x, "score"), _noise_std(broadcast_time(t, x)))


class DataFromScore(_ScorePrediction):
    """An x0-predictor made from a score: ``x̂0(x, t) = (x + (1 - e^{-t}) s(x, t)) / e^{-t/2}``
    (Tweedie's formula; :func:`data_from_score`), the posterior mean E[x0 | x_t = x] for an exact score."""

    def __call__(self, x: Tensor, t: TimeLike) -> Tensor:
        return data_from_score(check_output(self.score(x, t), x, "score"), x, t)


class VelocityFromScore(_ScorePrediction):
    """A v-predictor made from a score: ``v(x, t) = -(σ / α) (x + s(x, t))``
    (:func:`velocity_from_score`; Salimans & Ho 2022's v = α ε - σ x0)."""

    def __call__(self, x: Tensor, t: TimeLike) -> Tensor:
        return velocity_from_score(check_output(self.score(x, t), x, "score"), x, t)
