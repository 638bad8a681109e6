"""Argument checks shared by the studies: the target, the score, step counts and named choices."""

from __future__ import annotations

from numbers import Integral
from typing import Sequence

from ..scores import GaussianMixtureScore

ESTIMATORS = ("auto", "exact", "monte_carlo")
PRIORS = ("normal", "exact")


def exact_target(target) -> GaussianMixtureScore:
    """The exact score of a target: the score itself, or a toy's ``exact_score``.

    Raises:
        TypeError: the target has no closed-form p_t.
    """
    if isinstance(target, GaussianMixtureScore):
        return target
    exact = getattr(target, "exact_score", None)
    if getattr(target, "has_exact_score", False) and isinstance(exact, GaussianMixtureScore):
        return exact
    raise TypeError(f"target must be a GaussianScore, a GaussianMixtureScore or a toy with an exact score "
                    f"(e.g. diffsde.toys.ring()); got {target!r}, which has no closed-form p_t")


def check_score(score):
    """Refuse a score that is not callable as ``score(x, t)``; returns it."""
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
    return score


def check_ns(ns, minimum: int) -> list[int]:
    """At least ``minimum`` strictly increasing positive step counts, as ints."""
    try:
        values = list(ns)
    except TypeError as err:
        raise TypeError(f"ns must be a sequence of step counts, got {type(ns).__name__}") from err
    for n in values:
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
            raise ValueError(f"ns must hold positive ints, got {n!r}")
    values = [int(n) for n in values]
    if len(values) < minimum:
        raise ValueError(f"ns must hold at least {minimum} step counts, got {len(values)}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"ns must be strictly increasing, got {values}")
    return values


def check_choice(value, name: str, allowed: Sequence[str]) -> str:
    """Refuse a value outside ``allowed``; returns it."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value
