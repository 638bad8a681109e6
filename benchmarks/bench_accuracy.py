"""Accuracy per cost: error against the number of score evaluations (NFE), per method, with wall time.

Two problems with a known answer, so the error is the sampler's alone:

* ``ring`` -- the 8-mode ring (``diffsde.toys.ring()``) with its exact mixture score. Errors
  from samples: sliced 2-Wasserstein distance to as many exact samples of p_0
  (``metrics.sliced_wasserstein``, 128 directions) and the total-variation distance
  ``½ Σ_k |ŵ_k - 1/8|`` of the nearest-mode weights (``metrics.mode_weights``). Both have a
  Monte Carlo floor, printed as the row ``exact samples`` (two independent exact samples).
* ``gaussian`` -- the default 2-D Gaussian (``diffsde.toys.gaussian()``). For the fixed-step
  methods the law of the output is known exactly (``diffsde.exact_output_law``, started like
  the sampler from N(0, I)), so ``w2_exact`` is the exact 2-Wasserstein distance to p_0 with
  no sampling noise; every method also gets ``w2_moments``, the Gaussian W2 between the
  samples' mean/covariance and p_0 (Monte Carlo noise ~ 1/sqrt(N)). ``w2_exact_from_pT``
  starts the exact law from the exact p_T instead of N(0, I): pure discretization error,
  without the prior's mismatch (which the SDE samplers contract and the ODE ones carry).

Grids: n steps are the linear 1000-step schedule respaced to n steps (Nichol & Dhariwal
2021, §4: keep ᾱ at n + 1 evenly spaced indices of the 1000, β_j = 1 - ᾱ_{j+1}/ᾱ_j) on its
exact OU times τ = -log ᾱ, so every n integrates the same interval [0, τ_1000 ≈ 10.0] and
n = 1000 is DDPM's schedule. A method with k score evaluations per step gets n = NFE / k
steps. ``ode-RK45`` is adaptive: its tolerance, not NFE, is set (NFE is what it used).

    python benchmarks/bench_accuracy.py --quick        # CI scale
    python benchmarks/bench_accuracy.py                # NFE 10..1000, N = 20,000
    python benchmarks/bench_accuracy.py --plot docs/benchmarks_error_vs_nfe.png
    python benchmarks/bench_accuracy.py --frontier     # NFE 10..100: diffsde's best against diffusers/k-diffusion

``--frontier`` is the sampler frontier at 10–100 NFE (``_frontier.py``): every diffsde
configuration (method × grid × t_min × final) against diffusers' schedulers and k-diffusion's
samplers fed the same exact score (``_peers.py``), on both problems.

Prints the tables and writes JSON with the machine's description to
``benchmarks/results/accuracy_<device>[_quick].json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings

import torch

import _frontier
import _harness as harness
from diffsde import BetaSchedule, exact_output_law, metrics, resolve_method, sample, toys
from diffsde._io import write_atomic
from diffsde._table import format_table

NFE_BUDGETS = [10, 20, 50, 100, 200, 500, 1000]
RK45_TOLERANCES = [1e-1, 1e-2, 1e-3, 1e-4]
METHODS = {  # table label -> registry spec; every declaration (evaluations per step, affinity) is the registry's
    "vp": "vp",
    "ddpm": "ddpm",
    "ddpm-tilde": ("ddpm", {"variance": "beta_tilde"}),
    "em": "em",
    "ode-euler": "ode-euler",
    "ode-heun": "ode-heun",
    "pc": ("pc", {"predictor": "em", "corrector_steps": 1}),
    "torchsde-euler": "torchsde-euler",
    "torchsde-srk": "torchsde-srk",
}
FINE = 1000


def respaced_schedule(n: int, fine: BetaSchedule) -> BetaSchedule:
    """``fine`` respaced to n steps: ᾱ kept at n + 1 evenly spaced indices (Nichol & Dhariwal 2021, §4)."""
    index = torch.round(torch.linspace(0, fine.n, n + 1, dtype=torch.float64)).long()
    alpha_bars = fine.alpha_bars[index]
    return BetaSchedule(1.0 - alpha_bars[1:] / alpha_bars[:-1])


def run_method(problem: str, score, name: str, n_steps: int | None, args, device, reference, rtol=None) -> dict:
    """One sampler run of N samples and its errors."""
    fine = BetaSchedule.linear(FINE)
    if name == "ode-RK45":
        sampler, schedule = resolve_method("ode-RK45", rtol=rtol, atol=rtol), fine
    else:
        sampler, schedule = resolve_method(METHODS[name]), respaced_schedule(n_steps, fine)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    harness.synchronize(device)
    started = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, info = sample(score, sampler, schedule=schedule, exact_times=True, n_samples=args.n_samples,
                         generator=generator, device=device, return_info=True)
    harness.synchronize(device)
    wall = time.perf_counter() - started
    row = {"problem": problem, "method": name, "steps": info["steps"] if name != "ode-RK45" else f"rtol={rtol:g}",
           "nfe": info["nfe"], "wall_s": wall}
    row.update(errors(problem, score, x.double().cpu(), reference))
    # Methods that declare themselves affine (fixed grid; pc only with a numeric step size) have an exact law.
    if problem == "gaussian" and sampler.affine:
        true_mean, true_cov = score.mean_and_cov(0.0)
        for key, prior in (("w2_exact", "normal"), ("w2_exact_from_pT", "exact")):
            mean, cov = exact_output_law(sampler, score, schedule=schedule, exact_times=True, prior=prior)
            row[key] = metrics.gaussian_w2(mean, cov, true_mean, true_cov)
    return row


def errors(problem: str, score, x, reference) -> dict:
    out = {"sw2": metrics.sliced_wasserstein(x, reference)}
    if problem == "ring":
        weights = metrics.mode_weights(x, score.means)
        out["mode_tv"] = 0.5 * float((weights - score.weights).abs().sum())
    else:
        mean, cov = score.mean_and_cov(0.0)
        out["w2_moments"] = metrics.gaussian_w2(x.mean(0), torch.cov(x.T), mean, cov)
    return out


def run_problem(problem: str, args, device) -> list[dict]:
    score = (toys.ring() if problem == "ring" else toys.gaussian()).exact_score
    reference = score.sample(args.n_samples, generator=torch.Generator().manual_seed(args.seed + 1),
                             dtype=torch.float64)
    other = score.sample(args.n_samples, generator=torch.Generator().manual_seed(args.seed + 2), dtype=torch.float64)
    rows = [{"problem": problem, "method": "exact samples", "steps": "-", "nfe": 0, "wall_s": 0.0,
             **errors(problem, score, other, reference)}]
    if problem == "gaussian":
        rows[0]["w2_exact"] = rows[0]["w2_exact_from_pT"] = 0.0
    for name in args.methods:
        if name == "ode-RK45":
            for rtol in args.tolerances:
                print(f"# {problem}: {name} rtol={rtol:g}", file=sys.stderr, flush=True)
                rows.append(run_method(problem, score, name, None, args, device, reference, rtol=rtol))
            continue
        per_step = resolve_method(METHODS[name]).score_evals
        for budget in args.nfe:
            n_steps = budget // per_step
            if n_steps < 1:
                continue
            print(f"# {problem}: {name} NFE={budget} ({n_steps} steps)", file=sys.stderr, flush=True)
            try:
                rows.append(run_method(problem, score, name, n_steps, args, device, reference))
            except (ValueError, FloatingPointError) as err:  # e.g. a non-finite run: say so in the table
                rows.append({"problem": problem, "method": name, "steps": n_steps, "nfe": budget,
                             "wall_s": math.nan, "note": f"{type(err).__name__}: {str(err)[:80]}"})
    return rows


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("ring", "sw2", "ring: sliced W2 to exact samples"),
              ("gaussian", "w2_exact", "Gaussian: exact W2 of the output law"),
              ("gaussian", "w2_moments", "Gaussian: W2 of sample moments")]
    figure, axes = plt.subplots(1, 3, figsize=(16, 5.6))
    for axis, (problem, key, title) in zip(axes, panels):
        methods = [m for m in dict.fromkeys(r["method"] for r in rows if r["problem"] == problem)
                   if m != "exact samples"]
        for method in methods:
            points = sorted((r["nfe"], r[key]) for r in rows if r["problem"] == problem and r["method"] == method
                            and isinstance(r.get(key), float) and math.isfinite(r[key]) and r[key] > 0)
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=method)
        floor = [r[key] for r in rows if r["problem"] == problem and r["method"] == "exact samples"
                 and r.get(key, 0) > 0]
        if floor:
            axis.axhline(floor[0], color="grey", linestyle="--", label="Monte Carlo floor")
        axis.set(xscale="log", yscale="log", xlabel="score evaluations (NFE)", ylabel=key, title=title)
        axis.grid(True, which="both", alpha=0.3)
    labels = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            labels.setdefault(label, handle)
    figure.legend(labels.values(), labels.keys(), loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=110))
    plt.close(figure)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI scale: NFE 10 and 100, N = 2000, RK45 at 1e-2")
    parser.add_argument("--problems", nargs="+", default=["ring", "gaussian"], choices=["ring", "gaussian"])
    parser.add_argument("--methods", nargs="+", default=[*METHODS, "ode-RK45"], choices=[*METHODS, "ode-RK45"])
    parser.add_argument("--nfe", type=int, nargs="+", default=None, help=f"NFE budgets (default {NFE_BUDGETS})")
    parser.add_argument("--tolerances", type=float, nargs="+", default=None,
                        help=f"rtol = atol of ode-RK45 (default {RK45_TOLERANCES})")
    parser.add_argument("--n-samples", type=int, default=None, help="samples per run (default 20000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--plot", default=None, help="write a PNG of error vs NFE here")
    parser.add_argument("--frontier", action="store_true",
                        help="the frontier at 10-100 NFE: diffsde's best configuration against diffusers/k-diffusion")
    parser.add_argument("--frontier-methods", nargs="+", default=None, choices=list(_frontier.METHOD_SPECS),
                        help="diffsde methods tried by --frontier (default: all)")
    args = parser.parse_args(argv)
    default_nfe = _frontier.FRONTIER_NFE if args.frontier else NFE_BUDGETS
    args.nfe = args.nfe or ([10, 100] if args.quick else default_nfe)
    args.tolerances = args.tolerances or ([1e-2] if args.quick else RK45_TOLERANCES)
    args.n_samples = args.n_samples or (2000 if args.quick else 500_000 if args.frontier else 20_000)
    if min(args.nfe) < 1 or args.n_samples < 2:
        parser.error("--nfe must be >= 1 and --n-samples >= 2")
    if min(args.tolerances) <= 0:
        parser.error("--tolerances must be > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = harness.setup(args.device, args.threads)
    started = time.perf_counter()
    if args.frontier:
        result = _frontier.run_frontier(args)
        print(_frontier.report(result, args))
        if args.plot:
            _frontier.plot(result, args.plot)
            print(f"wrote {args.plot}", file=sys.stderr)
        payload = {"benchmark": "frontier", "argv": sys.argv[1:], "machine": harness.machine_info(device),
                   "packages": harness.package_versions(["torch", "torchsde", "diffusers", "numpy", "scipy"]),
                   "n_samples": args.n_samples, "seed": args.seed, "wall_s": time.perf_counter() - started, **result}
        path = harness.write_json(harness.RESULTS / f"frontier_{device.type}{'_quick' if args.quick else ''}.json",
                                  payload)
        print(f"wrote {path}", file=sys.stderr)
        return 0
    rows = [row for problem in args.problems for row in run_problem(problem, args, device)]
    for problem in args.problems:
        subset = [r for r in rows if r["problem"] == problem]
        columns = ["method", "steps", "nfe", "wall_s", "sw2"] + (
            ["mode_tv"] if problem == "ring" else ["w2_exact", "w2_exact_from_pT", "w2_moments"])
        if any("note" in r for r in subset):
            columns.append("note")
        print(f"\n{problem}, N = {args.n_samples}\n")
        print(format_table(subset, columns))
    if args.plot:
        plot(rows, args.plot)
        print(f"\nwrote {args.plot}", file=sys.stderr)
    payload = {"benchmark": "accuracy", "argv": sys.argv[1:], "machine": harness.machine_info(device),
               "packages": harness.package_versions(["torch", "torchsde", "numpy", "scipy"]),
               "n_samples": args.n_samples, "seed": args.seed, "wall_s": time.perf_counter() - started, "rows": rows}
    path = harness.write_json(harness.RESULTS / f"accuracy_{device.type}{'_quick' if args.quick else ''}.json", payload)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
