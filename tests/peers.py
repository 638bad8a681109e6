"""The peers the equality tests compare against, loaded only where installed (tests skip otherwise).

* diffusers (its schedulers: DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler);
* k-diffusion's ``sampling.py`` (Crowson's reference implementations of Karras et al. 2022's
  samplers and of DPM-Solver++(2M/3M) SDE). Its package ``__init__`` imports image-model code
  (torchvision, PIL, safetensors, ...) that the samplers do not need, so the one module is loaded
  from the installed package's folder with the one helper it uses (``utils.append_dims``, the
  three lines of k-diffusion 0.1.1 below). CI installs it with ``pip install --no-deps``.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest


def diffusers_module():
    """The diffusers package, or skip the test."""
    return pytest.importorskip("diffusers")


def load_k_diffusion_sampling():
    """k-diffusion's ``sampling`` module (loaded without its package ``__init__``), or None where
    k-diffusion or torchdiffeq (which sampling.py imports) is not installed. The benchmarks use it too."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("torchdiffeq") is None:
        return None
    folder = list(spec.submodule_search_locations)[0]
    package = types.ModuleType("k_diffusion")
    package.__path__ = [folder]
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(x, target_dims):
        """k_diffusion.utils.append_dims (0.1.1): append dimensions to the end of a tensor."""
        dims_to_append = target_dims - x.ndim
        if dims_to_append < 0:
            raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
        return x[(...,) + (None,) * dims_to_append]

    utils.append_dims = append_dims
    package.utils = utils
    sys.modules.setdefault("k_diffusion", package)
    sys.modules.setdefault("k_diffusion.utils", utils)
    module_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", f"{folder}/sampling.py")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["k_diffusion.sampling"] = module
    module_spec.loader.exec_module(module)
    return module


def k_diffusion_sampling():
    """k-diffusion's ``sampling`` module, or skip the test."""
    module = load_k_diffusion_sampling()
    if module is None:
        pytest.skip("k-diffusion (pip install --no-deps k-diffusion==0.1.1.post1) or torchdiffeq is not installed")
    return module
