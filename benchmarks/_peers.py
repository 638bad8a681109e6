"""The peers of the accuracy benchmark, fed the exact score: diffusers' schedulers and k-diffusion's samplers.

Every peer is a function ``run(score, x_T, noise) -> x_0`` of the start x_T (N, d) in OU
coordinates (x_T ~ N(0, I) at T = -log ᾱ_1000 of DDPM's linear schedule) and a noise source
``noise(k, like)`` (the k-th standard normal draw of the run, like ``like``), so the same loop
gives samples (noise from a generator) and, on a Gaussian score, the exact output law (probe
inputs and probe noise, as :func:`diffsde.exact_output_law` does for diffsde's methods).

* diffusers (0.42): the scheduler is built as DDPM's linear 1000-step schedule (β from 1e-4 to
  0.02) and fed ``ε = -σ s(x, t)`` at the noise level the solver itself uses for the step: its
  ``sigmas[step_index]`` (σ_VE, so ᾱ = 1 / (1 + σ²)) where it has them, else
  ``alphas_cumprod[timestep]``. (With Karras or λ-uniform sigmas diffusers rounds the model's
  timestep to an integer; feeding ε at the solver's own σ is the peer at its best.)
* k-diffusion (0.1.1, ``sampling.py`` loaded by tests/peers.py): the denoiser
  ``D(y; σ) = E[x0 | x_t]`` of ``y = x / α`` at ``t = log(1 + σ²)``, on its σ grids from
  σ_min = σ_VE(ᾱ_1) ≈ 0.01 to σ_max = σ_VE(ᾱ_1000) ≈ 157 with a final σ = 0 (as its CompVis
  wrapper does for DDPM's schedule); the start is ``y_T = x_T sqrt(1 + σ_max²)`` (the same
  N(0, I) in x).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Callable

import torch

from diffsde.parametrizations import data_from_score

NoiseSource = Callable[[int, torch.Tensor], torch.Tensor]
TRAIN_STEPS = 1000


def _alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, TRAIN_STEPS, dtype=torch.float32)  # diffusers' "linear", in its float32
    return torch.cumprod(1.0 - betas, 0)


def ou_T() -> float:
    """T = -log ᾱ_1000 of DDPM's linear schedule, as diffusers holds it (float32 ᾱ)."""
    return -math.log(float(_alphas_cumprod()[-1]))


# --------------------------------------------------------------------------------------
# diffusers
# --------------------------------------------------------------------------------------

DIFFUSERS_CONFIGS = {  # label -> (scheduler class name, config, step kwargs)
    "diffusers DDIM": ("DDIMScheduler", {"set_alpha_to_one": True, "timestep_spacing": "trailing",
                                         "clip_sample": False}, {}),
    "diffusers DPM++(2M)": ("DPMSolverMultistepScheduler", {"solver_order": 2}, {}),
    "diffusers DPM++(2M) Karras": ("DPMSolverMultistepScheduler", {"solver_order": 2, "use_karras_sigmas": True}, {}),
    "diffusers DPM++(3M)": ("DPMSolverMultistepScheduler", {"solver_order": 3}, {}),
    "diffusers DPM++(3M) Karras": ("DPMSolverMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True}, {}),
    "diffusers DPM++(3M) log-SNR": ("DPMSolverMultistepScheduler", {"solver_order": 3, "use_lu_lambdas": True}, {}),
    "diffusers DPM++(2M) SDE": ("DPMSolverMultistepScheduler", {"solver_order": 2,
                                                                "algorithm_type": "sde-dpmsolver++"}, {}),
    "diffusers DPM++(2M) SDE log-SNR": ("DPMSolverMultistepScheduler",
                                        {"solver_order": 2, "algorithm_type": "sde-dpmsolver++",
                                         "use_lu_lambdas": True}, {}),
    "diffusers UniPC(bh2, 2)": ("UniPCMultistepScheduler", {"solver_order": 2}, {}),
    "diffusers UniPC(bh2, 3)": ("UniPCMultistepScheduler", {"solver_order": 3}, {}),
    "diffusers UniPC(bh2, 3) Karras": ("UniPCMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True}, {}),
    "diffusers DEIS(3)": ("DEISMultistepScheduler", {"solver_order": 3}, {}),
}
_STOCHASTIC = {"diffusers DPM++(2M) SDE", "diffusers DPM++(2M) SDE log-SNR"}


def diffusers_available() -> bool:
    return importlib.util.find_spec("diffusers") is not None


def diffusers_peer(label: str, nfe: int) -> Callable:
    """A run of diffusers' scheduler ``label`` with ``nfe`` model evaluations (one per timestep)."""
    import diffusers

    class_name, config, step_kwargs = DIFFUSERS_CONFIGS[label]
    stochastic = label in _STOCHASTIC

    def run(score, x_T: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        scheduler = getattr(diffusers, class_name)(num_train_timesteps=TRAIN_STEPS, beta_start=1e-4, beta_end=0.02,
                                                   beta_schedule="linear", **config)
        scheduler.set_timesteps(nfe)
        x = x_T * float(scheduler.init_noise_sigma)
        for k, timestep in enumerate(scheduler.timesteps):
            if hasattr(scheduler, "sigmas") and len(scheduler.sigmas) > len(scheduler.timesteps):
                index = scheduler.step_index if scheduler.step_index is not None else 0
                sigma = float(scheduler.sigmas[index])
                alpha_bar = 1.0 / (1.0 + sigma * sigma)
            else:
                alpha_bar = float(scheduler.alphas_cumprod[int(timestep)])
            t = -math.log(alpha_bar)
            eps = -math.sqrt(-math.expm1(-t)) * score(x, t)
            extra = {"variance_noise": noise(k, x)} if stochastic else {}
            x = scheduler.step(eps, timestep, x, **step_kwargs, **extra).prev_sample
        return x

    return run


# --------------------------------------------------------------------------------------
# k-diffusion
# --------------------------------------------------------------------------------------

def k_diffusion_sampling():
    """k-diffusion's ``sampling`` module, loaded as the tests load it (tests/peers.py), or None."""
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    from peers import load_k_diffusion_sampling

    return load_k_diffusion_sampling()


K_CONFIGS = {  # label -> (sampler name, σ grid, model evaluations per step, extra kwargs)
    "k-diffusion euler Karras": ("sample_euler", "karras", 1, {}),
    "k-diffusion heun Karras": ("sample_heun", "karras", 2, {}),
    "k-diffusion dpmpp_2m Karras": ("sample_dpmpp_2m", "karras", 1, {}),
    "k-diffusion dpmpp_2m_sde Karras": ("sample_dpmpp_2m_sde", "karras", 1, {}),
    "k-diffusion dpmpp_2m_sde log-SNR": ("sample_dpmpp_2m_sde", "exponential", 1, {}),
    "k-diffusion dpmpp_3m_sde Karras": ("sample_dpmpp_3m_sde", "karras", 1, {}),
    "k-diffusion dpmpp_3m_sde log-SNR": ("sample_dpmpp_3m_sde", "exponential", 1, {}),
}
_K_STOCHASTIC = {"sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"}


def k_sigma_range() -> tuple[float, float]:
    """σ_min, σ_max of DDPM's linear schedule, as k-diffusion's DiscreteSchedule holds them."""
    alpha_bars = _alphas_cumprod().double()
    sigmas = ((1 - alpha_bars) / alpha_bars).sqrt()
    return float(sigmas[0]), float(sigmas[-1])


def k_diffusion_peer(label: str, nfe: int) -> Callable | None:
    """A run of k-diffusion's ``label`` with at most ``nfe`` denoiser evaluations (heun: 2 per step,
    one at the last step to σ = 0), or None when the budget allows no step."""
    ks = k_diffusion_sampling()
    name, grid, per_step, kwargs = K_CONFIGS[label]
    steps = (nfe + 1) // 2 if per_step == 2 else nfe
    if steps < 1:
        return None
    sigma_min, sigma_max = k_sigma_range()
    if grid == "karras":
        sigmas = ks.get_sigmas_karras(steps, sigma_min, sigma_max, rho=7.0)
    else:
        sigmas = ks.get_sigmas_exponential(steps, sigma_min, sigma_max)
    sigmas = sigmas.double()

    def run(score, x_T: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        def denoiser(y, sigma):
            s = float(sigma.reshape(-1)[0])
            t = math.log1p(s * s)
            x = y / math.sqrt(1.0 + s * s)
            return data_from_score(score(x, t), x, t)

        counter = iter(range(10 ** 9))
        extra = {"noise_sampler": lambda sigma, sigma_next: noise(next(counter), x_T)} if name in _K_STOCHASTIC else {}
        y_T = x_T * math.sqrt(1.0 + float(sigmas[0]) ** 2)
        return getattr(ks, name)(denoiser, y_T, sigmas.to(x_T.dtype), disable=True, **kwargs, **extra)

    return run


def peers(nfe: int) -> dict[str, Callable]:
    """Every installed peer configuration with ``nfe`` evaluations (label -> run)."""
    out: dict[str, Callable] = {}
    if diffusers_available():
        for label in DIFFUSERS_CONFIGS:
            out[label] = diffusers_peer(label, nfe)
    if k_diffusion_sampling() is not None:
        for label in K_CONFIGS:
            run = k_diffusion_peer(label, nfe)
            if run is not None:
                out[label] = run
    return out


# --------------------------------------------------------------------------------------
# The exact law of a peer's output on a Gaussian score, by probes.
# --------------------------------------------------------------------------------------

def exact_law(run: Callable, score, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (float64) of ``run``'s output from x_T ~ N(0, I) for an affine (Gaussian)
    score: the output is ``A x_T + b + Σ_k C_k z_k``; row 0 of the probe batch (x_T = 0, no noise)
    gives b, rows 1..d give A, and each noise draw k has d rows where z_k = e_j."""
    calls = [0]

    def counting(k, like):
        calls[0] = max(calls[0], k + 1)
        return torch.zeros_like(like)

    run(score, torch.zeros(1, d, dtype=torch.float64), counting)
    draws = calls[0]
    rows = 1 + d + draws * d
    probes = torch.zeros(rows, d, dtype=torch.float64)
    probes[1:1 + d] = torch.eye(d, dtype=torch.float64)

    def probe_noise(k, like):
        z = torch.zeros(rows, d, dtype=torch.float64)
        z[1 + d + k * d: 1 + d + (k + 1) * d] = torch.eye(d, dtype=torch.float64)
        return z

    images = run(score, probes, probe_noise)
    offset = images[0]
    A = (images[1:1 + d] - offset).T
    C = (images[1 + d:] - offset).T
    cov = A @ A.T + C @ C.T
    return offset, 0.5 * (cov + cov.T)


def generator_noise(generator: torch.Generator) -> NoiseSource:
    """Standard normal draws from ``generator``, one per call, like the given tensor."""
    return lambda k, like: torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
