"""The method registry: every method declares itself once, and the declarations hold.

Strong orders are measured pathwise: every grid of a sweep is driven by the same Brownian
path (coarse increments are sums of fine ones; torchsde's space-time Lévy areas are combined
with the exact bisection rule), and the RMS distance to the finest run is fitted against n.
"""

import math

import pytest
import torch

import diffsde
from diffsde import GaussianMixtureScore, GaussianScore, TimeGrid, exact_output_law, resolve_method, sample
from diffsde.metrics import gaussian_w2
from diffsde.orders import fit_order
from diffsde.samplers import METHODS, InjectedBrownian, Method, Sampler, featured_methods, integrate, register
from diffsde.samplers.registry import COORDINATES
from diffsde.sde import probability_flow_drift

GAUSSIAN = GaussianScore(torch.tensor([1.0, -0.5], dtype=torch.float64),
                         torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64))


def test_every_variant_resolves_and_declares_what_it_is():
    for label in METHODS.variants():
        sampler = resolve_method(label)
        assert sampler.label == label
        assert sampler.name in METHODS
        assert (sampler.step is None) != (sampler.runner is None), label
        assert sampler.noise_draws >= 0 and (sampler.score_evals is None or sampler.score_evals >= 1)
        if sampler.weak_order is None:
            assert sampler.strong_order is None, label
        assert sampler.coordinates in COORDINATES, label
    table = str(diffsde.METHODS)
    assert all(label in table for label in METHODS.variants())


def test_variant_labels_and_pairs():
    assert resolve_method("ode-heun").options == {"solver": "heun"}
    assert resolve_method("ode", solver="heun").label == "ode-heun"
    assert resolve_method(("ddpm", {"variance": "beta_tilde"})).label == "ddpm(variance=beta_tilde)"
    sampler = resolve_method("em")
    assert resolve_method(sampler) is sampler
    with pytest.raises(TypeError, match="fixed by the variant"):
        resolve_method("ode-heun", solver="euler")
    with pytest.raises(TypeError, match="already configured"):
        resolve_method(sampler, variance="beta")
    with pytest.raises(ValueError, match="unknown method 'ddpm-solver'"):
        resolve_method("ddpm-solver")
    with pytest.raises(TypeError, match="unknown option 'eta'"):
        resolve_method("em", eta=0.0)


def test_featured_methods_are_the_demo_methods():
    assert featured_methods() == ["vp", "ddpm", "em", "ode-euler", "ode-heun", "torchsde-euler", "pc"]


def test_a_configured_sampler_is_accepted_by_sample_and_reported():
    sampler = resolve_method("ode-heun")
    x, info = sample(GAUSSIAN, sampler, grid=[2.0, 1.0, 0.1], n_samples=3, generator=0, return_info=True)
    assert info["label"] == "ode-heun" and info["nfe"] == 4 and info["weak_order"] == 2.0


# --------------------------------------------------------------------------------------
# A multistep method is one function plus one registration.
# --------------------------------------------------------------------------------------

def ab2_step(score, x, interval, noise, state):
    """Variable-step Adams–Bashforth 2 on the probability-flow ODE (Euler on the first step):
    x <- x + h ((1 + r/2) v_k - (r/2) v_{k-1}), r = h_k / h_{k-1}; the state is (v_{k-1}, h_{k-1})."""
    velocity = probability_flow_drift(x, score(x, interval.t_from))
    h = interval.h
    if state is None:
        update = velocity
    else:
        previous, previous_h = state
        ratio = h / previous_h
        update = (1 + 0.5 * ratio) * velocity - 0.5 * ratio * previous
    return x + h * update, (velocity, h)


def configure_ab2(**options):
    if options:
        raise TypeError(f"unknown option {sorted(options)[0]!r} for method 'ab2'")
    return Sampler("ab2", "ab2", {}, weak_order=2.0, strong_order=2.0, noise_draws=0, step=ab2_step,
                   description="Adams-Bashforth 2 on the probability-flow ODE (test method)")


@pytest.fixture
def ab2():
    method = register(Method("ab2", configure_ab2, "Adams-Bashforth 2 (test)"))
    yield method
    del METHODS._methods["ab2"]


def test_a_registered_multistep_method_samples_and_has_its_exact_law(ab2):
    assert "ab2" in str(diffsde.METHODS)
    grid = TimeGrid.uniform(8.0, 0.01, 30)
    x = sample(GAUSSIAN, "ab2", grid=grid, n_samples=4, generator=0, dtype=torch.float64)
    mean, cov = exact_output_law("ab2", GAUSSIAN, grid=grid)
    # The state carries across steps: the probe run agrees with sampling from x_T = 0 exactly.
    x0 = sample(GAUSSIAN, "ab2", grid=grid, x_T=torch.zeros(1, 2, dtype=torch.float64))
    torch.testing.assert_close(x0[0], mean, rtol=0, atol=1e-12)
    assert x.shape == (4, 2)
    # Its declared order holds (exact laws, no noise; ±0.15 as for the built-in methods). The
    # local slopes climb 1.5, 1.66, 1.78, 1.87 from n = 25 (the start-up Euler step and the
    # stiff end near t = 0 are pre-asymptotic there), so the fit uses n >= 200.
    ns = [200, 400, 800, 1600, 3200]
    errors = [gaussian_w2(*exact_output_law("ab2", GAUSSIAN, grid=TimeGrid.uniform(10.0, 0.0, n), prior="exact"),
                          *GAUSSIAN.mean_and_cov(0.0)) for n in ns]
    assert fit_order(ns, errors) == pytest.approx(2.0, abs=0.15), errors


def test_registering_a_taken_name_is_refused(ab2):
    with pytest.raises(ValueError, match="already registered"):
        register(Method("ab2", configure_ab2, "again"))
    with pytest.raises(ValueError, match="already registered"):
        register(Method("other", configure_ab2, "clash", variants={"ode-heun": {}}))


# --------------------------------------------------------------------------------------
# Strong orders, on one Brownian path.
# --------------------------------------------------------------------------------------

class SharedPath:
    """Noise of a coarse grid aggregated from the finest grid's standardised draws: increments
    add; space-time Lévy areas of two halves combine as H = (H1 + H2)/2 + (W1 - W2)/4."""

    def __init__(self, fine_steps: int, n_paths: int, d: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.fine_steps = fine_steps
        self.fine = torch.randn(fine_steps, 2, n_paths, d, generator=gen, dtype=torch.float64)
        self.level = None

    def at(self, steps: int, h: float) -> "SharedPath":
        """Increments W (steps, N, d) and space-time areas H over ``steps`` equal steps of length h."""
        factor = self.fine_steps // steps
        fine_h = h / factor
        W = self.fine[:, 0] * math.sqrt(fine_h)
        H = self.fine[:, 1] * math.sqrt(fine_h / 12)
        while W.shape[0] > steps:
            W1, W2, H1, H2 = W[0::2], W[1::2], H[0::2], H[1::2]
            W, H = W1 + W2, 0.5 * (H1 + H2) + 0.25 * (W1 - W2)
        self.level = torch.stack([W / math.sqrt(h), H / math.sqrt(h / 12)], dim=1)  # (steps, 2, N, d)
        return self

    def draw(self, index, count, like):
        return self.level[index, :count]

    def brownian(self, times, first_index, dt, like, levy):
        return InjectedBrownian(self, times, first_index, like, levy)

    def get_state(self):
        return None

    def set_state(self, state):
        pass


# A nonlinear score (two anisotropic components): on a linear score some schemes gain an order
# (torchsde's SRA1 "srk" shows 2 there, for its general additive-noise order 1.5).
MIXTURE = GaussianMixtureScore([0.3, 0.7], [[-1.5, 0.5], [1.0, -0.5]],
                               [[[0.3, 0.1], [0.1, 0.2]], [[0.5, 0.0], [0.0, 0.4]]])
SLOW = pytest.mark.slow
STRONG_METHODS = ["em", "torchsde-srk", pytest.param("vp", marks=SLOW), pytest.param("ode-euler", marks=SLOW),
                  pytest.param("ode-heun", marks=SLOW), pytest.param("torchsde-euler", marks=SLOW),
                  pytest.param("torchsde-milstein", marks=SLOW), pytest.param("torchsde-midpoint", marks=SLOW),
                  pytest.param("torchsde-heun", marks=SLOW)]


@pytest.mark.parametrize("label", STRONG_METHODS)
def test_declared_strong_order_is_the_pathwise_slope(label):
    # RMS over 1000 paths of |X_n - X_ref| at t_min, X_ref on 2048 steps of the same path. The
    # paths share everything, so the fit's noise is small (measured slopes: em 0.98, vp 1.02,
    # srk 1.56, ode-heun 2.08); ±0.2 separates 1 from 1.5 and 2, and the reference's own error
    # (16x finer than the finest fitted grid) bends the slope by less than 0.05.
    sampler = resolve_method(label)
    T, t_min, n_paths = 3.0, 0.05, 1000
    path = SharedPath(2048, n_paths, 2, seed=5)
    x_T = MIXTURE.sample(n_paths, t=T, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def run(steps):
        grid = TimeGrid.uniform(T, t_min, steps)
        return integrate(sampler, MIXTURE, grid, x_T, path.at(steps, T - t_min), check_finite=False)[0]

    reference = run(2048)
    ns = [8, 16, 32, 64, 128]
    errors = [float((run(n) - reference).pow(2).sum(-1).mean().sqrt()) for n in ns]
    assert fit_order(ns, errors) == pytest.approx(sampler.strong_order, abs=0.2), errors
