"""How the studies name methods: through the sampler registry, like everything else.

A method spec is what :func:`diffsde.resolve_method` accepts — a name (``"em"``), a variant
(``"ode-heun"``, ``"torchsde-srk"``), a ``(spec, options)`` pair (labelled
``"pc(corrector_steps=2)"``) or a configured :class:`~diffsde.samplers.Sampler` — and a study
resolves each spec once, at its entry, into the registry's record; everything a study reads
about a method (label, declared weak order, score evaluations per step, whether it has an exact
law) comes from that record, and the record itself is what it hands to :func:`diffsde.sample`
and :func:`diffsde.exact_output_law`.
"""

from __future__ import annotations

from typing import Mapping, Sequence, Union

from ..samplers import Sampler, featured_methods, resolve_method
from ..samplers.registry import MethodLike

__all__ = ["DEFAULT_METHODS", "MethodSpec", "MethodLike", "resolve_method", "study_method", "study_methods"]

#: The studies' default methods, read from the registry: the featured variants that run on
#: diffsde's own step loop and declare a weak order (vp, ddpm, em, ode-euler, ode-heun today).
DEFAULT_METHODS = tuple(label for label in featured_methods()
                        if (sampler := resolve_method(label)).runner is None and sampler.weak_order is not None)

#: The record a spec resolves to (older name; it is the registry's :class:`Sampler`).
MethodSpec = Sampler


def study_method(spec: MethodLike) -> Sampler:
    """One method spec as the registry's record (:func:`diffsde.resolve_method`).

    Raises:
        ValueError / TypeError: as :func:`diffsde.resolve_method`.
    """
    return resolve_method(spec)


def study_methods(methods: Union[MethodLike, Sequence[MethodLike]]) -> list[Sampler]:
    """A spec or a sequence of specs as registry records with distinct labels.

    Raises:
        ValueError: no methods, or two with the same label; ValueError / TypeError from
            :func:`diffsde.resolve_method`.
    """
    if isinstance(methods, (str, Sampler)) or (isinstance(methods, tuple) and len(methods) == 2
                                               and isinstance(methods[1], Mapping)):
        methods = [methods]
    specs = [study_method(spec) for spec in methods]
    if not specs:
        raise ValueError("methods is empty: give at least one method spec")
    labels = [spec.label for spec in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"methods must have distinct labels; {duplicates[0]!r} appears twice")
    return specs
