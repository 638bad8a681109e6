"""The demo as a library function: train, sample with every method, judge, and build the report.

:func:`run_demo` trains a small ε-network on the 8-Gaussian ring, samples it with every method
of :data:`DEMO_METHODS` on one grid (and with the ring's exact score, whose runs show the
discretization error alone), judges every run against exact samples of p_{t_end}, sweeps
error against score evaluations, and returns a :class:`DemoReport`: the table's rows, the
sweep's :class:`~diffsde.studies.StudyResult` objects, the figures (PNG bytes),
``metrics.json``'s record and ``report.md``'s text. It writes nothing unless it is given a
``checkpoint_path``; :func:`write_report` writes the report to a folder (``diffsde demo`` does
both, into an all-or-nothing output folder).

The same seed gives the same report: every random draw comes from a generator seeded with
``seed + offset`` (one offset per stream), and the network's initial weights from torch's
CPU generator seeded with ``seed``. Times are forward OU times t (the documentation's conventions page).

The grid (:func:`demo_grid`): ``steps`` >= 21 samples on ``BetaSchedule.linear(steps)`` cut at
t_min = 1e-3, ending at its first time at or above t_min (250 steps keep 248, ending at
t_end = 0.00112; the table reports both, ``n`` asked and ``steps`` taken). Fewer steps, where
``linear(steps)`` has β >= 1, sample on the studies' coarse linear grid: the linear rate's
1000-step schedule respaced to ``steps`` steps, as diffusers does, ending exactly at t_min
(:mod:`diffsde.studies.grids`).

The noise floor (the table's last row) is the same distances between independent sets of
exact samples and the reference set, as mean ± standard error over :data:`FLOOR_DRAWS` draws
(:func:`noise_floor`); the sweep's floor is :meth:`diffsde.studies.MonteCarlo`'s, also a mean
± standard error.

Also here, shared with the ``train``, ``sample`` and ``compare`` commands: the training recipe
that works on the toys (:func:`toy_train_config`, :func:`train_network`), the distances the
report's table shows (:func:`judge`, against :func:`reference_samples`) and a comparison's
error-against-NFE series (:func:`nfe_series`).
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from matplotlib.figure import Figure

from . import metrics as _metrics
from . import plots, toys
from ._checks import check_int, check_real
from ._io import PathLike, write_atomic, write_text_atomic
from ._output import environment, write_json
from ._table import format_table, format_value
from .studies import DEFAULT_METHODS, MonteCarlo, StudyResult, compare_samplers
from .studies.estimators import mean_and_se
from .studies.grids import LINEAR_MIN_STEPS, RESPACE_FROM, linear_schedule
from .nets import EpsilonMLP
from .samplers import featured_methods, resolve_method, sample
from .schedules import BetaSchedule, TimeGrid
from .scores import GaussianMixtureScore
from .training import TrainConfig, TrainResult, build_model, train

__all__ = ["DemoSettings", "DemoReport", "run_demo", "write_report", "judge", "reference_samples",
           "toy_train_config", "train_network", "nfe_series", "error_se_series", "method_series", "demo_grid",
           "noise_floor", "demo_table",
           "DEMO_METHODS", "SWEEP_METHODS", "DEMO_COLUMNS", "DEMO_T_MIN", "SMALL_SIZES", "FLOOR_DRAWS"]

# The demo's methods, read from the sampler registry: every featured variant in the table; in
# the coarse sweep the studies' default methods (own step loop, a declared weak order) that a coarse
# uniform grid serves: its β = Δt exceeds 1 at 5 steps, so not those that need β < 1; its ᾱ = e^{-t}
# is a normal number below one from T = 10.05 down to t_min = 1e-3, as the others need.
DEMO_METHODS = tuple(featured_methods())
SWEEP_METHODS = tuple(label for label in DEFAULT_METHODS
                      if "betas_below_one" not in resolve_method(label).grid_needs)

DEMO_T_MIN = 1e-3  # where every demo run stops: the ε-network's score is singular at t = 0
# n: the steps asked for; steps: those the grid takes above t_min (module docstring).
DEMO_COLUMNS = ["score", "method", "n", "steps", "nfe", "sw2", "energy", "mode_tv", "mean_err", "cov_err",
                "time_s"]
FLOOR_DRAWS = 8  # independent sets of exact samples behind the noise-floor row's mean ± standard error
# ``diffsde demo --small``: a run of a few seconds for smoke tests.
SMALL_SIZES = {"train_steps": 60, "batch_size": 128, "hidden": 32, "n_samples": 256, "steps": 25, "sweep": (5, 10)}

_PNG_DPI = 100  # plots.save_figure's resolution: the PNGs are those the plot functions write themselves
# Offsets of the random streams from the seed: each stream has its own generator.
_TRAIN, _TRUTH, _FLOOR, _PATHS, _SWEEP, _METHODS = 0, 1, 2, 3, 10, 100


# --------------------------------------------------------------------------------------
# Settings and report
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoSettings:
    """What a demo run does; the defaults are ``diffsde demo``'s (a minute on a CPU).

    Attributes:
        seed: seed of every random draw, >= 0.
        device: where to train and sample (a torch.device or its name).
        train_steps, batch_size, lr: the training run (Adam, peak learning rate ``lr`` > 0).
        hidden, depth: the :class:`~diffsde.nets.EpsilonMLP`'s width and number of blocks.
        n_samples: samples per method, >= 16.
        steps: n of the sampling grid, >= 1 (:func:`demo_grid`: ``BetaSchedule.linear(n)`` for
            n >= 21, the linear rate respaced to n steps below).
        sweep: the step counts of the error-against-NFE sweep on uniform grids, increasing.
    """

    seed: int = 0
    device: torch.device = torch.device("cpu")
    train_steps: int = 1500
    batch_size: int = 1024
    lr: float = 3e-3
    hidden: int = 128
    depth: int = 3
    n_samples: int = 2000
    steps: int = 250
    sweep: tuple[int, ...] = (5, 10, 20, 40, 80)

    def __post_init__(self):
        for name, minimum in (("seed", 0), ("train_steps", 1), ("batch_size", 1), ("hidden", 1), ("depth", 1),
                              ("n_samples", 16), ("steps", 1)):
            object.__setattr__(self, name, check_int(getattr(self, name), name, minimum))
        object.__setattr__(self, "lr", check_real(self.lr, "lr", 0.0, low_open=True))
        if isinstance(self.sweep, (str, bytes)) or not isinstance(self.sweep, Iterable):
            raise TypeError(f"sweep must be a sequence of step counts, got {type(self.sweep).__name__}")
        sweep = tuple(check_int(n, "sweep's step counts", 1) for n in self.sweep)
        if not sweep:
            raise ValueError("sweep must hold at least one step count")
        object.__setattr__(self, "sweep", sweep)
        object.__setattr__(self, "device", torch.device(self.device))

    def small(self) -> "DemoSettings":
        """These settings at ``diffsde demo --small``'s sizes (:data:`SMALL_SIZES`)."""
        return replace(self, **SMALL_SIZES)


@dataclass
class DemoReport:
    """What :func:`run_demo` returns; :func:`write_report` writes it.

    Attributes:
        settings: the run's :class:`DemoSettings`.
        rows: one dict per (score, method) run, learned score first, then the exact score, then
            the noise-floor row (:func:`noise_floor`: means over :data:`FLOOR_DRAWS` independent
            sets of exact samples, with ``<metric>_se`` standard errors and ``draws``); keys
            :data:`DEMO_COLUMNS` plus ``mmd``.
        table: the rows as the Markdown table the command prints (:func:`demo_table`).
        sweep: ``"learned"`` / ``"exact"`` -> the sweep's comparison (sliced W2 against exact samples).
        figures: PNG file name -> the figure rendered as PNG bytes, sorted by name. Rendered once
            in :func:`run_demo` (matplotlib's constrained layout moves things a little at each new
            draw of a Figure, so re-rendering one would not repeat its pixels).
        metrics: the ``metrics.json`` record (settings, rows, sweep, timings, environment).
        markdown: the text of ``report.md``.
        training: the training run (networks and per-step losses).
        train_s, total_s: wall times in seconds of the training and of the whole run.
        checkpoint_path: where the trained network's checkpoint was written, or None.
    """

    settings: DemoSettings
    rows: list[dict]
    table: str
    sweep: dict[str, StudyResult]
    figures: dict[str, bytes]
    metrics: dict
    markdown: str
    training: TrainResult
    train_s: float
    total_s: float
    checkpoint_path: Path | None = None


# --------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------

def run_demo(settings: DemoSettings | None = None, *, checkpoint_path: PathLike | None = None,
             progress: bool = False, log: Callable[[str], None] | None = None,
             command: str | None = None) -> DemoReport:
    """Train on the 8-Gaussian ring, sample with every method, judge the samples; return the report.

    Args:
        settings: sizes, seed and device (default ``DemoSettings()``, the command's defaults).
        checkpoint_path: where training saves the trained network's checkpoint (a new file in an
            existing folder); None (default) writes nothing at all.
        progress: show tqdm bars while training and sampling.
        log: called with a line of text at each stage (e.g. ``print`` to stderr); default silent.
        command: the command line to name at the top of the report (default: the settings).
    Returns:
        a :class:`DemoReport`.
    Raises:
        TypeError: settings is not a :class:`DemoSettings`.
        ValueError / FileExistsError: a bad ``checkpoint_path`` (checked before training).
    """
    settings = DemoSettings() if settings is None else settings
    if not isinstance(settings, DemoSettings):
        raise TypeError(f"settings must be a DemoSettings, got {type(settings).__name__}")
    say = log if log is not None else (lambda message: None)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left as it was
        torch.random.default_generator.manual_seed(settings.seed)
        return _run(settings, None if checkpoint_path is None else Path(checkpoint_path), progress, say, command,
                    started)


def _run(s: DemoSettings, checkpoint_path: Path | None, progress: bool, say: Callable[[str], None],
         command: str | None, started: float) -> DemoReport:
    def generator(offset: int) -> torch.Generator:
        return torch.Generator(device=s.device).manual_seed(s.seed + offset)

    toy = toys.ring()
    law = toy.exact_score
    config = toy_train_config(s.train_steps, s.batch_size, s.lr, s.seed)
    say(f"training EpsilonMLP(2, hidden={s.hidden}, depth={s.depth}) on the 8-Gaussian ring: "
        f"{config.steps} steps of {config.batch_size}")
    trained = train_network(toy, config, hidden=s.hidden, depth=s.depth, device=s.device, progress=progress,
                            checkpoint_path=checkpoint_path)
    train_s = time.perf_counter() - started
    scores = {"learned": trained.score(), "exact": law}
    grid = demo_grid(s.steps)
    t_end = grid.t_min
    truth = reference_samples(toy, s.n_samples, t_end, generator(_TRUTH))
    floor_row = {"score": "-", "method": "exact samples", "n": 0, "steps": 0, "nfe": 0,
                 **noise_floor(toy, truth, t_end, generator(_FLOOR)), "time_s": 0.0}
    rows, outputs = [], {}
    with torch.no_grad():
        for score_name, score in scores.items():
            for k, spec_text in enumerate(DEMO_METHODS):
                spec = resolve_method(spec_text)
                x, info = sample(score, spec, grid=grid, n_samples=s.n_samples,
                                 generator=generator(_METHODS + k), device=s.device, return_info=True,
                                 progress=progress)
                outputs[(score_name, spec.label)] = x
                rows.append({"score": score_name, "method": spec.label, "n": s.steps, "steps": grid.n,
                             "nfe": info["nfe"],
                             **judge(x, truth, law, t_end), "time_s": info["wall_time_s"]})
        _, trajectories = sample(scores["learned"], "ddpm", grid=grid, n_samples=48,
                                 generator=generator(_PATHS), device=s.device, return_path=True)
    rows.append(floor_row)
    sweep = _sweep(s, toy, scores, say)
    figures = _figures(s, toy, outputs, truth, trajectories, grid, trained.losses, sweep)
    total_s = time.perf_counter() - started
    table = demo_table(rows)
    run_settings = {"toy": repr(toy), "train_config": config.to_dict(), "hidden": s.hidden, "depth": s.depth,
                    "schedule": _schedule_name(s.steps), "grid_steps": grid.n, "t_end": t_end,
                    "n_samples": s.n_samples, "seed": s.seed, "device": str(s.device), "methods": list(DEMO_METHODS)}
    record = {"settings": run_settings, "columns": DEMO_COLUMNS, "rows": rows,
              "sweep": {name: result.to_dict() for name, result in sweep.items()},
              "timings_s": {"train": train_s, "total": total_s}, "environment": environment()}
    command = command if command is not None else f"diffsde.demo.run_demo({s!r})"
    markdown = _markdown(s, command, run_settings, table, sweep, list(figures), train_s, total_s,
                         checkpoint_path.name if checkpoint_path is not None else None)
    return DemoReport(s, rows, table, sweep, figures, record, markdown, trained, train_s, total_s, checkpoint_path)


def _sweep(s: DemoSettings, toy: toys.Toy, scores: dict, say: Callable[[str], None]) -> dict[str, StudyResult]:
    """Error against NFE for a few methods and step counts, learned and exact score
    (:func:`diffsde.studies.compare_samplers`: sliced W2 against exact samples of p_{t_end}).

    The sweep uses uniform grids from T = 10.05 to t_min with few steps: the linear schedule
    is already at the Monte Carlo noise floor of 2000 samples at its smallest n (21), so its
    discretization error cannot be seen; coarse uniform steps show it, down to the floor."""
    settings = MonteCarlo(n_samples=s.n_samples, repeats=1, seed=s.seed + _SWEEP, device=s.device,
                          dtype=torch.float32)
    results = {}
    with torch.no_grad():
        for name, score in scores.items():
            say(f"sweep: {', '.join(SWEEP_METHODS)} at n = {list(s.sweep)} with the {name} score")
            results[name] = compare_samplers(toy, score, SWEEP_METHODS, list(s.sweep), grid="uniform",
                                             t_min=DEMO_T_MIN, monte_carlo=settings)
    return results


def _figures(s: DemoSettings, toy: toys.Toy, outputs: dict, truth, trajectories, grid, losses,
             sweep: dict[str, StudyResult]) -> dict[str, bytes]:
    figures = {}
    for score_name in ("learned", "exact"):
        figures[f"samples_{score_name}.png"] = plots.samples_vs_truth(
            {label: x for (name, label), x in outputs.items() if name == score_name}, truth, max_points=1000,
            title=f"{score_name} score, {grid.n} steps (grey: exact samples)")
    figures["paths.png"] = plots.sample_paths(trajectories, grid.times, n_paths=48,
                                              title="ddpm with the learned score: paths from t = T to t_min")
    figures["densities.png"] = plots.marginal_densities(toy.exact_score, [0.0, 0.1, 0.5, 1.0, 3.0],
                                                        title="exact marginal densities p_t of the ring")
    figures["alpha_bar.png"] = plots.alpha_bar_vs_exp({f"linear, n = {s.steps}": linear_schedule(s.steps),
                                                       f"linear, n = {4 * s.steps}": linear_schedule(4 * s.steps)})
    series = {name: nfe_series(result) for name, result in sweep.items()}
    errors_se = {name: error_se_series(result) for name, result in sweep.items()}
    floor = sweep["exact"].meta["floor"]
    figures["error_vs_nfe.png"] = plots.error_vs_nfe(
        series["learned"], compare=series["exact"], compare_label="exact score", se=errors_se["learned"],
        compare_se=errors_se["exact"], floor=floor["mean"], floor_se=floor["se"],
        ylabel="sliced W2 to exact samples", title="error against score evaluations (solid: learned)")
    figures["loss.png"] = plots.training_loss(losses, title="training loss")
    return {name: _png(figure) for name, figure in sorted(figures.items())}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_PNG_DPI)
    return buffer.getvalue()


_CAPTIONS = {"samples_learned.png": "samples with the learned score (blue) over exact samples (grey)",
             "samples_exact.png": "samples with the exact score",
             "paths.png": "paths of the reverse process (ddpm, learned score)",
             "densities.png": "exact marginal densities p_t",
             "alpha_bar.png": "ᾱ_i against e^{-t_i} for the demo's schedule and a 4x finer one",
             "error_vs_nfe.png": "error against score evaluations",
             "loss.png": "training loss"}


def _markdown(s: DemoSettings, command: str, settings: dict, table: str, sweep: dict, figures: list[str],
              train_s: float, total_s: float, checkpoint: str | None) -> str:
    grid_note = (f"{settings['grid_steps']} of its {s.steps} steps, those above t_min = {DEMO_T_MIN:g}"
                 if s.steps >= LINEAR_MIN_STEPS else
                 f"the linear rate's {RESPACE_FROM} steps respaced to {s.steps}, as diffusers does, ending at t_min")
    lines = [
        "# diffsde demo report", "",
        f"Command: `{command}`. Took {total_s:.1f} s, of which {train_s:.1f} s training.", "",
        f"Data: the 8-Gaussian ring ({settings['toy']}). An `EpsilonMLP(2, hidden={s.hidden}, depth={s.depth})` "
        f"was trained for {settings['train_config']['steps']} steps of {settings['train_config']['batch_size']} "
        f"(DDPM's simple loss, times on the linear schedule's grid; EMA weights are used) and sampled with every "
        f"method on the grid of `{settings['schedule']}` ({grid_note}), from T = 10.05 down to t_end = "
        f"{settings['t_end']:.4g}, {s.n_samples} samples each. The same runs with the ring's exact score "
        f"show the discretization error alone.", "",
        "## Metrics against exact samples of p_{t_end}", "",
        table, "",
        "Columns: `sw2` sliced 2-Wasserstein distance (128 fixed directions); `energy` energy distance; "
        "`mode_tv` total "
        "variation between the fraction of samples nearest each mode and the true weights 1/8; `mean_err`, "
        "`cov_err` errors of the sample mean and covariance against the exact ones; `nfe` score evaluations "
        f"per sample; `n` the steps asked for, `steps` those taken above t_min; `time_s` sampling wall time. "
        f"The last row is the noise floor of each metric at this sample size: the same distances between "
        f"{FLOOR_DRAWS} independent sets of exact samples and the reference set, mean ± standard error. Each "
        f"method row is one draw, which scatters around the floor by the standard deviation, "
        f"√{FLOOR_DRAWS} × the standard error, so a row can fall below the floor's mean by about that much.", "",
        "## Error against score evaluations", "",
        f"Uniform grids of n steps from T = 10.05 to t_min = {DEMO_T_MIN:g}, {s.n_samples} samples from the "
        f"same N(0, I) draw for every row (diffsde.studies.compare_samplers).", "",
    ]
    for name, result in sweep.items():
        floor = result.meta["floor"]
        lines += [f"{name} score (sliced W2, noise floor {floor['mean']:.4g} ± {floor['se']:#.2g}, mean ± "
                  f"standard error over {result.meta['monte_carlo']['floor_draws']} draws):", "",
                  result.table(["method", "n", "nfe", "error", "wall_time_s"]), ""]
    lines += ["## Figures", ""]
    for name in figures:
        lines += [f"![{_CAPTIONS.get(name, name)}]({name})", ""]
    if checkpoint is not None:
        lines += [f"The trained network is in `{checkpoint}`: `diffsde sample --checkpoint <this folder>/{checkpoint} "
                  "--toy ring` samples it again.", ""]
    return "\n".join(lines)


def write_report(report: DemoReport, folder: PathLike) -> list[Path]:
    """Write the report's figures (PNG), ``metrics.json`` and ``report.md`` into ``folder``
    (created if missing; each file written atomically); returns the paths written.

    The checkpoint is not among them: training writes it, when :func:`run_demo` is given a
    ``checkpoint_path`` (``diffsde demo`` gives ``<folder>/checkpoint.pt``).
    """
    if not isinstance(report, DemoReport):
        raise TypeError(f"report must be a DemoReport, got {type(report).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [write_atomic(folder / name, lambda handle, png=png: handle.write(png))
               for name, png in report.figures.items()]
    written.append(write_json(folder / "metrics.json", report.metrics))
    written.append(write_text_atomic(folder / "report.md", report.markdown))
    return written


# --------------------------------------------------------------------------------------
# The grid, the noise floor and the table
# --------------------------------------------------------------------------------------

def demo_grid(steps: int, t_min: float = DEMO_T_MIN) -> TimeGrid:
    """The demo's sampling grid of ``steps`` steps of the linear rate, down to ``t_min`` (default
    :data:`DEMO_T_MIN`; module docstring), also the ``sample`` command's linear grid.

    steps >= 21: ``BetaSchedule.linear(steps).grid(t_min)``, ending at its first time at or above
    t_min (as the demo always did). steps <= 20, where ``linear(steps)`` has β >= 1:
    :func:`diffsde.studies.grids.linear_schedule` (the 1000-step linear schedule respaced to
    ``steps``, as diffusers does), ending exactly at t_min (its first time above 0 is far above
    the usual t_min, so the first rule would drop its last step).

    Raises:
        TypeError / ValueError: steps not an int >= 1, t_min not a time in [0, T).
    """
    steps = check_int(steps, "steps", 1)
    if steps >= LINEAR_MIN_STEPS:
        return BetaSchedule.linear(steps).grid(t_min=t_min)
    return linear_schedule(steps).grid(t_min, end_at_t_min=True)


def _schedule_name(steps: int) -> str:
    return f"linear({steps})" if steps >= LINEAR_MIN_STEPS else f"linear({RESPACE_FROM}).respaced({steps}, 'trailing')"


def noise_floor(toy: toys.Toy, truth: torch.Tensor, t: float, generator: torch.Generator,
                draws: int = FLOOR_DRAWS) -> dict:
    """The noise floor of :func:`judge`'s distances: each distance between ``draws`` independent
    sets of exact samples of p_t (as many as ``truth`` holds, drawn in turn from ``generator``) and
    ``truth``, as its mean (the metric's key) and standard error (``<key>_se``,
    :func:`diffsde.studies.estimators.mean_and_se`, as the studies' floors), plus ``draws``.
    A sampler's row against the same ``truth`` has this floor as its expected value when the
    sampler is exact.
    """
    draws = check_int(draws, "draws", 2)
    law = toy.exact_score if toy.has_exact_score else None
    values = [judge(reference_samples(toy, truth.shape[0], t, generator), truth, law, t) for _ in range(draws)]
    row: dict = {}
    for key in values[0]:
        mean, se = mean_and_se([value[key] for value in values])
        row[key], row[f"{key}_se"] = mean, se
    row["draws"] = draws
    return row


def demo_table(rows: list[dict]) -> str:
    """The report's Markdown table of ``rows`` (:data:`DEMO_COLUMNS`); a row carrying standard
    errors (``<column>_se``, the noise floor) shows those columns as ``mean ± se``."""
    shown = []
    for row in rows:
        cells = dict(row)
        for column in DEMO_COLUMNS:
            if f"{column}_se" in row:
                cells[column] = f"{format_value(row[column])} ± {row[f'{column}_se']:#.2g}"
        shown.append(cells)
    return format_table(shown, DEMO_COLUMNS)


# --------------------------------------------------------------------------------------
# Shared with the commands: training recipe, judging samples, NFE series
# --------------------------------------------------------------------------------------

def toy_train_config(steps: int, batch_size: int, lr: float, seed: int, time_sampling: str = "grid") -> TrainConfig:
    """The training configuration measured to work on the toys (diffsde.studies.recovery): times on
    the linear schedule's grid (or uniform), peak learning rate ``lr``, min(100, steps) warm-up steps."""
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(100, steps),
                       time_sampling=time_sampling, seed=seed)


def train_network(toy: toys.Toy, config: TrainConfig, *, hidden: int, depth: int, device: torch.device,
                  progress: bool = False, checkpoint_path: PathLike | None = None) -> TrainResult:
    """Train ``EpsilonMLP(toy.dim, hidden, depth)`` on ``toy`` with :func:`diffsde.train`.

    The initial weights come from torch's global CPU generator seeded with ``config.seed`` (the
    caller's generator is left as it was); training draws from a generator on ``device`` seeded
    with ``config.seed``. ``checkpoint_path`` (optional) is where the checkpoint is saved.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(config.seed)
        model = build_model(EpsilonMLP, {"dim": toy.dim, "hidden": hidden, "depth": depth})  # refused at once if it cannot fit
    generator = torch.Generator(device=device).manual_seed(config.seed + _TRAIN)
    return train(model, toy, config, device=device, generator=generator, progress=progress,
                 checkpoint_path=checkpoint_path)


def reference_samples(toy: toys.Toy, n: int, t: float, generator: torch.Generator) -> torch.Tensor:
    """n float32 samples of the toy's p_t (exact for closed-form toys; p_0 for sampled-only toys,
    whose p_t has no closed form: at the small t where samplers stop the two barely differ)."""
    if toy.has_exact_score:
        return toy.exact_score.sample(n, t, generator=generator, device=generator.device, dtype=torch.float32)
    return toy.sample(n, generator=generator, dtype=torch.float32)


def judge(x: torch.Tensor, truth: torch.Tensor, law: GaussianMixtureScore | None, t: float) -> dict:
    """Distances of samples x (n, d) from the target, computed in float64 on the CPU.

    Against ``truth`` samples (m, d): ``sw2`` sliced 2-Wasserstein (128 directions drawn from a
    CPU generator seeded with 0, the same for every call), ``mmd`` (MMD², median-heuristic RBF
    kernel), ``energy`` (energy distance). With the exact law p_t (``law``, at OU time ``t``) also
    ``mode_tv`` (total variation between nearest-mode weights and the mixture weights, for several
    modes), ``mean_err`` and ``cov_err`` (Euclidean and Frobenius errors of the sample mean and
    covariance). The distances are :mod:`diffsde.metrics`'; this is the report's choice of them.
    """
    x, truth = x.detach().double().cpu(), truth.detach().double().cpu()
    row = {"sw2": _metrics.sliced_wasserstein(x, truth, n_projections=128,
                                              generator=torch.Generator().manual_seed(0)),
           "mmd": _metrics.mmd(x, truth), "energy": _metrics.energy_distance(x, truth)}
    if law is not None:
        if law.n_components > 1:
            weights = _metrics.mode_weights(x, law.means)
            row["mode_tv"] = 0.5 * float((weights - law.weights).abs().sum())
        mean, cov = law.mean_and_cov(t)
        row["mean_err"] = _metrics.mean_error(x, mean)
        row["cov_err"] = _metrics.cov_error(x, cov)
    return row


def method_series(rows: list[dict], x: str) -> tuple[dict[str, tuple[list, list]], dict[str, list]]:
    """From a study's rows, in row order: method -> (``x`` values, errors), and method -> the
    rows' standard errors ``error_se`` (the ``se`` of :func:`diffsde.plots.error_vs_nfe` and
    :func:`diffsde.plots.convergence`); a method with a missing or non-finite one (a Monte Carlo
    error of a single repeat has none) is left out of the second: no error bars."""
    series: dict[str, tuple[list, list]] = {}
    se: dict[str, list] = {}
    for row in rows:
        xs, errors = series.setdefault(row["method"], ([], []))
        xs.append(row[x])
        errors.append(row["error"])
        se.setdefault(row["method"], []).append(row["error_se"])
    return series, {method: values for method, values in se.items()
                    if all(value is not None and math.isfinite(value) for value in values)}


def error_se_series(result: StudyResult) -> dict[str, list]:
    """method -> the rows' standard errors, for methods that have them all (:func:`method_series`)."""
    return method_series(result.rows, "nfe")[1]


def nfe_series(result: StudyResult) -> dict[str, tuple[list, list]]:
    """method -> (nfe, error) lists from a comparison's rows, in row order (for plots.error_vs_nfe)."""
    return method_series(result.rows, "nfe")[0]
