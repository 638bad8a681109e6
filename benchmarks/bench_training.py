"""Training speed of EpsilonMLP with diffsde.training.train: steps/s and samples/s per batch size.

Times the real loop (batch draw, times, noise, forward, backward, clipping, Adam, LR
schedule, EMA, and the loop's own checks) on 2-D data, after a warm-up run that also pays
for ``torch.compile`` when ``--compile`` is given. Big batches get fewer steps, so every
size takes about ``--seconds``.

    python benchmarks/bench_training.py                       # CPU, eager
    python benchmarks/bench_training.py --device cuda --compile

Prints a table and writes JSON with the machine's description to
``benchmarks/results/training_<device>[_compile].json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import _harness as harness
from diffsde._table import format_table
from diffsde.nets import EpsilonMLP
from diffsde.training import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
BATCH_SIZES = [256, 1024, 4096, 16384, 65536]


def run(model: EpsilonMLP, data: torch.Tensor, batch_size: int, steps: int, device: torch.device,
        compile_model: bool) -> float:
    """Seconds for ``steps`` training steps (the whole train() call, synchronised)."""
    config = TrainConfig(steps=steps, batch_size=batch_size, warmup_steps=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    train(model, data, config, device=device, compile_model=compile_model)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(batch_size: int, device: torch.device, compile_model: bool, seconds: float, args) -> dict:
    torch.manual_seed(0)
    model = EpsilonMLP(2, hidden=args.hidden, depth=args.depth).to(device)
    data = torch.randn(100_000, 2, generator=torch.Generator().manual_seed(0)).to(device)
    warm = run(model, data, batch_size, args.warmup_steps, device, compile_model)  # compiles, warms caches
    probe = run(model, data, batch_size, args.warmup_steps, device, compile_model)
    steps = int(min(args.max_steps, max(args.min_steps, round(seconds * args.warmup_steps / probe))))
    elapsed = run(model, data, batch_size, steps, device, compile_model)
    return {"batch_size": batch_size, "steps": steps, "seconds": round(elapsed, 4),
            "steps_per_s": steps / elapsed, "samples_per_s": steps * batch_size / elapsed,
            "warmup_seconds": round(warm, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--compile", action="store_true", help="train through torch.compile")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=BATCH_SIZES)
    parser.add_argument("--seconds", type=float, default=4.0, help="target time per batch size (s)")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--min-steps", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = [measure(b, device, args.compile, args.seconds, args) for b in args.batch_sizes]
    mode = "compile" if args.compile else "eager"
    report = {
        "benchmark": "training",
        "model": {"class": "EpsilonMLP", "dim": 2, "hidden": args.hidden, "depth": args.depth, "embed_dim": 32},
        "mode": mode,
        "machine": harness.machine_info(device),
        "results": rows,
    }
    print(f"EpsilonMLP(2, hidden={args.hidden}, depth={args.depth}) training on {device} ({mode}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {report['machine']['cpu']}")
    print(format_table([{"batch": r["batch_size"], "steps": r["steps"], "seconds": r["seconds"],
                         "steps/s": r["steps_per_s"], "samples/s": r["samples_per_s"]} for r in rows]))
    out = args.out or RESULTS / f"training_{device.type}{'_compile' if args.compile else ''}.json"
    harness.write_json(out, report)
    print(f"wrote {out}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
