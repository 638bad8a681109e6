"""Train an ε-network on a toy and check it against the exact score.

The toy is the 8-mode ring (diffsde.toys.ring), whose score is known at every OU time.
An EpsilonMLP is trained with DDPM's simple loss in OU time (diffsde.train), its score
``s_θ = -ε_θ / sqrt(1 - e^{-t})`` (diffsde.EpsilonScore) is compared with the exact score
under p_t, and the same sampler is run with both scores.

    python docs/examples/train_eps.py            # the tutorial's outputs (a minute or two on 2 cores)
    python docs/examples/train_eps.py --small    # a quick run (a poor fit, same outputs)
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import torch
from _output import parse_args, save_figure, write_text

from diffsde import BetaSchedule, EpsilonMLP, TrainConfig, sample, toys, train
from diffsde._table import format_table
from diffsde.metrics import mode_weights, sliced_wasserstein

TIMES = (0.05, 0.3, 1.0, 3.0)


def relative_score_error(score, exact, t: float, n: int, generator: torch.Generator) -> float:
    """``sqrt(E‖s_θ - s‖² / E‖s‖²)`` over n exact samples of p_t."""
    x = exact.sample(n, t=t, generator=generator, dtype=torch.float32)
    with torch.no_grad():
        error = (score(x, t) - exact.score(x, t)).pow(2).sum(-1).mean()
        scale = exact.score(x, t).pow(2).sum(-1).mean()
    return float((error / scale).sqrt())


def spread_ratio(x: torch.Tensor, ring) -> float:
    """Mean over samples of min_k ‖x - μ_k‖² / (d σ²): the modes' width relative to p_0's
    (see samplers_on_ring.py; 0.994 for exact samples of the ring)."""
    squared = torch.cdist(x.double(), ring.means).pow(2).min(1).values / (x.shape[1] * ring.params["std"] ** 2)
    return float(squared.mean())


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    started = time.perf_counter()
    torch.set_num_threads(1)  # a small MLP trains faster on one thread than on two
    ring = toys.ring()
    exact = ring.exact_score
    # Times drawn from the linear schedule's grid at its exact times τ_i = -log ᾱ_i, where
    # the sampler below queries the network (TrainConfig.time_sampling).
    if args.small:
        config = TrainConfig(steps=100, batch_size=128, lr=3e-3, warmup_steps=10, time_sampling="grid")
        hidden, n_eval, n_samples, n_steps = 32, 1000, 500, 100
    else:
        config = TrainConfig(steps=4000, batch_size=1024, lr=3e-3, warmup_steps=100, time_sampling="grid")
        hidden, n_eval, n_samples, n_steps = 128, 20000, 10000, 1000
    torch.manual_seed(0)  # the initial weights; training draws from its own generator (config.seed)
    model = EpsilonMLP(2, hidden=hidden)
    result = train(model, ring, config)
    train_seconds = time.perf_counter() - started
    learned = result.score()  # EpsilonScore of the EMA weights

    generator = torch.Generator().manual_seed(1)
    rows = [{"t": t, "relative_score_error": relative_score_error(learned, exact, t, n_eval, generator)}
            for t in TIMES]
    final_loss = float(result.losses[-max(1, config.steps // 10):].mean())
    summary = (f"EpsilonMLP(2, hidden={hidden}), {config.steps} steps of {config.batch_size}, "
               f"{train_seconds:.1f} s; mean loss over the last 10% of steps: {final_loss:.3f} "
               f"(a network predicting 0 scores d = 2).")
    write_text(args.out / "train_score_error.md",
               format_table(rows) + "\n\n" + summary + "\n\nRelative L2 error sqrt(E|s_θ - s|² / E|s|²) under "
               f"p_t, over {n_eval} exact samples.")

    schedule = BetaSchedule.linear(n_steps)
    reference = ring.sample(n_samples, generator=torch.Generator().manual_seed(2))
    sample_rows, samples = [{"score": "exact samples", "spread_ratio": spread_ratio(reference, ring),
                             "sliced_w2": 0.0, "max_weight_error": float((mode_weights(reference, ring.means)
                                                                          - ring.weights).abs().max())}], {}
    for label, score in (("exact score", exact), ("learned score", learned)):
        with torch.no_grad():
            x = sample(score, "ddpm", schedule=schedule, exact_times=True, n_samples=n_samples, generator=3)
        samples[label] = x
        weights = mode_weights(x, ring.means)
        sample_rows.append({"score": label, "spread_ratio": spread_ratio(x, ring),
                            "sliced_w2": sliced_wasserstein(x, reference, n_projections=256),
                            "max_weight_error": float((weights - ring.weights).abs().max())})
    write_text(args.out / "train_samples.md",
               format_table(sample_rows) + f"\n\nDDPM ancestral sampler, linear schedule n = {n_steps} at exact times, "
               f"{n_samples} samples, against {n_samples} exact samples of p_0.")

    figure, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    losses = result.losses.numpy()
    window = max(1, config.steps // 50)
    smoothed = torch.nn.functional.avg_pool1d(result.losses.view(1, 1, -1), window, stride=1).view(-1).numpy()
    axes[0].plot(losses, lw=0.3, alpha=0.4, label="minibatch")
    axes[0].plot(range(window - 1, len(losses)), smoothed, lw=1.2, label=f"moving mean ({window})")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("‖ε - ε_θ‖²")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[0].set_title("training loss", fontsize=9)
    for axis, (label, x) in zip(axes[1:], samples.items()):
        axis.scatter(*x[:3000].T, s=1, alpha=0.4, color="C1" if label == "learned score" else "C0")
        axis.set_title(f"DDPM samples, {label}", fontsize=9)
        axis.set_aspect("equal")
        axis.set_xlim(-6.5, 6.5)
        axis.set_ylim(-6.5, 6.5)
    save_figure(figure, args.out / "train.png")
    print(f"train_eps.py finished in {time.perf_counter() - started:.1f} s (small={args.small})")


if __name__ == "__main__":
    main()
