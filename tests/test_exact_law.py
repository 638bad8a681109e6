"""The exact output law read off a whole run by probes (diffsde.exact_output_law).

Tolerances: the probe law and the step-by-step propagation compute the same affine maps in
float64 in a different order, so they agree to round-off: entries are O(1) and a few thousand
operations accumulate far less than 1e-12. Monte Carlo comparisons use the exact law's own
standard errors (not estimated): Var(mean_i) = C_ii / n, Var(C_ij) = (C_ii C_jj + C_ij²) / n.
"""

import pytest
import torch

from conftest import make_generator
from diffsde import BetaSchedule, GaussianScore, TimeGrid, exact_output_law, resolve_method, sample
from diffsde.exact_law import output_affine_map

GAUSSIAN = GaussianScore(torch.tensor([1.0, -0.5], dtype=torch.float64),
                         torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64))

ONE_STEP_METHODS = ["vp", "ddpm", ("ddpm", {"variance": "beta_tilde"}), "em", "ode-euler", "ode-heun",
                    ("pc", {"predictor": "em", "corrector_steps": 2, "step_size": 0.02}),
                    ("pc", {"predictor": "ode", "solver": "heun", "step_size": 0.01})]


def propagated_law(spec, score, grid, mean, cov):
    """The law after every step, propagated one step at a time (how the exact law was computed
    before the probes read the whole run): each step is affine, x' = M x + c + N z, read off
    the step on the probes x = 0, e_i (z = 0) and z = e_j; then m' = M m + c, C' = M C Mᵀ + N Nᵀ."""
    sampler = resolve_method(spec)
    d, m = score.dim, sampler.noise_draws
    eye = torch.eye(d, dtype=torch.float64)
    probes_x = torch.zeros(1 + d + m * d, d, dtype=torch.float64)
    probes_x[1:1 + d] = eye
    probes_noise = torch.zeros(m, 1 + d + m * d, d, dtype=torch.float64)
    for j in range(m):
        probes_noise[j, 1 + d + j * d:1 + d + (j + 1) * d] = eye
    for interval in grid.intervals():
        images, _ = sampler.step(score, probes_x, interval, probes_noise, None)
        offset = images[0]
        transition, noise_map = (images[1:1 + d] - offset).T, (images[1 + d:] - offset).T
        mean = transition @ mean + offset
        cov = transition @ cov @ transition.T + noise_map @ noise_map.T
    return mean, 0.5 * (cov + cov.T)


@pytest.mark.parametrize("prior", ["normal", "exact"])
@pytest.mark.parametrize("grid", ["schedule", "bare"])
@pytest.mark.parametrize("spec", ONE_STEP_METHODS, ids=str)
def test_probe_law_equals_the_step_by_step_propagation(spec, grid, prior):
    if grid == "schedule":
        time_grid = BetaSchedule.linear(40).grid(t_min=0.01)
    else:  # non-uniform, β = Δt < 1 so vp applies
        time_grid = TimeGrid.from_times(torch.linspace(1.0, 0.0, 31, dtype=torch.float64) ** 2 * 6.0 + 0.02)
    start = GAUSSIAN.mean_and_cov(time_grid.T) if prior == "exact" else (torch.zeros(2, dtype=torch.float64),
                                                                         torch.eye(2, dtype=torch.float64))
    expected = propagated_law(spec, GAUSSIAN, time_grid, *start)
    name, options = spec if isinstance(spec, tuple) else (spec, {})
    mean, cov = exact_output_law(name, GAUSSIAN, grid=time_grid, prior=prior, **options)
    torch.testing.assert_close(mean, expected[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(cov, expected[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("grid", [TimeGrid.uniform(6.0, 0.05, 20), BetaSchedule.linear(30).grid(t_min=0.01)],
                         ids=["uniform", "schedule"])
def test_torchsde_euler_fed_injected_increments_is_em(grid):
    # Same scheme, same grid, the same standardised increments: the two maps must coincide,
    # on a uniform grid (one sdeint call) and a non-uniform one (one call per interval). On the
    # uniform grid sdeint steps with dt (1 + 1e-12) (so rounding never adds a micro-step), which
    # moves each step's times and length by ~1e-12 relative: 1e-10 absolute bounds that over 20
    # steps of O(1) entries; per-interval calls hit the grid exactly (1e-12, round-off).
    tolerance = 1e-10 if grid.n == 20 else 1e-12
    for got, want in zip(output_affine_map("torchsde-euler", GAUSSIAN, grid=grid),
                         output_affine_map("em", GAUSSIAN, grid=grid)):
        torch.testing.assert_close(got, want, rtol=0, atol=tolerance)


def test_noise_map_columns_follow_the_order_of_the_draws():
    # C's columns are the noise scalars in draw order: with 3 steps of em, the last step's
    # draw enters as sqrt(h) I, the first one is damped by the two later steps.
    grid = TimeGrid.uniform(1.5, 0.0, 3)
    A, b, C = output_affine_map("em", GAUSSIAN, grid=grid)
    assert C.shape == (2, 3 * 2)
    torch.testing.assert_close(C[:, 4:], 0.5 ** 0.5 * torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-15)
    assert float(C[:, :2].abs().max()) < float(C[:, 4:].abs().max())


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["euler", "srk"])
def test_torchsde_exact_law_matches_two_million_samples(solver):
    # 2e6 samples from N(0, I) on a coarse 12-step grid, where each solver's law is far from
    # p_0's; 5 standard errors of the exact law (two-sided false alarm 6e-7 per number).
    grid = TimeGrid.uniform(8.0, 0.05, 12)
    law_mean, law_cov = exact_output_law("torchsde", GAUSSIAN, grid=grid, solver=solver)
    n = 2_000_000
    x = sample(GAUSSIAN, "torchsde", grid=grid, n_samples=n, generator=make_generator("cpu", 11),
               dtype=torch.float64, solver=solver)
    diag = torch.diagonal(law_cov)
    mean_tol = 5 * torch.sqrt(diag / n)
    cov_tol = 5 * torch.sqrt((diag[:, None] * diag[None, :] + law_cov ** 2) / n)
    assert bool(((x.mean(0) - law_mean).abs() <= mean_tol).all()), (x.mean(0), law_mean)
    assert bool(((torch.cov(x.T) - law_cov).abs() <= cov_tol).all()), (torch.cov(x.T), law_cov)


def test_exact_law_refuses_bad_priors():
    with pytest.raises(ValueError, match=r"\(mean \(d,\), cov \(d, d\)\)"):
        exact_output_law("em", GAUSSIAN, grid=[1.0, 0.0], prior=(torch.zeros(3), torch.eye(3)))
    with pytest.raises(TypeError, match="pair of real arrays"):
        exact_output_law("em", GAUSSIAN, grid=[1.0, 0.0], prior=("a", "b"))
