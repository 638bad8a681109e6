"""The ε-network: time embedding resolution, zero initialisation, input checks."""

import math

import pytest
import torch

from diffsde.nets import EpsilonMLP, TimeEmbedding, log_snr, time_bounds
from diffsde.scores import EpsilonScore


def embedding_distance(embedding, a: float, b: float, device) -> float:
    times = torch.tensor([a, b], dtype=torch.float32, device=device)
    e = embedding.to(device)(times)
    return float((e[0] - e[1]).norm())


def test_embedding_resolves_nearby_times_at_both_ends(device):
    embedding = TimeEmbedding()  # periods of λ in [0.5, 64], 16 sin/cos pairs
    near_t_min = embedding_distance(embedding, 1e-3, 2e-3, device)  # Δλ = log 2 ≈ 0.69
    near_T = embedding_distance(embedding, 10.0, 10.05, device)  # Δλ ≈ 0.05
    # ‖e(a) - e(b)‖² = Σ_k 4 sin²(ω_k Δλ / 2); the fastest pair (period 0.5) alone gives
    # 2 sin(π Δλ / 0.5) >= 0.61 for Δλ >= 0.049, so 0.5 leaves room for float32 rounding
    # (~1e-6 here). An embedding with frequencies 10000^{-k/16} on t itself (the usual one for
    # step indices) scores 0.0012 and 0.06 on these pairs.
    assert near_t_min > 0.5
    assert near_T > 0.5


def test_distant_times_are_farther_apart_than_nearby_ones(device):
    embedding = TimeEmbedding().to(device)
    t = torch.logspace(-3, 1, 400, dtype=torch.float32, device=device)
    e, lam = embedding(t), log_snr(t)
    distances = torch.cdist(e, e)
    gaps = (lam[:, None] - lam[None, :]).abs()
    # No aliasing: every pair of times at least 1 apart in log-SNR is farther apart than every
    # pair at most 0.05 apart (the longest period, 64, is ~4x the span of λ on [1e-3, 10]).
    # Measured: min over far pairs 4.37, max over near pairs 0.90.
    assert float(distances[gaps >= 1].min()) > 2 * float(distances[gaps <= 0.05].max())


def test_log_snr_is_accurate_at_both_ends():
    t = torch.logspace(-6, math.log10(80.0), 200, dtype=torch.float64)
    reference = torch.log(torch.exp(-t) / (1 - torch.exp(-t)))  # float64 is exact enough here
    approx = log_snr(t.float()).double()
    # float32 has relative precision 6e-8; λ ranges over [-80, 13.8], so 1e-5 absolute is ample.
    assert torch.allclose(approx, reference, rtol=1e-6, atol=1e-5)


def test_fresh_model_predicts_exactly_zero(device):
    model = EpsilonMLP(3).to(device)
    x = torch.randn(17, 3, generator=torch.Generator().manual_seed(0)).to(device)
    for t in (0.5, torch.tensor(2.0), torch.linspace(0.01, 9.0, 17)):
        assert torch.equal(model(x, t), torch.zeros_like(x))  # zero-initialised output layer


def test_time_forms_agree_and_per_sample_times_match_rows(device):
    torch.manual_seed(0)
    model = EpsilonMLP(2, hidden=32).to(device)
    torch.nn.init.normal_(model.output.weight)  # a non-zero output, so the test can fail
    x = torch.randn(8, 2, device=device)
    scalar = model(x, 0.7)
    assert torch.equal(scalar, model(x, torch.tensor(0.7)))
    assert torch.equal(scalar, model(x, torch.full((8,), 0.7, device=device)))
    times = torch.linspace(0.01, 5.0, 8, device=device)
    rows = torch.cat([model(x[i:i + 1], float(times[i])) for i in range(8)])
    # Same arithmetic per row; only the batched GEMM's summation order may differ (float32).
    assert torch.allclose(model(x, times), rows, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model(x, 0.1), model(x, 5.0))  # the output depends on t


def test_score_adapter_accepts_the_network(device):
    model = EpsilonMLP(2).to(device)
    score = EpsilonScore(model)
    x = torch.randn(5, 2, device=device)
    assert score(x, 0.3).shape == (5, 2)
    assert score.dim == 2


@pytest.mark.parametrize("shape", [(4, 3), (4,), (4, 2, 1)])
def test_wrong_input_shape_names_the_expected_dimension(device, shape):
    model = EpsilonMLP(2).to(device)
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        model(torch.zeros(shape, device=device), 0.5)


@pytest.mark.parametrize("t", [0.0, -1.0, math.nan, torch.tensor([0.5, 0.0, 1.0]), torch.ones(4)])
def test_bad_times_are_refused(device, t):
    model = EpsilonMLP(2).to(device)
    with pytest.raises(ValueError, match="t"):
        model(torch.zeros(3, 2, device=device), t.to(device) if isinstance(t, torch.Tensor) else t)


def test_dtype_mismatch_is_a_type_error(device):
    model = EpsilonMLP(2).to(device)
    with pytest.raises(TypeError, match="float64"):
        model(torch.zeros(3, 2, dtype=torch.float64, device=device), 0.5)


@pytest.mark.parametrize("kwargs", [{"dim": 0}, {"dim": 2, "depth": 0}, {"dim": 2, "hidden": 2.5},
                                    {"dim": 2, "embed_dim": 31}])
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError):
        EpsilonMLP(**kwargs)


def test_log_snr_is_the_ratio_of_the_ous_coefficients():
    from diffsde.parametrizations import noise_variance, signal_scale

    t = torch.logspace(-6, math.log10(40.0), 50, dtype=torch.float64)
    # λ = log(α² / σ²) with α² = e^{-t} (so log α² = -t exactly) and σ² = 1 - e^{-t}.
    assert torch.equal(log_snr(t), -t - torch.log(noise_variance(t)))
    assert torch.allclose(log_snr(t), torch.log(signal_scale(t) ** 2 / noise_variance(t)), rtol=1e-12, atol=1e-12)


def test_a_non_int_size_is_a_type_error_too():
    # Refused with ValueError before the checks were shared; now a TypeError that is also a ValueError.
    with pytest.raises(TypeError, match=r"hidden must be an int >= 1, got float 2.5"):
        EpsilonMLP(2, hidden=2.5)
    with pytest.raises(ValueError, match=r"embed_dim must be an even int >= 2, got 31"):
        EpsilonMLP(2, embed_dim=31)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_are_finite_for_every_finite_time(device, dtype):
    # Times below time_bounds round to 0 in the dtype (λ = +inf) and times above overflow a
    # float32 tensor (t = 1e300) or λ ω (its phases are noise anyway): both are read as the
    # nearer bound, so such a t gives exactly the output at that bound.
    torch.manual_seed(0)
    model = EpsilonMLP(2, hidden=16).to(device=device, dtype=dtype)
    torch.nn.init.normal_(model.output.weight)
    x = torch.randn(3, 2, device=device, dtype=dtype)
    low, high = time_bounds(dtype)
    for t in [t for t in (1e-46, 1e-320, 5e-324) if t < low]:
        assert torch.equal(model(x, t), model(x, low))
    for t in (1e300, 1.7e308):
        assert torch.equal(model(x, t), model(x, high))
    out = model(x, torch.tensor([1e300, 1e-300, 0.5], dtype=torch.float64, device=device))
    assert bool(torch.isfinite(out).all())
    assert torch.equal(out, model(x, torch.tensor([high, max(1e-300, low), 0.5], dtype=dtype, device=device)))


def test_embedding_is_unchanged_inside_its_time_bounds(device):
    embedding = TimeEmbedding().to(device)
    t = torch.logspace(-37, 6, 200, dtype=torch.float32, device=device)  # inside [1.2e-38, 8.4e6]
    angles = log_snr(t).unsqueeze(-1) * embedding.frequencies
    assert torch.equal(embedding(t), torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1))
    # At and beyond the ends (0 included: λ(0) = +inf) the features stay finite.
    ends = torch.tensor([0.0, 1e-45, float("inf")], device=device)
    assert bool(torch.isfinite(embedding(ends)).all())
    assert time_bounds(torch.float32) == (torch.finfo(torch.float32).tiny, 2.0**23)
