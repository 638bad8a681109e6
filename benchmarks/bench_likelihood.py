"""Likelihood through the probability-flow ODE: error against NFE and wall time, Hutchinson's standard
error in d = 64, and the exact divergence's speed against a Python loop over dimensions.

Three parts (``--parts``), each printing a table; all go to one JSON file:

* ``ring`` -- the 8-mode ring (``diffsde.toys.make_toy("ring")``) with its exact score, N exact
  samples of p_0 in float64, ``log_likelihood(prior="exact", divergence="exact")``: the error is
  the ODE solver's alone. Adaptive dopri5 / bosh3 from t_min = 0 over tolerances (rtol = atol),
  and the fixed-step rk4 / midpoint on ``TimeGrid.log_snr(10.05, t_min, n)`` (log-SNR needs
  t_min > 0: t_min = 1e-3 and the exact ``log p_0 - log p_{t_min}`` correction, whose size is
  reported). Error = |log p - log p_0| in bits/dim (d log 2 nats), mean and max over the samples;
  the issue's target is a mean <= 1e-3 bits/dim at the fewest NFE. One ``prior="normal"`` row
  shows what scoring x_T under N(0, I) instead of the exact p_T costs.
* ``hutchinson`` -- a d = 64 Gaussian mixture (:func:`make_mixture`: K = 8 equal weights, means
  of norm 3 in random directions, covariances ``Q diag(λ) Qᵀ`` with random rotations Q and λ
  log-uniform on [0.1, 1]), N samples, ``divergence="hutchinson"`` with 1-8 Rademacher or
  Gaussian probes and the exact prior. Per-sample standard error (``log_prob_se``) and the
  dataset mean's (``probe_standard_error``), in bits/dim, against the target SE <= 0.01
  bits/dim; the actual errors against the closed-form log p_0 (RMS, and in units of the
  reported SE). For one Gaussian component the probe variance is known: along the flow the
  divergence integrates to ``A = -½ log Σ`` (Σ_t = e^{-t} Σ + (1 - e^{-t}) I commutes with Σ),
  so one probe's variance is ``2 Σ_{i≠j} A_ij²`` (Rademacher) or ``2 ‖A‖_F²`` (Gaussian)
  (Hutchinson 1989); ``se_formula`` is that, averaged over the components. A sweep over the
  eigenvalue range shows how the SE grows as the covariances move away from I.
* ``loop`` -- ``diffsde.likelihood.velocity_divergence`` (one ``torch.func.vjp``, d pullbacks
  under ``vmap``, in cache-sized chunks on a CPU) and, for the mixture, its closed form
  (``GaussianMixtureScore.score_and_divergence``, what ``log_likelihood`` uses for an exact
  score) against d ``torch.autograd.grad`` calls in a Python loop, for the velocity
  ``v(x) = -½ (x + s(x, t))`` of the mixture score (d = 2 ... 64) and of an ``EpsilonMLP``
  network (d = 64, output layer re-initialised so its Jacobian is not 0), N = 16, 256 and 2048,
  float64. The traces must agree to 1e-10 (relative). Times interleaved round-robin; speed-up =
  median of per-round ratios.

    python benchmarks/bench_likelihood.py --quick        # CI scale, < 1 min
    python benchmarks/bench_likelihood.py                # all three parts, ~5-10 min on 2 cores
    python benchmarks/bench_likelihood.py --parts loop --threads 1

Writes ``benchmarks/results/likelihood_<device>[_quick].json`` (or ``--out``) with the machine's
description.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

import _harness as harness
from diffsde import EpsilonMLP, EpsilonScore, GaussianMixtureScore, TimeGrid, toys
from diffsde._table import format_table
from diffsde.likelihood import DEFAULT_T, log_likelihood, velocity_divergence

TARGET_RING_BPD = 1e-3
TARGET_SE_BPD = 0.01
TOLERANCES = [3e-2, 1e-2, 5e-3, 3e-3, 2e-3, 1e-3, 3e-4, 1e-4, 1e-5, 1e-6]
FIXED_STEPS = {"rk4": [8, 12, 16, 20, 24, 32, 48], "midpoint": [20, 40, 80, 160, 320]}
LOOP_TIME = 0.5  # OU time at which the divergences of part 3 are taken
RELATIVE_TRACE_TOLERANCE = 1e-10


# -- problems -------------------------------------------------------------------------------

def make_mixture(dim: int, components: int = 8, mean_norm: float = 3.0, eig_range=(0.1, 1.0),
                 seed: int = 0) -> GaussianMixtureScore:
    """K equal-weight Gaussians in R^dim: means ``mean_norm · u_k`` (u_k uniform on the sphere),
    covariances ``Q_k diag(λ_k) Q_kᵀ`` (Q_k Haar-random rotations by QR, λ log-uniform on eig_range)."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(components, dim, generator=generator, dtype=torch.float64)
    means = mean_norm * directions / directions.norm(dim=1, keepdim=True)
    rotations, _ = torch.linalg.qr(torch.randn(components, dim, dim, generator=generator, dtype=torch.float64))
    low, high = math.log(eig_range[0]), math.log(eig_range[1])
    eigenvalues = torch.exp(low + (high - low) * torch.rand(components, dim, generator=generator, dtype=torch.float64))
    covs = rotations @ torch.diag_embed(eigenvalues) @ rotations.transpose(-1, -2)
    covs = 0.5 * (covs + covs.transpose(-1, -2))
    return GaussianMixtureScore(torch.full((components,), 1.0 / components, dtype=torch.float64), means, covs)


def formula_se_nats(score: GaussianMixtureScore, probe: str, probes: int) -> float:
    """One-Gaussian Hutchinson SE of a sample's log p0 (nats), averaged over components (module docstring)."""
    eigvals, eigvecs = torch.linalg.eigh(score.covs)
    a = -0.5 * eigvecs @ torch.diag_embed(eigvals.log()) @ eigvecs.transpose(-1, -2)  # (K, d, d)
    frobenius = a.square().sum((-1, -2))
    variance = 2 * frobenius if probe == "gaussian" else 2 * (frobenius - a.diagonal(dim1=-2, dim2=-1).square().sum(-1))
    return float((score.weights * variance).sum() / probes) ** 0.5


def bits(nats, dim: int):
    return nats / (dim * math.log(2))


def warm_up(score, x) -> None:
    """One untimed small call (torchdiffeq's import, functorch's first traces)."""
    log_likelihood(score, x[:4], prior="exact", divergence="exact", rtol=1e-2, atol=1e-2)


def timed_likelihood(score, x, repeats: int, device, **kwargs):
    """(the result of the first call, median wall seconds over ``repeats`` calls)."""
    walls, result = [], None
    for _ in range(repeats):
        harness.synchronize(device)
        started = time.perf_counter()
        out = log_likelihood(score, x, **kwargs)
        harness.synchronize(device)
        walls.append(time.perf_counter() - started)
        if result is None:
            result = out
    return result, harness.median(walls)


# -- part 1: the ring, exact divergence -----------------------------------------------------

def run_ring(args, device) -> dict:
    score = toys.make_toy("ring").exact_score
    x = score.sample(args.ring_n, 0.0, generator=torch.Generator(device=device).manual_seed(args.seed),
                     dtype=torch.float64)
    exact = score.log_prob(x, 0.0)
    dim = x.shape[1]
    warm_up(score, x)

    def row(result, wall, **label) -> dict:
        error = bits((result.log_prob - exact).abs(), dim)
        correction = 0.0 if result.t_min_correction is None else float(bits(result.t_min_correction.abs(), dim).mean())
        return {**label, "t_min": result.t_min, "nfe": result.nfe, "mean_err_bpd": float(error.mean()),
                "max_err_bpd": float(error.max()), "wall_s": wall, "t_min_corr_bpd": correction}

    rows = []
    for solver in ("dopri5", "bosh3"):
        for tol in args.tolerances:
            print(f"# ring: {solver} tol={tol:g}", file=sys.stderr, flush=True)
            result, wall = timed_likelihood(score, x, args.repeats, device, prior="exact", divergence="exact",
                                            solver=solver, rtol=tol, atol=tol)
            rows.append(row(result, wall, solver=solver, setting=f"tol={tol:g}", tol=tol, steps=None))
    for solver, steps in args.fixed_steps.items():
        for n in steps:
            print(f"# ring: {solver} n={n}", file=sys.stderr, flush=True)
            grid = TimeGrid.log_snr(DEFAULT_T, args.fixed_t_min, n)
            result, wall = timed_likelihood(score, x, args.repeats, device, prior="exact", divergence="exact",
                                            solver=solver, grid=grid)
            rows.append(row(result, wall, solver=solver, setting=f"n={n}", tol=None, steps=n))
    print(f"\nring: exact divergence, exact prior, N = {args.ring_n}, float64; error in bits/dim\n")
    print(format_table(display(rows), ["solver", "setting", "t_min", "nfe", "mean_err_bpd", "max_err_bpd", "wall_s",
                                       "t_min_corr_bpd"]))
    best = {}
    for r in rows:
        if r["mean_err_bpd"] <= TARGET_RING_BPD and (r["solver"] not in best or r["nfe"] < best[r["solver"]]["nfe"]):
            best[r["solver"]] = r
    fewest = min(best.values(), key=lambda r: (r["nfe"], r["wall_s"]), default=None)
    if fewest is None:
        print(f"\ntarget mean |error| <= {TARGET_RING_BPD:g} bits/dim: NOT met by any setting")
    else:
        print(f"\ntarget mean |error| <= {TARGET_RING_BPD:g} bits/dim: met; fewest NFE {fewest['nfe']} "
              f"({fewest['solver']} {fewest['setting']}, {fewest['mean_err_bpd']:.3g} bits/dim, "
              f"{fewest['wall_s']:.3g} s); per solver: "
              + ", ".join(f"{s} {r['nfe']} ({r['setting']})" for s, r in best.items()))

    tol = args.normal_prior_tol
    normal, wall = timed_likelihood(score, x, args.repeats, device, prior="normal", divergence="exact", rtol=tol,
                                    atol=tol)
    error = bits(normal.log_prob - exact, dim)
    normal_row = {"solver": "dopri5", "setting": f"tol={tol:g}", "prior": "normal", "nfe": normal.nfe,
                  "mean_err_bpd": float(error.abs().mean()), "max_err_bpd": float(error.abs().max()),
                  "mean_signed_err_bpd": float(error.mean()),
                  "mean_prior_mismatch_bpd": float(bits(normal.prior_mismatch, dim).mean()), "wall_s": wall}
    print("\nring with the N(0, I) prior (the score's exact p_T replaced by N(0, I))\n")
    print(format_table([normal_row], list(normal_row)))
    return {"n": args.ring_n, "dim": dim, "T": DEFAULT_T, "fixed_grid": "log_snr", "fixed_t_min": args.fixed_t_min,
            "repeats": args.repeats, "rows": rows, "normal_prior": normal_row, "target_bpd": TARGET_RING_BPD,
            "met": fewest is not None, "fewest_nfe": fewest, "fewest_nfe_per_solver": best}


# -- part 2: d = 64 mixture, Hutchinson -----------------------------------------------------

def hutchinson_row(score, x, exact, probes: int, probe: str, args, device, seed: int) -> dict:
    dim = x.shape[1]
    generator = torch.Generator(device=device).manual_seed(seed)
    harness.synchronize(device)
    started = time.perf_counter()
    result = log_likelihood(score, x, prior="exact", divergence="hutchinson", probes=probes, probe=probe,
                            generator=generator, rtol=args.hutchinson_tol, atol=args.hutchinson_tol)
    harness.synchronize(device)
    wall = time.perf_counter() - started
    error = (result.log_prob - exact).double()
    mean_error = float(error.mean())
    row = {"probes": probes, "probe": probe, "nfe": result.nfe,
           "se_median_bpd": None, "se_max_bpd": None, "se_rms_bpd": None,
           "se_formula_bpd": bits(formula_se_nats(score, probe, probes), dim),
           "err_rms_bpd": float(bits(error.square().mean().sqrt(), dim)),
           "mean_se_bpd": None, "mean_err_bpd": bits(mean_error, dim), "mean_err_in_se": None,
           "median_abs_z": None, "wall_s": wall}
    if result.log_prob_se is not None:
        se = result.log_prob_se.double()
        row.update(se_median_bpd=float(bits(se.median(), dim)), se_max_bpd=float(bits(se.max(), dim)),
                   se_rms_bpd=float(bits(se.square().mean().sqrt(), dim)),
                   mean_se_bpd=bits(result.probe_standard_error, dim),
                   mean_err_in_se=mean_error / result.probe_standard_error,
                   median_abs_z=float((error / se).abs().median()))
    return row


def run_hutchinson(args, device) -> dict:
    dim, n = args.hutchinson_dim, args.hutchinson_n
    setup = {"dim": dim, "components": 8, "mean_norm": 3.0, "eig_range": [0.1, 1.0], "seed": args.seed}

    def problem(eig_range):
        score = make_mixture(dim, eig_range=eig_range, seed=args.seed)
        x = score.sample(n, 0.0, generator=torch.Generator(device=device).manual_seed(args.seed + 1),
                         dtype=torch.float64)
        return score, x, score.log_prob(x, 0.0)

    score, x, exact = problem(tuple(setup["eig_range"]))
    warm_up(score, x)
    rows = []
    for kind_index, probe in enumerate(("rademacher", "gaussian")):
        for probes in args.probes:
            print(f"# hutchinson: d={dim} {probe} probes={probes}", file=sys.stderr, flush=True)
            rows.append(hutchinson_row(score, x, exact, probes, probe, args, device,
                                       seed=args.seed + 1000 * (kind_index + 1) + probes))
    print(f"# hutchinson: d={dim} exact divergence", file=sys.stderr, flush=True)
    reference, wall = timed_likelihood(score, x, 1, device, prior="exact", divergence="exact",
                                       rtol=args.hutchinson_tol, atol=args.hutchinson_tol)
    error = bits((reference.log_prob - exact).abs(), dim)
    exact_row = {"divergence": "exact", "nfe": reference.nfe, "mean_err_bpd": float(error.mean()),
                 "max_err_bpd": float(error.max()), "wall_s": wall}
    columns = ["probes", "probe", "nfe", "se_median_bpd", "se_max_bpd", "se_rms_bpd", "se_formula_bpd", "err_rms_bpd",
               "mean_se_bpd", "mean_err_bpd", "mean_err_in_se", "median_abs_z", "wall_s"]
    print(f"\nhutchinson: d = {dim} mixture (K = 8, |μ| = 3, λ in [0.1, 1]), N = {n}, exact prior, "
          f"rtol = atol = {args.hutchinson_tol:g}; SE and errors in bits/dim\n")
    print(format_table(display(rows), columns))
    print("\nthe same with the exact divergence\n")
    print(format_table([exact_row], list(exact_row)))

    spread = []
    for low in args.spread:
        print(f"# hutchinson: eigenvalues in [{low:g}, 1], 8 rademacher probes", file=sys.stderr, flush=True)
        s, xs, es = problem((low, 1.0))
        spread.append({"eig_range": f"[{low:g}, 1]", **hutchinson_row(s, xs, es, max(args.probes), "rademacher",
                                                                       args, device, seed=args.seed + 7)})
    print(f"\nhutchinson, {max(args.probes)} rademacher probes, against the covariances' eigenvalue range\n")
    print(format_table(display(spread), ["eig_range", "nfe", "se_median_bpd", "se_max_bpd", "se_formula_bpd",
                                         "err_rms_bpd", "mean_se_bpd", "mean_err_in_se", "wall_s"]))

    eligible = [r for r in rows if r["probes"] <= 8 and r["se_max_bpd"] is not None]
    met = {"per_sample_median": any(r["se_median_bpd"] <= TARGET_SE_BPD for r in eligible),
           "per_sample_max": any(r["se_max_bpd"] <= TARGET_SE_BPD for r in eligible),
           "dataset_mean": any(r["mean_se_bpd"] <= TARGET_SE_BPD for r in eligible)}
    print(f"\ntarget SE <= {TARGET_SE_BPD:g} bits/dim with <= 8 probes: "
          + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in met.items()))
    return {**setup, "n": n, "rtol": args.hutchinson_tol, "atol": args.hutchinson_tol, "rows": rows,
            "exact_divergence": exact_row, "spread": spread, "target_se_bpd": TARGET_SE_BPD, "met": met}


# -- part 3: vectorized exact divergence against a Python loop ------------------------------

def loop_divergence(velocity, x):
    """The reference: d ``autograd.grad`` calls, row j giving ∂v_j/∂x_j for every sample."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = velocity(x)
        trace = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for j in range(x.shape[1]):
            (row,) = torch.autograd.grad(value[:, j].sum(), x, create_graph=False, retain_graph=True)
            trace = trace + row[:, j]
    return trace


def loop_case(label: str, score, dim: int, n: int, args, device) -> dict:
    x = torch.randn(n, dim, generator=torch.Generator(device=device).manual_seed(args.seed + dim), device=device,
                    dtype=torch.float64)

    def velocity(y):
        return -0.5 * (y + score(y, LOOP_TIME))

    closed_form = getattr(score, "score_and_divergence", None)

    def closed_form_divergence():  # the same trace from the score's own formula: ∇·v = -d/2 - ½ Δ log p
        return -0.5 * (dim + closed_form(x, LOOP_TIME)[1])

    with torch.no_grad():
        vectorized = velocity_divergence(velocity, x)[1]
        references = [loop_divergence(velocity, x)] + ([closed_form_divergence()] if closed_form else [])
    scale = float(vectorized.abs().max())
    difference = max(float((vectorized - reference).abs().max()) for reference in references) / scale
    if difference > RELATIVE_TRACE_TOLERANCE:
        raise AssertionError(f"{label} d={dim}: traces differ by {difference:.3g} (relative), "
                             f"more than {RELATIVE_TRACE_TOLERANCE:g}")
    candidates = {"vmap": lambda: velocity_divergence(velocity, x), "loop": lambda: loop_divergence(velocity, x)}
    if closed_form:
        candidates["closed_form"] = closed_form_divergence
    with torch.no_grad():
        times = harness.interleaved(candidates, args.repeats_loop, device)
    row = {"score": label, "dim": dim, "n": n, "loop_s": harness.median(times["loop"]),
           "vmap_s": harness.median(times["vmap"]), "vmap_speedup": harness.paired_ratio(times["loop"], times["vmap"]),
           "closed_form_s": None, "closed_form_speedup": None, "max_rel_diff": difference}
    if closed_form:
        row.update(closed_form_s=harness.median(times["closed_form"]),
                   closed_form_speedup=harness.paired_ratio(times["loop"], times["closed_form"]))
    return row


def run_loop(args, device) -> dict:
    rows = []
    torch.manual_seed(args.seed)
    model = EpsilonMLP(args.mlp_dim).double().to(device)
    torch.nn.init.normal_(model.output.weight, std=0.1)  # a fresh model's output layer is 0: so would its Jacobian be
    for n in args.loop_n:
        for dim in args.loop_dims:
            print(f"# loop: mixture d={dim}, N={n}", file=sys.stderr, flush=True)
            rows.append(loop_case("mixture", make_mixture(dim, seed=args.seed), dim, n, args, device))
        print(f"# loop: EpsilonMLP d={args.mlp_dim}, N={n}", file=sys.stderr, flush=True)
        rows.append(loop_case("EpsilonMLP(hidden=128, depth=3)", EpsilonScore(model), args.mlp_dim, n, args, device))
    print(f"\nexact divergence: torch.func (vjp + vmap over d, diffsde.likelihood.velocity_divergence) and the "
          f"mixture's closed form (score_and_divergence) against a Python loop of d autograd.grad calls, float64, "
          f"t = {LOOP_TIME}; speed-up = loop / candidate (median of {args.repeats_loop} interleaved rounds)\n")
    print(format_table(display(rows), list(rows[0])))
    return {"t": LOOP_TIME, "repeats": args.repeats_loop, "rows": rows}


# -- main -----------------------------------------------------------------------------------

def display(rows: list[dict]) -> list[dict]:
    return [{k: "-" if v is None else v for k, v in r.items()} for r in rows]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI scale (< 1 min): small N and d, few settings")
    parser.add_argument("--parts", nargs="+", default=["ring", "hutchinson", "loop"],
                        choices=["ring", "hutchinson", "loop"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/likelihood_<device>.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per ring setting (default 3)")
    parser.add_argument("--fixed-t-min", type=float, default=1e-3, help="t_min of the fixed-step log-SNR grids")
    args = parser.parse_args(argv)
    quick = args.quick
    args.repeats = args.repeats or (1 if quick else 3)
    args.ring_n = 200 if quick else 1000
    args.tolerances = [1e-2, 1e-4] if quick else TOLERANCES
    args.fixed_steps = {"rk4": [16], "midpoint": [32]} if quick else FIXED_STEPS
    args.normal_prior_tol = 1e-4 if quick else 1e-5
    args.hutchinson_dim = 8 if quick else 64
    args.hutchinson_n = 64 if quick else 256
    args.hutchinson_tol = 1e-4
    args.probes = [1, 4] if quick else [1, 2, 4, 8]
    args.spread = [0.1] if quick else [0.5, 0.1, 0.01]
    args.loop_dims = [2, 8] if quick else [2, 8, 32, 64]
    args.loop_n = [64] if quick else [16, 256, 2048]
    args.mlp_dim = 8 if quick else 64
    args.repeats_loop = 2 if quick else 5
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if not 0 < args.fixed_t_min < DEFAULT_T:
        parser.error(f"--fixed-t-min must be in (0, {DEFAULT_T:g})")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = harness.setup(args.device, args.threads)
    started = time.perf_counter()
    runners = {"ring": run_ring, "hutchinson": run_hutchinson, "loop": run_loop}
    results = {part: runners[part](args, device) for part in args.parts}
    payload = {"benchmark": "likelihood", "argv": sys.argv[1:] if argv is None else list(argv), "quick": args.quick,
               "machine": harness.machine_info(device), "packages": harness.package_versions(["torch", "torchdiffeq"]),
               "seed": args.seed, "wall_s": time.perf_counter() - started, **results}
    default = harness.RESULTS / f"likelihood_{device.type}{'_quick' if args.quick else ''}.json"
    path = harness.write_json(args.out or default, payload)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
