"""log_likelihood's error against the closed form per tolerance (exact trace: the score's closed form
and torch.func), and Hutchinson's batch error in units of its standard error: the tables of
docs/benchmarks.md section 8's accuracy paragraph. The data are tests/test_likelihood.py's.

    python benchmarks/likelihood_accuracy.py      # ~1 min on one CPU thread
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_likelihood import _WithoutClosedFormTrace, _data, _random_gaussian, _random_mixture  # noqa: E402

from diffsde import log_likelihood  # noqa: E402

torch.set_num_threads(1)
print("| data | d | trace | tol | NFE | max abs error (nats) | mean abs error (nats) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for kind in ("gaussian", "mixture"):
    for d in (1, 2, 8):
        exact_score = (_random_gaussian if kind == "gaussian" else _random_mixture)(d, seed=d)
        x = _data(exact_score, 64, "cpu")
        ref = exact_score.log_prob(x, 0.0)
        for trace in ("closed form", "torch.func"):
            score = exact_score if trace == "closed form" else _WithoutClosedFormTrace(exact_score)
            for tol in (1e-4, 1e-6, 1e-8):
                r = log_likelihood(score, x, prior="exact", divergence="exact", rtol=tol, atol=tol)
                e = (r.log_prob - ref).abs()
                print(f"| {kind} | {d} | {trace} | {tol:g} | {r.nfe} | {float(e.max()):.2e} | {float(e.mean()):.2e} |")
print()
print("| data | d | probes | probe | tol | NFE | mean SE per sample (nats) | batch-mean error (nats) | batch-mean SE | error / SE |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for d in (2, 8):
    score = _random_mixture(d, seed=d)
    x = _data(score, 64, "cpu")
    ref = score.log_prob(x, 0.0)
    for probes in (2, 8, 32):
        for probe in ("rademacher", "gaussian"):
            for tol in (1e-4, 1e-6):
                r = log_likelihood(score, x, prior="exact", divergence="hutchinson", probes=probes, probe=probe,
                                   generator=torch.Generator().manual_seed(probes), rtol=tol, atol=tol)
                err = float((r.log_prob - ref).mean())
                print(f"| mixture | {d} | {probes} | {probe} | {tol:g} | {r.nfe} | {float(r.log_prob_se.mean()):.3g} | "
                      f"{err:.2e} | {r.probe_standard_error:.2e} | {err / r.probe_standard_error:.2f} |")
