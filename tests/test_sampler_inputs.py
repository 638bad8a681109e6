"""What the samplers refuse, and what they accept, at the door (issue 11's items on sampling).

A wrong score shape, a grid whose ᾱ underflows, an unchecked solver option, a bad prior or seed,
an unknown dimension: each gets an error naming the argument and the allowed range, before any
work or at the first score evaluation. Half-precision states are carried in float32.
"""

import math

import numpy as np
import pytest
import torch

from conftest import make_generator
from diffsde import (BetaSchedule, GaussianScore, NonFiniteSampleError, TimeGrid, exact_output_law,
                     resolve_method, sample)
from diffsde.samplers import METHODS, ODE_ADAPTIVE, check_grid
from diffsde.samplers.grids import _GRID_CHECKS
from diffsde.samplers.registry import GRID_NEEDS

GAUSSIAN = GaussianScore(torch.tensor([1.0, -0.5], dtype=torch.float64),
                         torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64))
SHORT = [1.5, 0.9, 0.5, 0.01]  # a 3-step bare grid (β = Δt < 1, t_min > 0): every method may run on it


def every_variant() -> list[tuple[str, dict]]:
    """Every registered variant, plus the adaptive torchsde run and a pc run whose corrector
    evaluates the score too (Heun predictor, two corrector steps)."""
    return [(label, {}) for label in METHODS.variants()] + [
        ("torchsde", {"adaptive": True}), ("pc", {"predictor": "ode", "solver": "heun", "corrector_steps": 2})]


VARIANTS = every_variant()


class CountingScore:
    """A plain callable (no ``dim``) that counts its calls and returns ``-x[:, :columns]``."""

    def __init__(self, columns=None):
        self.columns, self.calls = columns, 0

    def __call__(self, x, t):
        self.calls += 1
        return -x if self.columns is None else -x[:, :self.columns]


# --------------------------------------------------------------------------------------
# Item 11: the score's output shape.
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,options", VARIANTS, ids=[f"{m}{o or ''}" for m, o in VARIANTS])
def test_a_score_of_the_wrong_shape_is_refused_at_its_first_evaluation(device, method, options):
    # The example: -x[:, :1] broadcast silently to (4, 2) before.
    score = CountingScore(columns=1)
    x_T = torch.zeros(4, 2, device=device)
    with pytest.raises(ValueError, match=r"returned shape \(4, 1\) for x of shape \(4, 2\)"):
        sample(score, method, x_T=x_T, grid=SHORT, generator=make_generator(device, 0), **options)
    assert score.calls == 1


def test_a_score_returning_no_tensor_is_refused():
    with pytest.raises(TypeError, match="returned float"):
        sample(lambda x, t: 0.0, "em", x_T=torch.zeros(4, 2), grid=SHORT, generator=0)


def test_the_shape_check_leaves_results_unchanged():
    # The check wraps the score once per run; the numbers are those of the score itself.
    score = CountingScore()
    x = sample(score, "ode-heun", x_T=torch.ones(3, 2, dtype=torch.float64), grid=[1.0, 0.0])
    # One Heun step of dx/dt' = ½ x + ½ s = 0 for s = -x: x stays put, exactly.
    assert torch.equal(x, torch.ones(3, 2, dtype=torch.float64)) and score.calls == 2


# --------------------------------------------------------------------------------------
# Item 13: ᾱ underflowing float64, for the methods that divide by it.
# --------------------------------------------------------------------------------------

LARGEST_TIME = -math.log(np.finfo(np.float64).tiny)  # 708.396...: e^-t is a normal float64 up to here


def test_a_grid_whose_alpha_bar_underflows_is_refused_by_the_law_and_the_sampler():
    # e^-800 underflows to 0 in float64: the law was NaN and sample blamed the score.
    with pytest.raises(ValueError, match=r"ᾱ = 0 at grid time t = 800 .*underflows in float64.*708\.396"):
        exact_output_law("ddpm", GAUSSIAN, grid=[800.0, 0.0])
    with pytest.raises(ValueError, match="underflows in float64"):
        sample(GAUSSIAN, "ddpm", grid=[800.0, 0.0], n_samples=3, generator=0)
    # The boundary is float64's smallest normal number: just inside it the grid is accepted.
    ddpm = resolve_method("ddpm")
    check_grid(ddpm, TimeGrid.from_times([LARGEST_TIME - 1e-9, 0.0]), GAUSSIAN)
    with pytest.raises(ValueError, match="largest usable time of this grid is 700"):
        check_grid(ddpm, TimeGrid.from_times([LARGEST_TIME + 1e-9, 700.0, 0.0]), GAUSSIAN)


def test_a_start_time_whose_one_minus_alpha_bar_rounds_to_zero_is_refused_for_ddpm():
    # e^-1e-17 rounds to 1: ddpm divided 0 by sqrt(1 - ᾱ) = 0 before.
    with pytest.raises(ValueError, match=r"1 - ᾱ = 0"):
        exact_output_law("ddpm", GAUSSIAN, grid=[1.0, 1e-17, 0.0])


def test_the_alpha_bar_rules_are_declared_per_method():
    assert set(resolve_method("ddpm").grid_needs) == {"alpha_bars_normal", "alpha_bars_below_one"}
    assert "alpha_bars_normal" in resolve_method("pc").grid_needs  # Song's snr rule divides by ᾱ_to
    assert "alpha_bars_normal" not in resolve_method("pc", step_size=0.01).grid_needs
    with pytest.raises(ValueError, match="underflows"):
        sample(GAUSSIAN, "pc", grid=[800.0, 799.0, 0.5], n_samples=3, generator=0)
    # A method that never reads ᾱ runs on the same grid (the score is finite there).
    for method, options in (("em", {}), ("pc", {"step_size": 0.01})):
        x = sample(GAUSSIAN, method, grid=[800.0, 799.0, 0.5], n_samples=3, generator=0, **options)
        assert bool(torch.isfinite(x).all())


def test_every_declared_grid_need_has_its_check():
    assert set(GRID_NEEDS) == set(_GRID_CHECKS)
    for method, options in VARIANTS:
        assert set(resolve_method(method, **options).grid_needs) <= set(GRID_NEEDS), method


# --------------------------------------------------------------------------------------
# Item 14: dtypes. Coefficients in float64, states floating, half carried in float32.
# --------------------------------------------------------------------------------------

def test_a_hand_made_grid_must_hold_float64_and_strictly_decreasing_times():
    # Times rounded through float16 (a schedule moved to half precision did this) repeat, so a
    # step would have length 0: refused before any step instead of a ZeroDivisionError.
    rounded = torch.tensor([10.0, 9.999, 9.998, 0.0], dtype=torch.float16).double()
    grid = TimeGrid(rounded, rounded[:-1] - rounded[1:], torch.exp(-rounded), source="times")
    with pytest.raises(ValueError, match="decrease strictly"):
        sample(GAUSSIAN, "ddpm", grid=grid, n_samples=3, generator=0)
    half = TimeGrid(*(v.half() for v in (grid.times, grid.betas, grid.alpha_bars)))
    with pytest.raises(TypeError, match="float64 tensor"):
        sample(GAUSSIAN, "em", grid=half, n_samples=3, generator=0)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"n_samples": 3, "dtype": torch.int64}, "floating-point"),
    ({"n_samples": 3, "dtype": torch.complex64}, "floating-point"),
    ({"n_samples": 3, "dtype": "float32"}, "torch.dtype"),
    ({"x_T": torch.zeros(3, 2, dtype=torch.int64)}, "floating-point"),
    ({"x_T": torch.zeros(3, 2, dtype=torch.complex64)}, "floating-point"),
])
def test_integer_and_complex_states_are_refused(kwargs, fragment):
    with pytest.raises(TypeError, match=fragment):
        sample(GAUSSIAN, "em", grid=SHORT, generator=0, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method,options", [("ddpm", {}), ("ode-heun", {}), ("torchsde", {}), ("ode-RK45", {}),
                                            ("pc", {})])
def test_a_half_precision_run_is_the_float32_run_with_the_score_evaluated_in_half(device, dtype, method, options):
    # The definition of the half-precision run: state, noise and updates in float32, the score
    # evaluated on the state rounded to the half dtype, the result rounded once at the end.
    x_T = torch.randn(64, 2, generator=make_generator(device, 1), device=device).to(dtype)
    grid = BetaSchedule.linear(50).grid(t_min=1e-3)
    x, path = sample(GAUSSIAN, method, x_T=x_T, grid=grid, generator=make_generator(device, 2),
                     return_path=True, **options)
    reference, reference_path = sample(lambda y, t: GAUSSIAN(y.to(dtype), t).float(), method, x_T=x_T.float(),
                                       grid=grid, generator=make_generator(device, 2), return_path=True, **options)
    assert x.dtype == path.dtype == dtype
    assert torch.equal(x, reference.to(dtype)) and torch.equal(path, reference_path.to(dtype))


def test_bfloat16_heun_is_as_accurate_as_its_score():
    # Heun on the probability-flow ODE of the Gaussian, 200 steps, from the same x_T in bfloat16
    # and in float64. With bfloat16's unit roundoff u = 2^-8: carried in float32, only the score's
    # rounding (of its input and of its output, u each) and the final rounding of the result remain,
    # a velocity error of a few u·|x| integrated by a flow of gain O(1) (data variances 1.5 and 0.3)
    # over t in [0, 10], plus u·|x|. Bound: 4 u max|x| (measured 1.7 u). Carried in bfloat16, the
    # state lost every update below half an ulp and the error was 42 u.
    x_T = torch.randn(256, 2, generator=make_generator("cpu", 3), dtype=torch.float64)
    grid = BetaSchedule.linear(200).grid(t_min=1e-3)
    exact = sample(GAUSSIAN, "ode-heun", x_T=x_T, grid=grid)
    half = sample(GAUSSIAN, "ode-heun", x_T=x_T.to(torch.bfloat16), grid=grid).double()
    u = 2.0 ** -8
    assert float((half - exact).abs().max()) <= 4 * u * float(exact.abs().max())


def test_half_samples_that_overflow_are_refused():
    # One Euler step of dx/dt' = ½ x + ½ s = x (s = x) over t' in [0, 2] triples x: 180000 is finite
    # in float32, beyond float16's largest number 65504 when returned.
    with pytest.raises(NonFiniteSampleError, match="overflow torch.float16"):
        sample(lambda x, t: x, "ode-euler", x_T=torch.full((2, 2), 60000.0, dtype=torch.float16), grid=[2.0, 0.0])


# --------------------------------------------------------------------------------------
# Item 16: the external solvers' options, and NaN met inside them.
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("options,error,fragment", [
    ({"adaptive": True, "dt": math.nan}, ValueError, "dt must be a number > 0"),
    ({"adaptive": True, "dt": math.inf}, ValueError, "dt must be a number > 0"),
    ({"adaptive": True, "dt": -1.0}, ValueError, "dt must be a number > 0"),
    ({"adaptive": True, "dt": 0.0}, ValueError, "dt must be a number > 0"),
    ({"adaptive": True, "dt": "0.1"}, TypeError, "dt must be a number > 0"),
    ({"adaptive": True, "rtol": math.nan}, ValueError, "rtol must be a number > 0"),
    ({"adaptive": True, "rtol": -1.0}, ValueError, "rtol must be a number > 0"),
    ({"adaptive": True, "atol": math.inf}, ValueError, "atol must be a number > 0"),
    ({"adaptive": "no"}, TypeError, "adaptive must be a bool"),
    ({"adaptive": 1}, TypeError, "adaptive must be a bool"),
    ({"solver": ["euler"]}, ValueError, "unknown torchsde solver"),
])
def test_torchsde_options_are_checked(options, error, fragment):
    # Before: dt = nan or inf and rtol = -1 looped forever, dt = -1 recursed, rtol = nan failed an
    # assertion inside torchsde, adaptive = "no" counted as True.
    with pytest.raises(error, match=fragment):
        resolve_method("torchsde", **options)


@pytest.mark.parametrize("method,options,fragment", [
    ("ode", {"solver": "RK45", "rtol": math.inf}, "rtol must be a number > 0"),
    ("ode", {"solver": "RK45", "atol": math.nan}, "atol must be a number > 0"),
    ("ode", {"solver": ["RK45"]}, "solver must be a str"),
    ("pc", {"step_size": math.inf}, "step_size must be None"),
    ("pc", {"snr": math.nan}, "snr must be a number > 0"),
])
def test_scipy_and_pc_options_are_checked(method, options, fragment):
    with pytest.raises((ValueError, TypeError), match=fragment):
        resolve_method(method, **options)


@pytest.mark.parametrize("method,options", [("ode", {"solver": solver}) for solver in ODE_ADAPTIVE] +
                         [("torchsde", {"adaptive": True})])
def test_a_nan_score_inside_an_external_solver_raises_non_finite_sample_error(method, options):
    # scipy's RK45 shrank its step until "Required step size is less than spacing between
    # numbers"; Radau and BDF refused a NaN Jacobian; torchsde asserted a finite error estimate.
    with pytest.raises(NonFiniteSampleError, match="non-finite"):
        sample(lambda x, t: x * math.nan, method, x_T=torch.zeros(3, 2), grid=[1.0, 0.0], generator=0, **options)


# --------------------------------------------------------------------------------------
# Item 17: the prior of the exact law, and seeds.
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cov,error,fragment", [
    (torch.tensor([[1.0, 2.0], [2.0, 1.0]]), ValueError, "positive definite"),
    (torch.tensor([[1.0, 0.5], [0.0, 1.0]]), ValueError, "symmetric"),
    (torch.zeros(2, 2), ValueError, "positive definite"),
    (torch.eye(2, dtype=torch.complex128), ValueError, "must be real"),
    (torch.tensor([[1.0, math.nan], [math.nan, 1.0]]), ValueError, "finite"),
])
@pytest.mark.parametrize("keyword", ["prior", "start"])
def test_exact_law_refuses_a_prior_covariance_that_is_not_symmetric_positive_definite(cov, error, fragment, keyword):
    with pytest.raises(error, match=fragment):
        exact_output_law("em", GAUSSIAN, grid=[1.0, 0.0], **{keyword: (torch.zeros(2), cov)})


def test_exact_law_refuses_a_non_finite_prior_mean():
    with pytest.raises(ValueError, match="mean must be finite"):
        exact_output_law("em", GAUSSIAN, grid=[1.0, 0.0], prior=(torch.tensor([0.0, math.inf]), torch.eye(2)))


@pytest.mark.parametrize("seed", [-1, 2 ** 64, 2 ** 70])
def test_a_seed_outside_torchs_range_is_refused(seed):
    # 2^64 gave "Overflow when unpacking long long"; -1 was silently reinterpreted.
    with pytest.raises(ValueError, match=r"generator must be .*\[0, 2\*\*64\)"):
        sample(GAUSSIAN, "em", grid=SHORT, n_samples=3, generator=seed)


def test_seeds_at_the_ends_of_the_range_and_numpy_integers_are_accepted():
    assert sample(GAUSSIAN, "em", grid=SHORT, n_samples=3, generator=2 ** 64 - 1).shape == (3, 2)
    assert torch.equal(sample(GAUSSIAN, "em", grid=SHORT, n_samples=3, generator=np.int64(5)),
                       sample(GAUSSIAN, "em", grid=SHORT, n_samples=3, generator=5))


# --------------------------------------------------------------------------------------
# Item 19: a plain callable's dimension.
# --------------------------------------------------------------------------------------

class DeclaresDim:
    """The same score as a plain ``-x``, declaring its dimension."""

    dim = 2

    def __call__(self, x, t):
        return -x


def test_dim_lets_a_plain_callable_draw_its_own_start(device):
    # dim=2 on a plain callable draws x_T exactly as a score declaring dim = 2 does.
    x = sample(lambda x, t: -x, "em", grid=SHORT, n_samples=5, dim=2, generator=make_generator(device, 4),
               device=device)
    declared = sample(DeclaresDim(), "em", grid=SHORT, n_samples=5, generator=make_generator(device, 4), device=device)
    assert x.shape == (5, 2) and torch.equal(x, declared)


@pytest.mark.parametrize("score,kwargs,error,fragment", [
    (lambda x, t: -x, {"n_samples": 3}, ValueError, "pass dim=d"),
    (lambda x, t: -x, {"x_T": torch.zeros(3, 2), "dim": 3}, ValueError, r"dim = 3 contradicts x_T of shape \(3, 2\)"),
    (DeclaresDim(), {"n_samples": 3, "dim": 3}, ValueError, "dim = 3 contradicts the score's declared dim = 2"),
    (lambda x, t: -x, {"n_samples": 3, "dim": 0}, ValueError, "dim must be an int >= 1"),
    (lambda x, t: -x, {"n_samples": 3, "dim": 2.0}, TypeError, "dim must be an int >= 1"),
    (lambda x, t: -x, {"n_samples": 3, "dim": True}, TypeError, "dim must be an int >= 1"),
])
def test_an_unknown_or_contradicting_dimension_is_refused(score, kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        sample(score, "em", grid=SHORT, generator=0, **kwargs)
