"""diffsde: the continuous-time view of diffusion models as objects you can hold.

The forward OU process, its Anderson reverse SDE and probability-flow ODE, DDPM's
discrete VP chain as one discretization among several, and exact scores for Gaussian
and Gaussian-mixture data. Everything is written in the OU's own time t (DESIGN.md).

Toys, metrics, studies and order fits live in their own namespaces (``diffsde.toys``,
``diffsde.metrics``, ``diffsde.studies``, ``diffsde.orders``); everything else is here.
"""

from . import metrics, orders, studies, toys
from .ddpm import (ExpectedVLB, VLBTerms, ddpm_posterior, ddpm_reverse_mean, expected_vlb, gaussian_entropy,
                   model_cross_entropy, normal_kl, predict_x0, vlb)
from .demo import DemoReport, DemoSettings, run_demo, write_report
from .exact_law import exact_output_law, has_exact_law
from .nets import EpsilonMLP, TimeEmbedding
from .process_scores import ProcessExactScore, ScoreAsOU
from .processes import EDM, VE, VP, Process, SubVP
from .samplers import METHODS, SAMPLERS, NonFiniteSampleError, Sampler, langevin_step, resolve_method, sample
from .schedules import SCHEDULES, BetaSchedule, TimeGrid
from .protocols import EpsilonModel, ExactScore, Score
from .parametrizations import (
    DataFromScore,
    DataScore,
    EpsilonFromScore,
    EpsilonScore,
    VelocityFromScore,
    VelocityScore,
    data_from_score,
    epsilon_from_score,
    noise_std,
    noise_variance,
    score_from_data,
    score_from_epsilon,
    score_from_velocity,
    signal_scale,
    velocity_from_score,
)
from .scores import GaussianMixtureScore, GaussianScore
from .sde import OU, ProbabilityFlowODE, ReverseSDE, probability_flow_drift, reverse_sde_drift, vp_forward_step
from .training import (
    Checkpoint,
    CheckpointError,
    TrainConfig,
    TrainResult,
    TrainState,
    MODELS,
    register_model,
    eps_loss,
    load_checkpoint,
    save_checkpoint,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "BetaSchedule",
    "SCHEDULES",
    "Score",
    "ExactScore",
    "EpsilonModel",
    "TimeGrid",
    "OU",
    "Process",
    "VP",
    "SubVP",
    "VE",
    "EDM",
    "ProcessExactScore",
    "ScoreAsOU",
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
    "DataScore",
    "VelocityScore",
    "DataFromScore",
    "VelocityFromScore",
    "score_from_data",
    "data_from_score",
    "score_from_velocity",
    "velocity_from_score",
    "signal_scale",
    "noise_variance",
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
    "ExpectedVLB",
    "expected_vlb",
    "model_cross_entropy",
    "gaussian_entropy",
    "run_demo",
    "write_report",
    "DemoSettings",
    "DemoReport",
    "EpsilonMLP",
    "TimeEmbedding",
    "eps_loss",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "MODELS",
    "register_model",
    "train",
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "toys",
    "metrics",
    "studies",
    "orders",
]
