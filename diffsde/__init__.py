"""diffsde: the continuous-time view of diffusion models as objects you can hold.

The forward OU process, its Anderson reverse SDE and probability-flow ODE, DDPM's
discrete VP chain as one discretization among several, and exact scores for Gaussian
and Gaussian-mixture data. Everything is written in the OU's own time t (DESIGN.md).
"""

from .schedules import BetaSchedule
from .scores import (
    EpsilonFromScore,
    EpsilonScore,
    GaussianMixtureScore,
    GaussianScore,
    epsilon_from_score,
    noise_std,
    score_from_epsilon,
)
from .sde import OU, ProbabilityFlowODE, ReverseSDE, probability_flow_drift, reverse_sde_drift, vp_forward_step

__version__ = "0.1.0"

__all__ = [
    "BetaSchedule",
    "OU",
    "ReverseSDE",
    "ProbabilityFlowODE",
    "reverse_sde_drift",
    "probability_flow_drift",
    "vp_forward_step",
    "GaussianMixtureScore",
    "GaussianScore",
    "EpsilonScore",
    "EpsilonFromScore",
    "score_from_epsilon",
    "epsilon_from_score",
    "noise_std",
]
