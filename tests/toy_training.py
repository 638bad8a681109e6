"""Test helpers for a learned score of a 2-D Gaussian.

The toy, its training configurations and the cached fit (``gaussian_2d``, ``FAST``, ``GOOD``,
``fit_gaussian``) and the recovery machinery are library code in :mod:`diffsde.studies.recovery`
and :mod:`diffsde.studies.allowances`; they are re-exported here for the tests that import them
from this module (tests/test_training.py). ``relative_score_error`` is a test-only measurement.
"""

from __future__ import annotations

import torch

from diffsde.scores import GaussianScore
from diffsde.studies.recovery import FAST, GOOD, fit_gaussian, gaussian_2d

__all__ = ["FAST", "GOOD", "fit_gaussian", "gaussian_2d", "relative_score_error"]


def relative_score_error(score, exact: GaussianScore, t: float, n: int = 20000, seed: int = 1,
                         device: str = "cpu") -> float:
    """``sqrt(E‖score - exact‖² / E‖exact‖²)`` over n exact samples of p_t (float32 inputs)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    x = exact.sample(n, t=t, generator=generator, device=device, dtype=torch.float32)
    with torch.no_grad():
        error = (score(x, t) - exact.score(x, t)).pow(2).sum(-1).mean()
        scale = exact.score(x, t).pow(2).sum(-1).mean()
    return float((error / scale).sqrt())
