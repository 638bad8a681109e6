"""The continuous-time limit of a β schedule: how fast ᾱ_i -> e^{-t_i} (Song et al. 2021, appendix B)."""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch

from .._checks import check_int
from ..orders import fit_order
from ..schedules import SCHEDULES, BetaSchedule

__all__ = ["SCHEDULES", "alpha_bar_limit"]


def alpha_bar_limit(schedules: Sequence[str] | Mapping[str, Callable[[int], BetaSchedule]] = ("linear",),
                    ns: Sequence[int] = (100, 1000, 10000)) -> tuple[list[dict], dict[str, float]]:
    """How fast ᾱ_i -> e^{-t_i} (Song et al. 2021, appendix B).

    For each schedule and n: ``max_i |ᾱ_i - e^{-t_i}|`` on step-sum times ``t_i = Σ_{j<i} β_j``,
    ``n`` times that error, and the same error on exact times ``τ_i = -log ᾱ_i`` (zero up
    to rounding). Returns (rows, fitted order per schedule, :func:`diffsde.orders.fit_order`;
    NaN for a single n). For the linear schedule the order is 1 and ``n · error -> 0.8622``.

    Args:
        schedules: names in :data:`SCHEDULES`, or a mapping label -> (n -> BetaSchedule).
        ns: one or more distinct step counts (a repeated n would weigh one point twice in the fit).

    Raises:
        TypeError: a step count that is not an int.
        ValueError: an unknown schedule name; no n, or a repeated n; a schedule's own refusal of n.
    """
    ns = [check_int(n, "ns' step counts", minimum=1) for n in ns]
    if not ns:
        raise ValueError("ns must hold at least one step count")
    repeated = sorted({n for n in ns if ns.count(n) > 1})
    if repeated:
        raise ValueError(f"ns must hold distinct step counts; {repeated[0]} appears {ns.count(repeated[0])} times")
    if isinstance(schedules, Mapping):
        factories = dict(schedules)
    else:
        unknown = [name for name in schedules if name not in SCHEDULES]
        if unknown:
            raise ValueError(f"unknown schedule {unknown[0]!r}; choose from {sorted(SCHEDULES)}")
        factories = {name: SCHEDULES[name] for name in schedules}
    rows: list[dict] = []
    orders: dict[str, float] = {}
    for name, factory in factories.items():
        errors = []
        for n in ns:
            schedule = factory(n)
            error = float((schedule.alpha_bars - torch.exp(-schedule.times)).abs().max())
            exact = float((schedule.alpha_bars - torch.exp(-schedule.exact_times)).abs().max())
            errors.append(error)
            rows.append({"schedule": name, "n": n, "T": schedule.T, "max_error": error,
                         "n_times_error": n * error, "max_error_exact_times": exact})
        orders[name] = fit_order(ns, errors) if len(ns) > 1 else math.nan
    return rows, orders
