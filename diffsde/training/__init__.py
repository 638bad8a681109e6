"""Training an ε-network: DDPM's simple loss, the training loop, and atomic, checked checkpoints.

The loss is L_simple (seed 004, Algorithm 1; seed 001, eq. 14) written in the OU's own time
(DESIGN.md): draw t, form ``x_t = e^{-t/2} x0 + sqrt(1 - e^{-t}) ε`` with :meth:`OU.marginal`,
and regress ε. All randomness of a run (data batches, times, noise) comes from ONE explicit
``torch.Generator`` whose state is checkpointed, so a run stopped at step k and resumed from
its checkpoint reproduces the uninterrupted run bit for bit (on the CPU).

One concept per module:

- :mod:`~diffsde.training.loss`: :func:`eps_loss`;
- :mod:`~diffsde.training.config`: :class:`TrainConfig`;
- :mod:`~diffsde.training.data`: what each step draws (data batches and times);
- :mod:`~diffsde.training.loop`: :func:`train`, :class:`TrainState`, :class:`TrainResult`;
- :mod:`~diffsde.training.checkpoints`: :func:`save_checkpoint`, :func:`load_checkpoint`,
  :class:`Checkpoint`, :class:`CheckpointError`;
- :mod:`~diffsde.training.models`: the model classes a checkpoint can rebuild
  (:data:`MODELS`, :func:`register_model`).
"""

from .checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, Checkpoint, CheckpointError, load_checkpoint,
                          save_checkpoint)
from .config import TrainConfig
from .loop import TrainResult, TrainState, train
from .loss import eps_loss
from .models import MODELS, register_model

__all__ = ["eps_loss", "TrainConfig", "train", "TrainResult", "TrainState", "save_checkpoint", "load_checkpoint",
           "Checkpoint", "CheckpointError", "MODELS", "register_model", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]
