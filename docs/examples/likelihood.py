"""Likelihood through the probability-flow ODE on the 8-Gaussian ring, with its exact score.

Part 1 sweeps the ODE solver's tolerance (exact divergence, exact prior: the only error left is
the ODE's) and measures the error of log p0 against the closed form, per sample. Part 2 changes
one choice at a time at a fixed tolerance: the prior (N(0, I) or the exact p_T) and the
divergence (the exact trace or Hutchinson's estimate with 4 or 16 probes). Part 3 puts the
PF-ODE beside DDPM's variational bound (σ² = β and β̃, n = 10, 100, 1000) with
diffsde.studies.likelihood_study, as a table and a figure.

    python docs/examples/likelihood.py            # the tutorial's outputs (about a minute)
    python docs/examples/likelihood.py --small    # a quick run
"""

from __future__ import annotations

import math
import time

import torch
from _output import parse_args, save_figure, write_text

from diffsde import log_likelihood, plots, toys
from diffsde._table import format_table
from diffsde.studies import likelihood_study
from diffsde.studies.likelihood import TABLE_COLUMNS, likelihood_reading

CHOICES = [  # label -> log_likelihood options
    ("exact trace, N(0, I) prior", {"divergence": "exact", "prior": "normal"}),
    ("exact trace, exact prior", {"divergence": "exact", "prior": "exact"}),
    ("Hutchinson, 4 probes, exact prior", {"divergence": "hutchinson", "probes": 4, "prior": "exact"}),
    ("Hutchinson, 16 probes, exact prior", {"divergence": "hutchinson", "probes": 16, "prior": "exact"}),
]


def timed(score, x, **options):
    started = time.perf_counter()
    result = log_likelihood(score, x, **options)
    return result, time.perf_counter() - started


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    started_all = time.perf_counter()
    torch.set_num_threads(1)  # steadier wall times on a shared machine
    n = 200 if args.small else 1000
    score = toys.ring().exact_score
    x = score.sample(n, 0.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = score.log_prob(x, 0.0)  # (n,) the closed-form log p0
    bits = 1 / (x.shape[1] * math.log(2))  # nats -> bits/dim
    log_likelihood(score, x[:2])  # warm-up: one-time set-up costs stay out of the timings

    rows = []
    for tol in ([1e-3, 1e-5] if args.small else [1e-3, 1e-4, 1e-5, 1e-6, 1e-7]):
        result, wall = timed(score, x, prior="exact", rtol=tol, atol=tol)
        error = result.log_prob - exact
        rows.append({"rtol = atol": f"{tol:g}", "NFE": result.nfe,
                     "mean abs error (bits/dim)": f"{float(error.abs().mean()) * bits:.2g}",
                     "max abs error (bits/dim)": f"{float(error.abs().max()) * bits:.2g}",
                     "error of the mean (bits/dim)": f"{float(error.mean()) * bits:.2g}",
                     "wall time (s)": f"{wall:.2f}"})
    write_text(args.out / "likelihood_tolerance.md", format_table(rows))

    rows = []
    for label, options in CHOICES:
        result, wall = timed(score, x, rtol=1e-5, atol=1e-5, generator=torch.Generator().manual_seed(1), **options)
        error = result.log_prob - exact
        rows.append({"choice": label, "NFE": result.nfe, "NLL (bits/dim)": f"{result.bits_per_dim:.4f}",
                     "mean abs error (bits/dim)": f"{float(error.abs().mean()) * bits:.2g}",
                     "error of the mean ± SE (bits/dim)":
                         f"{float(error.mean()) * bits:.1e} ± {float(error.std()) / math.sqrt(n) * bits:.1e}",
                     "probe SE (bits/dim)": f"{result.probe_standard_error * bits:.2g}",
                     "wall time (s)": f"{wall:.2f}"})
    write_text(args.out / "likelihood_choices.md",
               format_table(rows) + f"\n\nExact −log p0 of these {n} points: {float(-exact.mean()) * bits:.4f} "
                                    f"bits/dim; rtol = atol = 1e-5 in every row.")

    study = likelihood_study(toys.ring(), tolerances=(1e-3, 1e-5) if args.small else (1e-3, 1e-4, 1e-5),
                             ns=(10, 100) if args.small else (10, 100, 1000), n_samples=n)
    write_text(args.out / "likelihood_study.md",
               study.table(TABLE_COLUMNS) + f"\n\n{likelihood_reading(study)}. Columns nats, standard_error, "
                                            f"error, error_se and mean_abs_error in nats.")
    save_figure(plots.nll_vs_nfe(study, title=f"8-Gaussian ring, exact score, {n} points"),
                args.out / "likelihood_study.png")
    print(f"likelihood.py finished in {time.perf_counter() - started_all:.1f} s (small={args.small})")


if __name__ == "__main__":
    main()
