"""The ``diffsde`` command: a demo, training, sampling, and the toolkit's studies.

Subcommands (each has ``--help``, ``--seed``, ``--device``, ``--out``, ``--force``):

* ``demo`` (the main job): train a small ε-network on the 8-Gaussian ring, sample it with
  every method (and with the ring's exact score for reference), and write a report folder.
* ``train``: train an ε-network on a named toy and save a checkpoint.
* ``sample``: sample from a checkpoint or from a toy's exact score; write samples and a PNG.
* ``compare``: samplers side by side: error against score evaluations and wall time.
* ``converge``: error against step count with fitted orders (exact laws where possible).
* ``nll``: the data's NLL by the probability-flow ODE, by DDPM's bound and, where known, exactly.
* ``limit``: how fast ᾱ_i -> e^{-t_i} (DDPM's chain as the VP SDE's Euler steps, Song et al. 2021).

User errors (bad arguments, missing or corrupt files, an existing output folder without
``--force``, sizes that do not fit in memory) print one line on stderr and exit with status 2;
Ctrl-C exits with 130, SIGTERM with 143 and SIGHUP with 129, after the same cleanup. Every
output folder is written under a temporary name beside it and renamed into place at the
end, so an interrupted command never leaves a half-written folder; ``--force`` replaces only
a folder diffsde wrote (:class:`diffsde._output.OutputFolder`).

This module only parses arguments, calls the library (the demo is :func:`diffsde.demo.run_demo`
and :func:`diffsde.demo.write_report`; the studies are in :mod:`diffsde.studies`), prints and
exits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import __version__, demo, plots, toys
from . import _arguments as arg
from ._output import MANIFEST, OutputFolder, environment, run_toy, save_samples, write_json
from ._process import describe_stop, exit_status, stop_signals_raise
from ._resources import allocation_failure, check_fits, network_fits, samples_fit
from ._table import format_table
from .demo import DEMO_T_MIN, SMALL_SIZES, DemoSettings, judge, reference_samples, toy_train_config, \
    train_network
from .studies import DEFAULT_METHODS, MonteCarlo, alpha_bar_limit, compare_samplers, convergence_study, resolve_method
from .studies.likelihood import TABLE_COLUMNS, likelihood_reading, likelihood_study
from .samplers import NonFiniteSampleError, sample
from .schedules import SCHEDULES, TimeGrid
from .scores import EpsilonScore, GaussianMixtureScore
from .training import CheckpointError, TrainingDivergedError, load_checkpoint

__all__ = ["main", "build_parser", "CliError"]


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 2."""


USER_ERRORS = (CliError, ValueError, TypeError, OSError, CheckpointError, NonFiniteSampleError, NotImplementedError,
               TrainingDivergedError)


# --------------------------------------------------------------------------------------
# Shared options
# --------------------------------------------------------------------------------------

def _add_common(parser: argparse.ArgumentParser, out_default: str | None, out_help: str) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument("--seed", type=arg.int_between(0, arg.SEED_MAX), default=0,
                       help="seed of every random draw, 0 to 2^63 - 1 (default 0)")
    group.add_argument("--device", type=arg.device, default=torch.device("cpu"),
                       help="torch device: cpu (default), cuda, cuda:1, mps")
    group.add_argument("--out", type=Path, default=None if out_default is None else Path(out_default),
                       help=out_help + (f" (default ./{out_default})" if out_default else ""))
    group.add_argument("--force", action="store_true",
                       help="replace the output folder if it exists and diffsde wrote it (never anything else)")
    group.add_argument("--parents", action="store_true", help="create the output folder's missing parent folders")
    group.add_argument("--threads", type=arg.int_between(1, arg.CPU_COUNT, "this machine's CPU count"), default=1,
                       help=f"torch CPU threads, 1 to {arg.CPU_COUNT} (default 1: the networks are small, and on a "
                            f"busy 2-core machine two threads trained 10x slower than one)")
    group.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")


def _setup(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # any draw from torch's global generators is seeded too


def _generator(args: argparse.Namespace, offset: int) -> torch.Generator:
    """A generator on the run's device seeded with ``seed + offset``: one per random stream."""
    return torch.Generator(device=args.device).manual_seed(args.seed + offset)


# --------------------------------------------------------------------------------------
# Output folders, scores and training
# --------------------------------------------------------------------------------------

def _output_folder(args: argparse.Namespace, **record) -> OutputFolder:
    """The command's ``--out`` folder (its manifest records the command and ``record``); refused
    with one line (exit 2) when it exists without ``--force``, or with ``--force`` when diffsde did
    not write it, or when its parent is missing without ``--parents``."""
    return OutputFolder(args.out, args.force, parents=args.parents,
                        record={"command": " ".join(["diffsde", *args.argv]), **record})


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


def _add_network_options(parser: argparse.ArgumentParser, steps: int, batch: int, hidden: int, lr: float = 3e-3,
                         depth: int = 3) -> None:
    group = parser.add_argument_group("network and training")
    group.add_argument("--train-steps", type=arg.int_between(1), default=steps,
                       help=f"optimizer steps (default {steps})")
    group.add_argument("--batch-size", type=arg.int_between(1), default=batch, help=f"batch size (default {batch})")
    group.add_argument("--lr", type=arg.positive_float, default=lr,
                       help=f"peak learning rate (default {lr:.0e})".replace("e-0", "e-"))
    group.add_argument("--hidden", type=arg.int_between(1), default=hidden, help=f"width of the MLP (default {hidden})")
    group.add_argument("--depth", type=arg.int_between(1), default=depth, help=f"blocks of the MLP (default {depth})")


def _say(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Progress lines on stderr, unless ``--no-progress``."""
    return (lambda message: print(message, file=sys.stderr)) if args.progress else None


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------

def _cmd_demo(args: argparse.Namespace) -> int:
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

def _cmd_train(args: argparse.Namespace) -> int:
    toy = toys.make_toy(args.toy)
    config = toy_train_config(args.train_steps, args.batch_size, args.lr, args.seed, args.time_sampling)
    network_fits(toy.dim, args.hidden, args.depth, args.device)
    output = _output_folder(args, toy=args.toy)
    started = time.perf_counter()
    with output as folder:
        result = train_network(toy, config, hidden=args.hidden, depth=args.depth, device=args.device,
                               progress=args.progress, checkpoint_path=folder / "checkpoint.pt")
        wall = time.perf_counter() - started
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


def _cmd_sample(args: argparse.Namespace) -> int:
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
    with output as folder, torch.no_grad():
        x, info = sample(score, spec, grid=grid, n_samples=args.n_samples, generator=_generator(args, 0),
                         device=args.device, return_info=True, progress=args.progress, final=args.final,
                         prior=args.prior)
        save_samples(x, folder / f"samples.{args.format}")
        record = {"method": spec.label, "options": dict(spec.options), "schedule": f"{args.schedule}({args.steps})",
                  "grid": args.grid, "final": args.final, "prior": args.prior,
                  "steps": grid.n, "T": grid.T, "t_end": grid.t_min, "nfe": info["nfe"],
                  "wall_time_s": info["wall_time_s"], "n_samples": args.n_samples, "seed": args.seed,
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

def _cmd_compare(args: argparse.Namespace) -> int:
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
    with output as folder, torch.no_grad():
        result = compare_samplers(toy, score, args.methods, args.ns, t_min=args.t_min, prior=args.prior,
                                  monte_carlo=settings)
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


def _cmd_converge(args: argparse.Namespace) -> int:
    toy = toys.make_toy(args.toy)
    if not toy.has_exact_score:
        raise CliError(f"converge needs an exact score; toy {args.toy!r} has none "
                       f"(use gaussian, mixture, ring or grid)")
    samples_fit(args.n_samples, toy.dim, args.device)
    settings = MonteCarlo(n_samples=args.n_samples, repeats=args.repeats, seed=args.seed, device=args.device)
    output = _output_folder(args)
    with output as folder:
        result = convergence_study(toy, args.methods, args.ns, t_min=args.t_min, prior=args.prior,
                                   estimator=args.estimator, monte_carlo=settings)
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

def _cmd_nll(args: argparse.Namespace) -> int:
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

def _cmd_limit(args: argparse.Namespace) -> int:
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


# --------------------------------------------------------------------------------------
# The parser and the entry point
# --------------------------------------------------------------------------------------

# Step counts below 21 (where linear(n)'s last β = 20/n would reach 1) are valid: such coarse runs
# use the linear schedule's β(t) rate respaced to n steps, as diffusers' schedulers do.
_COARSE = "; counts below 21 use the linear rate respaced to n steps"


def build_parser() -> argparse.ArgumentParser:
    parser = arg.Parser(prog="diffsde", description=__doc__.split("\n\n")[0],
                        epilog="Run `diffsde demo` for the main job; `diffsde COMMAND --help` for each command.")
    parser.add_argument("--version", "-V", action="version", version=f"diffsde {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="what to run (each has --help)")
    toy_names = sorted(toys.TOYS)
    methods_help = "sampling methods (default: {})".format(" ".join(DEFAULT_METHODS))

    demo = sub.add_parser("demo", help="train on the 8-Gaussian ring, sample with every method, write a report",
                          description="The main job: train a small ε-network on the 8-Gaussian ring (CPU, about a "
                                      "minute), sample it with every method and with the ring's exact score, and "
                                      "write report.md, metrics.json, PNG figures and the checkpoint.")
    _add_common(demo, "diffsde-report", "report folder")
    d, small = DemoSettings(), SMALL_SIZES
    _add_network_options(demo, steps=d.train_steps, batch=d.batch_size, hidden=d.hidden, lr=d.lr, depth=d.depth)
    demo.add_argument("--n-samples", type=arg.int_between(16), default=d.n_samples,
                      help=f"samples per method (default {d.n_samples})")
    demo.add_argument("--steps", type=arg.int_between(1), default=d.steps,
                      help=f"sampling steps on the linear schedule (default {d.steps}{_COARSE})")
    demo.add_argument("--sweep", type=arg.int_between(1), nargs="+", default=list(d.sweep),
                      help=f"step counts of the error-vs-NFE sweep on uniform grids "
                           f"(default {' '.join(map(str, d.sweep))})")
    demo.add_argument("--small", action="store_true",
                      help=f"a tiny run for smoke tests: overrides sizes ({small['train_steps']} training steps, "
                           f"{small['n_samples']} samples, {small['steps']} steps)")
    demo.set_defaults(func=_cmd_demo)

    train_cmd = sub.add_parser("train", help="train an ε-network on a toy and save a checkpoint",
                               description="Train an EpsilonMLP on a named toy with DDPM's simple loss; write "
                                           "checkpoint.pt, train.json and loss.png.")
    _add_common(train_cmd, "diffsde-train", "folder for checkpoint.pt, train.json and loss.png")
    train_cmd.add_argument("--toy", choices=toy_names, default="ring", help="the data (default ring)")
    _add_network_options(train_cmd, steps=1500, batch=1024, hidden=128)
    train_cmd.add_argument("--time-sampling", choices=["grid", "uniform"], default="grid",
                           help="training times: the linear schedule's grid (default) or uniform")
    train_cmd.set_defaults(func=_cmd_train)

    sample_cmd = sub.add_parser("sample", help="sample from a checkpoint or a toy's exact score",
                                description="Sample with one method from a trained network (--checkpoint) or a "
                                            "toy's exact score (--toy NAME --exact); write the samples, "
                                            "sample.json (with metrics when the toy is known) and samples.png.")
    _add_common(sample_cmd, "diffsde-samples", "folder for the samples, sample.json and samples.png")
    sample_cmd.add_argument("--checkpoint", type=Path, help="a checkpoint file or a `diffsde train` folder")
    sample_cmd.add_argument("--toy", choices=toy_names,
                            help="the toy: its exact score with --exact; with --checkpoint, the truth to compare "
                                 "with, read from the checkpoint's run (a different --toy is refused)")
    sample_cmd.add_argument("--exact", action="store_true", help="use the toy's exact score")
    sample_cmd.add_argument("--method", type=arg.method, default="ddpm",
                            help="vp, ddpm (default), em, pc, ode-euler, ode-heun, ode-dopri5, ode-RK45, torchsde-euler, ddim, "
                                 "dpm-solver, unipc, dpm-solver-sde, edm, ... (print(diffsde.METHODS) lists all)")
    sample_cmd.add_argument("--schedule", choices=sorted(SCHEDULES), default="linear",
                            help="β schedule (default linear)")
    sample_cmd.add_argument("--steps", type=arg.int_between(1), default=250,
                            help=f"steps (default 250{_COARSE} with --schedule linear)")
    sample_cmd.add_argument("--t-min", type=arg.ou_time, default=DEMO_T_MIN, help="stop at this OU time (default 1e-3)")
    sample_cmd.add_argument("--grid", choices=["schedule", "log-snr", "karras"], default="schedule",
                            help="the schedule's grid (default), or --steps steps uniform in log-SNR or on Karras "
                                 "et al.'s σ grid (ρ = 7) from the schedule's T to --t-min")
    sample_cmd.add_argument("--final", choices=["stop", "denoise"], default="stop",
                            help="stop at --t-min (default) or finish with one denoising step to t = 0")
    sample_cmd.add_argument("--prior", choices=["normal", "tweedie", "exact"], default="normal",
                            help="start from N(0, I) (default), from N(0, I) moved onto p_T's mean by one score "
                                 "evaluation (tweedie), or from the exact p_T (exact scores only)")
    sample_cmd.add_argument("--n-samples", type=arg.int_between(1), default=2000, help="samples (default 2000)")
    sample_cmd.add_argument("--format", choices=["pt", "npy", "csv"], default="pt", help="samples file (default pt)")
    sample_cmd.set_defaults(func=_cmd_sample)

    compare = sub.add_parser("compare", help="samplers side by side: error against NFE and wall time",
                             description="Run several samplers at several step counts (diffsde.studies."
                                         "compare_samplers) with a toy's exact score or a checkpoint; print the "
                                         "table; write comparison.json/.csv and error_vs_nfe.png.")
    _add_common(compare, "diffsde-compare", "folder for the results")
    compare.add_argument("--toy", choices=toy_names,
                         help="target with an exact law (default ring; with --checkpoint, the toy of its run)")
    compare.add_argument("--checkpoint", type=Path, help="judge a trained network instead of the exact score")
    compare.add_argument("--methods", type=arg.method, nargs="+", default=list(DEFAULT_METHODS), help=methods_help)
    compare.add_argument("--ns", type=arg.int_between(1), nargs="+", default=[25, 50, 100],
                         help=f"step counts, increasing (default 25 50 100{_COARSE})")
    compare.add_argument("--t-min", type=arg.ou_time, default=DEMO_T_MIN, help="stop at this OU time (default 1e-3)")
    compare.add_argument("--prior", choices=["normal", "exact"], default="normal", help="start law (default normal)")
    compare.add_argument("--n-samples", type=arg.int_between(2), default=2000, help="samples per run (default 2000)")
    compare.add_argument("--repeats", type=arg.int_between(1), default=3, help="seeds per row (default 3)")
    compare.set_defaults(func=_cmd_compare)

    converge = sub.add_parser("converge", help="error against step count with fitted orders",
                              description="A convergence study (diffsde.studies.convergence_study) with a toy's "
                                          "exact score: exact output laws on Gaussian toys, Monte Carlo otherwise; "
                                          "print the rows and fitted orders; write convergence.json/.csv and "
                                          "convergence.png.")
    _add_common(converge, "diffsde-converge", "folder for the results")
    converge.add_argument("--toy", choices=toy_names, default="gaussian", help="target (default gaussian)")
    converge.add_argument("--methods", type=arg.method, nargs="+", default=list(DEFAULT_METHODS), help=methods_help)
    converge.add_argument("--ns", type=arg.int_between(1), nargs="+", default=[25, 50, 100, 200, 400],
                          help=f"at least three increasing step counts (default 25 50 100 200 400{_COARSE})")
    converge.add_argument("--t-min", type=arg.ou_time, default=0.0, help="stop at this OU time (default 0)")
    converge.add_argument("--prior", choices=["exact", "normal"], default="exact",
                          help="start from the exact p_T (default) or N(0, I)")
    converge.add_argument("--estimator", choices=["auto", "exact", "monte_carlo"], default="auto",
                          help="exact output laws (Gaussian toys), Monte Carlo samples, or auto: exact where "
                               "possible (default)")
    converge.add_argument("--n-samples", type=arg.int_between(2), default=2000,
                          help="Monte Carlo samples (default 2000)")
    converge.add_argument("--repeats", type=arg.int_between(1), default=3, help="Monte Carlo seeds (default 3)")
    converge.set_defaults(func=_cmd_converge)

    nll = sub.add_parser("nll", help="NLL by the probability-flow ODE, by DDPM's bound and exactly",
                         description="The data's negative log-likelihood (diffsde.studies.likelihood_study) by "
                                     "the probability-flow ODE per tolerance, by DDPM's variational bound per n "
                                     "(σ² = β and β̃) and, with an exact score, exactly; with a toy's exact score "
                                     "or a checkpoint. Print the table; write nll.json/.csv and nll.png.")
    _add_common(nll, "diffsde-nll", "folder for the results")
    nll.add_argument("--toy", choices=toy_names,
                     help="the data (default ring; with --checkpoint, the toy of its run)")
    nll.add_argument("--checkpoint", type=Path, help="measure a trained network instead of the exact score")
    nll.add_argument("--tolerances", type=arg.positive_float, nargs="+", default=[1e-3, 1e-4, 1e-5],
                     help="the ODE solver's rtol = atol, each in (0, 1) (default 1e-3 1e-4 1e-5)")
    nll.add_argument("--ns", type=arg.int_between(1), nargs="+", default=[10, 100, 1000],
                     help=f"the bound's step counts, increasing (default 10 100 1000{_COARSE})")
    nll.add_argument("--n-samples", type=arg.int_between(2), default=1000, help="data points (default 1000)")
    nll.add_argument("--divergence", choices=["auto", "exact", "hutchinson"], default="auto",
                     help="the velocity's divergence: exact trace, Hutchinson's estimate, or auto: exact up to "
                          "d = 32 (default)")
    nll.add_argument("--probes", type=arg.int_between(1), default=4,
                     help="Hutchinson probes per sample (default 4)")
    nll.add_argument("--prior", choices=["normal", "exact"], default="normal",
                     help="score x_T under N(0, I) (default) or the exact p_T (the toy's exact score only)")
    nll.add_argument("--t-min", type=arg.ou_time, default=None,
                     help="start the flow at this OU time (default 0 for an exact score, 1e-5 for a network)")
    nll.set_defaults(func=_cmd_nll)

    limit = sub.add_parser("limit", help="table of ᾱ_i against e^{-t_i}: the continuous-time limit",
                           description="How fast ᾱ_i -> e^{-t_i} as the schedule is refined (DDPM's chain as the "
                                       "VP SDE's Euler steps, Song et al. 2021). Exact, no randomness: --seed and "
                                       "--device are accepted and unused.")
    _add_common(limit, None, "also write limit.json and alpha_bar.png to this folder")
    limit.add_argument("--schedule", nargs="+", default=["linear"], choices=sorted(SCHEDULES),
                       help="β schedules to compare (default linear)")
    limit.add_argument("--n", nargs="+", type=arg.int_between(1), default=[100, 1000, 10000],
                       help=f"distinct step counts (default 100 1000 10000{_COARSE})")
    limit.set_defaults(func=_cmd_limit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``diffsde`` command; returns the exit status: 0 ok, 2 a user error (one line on stderr),
    130 / 143 / 129 stopped by Ctrl-C / SIGTERM / SIGHUP (after the same cleanup)."""
    command = "diffsde"
    try:
        with stop_signals_raise():
            parser = build_parser()
            try:
                args = parser.parse_args(argv)
            except SystemExit as exit_:  # --help, --version (0) or a bad argument (2, already one line)
                return exit_.code if isinstance(exit_.code, int) else 2
            if args.command is None:
                parser.print_help()
                return 0
            command = f"diffsde {args.command}"
            args.argv = list(sys.argv[1:] if argv is None else argv)
            return _run(args)
    except KeyboardInterrupt as stop:
        print(f"{command}: {describe_stop(stop)}", file=sys.stderr)
        return exit_status(stop)
    except (*USER_ERRORS, MemoryError, RuntimeError) as err:
        message = allocation_failure(err)
        if message is None and not isinstance(err, USER_ERRORS):
            raise  # not the user's doing: keep the traceback
        print(f"{command}: error: {message or ' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    """The command, with the caller's global RNG state and torch thread count restored after it."""
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]):
            _setup(args)
            return args.func(args)
    finally:
        torch.set_num_threads(threads)
