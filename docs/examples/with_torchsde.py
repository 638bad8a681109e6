"""Use diffsde's objects with torchsde directly.

diffsde.ReverseSDE and diffsde.ProbabilityFlowODE expose ``f(t, y)``, ``g(t, y)``,
``noise_type`` and ``sde_type``, so ``torchsde.sdeint`` integrates them as they are, in
backward time t' = T - t from t' = 0 (noise) to t' = T (data). This script does that for
Gaussian data, whose p_0 is known exactly, and for the 8-mode ring (trajectories).

    python docs/examples/with_torchsde.py            # the tutorial's outputs (under a minute)
    python docs/examples/with_torchsde.py --small    # a quick run
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import torch
import torchsde
from _output import parse_args, save_figure, write_text

from diffsde import ProbabilityFlowODE, ReverseSDE, toys
from diffsde._table import format_table
from diffsde.metrics import cov_error, gaussian_w2, mean_error

T = 10.0


def integrate(process, y0: torch.Tensor, steps: int, method: str, seed: int, n_times: int = 2) -> torch.Tensor:
    """``torchsde.sdeint`` from t' = 0 to t' = T with fixed steps dt = T / steps; states at n_times times."""
    ts = torch.linspace(0.0, T, n_times, dtype=torch.float64)
    dt = T / steps
    bm = torchsde.BrownianInterval(t0=0.0, t1=T, size=y0.shape, dtype=y0.dtype, entropy=seed, dt=dt,
                                   levy_area_approximation="space-time" if method == "srk" else "none")
    with torch.no_grad():
        return torchsde.sdeint(process, y0, ts, method=method, dt=dt, bm=bm)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    started = time.perf_counter()
    torch.set_num_threads(1)
    n_samples = 1000 if args.small else 40000
    steps_list = [20] if args.small else [20, 50, 100, 200, 500]
    gaussian = toys.gaussian()  # p_0 = N((1, -1), [[1.5, 0.9], [0.9, 1.0]])
    exact = gaussian.exact_score
    target_mean, target_cov = exact.mean_and_cov(0.0)
    y0 = exact.sample(n_samples, t=T, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # exact p_T

    cases = [
        ("ReverseSDE, euler", lambda: ReverseSDE(exact, T), "euler"),
        ("ReverseSDE (additive), srk", lambda: ReverseSDE(exact, T, noise_type="additive"), "srk"),
        ("ReverseSDE (stratonovich), midpoint", lambda: ReverseSDE(exact, T, sde_type="stratonovich"), "midpoint"),
        ("ProbabilityFlowODE, midpoint", lambda: ProbabilityFlowODE(exact, T, sde_type="stratonovich"), "midpoint"),
    ]
    rows = []
    for label, build, method in cases:
        for steps in steps_list:
            x = integrate(build(), y0, steps, method, seed=1)[-1]
            mean = x.mean(0)
            cov = torch.cov(x.T)
            rows.append({"process, method": label, "steps": steps, "mean_error": mean_error(x, target_mean),
                         "cov_error": cov_error(x, target_cov),
                         "w2_of_moments": gaussian_w2(mean, cov, target_mean, target_cov)})
    # Monte Carlo yardstick: the same statistics of n_samples exact draws of p_0.
    draws = exact.sample(n_samples, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rows.append({"process, method": "exact samples of p_0", "steps": "", "mean_error": mean_error(draws, target_mean),
                 "cov_error": cov_error(draws, target_cov),
                 "w2_of_moments": gaussian_w2(draws.mean(0), torch.cov(draws.T), target_mean, target_cov)})
    write_text(args.out / "torchsde_gaussian.md",
               format_table(rows) + f"\n\n{n_samples} paths from the exact p_T (T = {T:g}) per row; errors of the "
               "sample mean and covariance against the exact p_0, and W2 between N(sample moments) and p_0. "
               "The last row is the Monte Carlo floor.")

    ring = toys.ring()
    start = torch.randn(100 if args.small else 400, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    n_times, steps = (26, 50) if args.small else (101, 200)
    sde_path = integrate(ReverseSDE(ring.exact_score, T), start, steps, "euler", seed=6, n_times=n_times)
    ode_path = integrate(ProbabilityFlowODE(ring.exact_score, T, sde_type="stratonovich"), start, steps, "midpoint",
                         seed=6, n_times=n_times)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharex=True, sharey=True)
    for axis, path, title in ((axes[0], sde_path, "reverse SDE (torchsde euler)"),
                              (axes[1], ode_path, "probability-flow ODE (torchsde midpoint)")):
        for k in range(min(60, path.shape[1])):
            axis.plot(path[:, k, 0], path[:, k, 1], lw=0.5, alpha=0.5)
        axis.scatter(*path[-1].T, s=3, color="k", zorder=3)
        axis.scatter(*path[0].T, s=2, color="0.6", zorder=2)
        axis.set_title(title, fontsize=9)
        axis.set_aspect("equal")
        axis.set_xlim(-6.5, 6.5)
        axis.set_ylim(-6.5, 6.5)
    save_figure(figure, args.out / "torchsde_paths.png")
    print(f"with_torchsde.py finished in {time.perf_counter() - started:.1f} s (small={args.small})")


if __name__ == "__main__":
    main()
