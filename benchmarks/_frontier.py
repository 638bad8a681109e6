"""The sampler frontier at 10-100 score evaluations: diffsde's configurations against the peers'.

``python benchmarks/bench_accuracy.py --frontier`` runs it. Two problems with known answers,
both started from N(0, I) at T = -log ᾱ_1000 ≈ 10.12 of DDPM's linear schedule (as the peers
start):

* ``gaussian``: p0 = N((1, -1), [[1.5, 0.9], [0.9, 1]]) (``diffsde.toys.gaussian()``); the
  error is the exact W2 of the output law to p0, for diffsde's methods by
  :func:`diffsde.exact_output_law` and for the peers by the same probe construction
  (``_peers.exact_law``): no Monte Carlo noise at all.
* ``ring``: the 8-Gaussian ring (radius 4, std 0.5) with its exact score; the error is the
  sliced W2 of N samples to N exact samples of p0 (``metrics.sliced_wasserstein``, 128
  directions), with its Monte Carlo floor (independent exact samples). The candidates on the
  ring are the configurations within 10x of the best on the Gaussian (diffsde: the best of each
  method and prior; the peers: every such configuration); the one reported at each NFE is chosen
  on a selection sample (N / 5, one seed) and its error measured on N samples and other seeds,
  for diffsde and the peers alike, so the minimum over configurations does not pick the
  luckiest noise.

A diffsde configuration is (method, grid, t_min, final, prior); an NFE budget B gives
n = (B - [final == "denoise"] - [prior == "tweedie"]) / score_evals steps (the Tweedie start,
:func:`diffsde.samplers.tweedie_start`, spends one evaluation moving the N(0, I) draws onto p_T's
mean; the peers start from N(0, I)). Grids: ``TimeGrid.log_snr`` (uniform in
λ), ``TimeGrid.karras`` (ρ = 7), ``TimeGrid.uniform``, and DDPM's schedule respaced ("trailing",
exact times, ending at t = 0).
"""

from __future__ import annotations

import itertools
import math
import sys
import time
import warnings

import torch

import _peers
from diffsde import BetaSchedule, TimeGrid, exact_output_law, metrics, resolve_method, sample, toys
from diffsde._table import format_table

FRONTIER_NFE = [10, 15, 20, 25, 50, 100]
METHOD_SPECS = {  # label -> registry spec
    "ddim": "ddim",
    "dpm-solver 2M": ("dpm-solver", {"order": 2}),
    "dpm-solver 3M": ("dpm-solver", {"order": 3}),
    "dpm-solver 3M taylor": ("dpm-solver", {"order": 3, "third_order": "taylor"}),
    "dpm-solver 3S": ("dpm-solver", {"order": 3, "multistep": False}),
    "unipc 2": ("unipc", {"order": 2}),
    "unipc 3": ("unipc", {"order": 3}),
    "dpm-solver-sde 2M": ("dpm-solver-sde", {"order": 2}),
    "dpm-solver-sde 3M": ("dpm-solver-sde", {"order": 3}),
    "edm heun": ("edm", {"solver": "heun"}),
    "edm heun churn 10": ("edm", {"solver": "heun", "churn": 10.0}),
    "ode-heun": "ode-heun",
    "torchsde-srk": "torchsde-srk",
    "ddpm": "ddpm",
}
GRIDS = ("log-snr", "karras", "uniform", "respaced")
T_MINS = (1e-4, 1e-3, 1e-2)
FINALS = ("stop", "denoise")
PRIORS = ("normal", "tweedie")  # "tweedie" spends one evaluation moving the N(0, I) draws onto p_T's mean
#: Rows of the issue's table (best of diffusers 0.42 / k-diffusion 0.1.1 as measured when it was filed).
ISSUE_PEER_BEST = {"gaussian": {10: 0.059, 15: 0.022, 20: 0.0085, 25: 0.0054, 100: 0.0024},
                   "ring": {10: 0.059, 15: 0.020, 20: 0.019, 25: 0.016}}


def make_grid(kind: str, T: float, t_min: float, n: int) -> TimeGrid:
    if kind == "log-snr":
        return TimeGrid.log_snr(T, t_min, n)
    if kind == "karras":
        return TimeGrid.karras(T, t_min, n, rho=7.0)
    if kind == "uniform":
        return TimeGrid.uniform(T, t_min, n)
    return BetaSchedule.linear(1000).respaced(n, "trailing").grid(exact_times=True)


def configurations(nfe: int, methods) -> list[dict]:
    """Every (method, grid, t_min, final) that spends at most ``nfe`` evaluations, at least one step."""
    out = []
    for label in methods:
        try:
            sampler = resolve_method(METHOD_SPECS[label])
        except ValueError:  # a method not registered in this version
            continue
        for grid, t_min, final, prior in itertools.product(GRIDS, T_MINS, FINALS, PRIORS):
            if grid == "respaced" and (t_min != T_MINS[0] or final == "denoise"):
                continue  # the respaced grid ends at t = 0 itself
            extra = (final == "denoise") + (prior == "tweedie")
            n = (nfe - extra) // sampler.score_evals
            if n < 1:
                continue
            out.append({"method": label, "grid": grid, "t_min": 0.0 if grid == "respaced" else t_min,
                        "final": final, "prior": prior, "steps": n, "nfe": n * sampler.score_evals + extra})
    return out


def _config_label(config: dict) -> str:
    t_min = "" if config["grid"] == "respaced" else f", t_min={config['t_min']:g}"
    prior = ", tweedie start" if config["prior"] == "tweedie" else ""
    return f"{config['method']} [{config['grid']}{t_min}, {config['final']}{prior}]"


def gaussian_errors(nfe: int, methods, T: float) -> tuple[list[dict], list[dict]]:
    score = toys.gaussian().exact_score
    target = score.mean_and_cov(0.0)
    ours, theirs = [], []
    for config in configurations(nfe, methods):
        grid = make_grid(config["grid"], T, config["t_min"], config["steps"])
        try:
            mean, cov = exact_output_law(METHOD_SPECS[config["method"]], score, grid=grid, final=config["final"],
                                         prior=config["prior"])
        except ValueError as error:  # e.g. a method that cannot end a grid at t = 0
            print(f"# skipped {_config_label(config)}: {error}", file=sys.stderr)
            continue
        ours.append({**config, "label": _config_label(config), "w2": metrics.gaussian_w2(mean, cov, *target)})
    for label, run in _peers.peers(nfe).items():
        mean, cov = _peers.exact_law(run, score, 2)
        theirs.append({"label": label, "nfe": nfe, "w2": metrics.gaussian_w2(mean, cov, *target)})
    return ours, theirs


class SlicedReference:
    """``metrics.sliced_wasserstein(x, reference)`` for many x of the reference's size, with the
    reference's sorted projections computed once: the same 128 directions (a CPU generator seeded
    with 0, normalised), the same equal-size formula ``mean_i (x_(i) - y_(i))²`` per direction."""

    def __init__(self, reference: torch.Tensor, n_projections: int = 128):
        directions = torch.randn(reference.shape[1], n_projections, generator=torch.Generator().manual_seed(0),
                                 dtype=torch.float64)
        self.directions = directions / torch.linalg.vector_norm(directions, dim=0, keepdim=True)
        self.sorted = (reference @ self.directions).T.sort(dim=1).values
        self.n = reference.shape[0]

    def __call__(self, x: torch.Tensor) -> float:
        if x.shape[0] != self.n:
            raise ValueError(f"need {self.n} samples, got {x.shape[0]}")
        projected = (x.double() @ self.directions).T.sort(dim=1).values
        return float((projected - self.sorted).square_().mean(1).mean().sqrt())


def ring_error(run_kind: str, what, nfe_config, score, reference, n_samples: int, seed: int, T: float) -> float:
    generator = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n_samples, 2, generator=generator, dtype=torch.float64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if run_kind == "ours":
            grid = make_grid(what["grid"], T, what["t_min"], what["steps"])
            x = sample(score, METHOD_SPECS[what["method"]], grid=grid, x_T=x_T, generator=generator,
                       final=what["final"], prior=what["prior"])
        else:
            x = what(score, x_T, _peers.generator_noise(generator))
    return reference(x)


RING_SEEDS = 3  # the chosen configurations' ring errors (and the floor) are means over this many seeds


def ring_candidates(ours: list[dict], limit_ratio: float = 10.0) -> list[dict]:
    """diffsde's ring candidates: the best Gaussian configuration of each (method, prior), where its
    Gaussian error is within ``limit_ratio`` of the best (the ring is not the Gaussian: the prior
    that wins there need not win here)."""
    best: dict = {}
    for r in ours:  # sorted by Gaussian error
        best.setdefault((r["method"], r["prior"]), r)
    return [r for r in best.values() if r["w2"] <= limit_ratio * ours[0]["w2"]]


def run_frontier(args) -> dict:
    """Both problems at every NFE; returns the rows and the per-NFE summary.

    The ring: candidates are chosen on a selection sample of N / 5 (seed s), and the chosen
    configuration of each side is measured on N samples, as the mean over ``RING_SEEDS`` seeds
    (s + 1, ...); the Monte Carlo floor is the mean over as many independent exact samples."""
    T = _peers.ou_T()
    methods = args.frontier_methods or list(METHOD_SPECS)
    summary, all_rows = [], []
    ring_score = toys.ring().exact_score

    def exact_sample(n, seed):
        return ring_score.sample(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    n_select = max(2, args.n_samples // 5)
    reference = SlicedReference(exact_sample(args.n_samples, 10 ** 6))
    selection_reference = SlicedReference(exact_sample(n_select, 10 ** 6 + 99))
    floors = [reference(exact_sample(args.n_samples, 10 ** 6 + 1 + k)) for k in range(RING_SEEDS)]
    for nfe in args.nfe:
        started = time.perf_counter()
        ours, theirs = gaussian_errors(nfe, methods, T)
        ours.sort(key=lambda r: r["w2"])
        theirs.sort(key=lambda r: r["w2"])
        best_of_each = list({r["method"]: r for r in reversed(ours)}.values())  # the best configuration per method
        all_rows += [{"problem": "gaussian", **r} for r in sorted(best_of_each, key=lambda r: r["w2"]) + theirs]
        row = {"nfe": nfe, "gaussian_ours": ours[0]["w2"] if ours else math.nan,
               "gaussian_ours_config": ours[0]["label"] if ours else "-",
               "gaussian_peer": theirs[0]["w2"] if theirs else math.nan,
               "gaussian_peer_config": theirs[0]["label"] if theirs else "-"}
        if "ring" in args.problems and ours and theirs:
            peers_now = _peers.peers(nfe)
            sides = {"ours": [(c["label"], "ours", c) for c in ring_candidates(ours)],
                     "peer": [(r["label"], "peer", peers_now[r["label"]])
                              for r in theirs if r["w2"] <= 10.0 * theirs[0]["w2"]]}
            for side, candidates in sides.items():
                selection = [(ring_error(kind, what, nfe, ring_score, selection_reference, n_select, args.seed, T),
                              label, kind, what) for label, kind, what in candidates]
                all_rows += [{"problem": "ring", "side": side, "label": label, "nfe": nfe,
                              "sw2_selection": error} for error, label, _, _ in selection]
                _, label, kind, what = min(selection, key=lambda item: item[0])
                errors = [ring_error(kind, what, nfe, ring_score, reference, args.n_samples, args.seed + 1 + k, T)
                          for k in range(RING_SEEDS)]
                row[f"ring_{side}"], row[f"ring_{side}_config"] = sum(errors) / len(errors), label
                row[f"ring_{side}_spread"] = max(errors) - min(errors)
        row["wall_s"] = time.perf_counter() - started
        summary.append(row)
        print(f"# frontier NFE {nfe}: done in {row['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return {"summary": summary, "rows": all_rows, "ring_floor": sum(floors) / len(floors),
            "ring_floor_range": [min(floors), max(floors)], "T": T}


def report(result: dict, args) -> str:
    low, high = result["ring_floor_range"]
    lines = [f"\nThe frontier, from N(0, I) at T = {result['T']:.4f}; Gaussian: exact W2 of the output law; "
             f"ring: sliced W2, N = {args.n_samples}, mean of {RING_SEEDS} seeds, Monte Carlo floor "
             f"{result['ring_floor']:.4f} (from {low:.4f} to {high:.4f} over {RING_SEEDS} exact samples)\n"]
    rows = []
    for row in result["summary"]:
        gaussian_ratio = row["gaussian_ours"] / row["gaussian_peer"]
        issue = ISSUE_PEER_BEST["gaussian"].get(row["nfe"])
        out = {"nfe": row["nfe"], "gaussian: diffsde": row["gaussian_ours"], "peer": row["gaussian_peer"],
               "ratio": gaussian_ratio, "issue's peer": issue if issue is not None else "-",
               "diffsde config": row["gaussian_ours_config"], "peer config": row["gaussian_peer_config"]}
        if "ring_ours" in row:
            out.update({"ring: diffsde": row["ring_ours"], "ring peer": row["ring_peer"],
                        "ring ratio": row["ring_ours"] / row["ring_peer"],
                        "ring diffsde config": row["ring_ours_config"], "ring peer config": row["ring_peer_config"]})
        rows.append(out)
    columns = list(rows[0]) if rows else []
    lines.append(format_table(rows, columns))
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Error vs NFE: diffsde's best configuration and the best peer, per problem (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffsde._io import write_atomic

    summary = result["summary"]
    panels = [("gaussian", "Gaussian: exact W2 of the output law")]
    if summary and "ring_ours" in summary[0]:
        panels.append(("ring", "8-Gaussian ring: sliced W2"))
    figure, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
    for axis, (problem, title) in zip(axes[0], panels):
        nfe = [row["nfe"] for row in summary]
        axis.plot(nfe, [row[f"{problem}_ours"] for row in summary], marker="o", label="diffsde (best configuration)")
        axis.plot(nfe, [row[f"{problem}_peer"] for row in summary], marker="s", label="best of diffusers / k-diffusion")
        if problem == "ring":
            axis.axhline(result["ring_floor"], color="grey", linestyle="--", label="Monte Carlo floor")
        axis.set(xscale="log", yscale="log", xlabel="score evaluations (NFE)", ylabel="error", title=title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=110))
    plt.close(figure)
