"""Likelihood study: the probability-flow ODE's NLL, DDPM's discrete bound and the exact −log p0
side by side, per tolerance and per number of steps.

The three numbers estimate the same expectation, the data's negative log-likelihood
``E[-log p(x0)]`` under the model, in three ways:

* ``"pf-ode"``: :func:`diffsde.log_likelihood`, the instantaneous change of variables along the
  probability-flow ODE (Song et al. 2021, §4.3), adaptive to ``rtol = atol = tol``;
* ``"vlb"``: :func:`diffsde.ddpm.vlb`, DDPM's variational bound with n steps of the linear rate
  and reverse variance σ² = β or β̃ (Ho et al. 2020, eqs. 5 and 13), an upper bound on the NLL
  of the discrete chain;
* ``"exact"``: the closed-form −log p0 of the target, where it has one.

Song et al. 2021 (Table 2) report the PF-ODE's NLL below the VLB on CIFAR-10; with an exact
score the PF-ODE meets the exact value to the solver's tolerance, and the VLB's gap to it is
its discretization error, which shrinks as n grows.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch
from torch import Tensor

from .._checks import check_int, check_real
from ..ddpm import vlb
from ..likelihood import DEFAULT_T, DIVERGENCES, PRIORS, Likelihood, log_likelihood
from ..odeint import ADAPTIVE_SOLVERS
from ..parametrizations import EpsilonFromScore, EpsilonScore
from ..protocols import accepts_float_time, declared_dim
from ..scores import GaussianMixtureScore
from ._args import check_choice, check_ns, check_score
from .grids import linear_schedule
from .results import StudyResult

__all__ = ["likelihood_study", "likelihood_reading", "VARIANCES", "TABLE_COLUMNS"]

VARIANCES = {"beta": "σ²=β", "beta_tilde": "σ²=β̃"}
"""The VLB's reverse variances (:func:`diffsde.ddpm.vlb`'s ``variance``) and their labels."""

TABLE_COLUMNS = ("estimator", "setting", "nfe", "nats", "bits_per_dim", "standard_error", "error", "error_se",
                 "mean_abs_error", "wall_time_s")
"""The columns worth printing (the rows hold more: ``tol``, ``n``, ``prior_mismatch``, ``probe_se``)."""

_COLUMNS = ("estimator", "setting", "tol", "n", "nfe", "nats", "bits_per_dim", "standard_error", "error",
            "error_se", "mean_abs_error", "prior_mismatch", "probe_se", "wall_time_s")


def likelihood_study(target, score=None, *, tolerances: Sequence[float] = (1e-3, 1e-4, 1e-5),
                     ns: Sequence[int] = (10, 100, 1000), n_samples: int = 1000, solver: str = "dopri5",
                     divergence: str = "auto", probes: int = 4, prior: str = "normal", t_min: float | None = None,
                     seed: int = 0, device="cpu", dtype: torch.dtype = torch.float64) -> StudyResult:
    """The NLL of the same data by the PF-ODE (per tolerance), the VLB (per n and variance) and,
    where known, the exact −log p0 (module docstring), in one table.

    The data are ``n_samples`` draws of p0: exact ones of an exact score, or the toy's own
    samples (generator seeded with ``seed``), on ``device`` in ``dtype``; every row uses the same
    x0. The PF-ODE rows share their Hutchinson probes (seed + 2), the VLB rows their draws of
    x_i (seed + 1), so the rows differ by their settings, not by their noise.

    Args:
        target: an exact score (:class:`~diffsde.GaussianScore`,
            :class:`~diffsde.GaussianMixtureScore`) or a toy (``diffsde.toys.ring()``, ...;
            one without an exact score needs ``score``): the data, and the exact −log p0 when it
            has a closed form.
        score: the model whose NLL is measured: None for the target's exact score, or a learned
            one (e.g. an :class:`~diffsde.EpsilonScore` of a trained network, on ``device`` in
            ``dtype``). The VLB uses its ε: the network itself for an EpsilonScore, else
            :class:`~diffsde.EpsilonFromScore` of the score.
        tolerances: distinct PF-ODE tolerances in (0, 1), each used as rtol = atol.
        ns: strictly increasing VLB step counts >= 1 (the linear rate; respaced from 1000
            steps below 21, :func:`diffsde.studies.linear_schedule`).
        n_samples: data points, >= 2 (standard errors need two).
        solver: an adaptive solver (:data:`diffsde.odeint.ADAPTIVE_SOLVERS`).
        divergence: as :func:`diffsde.log_likelihood` ("auto", "exact" or "hutchinson").
        probes: Hutchinson's probes per sample, >= 1.
        prior: "normal" or "exact" (a score with a closed-form p_T only).
        t_min: where the flow starts (default: 0 for an exact score, 1e-5 for a network).
        seed: seed of the data, the VLB's draws and the probes, >= 0.
        device: where everything runs.
        dtype: the data's precision (float64 by default: the tight tolerances need it).

    Returns:
        StudyResult(kind="likelihood"), one row per estimate with keys ``estimator``
        ("exact", "pf-ode", "vlb"), ``setting`` ("rtol=atol=0.0001", "n=100, σ²=β"), ``tol``,
        ``n`` (the other None), ``nfe`` (PF-ODE: velocity evaluations counted by the solver; VLB:
        n ε evaluations per sample; exact: 0), ``nats`` and ``bits_per_dim`` (the mean NLL),
        ``standard_error`` (nats, over the data), ``error`` (nats minus the exact row's nats),
        ``error_se`` (its standard error: the paired spread of the per-sample differences),
        ``mean_abs_error`` (PF-ODE: mean over samples of |its −log p − the exact −log p0|),
        ``prior_mismatch`` (PF-ODE: mean ``log N(x_T; 0, I) - log p_T(x_T)`` of an exact score),
        ``probe_se`` (PF-ODE: Hutchinson's share of the standard error, 0 for the exact trace),
        ``wall_time_s``; all in nats, the error columns None where no exact value is known.
        ``meta`` holds the settings, ``dim``, ``n_samples`` and ``exact_nats`` /
        ``exact_bits_per_dim``.

    Raises:
        TypeError: a target that is neither an exact score nor a toy, no score for a target
            without one, a score that is not callable, a dtype that is not floating.
        ValueError: each bad argument, named with what is allowed.
    """
    exact = _exact_law(target)
    if score is None:
        if exact is None:
            raise TypeError(f"target {target!r} has no exact score: pass score= (a learned one, e.g. an "
                            f"EpsilonScore)")
        score = exact
    check_score(score)
    tolerances = _check_tolerances(tolerances)
    ns = check_ns(ns, 1)
    n_samples = check_int(n_samples, "n_samples", minimum=2)
    check_choice(solver, "solver", sorted(ADAPTIVE_SOLVERS))
    check_choice(divergence, "divergence", DIVERGENCES)
    probes = check_int(probes, "probes", minimum=1)
    check_choice(prior, "prior", PRIORS)
    if prior == "exact" and not callable(getattr(score, "log_prob", None)):
        raise ValueError(f"prior='exact' needs a score with a closed-form p_T (an exact score); "
                         f"{type(score).__name__} has none: use prior='normal'")
    t_min = check_real(t_min, "t_min", 0, DEFAULT_T, high_open=True, none_ok=True,
                       interval=f"[0, {DEFAULT_T:g})")
    seed = check_int(seed, "seed", minimum=0)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    device = torch.device(device)
    x0 = _data(target, exact, n_samples, _generator(device, seed), device, dtype)
    dim = x0.shape[1]
    if declared_dim(score) not in (None, dim):
        raise ValueError(f"score is {declared_dim(score)}-D but the target's data are {dim}-D")

    rows, reference = [], None
    if exact is not None:
        started = _clock(device)
        reference = -exact.log_prob(x0, 0.0)  # (N,) the exact -log p0
        rows.append(_row("exact", "-log p0 (closed form)", reference, reference, 0, _clock(device) - started, dim))
    # Untimed warm-up on two points: the first call pays one-time costs (imports, torch.func's
    # set-up) that would otherwise land in the first row's wall time.
    log_likelihood(score, x0[:2], t_min=t_min, prior=prior, divergence=divergence, probes=probes,
                   generator=_generator(device, seed + 2), solver=solver, rtol=max(tolerances), atol=max(tolerances))
    likelihood = None
    for tol in tolerances:
        started = _clock(device)
        likelihood = log_likelihood(score, x0, t_min=t_min, prior=prior, divergence=divergence, probes=probes,
                                    generator=_generator(device, seed + 2), solver=solver, rtol=tol, atol=tol)
        rows.append(_row("pf-ode", f"rtol=atol={tol:g}", -likelihood.log_prob, reference, likelihood.nfe,
                         _clock(device) - started, dim, tol=tol, pf_ode=likelihood))
    eps_model = _eps_model(score)
    for variance, label in VARIANCES.items():
        for n in ns:
            started = _clock(device)
            terms = vlb(eps_model, x0, linear_schedule(n), variance=variance,
                        generator=_generator(device, seed + 1))
            rows.append(_row("vlb", f"n={n}, {label}", terms.total, reference, n, _clock(device) - started, dim,
                             n=n))
    meta = {"target": repr(target), "score": "exact" if score is exact else repr(score), "dim": dim,
            "n_samples": n_samples, "seed": seed, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
            "solver": solver, "divergence": likelihood.divergence, "probes": likelihood.probes, "prior": prior,
            "t_min": likelihood.t_min, "T": likelihood.T,
            "t_min_correction": likelihood.t_min_correction is not None, "tolerances": tolerances, "ns": ns,
            "variances": list(VARIANCES), "vlb_schedule": "linear rate (respaced from 1000 steps below 21)",
            "exact_nats": None if reference is None else rows[0]["nats"],
            "exact_bits_per_dim": None if reference is None else rows[0]["bits_per_dim"]}
    return StudyResult("likelihood", rows, [], meta)


def likelihood_reading(result: StudyResult) -> str:
    """One line that reads a :func:`likelihood_study` result: the PF-ODE's NLL at its tightest
    tolerance (and the exact value), then the VLB of each variance at its largest n, in bits/dim,
    each VLB ± one standard error (of its gap to the exact value where known)."""
    rows = result.rows
    parts = []
    pf_ode = [row for row in rows if row["estimator"] == "pf-ode"]
    exact = [row for row in rows if row["estimator"] == "exact"]
    if pf_ode:
        tightest = min(pf_ode, key=lambda row: row["tol"])
        known = f"; exact {exact[0]['bits_per_dim']:.4f}" if exact else ""
        parts.append(f"PF-ODE NLL {tightest['bits_per_dim']:.4f} bits/dim ({tightest['setting']}{known})")
    vlb_rows = [row for row in rows if row["estimator"] == "vlb"]
    if vlb_rows:
        n = max(row["n"] for row in vlb_rows)
        bounds = []
        for row in vlb_rows:
            if row["n"] == n:
                se = row["error_se"] if row["error_se"] is not None else row["standard_error"]
                bounds.append(f"{row['setting'].split(', ', 1)[-1]} {row['bits_per_dim']:.4f} ± "
                              f"{se * row['bits_per_dim'] / row['nats'] if row['nats'] else 0.0:.2g}")
        parts.append(f"VLB at n={n}: {', '.join(bounds)} bits/dim (± 1 SE)")
    return ", ".join(parts)


def _row(estimator: str, setting: str, nll: Tensor, reference: Tensor | None, nfe: int, wall: float, dim: int, *,
         tol: float | None = None, n: int | None = None, pf_ode: Likelihood | None = None) -> dict:
    """One table row from per-sample NLLs (N,) in nats (and the exact ones, when known)."""
    nll = nll.detach().to("cpu", torch.float64)
    nats = float(nll.mean())
    row = dict.fromkeys(_COLUMNS)
    row.update(estimator=estimator, setting=setting, tol=tol, n=n, nfe=nfe, nats=nats,
               bits_per_dim=nats / (dim * math.log(2)), standard_error=_se(nll), wall_time_s=wall)
    if reference is not None and estimator != "exact":
        difference = nll - reference.detach().to("cpu", torch.float64)
        row.update(error=float(difference.mean()), error_se=_se(difference))
        if pf_ode is not None:
            row["mean_abs_error"] = float(difference.abs().mean())
    if pf_ode is not None:
        row["probe_se"] = pf_ode.probe_standard_error
        if pf_ode.prior_mismatch is not None:
            row["prior_mismatch"] = float(pf_ode.prior_mismatch.double().mean())
    return row


def _se(values: Tensor) -> float:
    return float(values.std() / math.sqrt(values.shape[0]))


def _exact_law(target) -> GaussianMixtureScore | None:
    """The target's closed-form p_t: the target itself, or a toy's ``exact_score``, or None (a
    toy that can only be sampled)."""
    if isinstance(target, GaussianMixtureScore):
        return target
    if callable(getattr(target, "sample", None)) and hasattr(target, "has_exact_score"):
        return target.exact_score if target.has_exact_score else None
    raise TypeError(f"target must be a GaussianScore, a GaussianMixtureScore or a toy (e.g. diffsde.toys.ring()), "
                    f"got {target!r}")


def _check_tolerances(tolerances) -> list[float]:
    try:
        values = list(tolerances)
    except TypeError as err:
        raise TypeError(f"tolerances must be a sequence of numbers, got {type(tolerances).__name__}") from err
    if not values:
        raise ValueError("tolerances must hold at least one tolerance")
    values = [check_real(tol, "tolerances", 0, 1, low_open=True, high_open=True) for tol in values]
    if len(set(values)) != len(values):
        raise ValueError(f"tolerances must be distinct, got {values}")
    return values


def _data(target, exact: GaussianMixtureScore | None, n: int, generator: torch.Generator, device: torch.device,
          dtype: torch.dtype) -> Tensor:
    """n draws of p0: an exact score's own, or the toy's."""
    if target is exact:
        return exact.sample(n, 0.0, generator=generator, device=device, dtype=dtype)
    return target.sample(n, generator=generator, device=device, dtype=dtype)


def _eps_model(score):
    """The ε-model of the VLB: an EpsilonScore's network (when it takes float times, as
    :func:`diffsde.ddpm.vlb` passes them), else ε = -σ s of the score."""
    if isinstance(score, EpsilonScore) and accepts_float_time(score.eps_model):
        return score.eps_model
    return EpsilonFromScore(score)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _clock(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
