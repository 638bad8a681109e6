"""Training an ε-network: DDPM's simple loss, the training loop, and atomic, checked checkpoints.

The loss is L_simple (Ho et al. 2020, eq. 14 and Algorithm 1) written in the OU's own time:
draw t, form ``x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε`` with :meth:`OU.marginal`, and regress ε.
All randomness of a run (data batches, times, noise) comes from ONE explicit ``torch.Generator``
whose state is checkpointed, so a run stopped at step k and resumed from its checkpoint
reproduces the uninterrupted run bit for bit (on the CPU). A run whose loss or weights stop
being finite stops with :class:`TrainingDivergedError` and never checkpoints them.

One concept per module:

- :mod:`~diffsde.training.loss`: :func:`eps_loss`;
- :mod:`~diffsde.training.config`: :class:`TrainConfig`;
- :mod:`~diffsde.training.data`: what each step draws (data batches and times);
- :mod:`~diffsde.training.loop`: :func:`train`, :class:`TrainState`, :class:`TrainResult`,
  :class:`TrainingDivergedError`;
- :mod:`~diffsde.training.checkpoints`: :func:`save_checkpoint`, :func:`load_checkpoint`,
  :class:`Checkpoint`, :class:`CheckpointError`;
- :mod:`~diffsde.training.models`: the model classes a checkpoint can rebuild
  (:data:`MODELS`, :func:`register_model`), and :func:`build_model` / :func:`state_shapes`, which
  size a model before allocating it.
"""

from .checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, Checkpoint, CheckpointError, load_checkpoint,
                          save_checkpoint)
from .config import TrainConfig
from .loop import TrainingDivergedError, TrainResult, TrainState, train
from .loss import eps_loss
from .models import MODELS, build_model, register_model, state_shapes

__all__ = ["eps_loss", "TrainConfig", "train", "TrainResult", "TrainState", "TrainingDivergedError", "save_checkpoint",
           "load_checkpoint", "Checkpoint", "CheckpointError", "MODELS", "register_model", "build_model",
           "state_shapes", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]
