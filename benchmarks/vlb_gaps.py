"""DDPM's variational bound with the exact ε of a Gaussian p0, against the exact negative log-likelihood.

For p0 = N((1, -0.5), [[1.5, 0.4], [0.4, 0.3]]) and the exact ε at the schedule's exact times, every
term of the bound has a closed-form expectation and the DDPM chain's own law p_θ is Gaussian, so
E[VLB], the chain's exact NLL (cross-entropy E_p0[-log p_θ(x0)]) and h(p0) are exact numbers
(diffsde.ddpm.expected_vlb, model_cross_entropy and gaussian_entropy: affine algebra written
independently of diffsde.vlb). The Monte Carlo bound of diffsde.vlb on --samples points is printed
beside it with its standard error.

    python benchmarks/vlb_gaps.py                    # n = 50, 200, 1000; linear and cosine; β and β̃
    python benchmarks/vlb_gaps.py --steps 50 200 1000 4000 --samples 20000
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from diffsde import BetaSchedule, EpsilonFromScore, vlb
from diffsde._table import format_table
from diffsde.ddpm import expected_vlb, gaussian_entropy, model_cross_entropy
from diffsde.studies.recovery import gaussian_2d


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--samples", type=int, default=10_000, help="x0 points for the Monte Carlo bound (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    p0 = gaussian_2d()
    mean, cov = p0.mean_and_cov(0.0)
    entropy = gaussian_entropy(p0)
    eps = EpsilonFromScore(p0)  # the exact ε of p0
    x0 = p0.sample(args.samples, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64) \
        if args.samples else None
    print(f"p0 = N({mean.tolist()}, {cov.tolist()}), d = 2, h(p0) = {entropy:.6f} nats; exact ε at exact times τ_i")
    rows = []
    for kind in ("linear", "cosine"):
        for variance in ("beta", "beta_tilde"):
            for n in args.steps:
                schedule = getattr(BetaSchedule, kind)(n)
                prior, transitions, decoder = expected_vlb(eps, p0, schedule, variance=variance)
                bound = prior + transitions + decoder
                nll = model_cross_entropy(eps, p0, schedule, variance=variance)
                row = {"schedule": kind, "σ²": variance, "n": n, "E[VLB]": bound, "NLL (p_θ)": nll,
                       "VLB - NLL": bound - nll, "NLL - h": nll - entropy, "VLB - h": bound - entropy,
                       "(VLB - h)·n": (bound - entropy) * n, "L_T": prior, "L_0": decoder,
                       "bits/dim": bound / (2 * math.log(2))}
                if x0 is not None:
                    terms = vlb(eps, x0, schedule, variance=variance,
                                generator=torch.Generator().manual_seed(args.seed + 1))
                    row["MC VLB"] = terms.nats
                    row["± se"] = terms.standard_error
                rows.append(row)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
