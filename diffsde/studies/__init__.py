"""Studies the toolkit exists for: the continuous-time limit, convergence orders, sampler
comparisons, error budgets, likelihoods and the Gaussian recovery check.

* :func:`alpha_bar_limit` (:mod:`.limit`): how fast ᾱ_i -> e^{-t_i} (Song et al. 2021, appendix B).
* :func:`convergence_study` (:mod:`.convergence`): error against the number of steps, per
  method, with fitted orders and confidence intervals (:mod:`diffsde.orders`).
* :func:`compare_samplers` (:mod:`.comparison`): error against score evaluations and wall time.
* :func:`likelihood_study` (:mod:`.likelihood`): the NLL of the same data by the
  probability-flow ODE (per tolerance), DDPM's bound (per n and variance) and the exact −log p0.
* :func:`error_budget` (:mod:`.budget`): the final error split into score error,
  discretization, prior mismatch and early stopping, by switching each off in turn.
* :mod:`.recovery` and :mod:`.allowances`: a learned score of a Gaussian, sampled by every
  sampler, checked against allowances derived from exact laws.

The *target* is an exact score (:class:`~diffsde.GaussianScore`,
:class:`~diffsde.GaussianMixtureScore`) or a toy with one (``diffsde.toys.gaussian()``,
``ring()``, ...): it supplies the exact p_t every error is measured against, with one of two
estimators (:mod:`.estimators`): ``"exact"`` (exact W2 of :func:`diffsde.exact_output_law`)
or ``"monte_carlo"`` (sliced W2 against exact samples, with a floor from the sample size);
every row names its estimator.

Methods are given as specs: ``"vp"``, ``"ddpm"``, ``"em"``, ``"pc"``, ``"ode-euler"``,
``"ode-heun"``, ``"ode-RK45"`` (any ode solver), ``"torchsde-euler"`` (any torchsde solver),
or a ``(spec, options)`` pair such as ``("ddpm", {"variance": "beta_tilde"})``; see
:func:`resolve_method`. Grids are ``"linear"``, ``"uniform"`` or a callable ``n -> TimeGrid``
(:mod:`.grids`): the linear one takes any n >= 1 (respaced below 21 steps,
:func:`linear_schedule`), and every grid of a sweep ends at t_min, so its rows share one t_end
and report the ``n`` asked and the ``steps`` taken. Results are :class:`StudyResult` objects
(:mod:`.results`): plain lists of dict rows (plus summary rows and settings) that print as tables
and save to JSON/CSV.
"""

from ..orders import fit_order, order_fit
from .budget import error_budget
from .comparison import compare_samplers
from .convergence import convergence_study
from .estimators import MonteCarlo
from .grids import LINEAR_T, GridSpec, linear_schedule
from .likelihood import likelihood_study
from .limit import SCHEDULES, alpha_bar_limit
from .methods import DEFAULT_METHODS, MethodSpec, resolve_method
from .results import StudyResult

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
    "likelihood_study",
    "DEFAULT_METHODS",
    "SCHEDULES",
    "LINEAR_T",
    "GridSpec",
    "linear_schedule",
]
