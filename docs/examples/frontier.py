"""What limits a sampler at 10-50 score evaluations: the grid, the start and the end, measured exactly.

UniPC-3 on a grid uniform in log-SNR, from T = -log ᾱ_1000 ≈ 10.12 of DDPM's linear schedule, on
the 2-D Gaussian p0 = N((1, -1), [[1.5, 0.9], [0.9, 1]]): the exact W2 of each configuration's
output law to p0 (diffsde.exact_output_law, no Monte Carlo), with the same number of score
evaluations (NFE) in every column: N(0, I) or the Tweedie start (one evaluation), stop at t_min
or denoise (one evaluation), and the exact p_T as a start (the discretization error alone).

    python docs/examples/frontier.py            # the tutorial's table (a few seconds)
    python docs/examples/frontier.py --small    # a quick run
"""

from __future__ import annotations

from _output import parse_args, write_text

from diffsde import TimeGrid, exact_output_law, toys
from diffsde._table import format_table
from diffsde.metrics import gaussian_w2

T = 10.1177  # -log ᾱ_1000 of DDPM's linear schedule (β from 1e-4 to 0.02)
T_MIN = 1e-4
COLUMNS = {  # label -> (prior, final)
    "N(0, I), stop": ("normal", "stop"),
    "N(0, I), denoise": ("normal", "denoise"),
    "Tweedie start, stop": ("tweedie", "stop"),
    "Tweedie start, denoise": ("tweedie", "denoise"),
    "exact p_T, denoise": ("exact", "denoise"),
}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    score = toys.gaussian().exact_score
    target = score.mean_and_cov(0.0)
    rows = []
    for nfe in ([10, 25] if args.small else [10, 15, 20, 25, 50]):
        row = {"NFE": nfe}
        for label, (prior, final) in COLUMNS.items():
            # Every column spends nfe evaluations: the Tweedie start and the denoising step take one each.
            steps = nfe - (prior == "tweedie") - (final == "denoise")
            mean, cov = exact_output_law("unipc", score, grid=TimeGrid.log_snr(T, T_MIN, steps), order=3,
                                         prior=prior, final=final)
            row[label] = f"{gaussian_w2(mean, cov, *target):.2g}"
        rows.append(row)
    write_text(args.out / "frontier_ends.md", format_table(rows, ["NFE", *COLUMNS]))


if __name__ == "__main__":
    main()
