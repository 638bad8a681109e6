"""What each ``diffsde`` command does, given its parsed arguments: load or build the score, call
the library (:mod:`diffsde.demo`, :mod:`diffsde.training`, :mod:`diffsde.samplers`,
:mod:`diffsde.studies`), write the output folder, print. :mod:`diffsde.cli` parses the command
line, picks one of these and turns failures into one line and an exit status.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from . import demo, plots, toys
from ._output import MANIFEST, OutputFolder, environment, run_toy, save_samples, write_json
from ._resources import check_fits, network_fits, samples_fit
from ._table import format_table
from ._torchrun import output_folder
from .demo import DemoSettings, judge, reference_samples, toy_train_config, train_network
from .studies import MonteCarlo, alpha_bar_limit, compare_samplers, convergence_study, resolve_method
from .studies.likelihood import TABLE_COLUMNS, likelihood_reading, likelihood_study
from .distributed import sample as sharded_sample, world
from .schedules import SCHEDULES, TimeGrid
from .scores import EpsilonScore, GaussianMixtureScore
from .training import load_checkpoint

__all__ = ["demo_command", "train_command", "sample_command", "compare_command", "converge_command", "nll_command", "limit_command", "CliError"]


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 2."""


# --------------------------------------------------------------------------------------
# Random streams, output folders, scores
# --------------------------------------------------------------------------------------

def _generator(args: argparse.Namespace, offset: int) -> torch.Generator:
    """A generator on the run's device seeded with ``seed + offset``: one per random stream."""
    return torch.Generator(device=args.device).manual_seed(args.seed + offset)


# --------------------------------------------------------------------------------------
# Output folders, scores and training
# --------------------------------------------------------------------------------------

def _output_folder(args: argparse.Namespace, **record) -> OutputFolder:
    """The command's ``--out`` folder (its manifest records the command and ``record``); refused
    with one line (exit 2) when it exists without ``--force``, or with ``--force`` when diffsde did
    not write it, or when its parent is missing without ``--parents``. Under torchrun rank 0 writes
    it and the other ranks get a scratch folder (:func:`diffsde._torchrun.output_folder`)."""
    return output_folder(args.out, args.force, args.parents, {"command": " ".join(["diffsde", *args.argv]), **record})


def _exact_law(toy: toys.Toy | None) -> GaussianMixtureScore | None:
    return toy.exact_score if toy is not None and toy.has_exact_score else None


def _load_score(checkpoint: Path, device: torch.device) -> tuple[EpsilonScore, dict]:
    """The EMA network of a checkpoint (a file, or a ``diffsde train`` folder) as a score, and what
    is known of its run: ``toy`` and ``toy_from`` (:func:`diffsde._output.run_toy`) when the run says."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoint.pt"
    loaded = load_checkpoint(path, map_location=device)
    model = loaded.build_model(ema=True, device=device).requires_grad_(False)
    info = {"checkpoint": str(path), "step": loaded.step, "model_config": loaded.model_config,
            "train_config": loaded.config.to_dict()}
    info.update(run_toy(path))
    return EpsilonScore(model), info


def _checkpoint_toy(args: argparse.Namespace, info: dict, score: EpsilonScore, required: bool) -> toys.Toy | None:
    """The toy of a checkpoint's run (a contradicting ``--toy`` refused), else ``--toy``, else None
    (an error when ``required``); its dimension must be the network's."""
    name = info.get("toy")
    if name is not None and args.toy is not None and args.toy != name:
        raise CliError(f"--toy {args.toy} contradicts the checkpoint, which was trained on {name!r} (says "
                       f"{info['toy_from']}); drop --toy or pass --toy {name}")
    name = name or args.toy
    if name is None:
        if required:
            raise CliError(f"cannot tell which toy {info['checkpoint']!r} was trained on (no {MANIFEST} or "
                           f"train.json of its run beside it); pass --toy NAME")
        return None
    toy = toys.make_toy(name)
    if toy.dim != score.dim:
        raise CliError(f"toy {name!r} is {toy.dim}-D but the checkpoint's network is {score.dim}-D")
    return toy


def _say(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Progress lines on stderr, unless ``--no-progress``."""
    return (lambda message: print(message, file=sys.stderr)) if args.progress else None


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------

def demo_command(args: argparse.Namespace) -> int:
    settings = DemoSettings(seed=args.seed, device=args.device, train_steps=args.train_steps,
                            batch_size=args.batch_size, lr=args.lr, hidden=args.hidden, depth=args.depth,
                            n_samples=args.n_samples, steps=args.steps, sweep=tuple(args.sweep))
    if args.small:
        settings = settings.small()
    network_fits(2, settings.hidden, settings.depth, args.device)
    samples_fit(settings.n_samples, 2, args.device)
    output = _output_folder(args, toy="ring")  # run_demo trains on toys.ring(): `sample --checkpoint` reads it
    with output as folder:
        report = demo.run_demo(settings, checkpoint_path=folder / "checkpoint.pt", progress=args.progress,
                               log=_say(args), command=" ".join(["diffsde", *args.argv]))
        demo.write_report(report, folder)
    print(report.table)
    print(f"\nThe last row is the noise floor: sets of {settings.n_samples} exact samples against the reference "
          f"set, mean ± standard error over {demo.FLOOR_DRAWS} draws.")
    print(f"report: {output.target} (report.md, metrics.json, {len(report.figures)} figures, checkpoint.pt); "
          f"took {report.total_s:.1f} s ({report.train_s:.1f} s training)")
    return 0


# --------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------

def train_command(args: argparse.Namespace) -> int:
    toy = toys.make_toy(args.toy)
    config = toy_train_config(args.train_steps, args.batch_size, args.lr, args.seed, args.time_sampling)
    network_fits(toy.dim, args.hidden, args.depth, args.device)
    output = _output_folder(args, toy=args.toy)
    started = time.perf_counter()
    with output as folder:
        result = train_network(toy, config, hidden=args.hidden, depth=args.depth, device=args.device,
                               progress=args.progress, checkpoint_path=folder / "checkpoint.pt")
        wall = time.perf_counter() - started
        if not world().is_main:  # under torchrun rank 0 writes the checkpoint and the folder
            return 0
        tail = result.losses[-min(100, config.steps):]
        summary = {"toy": args.toy, "toy_params": toy.params, "model": result.model.config,
                   "train_config": config.to_dict(), "final_loss_mean_100": float(tail.mean()),
                   "wall_time_s": wall, "device": str(args.device), "environment": environment()}
        write_json(folder / "train.json", summary)
        plots.training_loss(result.losses, folder / "loss.png", title=f"training on {args.toy}")
    print(f"trained EpsilonMLP({toy.dim}, hidden={args.hidden}, depth={args.depth}) on {args.toy}: "
          f"{config.steps} steps in {wall:.1f} s, mean loss over the last {len(tail)} steps {float(tail.mean()):.4f}")
    print(f"checkpoint: {output.target / 'checkpoint.pt'}")
    return 0


# --------------------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------------------

def _sample_grid(args: argparse.Namespace) -> TimeGrid:
    """The grid of ``diffsde sample``: the schedule's (the linear one coarsened as the demo does), or
    --steps steps uniform in log-SNR or on Karras et al.'s σ grid, from the schedule's T to --t-min."""
    schedule_grid = (demo.demo_grid(args.steps, args.t_min) if args.schedule == "linear"
                     else SCHEDULES[args.schedule](args.steps).grid(t_min=args.t_min))
    if args.grid == "schedule":
        return schedule_grid
    if args.t_min <= 0:
        raise CliError(f"--grid {args.grid} needs --t-min > 0 (log-SNR is infinite at t = 0)")
    make = TimeGrid.log_snr if args.grid == "log-snr" else TimeGrid.karras
    return make(schedule_grid.T, args.t_min, args.steps)


def sample_command(args: argparse.Namespace) -> int:
    spec = resolve_method(args.method)
    if (args.checkpoint is None) == (not args.exact):
        raise CliError("give exactly one of --checkpoint PATH (a trained network) or --exact (a toy's exact score)")
    if args.checkpoint is not None:
        score, source = _load_score(args.checkpoint, args.device)
        toy = _checkpoint_toy(args, source, score, required=False)
    else:
        if args.toy is None:
            raise CliError("--exact needs --toy NAME (one with an exact score: gaussian, mixture, ring, grid)")
        toy = toys.make_toy(args.toy)
        if not toy.has_exact_score:
            raise CliError(f"toy {args.toy!r} has no exact score; train a network on it (diffsde train --toy "
                           f"{args.toy}) and sample with --checkpoint")
        score, source = toy.exact_score, {"exact": repr(toy)}
    samples_fit(args.n_samples, getattr(score, "dim", None) or 1, args.device)
    grid = _sample_grid(args)
    if args.final == "denoise" and grid.t_min == 0.0:
        raise CliError("--final denoise needs a grid ending at --t-min > 0")
    output = _output_folder(args)
    with torch.no_grad():  # every rank draws its chunks (torchrun); rank 0 gathers, measures and writes
        shard = sharded_sample(score, spec, grid=grid, n_samples=args.n_samples, seed=args.seed, device=args.device,
                               progress=args.progress, final=args.final, prior=args.prior)
        x, info = shard.gather(), shard.info
    if not world().is_main:
        return 0
    with output as folder, torch.no_grad():
        save_samples(x, folder / f"samples.{args.format}")
        record = {"method": spec.label, "options": dict(spec.options), "schedule": f"{args.schedule}({args.steps})",
                  "grid": args.grid, "final": args.final, "prior": args.prior,
                  "steps": grid.n, "T": grid.T, "t_end": grid.t_min, "nfe": info["nfe"],
                  "wall_time_s": info["wall_time_s"], "n_samples": args.n_samples, "seed": args.seed,
                  "world_size": info["world_size"],
                  "device": str(args.device), "source": source, "toy": toy.name if toy is not None else None}
        title = f"{spec.label}, {grid.n} steps"
        if toy is not None:
            truth = reference_samples(toy, args.n_samples, grid.t_min, _generator(args, 1))
            record["metrics"] = judge(x, truth, _exact_law(toy), grid.t_min)
            if x.shape[1] <= 2:
                plots.samples_vs_truth({spec.label: x}, truth, folder / "samples.png", title=title)
        elif x.shape[1] <= 2:
            plots.samples_vs_truth({spec.label: x}, None, folder / "samples.png", title=title)
        write_json(folder / "sample.json", record)
    print(f"{args.n_samples} samples with {spec.label} in {grid.n} steps ({info['nfe']} score evaluations, "
          f"{info['wall_time_s']:.2f} s)")
    if "metrics" in record:
        print(format_table([record["metrics"]]))
    print(f"written: {output.target} (samples.{args.format}, sample.json"
          f"{', samples.png' if x.shape[1] <= 2 else ''})")
    return 0


# --------------------------------------------------------------------------------------
# compare and converge
# --------------------------------------------------------------------------------------

def compare_command(args: argparse.Namespace) -> int:
    score = None
    if args.checkpoint is not None:
        score, source = _load_score(args.checkpoint, args.device)
        toy = _checkpoint_toy(args, source, score, required=True)
    else:
        toy = toys.make_toy(args.toy or "ring")
    if not toy.has_exact_score:
        raise CliError(f"compare measures errors against an exact law; toy {toy.name!r} has none "
                       f"(use gaussian, mixture, ring or grid)")
    samples_fit(args.n_samples, toy.dim, args.device)
    settings = MonteCarlo(n_samples=args.n_samples, repeats=args.repeats, seed=args.seed, device=args.device,
                          dtype=torch.float32)
    output = _output_folder(args)
    with torch.no_grad():  # under torchrun the cells are spread over the ranks; rank 0 writes
        result = compare_samplers(toy, score, args.methods, args.ns, t_min=args.t_min, prior=args.prior,
                                  monte_carlo=settings)
    if not world().is_main:
        return 0
    with output as folder:
        result.to_json(folder / "comparison.json")
        result.to_csv(folder / "comparison.csv")
        series, se = demo.method_series(result.rows, "nfe")
        floor = result.meta["floor"]
        plots.error_vs_nfe(series, folder / "error_vs_nfe.png", se=se, floor=floor["mean"], floor_se=floor["se"],
                           ylabel="sliced W2 to exact samples",
                           title=f"{toy.name}, {'learned' if score is not None else 'exact'} score")
    print(result.table())
    print(f"noise floor (exact samples against exact samples): {floor['mean']:.4g} ± {floor['se']:.2g} "
          f"(mean ± standard error)")
    print(f"written: {output.target} (comparison.json, comparison.csv, error_vs_nfe.png)")
    return 0


def converge_command(args: argparse.Namespace) -> int:
    toy = toys.make_toy(args.toy)
    if not toy.has_exact_score:
        raise CliError(f"converge needs an exact score; toy {args.toy!r} has none "
                       f"(use gaussian, mixture, ring or grid)")
    samples_fit(args.n_samples, toy.dim, args.device)
    settings = MonteCarlo(n_samples=args.n_samples, repeats=args.repeats, seed=args.seed, device=args.device)
    output = _output_folder(args)
    result = convergence_study(toy, args.methods, args.ns, t_min=args.t_min, prior=args.prior,
                               estimator=args.estimator, monte_carlo=settings)  # cells spread over torchrun's ranks
    if not world().is_main:
        return 0
    with output as folder:
        result.to_json(folder / "convergence.json")
        result.to_csv(folder / "convergence.csv")
        series, se = demo.method_series([row for row in result.rows if row["error"] > 0], "n")
        orders = {row["method"]: row["order"] for row in result.summary}
        floor = result.meta.get("floor") or {"mean": None, "se": None}
        plots.convergence(series, folder / "convergence.png", orders=orders, se=se, floor=floor["mean"],
                          floor_se=floor["se"], ylabel="W2 to the exact law", title=f"{args.toy}: error against steps")
    print(result.table())
    print()
    print(result.summary_table(["method", "estimator", "declared_order", "order", "order_ci_low", "order_ci_high",
                                "fit_points"]))
    print(f"written: {output.target} (convergence.json, convergence.csv, convergence.png)")
    return 0


# --------------------------------------------------------------------------------------
# nll
# --------------------------------------------------------------------------------------

def nll_command(args: argparse.Namespace) -> int:
    score = None
    if args.checkpoint is not None:
        if args.prior == "exact":
            raise CliError("--prior exact needs a toy's exact score (a network has no closed-form p_T); "
                           "use --prior normal with --checkpoint")
        score, source = _load_score(args.checkpoint, args.device)
        toy = _checkpoint_toy(args, source, score, required=True)
    else:
        toy = toys.make_toy(args.toy or "ring")
        if not toy.has_exact_score:
            raise CliError(f"toy {toy.name!r} has no exact score; measure a network trained on it with --checkpoint")
    samples_fit(args.n_samples, toy.dim, args.device)
    dtype = torch.float32 if args.device.type == "mps" else torch.float64  # MPS has no float64
    if score is not None:
        score.model.to(dtype)
    output = _output_folder(args)
    with output as folder:
        result = likelihood_study(toy, score, tolerances=args.tolerances, ns=args.ns, n_samples=args.n_samples,
                                  divergence=args.divergence, probes=args.probes, prior=args.prior, t_min=args.t_min,
                                  seed=args.seed, device=args.device, dtype=dtype)
        result.to_json(folder / "nll.json")
        result.to_csv(folder / "nll.csv")
        plots.nll_vs_nfe(result, folder / "nll.png",
                         title=f"{toy.name}, {'learned' if score is not None else 'exact'} score")
    print(result.table(TABLE_COLUMNS))
    print(likelihood_reading(result))
    print(f"written: {output.target} (nll.json, nll.csv, nll.png)")
    return 0


# --------------------------------------------------------------------------------------
# limit
# --------------------------------------------------------------------------------------

def limit_command(args: argparse.Namespace) -> int:
    largest = max(args.n)
    check_fits(4 * 8 * largest, torch.device("cpu"),
               f"--n {largest} (4 float64 arrays of {largest:,} values per schedule: β, ᾱ, t, τ)")
    output = _output_folder(args) if args.out is not None else None  # refused before any work
    rows, orders = alpha_bar_limit(args.schedule, args.n)
    print("ᾱ_i vs e^{-t_i} with t_i = Σ_{j<i} β_j (DDPM's chain as the VP SDE's Euler steps, Song et al. 2021); "
          "exact times τ_i = -log ᾱ_i give 0")
    print(format_table(rows, ["schedule", "n", "T", "max_error", "n_times_error", "max_error_exact_times"]))
    for name, order in orders.items():
        print(f"fitted order ({name}): {order:.3f}")
    if output is not None:
        with output as folder:
            write_json(folder / "limit.json", {"rows": rows, "orders": orders})
            schedules = {f"{name}, n = {n}": SCHEDULES[name](n) for name in args.schedule for n in args.n}
            plots.alpha_bar_vs_exp(schedules, folder / "alpha_bar.png")
        print(f"written: {output.target} (limit.json, alpha_bar.png)")
    return 0
