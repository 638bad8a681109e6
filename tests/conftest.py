"""Shared fixtures: a fixed seed, generators, and the device parametrisation
(CPU always; CUDA under the ``gpu`` marker, skipped cleanly without CUDA)."""

import importlib.util
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# Hypothesis runs derandomised so CI is reproducible (fixed seeds everywhere).
settings.register_profile("diffsde", derandomize=True, deadline=None, max_examples=40, print_blob=True)
settings.load_profile("diffsde")

CUDA = torch.cuda.is_available()
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda",
                 marks=[pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="CUDA is not available")]),
]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def seed() -> int:
    return 20261124


def make_generator(device, seed: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


@pytest.fixture
def generator(device, seed) -> torch.Generator:
    return make_generator(device, seed)


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str, monkeypatch):
    """Import ``benchmarks/<name>.py`` as a module; the scripts import their helpers as ``_harness``
    (they run as ``python benchmarks/...``), so the folder goes on sys.path for the import."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
