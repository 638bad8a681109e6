"""Toy data distributions in R^d for diffusion experiments (the documentation's conventions, "Exact scores are first-class").

Every toy has ``name``, ``dim`` and ``sample(n, generator=None, device=None, dtype=None)``
returning an (n, d) tensor; all randomness comes from the ``torch.Generator`` passed in, so
the same generator seed gives the same samples.

Toys with a closed form (``gaussian``, ``mixture``, ``ring``, ``grid``) are Gaussian
mixtures: ``has_exact_score`` is True and ``exact_score`` holds the
:class:`~diffsde.scores.GaussianMixtureScore` that gives ``score(x, t)``, ``log_prob(x, t)``
and ``mean_and_cov(t)`` of p_t at every OU time t. The shapes ``moons``, ``swiss_roll``,
``checkerboard`` and ``rings`` can only be sampled: ``has_exact_score`` is False and
``score`` / ``log_prob`` raise NotImplementedError.

Defaults are on a unit-to-few-units scale (RMS radius between about 2 and 4), so the
OU at T ≈ 10 forgets them: the data's mean is scaled by e^{-T/2} ≈ 0.007.

``TOYS`` maps each name to its constructor; ``make_toy(name, **kwargs)`` builds one.
"""

from __future__ import annotations

import inspect
import math
from functools import partial
from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from ._checks import TimeLike, check_int, check_real
from .scores import GaussianMixtureScore, GaussianScore

__all__ = [
    "Toy",
    "MixtureToy",
    "SampledToy",
    "gaussian",
    "mixture",
    "ring",
    "grid",
    "moons",
    "swiss_roll",
    "checkerboard",
    "rings",
    "TOYS",
    "make_toy",
]

ArrayLike = Union[Tensor, Sequence]
Device = Union[str, torch.device, None]

# Default 2-D Gaussian: non-zero mean, correlated and anisotropic covariance
# (eigenvalues ≈ 2.18 and 0.32).
_DEFAULT_MEAN = (1.0, -1.0)
_DEFAULT_COV = ((1.5, 0.9), (0.9, 1.0))


class Toy:
    """A named distribution on R^d that can be sampled.

    Subclasses implement ``_draw(n, generator, device, dtype)``; ``sample`` checks its
    arguments once. The base has no closed form: ``score`` and ``log_prob`` raise
    NotImplementedError.
    """

    has_exact_score: bool = False
    exact_score: GaussianMixtureScore | None = None

    def __init__(self, name: str, dim: int, params: dict):
        self.name = name
        self.dim = dim
        self.params = params

    def sample(self, n: int, generator: torch.Generator | None = None, device: Device = None,
               dtype: torch.dtype | None = None) -> Tensor:
        """Draw n independent samples, an (n, d) tensor.

        ``device`` defaults to the generator's (or the CPU), ``dtype`` to torch's default.

        Raises:
            ValueError: n is not an int >= 1, or device differs from the generator's device.
            TypeError: dtype is not a floating-point dtype.
        """
        n = check_int(n, "n", minimum=1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        device = torch.device(device)
        if generator is not None and generator.device.type != device.type:
            raise ValueError(f"device must match the generator's device {generator.device}, got {device}")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        return self._draw(n, generator, device, dtype)

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
        raise NotImplementedError

    def score(self, x: Tensor, t: TimeLike) -> Tensor:
        """The exact score of p_t; only toys with ``has_exact_score`` have one."""
        raise NotImplementedError(self._no_closed_form("score"))

    def log_prob(self, x: Tensor, t: TimeLike = 0.0) -> Tensor:
        """The exact log-density of p_t; only toys with ``has_exact_score`` have one."""
        raise NotImplementedError(self._no_closed_form("log_prob"))

    def _no_closed_form(self, what: str) -> str:
        closed = ", ".join(name for name, factory in TOYS.items() if factory in _CLOSED_FORM)
        return (f"toy {self.name!r} has no closed-form {what}: its p_t is not a Gaussian mixture. "
                f"Learn the score (an ε-network) or use a toy with an exact score: {closed}")

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"{type(self).__name__}({self.name!r}, dim={self.dim}, {args})"


class MixtureToy(Toy):
    """A toy whose p_0 is a Gaussian mixture, so every p_t is known in closed form.

    ``score``, ``log_prob``, ``mean_and_cov`` and the samples all come from
    ``exact_score`` (a :class:`~diffsde.scores.GaussianMixtureScore`): p_t has means
    ``e^{-t/2} μ_k`` and covariances ``e^{-t} Σ_k + (1 - e^{-t}) I`` (the documentation's conventions page).
    """

    has_exact_score = True

    def __init__(self, name: str, exact_score: GaussianMixtureScore, params: dict):
        super().__init__(name, exact_score.dim, params)
        self.exact_score = exact_score

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
        return self.exact_score.sample(n, 0.0, generator=generator, device=device, dtype=dtype)

    def score(self, x: Tensor, t: TimeLike) -> Tensor:
        """Exact ``∇_x log p_t(x)``; x (..., d) -> x's shape (see GaussianMixtureScore.score)."""
        return self.exact_score.score(x, t)

    def log_prob(self, x: Tensor, t: TimeLike = 0.0) -> Tensor:
        """Exact ``log p_t(x)``; x (..., d) -> (...)."""
        return self.exact_score.log_prob(x, t)

    def mean_and_cov(self, t: float = 0.0) -> tuple[Tensor, Tensor]:
        """Mean (d,) and covariance (d, d) of p_t, float64."""
        return self.exact_score.mean_and_cov(t)

    @property
    def means(self) -> Tensor:
        """Component means of p_0, (K, d) float64 (the modes for :func:`diffsde.metrics.mode_weights`)."""
        return self.exact_score.means

    @property
    def weights(self) -> Tensor:
        """Component weights, (K,) float64."""
        return self.exact_score.weights


class SampledToy(Toy):
    """A toy known only through its sampler ``draw(n, generator, device, dtype) -> (n, d)``."""

    def __init__(self, name: str, dim: int, draw: Callable[..., Tensor], params: dict):
        super().__init__(name, dim, params)
        self._draw_fn = draw

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
        return self._draw_fn(n, generator, device, dtype)


# -- closed-form toys -------------------------------------------------------------------

def gaussian(mean: ArrayLike | None = None, cov: ArrayLike | None = None) -> MixtureToy:
    """A Gaussian N(mean, cov); p_t = N(e^{-t/2} mean, e^{-t} cov + (1 - e^{-t}) I).

    Args:
        mean: (d,). cov: (d, d) symmetric positive-definite. Give both or neither;
            the default is 2-D with mean (1, -1) and covariance [[1.5, 0.9], [0.9, 1.0]]
            (correlation 0.73, eigenvalues ≈ 2.18 and 0.32).

    Raises:
        ValueError: only one of mean / cov given, or what GaussianScore refuses
            (shape mismatch, non-finite entries, cov not symmetric positive-definite).
    """
    if (mean is None) != (cov is None):
        raise ValueError("give both mean and cov, or neither for the default 2-D Gaussian")
    if mean is None:
        mean, cov = _DEFAULT_MEAN, _DEFAULT_COV
    exact = GaussianScore(mean, cov)  # lists are read as float64 there
    return MixtureToy("gaussian", exact, {"mean": exact.mean.tolist(), "cov": exact.cov.tolist()})


def mixture(weights: ArrayLike, means: ArrayLike, covs: ArrayLike) -> MixtureToy:
    """A Gaussian mixture Σ_k w_k N(μ_k, Σ_k) in any dimension.

    Args:
        weights: (K,) non-negative, summing to 1. means: (K, d). covs: (K, d, d) SPD.

    Raises:
        ValueError / TypeError: what GaussianMixtureScore refuses.
    """
    exact = GaussianMixtureScore(weights, means, covs)
    return MixtureToy("mixture", exact, {"n_components": exact.n_components})


def ring(n_modes: int = 8, radius: float = 4.0, std: float = 0.5) -> MixtureToy:
    """``n_modes`` equally weighted isotropic Gaussians on a circle: the project's default toy.

    Mode k has mean ``radius (cos 2πk/n_modes, sin 2πk/n_modes)`` and covariance ``std² I``.
    For n_modes >= 3 the law has mean 0 and covariance ``(radius²/2 + std²) I``. The
    defaults give an RMS radius of ≈ 4.03 and neighbouring modes 6.1 std apart.

    Raises:
        ValueError: n_modes not an int >= 1, radius or std not in (0, inf).
    """
    n_modes = check_int(n_modes, "n_modes", minimum=1)
    radius = check_real(radius, "radius", 0, low_open=True)
    std = check_real(std, "std", 0, low_open=True)
    angles = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    covs = std**2 * torch.eye(2, dtype=torch.float64).expand(n_modes, 2, 2)
    weights = torch.full((n_modes,), 1.0 / n_modes, dtype=torch.float64)
    exact = GaussianMixtureScore(weights, means, covs)
    return MixtureToy("ring", exact, {"n_modes": n_modes, "radius": radius, "std": std})


def grid(k: int = 5, spacing: float = 2.0, std: float = 0.3) -> MixtureToy:
    """A k x k grid of equally weighted isotropic Gaussians centred at the origin.

    Mode (i, j) has mean ``spacing (i - (k-1)/2, j - (k-1)/2)`` and covariance ``std² I``,
    so the law has mean 0 and covariance ``(spacing² (k² - 1)/12 + std²) I``. The defaults
    place modes on {-4, -2, 0, 2, 4}², 6.7 std apart (RMS radius ≈ 4.0).

    Raises:
        ValueError: k not an int >= 1, spacing or std not in (0, inf).
    """
    k = check_int(k, "k", minimum=1)
    spacing = check_real(spacing, "spacing", 0, low_open=True)
    std = check_real(std, "std", 0, low_open=True)
    axis = spacing * (torch.arange(k, dtype=torch.float64) - (k - 1) / 2)
    means = torch.cartesian_prod(axis, axis).reshape(k * k, 2)
    covs = std**2 * torch.eye(2, dtype=torch.float64).expand(k * k, 2, 2)
    weights = torch.full((k * k,), 1.0 / (k * k), dtype=torch.float64)
    exact = GaussianMixtureScore(weights, means, covs)
    return MixtureToy("grid", exact, {"k": k, "spacing": spacing, "std": std})


_CLOSED_FORM = (gaussian, mixture, ring, grid)


# -- sampled-only toys ------------------------------------------------------------------

def _draw_moons(n, generator, device, dtype, *, noise: float, scale: float) -> Tensor:
    moon = torch.randint(0, 2, (n,), generator=generator, device=device)
    theta = math.pi * torch.rand(n, generator=generator, device=device, dtype=dtype)
    upper = torch.stack([torch.cos(theta) - 0.5, torch.sin(theta) - 0.25], dim=1)
    lower = torch.stack([0.5 - torch.cos(theta), 0.25 - torch.sin(theta)], dim=1)
    points = torch.where((moon == 1).unsqueeze(1), lower, upper)
    return scale * points + noise * torch.randn(n, 2, generator=generator, device=device, dtype=dtype)


def moons(noise: float = 0.2, scale: float = 2.0) -> SampledToy:
    """Two interleaving half-circles (scikit-learn's ``make_moons``), centred at the origin.

    With probability ½ each, ``θ ~ U[0, π]`` and the clean point is
    ``(cos θ - ½, sin θ - ¼)`` (upper moon) or its reflection through the origin
    ``(½ - cos θ, ¼ - sin θ)`` (lower moon); the sample is ``scale · point + noise · z``,
    z ~ N(0, I). Defaults: the clean points lie in [-3, 3] x [-1.5, 1.5].

    Raises:
        ValueError: noise not in [0, inf) or scale not in (0, inf).
    """
    noise = check_real(noise, "noise", 0)
    scale = check_real(scale, "scale", 0, low_open=True)
    return SampledToy("moons", 2, partial(_draw_moons, noise=noise, scale=scale), {"noise": noise, "scale": scale})


_SWISS_ROLL_TURNS = (1.5 * math.pi, 4.5 * math.pi)


def _draw_swiss_roll(n, generator, device, dtype, *, noise: float, scale: float) -> Tensor:
    low, high = _SWISS_ROLL_TURNS
    theta = low + (high - low) * torch.rand(n, generator=generator, device=device, dtype=dtype)
    points = theta.unsqueeze(1) * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    return scale * points + noise * torch.randn(n, 2, generator=generator, device=device, dtype=dtype)


def swiss_roll(noise: float = 0.1, scale: float = 0.25) -> SampledToy:
    """A 2-D Swiss roll (the (x, z) plane of scikit-learn's ``make_swiss_roll``).

    ``θ ~ U[1.5π, 4.5π]``, sample ``scale · θ (cos θ, sin θ) + noise · z``, z ~ N(0, I):
    a spiral whose clean radius ``scale · θ`` runs from 1.18 to 3.53 by default.

    Raises:
        ValueError: noise not in [0, inf) or scale not in (0, inf).
    """
    noise = check_real(noise, "noise", 0)
    scale = check_real(scale, "scale", 0, low_open=True)
    return SampledToy("swiss_roll", 2, partial(_draw_swiss_roll, noise=noise, scale=scale),
                      {"noise": noise, "scale": scale})


def _draw_checkerboard(n, generator, device, dtype, *, k: int, size: float) -> Tensor:
    cells = torch.cartesian_prod(torch.arange(k, device=device), torch.arange(k, device=device))
    dark = cells[(cells.sum(1) % 2) == 0]
    chosen = dark[torch.randint(0, dark.shape[0], (n,), generator=generator, device=device)]
    offset = torch.rand(n, 2, generator=generator, device=device, dtype=dtype)
    return (size / k) * (chosen.to(dtype) + offset) - size / 2


def checkerboard(k: int = 4, size: float = 8.0) -> SampledToy:
    """Uniform on the dark squares of a k x k checkerboard covering [-size/2, size/2]².

    Cell (i, j) (i along x, j along y, from the lower-left corner) is dark when i + j is
    even; a sample picks a dark cell uniformly, then a uniform point in it. Defaults: a
    4 x 4 board of 2 x 2 cells on [-4, 4]², 8 dark cells.

    Raises:
        ValueError: k not an int >= 1 or size not in (0, inf).
    """
    k = check_int(k, "k", minimum=1)
    size = check_real(size, "size", 0, low_open=True)
    return SampledToy("checkerboard", 2, partial(_draw_checkerboard, k=k, size=size), {"k": k, "size": size})


def _draw_rings(n, generator, device, dtype, *, n_rings: int, radius: float, noise: float) -> Tensor:
    which = torch.randint(1, n_rings + 1, (n,), generator=generator, device=device)
    theta = 2 * math.pi * torch.rand(n, generator=generator, device=device, dtype=dtype)
    radii = (radius / n_rings) * which.to(dtype)
    points = radii.unsqueeze(1) * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    return points + noise * torch.randn(n, 2, generator=generator, device=device, dtype=dtype)


def rings(n_rings: int = 3, radius: float = 3.0, noise: float = 0.1) -> SampledToy:
    """Concentric circles of radii ``radius · i / n_rings``, i = 1..n_rings, equally weighted.

    A sample picks a ring uniformly, an angle ``θ ~ U[0, 2π)``, and adds ``noise · z``,
    z ~ N(0, I). Defaults: radii 1, 2, 3.

    Raises:
        ValueError: n_rings not an int >= 1, radius not in (0, inf), noise not in [0, inf).
    """
    n_rings = check_int(n_rings, "n_rings", minimum=1)
    radius = check_real(radius, "radius", 0, low_open=True)
    noise = check_real(noise, "noise", 0)
    return SampledToy("rings", 2, partial(_draw_rings, n_rings=n_rings, radius=radius, noise=noise),
                      {"n_rings": n_rings, "radius": radius, "noise": noise})


# -- registry ---------------------------------------------------------------------------

TOYS: dict[str, Callable[..., Toy]] = {
    "gaussian": gaussian,
    "mixture": mixture,
    "ring": ring,
    "grid": grid,
    "moons": moons,
    "swiss_roll": swiss_roll,
    "checkerboard": checkerboard,
    "rings": rings,
}


def make_toy(name: str, **kwargs) -> Toy:
    """Build the toy registered in ``TOYS`` under ``name`` with its keyword arguments.

    Raises:
        ValueError: name is not in TOYS (the message lists the names).
        TypeError: a keyword argument the toy does not take (the message lists those it takes).
    """
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; choose one of {sorted(TOYS)}")
    factory = TOYS[name]
    allowed = list(inspect.signature(factory).parameters)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"toy {name!r} takes the keyword arguments {allowed}, got unknown {unknown}")
    return factory(**kwargs)
