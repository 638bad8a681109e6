"""Compatibility alias of :mod:`diffsde.studies` (and :mod:`diffsde.orders`).

``diffsde.experiments`` was the studies' module before they were split by concept into the
package :mod:`diffsde.studies`; it re-exports the same public names, so
``from diffsde.experiments import convergence_study`` keeps working. New code imports from
:mod:`diffsde.studies` (and the order fits from :mod:`diffsde.orders`).
"""

from .orders import fit_order, order_fit
from .studies import (
    DEFAULT_METHODS,
    LINEAR_T,
    SCHEDULES,
    GridSpec,
    MethodSpec,
    MonteCarlo,
    StudyResult,
    alpha_bar_limit,
    compare_samplers,
    convergence_study,
    error_budget,
    resolve_method,
)
from .studies._args import ESTIMATORS, PRIORS
from .studies.results import RESULT_FORMAT, RESULT_VERSION

__all__ = [
    "alpha_bar_limit",
    "fit_order",
    "order_fit",
    "MethodSpec",
    "resolve_method",
    "MonteCarlo",
    "StudyResult",
    "convergence_study",
    "compare_samplers",
    "error_budget",
]
