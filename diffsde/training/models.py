"""The model classes a checkpoint can rebuild: a registry from class name to class.

A checkpoint stores its model's class name (``type(model).__name__``) and constructor config
(``model.config``, a dict of Python primitives); :meth:`~diffsde.training.Checkpoint.build_model`
looks the name up in :data:`MODELS` and calls ``cls(**config)``. :class:`~diffsde.nets.EpsilonMLP`
is registered here; register your own class once, before loading its checkpoints:

    @register_model
    class MyNet(torch.nn.Module):
        def __init__(self, dim: int, width: int = 64): ...
        @property
        def config(self) -> dict:
            return {"dim": self.dim, "width": self.width}

Training does not need the registry: any ``nn.Module`` trains and checkpoints (a model without
``config`` is stored with ``{}``); only rebuilding a model from a file does.

:func:`state_shapes` gives the state-dict shapes a config implies WITHOUT allocating the model
(in closed form for :class:`~diffsde.nets.EpsilonMLP`, otherwise by building it on PyTorch's
``meta`` device, whose tensors have shapes but no storage), so a checkpoint whose config asks for
a huge model is refused before anything is allocated, and :func:`build_model` refuses a model
larger than the device's memory with one line naming the size.
"""

from __future__ import annotations

import inspect
import math
from typing import TypeVar, Union

import torch
from torch import nn

from .._checks import check_int
from ..nets import EpsilonMLP
from ._memory import check_fits

__all__ = ["MODELS", "register_model", "model_config", "state_shapes", "build_model"]

ModelClass = TypeVar("ModelClass", bound=type)

MODELS: dict[str, type[nn.Module]] = {}
"""Registered model classes by class name (what checkpoints store): ``{"EpsilonMLP": EpsilonMLP, ...}``."""


def register_model(cls: ModelClass) -> ModelClass:
    """Register ``cls`` under ``cls.__name__`` so that checkpoints of it can be rebuilt; returns
    ``cls`` (usable as a class decorator). Registering the same class again does nothing.

    The class must be an ``nn.Module`` subclass declaring a ``config`` attribute (usually a
    property) that returns its constructor arguments as a dict of Python primitives, so that
    ``cls(**model.config)`` rebuilds an equal model.

    Raises:
        TypeError: ``cls`` is not an ``nn.Module`` subclass, or declares no ``config``.
        ValueError: another class of the same name is registered (a checkpoint names its class
            by ``__name__`` alone, so the two could not be told apart).
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_model needs an nn.Module subclass, got {cls!r}")
    if not hasattr(cls, "config"):
        raise TypeError(f"{cls.__name__} declares no `config`: give it a property returning its constructor "
                        f"arguments as a dict, so that {cls.__name__}(**model.config) rebuilds the model")
    registered = MODELS.get(cls.__name__)
    if registered is not None and registered is not cls:
        raise ValueError(f"another model class named {cls.__name__!r} is already registered "
                         f"({registered.__module__}.{registered.__qualname__}); checkpoints name a model's class "
                         f"by __name__ alone, so rename one of them")
    MODELS[cls.__name__] = cls
    return cls


def model_config(model: nn.Module) -> dict:
    """The constructor config ``model`` declares (``model.config``), or ``{}`` when it declares none."""
    return dict(getattr(model, "config", {}))


def state_shapes(model_class: Union[type[nn.Module], str], config: dict) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of ``model_class(**config)``, computed without allocating its tensors.

    For :class:`~diffsde.nets.EpsilonMLP` in closed form; for any other class by building it on
    PyTorch's ``meta`` device (tensors with shapes and no storage; the first such build in a process
    imports part of torch, about a second). ``model_class`` is a class or a name in :data:`MODELS`.

    Raises:
        KeyError: a name that is not registered.
        TypeError: what the constructor raises for this config.
        ValueError: what the constructor raises, or a tensor of more than 2^63 elements.
        NotImplementedError: the constructor cannot run on the meta device (it reads a tensor's
            values, e.g. with ``.item()``); the shapes are then unknown without building the model.
    """
    cls = MODELS[model_class] if isinstance(model_class, str) else model_class
    if cls is EpsilonMLP:
        return _epsilon_mlp_shapes(config)
    try:
        with torch.device("meta"):
            model = cls(**config)
    except RuntimeError as err:
        if "overflow" in str(err).lower():  # "Storage size calculation overflowed with sizes=[...]"
            raise ValueError(f"{cls.__name__}(**{config}) is too large to describe: {err}") from None
        raise NotImplementedError(f"{cls.__name__} cannot be built on the meta device: {err}") from None
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def build_model(model_class: Union[type[nn.Module], str], config: dict, *,
                device: Union[str, torch.device, None] = None) -> nn.Module:
    """``model_class(**config)`` on ``device``, after checking that its weights fit in the device's memory.

    The size is counted from :func:`state_shapes` (nothing allocated) in the default dtype; a model
    larger than the device's total memory (CPU: physical RAM) raises MemoryError at once, naming its
    parameter count and bytes, instead of failing inside the allocator (or swapping for minutes).
    A class that cannot be sized on the meta device is built unchecked. The model is built on the
    CPU (the same initial weights for a seed, whatever ``device``) and moved.

    Raises:
        MemoryError: the model cannot fit.
        TypeError: what the constructor raises.
        ValueError: what the constructor raises, or a tensor of more than 2^63 elements.
    """
    cls = MODELS[model_class] if isinstance(model_class, str) else model_class
    try:
        shapes = state_shapes(cls, config)
    except NotImplementedError:
        shapes = {}
    count = sum(math.prod(shape) for shape in shapes.values())
    needed = count * torch.get_default_dtype().itemsize
    what = f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in config.items())}) with {count:,} parameters"
    check_fits(needed, "cpu", what)
    if device is not None and torch.device(device).type != "cpu":
        check_fits(needed, device, what)
    return cls(**config).to(device)


def _epsilon_mlp_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """EpsilonMLP's state-dict shapes (its constructor's layout: blocks, time projections, output);
    tests/test_checkpoints.py checks them against real models."""
    arguments = inspect.signature(EpsilonMLP).bind(**config)
    arguments.apply_defaults()
    dim, hidden, depth, embed_dim = (check_int(arguments.arguments[name], name, minimum=1)
                                     for name in ("dim", "hidden", "depth", "embed_dim"))
    widths = [dim] + [hidden] * depth
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(depth):
        shapes[f"blocks.{k}.weight"] = (hidden, widths[k])
        shapes[f"blocks.{k}.bias"] = (hidden,)
    for k in range(depth):
        shapes[f"time_projections.{k}.weight"] = (hidden, embed_dim)
    shapes["output.weight"] = (dim, hidden)
    shapes["output.bias"] = (dim,)
    return shapes


register_model(EpsilonMLP)
