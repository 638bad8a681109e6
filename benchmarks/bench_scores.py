"""Exact mixture scores alone: time per call and peak allocated memory, per shape of mixture,
evaluation layout and batch size N, and the ring score against its FLOP/memory floor.

Layouts (the same formula, tested against each other in tests/test_mixture_forms.py):

* ``form`` -- a Python-float t, what every sampler passes: the form chosen for the mixture
  (:mod:`diffsde.mixture_forms`: "gaussian", "shared" or "general"), components x samples;
* ``batched`` -- a 0-d tensor t: the batched eigenbasis path, samples x components (the layout
  every call took before the forms, and what per-sample times still take).

Cases: the toys' ``ring`` (K = 8, d = 2, one isotropic covariance) and ``gaussian`` (K = 1),
then K = 8, d = 2 mixtures with one full covariance (``shared-full``), distinct full
(``general-full``) and distinct diagonal (``general-diagonal``) covariances, and larger ones:
``shared-K1000`` (d = 2), ``shared-d256`` (K = 64), ``general-K100-d16``, ``gaussian-d256``.

Floor of the ring score at the largest N (printed and in the JSON): the larger of
* memory: reading x and writing s (2 x N x d x 4 bytes) at the bandwidth of a large ``copy_``;
* compute: N·K exponentials at the rate of ``torch.exp`` on an L2-resident buffer, plus the
  2·N·K·d + 2·N·K·(d + 1) multiply-adds of the two products at a 1024³ float32 ``mm``'s rate.
And the dispatch cost of one small torch op (eight in-place adds on a 1000 x 2 tensor), which
bounds a call at small N.

    python benchmarks/bench_scores.py --threads 1            # all cases, N = 1e3 .. 1e6
    python benchmarks/bench_scores.py --quick                 # CI scale
    python benchmarks/bench_scores.py --cases ring --sizes 1000 1000000

Writes ``benchmarks/results/scores_<device>_<label>.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

import _harness as harness
from diffsde import GaussianMixtureScore, GaussianScore, toys
from diffsde._table import format_table

RING_K, RING_D = 8, 2


def _mixture(kind: str, k: int, d: int) -> GaussianMixtureScore:
    gen = torch.Generator().manual_seed(0)
    means = 3 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)

    def spd():
        factor = torch.randn(d, d, generator=gen, dtype=torch.float64)
        return factor @ factor.T / d + 0.1 * eye

    if kind == "gaussian":
        return GaussianScore(means[0], spd())
    if kind == "shared-isotropic":
        covs = (0.3 * eye).expand(k, d, d)
    elif kind == "shared-full":
        covs = spd().expand(k, d, d)
    elif kind == "general-diagonal":
        covs = torch.diag_embed(torch.rand(k, d, generator=gen, dtype=torch.float64) + 0.1)
    else:
        covs = torch.stack([spd() for _ in range(k)])
    return GaussianMixtureScore(weights, means, covs.contiguous())


CASES = {  # name -> (builder, largest N·K·d to run, so large mixtures stay at sensible N)
    "ring": (lambda: toys.ring().exact_score, 10 ** 8),
    "gaussian": (lambda: toys.gaussian().exact_score, 10 ** 8),
    "shared-full": (lambda: _mixture("shared-full", 8, 2), 10 ** 8),
    "general-full": (lambda: _mixture("general-full", 8, 2), 10 ** 8),
    "general-diagonal": (lambda: _mixture("general-diagonal", 8, 2), 10 ** 8),
    "shared-K1000": (lambda: _mixture("shared-isotropic", 1000, 2), 2 * 10 ** 7),
    "shared-d256": (lambda: _mixture("shared-isotropic", 64, 256), 2 * 10 ** 7),
    "general-K100-d16": (lambda: _mixture("general-full", 100, 16), 2 * 10 ** 7),
    "gaussian-d256": (lambda: _mixture("gaussian", 1, 256), 2 * 10 ** 7),
}
LAYOUTS = ("form", "batched")


def run_case(name: str, n: int, args, device: torch.device) -> list[dict]:
    score = CASES[name][0]()
    x = 2 * torch.randn(n, score.dim, generator=torch.Generator().manual_seed(1)).to(device)
    t_tensor = torch.tensor(0.5, device=device)
    calls = {"form": lambda: score(x, 0.5), "batched": lambda: score(x, t_tensor)}
    layouts = [layout for layout in args.layouts if not (layout == "batched" and n * score.n_components *
                                                          score.dim > args.batched_max)]
    with torch.no_grad():  # calls per timed sample: enough for ~0.1 s, from one untimed call each
        reps = {layout: max(1, min(500, int(0.1 / max(harness.time_call(calls[layout], device), 1e-6))))
                for layout in layouts}

    def repeated(fn, count):
        return lambda: [fn() for _ in range(count)]

    with torch.no_grad():
        times = harness.interleaved({layout: repeated(calls[layout], reps[layout]) for layout in layouts},
                                    args.repeats, device)
        rows = []
        for layout in layouts:
            per_call = harness.median(times[layout]) / reps[layout]
            row = {"case": name, "K": score.n_components, "d": score.dim, "form": score.form, "layout": layout,
                   "N": n, "us_per_call": per_call * 1e6, "ns_per_sample": per_call / n * 1e9}
            if args.memory:
                row["peak_mib"] = harness.peak_memory(calls[layout], device)["peak_mib"]
            rows.append(row)
    return rows


def _best_seconds(fn, repeats: int = 5, calls: int = 1) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def machine_rates(device: torch.device) -> dict:
    """Copy bandwidth, in-cache exp rate, float32 matmul rate and one small op's dispatch cost (CPU)."""
    big = torch.randn(2 ** 24, device=device)  # 64 MiB
    target = torch.zeros_like(big)  # written once first: no page faults in the timed copies
    copy_s = _best_seconds(lambda: target.copy_(big))
    cached = torch.randn(RING_K, 8192, device=device) * 3  # 256 KiB: L2-resident; arguments well above -87
    out = torch.empty_like(cached)
    exp_s = _best_seconds(lambda: torch.exp(cached, out=out), calls=200) / cached.numel()
    a = torch.randn(1024, 1024, device=device)
    mm_s = _best_seconds(lambda: torch.mm(a, a), calls=3)
    small = torch.randn(1000, 2, device=device)
    dispatch_s = _best_seconds(lambda: [small.add_(1.0) for _ in range(8)], calls=500) / 8
    return {"copy_bytes_per_s": 2 * big.nbytes / copy_s, "exp_s_per_element": exp_s,
            "mm_flops_per_s": 2 * 1024 ** 3 / mm_s, "small_op_dispatch_s": dispatch_s}


def ring_floor(n: int, rates: dict) -> dict:
    """The ring score's floor at N = n (float32), from the machine's measured rates."""
    memory_s = 2 * n * RING_D * 4 / rates["copy_bytes_per_s"]
    flops = 2 * n * RING_K * RING_D + 2 * n * RING_K * (RING_D + 1)
    compute_s = n * RING_K * rates["exp_s_per_element"] + flops / rates["mm_flops_per_s"]
    return {"N": n, "memory_us": memory_s * 1e6, "compute_us": compute_s * 1e6,
            "floor_us": max(memory_s, compute_s) * 1e6}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI scale: ring and general-full, N = 1e3 and 1e4")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="batch sizes (default 1e3 1e4 1e5 1e6)")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7; 3 with --quick)")
    parser.add_argument("--batched-max", type=int, default=2 * 10 ** 7,
                        help="run the batched layout only up to this N·K·d (it is slow at large N)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--label", default=None)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/scores_<device>_<label>.json)")
    args = parser.parse_args(argv)
    args.cases = args.cases or (["ring", "general-full"] if args.quick else list(CASES))
    args.sizes = sorted(args.sizes or ([1000, 10_000] if args.quick else [1000, 10_000, 100_000, 1_000_000]))
    args.repeats = args.repeats or (3 if args.quick else 7)
    if args.repeats < 1 or min(args.sizes) < 1:
        parser.error("--repeats and --sizes must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = harness.setup(args.device, args.threads)
    started, load_start = time.perf_counter(), harness.load_average()
    rows = []
    for name in args.cases:
        for n in args.sizes:
            if n * CASES[name][0]().n_components * CASES[name][0]().dim > CASES[name][1]:
                continue
            print(f"# {name}, N = {n} ...", file=sys.stderr, flush=True)
            rows.extend(run_case(name, n, args, device))
    columns = ["case", "K", "d", "form", "layout", "N", "us_per_call", "ns_per_sample"] + (["peak_mib"] if args.memory else [])
    print(format_table(rows, columns))
    rates = machine_rates(device) if device.type == "cpu" else None
    verdicts = []
    ring_form = {row["N"]: row["us_per_call"] for row in rows if row["case"] == "ring" and row["layout"] == "form"}
    if 1000 in ring_form:
        verdicts.append({"target": "ring score <= 25 us a call (N = 1e3)", "measured": ring_form[1000],
                         "threshold": 25.0, "met": "met" if ring_form[1000] <= 25.0 else "NOT met"})
    floor = None
    if rates and ring_form:
        n_top = max(ring_form)
        floor = ring_floor(n_top, rates)
        ratio = ring_form[n_top] / floor["floor_us"]
        verdicts.append({"target": f"ring score within 1.5x of its floor (N = {n_top:g})", "measured": ratio,
                         "threshold": 1.5, "met": "met" if ratio <= 1.5 else "NOT met"})
        print(f"\nmachine rates: copy {rates['copy_bytes_per_s'] / 1e9:.1f} GB/s (read + write), exp "
              f"{rates['exp_s_per_element'] * 1e9:.3f} ns/element in cache, mm {rates['mm_flops_per_s'] / 1e9:.1f} "
              f"GFLOP/s, one small op {rates['small_op_dispatch_s'] * 1e6:.2f} us")
        print(f"ring floor at N = {n_top:g}: memory {floor['memory_us']:.0f} us, compute {floor['compute_us']:.0f} us "
              f"-> {floor['floor_us']:.0f} us; measured {ring_form[n_top]:.0f} us ({ratio:.2f}x)")
    if verdicts:
        print()
        print(format_table(verdicts))
    label = args.label or ("quick" if args.quick else "all")
    payload = {"benchmark": "scores", "argv": sys.argv[1:] if argv is None else argv,
               "machine": harness.machine_info(device), "load_average_at_start": load_start,
               "packages": harness.package_versions(["torch"]), "repeats": args.repeats,
               "wall_s": time.perf_counter() - started, "rows": rows, "machine_rates": rates, "ring_floor": floor,
               "targets": verdicts}
    path = harness.write_json(args.out or harness.RESULTS / f"scores_{device.type}_{label}.json", payload)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
