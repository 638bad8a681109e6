"""Gather-free metrics (diffsde.distributed.reductions) against diffsde.metrics on the gathered set.

One 2-rank spawn (gloo, so CPU only) computes every metric on uneven shards, a rank with no rows
included, plus the refusals, and returns them; the parent compares with diffsde.metrics on the
gathered data. In a world of one (no process group) the functions must be diffsde.metrics exactly.

Tolerances: a float64 sum of N terms |t| <= M is off by at most about N·eps·M (recursive
summation; eps = 2.2e-16), so the pooled mean is within N·eps·max|x| of the gathered one per entry
and the covariance within N·eps·max|x - x̄|² (Chan et al.'s merge adds a few eps more); sliced
W_p^p sums N positive terms, relative error <= 2N·eps for both sides. Counts are integers: exact.
"""

import math

import pytest
import torch

from _ranks import run_ranks
from diffsde import metrics
from diffsde.distributed import reductions, sorting
from diffsde.distributed.world import DistributedError

N = 100
SPLIT = 37  # rank 0 holds rows [0, 37) of x, rank 1 rows [37, 100)
EPS = torch.finfo(torch.float64).eps
CENTRES = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
REF_MEAN = torch.tensor([0.1, 1.0], dtype=torch.float64)
REF_COV = torch.tensor([[2.0, 0.3], [0.3, 1.5]], dtype=torch.float64)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """x: three clusters on a 0.25 grid (many repeated points, so projections tie); y: a Gaussian."""
    generator = torch.Generator().manual_seed(15)
    labels = torch.randint(0, 3, (N,), generator=generator)
    x = CENTRES[labels] + 0.5 * torch.randn(N, 2, generator=generator, dtype=torch.float64)
    x = (4 * x).round() / 4
    y = 1.5 * torch.randn(N, 2, generator=generator, dtype=torch.float64)
    return x, y


def _refusal(call) -> tuple[str, str]:
    try:
        call()
    except (ValueError, TypeError, DistributedError) as err:
        return type(err).__name__, str(err)
    return "none", ""


def _worker() -> dict:
    rank = torch.distributed.get_rank()
    x, y = _data()
    xs = (x[:SPLIT], x[SPLIT:])[rank]
    ys = (y, y[:0])[rank]  # rank 1 holds no rows of y
    out = {
        "moments": reductions.moments(xs),
        "mean_error": reductions.mean_error(xs, REF_MEAN),
        "cov_error": reductions.cov_error(xs, REF_COV),
        "mode_counts": reductions.mode_counts(xs, CENTRES),
        "mode_weights": reductions.mode_weights(xs, CENTRES),
        "histogram": reductions.histogram(xs, bins=(5, 7)),
        "histogram_range": reductions.histogram(xs, bins=4, range=[(-2.0, 2.0), (-1.0, 3.0)]),
        "sw": reductions.sliced_wasserstein(xs, ys),
        "sw_p": reductions.sliced_wasserstein(ys, xs, n_projections=16, p=1.5,
                                              generator=torch.Generator().manual_seed(3)),
        "sw_one": reductions.sliced_wasserstein((x[:1], x[:0])[rank], (y[:0], y[:1])[rank]),
    }
    reductions._BATCH_ELEMENTS = 1  # one projection per exchange
    out["sw_batched"] = reductions.sliced_wasserstein(xs, ys, n_projections=5)
    # The sort itself, on integer values (heavy ties): rank shares of each row, 3 rows.
    rows = torch.randint(0, 5, (3, N), generator=torch.Generator().manual_seed(4)).to(torch.float64)
    local = (rows[:, :SPLIT], rows[:, SPLIT:])[rank].sort(dim=1).values
    out["sort"] = sorting.sample_sort(local, [SPLIT, N - SPLIT], "rows")
    out["sort_empty"] = sorting.sample_sort((rows[:, :0], rows)[rank].sort(dim=1).values, [0, N], "rows")
    # All values equal: (value, global index) order still splits them evenly; the first exchange's sizes.
    buckets, exchange = [], sorting._exchange

    def spy(outgoing, incoming, what):
        if what.startswith("the sort of"):
            buckets.append([sum(lengths[b] for lengths in incoming) for b in range(len(incoming[0]))])
        return exchange(outgoing, incoming, what)

    sorting._exchange = spy
    out["sort_ties"] = sorting.sample_sort(torch.zeros(3, (SPLIT, N - SPLIT)[rank], dtype=torch.float64),
                                               [SPLIT, N - SPLIT], "ties")
    out["buckets"], sorting._exchange = buckets, exchange
    bad = torch.tensor([[0.0, math.nan]], dtype=torch.float64)
    out["refusals"] = {
        "unequal": _refusal(lambda: reductions.sliced_wasserstein(xs, (y[:10], y[:0])[rank])),
        "dimension": _refusal(lambda: reductions.moments((xs, torch.zeros(5, 3))[rank])),
        "nan": _refusal(lambda: reductions.mean_error((xs, bad)[rank], REF_MEAN)),
        "means": _refusal(lambda: reductions.mode_counts(xs, CENTRES + rank)),
        "directions": _refusal(lambda: reductions.sliced_wasserstein(
            xs, ys, generator=torch.Generator().manual_seed(rank))),
        "histogram_bins": _refusal(lambda: reductions.histogram(xs, bins=(3, 3, 3))),
    }
    out["after_refusals"] = reductions.mode_counts(xs, CENTRES)  # the ranks are still in step
    return out


def test_two_ranks_equal_the_gathered_metrics():
    """CPU only (gloo). One spawn: every reduction against diffsde.metrics on the gathered data."""
    results = run_ranks(_worker, 2, timeout_s=60)
    x, y = _data()
    out = results[0]
    # Every rank holds the same bits.
    for key in ("mean_error", "cov_error", "sw", "sw_p", "sw_one", "sw_batched"):
        assert results[1][key] == out[key], key
    for key in ("mode_counts", "mode_weights", "after_refusals"):
        assert torch.equal(results[1][key], out[key]), key
    assert results[0]["moments"].count == results[1]["moments"].count
    assert all(torch.equal(a, b) for a, b in zip(results[0]["moments"][1:], results[1]["moments"][1:]))

    # Moments within N·eps·scale (see the module docstring).
    mean_tol = N * EPS * float(x.abs().max())
    cov_tol = 2 * N * EPS * float((x - x.mean(0)).square().max())
    count, mean, cov = out["moments"]
    assert count == N
    assert float((mean - x.mean(0)).abs().max()) <= mean_tol
    assert float((cov - torch.cov(x.T)).abs().max()) <= cov_tol
    assert out["mean_error"] == pytest.approx(metrics.mean_error(x, REF_MEAN), abs=2 * mean_tol)
    assert out["cov_error"] == pytest.approx(metrics.cov_error(x, REF_COV), abs=2 * cov_tol)

    # Integer results exactly.
    assert torch.equal(out["mode_counts"], metrics._mode_counts(x, CENTRES))
    assert torch.equal(out["after_refusals"], metrics._mode_counts(x, CENTRES))
    assert torch.equal(out["mode_weights"], metrics.mode_weights(x, CENTRES))
    expected = torch.histogramdd(x, bins=[5, 7])
    assert out["histogram"].counts.dtype == torch.int64
    assert torch.equal(out["histogram"].counts, expected.hist.to(torch.int64))
    assert all(torch.equal(a, b) for a, b in zip(out["histogram"].edges, expected.bin_edges))
    expected = torch.histogramdd(x, bins=[4, 4], range=[-2.0, 2.0, -1.0, 3.0])
    assert torch.equal(out["histogram_range"].counts, expected.hist.to(torch.int64))
    assert 0 < int(out["histogram_range"].counts.sum()) < N  # the range cuts some samples off

    # Sliced W_p: relative 2N·eps on the sums; 1e-12 leaves room for projection round-off.
    assert out["sw"] == pytest.approx(metrics.sliced_wasserstein(x, y), rel=1e-12)
    assert out["sw_p"] == pytest.approx(metrics.sliced_wasserstein(
        y, x, n_projections=16, p=1.5, generator=torch.Generator().manual_seed(3)), rel=1e-12)
    assert out["sw_one"] == pytest.approx(metrics.sliced_wasserstein(x[:1], y[:1]), rel=1e-12)
    assert out["sw_batched"] == pytest.approx(metrics.sliced_wasserstein(x, y, n_projections=5), rel=1e-12)

    # The distributed sort moves values only: the shares concatenate to the sorted rows, exactly.
    rows = torch.randint(0, 5, (3, N), generator=torch.Generator().manual_seed(4)).to(torch.float64)
    for key in ("sort", "sort_empty"):
        assert [tuple(r[key].shape) for r in results] == [(3, N // 2), (3, N - N // 2)]
        assert torch.equal(torch.cat([r[key] for r in results], 1), rows.sort(dim=1).values), key

    assert torch.equal(torch.cat([r["sort_ties"] for r in results], 1), torch.zeros(3, N, dtype=torch.float64))
    # Each bucket holds at most N/W + 2N/(8W) = 62.5 values (sample_sort's bound), all of a row together N.
    buckets = torch.tensor([r["buckets"] for r in results])  # (rank, call, row)
    assert int(buckets.max()) <= 62 and bool((buckets.sum(0) == N).all())

    refused = [r["refusals"] for r in results]
    assert refused[0]["unequal"] == refused[1]["unequal"]
    assert refused[0]["unequal"][0] == "ValueError"
    assert "got N = 100 for x_local and 10 for y_local" in refused[0]["unequal"][1]
    for key in ("dimension", "means", "directions"):
        assert [r[key][0] for r in refused] == ["DistributedError"] * 2, key
        assert "differs between ranks" in refused[0][key][1]
    assert refused[1]["nan"][0] == "ValueError" and "finite" in refused[1]["nan"][1]
    assert refused[0]["nan"][0] == "DistributedError" and "rank 1 refused" in refused[0]["nan"][1]
    assert [r["histogram_bins"][0] for r in refused] == ["ValueError"] * 2
    assert "bins must be an int or 2 ints" in refused[0]["histogram_bins"][1]


# -- a world of one: diffsde.metrics itself ------------------------------------------------

def test_alone_each_function_is_metrics_exactly(device):
    x, y = (tensor.to(device) for tensor in _data())
    assert reductions.mean_error(x, REF_MEAN) == metrics.mean_error(x, REF_MEAN)
    assert reductions.cov_error(x, REF_COV) == metrics.cov_error(x, REF_COV)
    assert torch.equal(reductions.mode_counts(x, CENTRES), metrics._mode_counts(x, CENTRES))
    assert torch.equal(reductions.mode_weights(x, CENTRES), metrics.mode_weights(x, CENTRES))
    assert reductions.sliced_wasserstein(x, y) == metrics.sliced_wasserstein(x, y)
    assert reductions.sliced_wasserstein(x, y[:30], p=1.0) == metrics.sliced_wasserstein(x, y[:30], p=1.0)


def test_alone_moments_are_the_two_pass_moments_of_cov_error(device):
    x = _data()[0].to(device)
    count, mean, cov = reductions.moments(x)
    assert count == N and mean.device.type == cov.device.type == "cpu"
    # metrics' own S and x̄ against these: zero exactly when the bits agree.
    assert metrics.cov_error(x, cov.to(device)) == 0.0
    assert metrics.mean_error(x, mean.to(device)) == 0.0
    assert torch.allclose(cov, torch.cov(x.T.cpu()), rtol=0, atol=2 * N * EPS * 40)


def test_merge_in_rank_order_equals_two_pass_moments():
    x = _data()[0]
    parts = [reductions._local_moments(part) for part in (x[:0], x[:SPLIT], x[SPLIT:SPLIT], x[SPLIT:80], x[80:])]
    count, mean, m2 = reductions._merge(parts)
    assert count == N
    assert float((mean - x.mean(0)).abs().max()) <= N * EPS * float(x.abs().max())
    assert float((m2 / (N - 1) - torch.cov(x.T)).abs().max()) <= 2 * N * EPS * float((x - x.mean(0)).square().max())
    # A lone non-empty part passes unchanged.
    alone = reductions._local_moments(x)
    merged = reductions._merge([reductions._local_moments(x[:0]), alone])
    assert merged[0] == N and torch.equal(merged[1], alone[1]) and torch.equal(merged[2], alone[2])


def test_alone_histogram_is_torch_histogramdd(device, monkeypatch):
    x = _data()[0]
    result = reductions.histogram(x.to(device), bins=(5, 7))
    expected = torch.histogramdd(x, bins=[5, 7])
    assert torch.equal(result.counts, expected.hist.to(torch.int64))
    assert all(torch.equal(a, b) for a, b in zip(result.edges, expected.bin_edges))
    monkeypatch.setattr(reductions, "_HISTOGRAM_ROWS", 7)  # binned in chunks: the same counts
    assert torch.equal(reductions.histogram(x.to(device), bins=(5, 7)).counts, result.counts)
    one_d = reductions.histogram(x[:, 0].to(device), bins=6, range=(-1.0, 1.0))
    assert torch.equal(one_d.counts, torch.histogram(x[:, 0], bins=6, range=(-1.0, 1.0)).hist.to(torch.int64))
    constant = reductions.histogram(torch.ones(4, 1), bins=2)  # min = max: widened by 0.5 either side
    assert constant.counts.tolist() == [0, 4] and constant.edges[0].tolist() == [0.5, 1.0, 1.5]


@pytest.mark.parametrize("call, message", [
    (lambda x: reductions.histogram(x, bins=(3, 3, 3)), "bins must be an int or 2 ints"),
    (lambda x: reductions.histogram(x, bins=0), "bins must be an int >= 1"),
    (lambda x: reductions.histogram(x, range=[(0.0, 1.0)]), "range must be 2 (low, high) pairs"),
    (lambda x: reductions.histogram(x, range=[(0.0, 1.0), (2.0, 2.0)]), "range[1] must have low < high"),
    (lambda x: reductions.histogram(x[:0]), "at least 1 sample over all ranks"),
    (lambda x: reductions.moments(x[:1]), "at least 2 samples over all ranks"),
    (lambda x: reductions.moments(x[:, None]), "must have shape (n, d) or (n,)"),
    (lambda x: reductions.mode_counts(x, CENTRES[:, :1]), "means must have shape (K, 2)"),
    (lambda x: reductions.sliced_wasserstein(x, x[:, :1]), "the same dimension d"),
])
def test_bad_input_is_refused_with_a_clear_message(call, message):
    with pytest.raises(ValueError) as info:
        call(_data()[0])
    assert message in str(info.value)
