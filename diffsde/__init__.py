"""diffsde: the continuous-time view of diffusion models as objects you can hold.

The forward OU process, its Anderson reverse SDE and probability-flow ODE, DDPM's
discrete VP chain as one discretization among several, and exact scores for Gaussian
and Gaussian-mixture data. Everything is written in the OU's own time t (DESIGN.md).

Toys and metrics live in their own namespaces (``diffsde.toys``, ``diffsde.metrics``);
everything else is here.
"""

from . import metrics, toys
from .ddpm import VLBTerms, ddpm_posterior, ddpm_reverse_mean, normal_kl, predict_x0, vlb
from .exact_law import exact_output_law, has_exact_law
from .nets import EpsilonMLP, TimeEmbedding
from .samplers import METHODS, SAMPLERS, NonFiniteSampleError, Sampler, langevin_step, resolve_method, sample
from .schedules import BetaSchedule, TimeGrid
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
from .training import (
    Checkpoint,
    CheckpointError,
    TrainConfig,
    TrainResult,
    eps_loss,
    load_checkpoint,
    save_checkpoint,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "BetaSchedule",
    "TimeGrid",
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
    "sample",
    "SAMPLERS",
    "METHODS",
    "Sampler",
    "resolve_method",
    "NonFiniteSampleError",
    "langevin_step",
    "exact_output_law",
    "has_exact_law",
    "ddpm_posterior",
    "ddpm_reverse_mean",
    "predict_x0",
    "normal_kl",
    "VLBTerms",
    "vlb",
    "EpsilonMLP",
    "TimeEmbedding",
    "eps_loss",
    "TrainConfig",
    "TrainResult",
    "train",
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "toys",
    "metrics",
]
