"""A quick, reliable fit of :class:`EpsilonMLP` to a 2-D Gaussian, for tests that need a learned score.

``fit_gaussian()`` trains once per (device, config, hidden, seed) and caches the result.
Measured on the 2-core CPU (one torch thread; EMA weights, seed 0), relative L2 score error
``sqrt(E‖s_θ - s‖² / E‖s‖²)`` under p_t (20000 exact samples):

    config  hidden  time    t=0.05  t=0.3  t=1    t=3
    FAST    64      3.4 s   0.060   0.029  0.013  0.010   (1500 steps x 1024)
    FAST    128     5.7 s   0.039   0.026  0.012  0.009
    GOOD    64      11.6 s  0.033   0.019  0.011  0.005   (4000 steps x 2048)
    GOOD    128     28.5 s  0.027   0.012  0.009  0.005

Both sample times on the linear schedule's grid (exact times τ_i, lr 3e-3, 100 warm-up
steps): it puts far more weight on small t than U[t_min, T] does, and small t is where
the score is hard to learn; uniform times give 0.13 / 0.049 / 0.015 / 0.008 (FAST) and
0.091 / 0.028 / 0.013 / 0.004 (GOOD).
"""

from __future__ import annotations

import functools

import torch

from diffsde.nets import EpsilonMLP
from diffsde.scores import GaussianScore
from diffsde.training import TrainConfig, TrainResult, train

FAST = TrainConfig(steps=1500, batch_size=1024, lr=3e-3, warmup_steps=100, time_sampling="grid")
GOOD = TrainConfig(steps=4000, batch_size=2048, lr=3e-3, warmup_steps=100, time_sampling="grid")


def gaussian_2d() -> GaussianScore:
    """p0 = N((1, -0.5), [[1.5, 0.4], [0.4, 0.3]]): correlated, with variances on both sides of 1."""
    return GaussianScore(torch.tensor([1.0, -0.5], dtype=torch.float64),
                         torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64))


@functools.lru_cache(maxsize=4)
def fit_gaussian(device: str = "cpu", config: TrainConfig = FAST, hidden: int = 64, seed: int = 0) -> TrainResult:
    """Train ``EpsilonMLP(2, hidden)`` on :func:`gaussian_2d` (float32); cached."""
    torch.manual_seed(seed)  # the initial weights; the run itself draws from its own generator
    model = EpsilonMLP(2, hidden=hidden)
    return train(model, gaussian_2d(), config, device=device)


def relative_score_error(score, exact: GaussianScore, t: float, n: int = 20000, seed: int = 1,
                         device: str = "cpu") -> float:
    """``sqrt(E‖score - exact‖² / E‖exact‖²)`` over n exact samples of p_t (float32 inputs)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    x = exact.sample(n, t=t, generator=generator, device=device, dtype=torch.float32)
    with torch.no_grad():
        error = (score(x, t) - exact.score(x, t)).pow(2).sum(-1).mean()
        scale = exact.score(x, t).pow(2).sum(-1).mean()
    return float((error / scale).sqrt())
