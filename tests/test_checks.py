"""The shared argument checks (diffsde._checks): one TypeError / ValueError policy, messages that name
the argument, the allowed range and what came."""

import math

import numpy as np
import pytest
import torch

from diffsde._checks import (ArgumentTypeError, check_bool, check_choice, check_data, check_int, check_output,
                             check_positive, check_real, check_spd, check_symmetric, check_time, real_float64)


def test_check_int_accepts_integral_numbers_and_returns_python_ints():
    assert check_int(3, "n", minimum=1) == 3
    value = check_int(np.int64(7), "n", minimum=0, maximum=7)
    assert value == 7 and type(value) is int
    assert check_int(-5, "k") == -5  # no bounds: any int
    assert check_int(None, "every", minimum=1, none_ok=True) is None


@pytest.mark.parametrize("value, bounds, error, message", [
    (0, {"minimum": 1}, ValueError, r"^n must be an int >= 1, got 0$"),
    (11, {"minimum": 1, "maximum": 10}, ValueError, r"^n must be an int in \[1, 10\], got 11$"),
    (11, {"maximum": 10}, ValueError, r"^n must be an int <= 10, got 11$"),
    (2.0, {"minimum": 1}, TypeError, r"^n must be an int >= 1, got float 2.0$"),
    (True, {"minimum": 0}, TypeError, r"^n must be an int >= 0, got bool True$"),
    ("3", {}, TypeError, r"^n must be an int, got str '3'$"),
    (None, {"minimum": 1}, TypeError, r"^n must be an int >= 1, got NoneType None$"),
    (0, {"minimum": 1, "none_ok": True}, ValueError, r"^n must be an int >= 1 or None, got 0$"),
])
def test_check_int_refusals(value, bounds, error, message):
    with pytest.raises(error, match=message):
        check_int(value, "n", **bounds)


def test_a_wrong_type_is_a_type_error_that_old_value_error_handlers_still_catch():
    # Toys, metrics and EpsilonMLP raised ValueError for a non-int before the checks were shared.
    with pytest.raises(ArgumentTypeError) as caught:
        check_int(2.5, "n", minimum=1)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("value, bounds, expected", [
    (0.5, {"low": 0, "high": 1}, 0.5),
    (1, {"low": 0, "high": 1}, 1.0),
    (np.float32(0.25), {}, 0.25),
    (math.inf, {"low": 0, "finite": False}, math.inf),
    (None, {"none_ok": True}, None),
])
def test_check_real_accepts(value, bounds, expected):
    got = check_real(value, "x", **bounds)
    assert got == expected and (got is None or type(got) is float)


@pytest.mark.parametrize("value, bounds, error, message", [
    (0.0, {"low": 0, "low_open": True}, ValueError, r"^lr must be in \(0, inf\), got 0.0$"),
    (1.0, {"low": 0, "high": 1, "high_open": True}, ValueError, r"^lr must be in \[0, 1\), got 1.0$"),
    (-0.1, {"low": 0, "high": 1}, ValueError, r"^lr must be in \[0, 1\], got -0.1$"),
    (math.nan, {}, ValueError, r"^lr must be in \(-inf, inf\), got nan$"),
    (math.nan, {"low": 0, "finite": False}, ValueError, r"^lr must be in \[0, inf\], got nan$"),
    (math.inf, {"low": 0}, ValueError, r"^lr must be in \[0, inf\), got inf$"),
    (-math.inf, {"high": 0}, ValueError, r"^lr must be in \(-inf, 0\], got -inf$"),
    (0.0, {"low": 0, "low_open": True, "none_ok": True}, ValueError, r"^lr must be in \(0, inf\) or None, got 0.0$"),
    (2.0, {"low": 0, "high": 1.5, "interval": "(0, T) = (0, 1.5)"}, ValueError,
     r"^lr must be in \(0, T\) = \(0, 1.5\), got 2.0$"),
    ("0.1", {"low": 0}, TypeError, r"^lr must be a real number in \[0, inf\), got str '0.1'$"),
    (False, {}, TypeError, r"^lr must be a real number in \(-inf, inf\), got bool False$"),
    (torch.tensor(0.5), {}, TypeError, r"got Tensor"),
])
def test_check_real_refusals(value, bounds, error, message):
    with pytest.raises(error, match=message):
        check_real(value, "lr", **bounds)


def test_check_choice():
    names = {"linear": 1, "cosine": 2}
    assert check_choice("cosine", "schedule", names) == "cosine"
    with pytest.raises(ValueError, match=r"^schedule must be one of \['cosine', 'linear'\], got 'quadratic'$"):
        check_choice("quadratic", "schedule", names)
    with pytest.raises(ValueError, match=r"got \['linear'\]"):  # unhashable: refused, not a crash
        check_choice(["linear"], "schedule", names)
    with pytest.raises(ValueError, match=r"one of \[1, 2\], got True"):  # True == 1, but is not the choice 1
        check_choice(True, "order", (1, 2))
    assert check_choice(2, "order", (1, 2)) == 2
    with pytest.raises(ValueError, match="got tensor"):
        check_choice(torch.tensor([1, 2]), "order", (1, 2))


def test_check_bool():
    assert check_bool(True, "resume") is True
    with pytest.raises(TypeError, match=r"^resume must be a bool, got int 1$"):
        check_bool(1, "resume")


def test_check_spd_returns_the_cholesky_factor_and_names_the_bad_matrix():
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    factor = check_spd(cov, "cov")
    assert torch.allclose(factor @ factor.T, cov, rtol=1e-15, atol=1e-15)
    stack = torch.stack([cov, torch.eye(2, dtype=torch.float64)])
    assert check_spd(stack, "covs").shape == (2, 2, 2)
    with pytest.raises(ValueError, match=r"^covs\[1\] must be symmetric; max \|C - C\^T\| = 0.1$"):
        check_spd(torch.stack([cov, torch.tensor([[1.0, 0.1], [0.0, 1.0]], dtype=torch.float64)]), "covs")
    # [[1, 2], [2, 1]] has eigenvalues 3 and -1.
    with pytest.raises(ValueError, match=r"^cov must be positive definite; .* \(smallest eigenvalue -1\)$"):
        check_spd(torch.tensor([[1.0, 2.0], [2.0, 1.0]]), "cov")
    with pytest.raises(ValueError, match=r"cov must have shape \(d, d\) or \(K, d, d\)"):
        check_spd(torch.ones(2, 3), "cov")
    with pytest.raises(ValueError, match="cov must be finite"):
        check_spd(torch.tensor([[math.nan]]), "cov")
    with pytest.raises(TypeError, match="cov must be a floating-point tensor"):
        check_spd(torch.eye(2, dtype=torch.int64), "cov")
    with pytest.raises(TypeError, match="cov must be a floating-point tensor"):
        check_spd([[1.0]], "cov")


def test_check_symmetric_tolerates_rounding_only():
    # 1e-10 of the largest entry: rounding of a product like A Aᵀ passes, a real asymmetry does not.
    check_symmetric(torch.tensor([[1e6, 1.0], [1.0 + 1e-5, 1.0]], dtype=torch.float64), "cov")
    with pytest.raises(ValueError, match="cov must be symmetric"):
        check_symmetric(torch.tensor([[1e6, 1.0], [1.0 + 1e-3, 1.0]], dtype=torch.float64), "cov")


def test_existing_checks_follow_the_same_policy():
    with pytest.raises(ArgumentTypeError, match="t must be a float"):
        check_time("0.5", "t")
    with pytest.raises(ValueError, match=r"t must be in \(0, inf\), got 0"):
        check_time(0.0, "t", strict_low=True)
    with pytest.raises(ArgumentTypeError, match="x must be a floating-point tensor"):
        check_data(torch.zeros(2, 2, dtype=torch.int64), "x")
    with pytest.raises(ValueError, match="x must have last dimension 3"):
        check_data(torch.zeros(2, 2), "x", dim=3)
    with pytest.raises(ArgumentTypeError, match="mean must be a vector, got str"):
        real_float64("abc", "mean", "a vector")
    assert real_float64([1, 2], "mean", "a vector").dtype == torch.float64


def test_python_numbers_are_read_in_float64_and_tensors_keep_their_values():
    # A list goes straight to float64: 0.1 stays the double 0.1, not float32's 0.10000000149.
    assert real_float64([0.1, 1 - 1e-9], "mean", "a vector").tolist() == [0.1, 1 - 1e-9]
    assert real_float64([[10.05, 0]], "grid", "times").tolist() == [[10.05, 0.0]]
    assert real_float64(0.1, "x", "a number").item() == 0.1
    # A float32 tensor or array keeps its own (float32) values, converted exactly.
    as_float32 = float(np.float32(0.1))
    assert real_float64(torch.tensor([0.1], dtype=torch.float32), "m", "v").item() == as_float32
    assert real_float64(np.array([0.1], dtype=np.float32), "m", "v").item() == as_float32
    with pytest.raises(ArgumentTypeError, match="m must be real, got dtype torch.bool"):
        real_float64([True, False], "m", "a vector")
    with pytest.raises(ArgumentTypeError, match="m must be real, got dtype torch.complex"):
        real_float64([1j, 0.5], "m", "a vector")


@pytest.mark.parametrize("value, message", [
    (0.0, r"^var must be in \(0, inf\), got 0.0$"),
    (-1, r"^var must be in \(0, inf\), got -1$"),
    (math.nan, r"^var must be in \(0, inf\), got nan$"),
    (math.inf, r"^var must be in \(0, inf\), got inf$"),
    (torch.tensor([1.0, 0.0, 2.0]), r"^var must be in \(0, inf\), got 0.0$"),
    (torch.tensor([[1.0], [-0.5]]), r"^var must be in \(0, inf\), got -0.5$"),
    (torch.tensor(math.nan), r"^var must be in \(0, inf\), got nan$"),
])
def test_check_positive_refuses_what_is_not_a_positive_finite_scale(value, message):
    with pytest.raises(ValueError, match=message):
        check_positive(value, "var")


def test_check_positive_accepts_positive_numbers_and_tensors_and_refuses_other_types():
    check_positive(0.5, "var")
    check_positive(torch.tensor([1e-300, 2.0], dtype=torch.float64), "var")
    with pytest.raises(ArgumentTypeError, match="var must be a real number"):
        check_positive("1", "var")
    with pytest.raises(ArgumentTypeError, match="var must be a real number or a real tensor"):
        check_positive(torch.tensor([1j]), "var")


def test_check_output_names_the_expected_and_the_received_shape():
    x = torch.zeros(4, 2)
    out = torch.ones(4, 2)
    assert check_output(out, x, "score") is out
    with pytest.raises(ValueError, match=r"^score must return x's shape \(4, 2\), got shape \(4, 1\)$"):
        check_output(torch.zeros(4, 1), x, "score")
    with pytest.raises(ValueError, match=r"^score must return x's shape \(4, 2\), got shape \(2,\)$"):
        check_output(torch.zeros(2), x, "score")
    with pytest.raises(ValueError, match=r"score must return a tensor of x's shape \(4, 2\), got list"):
        check_output([[0.0, 0.0]] * 4, x, "score")
