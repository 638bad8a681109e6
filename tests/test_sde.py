"""The forward OU, the VP forward chain, the reverse SDE and the probability-flow ODE."""

import math

import pytest
import torch
import torchsde

from conftest import make_generator
from diffsde import (OU, BetaSchedule, GaussianMixtureScore, GaussianScore, ProbabilityFlowODE, ReverseSDE,
                     vp_forward_step)
from diffsde.processes import EDM, VE, VP, SubVP

MIXTURE = GaussianMixtureScore([0.3, 0.7], [[-2.0, 1.0], [1.5, -0.5]],
                               [[[0.5, 0.2], [0.2, 0.4]], [[1.0, -0.3], [-0.3, 0.6]]])


def five_sigma_mean_tol(variances: torch.Tensor, n: int) -> torch.Tensor:
    """5 standard errors of a sample mean (false-alarm rate ~6e-7 per coordinate)."""
    return 5 * torch.sqrt(variances / n)


@pytest.mark.slow
@pytest.mark.parametrize("x0", [[5.0, -3.0], [0.0, 0.0], [-40.0, 12.0]])
def test_vp_forward_chain_ends_near_standard_normal(device, x0):
    schedule = BetaSchedule.linear(1000)
    start = torch.tensor(x0, dtype=torch.float64)
    # Exact law of the chain by the mean/variance recursion: N(sqrt(ᾱ_n) x0, (1 - ᾱ_n) I),
    # against the OU's N(e^{-T/2} x0, (1 - e^{-T}) I); they differ by |ᾱ_n - e^{-T}| <= 0.87/n.
    mean, var = start.clone(), 0.0
    for beta in schedule.betas.tolist():
        mean, var = math.sqrt(1 - beta) * mean, (1 - beta) * var + beta
    alpha_bar_n = float(schedule.alpha_bars[-1])
    assert torch.allclose(mean, math.sqrt(alpha_bar_n) * start, rtol=1e-12, atol=1e-15)
    assert var == pytest.approx(1 - alpha_bar_n, abs=1e-12)
    assert abs(alpha_bar_n - math.exp(-schedule.T)) < 0.87 / schedule.n
    # The chain itself, simulated: sample mean and covariance within sampling error of that law.
    n = 100_000
    generator = make_generator(device, 7)
    x = start.to(device).expand(n, 2).clone()
    for beta in schedule.betas.tolist():
        x = vp_forward_step(x, beta, torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype))
    exact_mean = math.exp(-schedule.T / 2) * start
    tol = five_sigma_mean_tol(torch.full((2,), 1.0, dtype=torch.float64), n) + 0.87 / schedule.n * start.abs()
    assert bool(((x.mean(0).cpu() - exact_mean).abs() <= tol).all())
    # Sample covariance entries of N(0, I) have std ~ sqrt(2/n) (diagonal), sqrt(1/n) (off).
    assert torch.allclose(torch.cov(x.T).cpu(), (1 - math.exp(-schedule.T)) * torch.eye(2, dtype=torch.float64),
                          atol=5 * math.sqrt(2 / n), rtol=0)


@pytest.mark.slow
def test_sample_marginal_matches_a_fine_euler_maruyama_simulation(device):
    ou, n, t, dt = OU(), 100_000, 1.5, 1e-3
    x0 = torch.tensor([2.0, -1.0], dtype=torch.float64, device=device).expand(n, 2)
    generator = make_generator(device, 11)
    exact = ou.sample_marginal(x0, t, generator=generator)
    x = x0.clone()
    steps = round(t / dt)
    for _ in range(steps):
        x = x + ou.drift(x, 0.0) * dt + math.sqrt(dt) * torch.randn(x.shape, generator=generator, device=device,
                                                                    dtype=x.dtype)
    # EM's own law is N((1 - dt/2)^k x0, v_k) with v_{k+1} = (1 - dt/2)² v_k + dt: its bias
    # against the exact OU marginal is computed here, then added to the sampling tolerance.
    em_factor = (1 - dt / 2) ** steps
    em_var = sum((1 - dt / 2) ** (2 * j) * dt for j in range(steps))
    mean, std = ou.marginal(x0[:1], t)
    bias_mean = (em_factor - math.exp(-t / 2)) * x0[0].abs()
    bias_var = abs(em_var - float(std) ** 2)
    var = float(std) ** 2
    # Two independent samples: the difference of means has variance 2 var / n; of sample
    # variances 2·2 var² / n; 5 sigma each.
    assert bool(((x.mean(0) - exact.mean(0)).abs() <= 5 * math.sqrt(2 * var / n) + bias_mean.abs()).all())
    cov_gap = (torch.cov(x.T) - torch.cov(exact.T)).abs()
    assert float(cov_gap.max()) <= 5 * math.sqrt(4 * var**2 / n) + bias_var
    assert torch.allclose(exact.mean(0), mean[0], atol=5 * math.sqrt(var / n))


def test_marginal_closed_form_and_per_sample_times(device):
    ou = OU()
    x0 = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]], device=device, dtype=torch.float64)
    times = torch.tensor([0.0, 1.0, 4.0], device=device, dtype=torch.float64)
    mean, std = ou.marginal(x0, times)
    assert torch.allclose(mean, torch.exp(-times / 2)[:, None] * x0)
    assert torch.allclose(std.squeeze(-1), torch.sqrt(1 - torch.exp(-times)))
    assert float(std[0]) == 0.0  # t = 0 is the data itself
    mean_s, std_s = ou.marginal(x0, 1.0)
    assert torch.allclose(mean_s, math.exp(-0.5) * x0) and float(std_s) == pytest.approx(math.sqrt(1 - math.exp(-1)))
    assert ou.alpha_bar(2.0) == pytest.approx(math.exp(-2.0))
    assert torch.allclose(ou.alpha_bar(times), torch.exp(-times))
    prior = ou.prior((10, 2), generator=make_generator(device, 0), device=device)
    assert prior.shape == (10, 2) and prior.device.type == device.type


def _log_density_derivatives(log_prob, x, t):
    """(∂_t log p, ∇ log p, Δ log p) by autograd, independent of any score method."""
    x = x.detach().clone().requires_grad_(True)
    t = torch.tensor(t, dtype=x.dtype, requires_grad=True)
    value = log_prob(x, t).sum()
    grad_x, grad_t = torch.autograd.grad(value, (x, t), create_graph=True)
    laplacian = sum(torch.autograd.grad(grad_x[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1]))
    return float(grad_t.detach()), grad_x.detach(), laplacian.detach()


def _divergence(field, x):
    x = x.detach().clone().requires_grad_(True)
    out = field(x)
    return sum(torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1]))


@pytest.mark.parametrize("t_prime", [0.0, 1.0, 2.9])
def test_reverse_sde_solves_the_backward_fokker_planck_equation(t_prime):
    # Anderson's relation, checked as a PDE: with q_{t'} = p_{T-t'} and drift f = ½x + s,
    # ∂_{t'} log q = -∇·f - f·∇log q + ½(Δ log q + |∇ log q|²). Every derivative of log p is
    # taken by autograd of log_prob; only f uses the score method. One point (x of size 1)
    # per row, so sums over the batch are per-sample derivatives.
    T = 3.0
    sde = ReverseSDE(MIXTURE, T)
    x = torch.randn(1, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2
    dt_log_p, grad_log_p, lap_log_p = _log_density_derivatives(MIXTURE.log_prob, x, T - t_prime)
    drift = sde.drift(x, t_prime)
    lhs = -dt_log_p  # ∂_{t'} = -∂_t
    rhs = (-_divergence(lambda y: sde.drift(y, t_prime), x) - (drift * grad_log_p).sum(-1)
           + 0.5 * (lap_log_p + (grad_log_p**2).sum(-1)))
    assert float(rhs) == pytest.approx(lhs, rel=1e-9, abs=1e-10)
    # And the decomposition (Anderson 1982): forward drift + reverse drift = Langevin drift s.
    t = T - t_prime
    assert torch.allclose(OU().drift(x, t) + drift, grad_log_p, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("t_prime", [0.0, 1.5, 2.9])
def test_probability_flow_solves_the_continuity_equation(t_prime):
    # ∂_{t'} log q = -∇·v - v·∇log q for q_{t'} = p_{T-t'} and v = ½x + ½s.
    T = 3.0
    ode = ProbabilityFlowODE(MIXTURE, T)
    x = torch.randn(1, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 2
    dt_log_p, grad_log_p, _ = _log_density_derivatives(MIXTURE.log_prob, x, T - t_prime)
    velocity = ode.drift(x, t_prime)
    rhs = -_divergence(lambda y: ode.drift(y, t_prime), x) - (velocity * grad_log_p).sum(-1)
    assert float(rhs) == pytest.approx(-dt_log_p, rel=1e-9, abs=1e-10)
    assert torch.allclose(ode(t_prime, x), velocity)


@pytest.mark.parametrize("make, method", [
    (lambda score, T: ReverseSDE(score, T), "euler"),
    (lambda score, T: ReverseSDE(score, T, sde_type="stratonovich"), "midpoint"),
    (lambda score, T: ProbabilityFlowODE(score, T), "euler"),
])
def test_torchsde_integrates_the_objects_as_they_are(device, make, method):
    # Gaussian data: started from the exact p_T, both processes must deliver p_0 at t' = T.
    gaussian = GaussianScore([1.0, -0.5], [[0.6, 0.2], [0.2, 0.3]])
    T, n = 2.0, 20_000
    generator = make_generator(device, 3)
    x_T = gaussian.sample(n, t=T, generator=generator, dtype=torch.float64)
    ts = torch.tensor([0.0, T], dtype=torch.float64, device=device)
    out = torchsde.sdeint(make(gaussian, T), x_T, ts, dt=1e-2, method=method)[-1]
    mean, cov = gaussian.mean_and_cov(0.0)
    # 5-sigma sampling bounds plus the O(dt) weak discretization error, bounded by 0.05·dt·T
    # times the scale of the moments (dt = 0.01, T = 2: 1e-3).
    assert bool(((out.mean(0).cpu() - mean).abs() <= five_sigma_mean_tol(torch.diagonal(cov), n) + 1e-3).all())
    cov_tol = 5 * torch.sqrt((torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov**2) / n) + 1e-3
    assert bool(((torch.cov(out.T).cpu() - cov).abs() <= cov_tol).all())


def test_times_outside_the_range_are_refused():
    ou = OU()
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="t must be in"):
        ou.marginal(x, -0.1)
    with pytest.raises(ValueError, match="t must be in"):
        ou.sample_marginal(x, torch.tensor([0.5, -1.0, 0.2]))
    with pytest.raises(ValueError, match="t must be in"):
        ou.drift(x, float("nan"))
    sde = ReverseSDE(MIXTURE, 2.0)
    with pytest.raises(ValueError, match=r"t' \(backward time\) must be in \[.*2"):
        sde.drift(x, 2.5)
    with pytest.raises(ValueError, match="backward time"):
        ProbabilityFlowODE(MIXTURE, 2.0).drift(x, -0.5)
    with pytest.raises(ValueError, match="T must be a finite number > 0"):
        ReverseSDE(MIXTURE, 0.0)
    with pytest.raises(TypeError, match="score must be callable"):
        ReverseSDE("not a score", 1.0)
    with pytest.raises(ValueError, match="sde_type"):
        ReverseSDE(MIXTURE, 1.0, sde_type="bogus")
    with pytest.raises(ValueError, match="per-sample times"):
        ou.marginal(x, torch.tensor([0.1, 0.2]))


# -- ReverseSDE(process, score) and ProbabilityFlowODE(process, score) for every process -------------

PROCESSES = {"OU": (OU(), 3.0), "VP": (VP(), 1.0), "SubVP": (SubVP(), 1.0), "VE": (VE(), 1.0), "EDM": (EDM(), 80.0)}


@pytest.mark.parametrize("name", list(PROCESSES))
def test_reverse_objects_of_a_process_follow_song_eqs_6_and_13(device, name):
    # Reverse drift g² s - f and diffusion g (Song et al. 2021, eq. 6); flow ½ g² s - f (eq. 13);
    # f and g are the process's own (checked against the papers in test_processes.py).
    process, T = PROCESSES[name]
    score = process.exact_score(MIXTURE)
    sde = ReverseSDE(process, score, T)
    ode = ProbabilityFlowODE(process, score, T)
    x = torch.randn(4, 2, generator=make_generator(device, 8), device=device, dtype=torch.float64)
    for t_prime in [0.0, 0.3 * T, T]:
        tau = T - t_prime
        s, f, g = score(x, tau), process.drift(x, tau), process.diffusion(tau)
        assert torch.allclose(sde.drift(x, t_prime), g**2 * s - f, rtol=1e-12, atol=1e-12)
        assert torch.allclose(ode.drift(x, t_prime), 0.5 * g**2 * s - f, rtol=1e-12, atol=1e-12)
        assert float(sde.diffusion(t_prime)) == pytest.approx(g, rel=1e-12) and ode.diffusion(t_prime) == 0.0
        assert torch.allclose(sde.g(torch.tensor(t_prime, dtype=torch.float64), x), g * torch.ones_like(x), rtol=1e-12)
        assert torch.allclose(sde.g_prod(t_prime, x, x), g * x, rtol=1e-12)
    additive = ReverseSDE(process, score, T, noise_type="additive").g(0.1 * T, x)
    assert additive.shape == (4, 2, 2) and torch.allclose(additive[1], process.diffusion(0.9 * T) * torch.eye(
        2, dtype=torch.float64, device=device), rtol=1e-12)
    # Per-sample backward times give per-sample coefficients.
    t_primes = torch.tensor([0.0, 0.2, 0.5, 0.9], dtype=torch.float64, device=device) * T
    rows = torch.stack([sde.drift(x[i:i + 1], float(t))[0] for i, t in enumerate(t_primes.tolist())])
    assert torch.allclose(sde.drift(x, t_primes), rows, rtol=1e-12, atol=1e-12)
    assert torch.allclose(sde.g(t_primes, x)[:, 0], process.diffusion(T - t_primes), rtol=1e-12)
    # T defaults to the end of the process's clock; process.reverse / probability_flow build the same.
    if process.T is not None:
        assert ReverseSDE(process, score).T == process.T == process.reverse(score).T
    assert process.reverse(score, T).process is process and process.probability_flow(score, T).process is process


def test_the_older_form_is_the_ou_and_unchanged():
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ou = OU()
    for old, new in [(ReverseSDE(MIXTURE, 2.0), ReverseSDE(ou, MIXTURE, 2.0)),
                     (ReverseSDE(MIXTURE, T=2.0), ou.reverse(MIXTURE, 2.0)),
                     (ReverseSDE(score=MIXTURE, T=2.0), ReverseSDE(ou, MIXTURE, T=2.0)),
                     (ProbabilityFlowODE(MIXTURE, 2.0), ou.probability_flow(MIXTURE, 2.0))]:
        assert old.T == new.T == 2.0 and isinstance(old.process, OU)
        for t_prime in [0.0, 0.7, 2.0]:
            # Bit for bit, and the OU formulas themselves: ½ x + s, ½ x + ½ s.
            assert torch.equal(old.drift(x, t_prime), new.drift(x, t_prime))
            s = MIXTURE(x, 2.0 - t_prime)
            expected = 0.5 * x + s if isinstance(old, ReverseSDE) else 0.5 * (x + s)
            assert torch.equal(old.drift(x, t_prime), expected)
        assert old.diffusion(torch.tensor(0.5)) == (1.0 if isinstance(old, ReverseSDE) else 0.0)
    assert ou.reverse(MIXTURE, 2.0).process is ou


def test_process_arguments_are_checked():
    with pytest.raises(ValueError, match="T must be given for OU"):
        ReverseSDE(OU(), MIXTURE)
    with pytest.raises(ValueError, match=r"T must be in \(0, 1\], the end of the clock of VP"):
        ReverseSDE(VP(), MIXTURE, 1.5)
    with pytest.raises(ValueError, match=r"T must be in \(0, 80\]"):
        EDM().probability_flow(MIXTURE, 100.0)
    with pytest.raises(ValueError, match="T must be a finite number > 0"):
        ReverseSDE(VE(), MIXTURE, 0.0)
    with pytest.raises(TypeError, match="score must be callable"):
        ReverseSDE(VP(), "not a score")
    with pytest.raises(TypeError, match="got T twice"):
        ReverseSDE(MIXTURE, 1.0, 2.0)
    with pytest.raises(ValueError, match=r"t' \(backward time\) must be in \[.*1"):
        ReverseSDE(VP(), VP().exact_score(MIXTURE)).drift(torch.zeros(2, 2), 1.5)


@pytest.mark.parametrize("name", list(PROCESSES))
@pytest.mark.parametrize("flow", [False, True], ids=["sde", "ode"])
def test_each_process_solves_its_fokker_planck_equation(name, flow):
    # q_{τ'} = p_{T - τ'}. Reverse SDE with drift F and diffusion g (backward Fokker–Planck):
    # ∂_{τ'} log q = -∇·F - F·∇log q + ½ g² (Δ log q + |∇ log q|²); the flow (continuity equation):
    # the same without the g² term. Every derivative of log p by autograd of the wrapped log_prob.
    process, T = PROCESSES[name]
    exact = process.exact_score(MIXTURE)
    obj = (ProbabilityFlowODE if flow else ReverseSDE)(process, exact, T)
    x = torch.randn(1, 2, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    for t_prime in [0.1 * T, 0.6 * T, 0.95 * T]:
        tau = T - t_prime
        x_here = x * float(process.ou_scale(tau))  # a typical point at this scale
        dt_log_p, grad_log_p, lap_log_p = _log_density_derivatives(exact.log_prob, x_here, tau)
        drift = obj.drift(x_here, t_prime)
        rhs = -_divergence(lambda y: obj.drift(y, t_prime), x_here) - (drift * grad_log_p).sum(-1)
        if not flow:
            rhs = rhs + 0.5 * process.diffusion(tau) ** 2 * (lap_log_p + (grad_log_p**2).sum(-1))
        assert float(rhs) == pytest.approx(-dt_log_p, rel=1e-8, abs=1e-10 * (1 + abs(dt_log_p)))


@pytest.mark.parametrize("beta", [-0.1, 1.5, math.nan])
def test_vp_forward_step_refuses_beta_outside_zero_one(beta):
    # sqrt(1 - β) and sqrt(β) are real only for β in [0, 1]; -0.1 gave a complex tensor before.
    with pytest.raises(ValueError, match=r"^beta must be in \[0, 1\]"):
        vp_forward_step(torch.zeros(2, 2), beta, torch.zeros(2, 2))
