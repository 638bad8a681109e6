"""DDPM's variational bound with the exact ε of a Gaussian p0, against the exact negative log-likelihood.

For p0 = N((1, -0.5), [[1.5, 0.4], [0.4, 0.3]]) and the exact ε at the schedule's exact times, every
term of the bound has a closed-form expectation and the DDPM chain's own law p_θ is Gaussian, so
E[VLB], the chain's exact NLL (cross-entropy E_p0[-log p_θ(x0)]) and h(p0) are exact numbers; the
affine algebra is tests/test_vlb.py's (written independently of diffsde.ddpm). The Monte Carlo bound
of diffsde.vlb on --samples points is printed beside it with its standard error.

    python benchmarks/vlb_gaps.py                    # n = 50, 200, 1000; linear and cosine; β and β̃
    python benchmarks/vlb_gaps.py --steps 50 200 1000 4000 --samples 20000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_vlb import COV, ENTROPY, MEAN, exact_eps, expected_vlb, model_cross_entropy  # noqa: E402

from diffsde import BetaSchedule, GaussianScore, vlb  # noqa: E402
from diffsde._table import format_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--samples", type=int, default=10_000, help="x0 points for the Monte Carlo bound (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    p0 = GaussianScore(MEAN, COV)
    x0 = p0.sample(args.samples, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64) \
        if args.samples else None
    print(f"p0 = N({MEAN.tolist()}, {COV.tolist()}), d = 2, h(p0) = {ENTROPY:.6f} nats; exact ε at exact times τ_i")
    rows = []
    for kind in ("linear", "cosine"):
        for variance in ("beta", "beta_tilde"):
            for n in args.steps:
                schedule = getattr(BetaSchedule, kind)(n)
                prior, transitions, decoder = expected_vlb(exact_eps(), schedule, variance)
                bound = prior + transitions + decoder
                nll = model_cross_entropy(exact_eps(), schedule, variance)
                row = {"schedule": kind, "σ²": variance, "n": n, "E[VLB]": bound, "NLL (p_θ)": nll,
                       "VLB - NLL": bound - nll, "NLL - h": nll - ENTROPY, "VLB - h": bound - ENTROPY,
                       "(VLB - h)·n": (bound - ENTROPY) * n, "L_T": prior, "L_0": decoder,
                       "bits/dim": bound / (2 * torch.log(torch.tensor(2.0)).item())}
                if x0 is not None:
                    terms = vlb(exact_eps(), x0, schedule, variance=variance,
                                generator=torch.Generator().manual_seed(args.seed + 1))
                    row["MC VLB"] = terms.nats
                    row["± se"] = terms.standard_error
                rows.append(row)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
