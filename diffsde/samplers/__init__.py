"""Samplers of the reverse problem, all on one grid of forward OU times.

* :mod:`.steps`: the pure steps (vp, ddpm, em, ode Euler/Heun, pc, Langevin);
* :mod:`.registry`: one record per method (:class:`Sampler`), the registry :data:`METHODS`
  and :func:`resolve_method`;
* :mod:`.loop`: :func:`sample` and the one step loop;
* :mod:`.external`: the torchsde and scipy runners;
* :mod:`.noise`: where noise comes from (a generator, or probes for the exact law).

Methods (``METHODS``; ``print(diffsde.METHODS)`` lists every variant with its declared orders):
``vp``, ``ddpm``, ``em``, ``ode`` (euler, heun, adaptive scipy solvers), ``torchsde`` (its
solvers by name), ``pc`` (a predictor and Langevin corrector steps).
"""

from .errors import NonFiniteSampleError
from .external import ODE_ADAPTIVE, TORCHSDE_SOLVERS
from .loop import check_grid, integrate, resolve_grid, run_steps, sample
from .noise import GeneratorNoise, InjectedBrownian, ProbeNoise
from .registry import METHODS, Method, Sampler, featured_methods, register, resolve_method
from .steps import langevin_step, snr_step_size

#: The fixed-step ODE solvers and their variant labels (kept for older code).
ODE_FIXED = {solver: f"ode-{solver}" for solver in ("euler", "heun")}

#: The registered method names (kept for older code; :data:`METHODS` is the registry).
SAMPLERS = METHODS


def plan(method: str, options: dict) -> Sampler:
    """The configured sampler for ``method`` and ``options`` (older spelling of
    :func:`resolve_method`)."""
    return resolve_method(method, **options)


__all__ = ["sample", "integrate", "run_steps", "resolve_grid", "check_grid", "METHODS", "SAMPLERS", "Method",
           "Sampler", "register", "resolve_method", "featured_methods", "plan", "NonFiniteSampleError",
           "GeneratorNoise", "ProbeNoise", "InjectedBrownian", "langevin_step", "snr_step_size",
           "TORCHSDE_SOLVERS", "ODE_ADAPTIVE", "ODE_FIXED"]
