"""diffsde: the continuous-time view of diffusion models as objects you can hold.

The forward OU process, its Anderson reverse SDE and probability-flow ODE, DDPM's
discrete VP chain as one discretization among several, and exact scores for Gaussian
and Gaussian-mixture data. Everything is written in the OU's own time t (the conventions page
of the documentation).

Toys, metrics, studies and order fits live in their own namespaces (``diffsde.toys``,
``diffsde.metrics``, ``diffsde.studies``, ``diffsde.orders``); everything else is here.

The names are loaded on first use (PEP 562): ``import diffsde`` imports neither torch nor any
submodule, so the ``diffsde`` command answers ``--version`` at once; ``diffsde.sample``,
``from diffsde import sample`` and ``import diffsde.toys`` work as usual.
"""

from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"

# Where each public name is defined: module -> names ("" for the subpackages themselves).
_SOURCES = {
    "": ("toys", "metrics", "studies", "orders"),
    "ddpm": ("ExpectedVLB", "VLBTerms", "ddpm_posterior", "ddpm_reverse_mean", "expected_vlb", "gaussian_entropy",
             "model_cross_entropy", "normal_kl", "predict_x0", "vlb"),
    "demo": ("DemoReport", "DemoSettings", "run_demo", "write_report"),
    "exact_law": ("exact_output_law", "has_exact_law"),
    "likelihood": ("Likelihood", "log_likelihood"),
    "nets": ("EpsilonMLP", "TimeEmbedding"),
    "process_scores": ("ProcessExactScore", "ScoreAsOU"),
    "processes": ("EDM", "VE", "VP", "Process", "SubVP"),
    "samplers": ("METHODS", "SAMPLERS", "NonFiniteSampleError", "Sampler", "langevin_step", "resolve_method",
                 "sample"),
    "schedules": ("SCHEDULES", "BetaSchedule", "TimeGrid"),
    "protocols": ("EpsilonModel", "ExactScore", "Score"),
    "parametrizations": ("DataFromScore", "DataScore", "EpsilonFromScore", "EpsilonScore", "VelocityFromScore",
                         "VelocityScore", "data_from_score", "epsilon_from_score", "noise_std", "noise_variance",
                         "score_from_data", "score_from_epsilon", "score_from_velocity", "signal_scale",
                         "velocity_from_score"),
    "scores": ("GaussianMixtureScore", "GaussianScore"),
    "sde": ("OU", "ProbabilityFlowODE", "ReverseSDE", "probability_flow_drift", "reverse_sde_drift",
            "vp_forward_step"),
    "training": ("Checkpoint", "CheckpointError", "TrainConfig", "TrainResult", "TrainState", "MODELS",
                 "TrainingDivergedError", "register_model", "eps_loss", "load_checkpoint", "save_checkpoint",
                 "train"),
}
_HOME = {name: module for module, names in _SOURCES.items() for name in names}


def __getattr__(name: str):
    """A public name (or any submodule) imported on first use, then kept as a module attribute."""
    if name in _HOME:
        module = _HOME[name]
        value = importlib.import_module(f"{__name__}.{name}" if not module else f"{__name__}.{module}")
        if module:
            value = getattr(value, name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
    "TrainingDivergedError",
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
