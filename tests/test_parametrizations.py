"""ε-, x0- and v-prediction <-> score (diffsde.parametrizations), checked against the exact
predictors of Gaussian data, and the protocols the adapters satisfy."""

import math

import pytest
import torch

from diffsde.nets import EpsilonMLP
from diffsde.parametrizations import (DataFromScore, DataScore, EpsilonFromScore, EpsilonScore, VelocityFromScore,
                                      VelocityScore, data_from_score, epsilon_from_score, noise_std, noise_variance,
                                      score_from_data, score_from_epsilon, score_from_velocity, signal_scale,
                                      velocity_from_score)
from diffsde.protocols import (DataModel, EpsilonModel, ExactScore, Score, VelocityModel, accepts_float_time,
                               declared_dim, is_singular_at_zero)
from diffsde.scores import GaussianScore

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64)
TIMES = [0.01, 0.3, 2.0, 8.0]
SCORE_ADAPTERS = [(EpsilonScore, "eps"), (DataScore, "x0"), (VelocityScore, "v")]


class ExactPredictors:
    """The exact ε, x0 and v of x_t = α x0 + σ ε for p0 = N(μ, C), written from the joint Gaussian
    (x0, ε, x_t) alone, without any score: with Σ_t = α² C + σ² I and r = x - α μ,
    E[x0 | x_t] = μ + α C Σ_t⁻¹ r, E[ε | x_t] = σ Σ_t⁻¹ r, v = α E[ε | x_t] - σ E[x0 | x_t]."""

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, x, t):
        t = t if isinstance(t, float) else t.reshape(-1)
        results = []
        for row, time in zip(x, torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0]).tolist()):
            alpha, sigma = math.exp(-time / 2), math.sqrt(-math.expm1(-time))
            cov_t = alpha**2 * COV + sigma**2 * torch.eye(2, dtype=torch.float64)
            whitened = torch.linalg.solve(cov_t, row.cpu() - alpha * MEAN)
            x0 = MEAN + alpha * COV @ whitened
            eps = sigma * whitened
            results.append({"x0": x0, "eps": eps, "v": alpha * eps - sigma * x0}[self.kind])
        return torch.stack(results).to(x.device)


def points(device, n=16):
    return 2 * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)


@pytest.mark.parametrize("adapter, kind", SCORE_ADAPTERS)
@pytest.mark.parametrize("t", TIMES)
def test_each_adapter_of_the_exact_predictor_is_the_exact_score(device, adapter, kind, t):
    gaussian, x = GaussianScore(MEAN, COV), points(device)
    got, want = adapter(ExactPredictors(kind))(x, t), gaussian(x, t)
    # Both sides are float64 closed forms. The x0 conversion divides α x0 - x, a difference of O(|x|) ≈ 5
    # terms, by σ² >= 1 - e^{-0.01} ≈ 0.01, so rounding (1e-16 relative) grows to ~5e-13 (measured 2.5e-13
    # at t = 0.01, 4e-15 elsewhere); 1e-12 relative plus absolute leaves margin and still catches any wrong
    # coefficient (a wrong power of α or σ is off by O(1)).
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("adapter, kind", SCORE_ADAPTERS)
def test_adapters_take_per_sample_times(device, adapter, kind):
    gaussian, x = GaussianScore(MEAN, COV), points(device)
    times = torch.linspace(0.01, 9.0, x.shape[0], dtype=torch.float64, device=device)
    assert torch.allclose(adapter(ExactPredictors(kind))(x, times), gaussian(x, times), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("inverse, kind", [(EpsilonFromScore, "eps"), (DataFromScore, "x0"),
                                           (VelocityFromScore, "v")])
@pytest.mark.parametrize("t", TIMES)
def test_the_predictors_of_the_exact_score_are_the_exact_predictors(device, inverse, kind, t):
    gaussian, x = GaussianScore(MEAN, COV), points(device)
    # x0 = (x + σ² s) / α and v = -(σ / α)(x + s) divide a cancelling sum of O(5) terms by α = e^{-4} ≈ 0.018
    # at t = 8, which magnifies rounding ~50x (measured 7e-14 there, 3e-15 elsewhere): 1e-12 leaves margin.
    assert torch.allclose(inverse(gaussian)(x, t), ExactPredictors(kind)(x, t), rtol=1e-12, atol=1e-12)


def test_round_trips_through_every_parametrization(device):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=gen, dtype=torch.float64).to(device)
    s = torch.randn(64, 3, generator=gen, dtype=torch.float64).to(device)
    for t in (0.05, 1.0, torch.linspace(0.05, 6.0, 64, dtype=torch.float64, device=device)):
        sigma = noise_std(t if isinstance(t, float) else t[:, None])
        eps = epsilon_from_score(s, sigma)
        x0 = data_from_score(s, x, t)
        v = velocity_from_score(s, x, t)
        # Each pair of maps is inverse in exact arithmetic; a few roundings of O(1 / σ²) ≈ 20 terms.
        for back in (score_from_epsilon(eps, sigma), score_from_data(x0, x, t), score_from_velocity(v, x, t)):
            assert torch.allclose(back, s, rtol=1e-12, atol=1e-12)
        # Salimans & Ho's definitions hold between the three: v = α ε - σ x0 and x = α x0 + σ ε.
        alpha = signal_scale(t if isinstance(t, float) else t[:, None])
        assert torch.allclose(v, alpha * eps - sigma * x0, rtol=1e-12, atol=1e-12)
        assert torch.allclose(x, alpha * x0 + sigma * eps, rtol=1e-12, atol=1e-12)


def test_adapters_compose_to_the_identity(device):
    gaussian, x = GaussianScore(MEAN, COV), points(device)
    chain = VelocityScore(VelocityFromScore(DataScore(DataFromScore(EpsilonScore(EpsilonFromScore(gaussian))))))
    for t in (0.1, 3.0):
        assert torch.allclose(chain(x, t), gaussian(x, t), rtol=1e-12, atol=1e-12)


def test_epsilon_round_trip(device):
    gaussian = GaussianScore([1.0, 0.5], [[1.0, 0.2], [0.2, 0.3]])
    eps = EpsilonFromScore(gaussian)
    score = EpsilonScore(eps)
    x = torch.randn(32, 2, device=device, dtype=torch.float64)
    times = torch.linspace(0.01, 9.0, 32, device=device, dtype=torch.float64)
    # s -> ε -> s multiplies and divides by sqrt(1 - e^{-t}): exact up to two roundings.
    assert torch.allclose(score(x, times), gaussian(x, times), rtol=1e-13, atol=1e-13)
    assert torch.allclose(score(x, 0.5), gaussian(x, 0.5), rtol=1e-13, atol=1e-13)
    # ε = -sqrt(1 - e^{-t}) s (Vincent 2011) at one point by hand.
    assert torch.allclose(eps(x, 2.0), -math.sqrt(1 - math.exp(-2.0)) * gaussian(x, 2.0), rtol=1e-15)


@pytest.mark.parametrize("t", [0.0, -1.0, torch.tensor([0.5, 0.0])])
def test_epsilon_score_refuses_t_at_or_below_zero(t):
    score = EpsilonScore(lambda x, t: torch.zeros_like(x))
    with pytest.raises(ValueError, match="t must be in"):
        score(torch.zeros(2, 2), t)


@pytest.mark.parametrize("adapter", [DataScore, VelocityScore])
@pytest.mark.parametrize("t", [0.0, -1.0, math.nan, torch.tensor([0.5, 0.0])])
def test_every_network_score_is_singular_at_zero_and_refuses_it(adapter, t):
    score = adapter(lambda x, t: torch.zeros_like(x))
    assert is_singular_at_zero(score)
    with pytest.raises(ValueError, match="t must be in"):
        score(torch.zeros(2, 2), t)


@pytest.mark.parametrize("adapter, name", [(EpsilonScore, "eps_model"), (DataScore, "data_model"),
                                           (VelocityScore, "velocity_model")])
def test_adapters_refuse_what_is_not_a_model(adapter, name):
    with pytest.raises(TypeError, match=f"{name} must be callable"):
        adapter(3)
    with pytest.raises(TypeError, match="score must be callable"):
        DataFromScore("score")


@pytest.mark.parametrize("adapter", [EpsilonScore, DataScore, VelocityScore])
def test_float_times_go_to_models_that_accept_them(adapter):
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self, accepts: bool):
            super().__init__()
            self.accepts_float_time = accepts

        def forward(self, x, t):
            seen.append(t)
            return torch.zeros_like(x)

    x = torch.ones(3, 2)
    adapter(Recorder(True))(x, 0.5)
    adapter(Recorder(False))(x, 0.5)
    adapter(Recorder(False))(x, torch.tensor(0.5))
    assert seen[0] == 0.5 and isinstance(seen[0], float)  # no tensor, so nothing to sync on CUDA
    assert torch.equal(seen[1], torch.full((3,), 0.5)) and torch.equal(seen[2], torch.full((3,), 0.5))
    assert accepts_float_time(Recorder(True)) and not accepts_float_time(lambda x, t: x)


def test_dimensions_are_forwarded():
    model = EpsilonMLP(3)
    for adapter in (EpsilonScore, DataScore, VelocityScore):
        assert adapter(model).dim == 3 and adapter(lambda x, t: x).dim is None
    gaussian = GaussianScore(MEAN, COV)
    for inverse in (EpsilonFromScore, DataFromScore, VelocityFromScore):
        assert inverse(gaussian).dim == 2 and inverse(lambda x, t: x).dim is None
    assert EpsilonScore(model).eps_model is model and DataScore(model).model is model
    assert repr(VelocityScore(model)) == "VelocityScore(EpsilonMLP)"


def test_protocols_describe_the_adapters():
    model, gaussian = EpsilonMLP(2), GaussianScore(MEAN, COV)
    for score in (EpsilonScore(model), DataScore(model), VelocityScore(model), gaussian, lambda x, t: -x):
        assert isinstance(score, Score)
    assert not isinstance(EpsilonScore(model), ExactScore) and isinstance(gaussian, ExactScore)
    for protocol in (EpsilonModel, DataModel, VelocityModel):
        assert isinstance(model, protocol) and isinstance(EpsilonFromScore(gaussian), protocol)
        assert not isinstance(3, protocol)


def test_declared_dim_refuses_a_nonsense_declaration():
    class Odd:
        dim = 2.5

    with pytest.raises(TypeError, match="declares dim = 2.5"):
        declared_dim(Odd())
    assert declared_dim(object()) is None


def test_coefficients_are_the_ous():
    for t in (1e-8, 0.3, 5.0, 40.0):
        # α² + σ² = e^{-t} + (1 - e^{-t}) = 1; σ² via expm1 keeps its relative accuracy at t = 1e-8.
        assert signal_scale(t) ** 2 + noise_variance(t) == pytest.approx(1.0, rel=1e-15)
        assert noise_variance(t) == pytest.approx(-math.expm1(-t), rel=1e-15)
        assert noise_std(t) == math.sqrt(noise_variance(t)) and signal_scale(t) == math.exp(-t / 2)
    times = torch.tensor([1e-8, 0.3, 5.0], dtype=torch.float64)
    assert torch.equal(noise_std(times), torch.sqrt(-torch.expm1(-times)))
    assert isinstance(noise_std(1), float) and isinstance(signal_scale(torch.tensor(1.0)), torch.Tensor)


@pytest.mark.parametrize("adapter, name", [(EpsilonScore, "eps_model"), (DataScore, "data_model"),
                                           (VelocityScore, "velocity_model")])
@pytest.mark.parametrize("t", [0.5, torch.full((4,), 0.5)])
def test_a_model_of_the_wrong_shape_is_refused_not_broadcast(adapter, name, t):
    # (4, 1) would broadcast against x (4, 2) into a (4, 2) score of the wrong values.
    score = adapter(lambda x, t: x[:, :1])
    with pytest.raises(ValueError, match=rf"^{name} must return x's shape \(4, 2\), got shape \(4, 1\)$"):
        score(torch.ones(4, 2), t)
    with pytest.raises(ValueError, match=rf"{name} must return a tensor of x's shape \(4, 2\), got float"):
        adapter(lambda x, t: 0.0)(torch.ones(4, 2), t)


@pytest.mark.parametrize("inverse", [EpsilonFromScore, DataFromScore, VelocityFromScore])
def test_a_score_of_the_wrong_shape_is_refused_by_the_predictors(inverse):
    with pytest.raises(ValueError, match=r"^score must return x's shape \(4, 2\), got shape \(2,\)$"):
        inverse(lambda x, t: x[0])(torch.ones(4, 2), 0.5)


@pytest.mark.parametrize("coefficient", [signal_scale, noise_variance, noise_std])
@pytest.mark.parametrize("t, got", [(-1, "-1"), (-0.1, "-0.1"), (torch.tensor([0.5, -2.0]), "-2"),
                                    (math.nan, "NaN")])
def test_coefficients_refuse_negative_times(coefficient, t, got):
    with pytest.raises(ValueError, match=rf"^t must be in \[0, inf\), got {got}$"):
        coefficient(t)


@pytest.mark.parametrize("sigma, got", [(0, "0"), (-0.5, "-0.5"), (math.nan, "nan"), (math.inf, "inf"),
                                        (torch.tensor([[1.0], [0.0]]), "0.0")])
def test_score_from_epsilon_refuses_a_noise_scale_outside_zero_to_inf(sigma, got):
    with pytest.raises(ValueError, match=rf"^sigma must be in \(0, inf\), got {got}$"):
        score_from_epsilon(torch.ones(2, 2), sigma)
    assert torch.equal(score_from_epsilon(torch.ones(2, 2), torch.tensor([[2.0], [4.0]])),
                       -torch.tensor([[0.5, 0.5], [0.25, 0.25]]))
