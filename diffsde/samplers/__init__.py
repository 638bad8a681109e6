"""Samplers of the reverse problem, all on one grid of forward OU times.

* :mod:`.steps`: the pure steps (vp, ddpm, em, ode Euler/Heun, pc, Langevin);
* :mod:`.registry`: one record per method (:class:`Sampler`), the registry :data:`METHODS`
  and :func:`resolve_method`;
* :mod:`.loop`: :func:`sample` and the one step loop;
* :mod:`.grids`: the grid a run uses and what a method needs of it;
* :mod:`.ends`: the Tweedie start and the final denoising step;
* :mod:`.ddim`, :mod:`.dpm_solver`, :mod:`.unipc`, :mod:`.dpm_solver_sde`, :mod:`.edm`: the
  samplers stepping in σ_VE or log-SNR (:mod:`diffsde.coordinates`);
* :mod:`.external`: the torchsde, torchdiffeq and scipy runners;
* :mod:`.noise`: where noise comes from (a generator, or probes for the exact law);
* :mod:`.capture`: the fixed-grid loop captured as one CUDA graph (``sample(..., capture=True)``).

Methods (``METHODS``; ``print(diffsde.METHODS)`` lists every variant with its declared orders):
``vp``, ``ddpm``, ``em``, ``ode`` (euler, heun, adaptive torchdiffeq and scipy solvers), ``torchsde`` (its
solvers by name), ``pc`` (a predictor and Langevin corrector steps), ``ddim``, ``dpm-solver``,
``unipc``, ``dpm-solver-sde``, ``edm``.
"""

from .errors import NonFiniteSampleError
from .external import ODE_ADAPTIVE, TORCHSDE_SOLVERS
from .ends import FINALS, PRIORS, check_final, denoise, tweedie_start
from .grids import check_grid, resolve_grid
from .loop import integrate, run_steps, sample
from .noise import GeneratorNoise, InjectedBrownian, ProbeNoise
from .registry import METHODS, Method, Sampler, featured_methods, register, resolve_method
from .capture import capture_cache_info, clear_capture_cache
from . import ddim  # noqa: F401
from . import dpm_solver  # noqa: F401
from . import edm  # noqa: F401
from . import unipc  # noqa: F401
from . import dpm_solver_sde  # noqa: F401
from .steps import langevin_step, snr_step_size

#: The fixed-step ODE solvers and their variant labels (kept for older code).
ODE_FIXED = {solver: f"ode-{solver}" for solver in ("euler", "heun")}

#: The registered method names (kept for older code; :data:`METHODS` is the registry).
SAMPLERS = METHODS


def plan(method: str, options: dict) -> Sampler:
    """The configured sampler for ``method`` and ``options`` (older spelling of
    :func:`resolve_method`)."""
    return resolve_method(method, **options)


__all__ = ["sample", "integrate", "FINALS", "PRIORS", "check_final", "denoise", "tweedie_start", "run_steps", "resolve_grid", "check_grid",
           "METHODS", "SAMPLERS", "Method", "Sampler", "register", "resolve_method", "featured_methods", "plan",
           "NonFiniteSampleError", "GeneratorNoise", "ProbeNoise", "InjectedBrownian", "langevin_step", "snr_step_size",
           "TORCHSDE_SOLVERS", "ODE_ADAPTIVE", "ODE_FIXED", "capture_cache_info", "clear_capture_cache"]
