"""The ``diffsde`` command: a demo, training, sampling, and the toolkit's studies.

Subcommands (each has ``--help``, ``--seed``, ``--device``, ``--out``, ``--force``):

* ``demo`` (the main job): train a small ε-network on the 8-Gaussian ring, sample it with
  every method (and with the ring's exact score for reference), and write a report folder.
* ``train``: train an ε-network on a named toy and save a checkpoint.
* ``sample``: sample from a checkpoint or from a toy's exact score; write samples and a PNG.
* ``compare``: samplers side by side: error against score evaluations and wall time.
* ``converge``: error against step count with fitted orders (exact laws where possible).
* ``limit``: how fast ᾱ_i -> e^{-t_i} (seed 000).

User errors (bad arguments, missing or corrupt files, an existing output folder without
``--force``) print one line on stderr and exit with status 2; Ctrl-C exits with 130. Every
output folder is written under a temporary name beside it and renamed into place at the
end, so an interrupted command never leaves a half-written folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import metrics, plots, toys
from ._table import format_table
from .experiments import MonteCarlo, StudyResult, alpha_bar_limit, compare_samplers, convergence_study, \
    resolve_method
from .nets import EpsilonMLP
from .samplers import NonFiniteSampleError, sample
from .schedules import BetaSchedule
from .scores import EpsilonScore, GaussianMixtureScore
from .training import CheckpointError, TrainConfig, load_checkpoint, train

__all__ = ["main", "build_parser", "CliError"]


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 2."""


USER_ERRORS = (CliError, ValueError, TypeError, OSError, CheckpointError, NonFiniteSampleError, NotImplementedError,
               torch.OutOfMemoryError)
SCHEDULES = {"linear": BetaSchedule.linear, "cosine": BetaSchedule.cosine}
DEMO_METHODS = ("vp", "ddpm", "em", "ode-euler", "ode-heun", "torchsde-euler", "pc")
SWEEP_METHODS = ("ddpm", "em", "ode-euler", "ode-heun")
DEMO_T_MIN = 1e-3  # where every demo run stops: the ε-network's score is singular at t = 0


# --------------------------------------------------------------------------------------
# Argument types and shared options
# --------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is ONE line on stderr (no usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def _finite_float(what: str, allow_zero: bool) -> Callable[[str], float]:
    """A parser of finite floats > 0 (or >= 0 with ``allow_zero``); messages name ``what``."""
    bound = ">= 0" if allow_zero else "> 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}") from None
        if not (0 <= value if allow_zero else 0 < value) or not value < math.inf:
            raise argparse.ArgumentTypeError(f"expected a finite {what.split(' ', 1)[-1]} {bound}, got {text!r}")
        return value
    return parse


_positive_float = _finite_float("a number", allow_zero=False)
_time = _finite_float("an OU time", allow_zero=True)


def _device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"device must be cpu, cuda[:k] or mps, got {text!r}")
    return device


def _method(text: str) -> str:
    try:
        resolve_method(text)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _add_common(parser: argparse.ArgumentParser, out_default: str | None, out_help: str) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of every random draw (default 0)")
    group.add_argument("--device", type=_device, default=torch.device("cpu"),
                       help="torch device: cpu (default), cuda, cuda:1, mps")
    group.add_argument("--out", type=Path, default=None if out_default is None else Path(out_default),
                       help=out_help + (f" (default ./{out_default})" if out_default else ""))
    group.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    group.add_argument("--threads", type=_int_at_least(1), default=1,
                       help="torch CPU threads (default 1: the networks are small, and on a busy 2-core "
                            "machine two threads trained 10x slower than one)")
    group.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")


def _setup(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # initial weights of new networks


def _generator(args: argparse.Namespace, offset: int) -> torch.Generator:
    """A generator on the run's device seeded with ``seed + offset``: one per random stream."""
    return torch.Generator(device=args.device).manual_seed(args.seed + offset)


# --------------------------------------------------------------------------------------
# Output folders: all or nothing
# --------------------------------------------------------------------------------------

class OutputFolder:
    """Write a folder atomically: files go to a temporary folder beside ``target``, which is
    renamed to ``target`` when the block ends without an error (and deleted otherwise).

    An existing ``target`` is refused unless ``force``; with ``force`` it is replaced only
    once the new folder is complete. The check runs at construction, before any long work.
    """

    def __init__(self, target: Path, force: bool):
        self.target = Path(target).expanduser().absolute()
        if self.target.exists() or self.target.is_symlink():
            if not force:
                raise CliError(f"output folder {str(self.target)!r} already exists; pass --force to replace it "
                               f"or choose another --out")
            if not self.target.is_dir() or self.target.is_symlink():
                raise CliError(f"--out {str(self.target)!r} exists and is not a folder; refusing to replace it")
        self.work: Path | None = None

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".partial",
                                          dir=self.target.parent))
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(self.work, 0o777 & ~mask)  # mkdtemp makes it private; give it a normal folder's mode
        return self.work

    def __exit__(self, kind, error, trace) -> bool:
        if kind is not None:
            shutil.rmtree(self.work, ignore_errors=True)
            return False
        old = None
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".old", dir=self.target.parent))
            os.replace(self.target, old / "replaced")
        os.replace(self.work, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "torch_threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------
# Toys, scores and judging samples
# --------------------------------------------------------------------------------------

def _toy(name: str) -> toys.Toy:
    return toys.make_toy(name)


def _exact_law(toy: toys.Toy | None) -> GaussianMixtureScore | None:
    return toy.exact_score if toy is not None and toy.has_exact_score else None


def _truth(toy: toys.Toy, n: int, t: float, generator: torch.Generator) -> torch.Tensor:
    """n samples of the toy's p_t (exact for closed-form toys; p_0 for sampled-only toys, whose
    p_t has no closed form: at the small t where samplers stop the two barely differ)."""
    exact = _exact_law(toy)
    if exact is not None:
        return exact.sample(n, t, generator=generator, device=generator.device, dtype=torch.float32)
    return toy.sample(n, generator=generator, dtype=torch.float32)


def judge(x: torch.Tensor, truth: torch.Tensor, law: GaussianMixtureScore | None, t: float) -> dict:
    """Distances of samples x (n, d) from the target: ``sw2`` sliced 2-Wasserstein (128 fixed
    directions), ``mmd`` (MMD², median-heuristic RBF kernel), ``energy`` (energy distance), all
    against ``truth`` samples; with an exact law p_t also ``mode_tv`` (total variation between
    nearest-mode weights and the mixture weights, for several modes), ``mean_err`` and
    ``cov_err`` (Euclidean and Frobenius errors of the sample mean and covariance)."""
    x, truth = x.detach().double().cpu(), truth.detach().double().cpu()
    row = {"sw2": metrics.sliced_wasserstein(x, truth, n_projections=128,
                                             generator=torch.Generator().manual_seed(0)),
           "mmd": metrics.mmd(x, truth), "energy": metrics.energy_distance(x, truth)}
    if law is not None:
        if law.n_components > 1:
            weights = metrics.mode_weights(x, law.means)
            row["mode_tv"] = 0.5 * float((weights - law.weights).abs().sum())
        mean, cov = law.mean_and_cov(t)
        row["mean_err"] = metrics.mean_error(x, mean)
        row["cov_err"] = metrics.cov_error(x, cov)
    return row


def _load_score(checkpoint: Path, device: torch.device) -> tuple[EpsilonScore, dict]:
    """The EMA network of a checkpoint (a file, or a ``diffsde train`` folder) as a score."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoint.pt"
    loaded = load_checkpoint(path, map_location=device)
    model = loaded.build_model(ema=True, device=device).requires_grad_(False)
    info = {"checkpoint": str(path), "step": loaded.step, "model_config": loaded.model_config,
            "train_config": loaded.config.to_dict()}
    sidecar = path.parent / "train.json"
    if sidecar.is_file():
        try:
            info["toy"] = json.loads(sidecar.read_text(encoding="utf-8")).get("toy")
        except (json.JSONDecodeError, AttributeError):
            raise CliError(f"{str(sidecar)!r} is not valid JSON; pass --toy explicitly or remove it") from None
    return EpsilonScore(model), info


def _train_network(toy: toys.Toy, args: argparse.Namespace, config: TrainConfig, checkpoint: Path | None):
    model = EpsilonMLP(toy.dim, hidden=args.hidden, depth=args.depth)
    return train(model, toy, config, device=args.device, generator=_generator(args, 0), progress=args.progress,
                 checkpoint_path=checkpoint)


def _add_network_options(parser: argparse.ArgumentParser, steps: int, batch: int, hidden: int) -> None:
    group = parser.add_argument_group("network and training")
    group.add_argument("--train-steps", type=_int_at_least(1), default=steps, help=f"optimizer steps (default {steps})")
    group.add_argument("--batch-size", type=_int_at_least(1), default=batch, help=f"batch size (default {batch})")
    group.add_argument("--lr", type=_positive_float, default=3e-3, help="peak learning rate (default 3e-3)")
    group.add_argument("--hidden", type=_int_at_least(1), default=hidden, help=f"width of the MLP (default {hidden})")
    group.add_argument("--depth", type=_int_at_least(1), default=3, help="blocks of the MLP (default 3)")


def _train_config(args: argparse.Namespace, time_sampling: str = "grid") -> TrainConfig:
    """Measured to work on the toys (tests/toy_training.py): grid times, lr 3e-3, 100 warm-up steps."""
    return TrainConfig(steps=args.train_steps, batch_size=args.batch_size, lr=args.lr,
                       warmup_steps=min(100, args.train_steps), time_sampling=time_sampling, seed=args.seed)


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------

DEMO_COLUMNS = ["score", "method", "steps", "nfe", "sw2", "energy", "mode_tv", "mean_err", "cov_err", "time_s"]


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.small:
        args.train_steps, args.batch_size, args.hidden = 60, 128, 32
        args.n_samples, args.steps, args.sweep = 256, 25, [5, 10]
    output = OutputFolder(args.out, args.force)
    started = time.perf_counter()
    toy = toys.ring()
    law = toy.exact_score
    config = _train_config(args)
    schedule = BetaSchedule.linear(args.steps)
    with output as folder:
        _say(args, f"training EpsilonMLP(2, hidden={args.hidden}, depth={args.depth}) on the 8-Gaussian ring: "
                   f"{config.steps} steps of {config.batch_size}")
        trained = _train_network(toy, args, config, folder / "checkpoint.pt")
        train_s = time.perf_counter() - started
        scores = {"learned": trained.score(), "exact": law}
        grid = schedule.grid(t_min=DEMO_T_MIN)
        t_end = grid.t_min
        truth = _truth(toy, args.n_samples, t_end, _generator(args, 1))
        floor_row = {"score": "-", "method": "exact samples", "steps": 0, "nfe": 0,
                     **judge(_truth(toy, args.n_samples, t_end, _generator(args, 2)), truth, law, t_end),
                     "time_s": 0.0}
        rows, outputs = [], {}
        with torch.no_grad():
            for score_name, score in scores.items():
                for k, spec_text in enumerate(DEMO_METHODS):
                    spec = resolve_method(spec_text)
                    x, info = sample(score, spec.method, grid=grid, n_samples=args.n_samples,
                                     generator=_generator(args, 100 + k), device=args.device, return_info=True,
                                     progress=args.progress, **spec.options)
                    outputs[(score_name, spec.label)] = x
                    rows.append({"score": score_name, "method": spec.label, "steps": grid.n, "nfe": info["nfe"],
                                 **judge(x, truth, law, t_end), "time_s": info["wall_time_s"]})
            _, trajectories = sample(scores["learned"], "ddpm", grid=grid, n_samples=48,
                                     generator=_generator(args, 3), device=args.device, return_path=True)
        rows.append(floor_row)
        sweep = _demo_sweep(args, toy, scores)
        figures = _demo_figures(folder, args, toy, outputs, truth, trajectories, grid, trained.losses, sweep)
        total_s = time.perf_counter() - started
        table = format_table(rows, DEMO_COLUMNS)
        settings = {"toy": repr(toy), "train_config": config.to_dict(), "hidden": args.hidden, "depth": args.depth,
                    "schedule": f"linear({args.steps})", "t_end": t_end, "n_samples": args.n_samples,
                    "seed": args.seed, "device": str(args.device), "methods": list(DEMO_METHODS)}
        _write_json(folder / "metrics.json", {
            "settings": settings, "columns": DEMO_COLUMNS, "rows": rows,
            "sweep": {name: result.to_dict() for name, result in sweep.items()},
            "timings_s": {"train": train_s, "total": total_s}, "environment": _environment()})
        (folder / "report.md").write_text(_demo_report(args, settings, table, sweep, figures, train_s, total_s),
                                          encoding="utf-8")
    print(table)
    print(f"\nThe last row is the noise floor: two independent sets of {args.n_samples} exact samples.")
    print(f"report: {output.target} (report.md, metrics.json, {len(figures)} figures, checkpoint.pt); "
          f"took {total_s:.1f} s ({train_s:.1f} s training)")
    return 0


def _demo_sweep(args: argparse.Namespace, toy: toys.Toy, scores: dict) -> dict[str, StudyResult]:
    """Error against NFE for a few methods and step counts, learned and exact score
    (:func:`diffsde.experiments.compare_samplers`: sliced W2 against exact samples of p_{t_end}).

    The sweep uses uniform grids from T = 10.05 to t_min with few steps: the linear schedule
    is already at the Monte Carlo noise floor of 2000 samples at its smallest n (21), so its
    discretization error cannot be seen; coarse uniform steps show it, down to the floor."""
    settings = MonteCarlo(n_samples=args.n_samples, repeats=1, seed=args.seed + 10, device=args.device,
                          dtype=torch.float32)
    results = {}
    with torch.no_grad():
        for name, score in scores.items():
            _say(args, f"sweep: {', '.join(SWEEP_METHODS)} at n = {args.sweep} with the {name} score")
            results[name] = compare_samplers(toy, score, SWEEP_METHODS, args.sweep, grid="uniform",
                                             t_min=DEMO_T_MIN, monte_carlo=settings)
    return results


def _demo_figures(folder: Path, args, toy, outputs: dict, truth, trajectories, grid, losses, sweep) -> list[str]:
    law = toy.exact_score
    for score_name in ("learned", "exact"):
        plots.samples_vs_truth({label: x for (name, label), x in outputs.items() if name == score_name}, truth,
                               folder / f"samples_{score_name}.png", max_points=1000,
                               title=f"{score_name} score, {grid.n} steps (grey: exact samples)")
    plots.sample_paths(trajectories, grid.times, folder / "paths.png", n_paths=48,
                       title="ddpm with the learned score: paths from t = T to t_min")
    plots.marginal_densities(law, [0.0, 0.1, 0.5, 1.0, 3.0], folder / "densities.png",
                             title="exact marginal densities p_t of the ring")
    plots.alpha_bar_vs_exp({f"linear, n = {args.steps}": BetaSchedule.linear(args.steps),
                            f"linear, n = {4 * args.steps}": BetaSchedule.linear(4 * args.steps)},
                           folder / "alpha_bar.png")
    series = {name: _nfe_series(result) for name, result in sweep.items()}
    plots.error_vs_nfe(series["learned"], folder / "error_vs_nfe.png", compare=series["exact"],
                       compare_label="exact score", floor=sweep["exact"].meta["floor"]["mean"],
                       ylabel="sliced W2 to exact samples", title="error against score evaluations (solid: learned)")
    plots.training_loss(losses, folder / "loss.png", title="training loss")
    return sorted(path.name for path in folder.glob("*.png"))


def _nfe_series(result: StudyResult) -> dict[str, tuple[list, list]]:
    """method -> (nfe, error) from a comparison's rows."""
    series: dict[str, tuple[list, list]] = {}
    for row in result.rows:
        nfe, errors = series.setdefault(row["method"], ([], []))
        nfe.append(row["nfe"])
        errors.append(row["error"])
    return series


def _demo_report(args, settings: dict, table: str, sweep: dict, figures: list[str], train_s: float,
                 total_s: float) -> str:
    command = " ".join(["diffsde", *args.argv])
    lines = [
        "# diffsde demo report", "",
        f"Command: `{command}`. Took {total_s:.1f} s, of which {train_s:.1f} s training.", "",
        f"Data: the 8-Gaussian ring ({settings['toy']}). An `EpsilonMLP(2, hidden={args.hidden}, depth={args.depth})` "
        f"was trained for {settings['train_config']['steps']} steps of {settings['train_config']['batch_size']} "
        f"(DDPM's simple loss, times on the linear schedule's grid; EMA weights are used) and sampled with every "
        f"method on the grid of `BetaSchedule.linear({args.steps})`, from T = 10.05 down to t_end = "
        f"{settings['t_end']:.4g}, {args.n_samples} samples each. The same runs with the ring's exact score "
        f"show the discretization error alone.", "",
        "## Metrics against exact samples of p_{t_end}", "",
        table, "",
        "Columns: `sw2` sliced 2-Wasserstein distance (128 fixed directions); `energy` energy distance; "
        "`mode_tv` total "
        "variation between the fraction of samples nearest each mode and the true weights 1/8; `mean_err`, "
        "`cov_err` errors of the sample mean and covariance against the exact ones; `nfe` score evaluations "
        "per sample; `time_s` sampling wall time. The last row compares two independent sets of exact samples: "
        "the noise floor of each metric at this sample size.", "",
        "## Error against score evaluations", "",
        f"Uniform grids of n steps from T = 10.05 to t_min = {DEMO_T_MIN:g}, {args.n_samples} samples from the "
        f"same N(0, I) draw for every row (diffsde.experiments.compare_samplers).", "",
    ]
    for name, result in sweep.items():
        floor = result.meta["floor"]
        lines += [f"{name} score (sliced W2, noise floor {floor['mean']:.4g}):", "",
                  result.table(["method", "n", "nfe", "error", "wall_time_s"]), ""]
    lines += ["## Figures", ""]
    captions = {"samples_learned.png": "samples with the learned score (blue) over exact samples (grey)",
                "samples_exact.png": "samples with the exact score",
                "paths.png": "paths of the reverse process (ddpm, learned score)",
                "densities.png": "exact marginal densities p_t",
                "alpha_bar.png": "ᾱ_i against e^{-t_i} for the demo's schedule and a 4x finer one",
                "error_vs_nfe.png": "error against score evaluations",
                "loss.png": "training loss"}
    for name in figures:
        lines += [f"![{captions.get(name, name)}]({name})", ""]
    lines += ["The trained network is in `checkpoint.pt`: `diffsde sample --checkpoint <this folder>/checkpoint.pt "
              "--toy ring` samples it again.", ""]
    return "\n".join(lines)


def _say(args: argparse.Namespace, message: str) -> None:
    if args.progress:
        print(message, file=sys.stderr)


# --------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------

def _cmd_train(args: argparse.Namespace) -> int:
    toy = _toy(args.toy)
    config = _train_config(args, args.time_sampling)
    output = OutputFolder(args.out, args.force)
    started = time.perf_counter()
    with output as folder:
        result = _train_network(toy, args, config, folder / "checkpoint.pt")
        wall = time.perf_counter() - started
        tail = result.losses[-min(100, config.steps):]
        summary = {"toy": args.toy, "toy_params": toy.params, "model": result.model.config,
                   "train_config": config.to_dict(), "final_loss_mean_100": float(tail.mean()),
                   "wall_time_s": wall, "device": str(args.device), "environment": _environment()}
        _write_json(folder / "train.json", summary)
        plots.training_loss(result.losses, folder / "loss.png", title=f"training on {args.toy}")
    print(f"trained EpsilonMLP({toy.dim}, hidden={args.hidden}, depth={args.depth}) on {args.toy}: "
          f"{config.steps} steps in {wall:.1f} s, mean loss over the last {len(tail)} steps {float(tail.mean()):.4f}")
    print(f"checkpoint: {output.target / 'checkpoint.pt'}")
    return 0


# --------------------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------------------

def _cmd_sample(args: argparse.Namespace) -> int:
    spec = resolve_method(args.method)
    if (args.checkpoint is None) == (not args.exact):
        raise CliError("give exactly one of --checkpoint PATH (a trained network) or --exact (a toy's exact score)")
    if args.checkpoint is not None:
        score, source = _load_score(args.checkpoint, args.device)
        toy_name = args.toy or source.get("toy")
        toy = _toy(toy_name) if toy_name else None
        if toy is not None and toy.dim != score.dim:
            raise CliError(f"toy {toy_name!r} is {toy.dim}-D but the checkpoint's network is {score.dim}-D")
    else:
        if args.toy is None:
            raise CliError("--exact needs --toy NAME (one with an exact score: gaussian, mixture, ring, grid)")
        toy = _toy(args.toy)
        if not toy.has_exact_score:
            raise CliError(f"toy {args.toy!r} has no exact score; train a network on it (diffsde train --toy "
                           f"{args.toy}) and sample with --checkpoint")
        score, source = toy.exact_score, {"exact": repr(toy)}
    grid = SCHEDULES[args.schedule](args.steps).grid(t_min=args.t_min)
    output = OutputFolder(args.out, args.force)
    with output as folder, torch.no_grad():
        x, info = sample(score, spec.method, grid=grid, n_samples=args.n_samples, generator=_generator(args, 0),
                         device=args.device, return_info=True, progress=args.progress, **spec.options)
        _save_samples(x, folder / f"samples.{args.format}")
        record = {"method": spec.label, "options": spec.options, "schedule": f"{args.schedule}({args.steps})",
                  "steps": grid.n, "T": grid.T, "t_end": grid.t_min, "nfe": info["nfe"],
                  "wall_time_s": info["wall_time_s"], "n_samples": args.n_samples, "seed": args.seed,
                  "device": str(args.device), "source": source, "toy": toy.name if toy is not None else None}
        title = f"{spec.label}, {grid.n} steps"
        if toy is not None:
            truth = _truth(toy, args.n_samples, grid.t_min, _generator(args, 1))
            record["metrics"] = judge(x, truth, _exact_law(toy), grid.t_min)
            if x.shape[1] <= 2:
                plots.samples_vs_truth({spec.label: x}, truth, folder / "samples.png", title=title)
        elif x.shape[1] <= 2:
            plots.samples_vs_truth({spec.label: x}, None, folder / "samples.png", title=title)
        _write_json(folder / "sample.json", record)
    print(f"{args.n_samples} samples with {spec.label} in {grid.n} steps ({info['nfe']} score evaluations, "
          f"{info['wall_time_s']:.2f} s)")
    if "metrics" in record:
        print(format_table([record["metrics"]]))
    print(f"written: {output.target} (samples.{args.format}, sample.json"
          f"{', samples.png' if x.shape[1] <= 2 else ''})")
    return 0


def _save_samples(x: torch.Tensor, path: Path) -> None:
    values = x.detach().cpu()
    if path.suffix == ".pt":
        torch.save(values, path)
    elif path.suffix == ".npy":
        np.save(path, values.numpy())
    else:
        header = ",".join(f"x{j}" for j in range(values.shape[1]))
        np.savetxt(path, values.numpy(), delimiter=",", header=header, comments="")


# --------------------------------------------------------------------------------------
# compare and converge
# --------------------------------------------------------------------------------------

def _cmd_compare(args: argparse.Namespace) -> int:
    toy = _toy(args.toy)
    if not toy.has_exact_score:
        raise CliError(f"compare measures errors against an exact law; toy {args.toy!r} has none "
                       f"(use gaussian, mixture, ring or grid)")
    score = None
    if args.checkpoint is not None:
        score, _ = _load_score(args.checkpoint, args.device)
        if score.dim != toy.dim:
            raise CliError(f"toy {args.toy!r} is {toy.dim}-D but the checkpoint's network is {score.dim}-D")
    settings = MonteCarlo(n_samples=args.n_samples, repeats=args.repeats, seed=args.seed, device=args.device,
                          dtype=torch.float32)
    output = OutputFolder(args.out, args.force)
    with output as folder, torch.no_grad():
        result = compare_samplers(toy, score, args.methods, args.ns, t_min=args.t_min, prior=args.prior,
                                  monte_carlo=settings)
        result.to_json(folder / "comparison.json")
        result.to_csv(folder / "comparison.csv")
        plots.error_vs_nfe(_nfe_series(result), folder / "error_vs_nfe.png", floor=result.meta["floor"]["mean"],
                           ylabel="sliced W2 to exact samples",
                           title=f"{args.toy}, {'learned' if score is not None else 'exact'} score")
    print(result.table())
    print(f"noise floor (two exact sample sets): {result.meta['floor']['mean']:.4g}")
    print(f"written: {output.target} (comparison.json, comparison.csv, error_vs_nfe.png)")
    return 0


def _cmd_converge(args: argparse.Namespace) -> int:
    toy = _toy(args.toy)
    if not toy.has_exact_score:
        raise CliError(f"converge needs an exact score; toy {args.toy!r} has none "
                       f"(use gaussian, mixture, ring or grid)")
    settings = MonteCarlo(n_samples=args.n_samples, repeats=args.repeats, seed=args.seed, device=args.device)
    output = OutputFolder(args.out, args.force)
    with output as folder:
        result = convergence_study(toy, args.methods, args.ns, t_min=args.t_min, prior=args.prior,
                                   estimator=args.estimator, monte_carlo=settings)
        result.to_json(folder / "convergence.json")
        result.to_csv(folder / "convergence.csv")
        series = {}
        for row in result.rows:
            ns, errors = series.setdefault(row["method"], ([], []))
            if row["error"] > 0:
                ns.append(row["n"])
                errors.append(row["error"])
        orders = {row["method"]: row["order"] for row in result.summary}
        floor = result.meta["floor"]["mean"] if result.meta.get("floor") else None
        plots.convergence(series, folder / "convergence.png", orders=orders, floor=floor,
                          ylabel="W2 to the exact law", title=f"{args.toy}: error against steps")
    print(result.table())
    print()
    print(result.summary_table(["method", "estimator", "declared_order", "order", "order_ci_low", "order_ci_high",
                                "fit_points"]))
    print(f"written: {output.target} (convergence.json, convergence.csv, convergence.png)")
    return 0


# --------------------------------------------------------------------------------------
# limit
# --------------------------------------------------------------------------------------

def _cmd_limit(args: argparse.Namespace) -> int:
    rows, orders = alpha_bar_limit(args.schedule, args.n)
    print("ᾱ_i vs e^{-t_i} with t_i = Σ_{j<i} β_j (seed 000's time); exact times τ_i = -log ᾱ_i give 0")
    print(format_table(rows, ["schedule", "n", "T", "max_error", "n_times_error", "max_error_exact_times"]))
    for name, order in orders.items():
        print(f"fitted order ({name}): {order:.3f}")
    if args.out is not None:
        output = OutputFolder(args.out, args.force)
        with output as folder:
            _write_json(folder / "limit.json", {"rows": rows, "orders": orders})
            schedules = {f"{name}, n = {n}": SCHEDULES[name](n) for name in args.schedule for n in args.n}
            plots.alpha_bar_vs_exp(schedules, folder / "alpha_bar.png")
        print(f"written: {output.target} (limit.json, alpha_bar.png)")
    return 0


# --------------------------------------------------------------------------------------
# The parser and the entry point
# --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diffsde", description=__doc__.split("\n\n")[0],
                     epilog="Run `diffsde demo` for the main job; `diffsde COMMAND --help` for each command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    toy_names = sorted(toys.TOYS)

    demo = sub.add_parser("demo", help="train on the 8-Gaussian ring, sample with every method, write a report",
                          description="The main job: train a small ε-network on the 8-Gaussian ring (CPU, about a "
                                      "minute), sample it with every method and with the ring's exact score, and "
                                      "write report.md, metrics.json, PNG figures and the checkpoint.")
    _add_common(demo, "diffsde-report", "report folder")
    _add_network_options(demo, steps=1500, batch=1024, hidden=128)
    demo.add_argument("--n-samples", type=_int_at_least(16), default=2000, help="samples per method (default 2000)")
    demo.add_argument("--steps", type=_int_at_least(21), default=250,
                      help="sampling steps on the linear schedule (default 250; >= 21)")
    demo.add_argument("--sweep", type=_int_at_least(1), nargs="+", default=[5, 10, 20, 40, 80],
                      help="step counts of the error-vs-NFE sweep on uniform grids (default 5 10 20 40 80)")
    demo.add_argument("--small", action="store_true",
                      help="a tiny run for smoke tests: overrides sizes (60 training steps, 256 samples, 25 steps)")
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
                            help="the toy (its exact score with --exact; the truth to compare with otherwise, "
                                 "read from the training folder's train.json when not given)")
    sample_cmd.add_argument("--exact", action="store_true", help="use the toy's exact score")
    sample_cmd.add_argument("--method", type=_method, default="ddpm",
                            help="vp, ddpm (default), em, pc, ode-euler, ode-heun, ode-RK45, torchsde-euler, ...")
    sample_cmd.add_argument("--schedule", choices=sorted(SCHEDULES), default="linear",
                            help="β schedule (default linear)")
    sample_cmd.add_argument("--steps", type=_int_at_least(1), default=250, help="steps (default 250)")
    sample_cmd.add_argument("--t-min", type=_time, default=DEMO_T_MIN, help="stop at this OU time (default 1e-3)")
    sample_cmd.add_argument("--n-samples", type=_int_at_least(1), default=2000, help="samples (default 2000)")
    sample_cmd.add_argument("--format", choices=["pt", "npy", "csv"], default="pt", help="samples file (default pt)")
    sample_cmd.set_defaults(func=_cmd_sample)

    compare = sub.add_parser("compare", help="samplers side by side: error against NFE and wall time",
                             description="Run several samplers at several step counts (diffsde.experiments."
                                         "compare_samplers) with a toy's exact score or a checkpoint; print the "
                                         "table; write comparison.json/.csv and error_vs_nfe.png.")
    _add_common(compare, "diffsde-compare", "folder for the results")
    compare.add_argument("--toy", choices=toy_names, default="ring", help="target with an exact law (default ring)")
    compare.add_argument("--checkpoint", type=Path, help="judge a trained network instead of the exact score")
    compare.add_argument("--methods", type=_method, nargs="+", default=["vp", "ddpm", "em", "ode-euler", "ode-heun"])
    compare.add_argument("--ns", type=_int_at_least(21), nargs="+", default=[25, 50, 100],
                         help="step counts, increasing (default 25 50 100)")
    compare.add_argument("--t-min", type=_time, default=DEMO_T_MIN, help="stop at this OU time (default 1e-3)")
    compare.add_argument("--prior", choices=["normal", "exact"], default="normal", help="start law (default normal)")
    compare.add_argument("--n-samples", type=_int_at_least(2), default=2000, help="samples per run (default 2000)")
    compare.add_argument("--repeats", type=_int_at_least(1), default=3, help="seeds per row (default 3)")
    compare.set_defaults(func=_cmd_compare)

    converge = sub.add_parser("converge", help="error against step count with fitted orders",
                              description="A convergence study (diffsde.experiments.convergence_study) with a toy's "
                                          "exact score: exact output laws on Gaussian toys, Monte Carlo otherwise; "
                                          "print the rows and fitted orders; write convergence.json/.csv and "
                                          "convergence.png.")
    _add_common(converge, "diffsde-converge", "folder for the results")
    converge.add_argument("--toy", choices=toy_names, default="gaussian", help="target (default gaussian)")
    converge.add_argument("--methods", type=_method, nargs="+", default=["vp", "ddpm", "em", "ode-euler", "ode-heun"])
    converge.add_argument("--ns", type=_int_at_least(21), nargs="+", default=[25, 50, 100, 200, 400],
                          help="at least three increasing step counts (default 25 50 100 200 400)")
    converge.add_argument("--t-min", type=_time, default=0.0, help="stop at this OU time (default 0)")
    converge.add_argument("--prior", choices=["exact", "normal"], default="exact",
                          help="start from the exact p_T (default) or N(0, I)")
    converge.add_argument("--estimator", choices=["auto", "exact", "monte_carlo"], default="auto")
    converge.add_argument("--n-samples", type=_int_at_least(2), default=2000, help="Monte Carlo samples (default 2000)")
    converge.add_argument("--repeats", type=_int_at_least(1), default=3, help="Monte Carlo seeds (default 3)")
    converge.set_defaults(func=_cmd_converge)

    limit = sub.add_parser("limit", help="table of ᾱ_i against e^{-t_i}: the continuous-time limit",
                           description="How fast ᾱ_i -> e^{-t_i} as the schedule is refined (seed 000). Exact, "
                                       "no randomness: --seed and --device are accepted and unused.")
    _add_common(limit, None, "also write limit.json and alpha_bar.png to this folder")
    limit.add_argument("--schedule", nargs="+", default=["linear"], choices=sorted(SCHEDULES))
    limit.add_argument("--n", nargs="+", type=_int_at_least(21), default=[100, 1000, 10000])
    limit.set_defaults(func=_cmd_limit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``diffsde`` command; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad argument (2, already reported in one line)
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    args.argv = list(sys.argv[1:] if argv is None else argv)
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG and thread count are left as they were
            _setup(args)
            return args.func(args)
    except KeyboardInterrupt:
        print(f"diffsde {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"diffsde {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
