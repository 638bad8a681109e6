"""Training checkpoints: atomic writes, checked reads, and models rebuilt from the registry.

A checkpoint file holds only tensors and primitive containers, so it loads with
``torch.load(..., weights_only=True)`` (no code runs while reading it); a SHA-256 checksum over
all of it catches bytes flipped inside stored tensors, which ``torch.load`` itself does not notice.
Weights with NaN or infinite entries are never written and never read back (a diverged run), and
a file whose model config asks for weights other than those it stores is refused before the model
is built (so a crafted config cannot make the reader allocate a huge model). Error messages never
suggest reading a file with ``weights_only=False``, which would let it run arbitrary code.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import torch
from torch import Tensor, nn

from .._io import write_atomic
from .config import TrainConfig
from ._memory import format_bytes
from .models import MODELS, model_config, state_shapes

if TYPE_CHECKING:
    from .loop import TrainState

__all__ = ["Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT",
           "CHECKPOINT_VERSION"]

PathLike = Union[str, os.PathLike]
Device = Union[str, torch.device, None]

CHECKPOINT_FORMAT = "diffsde-training-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, of another format or version, or does not match
    the model / configuration it is loaded for."""


def save_checkpoint(path: PathLike, state: TrainState) -> None:
    """Write ``state`` to ``path`` atomically: to a temporary file in the same directory, flushed
    to disk, then renamed over ``path`` with ``os.replace``. A crash leaves either the old file
    or the new one, never a half-written one, and no temporary file behind.

    The file holds only tensors and primitive containers (loadable with ``weights_only=True``):
    format tag and version, step, model class and constructor config (``model.config``, when the
    model has one), the :class:`~diffsde.training.TrainConfig`, model / EMA / optimizer / LR-scheduler
    state dicts, the generator's device and state, the loss history, and a SHA-256 checksum of all of it.

    Raises:
        ValueError: the model or EMA weights have NaN or infinite entries (the message names the
            tensor); ``path`` is then left as it was, so a finite checkpoint is never replaced by a
            diverged one.
    """
    path = Path(path)
    for name, module in (("model", state.model), ("ema", state.ema_model)):
        bad = first_nonfinite(module.state_dict())
        if bad is not None:
            raise ValueError(f"refusing to write a checkpoint at step {state.step}: {name} weight {bad} has NaN or "
                             f"infinite entries; {str(path)!r} is left as it was")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": state.step,
        "model_class": type(state.model).__name__,
        "model_config": model_config(state.model),
        "train_config": state.config.to_dict(),
        "model": state.model.state_dict(),
        "ema": state.ema_model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "generator": {"device": state.generator.device.type, "state": state.generator.get_state()},
        "losses": state.losses[:state.step].clone(),
    }
    payload["checksum"] = _checksum(payload)
    write_atomic(path, lambda handle: torch.save(payload, handle))


@dataclass(frozen=True)
class Checkpoint:
    """The checked contents of a checkpoint file (see :func:`load_checkpoint`)."""

    step: int
    model_class: str
    model_config: dict
    config: TrainConfig
    model_state: dict
    ema_state: dict
    optimizer_state: dict
    scheduler_state: dict
    generator_device: str
    generator_state: Tensor
    losses: Tensor

    def build_model(self, ema: bool = True, device: Device = None) -> nn.Module:
        """The stored model with the EMA (default) or last-iterate weights, in eval mode, on ``device``.

        The class is looked up by name in :data:`~diffsde.training.MODELS`
        (:class:`~diffsde.nets.EpsilonMLP` and whatever was passed to
        :func:`~diffsde.training.register_model`) and built as ``cls(**model_config)``.

        Raises:
            CheckpointError: the class is not registered (the message lists those that are).
        """
        cls = MODELS.get(self.model_class)
        if cls is None:
            raise CheckpointError(f"this checkpoint holds a {self.model_class}, which is not a registered model class "
                                  f"(registered: {sorted(MODELS)}); register it with "
                                  f"diffsde.training.register_model({self.model_class}) before build_model, or "
                                  f"construct it yourself and load checkpoint.ema_state / model_state")
        model = cls(**self.model_config)
        model.load_state_dict(self.ema_state if ema else self.model_state)
        return model.to(device).eval()

    def restore(self, state: TrainState) -> None:
        """Load this checkpoint into a fresh ``state`` after checking that it belongs to the same
        model (class, config, parameter names and shapes), the same :class:`~diffsde.training.TrainConfig`
        and a generator on the same device type; raises :class:`CheckpointError` otherwise."""
        model_class, config = type(state.model).__name__, model_config(state.model)
        if (model_class, config) != (self.model_class, self.model_config):
            raise CheckpointError(f"checkpoint holds {self.model_class}({self.model_config}) but the model is "
                                  f"{model_class}({config})")
        _check_state_shapes(self.model_state, _shapes(state.model.state_dict()), "model")
        if self.config != state.config:
            differ = {name: (value, getattr(state.config, name)) for name, value in self.config.to_dict().items()
                      if value != getattr(state.config, name)}
            raise CheckpointError(f"checkpoint was written with a different TrainConfig; (checkpoint, now) = {differ}")
        if self.generator_device != state.generator.device.type:
            raise CheckpointError(f"checkpoint's generator is on {self.generator_device}, this run's on "
                                  f"{state.generator.device.type}")
        state.model.load_state_dict(self.model_state)
        state.ema_model.load_state_dict(self.ema_state)
        state.optimizer.load_state_dict(self.optimizer_state)
        state.scheduler.load_state_dict(self.scheduler_state)
        state.generator.set_state(self.generator_state)
        state.losses[:self.step] = self.losses
        state.step = self.step


def load_checkpoint(path: PathLike, map_location: Device = "cpu") -> Checkpoint:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Loads with ``torch.load(..., weights_only=True)`` and checks the format tag and version,
    the SHA-256 checksum, every key and its type, the config, the loss history's length, and
    (for a registered model class, :data:`~diffsde.training.MODELS`) that the stored weights have
    the shapes its config implies.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, corrupt, of another format or version, or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        # "from None": torch's own message advises retrying with weights_only=False, which would run
        # whatever code the file holds; only its safe part is kept, in _load_error.
        raise CheckpointError(f"{str(path)!r} is not a readable checkpoint (truncated or corrupt?): "
                              f"{_load_error(err)}") from None
    return _parse(payload, str(path))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _load_error(err: Exception) -> str:
    """``type: reason`` for a failed ``torch.load``, without torch's advice to load with
    ``weights_only=False`` or to allow-list globals (both would let the file run code)."""
    text = _ANSI.sub("", str(err))
    if "WeightsUnpickler error:" in text:  # torch 2.4+: advice first, the reason after this marker
        reason = text.split("WeightsUnpickler error:", 1)[1]
        reason = re.split(r"Please (?:use|file)|Check the documentation", reason)[0]
        reason = " ".join(reason.split()).rstrip(". ")
        if reason.startswith("Unsupported global"):
            reason = reason.split(" was not an allowed global")[0] + " (a Python object, not a tensor: not " \
                     "written by diffsde; it is not loaded, since loading it could run code)"
        text = reason
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    text = " ".join([sentence for sentence in sentences if "weights_only" not in sentence
                     and "safe_globals" not in sentence][:2])
    if not text and isinstance(err, EOFError):
        text = "the file ends early (empty or cut short)"
    return f"{type(err).__name__}: {text[:300] or 'no details'}"


_PAYLOAD_TYPES = {"format": str, "version": int, "step": int, "model_class": str, "model_config": dict,
                  "train_config": dict, "model": dict, "ema": dict, "optimizer": dict, "scheduler": dict,
                  "generator": dict, "losses": Tensor, "checksum": str}


def _parse(payload, where: str) -> Checkpoint:
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{where} is not a diffsde training checkpoint "
                              f"(format tag {CHECKPOINT_FORMAT!r} missing)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{where} has checkpoint version {payload.get('version')!r}; this diffsde reads "
                              f"version {CHECKPOINT_VERSION}")
    for key, kind in _PAYLOAD_TYPES.items():
        if not isinstance(payload.get(key), kind) or (kind is int and isinstance(payload[key], bool)):
            raise CheckpointError(f"{where}: entry {key!r} must be a {kind.__name__}, got "
                                  f"{type(payload.get(key)).__name__}")
    if set(payload) != set(_PAYLOAD_TYPES):
        raise CheckpointError(f"{where}: unexpected entries {sorted(set(payload) - set(_PAYLOAD_TYPES))}")
    if _checksum(payload) != payload["checksum"]:
        raise CheckpointError(f"{where}: checksum mismatch, the file is corrupt")
    try:
        config = TrainConfig.from_dict(payload["train_config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: invalid train_config: {err}") from err
    step, losses = payload["step"], payload["losses"]
    if not 0 <= step <= config.steps:
        raise CheckpointError(f"{where}: step {step} is outside [0, steps] = [0, {config.steps}]")
    if losses.shape != (step,):
        raise CheckpointError(f"{where}: losses must have shape ({step},), got {tuple(losses.shape)}")
    generator = payload["generator"]
    if not isinstance(generator.get("device"), str) or not isinstance(generator.get("state"), Tensor) \
            or generator["state"].dtype != torch.uint8:
        raise CheckpointError(f"{where}: generator must hold a device name and a uint8 state tensor")
    _check_state_shapes(payload["ema"], _shapes(payload["model"]), "ema")
    for name in ("model", "ema"):
        bad = first_nonfinite(payload[name])
        if bad is not None:
            raise CheckpointError(f"{where}: {name} weight {bad} has NaN or infinite entries (the run had diverged "
                                  f"when this was written); refusing to load it")
    cls = MODELS.get(payload["model_class"])
    if cls is not None:
        _check_model_config(cls, payload["model_config"], payload["model"], where)
    return Checkpoint(step, payload["model_class"], payload["model_config"], config, payload["model"],
                      payload["ema"], payload["optimizer"], payload["scheduler"], generator["device"],
                      generator["state"].cpu(), losses.to("cpu", torch.float32))


def first_nonfinite(state: dict) -> str | None:
    """``'name' (k of n entries)`` for the first floating-point tensor of a state dict with NaN or
    infinite entries, or None when all are finite."""
    for key, value in state.items():
        if isinstance(value, Tensor) and (value.is_floating_point() or value.is_complex()):
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                return f"{key!r} ({bad} of {value.numel()} entries)"
    return None


def _check_model_config(cls: type, config: dict, stored: dict, where: str) -> None:
    """Refuse a config whose model would not hold exactly the stored weights, BEFORE building it:
    the expected shapes come from :func:`~diffsde.training.models.state_shapes` (nothing allocated),
    so a crafted config asking for a huge model costs nothing. Once the shapes match, the model is no
    larger than what the file already holds, and it is built once to run the constructor's checks.
    A class that cannot be sized on the meta device is built first, as before the size check."""
    try:
        try:
            expected = state_shapes(cls, config)
        except NotImplementedError:
            expected = _shapes(cls(**config).state_dict())
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: invalid {cls.__name__} config {config}: {err}") from None
    asked, held = (sum(math.prod(shape) for shape in shapes.values()) for shapes in (expected, _shapes(stored)))
    if asked != held:
        size = format_bytes(asked * torch.get_default_dtype().itemsize)
        raise CheckpointError(f"{where}: model_config {config} asks for {cls.__name__} weights of {asked:,} parameters "
                              f"({size}), but the file stores {held:,}; the config does not match the stored "
                              f"weights' shapes")
    _check_state_shapes(stored, expected, "model")
    try:
        cls(**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: invalid {cls.__name__} config {config}: {err}") from None


def _shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, Tensor)}


def _check_state_shapes(stored: dict, expected_shapes: dict, name: str) -> None:
    """Refuse a state dict whose names or shapes differ from ``expected_shapes`` (name -> shape)."""
    stored_shapes = _shapes(stored)
    if len(stored_shapes) != len(stored) or stored_shapes != expected_shapes:
        wrong = sorted(k for k in set(stored_shapes) | set(expected_shapes)
                       if stored_shapes.get(k) != expected_shapes.get(k))
        details = {k: (stored_shapes.get(k), expected_shapes.get(k)) for k in wrong[:4]}
        raise CheckpointError(f"checkpoint's {name} weights do not match the model: (stored, expected) shapes "
                              f"{details}{' ...' if len(wrong) > 4 else ''}")


def _checksum(payload: dict) -> str:
    """SHA-256 over every entry but "checksum", walked in a fixed order (tensors by dtype, shape, bytes)."""
    digest = hashlib.sha256()

    def visit(value) -> None:
        if isinstance(value, Tensor):
            flat = value.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key in sorted(value, key=repr):
                digest.update(repr(key).encode())
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                visit(item)
        else:
            digest.update(f"P{value!r}".encode())

    visit({key: value for key, value in payload.items() if key != "checksum"})
    return digest.hexdigest()
