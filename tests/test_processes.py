"""The forward processes (OU, VP, sub-VP, VE, EDM), their map to OU coordinates, and scores
carried through that map."""

import math

import pytest
import torch
import torchsde

from conftest import make_generator
from diffsde import GaussianMixtureScore, GaussianScore, toys
from diffsde.processes import EDM, OU, VE, VP, Process, SubVP
from diffsde.process_scores import ProcessExactScore, ScoreAsOU


def vp_closed_form(beta_min, beta_max):
    """Song et al. 2021 (§3.4, appendix B; score_sde's ``VPSDE.marginal_prob``): log mean
    coefficient ``-¼ s² (β_max - β_min) - ½ s β_min``, std ``sqrt(1 - e^{2 log mean})``."""
    def forms(s):
        beta = beta_min + s * (beta_max - beta_min)
        log_mean = -0.25 * s**2 * (beta_max - beta_min) - 0.5 * s * beta_min
        return -0.5 * beta, torch.sqrt(beta), torch.exp(log_mean), torch.sqrt(1 - torch.exp(2 * log_mean))
    return forms


def subvp_closed_form(beta_min, beta_max):
    """Song et al. 2021 (sub-VP): g² = β (1 - e^{-2∫β}), mean as VP, std ``1 - e^{2 log mean}``."""
    def forms(s):
        beta = beta_min + s * (beta_max - beta_min)
        log_mean = -0.25 * s**2 * (beta_max - beta_min) - 0.5 * s * beta_min
        return (-0.5 * beta, torch.sqrt(beta * (1 - torch.exp(4 * log_mean))), torch.exp(log_mean),
                1 - torch.exp(2 * log_mean))
    return forms


def ve_closed_form(sigma_min, sigma_max):
    """Song et al. 2021 (VE): σ(s) = σ_min (σ_max/σ_min)^s, g = σ(s) sqrt(2 log(σ_max/σ_min)), and
    the exact kernel N(x0, [σ(s)² - σ(0)²] I)."""
    def forms(s):
        sigma = sigma_min * (sigma_max / sigma_min) ** s
        return (torch.zeros_like(s), sigma * math.sqrt(2 * math.log(sigma_max / sigma_min)), torch.ones_like(s),
                torch.sqrt(sigma**2 - sigma_min**2))
    return forms


def edm_forms(tau):
    """Karras et al. 2022 with σ(τ) = τ, s(τ) = 1: f = 0, g = sqrt(2τ), x_τ = x0 + τ ε."""
    return torch.zeros_like(tau), torch.sqrt(2 * tau), torch.ones_like(tau), tau


def ou_forms(t):
    """The OU (Song et al. 2021, eq. 11 with β ≡ 1): f = -½ x, g = 1, x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε."""
    return torch.full_like(t, -0.5), torch.ones_like(t), torch.exp(-t / 2), torch.sqrt(1 - torch.exp(-t))


# (process, closed forms (k, g, a, b) of τ, end of the clock used, prior std)
CASES = {
    "OU": (OU(), ou_forms, 3.0, 1.0),
    "VP": (VP(), vp_closed_form(0.1, 20.0), 1.0, 1.0),
    "VP-0.5-7": (VP(beta_min=0.5, beta_max=7.0), vp_closed_form(0.5, 7.0), 1.0, 1.0),
    "SubVP": (SubVP(), subvp_closed_form(0.1, 20.0), 1.0, 1.0),
    "SubVP-0.2-12": (SubVP(0.2, 12.0), subvp_closed_form(0.2, 12.0), 1.0, 1.0),
    "VE": (VE(), ve_closed_form(0.01, 50.0), 1.0, 50.0),
    "VE-0.05-20": (VE(sigma_min=0.05, sigma_max=20.0), ve_closed_form(0.05, 20.0), 1.0, 20.0),
    "EDM": (EDM(), edm_forms, 80.0, 80.0),
    "EDM-30": (EDM(sigma_max=30.0), edm_forms, 30.0, 30.0),
}
IDS = list(CASES)
MIXTURE = GaussianMixtureScore([0.3, 0.7], [[-2.0, 1.0], [1.5, -0.5]],
                               [[[0.5, 0.2], [0.2, 0.4]], [[1.0, -0.3], [-0.3, 0.6]]])
GAUSSIAN = GaussianScore([1.0, -0.5], [[0.6, 0.2], [0.2, 0.3]])


def fractions(T, device, n=6):
    """τ at 0, a few interior points and T, float64."""
    return T * torch.tensor([0.0, 0.01, 0.2, 0.5, 0.9, 1.0][:n], dtype=torch.float64, device=device)


@pytest.mark.parametrize("name", IDS)
def test_f_g_marginal_and_prior_match_the_papers(device, name):
    process, forms, T, prior_std = CASES[name]
    taus = fractions(T, device)
    k, g, a, b = forms(taus)
    x = torch.randn(len(taus), 3, generator=make_generator(device, 1), device=device, dtype=torch.float64)
    # Same closed forms evaluated in float64 by different algebra (expm1, B(s), ...): 1e-12.
    close = dict(rtol=1e-12, atol=1e-12)
    assert torch.allclose(process.drift(x, taus), k[:, None] * x, **close)
    assert torch.allclose(process.diffusion(taus), g, **close)
    a_got, b_got = process.scales(taus)
    assert torch.allclose(a_got, a, **close) and torch.allclose(b_got, b, **close)
    mean, std = process.marginal(x, taus)
    assert torch.allclose(mean, a[:, None] * x, **close) and torch.allclose(std[:, 0], b, **close)
    # A Python float time gives Python floats, equal to the tensor path.
    for i, tau in enumerate(taus.tolist()):
        assert process.diffusion(tau) == pytest.approx(float(g[i]), rel=1e-12, abs=1e-12)
        assert all(isinstance(v, float) for v in process.scales(tau))
        assert torch.allclose(process.drift(x[i:i + 1], tau), k[i] * x[i:i + 1], **close)
    assert process.T == (None if name == "OU" else T)
    # Prior N(0, σ² I) (Song et al. 2021; Karras et al. 2022): its log-density exactly, its
    # sample moments within 5 standard errors (mean: σ/sqrt(n); variance: σ² sqrt(2/n)).
    n = 40_000
    prior = process.prior((n, 2), generator=make_generator(device, 2), device=device, dtype=torch.float64)
    assert prior.shape == (n, 2) and prior.device.type == device.type
    assert float(prior.mean(0).abs().max()) <= 5 * prior_std / math.sqrt(n)
    assert float((prior.var(0) / prior_std**2 - 1).abs().max()) <= 5 * math.sqrt(2 / n)
    normal = torch.distributions.Normal(torch.zeros((), dtype=torch.float64, device=device), prior_std)
    assert torch.allclose(process.prior_log_prob(prior[:5]), normal.log_prob(prior[:5]).sum(-1), rtol=1e-12)


@pytest.mark.parametrize("name", IDS)
def test_the_marginal_solves_the_moment_equations_of_f_and_g(device, name):
    # For dx = k(τ) x dτ + g(τ) dW: da/dτ = k a and d(b²)/dτ = 2 k b² + g² (Särkkä & Solin 2019,
    # as in Song et al. 2021, appendix B). Derivatives by autograd of the library's own a(τ), b(τ);
    # k and g from its drift and diffusion: exact but for rounding (1e-10 relative).
    process, _, T, _ = CASES[name]
    taus = fractions(T, device)[1:].clone().requires_grad_(True)
    a, b = process.scales(taus)
    # a = 1 (VE, EDM) is a constant that autograd does not track: its derivative is 0.
    da = torch.autograd.grad(a.sum(), taus, retain_graph=True)[0] if a.requires_grad else torch.zeros_like(a)
    db2, = torch.autograd.grad((b * b).sum(), taus)
    taus = taus.detach()
    k = process.drift(torch.ones(len(taus), 1, dtype=torch.float64, device=device), taus)[:, 0]
    g2 = process.diffusion(taus) ** 2
    a, b = process.scales(taus)
    assert torch.allclose(da, k * a, rtol=1e-10, atol=1e-12)
    assert torch.allclose(db2, 2 * k * b * b + g2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", IDS)
def test_the_ou_map_and_its_inverse(device, name):
    process, _, T, _ = CASES[name]
    taus = torch.linspace(0.0, T, 201, dtype=torch.float64, device=device)
    t = process.ou_time(taus)
    a, b = process.scales(taus)
    c = process.ou_scale(taus)
    # The map of the documentation's conventions page: t = log(1 + b²/a²), c² = a² + b²; then (a/c)² = e^{-t}, (b/c)² = 1 - e^{-t}.
    assert torch.allclose(t, torch.log1p(b**2 / a**2), rtol=1e-12, atol=1e-14)
    assert torch.allclose(c**2, a**2 + b**2, rtol=1e-12)
    assert torch.allclose((a / c) ** 2, torch.exp(-t), rtol=1e-12, atol=1e-14)
    assert torch.allclose((b / c) ** 2, -torch.expm1(-t), rtol=1e-12, atol=1e-14)
    assert process.ou_time(0.0) == 0.0 and bool((t[1:] > t[:-1]).all())
    # Closed-form inverses: 1e-12 relative to the clock's end.
    assert torch.allclose(process.process_time(t), taus, rtol=0, atol=1e-12 * T)
    for tau in taus[::20].tolist():
        assert process.process_time(process.ou_time(tau)) == pytest.approx(tau, rel=1e-12, abs=1e-12 * T)
    assert process.process_time(process.ou_time(T)) == pytest.approx(T, rel=1e-14)
    x = torch.randn(201, 2, generator=make_generator(device, 3), device=device, dtype=torch.float64)
    assert torch.allclose(process.to_ou(x, taus), x / c[:, None], rtol=1e-15)
    assert torch.allclose(process.from_ou(process.to_ou(x, taus), taus), x, rtol=1e-14)


@pytest.mark.parametrize("name", IDS)
@pytest.mark.parametrize("fraction", [0.05, 0.6])
def test_a_sample_mapped_to_ou_has_the_ou_marginal(device, name, fraction):
    # x0 ~ N(μ, Σ). The law of x_τ is N(a μ, a² Σ + b² I); divided by c it must be the OU's
    # N(e^{-t/2} μ, e^{-t} Σ + (1 - e^{-t}) I) at t = t(τ): exactly (1e-12), and for a sample drawn
    # in the process's coordinates, within 5 standard errors (mean: sqrt(C_ii / n); covariance:
    # sqrt((C_ii C_jj + C_ij²) / n), the Gaussian sample-covariance standard error).
    process, _, T, _ = CASES[name]
    tau = fraction * T
    a, b = process.scales(tau)
    c, t = process.ou_scale(tau), process.ou_time(tau)
    ou_mean, ou_cov = GAUSSIAN.mean_and_cov(t)
    eye = torch.eye(2, dtype=torch.float64)
    assert torch.allclose(a * GAUSSIAN.mean / c, ou_mean, rtol=1e-12, atol=1e-14)
    assert torch.allclose((a * a * GAUSSIAN.cov + b * b * eye) / c**2, ou_cov, rtol=1e-12, atol=1e-14)
    n = 20_000
    generator = make_generator(device, 4)
    x0 = GAUSSIAN.sample(n, 0.0, generator=generator, dtype=torch.float64)
    y = process.to_ou(process.sample_marginal(x0, tau, generator=generator), tau).cpu()
    mean_se = torch.sqrt(torch.diagonal(ou_cov) / n)
    cov_se = torch.sqrt((torch.outer(torch.diagonal(ou_cov), torch.diagonal(ou_cov)) + ou_cov**2) / n)
    assert bool(((y.mean(0) - ou_mean).abs() <= 5 * mean_se).all())
    assert bool(((torch.cov(y.T) - ou_cov).abs() <= 5 * cov_se).all())


@pytest.mark.parametrize("name", IDS)
def test_the_exact_score_under_a_process(device, name):
    process, _, T, _ = CASES[name]
    exact = process.exact_score(MIXTURE)
    assert exact.dim == 2
    x = 3 * torch.randn(6, 2, generator=make_generator(device, 5), device=device, dtype=torch.float64)
    taus = fractions(T, device)
    for tau in [float(T) * 0.3, taus]:
        # score = ∇ log p of the wrapped log_prob (autograd; 1e-9 relative, both in float64).
        leaf = x.clone().requires_grad_(True)
        grad, = torch.autograd.grad(exact.log_prob(leaf, tau).sum(), leaf)
        assert torch.allclose(exact.score(x, tau), grad, rtol=1e-9, atol=1e-12)
        assert torch.allclose(exact(x, tau), exact.score(x, tau))
    # log_prob is the normalised density of x_τ: for Gaussian data, N(a μ, a² Σ + b² I) (1e-10).
    gaussian = process.exact_score(GAUSSIAN)
    for tau in fractions(T, device).tolist():
        a, b = process.scales(tau)
        law = torch.distributions.MultivariateNormal((a * GAUSSIAN.mean).to(device),
                                                     (a * a * GAUSSIAN.cov + b * b * torch.eye(2, dtype=torch.float64))
                                                     .to(device))
        assert torch.allclose(gaussian.log_prob(x, tau), law.log_prob(x), rtol=1e-10, atol=1e-10)
        mean, cov = gaussian.mean_and_cov(tau)
        assert torch.allclose(mean, law.mean.cpu(), rtol=1e-12) and torch.allclose(cov, law.covariance_matrix.cpu(),
                                                                                  rtol=1e-12, atol=1e-14)
    # Its samples have that law (5 standard errors, as above).
    n, tau = 20_000, 0.7 * T
    draws = gaussian.sample(n, tau, generator=make_generator(device, 6), dtype=torch.float64).cpu()
    mean, cov = gaussian.mean_and_cov(tau)
    assert bool(((draws.mean(0) - mean).abs() <= 5 * torch.sqrt(torch.diagonal(cov) / n)).all())
    cov_se = torch.sqrt((torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov**2) / n)
    assert bool(((torch.cov(draws.T) - cov).abs() <= 5 * cov_se).all())


@pytest.mark.parametrize("name", IDS)
def test_ou_score_undoes_exact_score(device, name):
    # c · s(c y, τ(t)) with s the wrapped exact score gives back the OU score (1e-10 relative).
    process, _, T, _ = CASES[name]
    ring = toys.ring(n_modes=4, radius=2.0, std=0.5).exact_score
    for ou_exact in (MIXTURE, ring):
        as_ou = process.ou_score(process.exact_score(ou_exact))
        y = 2 * torch.randn(6, 2, generator=make_generator(device, 7), device=device, dtype=torch.float64)
        ts = process.ou_time(fractions(T, device))
        assert torch.allclose(as_ou(y, ts), ou_exact.score(y, ts), rtol=1e-10, atol=1e-12)
        for t in ts[1:].tolist():
            assert torch.allclose(as_ou(y, t), ou_exact.score(y, t), rtol=1e-10, atol=1e-12)
        assert as_ou.dim == 2
    if name == "OU":  # the OU's coordinates are its own: no wrapper at all
        assert process.exact_score(MIXTURE) is MIXTURE and process.ou_score(MIXTURE) is MIXTURE
    else:
        assert isinstance(process.exact_score(MIXTURE), ProcessExactScore)
        assert isinstance(process.ou_score(MIXTURE), ScoreAsOU)


def test_every_process_satisfies_the_protocol_and_scores_do_not():
    for process, *_ in CASES.values():
        assert isinstance(process, Process)
    assert not isinstance(MIXTURE, Process) and not isinstance(lambda x, t: x, Process)


@pytest.mark.parametrize("make, error, match", [
    (lambda: VP(beta_min=0.0), ValueError, r"beta_min must be in \(0, inf\), got 0.0"),
    (lambda: VP(beta_min=-1.0), ValueError, "beta_min must be in"),
    (lambda: VP(beta_min=5.0, beta_max=1.0), ValueError, r"beta_max must be in \[beta_min, inf\) = \[5, inf\)"),
    (lambda: VP(beta_max=float("inf")), ValueError, "beta_max must be in"),
    (lambda: SubVP(beta_min=float("nan")), ValueError, "beta_min must be in"),
    (lambda: SubVP(beta_max=True), TypeError, "beta_max must be a real number"),
    (lambda: VE(sigma_min=0.0), ValueError, r"sigma_min must be in \(0, inf\)"),
    (lambda: VE(sigma_min=2.0, sigma_max=2.0), ValueError, r"sigma_max must be in \(sigma_min, inf\) = \(2, inf\)"),
    (lambda: VE(sigma_max="50"), TypeError, "sigma_max must be a real number"),
    (lambda: EDM(sigma_max=-80.0), ValueError, r"sigma_max must be in \(0, inf\)"),
    (lambda: EDM(sigma_max=float("inf")), ValueError, "sigma_max must be in"),
])
def test_bad_parameters_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_times_outside_the_clock_are_refused():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1"):
        VP().marginal(x, 1.5)
    with pytest.raises(ValueError, match="tau must be in"):
        VE().drift(x, torch.tensor([0.5, -0.1, 0.2]))
    with pytest.raises(ValueError, match="tau must be in"):
        EDM().diffusion(81.0)
    with pytest.raises(ValueError, match="tau must be in"):
        SubVP().ou_time(float("nan"))
    with pytest.raises(ValueError, match=r"t must be in \[0, 10"):
        VP().process_time(11.0)
    with pytest.raises(ValueError, match="t must be in"):
        OU().process_time(-1.0)
    with pytest.raises(ValueError, match="per-sample times"):
        VE().marginal(x, torch.tensor([0.1, 0.2]))
    with pytest.raises(TypeError, match="score must be callable"):
        VP().ou_score("not a score")


# -- the reverse SDE and the flow of each process, integrated by torchsde ---------------------------

# Euler steps per process, (reverse SDE plan, flow plan), each a list of (start, end, dt) segments
# in backward time; see test_torchsde_integrates_each_process_to_the_data_law.
STEP_PLANS = {
    "OU": ([(0.0, 3.0, 0.02)],) * 2,
    "VP": ([(0.0, 1.0, 1 / 200)],) * 2,
    "SubVP": ([(0.0, 1.0, 1 / 200)],) * 2,
    "VE": ([(0.0, 1.0, 1 / 200)], [(0.0, 1.0, 1 / 1000)]),
    "EDM": ([(0.0, 60.0, 2.0), (60.0, 76.0, 0.2), (76.0, 80.0, 0.02)],) * 2,
}


class IncrementsInOrder(torchsde.BaseBrownian):
    """Brownian increments ``W(tb) - W(ta) ~ N(0, (tb - ta) I)`` drawn from a generator: exact in law
    for a fixed-step solver that asks for each interval once, in order (torchsde's Euler does), and
    much cheaper than a BrownianInterval tree queried at a thousand points."""

    def __init__(self, shape, dtype, device, generator):
        self._shape, self._dtype, self._device, self.generator = shape, dtype, device, generator

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        noise = torch.randn(self._shape, generator=self.generator, dtype=self._dtype, device=self._device)
        return math.sqrt(float(tb - ta)) * noise

    def __repr__(self):
        return "IncrementsInOrder()"

    dtype = property(lambda self: self._dtype)
    device = property(lambda self: self._device)
    shape = property(lambda self: self._shape)
    levy_area_approximation = "none"


def euler_law(forms, T, plan, flow):
    """Exact law N(m, P) of Euler(–Maruyama) on the reverse SDE (or the flow) of Gaussian data
    N(μ, Σ), from the papers' k, g, a, b (not the library's), stepped as torchsde steps
    (next = min(τ' + dt, end)). With S_τ = a² Σ + b² I the drift w g² S^{-1}(a μ - x) - k x
    (w = 1, or ½ for the flow) is affine, A x + β, so a step maps m -> (I + hA) m + h β and
    P -> (I + hA) P (I + hA)ᵀ + g² h I (no noise for the flow)."""
    eye = torch.eye(2, dtype=torch.float64)

    def coefficients(tau):
        return [float(v) for v in forms(torch.tensor(tau, dtype=torch.float64))]

    _, _, a, b = coefficients(T)
    m, P = a * GAUSSIAN.mean, a * a * GAUSSIAN.cov + b * b * eye
    for start, end, dt in plan:
        now = start
        while now < end:
            after = min(now + dt, end)
            h, tau = after - now, min(max(T - now, 0.0), T)
            k, g, a, b = coefficients(tau)
            precision = torch.linalg.inv(a * a * GAUSSIAN.cov + b * b * eye)
            weight = 0.5 * g * g if flow else g * g
            step = eye + h * (-weight * precision - k * eye)
            m = step @ m + h * weight * precision @ (a * GAUSSIAN.mean)
            P = step @ P @ step.T + (0.0 if flow else g * g * h) * eye
            now = after
    return m, P


@pytest.mark.parametrize("name", list(STEP_PLANS))
@pytest.mark.parametrize("flow", [False, True], ids=["sde", "ode"])
def test_torchsde_integrates_each_process_to_the_data_law(device, name, flow):
    # Gaussian data N(μ, Σ), started from the exact p_T in the process's coordinates, integrated by
    # torchsde's Euler scheme with the exact score. Euler on this linear problem has an exact output
    # law N(m, P), computed by euler_law from the papers' formulas: (1) the sample is within 5
    # standard errors of it (mean: sqrt(P_ii/n); covariance: sqrt((P_ii P_jj + P_ij²)/n)), a sharp
    # check of the library's f, g, score and time map; (2) N(m, P) is within a discretization
    # allowance of the data law, asserted below 0.03 in every moment, so (3) the sample meets the
    # data law within 5 standard errors plus that allowance. At n = 5000, 5 standard errors are about
    # 0.05 in each moment: this catches a wrong formula (sub-VP run with the VP's g fails it), while
    # the exact tests above catch small slips.
    # Steps (STEP_PLANS): the drift rate of the reverse SDE is about g²/b² + |k|, which sets dt:
    # VP/sub-VP ≈ β ≤ 20 and OU ½ give dt·rate ≤ 0.1. VE's g² grows 2.5e7-fold over the clock, but
    # g²/b² stays ≈ 2 log(σ_max/σ_min) ≈ 17 (b ≈ σ), so uniform steps in s work (dt·rate ≈ 0.09; the
    # flow, whose Euler bias is larger here, wants dt = 1e-3 for an allowance of 0.023). EDM's
    # g² = 2τ gives a rate 2τ/(τ² + λ) ≤ 1/sqrt(λ) for a data eigenvalue λ, about 2/τ for τ² ≫ λ:
    # steps of 2 while τ ≥ 20 (rate ≤ 0.1), 0.2 down to τ = 4, then 0.02 (rate ≤ 1/sqrt(λ_min) ≈ 2.7).
    process, forms, T, _ = CASES[name]
    plan = STEP_PLANS[name][flow]
    exact = process.exact_score(GAUSSIAN)
    obj = process.probability_flow(exact, T) if flow else process.reverse(exact, T)
    n = 5_000
    generator = make_generator(device, 12)
    x = exact.sample(n, T, generator=generator, dtype=torch.float64)
    bm = IncrementsInOrder(x.shape, x.dtype, device, generator)
    for start, end, dt in plan:
        ts = torch.tensor([start, end], dtype=torch.float64, device=device)
        x = torchsde.sdeint(obj, x, ts, dt=dt, method="euler", bm=bm)[-1]
    x = x.cpu()
    m, P = euler_law(forms, T, plan, flow)
    mean_se = torch.sqrt(torch.diagonal(P) / n)
    cov_se = torch.sqrt((torch.outer(torch.diagonal(P), torch.diagonal(P)) + P**2) / n)
    assert bool(((x.mean(0) - m).abs() <= 5 * mean_se).all())
    assert bool(((torch.cov(x.T) - P).abs() <= 5 * cov_se).all())
    mean_gap, cov_gap = (m - GAUSSIAN.mean).abs(), (P - GAUSSIAN.cov).abs()
    assert float(mean_gap.max()) < 0.03 and float(cov_gap.max()) < 0.03
    assert bool(((x.mean(0) - GAUSSIAN.mean).abs() <= 5 * mean_se + mean_gap).all())
    assert bool(((torch.cov(x.T) - GAUSSIAN.cov).abs() <= 5 * cov_se + cov_gap).all())
