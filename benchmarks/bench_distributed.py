"""Scale-out on torch.distributed: sampling throughput per number of ranks, the distributed path's
overhead in a world of one, and the gather-free metrics' memory per rank, all through torchrun.

Every measurement runs in workers that torchrun starts (``python -m torch.distributed.run
--nproc-per-node=K --master-port=FREE bench_distributed.py --worker SPEC --result FILE``), each rank
with ``--threads`` torch threads (default 1) and its process group made by
:func:`diffsde.distributed.init_from_env` (gloo on the CPU, NCCL with ``--device cuda``, one GPU per
rank). Workers time from a barrier before a call to a barrier after it, so process start, imports
and the group's rendezvous are excluded (reported apart: ``startup_s``, launch to the first barrier;
``launch_s``, the whole torchrun command). Rank 0 writes its results to a temporary JSON file that
this script reads.

Parts (``--parts``):

* ``scaling`` -- :func:`diffsde.distributed.sample` of N samples (method "em", the ring toy's exact
  score, ``--steps`` steps of the linear schedule: ``BetaSchedule.linear(steps)``, respaced from
  ``BetaSchedule.linear(1000)`` below 21 steps, as :func:`diffsde.studies.grids.linear_schedule`),
  launched with 1 rank and with ``--ranks`` ranks alternately for ``--repeats`` rounds (which goes
  first alternates too). Reported: seconds and samples/s per world size (medians), and the median of
  the per-round throughput ratios. After the timed call rank 0 gathers the set and fingerprints it
  (sha256 of its bytes, its float64 sum, first and last rows): every launch of one N must give the
  same bits whatever the world size (counter-based noise; :mod:`diffsde.samplers.chunks`).
* ``overhead`` -- in one 1-rank torchrun worker (a process group of one, so its collectives run),
  :func:`diffsde.distributed.sample` against :func:`diffsde.sample` with the same int seed (the same
  chunked counter-based path, no collectives) and against ``diffsde.sample`` with a
  ``torch.Generator`` (the one-batch sequential stream), interleaved (``_harness.interleaved``) for
  ``--overhead-rounds`` rounds at each of ``--overhead-sizes``; paired ratios (medians).
* ``metrics`` -- ``--ranks`` ranks share N = ``--metric-size`` samples x (d = 2, float32) drawn by
  :func:`diffsde.distributed.sample` (method "em", ``--metric-steps`` steps of the same schedule)
  and as many exact ring samples y (each rank draws its rows from its own generator). Then
  :mod:`diffsde.distributed.reductions`: ``moments``, ``mode_counts`` (the ring's 8 means),
  ``histogram`` (``--bins`` bins per dimension over the global range) and ``sliced_wasserstein``
  (``--projections`` directions, ~4 s each at N = 1e7 on this machine). Per rank: the peak resident
  set of the whole process (``getrusage`` ``ru_maxrss``: everything the rank ever held -- Python and
  torch, x, y, the sampling's and the metrics' temporaries), its rise over the baseline taken after
  imports and the group's start, and per metric the wall time and the peak resident set during it
  (``VmHWM`` after resetting it through ``/proc/self/clear_refs``, Linux) above ``VmRSS`` before it.

Targets (the issue's): ``--ranks`` 2 ranks >= 1.8x one rank's samples/s at N = 1e6; the distributed
path at world size 1 within 2% of ``diffsde.sample``; peak RSS per rank <= 1 GiB for the metrics at
N = 1e7 over 2 ranks. With ``--device cuda`` and no GPU (or fewer than ``--ranks``) the parts that
need them are skipped with a message.

    python benchmarks/bench_distributed.py                # all parts: N = 1e6, 200 steps, 3 rounds; metrics at 1e7
    python benchmarks/bench_distributed.py --quick        # smoke scale (< 1 min)
    python benchmarks/bench_distributed.py --parts scaling --sizes 100000 1000000 --repeats 5
    python benchmarks/bench_distributed.py --parts metrics --projections 8

Writes ``benchmarks/results/distributed_<device>.json`` (``distributed_<device>_quick.json`` with
``--quick``).
"""

from __future__ import annotations

import time

_PROCESS_START = time.time()  # before the heavy imports: the workers report their import time from here

import argparse  # noqa: E402
import ctypes  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import _harness as harness  # noqa: E402
import diffsde  # noqa: E402
import diffsde.distributed as dist  # noqa: E402
from diffsde import toys  # noqa: E402
from diffsde._table import format_table  # noqa: E402
from diffsde.distributed import reductions  # noqa: E402
from diffsde.samplers.chunks import CHUNK_ROWS  # noqa: E402
from diffsde.studies.grids import LINEAR_MIN_STEPS, RESPACE_FROM, linear_schedule  # noqa: E402

_IMPORTED = time.time()

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parent.parent
PARTS = ("scaling", "overhead", "metrics")
METHOD = "em"
SCALING_TARGET, OVERHEAD_TARGET, RSS_TARGET_MIB = 1.8, 1.02, 1024.0


def schedule_label(steps: int) -> str:
    if steps >= LINEAR_MIN_STEPS:
        return f"BetaSchedule.linear({steps})"
    return f"BetaSchedule.linear({RESPACE_FROM}).respaced({steps}, 'trailing')"


def ring_score():
    return toys.make_toy("ring").exact_score


# -- memory of this process (Linux) -------------------------------------------------------

def max_rss_mib() -> float:
    """The process's peak resident set since it started (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2 ** 10
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current resident set (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def trim_heap() -> None:
    """Hand glibc's free heap pages back to the kernel (``malloc_trim(0)``), where there is glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# -- workers (inside torchrun) ------------------------------------------------------------

def fingerprint(x: torch.Tensor) -> dict:
    """sha256 of the samples' bytes, their float64 sum, first and last rows."""
    x = x.detach().cpu().contiguous()
    return {"shape": list(x.shape), "sha256": hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16],
            "sum_f64": float(x.double().sum()), "first_row": x[0].tolist(), "last_row": x[-1].tolist()}


def timed(fn, device: torch.device) -> tuple[object, float]:
    """(fn(), wall seconds) between a barrier before the call and one after it, on every rank."""
    dist.barrier("the start of a timed call")
    harness.synchronize(device)
    start = time.perf_counter()
    value = fn()
    harness.synchronize(device)
    dist.barrier("the end of a timed call")
    return value, time.perf_counter() - start


def scaling_worker(spec: dict, device: torch.device) -> dict:
    current = dist.world()
    score, schedule, n = ring_score(), linear_schedule(spec["steps"]), spec["n"]

    def run(rows: int):
        return dist.sample(score, METHOD, schedule, n_samples=rows, seed=spec["seed"], device=device)

    dist.barrier("the start-up")
    ready = time.time()
    run(min(n, CHUNK_ROWS * current.size))  # warm-up: lazy initialisation, caches, the allocator
    sharded, seconds = timed(lambda: run(n), device)
    gathered = sharded.gather()
    starts = dist.all_gather_objects((ready - spec["launched_at"], _IMPORTED - _PROCESS_START), "the start-up times")
    rows = dist.all_gather_objects(len(sharded.rows), "the rows per rank")
    return {"world_size": current.size, "N": n, "seconds": seconds, "samples_per_s": n / seconds,
            "nfe": sharded.info["nfe"], "rows_per_rank": rows, "chunks": sharded.info["chunks"],
            "startup_s": max(part[0] for part in starts), "import_s": max(part[1] for part in starts),
            "fingerprint": fingerprint(gathered) if current.is_main else None}


def overhead_worker(spec: dict, device: torch.device) -> dict:
    score, schedule, seed = ring_score(), linear_schedule(spec["steps"]), spec["seed"]
    rows = []
    for n in spec["sizes"]:
        def distributed():
            return dist.sample(score, METHOD, schedule, n_samples=n, seed=seed, device=device).x

        def chunked():
            return diffsde.sample(score, METHOD, schedule, n_samples=n, generator=seed, device=device)

        def generator():
            return diffsde.sample(score, METHOD, schedule, n_samples=n, device=device,
                                  generator=torch.Generator(device).manual_seed(seed))

        same_bits = bool(torch.equal(distributed(), chunked()))
        one = harness.time_call(chunked, device)  # calls per timed sample: enough for ~0.2 s
        calls = max(1, min(100, int(0.2 / max(one, 1e-6))))

        def repeated(fn):
            return lambda: [fn() for _ in range(calls)]

        times = harness.interleaved({name: repeated(fn) for name, fn in
                                     (("distributed", distributed), ("chunked", chunked), ("generator", generator))},
                                    spec["rounds"], device)
        rows.append({"N": n, "calls_per_sample": calls, "rounds": spec["rounds"],
                     "distributed_ms": harness.median(times["distributed"]) / calls * 1e3,
                     "chunked_ms": harness.median(times["chunked"]) / calls * 1e3,
                     "generator_ms": harness.median(times["generator"]) / calls * 1e3,
                     "distributed_vs_chunked": harness.paired_ratio(times["distributed"], times["chunked"]),
                     "chunked_vs_generator": harness.paired_ratio(times["chunked"], times["generator"]),
                     "same_bits": same_bits, "times_s": times})
    return {"world_size": dist.world().size, "rows": rows}


def metrics_worker(spec: dict, device: torch.device) -> dict:
    current = dist.world()
    toy = toys.make_toy("ring")
    score, n = toy.exact_score, spec["n"]
    cuda = device.type == "cuda"
    dist.barrier("the start-up")
    trim_heap()
    baseline = {"max_rss_mib": max_rss_mib(), "rss_mib": _status_mib("VmRSS")}
    sharded, sample_s = timed(lambda: dist.sample(score, METHOD, linear_schedule(spec["steps"]), n_samples=n,
                                                  seed=spec["seed"], device=device), device)
    x = sharded.x
    del sharded
    gen = torch.Generator(device).manual_seed(spec["seed"] + 1 + current.rank)
    y = toy.sample(x.shape[0], generator=gen, device=device, dtype=x.dtype)
    after_data = {"max_rss_mib": max_rss_mib(), "rss_mib": _status_mib("VmRSS")}
    means = score.means.to(device)
    metrics = {
        "moments": lambda: reductions.moments(x),
        "mode_counts": lambda: reductions.mode_counts(x, means),
        "histogram": lambda: reductions.histogram(x, bins=spec["bins"]),
        "sliced_wasserstein": lambda: reductions.sliced_wasserstein(x, y, n_projections=spec["projections"]),
    }
    per_metric, values = {}, {}
    for name, fn in metrics.items():
        trim_heap()
        reset = reset_peak_rss()
        before = _status_mib("VmRSS")
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        value, seconds = timed(fn, device)
        hwm = _status_mib("VmHWM") if reset else None
        per_metric[name] = {"seconds": seconds, "rss_before_mib": before, "peak_rss_mib": hwm,
                            "rise_mib": None if hwm is None or before is None else hwm - before}
        if cuda:
            per_metric[name]["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        values[name] = value
    mine = {"rank": current.rank, "rows": int(x.shape[0]), "x_mib": x.nbytes / 2 ** 20, "y_mib": y.nbytes / 2 ** 20,
            "baseline": baseline, "after_data": after_data, "max_rss_mib": max_rss_mib(),
            "rise_over_baseline_mib": max_rss_mib() - baseline["max_rss_mib"], "per_metric": per_metric,
            "import_s": _IMPORTED - _PROCESS_START}
    ranks = dist.all_gather_objects(mine, "the memory per rank")
    moments, counts = values["moments"], values["mode_counts"]
    return {"world_size": current.size, "N": n, "d": int(x.shape[1]), "dtype": str(x.dtype), "sample_s": sample_s,
            "ranks": ranks, "hwm_reset": reset,
            "values": {"count": moments.count, "mean": moments.mean.tolist(), "cov": moments.cov.tolist(),
                       "mode_counts": counts.tolist(), "histogram_total": int(values["histogram"].counts.sum()),
                       "sliced_wasserstein": values["sliced_wasserstein"]}}


WORKERS = {"scaling": scaling_worker, "overhead": overhead_worker, "metrics": metrics_worker}


def worker_main(spec: dict, result: str) -> int:
    torch.set_num_threads(spec["threads"])
    current = dist.init_from_env(spec["device"], timeout_s=spec["dist_timeout"])
    device = torch.device(spec["device"])
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # init_from_env set cuda:LOCAL_RANK
    try:
        payload = WORKERS[spec["part"]](spec, device)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if current.is_main:
        harness.write_json(Path(result), payload)
    return 0


# -- the launcher -------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(spec: dict, ranks: int, args) -> dict:
    """Run ``spec`` on ``ranks`` torchrun workers; rank 0's result, with the command's wall time."""
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as folder:
        result = Path(folder) / "result.json"
        spec = dict(spec, threads=args.threads, device=args.device, dist_timeout=args.dist_timeout,
                    launched_at=time.time())
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}", "--nnodes=1",
                   "--master-addr=127.0.0.1", f"--master-port={_free_port()}", "--monitor-interval=0.1",
                   str(SCRIPT), "--worker", json.dumps(spec), "--result", str(result)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # its own group: a timeout stops the workers too
        try:
            out, err = process.communicate(timeout=args.launch_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            out, err = process.communicate()
            raise SystemExit(f"torchrun ({spec['part']}, {ranks} rank(s)) ran past --launch-timeout "
                             f"{args.launch_timeout:g} s and was stopped\n{(out + err)[-3000:]}") from None
        launch_s = time.perf_counter() - started
        if process.returncode != 0 or not result.exists():
            raise SystemExit(f"torchrun ({spec['part']}, {ranks} rank(s)) failed with exit code "
                             f"{process.returncode}:\n{(out + err)[-4000:]}")
        payload = json.loads(result.read_text())
    payload["launch_s"] = launch_s
    return payload


def run_scaling(args) -> tuple[list[dict], list[dict], dict]:
    rows, verdicts, raw = [], [], {}
    for n in args.sizes:
        launches: dict[int, list[dict]] = {1: [], args.ranks: []}
        for r in range(args.repeats):
            order = [1, args.ranks] if r % 2 == 0 else [args.ranks, 1]
            for ranks in order:
                print(f"# scaling: N = {n}, {ranks} rank(s), round {r + 1}/{args.repeats}", file=sys.stderr,
                      flush=True)
                launches[ranks].append(launch({"part": "scaling", "n": n, "steps": args.steps, "seed": args.seed},
                                              ranks, args))
        one, many = launches[1], launches[args.ranks]
        speedups = [a["seconds"] / b["seconds"] for a, b in zip(one, many)]
        digests = {run["fingerprint"]["sha256"] for run in one + many}
        for ranks, runs in launches.items():
            rows.append({"N": n, "ranks": ranks, "seconds": harness.median([run["seconds"] for run in runs]),
                         "samples_per_s": harness.median([run["samples_per_s"] for run in runs]),
                         "speedup": harness.median(speedups) if ranks != 1 else 1.0,
                         "startup_s": harness.median([run["startup_s"] for run in runs]),
                         "launch_s": harness.median([run["launch_s"] for run in runs]),
                         "rows_per_rank": "/".join(map(str, runs[0]["rows_per_rank"])),
                         "sha256": runs[0]["fingerprint"]["sha256"]})
        raw[str(n)] = {"launches": {str(k): v for k, v in launches.items()}, "speedups": speedups,
                       "same_bits": len(digests) == 1}
        verdicts.append({"target": f"{args.ranks} ranks >= {SCALING_TARGET}x one rank's samples/s (N = {n:g})",
                         "measured": harness.median(speedups), "threshold": SCALING_TARGET,
                         "met": "met" if harness.median(speedups) >= SCALING_TARGET else "NOT met"})
        verdicts.append({"target": f"{args.ranks} ranks' samples equal one rank's bit for bit (N = {n:g})",
                         "measured": f"{len(digests)} distinct sha256 over {len(one + many)} launches",
                         "threshold": "1", "met": "met" if len(digests) == 1 else "NOT met"})
    return rows, verdicts, raw


def run_overhead(args) -> tuple[list[dict], list[dict], dict]:
    print(f"# overhead: N = {args.overhead_sizes}, 1 rank, {args.overhead_rounds} rounds", file=sys.stderr, flush=True)
    result = launch({"part": "overhead", "sizes": args.overhead_sizes, "steps": args.steps, "seed": args.seed,
                     "rounds": args.overhead_rounds}, 1, args)
    rows = [{key: value for key, value in row.items() if key != "times_s"} for row in result["rows"]]
    verdicts = [{"target": f"distributed.sample at world size 1 within {OVERHEAD_TARGET - 1:.0%} of "
                           f"diffsde.sample (N = {row['N']:g})", "measured": row["distributed_vs_chunked"],
                 "threshold": OVERHEAD_TARGET, "met": "met" if row["distributed_vs_chunked"] <= OVERHEAD_TARGET
                 else "NOT met"} for row in rows]
    verdicts += [{"target": f"distributed.sample equals diffsde.sample bit for bit (N = {row['N']:g})",
                  "measured": row["same_bits"], "threshold": True, "met": "met" if row["same_bits"] else "NOT met"}
                 for row in rows]
    return rows, verdicts, result


def run_metrics(args) -> tuple[list[dict], list[dict], dict]:
    print(f"# metrics: N = {args.metric_size}, {args.ranks} ranks, {args.projections} projections", file=sys.stderr,
          flush=True)
    result = launch({"part": "metrics", "n": args.metric_size, "steps": args.metric_steps, "seed": args.seed,
                     "bins": args.bins, "projections": args.projections}, args.ranks, args)
    rows = []
    for name in ("moments", "mode_counts", "histogram", "sliced_wasserstein"):
        per_rank = [rank["per_metric"][name] for rank in result["ranks"]]
        peaks = [entry["peak_rss_mib"] for entry in per_rank if entry["peak_rss_mib"] is not None]
        rises = [entry["rise_mib"] for entry in per_rank if entry["rise_mib"] is not None]
        rows.append({"metric": name, "seconds": per_rank[0]["seconds"],
                     "peak_rss_mib": max(peaks) if peaks else None, "rise_mib": max(rises) if rises else None})
    peak = max(rank["max_rss_mib"] for rank in result["ranks"])
    verdicts = [{"target": f"peak RSS per rank <= 1 GiB, everything the rank holds (N = {args.metric_size:g}, "
                           f"{args.ranks} ranks)", "measured": peak, "threshold": RSS_TARGET_MIB,
                 "met": "met" if peak <= RSS_TARGET_MIB else "NOT met"}]
    return rows, verdicts, result


# -- arguments and main -------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke scale: N = 2e4, 10 steps, 1 round, overhead at 1e3 and 2e4, metrics at 4e4")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="scaling: N (default 1e6)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of the linear schedule for scaling and overhead (default 200; 10 with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="scaling: rounds of launches (default 3; 1 with --quick)")
    parser.add_argument("--ranks", type=int, default=2, help="world size compared with 1 (scaling) and of metrics")
    parser.add_argument("--overhead-sizes", type=int, nargs="+", default=None, help="overhead: N (default 1e3 1e6)")
    parser.add_argument("--overhead-rounds", type=int, default=None, help="overhead: interleaved rounds (default 7; 2 "
                                                                          "with --quick)")
    parser.add_argument("--metric-size", type=int, default=None,
                        help="metrics: global N (default 1e7; 4e4 with --quick)")
    parser.add_argument("--metric-steps", type=int, default=10, help="metrics: steps of the sampling that draws x")
    parser.add_argument("--projections", type=int, default=None, help="metrics: sliced Wasserstein directions (default "
                                                                      "4; 2 with --quick)")
    parser.add_argument("--bins", type=int, default=64, help="metrics: histogram bins per dimension")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (NCCL, one GPU per rank)")
    parser.add_argument("--dist-timeout", type=float, default=600.0, help="seconds a collective waits for the others")
    parser.add_argument("--launch-timeout", type=float, default=3600.0, help="seconds one torchrun command may run")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/distributed_<device>.json)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return args
    args.sizes = sorted(args.sizes or ([20_000] if args.quick else [1_000_000]))
    args.steps = args.steps or (10 if args.quick else 200)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.overhead_sizes = sorted(args.overhead_sizes or ([1_000, 20_000] if args.quick else [1_000, 1_000_000]))
    args.overhead_rounds = args.overhead_rounds or (2 if args.quick else 7)
    args.metric_size = args.metric_size or (40_000 if args.quick else 10_000_000)
    args.projections = args.projections or (2 if args.quick else 4)
    if min(args.repeats, args.overhead_rounds, args.steps, args.metric_steps, args.projections, args.bins,
           args.threads, *args.sizes, *args.overhead_sizes) < 1:
        parser.error("--repeats, --overhead-rounds, --steps, --metric-steps, --projections, --bins, --threads and "
                     "the sizes must be >= 1")
    if args.ranks < 2:
        parser.error("--ranks must be >= 2 (it is compared with one rank)")
    if min(args.sizes) < args.ranks or args.metric_size < args.ranks:
        parser.error(f"--sizes and --metric-size must be at least --ranks ({args.ranks})")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(json.loads(args.worker), args.result)
    device = torch.device(args.device)
    parts = [part for part in PARTS if part in args.parts]
    if device.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available == 0:
            print(f"--device {args.device}: CUDA is not available on this machine; skipped", file=sys.stderr)
            return 0
        if available < args.ranks:
            print(f"--device {args.device}: {args.ranks} ranks need {args.ranks} GPUs, this machine has {available}; "
                  f"scaling and metrics skipped", file=sys.stderr)
            parts = [part for part in parts if part == "overhead"]
    started, load_start = time.perf_counter(), harness.load_average()
    print(f"method {METHOD!r}, ring exact score, {args.steps} steps of {schedule_label(args.steps)} "
          f"(scaling, overhead); "
          f"{args.metric_steps} steps of {schedule_label(args.metric_steps)} draw the metrics' x; seed {args.seed}; "
          f"{args.threads} torch thread(s) per rank; device {args.device}")
    payload = {"benchmark": "distributed", "argv": sys.argv[1:] if argv is None else argv,
               "machine": harness.machine_info(device if device.type == "cpu" else torch.device("cuda", 0)),
               "load_average_at_start": load_start, "packages": harness.package_versions(["torch"]),
               "method": METHOD, "score": "toys.make_toy('ring').exact_score", "steps": args.steps,
               "schedule": schedule_label(args.steps), "metric_steps": args.metric_steps, "seed": args.seed,
               "threads_per_rank": args.threads, "ranks": args.ranks, "parts": parts}
    payload["machine"]["torch_threads"] = args.threads  # the workers' (this launcher's own is irrelevant)
    verdicts = []
    for part, runner, columns in (
            ("scaling", run_scaling, ["N", "ranks", "seconds", "samples_per_s", "speedup", "startup_s", "launch_s",
                                      "rows_per_rank", "sha256"]),
            ("overhead", run_overhead, ["N", "calls_per_sample", "distributed_ms", "chunked_ms", "generator_ms",
                                        "distributed_vs_chunked", "chunked_vs_generator", "same_bits"]),
            ("metrics", run_metrics, ["metric", "seconds", "peak_rss_mib", "rise_mib"])):
        if part not in parts:
            continue
        rows, part_verdicts, raw = runner(args)
        print(f"\n{part}")
        print(format_table(rows, columns))
        if part == "metrics":
            for rank in raw["ranks"]:
                print(f"rank {rank['rank']}: {rank['rows']} rows (x {rank['x_mib']:.1f} MiB, "
                      f"y {rank['y_mib']:.1f} MiB), "
                      f"peak RSS {rank['max_rss_mib']:.0f} MiB (ru_maxrss, whole process), "
                      f"{rank['rise_over_baseline_mib']:.0f} MiB above the {rank['baseline']['max_rss_mib']:.0f} MiB "
                      f"after imports and init; imports {rank['import_s']:.1f} s")
            print(f"drawing x: {raw['sample_s']:.2f} s; mode counts {raw['values']['mode_counts']}; "
                  f"SW2 {raw['values']['sliced_wasserstein']:.4g}")
        payload[part] = {"rows": rows, "raw": raw}
        verdicts += part_verdicts
    if verdicts:
        print()
        print(format_table(verdicts))
    payload["targets"] = verdicts
    payload["wall_s"] = time.perf_counter() - started
    name = f"distributed_{device.type}{'_quick' if args.quick else ''}.json"
    path = harness.write_json(Path(args.out) if args.out else harness.RESULTS / name, payload)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
