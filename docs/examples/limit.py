"""The continuous-time limit: ᾱ_i -> e^{-t_i}, and samplers converging with exact scores.

Part 1 measures ``n · max_i |ᾱ_i - e^{-t_i}|`` (diffsde.studies.alpha_bar_limit) and
plots ``n (e^{-t_i} - ᾱ_i)`` against t_i next to its predicted limit
``½ e^{-t(s)} ∫_0^s β(u)² du`` (docs/theory/vp.md). Part 2 propagates the exact output law
of each fixed-step sampler on Gaussian data (diffsde.exact_output_law) over refined linear
schedules and fits the order of its W2 error against the exact p_0; then repeats the fit with
diffsde.studies.convergence_study, which adds confidence intervals.

    python docs/examples/limit.py            # the tutorial's outputs (a few seconds)
    python docs/examples/limit.py --small    # a quick run
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from _output import parse_args, save_figure, write_text

from diffsde import BetaSchedule, exact_output_law, toys
from diffsde._table import format_table
from diffsde.metrics import gaussian_w2
from diffsde.orders import fit_order
from diffsde.studies import alpha_bar_limit, convergence_study

# The linear schedule's continuous rate β(s) = 0.1 + 19.9 s on s in [0, 1] (BetaSchedule.linear).
BETA_MIN, BETA_MAX = 0.1, 20.0

# Fixed-step samplers: (label, method, options, exact_times).
METHODS = [
    ("vp", "vp", {}, False),
    ("ddpm", "ddpm", {}, False),
    ("ddpm, exact times", "ddpm", {}, True),
    ("em", "em", {}, False),
    ("ode euler", "ode", {"solver": "euler"}, False),
    ("ode heun", "ode", {"solver": "heun"}, False),
]


def predicted_limit(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t(s), ½ e^{-t(s)} ∫_0^s β(u)² du) for the linear rate: the limit of n (e^{-t_i} - ᾱ_i)."""
    slope = BETA_MAX - BETA_MIN
    t = BETA_MIN * s + 0.5 * slope * s**2
    integral = ((BETA_MIN + slope * s) ** 3 - BETA_MIN**3) / (3 * slope)
    return t, 0.5 * np.exp(-t) * integral


def alpha_bar_part(args) -> None:
    ns = (100, 1000) if args.small else (100, 1000, 10000, 100000)
    rows, orders = alpha_bar_limit(("linear", "cosine"), ns)
    table = format_table(rows, ["schedule", "n", "T", "max_error", "n_times_error", "max_error_exact_times"])
    orders_line = ", ".join(f"{name}: {order:.3f}" for name, order in orders.items())
    write_text(args.out / "limit_alpha_bar.md", f"{table}\n\nFitted order of max_error in n: {orders_line}.")

    s = np.linspace(0.0, 1.0, 2001)
    t_curve, limit_curve = predicted_limit(s)
    peak = int(np.argmax(limit_curve))
    figure, axis = plt.subplots(figsize=(6.5, 3.4))
    for n in (ns[0], ns[1]) if args.small else (30, 100, 1000):
        schedule = BetaSchedule.linear(n)
        scaled = n * (torch.exp(-schedule.times) - schedule.alpha_bars)
        axis.plot(schedule.times.numpy(), scaled.numpy(), lw=1.2, label=f"n = {n}")
    axis.plot(t_curve, limit_curve, "k--", lw=1.2, label=r"$\frac{1}{2} e^{-t(s)}\int_0^s \beta(u)^2\,du$")
    axis.plot(t_curve[peak], limit_curve[peak], "ko", ms=4)
    axis.annotate(f"max {limit_curve[peak]:.4f} at t = {t_curve[peak]:.3f}", (t_curve[peak], limit_curve[peak]),
                  xytext=(10, -4), textcoords="offset points", fontsize=8)
    axis.set_xlim(0, 6)
    axis.set_xlabel("OU time $t_i = \\sum_{j<i} \\beta_j$")
    axis.set_ylabel(r"$n\,(e^{-t_i} - \bar\alpha_i)$")
    axis.set_title(r"linear schedule: first-order error of $\bar\alpha_i$ against $e^{-t_i}$", fontsize=9)
    axis.legend(fontsize=8)
    save_figure(figure, args.out / "limit_alpha_bar.png")


def sampler_part(args) -> None:
    ns = [25, 50, 100] if args.small else [25, 50, 100, 200, 400, 800, 1600]
    score = toys.gaussian().exact_score  # p_0 = N((1, -1), [[1.5, 0.9], [0.9, 1.0]])
    target_mean, target_cov = score.mean_and_cov(0.0)
    rows, curves = [], {}
    for label, method, options, exact_times in METHODS:
        started = time.perf_counter()
        errors = []
        for n in ns:
            mean, cov = exact_output_law(method, score, schedule=BetaSchedule.linear(n), exact_times=exact_times,
                                         start="exact", **options)
            errors.append(gaussian_w2(mean, cov, target_mean, target_cov))
        curves[label] = errors
        row = {"method": label}
        row.update({f"n={n}": error for n, error in zip(ns, errors)})
        row["order"] = fit_order(ns[-3:], errors[-3:])
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
    columns = ["method"] + [f"n={n}" for n in ns] + ["order"]
    write_text(args.out / "limit_samplers.md",
               format_table(rows, columns) + "\n\nW2 between the exact output law of each sampler (started from the "
               "exact p_T) and the exact p_0; order fitted on the three finest schedules.")

    figure, axis = plt.subplots(figsize=(6.5, 3.4))
    for label, errors in curves.items():
        axis.loglog(ns, errors, "o-", ms=3, lw=1.2, label=label)
    reference = np.array(ns, dtype=float)
    axis.loglog(reference, curves["vp"][0] * reference[0] / reference, "k:", lw=1, label="slope -1")
    axis.loglog(reference, curves["ode heun"][0] * (reference[0] / reference) ** 2, "k--", lw=1, label="slope -2")
    axis.set_xlabel("steps n (linear schedule)")
    axis.set_ylabel(r"$W_2$(output law, $p_0$)")
    axis.set_title("pure discretization error (exact scores, exact output laws)", fontsize=9)
    axis.legend(fontsize=7, ncol=2)
    save_figure(figure, args.out / "limit_samplers.png")

    # The same study in one call, with confidence intervals on the fitted orders.
    study = convergence_study(toys.gaussian(), methods=("vp", "ddpm", "em", "ode-euler", "ode-heun"),
                              ns=ns[-3:], prior="exact")
    write_text(args.out / "limit_orders.md",
               study.summary_table(["method", "declared_order", "order", "order_ci_low", "order_ci_high"]) +
               f"\n\ndiffsde.studies.convergence_study on n = {', '.join(map(str, ns[-3:]))} "
               "(exact estimator); 95% Student-t intervals of the log-log slope.")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    started = time.perf_counter()
    alpha_bar_part(args)
    sampler_part(args)
    print(f"limit.py finished in {time.perf_counter() - started:.1f} s (small={args.small})")


if __name__ == "__main__":
    main()
