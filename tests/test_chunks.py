"""Counter-based noise in chunks (diffsde.samplers.chunks): an int seed makes sample i depend only on
(seed, i), whatever the batch it is drawn in; the draws are independent standard normals.

The bit-for-bit checks run on the CPU, where they are promised (torch's CPU normal fill and
vectorised kernels; on CUDA a chunk's noise is the same but kernels may round differently per
batch size)."""

from __future__ import annotations

import math

import pytest
import torch

from diffsde import EpsilonScore, GaussianMixtureScore, GaussianScore, TimeGrid, exact_output_law, sample, toys
from diffsde.nets import EpsilonMLP
from diffsde.samplers.chunks import CHUNK_ROWS, CounterNoise, stream_seed

GRID = TimeGrid.uniform(10.0, 1e-3, 20)
RING = toys.make_toy("ring").exact_score
GAUSSIAN = GaussianScore(torch.tensor([1.0, -2.0]), torch.tensor([[2.0, 0.3], [0.3, 0.5]]))
GENERAL = GaussianMixtureScore(torch.tensor([0.3, 0.7]), torch.tensor([[1.0, 2.0], [-2.0, 0.5]]),
                               torch.stack([0.5 * torch.eye(2), torch.tensor([[1.0, 0.3], [0.3, 0.4]])]))
FIXED_GRID_METHODS = ["em", "vp", "ddpm", "ode-heun", "ddim", "dpm-solver", "unipc", "edm", "dpm-solver-sde"]


def _network() -> EpsilonScore:
    torch.manual_seed(0)
    return EpsilonScore(EpsilonMLP(2, hidden=32, depth=2))


def test_torch_cpu_normals_are_prefixes_of_longer_draws():
    # The scheme rests on this: torch's CPU normal fill draws uniforms in order and transforms them 16
    # at a time, so the first 16·k numbers of a draw do not depend on how many more are drawn. If a
    # torch release changes it, this test (not the users' samples) is the first to say so.
    generator = torch.Generator()
    for dtype in (torch.float32, torch.float64):
        long = torch.randn(4096, generator=generator.manual_seed(11), dtype=dtype)
        for count in (16, 48, 1008, 4080):
            assert torch.equal(torch.randn(count, generator=generator.manual_seed(11), dtype=dtype), long[:count])


def test_streams_of_one_seed_never_coincide():
    # A bijection of slot · 2^15 + chunk: all 2^15 chunks × 8 slots, and 64 chunks × 2^11 slots, distinct.
    for seed in (0, 2 ** 64 - 1):
        wide = {stream_seed(seed, chunk, slot) for chunk in range(2 ** 15) for slot in range(8)}
        deep = {stream_seed(seed, chunk, slot) for chunk in range(64) for slot in range(2 ** 11)}
        assert len(wide) == 2 ** 18 and len(deep) == 2 ** 17
    assert stream_seed(0, 0, 0) != stream_seed(1, 0, 0)


def test_streams_beyond_the_range_are_refused():
    with pytest.raises(ValueError, match="at most 2\\^15 chunks"):
        stream_seed(0, 2 ** 15, 0)
    with pytest.raises(ValueError, match="at most 131071 draws per sample"):
        stream_seed(0, 0, 2 ** 17)


def test_runs_beyond_the_range_are_refused_before_any_work():
    with pytest.raises(ValueError, match="at most 2\\^15 chunks"):
        sample(RING, "em", grid=GRID, n_samples=2 ** 15 * CHUNK_ROWS + 1, generator=0)
    with pytest.raises(ValueError, match="this run needs draw 131072"):
        sample(RING, "em", grid=TimeGrid.uniform(10.0, 1e-3, 2 ** 17), n_samples=4, generator=0)


def test_counter_noise_is_independent_standard_normal():
    # 3 chunks × 4 slots of 16384 x 2 normals: each block's mean within 5 standard errors (1/sqrt(n)) of
    # 0, its variance within 5 · sqrt(2/n) of 1, and every pair of blocks uncorrelated within 5/sqrt(n)
    # (a reused or shifted stream would give a correlation near 1).
    blocks = []
    for chunk in range(3):
        noise = CounterNoise(seed=7, chunk=chunk, rows=CHUNK_ROWS)
        for slot in range(4):
            blocks.append(noise.normals(slot, torch.empty(CHUNK_ROWS, 2, dtype=torch.float64)).flatten())
    n = blocks[0].numel()
    stacked = torch.stack(blocks)
    assert stacked.mean(1).abs().max() < 5 / math.sqrt(n)
    assert (stacked.var(1) - 1).abs().max() < 5 * math.sqrt(2 / n)
    correlation = torch.corrcoef(stacked)
    off_diagonal = correlation - torch.diag(torch.diag(correlation))
    assert off_diagonal.abs().max() < 5 / math.sqrt(n)


@pytest.mark.parametrize("score_name, dtype", [(name, dtype) for name in ("ring", "gaussian", "general")
                                               for dtype in (torch.float32, torch.float64)] + [("network", torch.float32)])
def test_a_sample_does_not_depend_on_the_batch_it_is_drawn_in(score_name, dtype):
    score = {"ring": RING, "gaussian": GAUSSIAN, "general": GENERAL, "network": None}[score_name] or _network()
    for method in FIXED_GRID_METHODS:
        small = sample(score, method, grid=GRID, n_samples=50, generator=3, dtype=dtype)
        medium = sample(score, method, grid=GRID, n_samples=500, generator=3, dtype=dtype)
        assert torch.equal(medium[:50], small), method
    # Across a chunk boundary, and with a partial chunk longer than the mixture forms' row blocks.
    large = sample(score, "em", grid=GRID, n_samples=CHUNK_ROWS + 300, generator=3, dtype=dtype)
    for n in (500, 16000, CHUNK_ROWS + 40):
        assert torch.equal(large[:n], sample(score, "em", grid=GRID, n_samples=n, generator=3, dtype=dtype)), n


def test_the_seed_not_the_batch_names_the_samples():
    # The old behaviour the issue reports: with one generator stream, the first 50 of 500 differ from a
    # run of 50. An int seed fixes that; a torch.Generator keeps its sequential stream.
    stream = sample(RING, "em", grid=GRID, n_samples=500, generator=torch.Generator().manual_seed(3))
    stream_small = sample(RING, "em", grid=GRID, n_samples=50, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(stream[:50], stream_small)
    assert not torch.equal(sample(RING, "em", grid=GRID, n_samples=50, generator=3),
                           sample(RING, "em", grid=GRID, n_samples=50, generator=4))


def test_counter_noise_gives_the_exact_output_law():
    # Euler-Maruyama on a Gaussian target is affine in (x_T, noise): its output law is exact
    # (exact_output_law). 40 000 samples (3 chunks, the last partial) must match its mean within
    # 5 standard errors per coordinate and its covariance within 5 standard errors of a sample
    # covariance entry (sqrt((Σ_ii Σ_jj + Σ_ij²) / n)); a stream reused across steps or chunks would
    # change the covariance by O(1).
    n = 40_000
    x = sample(GAUSSIAN, "em", grid=GRID, n_samples=n, generator=5, dtype=torch.float64)
    mean, cov = exact_output_law("em", GAUSSIAN, grid=GRID)
    std = torch.sqrt(torch.diag(cov))
    assert ((x.mean(0) - mean).abs() < 5 * std / math.sqrt(n)).all()
    entry_se = torch.sqrt((torch.outer(torch.diag(cov), torch.diag(cov)) + cov ** 2) / n)
    assert ((torch.cov(x.T) - cov).abs() < 5 * entry_se).all()


@pytest.mark.parametrize("options", [dict(prior="exact"), dict(prior="tweedie"), dict(final="denoise"),
                                     dict(dtype=torch.float16), dict(dtype=torch.bfloat16)],
                         ids=["exact-prior", "tweedie", "denoise", "float16", "bfloat16"])
def test_starts_ends_and_half_precision_keep_the_invariance(options):
    small = sample(RING, "ddpm", grid=GRID, n_samples=37, generator=9, **options)
    large = sample(RING, "ddpm", grid=GRID, n_samples=700, generator=9, **options)
    assert small.dtype == options.get("dtype", torch.float32)
    assert torch.equal(large[:37], small)


def test_a_given_x_T_is_chunked_by_its_rows():
    x_T = torch.randn(CHUNK_ROWS + 10, 2, generator=torch.Generator().manual_seed(1))
    whole, path = sample(RING, "em", grid=GRID, x_T=x_T, generator=2, return_path=True)
    part = sample(RING, "em", grid=GRID, x_T=x_T[:100], generator=2)
    assert torch.equal(whole[:100], part)
    assert path.shape == (GRID.n + 1, CHUNK_ROWS + 10, 2) and torch.equal(path[0], x_T) and torch.equal(path[-1], whole)


def test_info_counts_one_chunks_evaluations_and_progress_runs_over_chunks():
    # Two chunks, each integrated on its own: the NFE is a chunk's (the same as one batch's), not the sum.
    x, info = sample(RING, "ode-heun", grid=GRID, n_samples=CHUNK_ROWS + 1, generator=0, return_info=True,
                     progress=True)
    _, one_batch = sample(RING, "ode-heun", grid=GRID, n_samples=10, generator=torch.Generator(), return_info=True)
    assert x.shape == (CHUNK_ROWS + 1, 2) and info["nfe"] == one_batch["nfe"] > GRID.n
