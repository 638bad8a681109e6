"""The evaluation forms of the mixture score (diffsde.mixture_forms): each form against the batched
eigenbasis path and autograd of log p_t, chunking, the exp clamp, and exact sampling."""

import math

import pytest
import torch

from conftest import make_generator
from diffsde import GaussianMixtureScore, GaussianScore, mixture_forms, toys
from diffsde.mixture_forms import LOG_FLOOR, normalised_exp_, softmax_clamped


def _random_spd(d: int, gen: torch.Generator) -> torch.Tensor:
    factor = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return factor @ factor.T / d + 0.2 * torch.eye(d, dtype=torch.float64)


def mixture_of_kind(kind: str, d: int = 3, k: int = 5) -> GaussianMixtureScore:
    gen = torch.Generator().manual_seed(7)
    weights = torch.rand(k, generator=gen, dtype=torch.float64) + 0.2
    weights = weights / weights.sum()
    means = 3 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    if kind == "gaussian":
        return GaussianScore(means[0], _random_spd(d, gen))
    if kind == "shared-isotropic":
        covs = (0.3 * eye).expand(k, d, d)
    elif kind == "shared-diagonal":
        covs = torch.diag(torch.rand(d, generator=gen, dtype=torch.float64) + 0.1).expand(k, d, d)
    elif kind == "shared-full":
        covs = _random_spd(d, gen).expand(k, d, d)
    elif kind == "shared-wide":  # more dimensions than components
        means, covs = means[:2].repeat(1, 3), _random_spd(3 * d, gen).expand(2, 3 * d, 3 * d)
        weights = weights[:2] / weights[:2].sum()
    elif kind == "shared-off-centre":  # modes clustered far from the origin: the form centres on their mean
        means = means + 100.0
        covs = (0.3 * eye).expand(k, d, d)
    elif kind == "general-diagonal":
        covs = torch.diag_embed(torch.rand(k, d, generator=gen, dtype=torch.float64) + 0.1)
    else:
        covs = torch.stack([_random_spd(d, gen) for _ in range(k)])
    return GaussianMixtureScore(weights, means, covs.contiguous())


KINDS = {"gaussian": "gaussian", "shared-isotropic": "shared", "shared-diagonal": "shared",
         "shared-full": "shared", "shared-wide": "shared", "shared-off-centre": "shared", "general-diagonal": "general",
         "general-full": "general"}


def points_near(mixture: GaussianMixtureScore, n: int, t: float, seed: int = 0) -> torch.Tensor:
    """Points of p_t spread 1.5x wider, so that some lie between and beyond the modes."""
    gen = torch.Generator().manual_seed(seed)
    x = mixture.sample(n, t=t, generator=gen, dtype=torch.float64)
    mean = mixture.mean_and_cov(t)[0]
    return mean + 1.5 * (x - mean)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("t", [0.0, 0.3, 4.0])
def test_each_form_is_the_gradient_of_log_prob(kind, t):
    mixture = mixture_of_kind(kind)
    assert mixture.form == KINDS[kind]
    x = points_near(mixture, 200, t)
    score, log_prob = mixture.score(x, t), mixture.log_prob(x, t)  # the form's path (Python-float t)
    reference_t = torch.tensor(t, dtype=torch.float64)  # a tensor t takes the batched eigenbasis path
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.log_prob(leaf, reference_t).sum(), leaf)
    # Float64 closed forms of one function by different arithmetic: rounding only. The terms are
    # O(|x̃| |P m̃|) <= ~1e3 for these mixtures (1e5 before centring for the off-centre one), so
    # 1e-9 relative with 1e-9 absolute leaves a margin of ~1e3 over float64's 1e-16 x 1e3.
    assert torch.allclose(score, grad, rtol=1e-9, atol=1e-9)
    assert torch.allclose(score, mixture.score(x, reference_t), rtol=1e-9, atol=1e-9)
    assert torch.allclose(log_prob, mixture.log_prob(x, reference_t), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("kind", ["shared-isotropic", "shared-full", "shared-wide", "general-full", "gaussian"])
def test_chunked_calls_equal_row_by_row_calls(kind, monkeypatch):
    # A small chunk budget cuts a 1300-row call into 3 chunks (512 rows at least each); every row is
    # an independent computation, so the chunked result must equal calls on the pieces.
    monkeypatch.setattr(mixture_forms, "_CHUNK_ELEMENTS", 64)
    mixture = mixture_of_kind(kind)
    x = points_near(mixture, 1300, 0.2, seed=1)
    pieces = [x[:5], x[5:700], x[700:]]
    assert torch.allclose(mixture.score(x, 0.2), torch.cat([mixture.score(p, 0.2) for p in pieces]),
                          rtol=1e-13, atol=1e-13)
    assert torch.allclose(mixture.log_prob(x, 0.2), torch.cat([mixture.log_prob(p, 0.2) for p in pieces]),
                          rtol=1e-13, atol=1e-13)


def test_float32_off_centre_mixture_agrees_with_float64(device):
    # Modes 100 away from the origin: without centring the logits would be differences of terms
    # |x| |P m| ~ 100·100/0.3 ~ 3e4, losing 3e4 x 6e-8 ~ 2e-3 in float32; centred on the modes' mean
    # the terms are |x̃| |P m̃| ~ 10·10/0.3 ~ 3e2 (an error ~2e-5 in a logit, ~1e-4 in a score of size
    # ~|Δm|/λ ~ 20 between modes). Rounding x itself to float32 moves the exact score by
    # |x| ε |∇s| ~ 100·6e-8·(|Δm|/λ)² ~ 3e-3 there, so we compare at the float32-rounded points.
    mixture = mixture_of_kind("shared-off-centre")
    x32 = points_near(mixture, 500, 0.2).float()
    exact = mixture.score(x32.double(), 0.2)
    s32 = mixture.score(x32.to(device), 0.2).double().cpu()
    assert torch.allclose(s32, exact, rtol=1e-4, atol=1e-3)


def test_normalised_exp_clamps_far_components_only():
    logits = torch.tensor([[0.0, -10.0, -90.0, -1000.0], [5.0, 5.0, -200.0, 3.0]], dtype=torch.float32)
    weights, top = normalised_exp_(logits.clone(), 1)
    assert torch.equal(top[:, 0], torch.tensor([0.0, 5.0]))
    # Within 80 of the max: exp of the exact shift; below: e^{-80}, which no float sum can see next to 1.
    expected = torch.tensor([[1.0, math.exp(-10.0), math.exp(LOG_FLOOR), math.exp(LOG_FLOOR)],
                             [1.0, 1.0, math.exp(LOG_FLOOR), math.exp(-2.0)]])
    assert torch.allclose(weights, expected, rtol=1e-6, atol=0)
    # The clamped softmax differs from torch's only in the clamped entries, by at most e^{-80} each.
    assert torch.allclose(softmax_clamped(logits, 1), torch.softmax(logits, 1), rtol=1e-6, atol=2 * math.exp(LOG_FLOOR))


def test_far_components_do_not_change_the_score_in_float32():
    # The ring at t = 0: at (12, 0) the far modes' logits lie ~190 below the nearest one's, where
    # the clamp replaces e^{-190} by e^{-80}; the score is the nearest mode's -(x - μ)/σ² to rounding.
    ring = toys.ring().exact_score
    x = torch.tensor([[12.0, 0.0]])
    expected = torch.tensor([[-(12.0 - 4.0) / 0.25, 0.0]])
    assert torch.allclose(ring.score(x, 0.0), expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("kind", ["shared-full", "general-full", "gaussian"])
def test_sample_is_the_transformed_draw(kind, device):
    # sample draws components, then z ~ N(0, I), then e^{-t/2} μ_k + U_k sqrt(λ_t,k) z: replaying
    # the same generator by hand must give the same points (float64: rounding only).
    mixture = mixture_of_kind(kind)
    t, n = 0.4, 300
    x = mixture.sample(n, t=t, generator=make_generator(device, 5), device=device, dtype=torch.float64).cpu()
    gen = make_generator(device, 5)
    components = torch.multinomial(mixture.weights.to(device), n, replacement=True, generator=gen).cpu()
    z = torch.randn((n, mixture.dim), generator=gen, device=device, dtype=torch.float64).cpu()
    means = mixture.component_marginals(t)[1]
    lam = math.exp(-t) * mixture.eigvals - math.expm1(-t)
    roots = mixture.eigvecs * lam.sqrt().unsqueeze(-2)  # U_k diag(sqrt(λ_t,k))
    expected = means[components] + torch.einsum("nde,ne->nd", roots[components], z)
    assert torch.allclose(x, expected, rtol=1e-12, atol=1e-12)


def test_sample_blocks_bound_the_gathered_factors(monkeypatch):
    # A general mixture gathers one d x d factor per sample; blocks of rows keep that bounded and
    # change no value (the block size is a private constant, shrunk here to force 4 blocks).
    import diffsde.scores as scores

    mixture = mixture_of_kind("general-full", d=3, k=4)
    whole = mixture.sample(40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    monkeypatch.setattr(scores, "_SAMPLE_BLOCK", 9 * 10)
    blocked = mixture.sample(40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(whole, blocked)
