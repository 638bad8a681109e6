"""Per-sampler summary: declared and fitted weak order, ring-mixture weight error, wall time.

    python benchmarks/sampler_summary.py [--n-samples 100000] [--steps 1000] [--threads 2]

* fitted order: log-log slope of the exact W2 error of ``exact_output_law`` (2-D anisotropic
  Gaussian with non-zero mean, linear schedule grids of 25 ... 1600 steps) against p_0 — no
  Monte Carlo noise; "-" for methods without an exact law (adaptive, torchsde, pc with snr rule);
* weight error: max_k |ŵ_k - w_k| on the 8-Gaussian ring (radius 4, std 0.5) with its exact
  score, nearest-mode assignment, ``--n-samples`` samples on the linear ``--steps`` schedule;
* wall time of that run (one run; the machine's load average is printed with the table).
Writes benchmarks/results/sampler_summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from diffsde import BetaSchedule, GaussianScore, exact_output_law, sample
from diffsde._table import format_table
from diffsde.metrics import gaussian_w2, mode_weights
from diffsde.orders import fit_order
from diffsde.samplers import plan
from diffsde.toys import ring

METHODS = [
    ("vp", {}),
    ("ddpm", {"variance": "beta"}),
    ("ddpm", {"variance": "beta_tilde"}),
    ("em", {}),
    ("ode", {"solver": "euler"}),
    ("ode", {"solver": "heun"}),
    ("ode", {"solver": "RK45", "rtol": 1e-4, "atol": 1e-4}),
    ("torchsde", {"solver": "euler"}),
    ("torchsde", {"solver": "srk"}),
    ("pc", {}),
]
ORDER_NS = [25, 50, 100, 200, 400, 800, 1600]
GAUSSIAN = GaussianScore(torch.tensor([1.0, -0.5], dtype=torch.float64),
                         torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64))


def fitted_order(method: str, options: dict) -> float | None:
    try:
        errors = [gaussian_w2(*exact_output_law(method, GAUSSIAN, schedule=BetaSchedule.linear(n), **options),
                              *GAUSSIAN.mean_and_cov(0.0)) for n in ORDER_NS]
    except ValueError:  # no exact law for this method
        return None
    return fit_order(ORDER_NS, errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampler_summary.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    toy = ring()
    schedule = BetaSchedule.linear(args.steps)
    rows = []
    for method, options in METHODS:
        name = "-".join([method, *map(str, options.values())])
        started = time.perf_counter()
        x, info = sample(toy.exact_score, method, schedule=schedule, n_samples=args.n_samples, generator=0,
                         return_info=True, **options)
        wall = time.perf_counter() - started
        weight_error = float((mode_weights(x, toy.means) - toy.weights).abs().max())
        order = fitted_order(method, options)
        declared = plan(method, options).weak_order
        rows.append({"method": name, "declared_order": "-" if declared is None else declared,
                     "fitted_order": "-" if order is None else round(order, 3), "nfe": info["nfe"],
                     "weight_error": weight_error, "wall_time_s": round(wall, 2)})
        print(f"{name}: {wall:.1f} s", flush=True)
    load = os.getloadavg()
    print(f"N = {args.n_samples}, {args.steps} steps, torch threads {args.threads}, load average {load[0]:.2f}")
    print(format_table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch": torch.__version__, "threads": args.threads, "load_average": load},
               "n_samples": args.n_samples, "steps": args.steps, "rows": rows}
    temporary = args.out.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    os.replace(temporary, args.out)


if __name__ == "__main__":
    main()
