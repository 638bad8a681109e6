"""One registry of sampling methods: each method declares what it is, in one place.

A *method* (:class:`Method`) is a name, a ``configure(**options) -> Sampler`` function that
checks its options, and its named variants (``"ode-heun"`` is ``"ode"`` with
``solver="heun"``). A configured method is a :class:`Sampler` record: its pure step (or an
external runner), its solver-state initialiser, its declared weak and strong orders, noise
draws and score evaluations per step, whether it evaluates the score at a step's end, what it
needs of the grid, and whether it is affine in (x_T, noise) for an affine score (then
:func:`diffsde.exact_output_law` gives its exact output law). :func:`diffsde.sample`, the exact
law, the studies, the CLI, tests and benchmarks read these records and never test a name.

Adding a sampler is one step function (or runner) plus one :func:`register` call.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Callable, Iterator, Union

from .._checks import ArgumentTypeError, check_bool
from .._table import format_table
from . import steps
from ..odeint import check_tolerances
from .external import (ODE_ADAPTIVE, ODE_ADAPTIVE_TORCHDIFFEQ, TORCHSDE_SOLVERS, run_ode_adaptive, run_ode_torchdiffeq,
                       run_torchsde)

__all__ = ["Sampler", "Method", "METHODS", "register", "resolve_method", "featured_methods"]

#: What a grid may be asked to satisfy, by name (checked in :func:`diffsde.samplers.grids.check_grid`):
#: "betas_below_one" (β < 1 on every step: the step divides by sqrt(1 - β)); "alpha_bars_normal" (ᾱ a
#: normal float64 number at every grid time, -log ᾱ <= 708.4: the step divides by ᾱ); "alpha_bars_below_one"
#: (ᾱ < 1 in float64 at every step's start: the step divides by sqrt(1 - ᾱ)).
GRID_NEEDS = ("betas_below_one", "alpha_bars_normal", "alpha_bars_below_one")

#: The clocks a step may be written in (:mod:`diffsde.coordinates`).
COORDINATES = ("t", "sigma_ve", "log_snr")


@dataclass(frozen=True)
class Sampler:
    """A configured sampling method: what it declares and how it steps.

    Attributes:
        name: the registered method name (e.g. "ode").
        label: how tables and reports name it (e.g. "ode-heun", "pc(corrector_steps=2)").
        options: the resolved options, as reported by ``sample(..., return_info=True)``.
        weak_order: declared weak order in the number of steps (None where it has none).
        strong_order: declared strong (pathwise) order with shared Brownian increments
            (None where it has none or it is not declared).
        noise_draws: standard normal draws per step, each of the state's shape.
        score_evals: score evaluations per step (None for adaptive solvers).
        evaluates_at_end: whether a step evaluates the score at its end time ``t_to``.
        affine: whether the output is affine in (x_T, noise) when the score is affine in x
            (fixed grid, no data-dependent step sizes): then its exact law exists.
        grid_needs: named grid requirements (:data:`GRID_NEEDS`).
        coordinates: the clock the step is written in (:data:`COORDINATES`): "t" (OU time: vp,
            ddpm, em, ode, torchsde, pc), "sigma_ve" (σ_VE = sqrt(e^t - 1) with y = x / α: ddim,
            edm) or "log_snr" (λ = log(α / σ): dpm-solver, unipc, dpm-solver-sde); a grid
            uniform in that clock is where its order shows first.
        step: the pure step ``step(score, x, interval, noise, state) -> (x, state)``, or None
            when ``runner`` integrates instead.
        init: ``init(x, grid) -> state``, the initial solver state (None: no state).
        runner: an external integration loop (torchsde, scipy) replacing the step loop.
        description: one line.
    """

    name: str
    label: str
    options: Mapping[str, Any]
    weak_order: float | None
    strong_order: float | None = None
    noise_draws: int = 1
    score_evals: int | None = 1
    evaluates_at_end: bool = False
    affine: bool = True
    grid_needs: tuple[str, ...] = ()
    coordinates: str = "t"
    step: Callable | None = field(default=None, repr=False)
    init: Callable | None = field(default=None, repr=False)
    runner: Callable | None = field(default=None, repr=False)
    description: str = ""

    @property
    def has_exact_law(self) -> bool:
        """Whether :func:`diffsde.exact_output_law` applies (the same as ``affine``)."""
        return self.affine

    @property
    def row_wise(self) -> bool:
        """Whether a sample's result reads its own row alone (no step size or error control taken over
        the batch), so it does not depend on the batch it is drawn in: the declaration ``affine``
        makes (:mod:`diffsde.samplers.chunks` pads only such runs)."""
        return self.affine

    @property
    def method(self) -> str:
        """The registered name (an alias of ``name`` kept for older code)."""
        return self.name

    def evals_per_step(self) -> int | None:
        """Score evaluations per step (older spelling of ``score_evals``)."""
        return self.score_evals

    def describe(self) -> dict:
        """The declaration as one plain row (for tables and reports)."""
        return {"method": self.label, "weak_order": self.weak_order, "strong_order": self.strong_order,
                "noise_draws": self.noise_draws, "score_evals": self.score_evals,
                "evaluates_at_end": self.evaluates_at_end, "affine": self.affine,
                "grid_needs": ",".join(self.grid_needs) or "-", "coordinates": self.coordinates,
                "description": self.description}


@dataclass(frozen=True)
class Method:
    """A registered method: its name, its option-checking constructor, its named variants
    (label -> options, e.g. ``{"ode-heun": {"solver": "heun"}}``) and the variants shown in
    overviews such as the demo (``featured``)."""

    name: str
    configure: Callable[..., Sampler]
    description: str
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    featured: tuple[str, ...] = ()

    def __call__(self, **options: Any) -> Sampler:
        return self.configure(**options)


class Registry(Mapping):
    """Name -> :class:`Method`; prints as a table of every variant with its declared orders."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def __getitem__(self, name: str) -> Method:
        return self._methods[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods)

    def __len__(self) -> int:
        return len(self._methods)

    def variants(self) -> dict[str, tuple[str, Mapping[str, Any]]]:
        """Every variant label -> (method name, options), the plain names included."""
        out: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for method in self._methods.values():
            out[method.name] = (method.name, {})
            for label, options in method.variants.items():
                out[label] = (method.name, options)
        return out

    def table(self) -> str:
        """A Markdown table of every variant's declaration."""
        rows = [resolve_method(label).describe() for label in self.variants()]
        return format_table(rows, ["method", "weak_order", "strong_order", "noise_draws", "score_evals",
                                   "evaluates_at_end", "affine", "grid_needs", "coordinates", "description"])

    def __repr__(self) -> str:
        return self.table()

    __str__ = __repr__


METHODS = Registry()


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (its name and variant labels must be new)."""
    taken = set(METHODS.variants())
    clashes = sorted(({method.name} | set(method.variants)) & taken)
    if clashes:
        raise ValueError(f"method name or variant {clashes[0]!r} is already registered")
    METHODS._methods[method.name] = method
    return method


MethodLike = Union[str, Sampler, "tuple[str, Mapping[str, Any]]"]


def resolve_method(spec: MethodLike, **options: Any) -> Sampler:
    """The :class:`Sampler` a spec names, its options checked by the method itself.

    ``spec`` is a registered name (``"em"``, ``"ode"``), a variant label (``"ode-heun"``,
    ``"torchsde-srk"``), a ``(spec, options)`` pair (labelled ``"pc(corrector_steps=2)"``) or a
    :class:`Sampler` (returned as it is; then no options may be given). ``options`` are added to
    the spec's own.

    Raises:
        ValueError: an unknown name or variant, or a bad option value.
        TypeError: an unknown option, or a spec of the wrong type.
    """
    if isinstance(spec, Sampler):
        if options:
            raise TypeError(f"options {sorted(options)} cannot be added to an already configured sampler "
                            f"{spec.label!r}; resolve its name with the options instead")
        return spec
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[0], str) or not isinstance(spec[1], Mapping):
            raise TypeError(f"a method spec pair must be (name, options dict), got {spec!r}")
        extra = {**spec[1], **options}
        base = resolve_method(spec[0], **extra)
        label = spec[0] + ("(" + ", ".join(f"{k}={v}" for k, v in extra.items()) + ")" if extra else "")
        return dataclasses.replace(base, label=label)
    if not isinstance(spec, str):
        raise TypeError(f"a method spec must be a str, a (name, options) pair or a Sampler, "
                        f"got {type(spec).__name__}")
    known = METHODS.variants()
    if spec not in known:
        raise ValueError(f"unknown method {spec!r}; choose from {list(METHODS)} or a variant {list(known)}")
    name, preset = known[spec]
    clashes = sorted(set(preset) & set(options))
    if clashes:
        raise TypeError(f"option {clashes[0]!r} is fixed by the variant {spec!r}; use {name!r} to set it")
    sampler = METHODS[name].configure(**preset, **options)
    return sampler if spec == name and options else dataclasses.replace(sampler, label=spec)


def featured_methods() -> list[str]:
    """The variants shown in overviews (the demo's table), in registry order."""
    return [label for method in METHODS.values() for label in method.featured]


# --------------------------------------------------------------------------------------
# Option checks shared by the configure functions.
# --------------------------------------------------------------------------------------

def _options(given: Mapping[str, Any], defaults: Mapping[str, Any], method: str) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r} for method {method!r}; allowed: {sorted(defaults) or 'none'}")
    return {**defaults, **given}


def _positive_number(value: Any, name: str) -> float:
    """``value`` as a float in (0, inf): a real number, finite, > 0 (not a bool, NaN or inf)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentTypeError(f"{name} must be a number > 0, in (0, inf), got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a number > 0, in (0, inf), got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------
# The methods.
# --------------------------------------------------------------------------------------

def _vp(**options: Any) -> Sampler:
    _options(options, {}, "vp")
    return Sampler("vp", "vp", {}, weak_order=1.0, strong_order=1.0, step=steps.vp_step,
                   grid_needs=("betas_below_one",),
                   description="discrete VP ancestral step (Song et al. 2021, App. E)")


def _ddpm(**options: Any) -> Sampler:
    opts = _options(options, {"variance": "beta"}, "ddpm")
    if opts["variance"] not in ("beta", "beta_tilde"):
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {opts['variance']!r}")
    # The last step adds no noise, so the path misses an O(sqrt(h)) increment: no strong order >= 1.
    # The step divides by sqrt(α) = sqrt(ᾱ_from / ᾱ_to) and by sqrt(1 - ᾱ_from).
    return Sampler("ddpm", "ddpm", opts, weak_order=1.0, step=functools.partial(steps.ddpm_step, **opts),
                   grid_needs=("alpha_bars_normal", "alpha_bars_below_one"),
                   description="Ho et al. 2020's ancestral step, sigma^2 = " + opts["variance"])


def _em(**options: Any) -> Sampler:
    _options(options, {}, "em")
    return Sampler("em", "em", {}, weak_order=1.0, strong_order=1.0, step=steps.em_step,
                   description="Euler-Maruyama on the reverse SDE")


_ODE_STEPS = {"euler": (steps.ode_euler_step, 1.0, 1, False), "heun": (steps.ode_heun_step, 2.0, 2, True)}
_ODE_SOLVER_FAMILIES = (f"{sorted(_ODE_STEPS)} (fixed step), {list(ODE_ADAPTIVE_TORCHDIFFEQ)} (adaptive, torchdiffeq, "
                        f"on the device) or {list(ODE_ADAPTIVE)} (adaptive, scipy.integrate.solve_ivp, on the host)")


def _ode(**options: Any) -> Sampler:
    """The probability-flow ODE: Euler or Heun on the grid, or an adaptive solver (torchdiffeq's
    pairs on x's device with per-element error control, rtol and atol in (0, 1); or scipy's
    ``solve_ivp`` on the host, rtol and atol > 0) that reports the grid's ends (and times)."""
    opts = _options(options, {"solver": "euler", "rtol": 1e-5, "atol": 1e-5}, "ode")
    solver = opts["solver"]
    if not isinstance(solver, str):
        raise ArgumentTypeError(f"solver must be a str, one of {_ODE_SOLVER_FAMILIES}, got "
                                f"{type(solver).__name__} {solver!r}")
    if solver in _ODE_STEPS:
        if "rtol" in options or "atol" in options:
            raise TypeError(f"rtol/atol apply to the adaptive ODE solvers {list(ODE_ADAPTIVE_TORCHDIFFEQ)} and "
                            f"{list(ODE_ADAPTIVE)}, not to {solver!r}")
        step, order, evals, at_end = _ODE_STEPS[solver]
        # A deterministic path: its pathwise (strong) error is its error, so both orders agree.
        return Sampler("ode", f"ode-{solver}", {"solver": solver}, weak_order=order, strong_order=order,
                       noise_draws=0, score_evals=evals, evaluates_at_end=at_end, step=step,
                       description=f"{solver.capitalize()} on the probability-flow ODE")
    if solver in ODE_ADAPTIVE_TORCHDIFFEQ:
        rtol, atol = check_tolerances(opts["rtol"], opts["atol"])
        return Sampler("ode", f"ode-{solver}", {"solver": solver, "rtol": rtol, "atol": atol}, weak_order=None,
                       noise_draws=0, score_evals=None, evaluates_at_end=True, affine=False, runner=run_ode_torchdiffeq,
                       description=f"torchdiffeq {solver} on the probability-flow ODE (adaptive, on the device)")
    if solver in ODE_ADAPTIVE:
        for name in ("rtol", "atol"):
            _positive_number(opts[name], name)
        return Sampler("ode", f"ode-{solver}", opts, weak_order=None, noise_draws=0, score_evals=None,
                       evaluates_at_end=True, affine=False, runner=run_ode_adaptive,
                       description=f"scipy solve_ivp {solver} on the probability-flow ODE (adaptive)")
    raise ValueError(f"unknown ODE solver {solver!r}; choose from {_ODE_SOLVER_FAMILIES}")


# torchsde solver -> (weak order, strong order) on the reverse SDE, whose noise is additive (g = 1).
# "srk" is Rößler's SRA1 (Rößler 2010, "Runge–Kutta methods for the strong approximation of
# solutions of stochastic differential equations", SIAM J. Numer. Anal. 48, Table 6.1): strong
# order 1.5, weak order 2. "heun" with additive noise is Kloeden & Platen's explicit order 2.0
# weak scheme (Kloeden & Platen 1992, "Numerical Solution of SDEs", Sec. 15.1): weak order 2.
# The others are weak order 1 ("midpoint" and "reversible_heun" gain an order on a linear drift,
# where the f'' term they miss vanishes). Checked by slopes: weak orders with exact laws
# (tests/test_samplers.py), strong orders on one Brownian path (tests/test_registry.py).
_TORCHSDE_ORDERS = {"euler": (1.0, 1.0), "milstein": (1.0, 1.0), "srk": (2.0, 1.5), "midpoint": (1.0, 1.0),
                    "heun": (2.0, 1.0), "reversible_heun": (1.0, 1.0)}


def _torchsde(**options: Any) -> Sampler:
    opts = _options(options, {"solver": "euler", "adaptive": False, "rtol": 1e-3, "atol": 1e-3, "dt": None},
                    "torchsde")
    solver = opts["solver"]
    if not isinstance(solver, str) or solver not in TORCHSDE_SOLVERS:
        raise ValueError(f"unknown torchsde solver {solver!r}; choose from {sorted(TORCHSDE_SOLVERS)}")
    adaptive = check_bool(opts["adaptive"], "adaptive")
    if not adaptive and (opts["dt"] is not None or "rtol" in options or "atol" in options):
        raise TypeError("dt, rtol and atol apply only with adaptive=True (fixed steps follow the grid)")
    if adaptive:
        # torchsde checks none of these: dt = nan/inf or rtol <= 0 loop forever, dt < 0 recurses.
        for name in ("rtol", "atol"):
            _positive_number(opts[name], name)
        if opts["dt"] is not None:
            _positive_number(opts["dt"], "dt")
    weak, strong = _TORCHSDE_ORDERS[solver]
    # Euler and Milstein evaluate the drift at the left end of a step only; the others reach the end.
    at_end = solver not in ("euler", "milstein") or bool(adaptive)
    # Report (and accept back) only the options that act: a fixed-grid run ignores rtol/atol/dt.
    acting = opts if adaptive else {"solver": solver}
    return Sampler("torchsde", f"torchsde-{solver}", acting, weak_order=None if adaptive else weak,
                   strong_order=None if adaptive else strong,
                   noise_draws=0 if adaptive else TORCHSDE_SOLVERS[solver].noise_draws,
                   score_evals=None if adaptive else TORCHSDE_SOLVERS[solver].score_evals,
                   evaluates_at_end=at_end, affine=not adaptive, runner=run_torchsde,
                   description=f"torchsde.sdeint {solver} on the reverse SDE" + (" (adaptive)" if adaptive else ""))


_PREDICTORS = ("vp", "ddpm", "em", "ode")


def _pc(**options: Any) -> Sampler:
    predictor_name = options.get("predictor", "em")
    corrector_options = {"corrector_steps": 1, "snr": 0.16, "step_size": None}
    if predictor_name not in _PREDICTORS:
        raise ValueError(f"predictor must be one of {list(_PREDICTORS)} (fixed-step), got {predictor_name!r}")
    predictor = METHODS[predictor_name].configure(
        **{k: v for k, v in options.items() if k != "predictor" and k not in corrector_options})
    if predictor.step is None:
        raise ValueError("the pc predictor must be a fixed-step method (ode solver 'euler' or 'heun')")
    opts = {**corrector_options, **{k: v for k, v in options.items() if k in corrector_options}}
    corrector_steps, snr, step_size = opts["corrector_steps"], opts["snr"], opts["step_size"]
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an int >= 0, got {corrector_steps!r}")
    _positive_number(snr, "snr")
    if step_size is not None and (isinstance(step_size, bool) or not isinstance(step_size, Real)
                                  or not (math.isfinite(step_size) and step_size > 0)):
        raise ValueError(f"step_size must be None (Song et al.'s snr rule) or a number > 0, in (0, inf), "
                         f"got {step_size!r}")
    step = functools.partial(steps.pc_step, predictor=predictor.step, predictor_draws=predictor.noise_draws,
                             corrector_steps=corrector_steps, snr=float(snr),
                             step_size=None if step_size is None else float(step_size))
    # A Langevin corrector with a step size that does not shrink with the grid leaves an O(ε)
    # bias at every time, so pc has no order in n unless corrector_steps = 0. Song's snr rule
    # uses batch statistics of the score, so the step is then not affine in each sample; it
    # also divides by ᾱ_to (α = ᾱ_from / ᾱ_to), which must not underflow.
    snr_rule = step_size is None and corrector_steps > 0
    needs = predictor.grid_needs + (("alpha_bars_normal",) if snr_rule and "alpha_bars_normal"
                                    not in predictor.grid_needs else ())
    return Sampler("pc", "pc", {"predictor": predictor_name, **predictor.options, "corrector_steps": corrector_steps,
                                "snr": snr, "step_size": step_size},
                   weak_order=None if corrector_steps else predictor.weak_order,
                   strong_order=None if corrector_steps else predictor.strong_order,
                   noise_draws=predictor.noise_draws + corrector_steps,
                   score_evals=predictor.score_evals + corrector_steps,
                   evaluates_at_end=corrector_steps > 0 or predictor.evaluates_at_end,
                   affine=predictor.affine and not snr_rule,
                   grid_needs=needs, step=step, init=predictor.init,
                   description=f"{predictor.label} predictor + {corrector_steps} Langevin corrector step(s)")


register(Method("vp", _vp, "discrete VP ancestral step", featured=("vp",)))
register(Method("ddpm", _ddpm, "Ho et al. 2020's ancestral step", featured=("ddpm",)))
register(Method("em", _em, "Euler-Maruyama on the reverse SDE", featured=("em",)))
register(Method("ode", _ode, "the probability-flow ODE",
                variants={f"ode-{solver}": {"solver": solver}
                          for solver in (*_ODE_STEPS, *ODE_ADAPTIVE, *ODE_ADAPTIVE_TORCHDIFFEQ)},
                featured=("ode-euler", "ode-heun")))
register(Method("torchsde", _torchsde, "the reverse SDE handed to torchsde.sdeint",
                variants={f"torchsde-{solver}": {"solver": solver} for solver in TORCHSDE_SOLVERS},
                featured=("torchsde-euler",)))
register(Method("pc", _pc, "predictor-corrector with Langevin steps", featured=("pc",)))
