"""Gaussian recovery by every sampler with a learned score: the figures behind tests/test_recovery.py.

Trains EpsilonMLP on p0 = N((1, -0.5), [[1.5, 0.4], [0.4, 0.3]]) (diffsde.studies.recovery), prints the
learned score's error per time, then samples with every method on the linear schedule's grid and
prints, per sampler, the recovered mean and covariance errors (whitened: in units of p0's standard
deviations / variances, worst direction), W2 against the truth, and the three allowances the test
checks them against (discretization: exact, from diffsde.exact_output_law with the exact score;
learning: first-order bound from the measured score error; sampling: p = 1e-4 quantile for n samples).

    python benchmarks/recovery_report.py                 # the CI size (FAST, 10k samples, 100 steps)
    python benchmarks/recovery_report.py --size full --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from diffsde._table import format_table
from diffsde.studies.allowances import score_error_profile
from diffsde.studies.recovery import FULL, SAMPLER_CASES, SMALL, fit_gaussian, gaussian_2d, recover, sampling_grid

SCORE_TIMES = (1e-3, 0.01, 0.05, 0.3, 1.0, 3.0, 10.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full"], default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the network's initial weights")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n-samples", type=int, default=None, help="override the size's number of samples")
    parser.add_argument("--steps", type=int, default=None, help="override the size's grid steps")
    parser.add_argument("--samplers", nargs="+", default=None, help="only these samplers (names as in the table)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    size = SMALL if args.size == "small" else FULL
    if args.n_samples is not None or args.steps is not None:
        size = dataclasses.replace(size, n_samples=args.n_samples or size.n_samples, steps=args.steps or size.steps)
    truth = gaussian_2d()

    started = time.perf_counter()
    result = fit_gaussian(args.device, size.config, size.hidden, args.seed)
    print(f"trained EpsilonMLP(2, hidden={size.hidden}) for {size.config.steps} steps x {size.config.batch_size} "
          f"on {args.device} in {time.perf_counter() - started:.1f} s (torch threads {torch.get_num_threads()})")
    score = result.score()

    profile = score_error_profile(score, truth, SCORE_TIMES, size.profile_samples, device=args.device)
    print("\nlearned score vs exact, under p_t "
          f"({size.profile_samples} exact samples per t; w = Σ_t^-1/2 (s_θ - s), z = Σ_t^-1/2 (x - m_t))")
    print(format_table([{"t": t, "relative L2": rel, "rms ‖w‖": rms, "‖E w‖": mean,
                         "‖E[wzᵀ+zwᵀ]‖": cross}
                        for t, rel, rms, mean, cross in zip(profile.times.tolist(), profile.relative_error.tolist(),
                                                            profile.rms_error.tolist(), profile.mean_error.tolist(),
                                                            profile.cross_error.tolist())]))

    grid = sampling_grid(size)
    grid_profile = score_error_profile(score, truth, grid.times.tolist(), size.profile_samples, device=args.device)
    print(f"\nrecovery: {size.n_samples} samples, linear schedule n = {size.steps} at exact times, "
          f"T = {float(grid.times[0]):.4g} -> t_min = {float(grid.times[-1]):.4g}, prior N(0, I); whitened errors")
    rows = []
    for case in SAMPLER_CASES:
        if args.samplers is not None and case.name not in args.samplers:
            continue
        row = recover(case, score, truth, size, grid_profile, device=args.device)
        rows.append({"sampler": case.name, "mean err": row.mean_error, "mean tol": row.mean_tolerance,
                     "(disc, learn, samp)": "(" + ", ".join(f"{v:.3f}" for v in
                                                            (row.discretization[0], row.learning[0],
                                                             row.sampling[0])) + ")",
                     "cov err": row.cov_error, "cov tol": row.cov_tolerance,
                     "(disc, learn, samp) ": "(" + ", ".join(f"{v:.3f}" for v in
                                                             (row.discretization[1], row.learning[1],
                                                              row.sampling[1])) + ")",
                     "W2": row.w2, "nfe": row.nfe, "s": row.seconds,
                     "ok": row.mean_error <= row.mean_tolerance and row.cov_error <= row.cov_tolerance})
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
