"""Discrete vs SDE samplers on a mixture: accuracy against score evaluations and wall time.

Every sampler integrates the reverse problem of the 8-mode ring (diffsde.toys.ring) from
T = 10.05 to t = 0 on the same linear schedule, with the exact mixture score, so the only
error is the sampler's own (plus Monte Carlo noise). A sampler's typical error on this law
is blur: its modes come out too wide. Accuracy is therefore measured by the *spread ratio*,
the mean squared distance of a sample to its nearest mode over its exact value d σ² (the
exact law's own ratio, 0.994, is slightly below 1 because a far tail can sit nearer to a
neighbouring mode); it has a Monte Carlo standard error of about 0.7 / sqrt(N). The
sliced 2-Wasserstein distance to exact samples is reported for the adaptive runs.

    python docs/examples/samplers_on_ring.py            # the tutorial's outputs (a few minutes)
    python docs/examples/samplers_on_ring.py --small    # a quick run
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import torch
from _output import parse_args, save_figure, write_text

from diffsde import BetaSchedule, sample, toys
from diffsde._table import format_table
from diffsde.metrics import sliced_wasserstein

# (label, method, options): every sampler of diffsde.sample, on the same grid.
METHODS = [
    ("vp", "vp", {}),
    ("ddpm", "ddpm", {}),
    ("em", "em", {}),
    ("ode euler", "ode", {"solver": "euler"}),
    ("ode heun", "ode", {"solver": "heun"}),
    ("torchsde srk", "torchsde", {"solver": "srk"}),
    ("pc (em + 1 Langevin)", "pc", {"predictor": "em", "corrector_steps": 1}),
]


def spread_ratio(x: torch.Tensor, ring) -> tuple[float, float]:
    """(mean over samples of min_k ‖x - μ_k‖² / (d σ²), its standard error)."""
    squared = torch.cdist(x.double(), ring.means).pow(2).min(1).values / (x.shape[1] * ring.params["std"] ** 2)
    return float(squared.mean()), float(squared.std() / squared.shape[0] ** 0.5)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    started_all = time.perf_counter()
    torch.set_num_threads(1)  # steadier wall times on a shared machine
    ring = toys.ring()
    n_samples = 500 if args.small else 20000
    ns = [25] if args.small else [25, 50, 100, 200, 400, 1000]
    exact_ratio, exact_error = spread_ratio(ring.sample(10 * n_samples, generator=torch.Generator().manual_seed(0)), ring)
    floor = exact_error * 10 ** 0.5  # the standard error at n_samples
    reference = ring.sample(n_samples, generator=torch.Generator().manual_seed(1))
    sample(ring.exact_score, "em", schedule=BetaSchedule.linear(25), n_samples=n_samples)  # warm-up, untimed

    ratio_rows, time_rows, curves, finals = [], [], {}, {}
    for label, method, options in METHODS:
        ratio_row, time_row = {"method": label}, {"method": label}
        for n in ns:
            x, info = sample(ring.exact_score, method, schedule=BetaSchedule.linear(n), n_samples=n_samples,
                             generator=2, return_info=True, **options)
            ratio = spread_ratio(x, ring)[0]
            ratio_row[f"n={n}"], time_row[f"n={n}"] = ratio, info["wall_time_s"]
            curves.setdefault(label, []).append((info["nfe"], info["wall_time_s"], abs(ratio - exact_ratio)))
            if n == ns[0]:
                finals[label] = x
        ratio_row["nfe/step"] = info["nfe"] // n
        ratio_rows.append(ratio_row)
        time_rows.append(time_row)
    # The adaptive ODE solver picks its own steps: one run per tolerance.
    adaptive_rows = []
    for tolerance in ((1e-2,) if args.small else (1e-2, 1e-3, 1e-4)):
        x, info = sample(ring.exact_score, "ode", schedule=BetaSchedule.linear(1000), n_samples=n_samples,
                         generator=2, return_info=True, solver="RK45", rtol=tolerance, atol=tolerance)
        ratio = spread_ratio(x, ring)[0]
        adaptive_rows.append({"solver": f"RK45, rtol = atol = {tolerance:g}", "nfe": info["nfe"], "spread_ratio": ratio,
                              "sliced_w2": sliced_wasserstein(x, reference, n_projections=256),
                              "wall_s": info["wall_time_s"]})
        curves.setdefault("ode RK45", []).append((info["nfe"], info["wall_time_s"], abs(ratio - exact_ratio)))
    exact_draws = ring.sample(n_samples, generator=torch.Generator().manual_seed(3))
    adaptive_rows.append({"solver": "exact samples", "nfe": 0, "spread_ratio": spread_ratio(exact_draws, ring)[0],
                          "sliced_w2": sliced_wasserstein(exact_draws, reference, n_projections=256), "wall_s": 0.0})

    columns = ["method"] + [f"n={n}" for n in ns]
    write_text(args.out / "samplers_ring_spread.md",
               format_table(ratio_rows, columns + ["nfe/step"]) +
               f"\n\nSpread ratio of {n_samples} samples per run (linear schedule with n steps); the exact law's is "
               f"{exact_ratio:.4f}, with a Monte Carlo standard error of {floor:.4f} at this sample size.")
    write_text(args.out / "samplers_ring_time.md",
               format_table(time_rows, columns) + f"\n\nWall time in seconds for {n_samples} samples "
               "(one torch thread on a shared 2-core CPU).")
    write_text(args.out / "samplers_ring_adaptive.md",
               format_table(adaptive_rows) + "\n\nThe probability-flow ODE by scipy's RK45; the last row is a second "
               "set of exact samples (the Monte Carlo level of both metrics).")

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for label, points in curves.items():
        nfe, wall, error = zip(*points)
        left.loglog(nfe, error, "o-", ms=3, lw=1.1, label=label)
        right.loglog(wall, error, "o-", ms=3, lw=1.1)
    for axis in (left, right):
        axis.axhline(floor, color="k", ls=":", lw=1)
    left.set_ylabel("|spread ratio - exact|")
    left.set_xlabel("score evaluations (NFE)")
    right.set_xlabel("wall time (s)")
    left.legend(fontsize=7)
    left.set_title("accuracy per score evaluation (dotted: Monte Carlo s.e.)", fontsize=9)
    right.set_title("accuracy per second (one thread, shared CPU)", fontsize=9)
    save_figure(figure, args.out / "samplers_ring.png")

    shown = ["vp", "ode euler", "ode heun", "torchsde srk"]
    figure, axes = plt.subplots(1, len(shown) + 1, figsize=(12, 2.7), sharex=True, sharey=True)
    axes[0].scatter(*reference[:2000].T, s=1, alpha=0.4)
    axes[0].set_title("exact p_0", fontsize=9)
    for axis, label in zip(axes[1:], shown):
        axis.scatter(*finals[label][:2000].T, s=1, alpha=0.4, color="C1")
        axis.set_title(f"{label}, n = {ns[0]}", fontsize=9)
    for axis in axes:
        axis.set_aspect("equal")
        axis.set_xlim(-6.5, 6.5)
        axis.set_ylim(-6.5, 6.5)
    save_figure(figure, args.out / "samplers_ring_scatter.png")
    print(f"samplers_on_ring.py finished in {time.perf_counter() - started_all:.1f} s (small={args.small})")


if __name__ == "__main__":
    main()
