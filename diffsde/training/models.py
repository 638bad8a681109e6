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
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

from ..nets import EpsilonMLP

__all__ = ["MODELS", "register_model", "model_config"]

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


register_model(EpsilonMLP)
