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

This module only parses arguments and turns failures into one line and an exit status; what each
command does is in :mod:`diffsde.commands` (which calls the library: the demo is
:func:`diffsde.demo.run_demo` and :func:`diffsde.demo.write_report`, the studies are in
:mod:`diffsde.studies`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from . import __version__, commands, toys
from . import _arguments as arg
from ._process import describe_stop, exit_status, stop_signals_raise
from ._resources import allocation_failure
from ._torchrun import let_rank_0_report, process_group, rank_label
from .commands import CliError
from .distributed.world import DEFAULT_TIMEOUT_S, DistributedError
from .demo import DEMO_T_MIN, SMALL_SIZES, DemoSettings
from .studies import DEFAULT_METHODS
from .samplers import NonFiniteSampleError
from .schedules import SCHEDULES
from .training import CheckpointError, TrainingDivergedError

__all__ = ["main", "build_parser", "CliError"]


USER_ERRORS = (CliError, ValueError, TypeError, OSError, CheckpointError, NonFiniteSampleError, NotImplementedError,
               TrainingDivergedError, DistributedError)


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
    group.add_argument("--dist-timeout", type=arg.positive_float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                       help=f"under torchrun: how long a rank waits for the others before it stops with an error "
                            f"(default {DEFAULT_TIMEOUT_S:g})")


def _setup(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # any draw from torch's global generators is seeded too


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
    demo.set_defaults(func=commands.demo_command)

    train_cmd = sub.add_parser("train", help="train an ε-network on a toy and save a checkpoint",
                               description="Train an EpsilonMLP on a named toy with DDPM's simple loss; write "
                                           "checkpoint.pt, train.json and loss.png.")
    _add_common(train_cmd, "diffsde-train", "folder for checkpoint.pt, train.json and loss.png")
    train_cmd.add_argument("--toy", choices=toy_names, default="ring", help="the data (default ring)")
    _add_network_options(train_cmd, steps=1500, batch=1024, hidden=128)
    train_cmd.add_argument("--time-sampling", choices=["grid", "uniform"], default="grid",
                           help="training times: the linear schedule's grid (default) or uniform")
    train_cmd.set_defaults(func=commands.train_command)

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
    sample_cmd.set_defaults(func=commands.sample_command)

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
    compare.set_defaults(func=commands.compare_command)

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
    converge.set_defaults(func=commands.converge_command)

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
    nll.set_defaults(func=commands.nll_command)

    limit = sub.add_parser("limit", help="table of ᾱ_i against e^{-t_i}: the continuous-time limit",
                           description="How fast ᾱ_i -> e^{-t_i} as the schedule is refined (DDPM's chain as the "
                                       "VP SDE's Euler steps, Song et al. 2021). Exact, no randomness: --seed and "
                                       "--device are accepted and unused.")
    _add_common(limit, None, "also write limit.json and alpha_bar.png to this folder")
    limit.add_argument("--schedule", nargs="+", default=["linear"], choices=sorted(SCHEDULES),
                       help="β schedules to compare (default linear)")
    limit.add_argument("--n", nargs="+", type=arg.int_between(1), default=[100, 1000, 10000],
                       help=f"distinct step counts (default 100 1000 10000{_COARSE})")
    limit.set_defaults(func=commands.limit_command)
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
            command = f"diffsde {args.command}{rank_label()}"
            args.argv = list(sys.argv[1:] if argv is None else argv)
            return _run(args)
    except KeyboardInterrupt as stop:
        print(f"{command}: {describe_stop(stop)}", file=sys.stderr)
        return exit_status(stop)
    except (*USER_ERRORS, MemoryError, RuntimeError) as err:
        message = allocation_failure(err)
        if message is None and not isinstance(err, USER_ERRORS):
            raise  # not the user's doing: keep the traceback
        let_rank_0_report()
        sys.stderr.write(f"{command}: error: {message or ' '.join(str(err).split()) or type(err).__name__}\n")
        return 2


def _run(args: argparse.Namespace) -> int:
    """The command, with the caller's global RNG state and torch thread count restored after it."""
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]), process_group(args):
            _setup(args)
            return args.func(args)
    finally:
        torch.set_num_threads(threads)
