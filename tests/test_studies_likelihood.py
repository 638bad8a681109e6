"""The likelihood study: the PF-ODE's NLL, DDPM's bound and the exact −log p0 of the same data
(diffsde.studies.likelihood)."""

import math

import pytest
import torch

from diffsde import EpsilonFromScore, EpsilonMLP, EpsilonScore, GaussianScore, log_likelihood, toys
from diffsde.ddpm import vlb
from diffsde.studies import StudyResult, likelihood_study, linear_schedule
from diffsde.studies.likelihood import likelihood_reading

# 2-D, non-zero mean, correlated and anisotropic (eigenvalues ≈ 2.18 and 0.32).
ANISOTROPIC = GaussianScore([1.0, -1.0], [[1.5, 0.9], [0.9, 1.0]])
SMALL = {"ns": (30,), "n_samples": 200}


def rows_of(result, estimator):
    return [row for row in result.rows if row["estimator"] == estimator]


def test_pf_ode_meets_the_exact_nll_within_its_tolerance(device):
    # dopri5 accepts a step when every element's error estimate is below tol (1 + |y|), with
    # |y| <= ~5 for these states, over ~10-20 steps: even if those local errors all added up, the
    # error would stay below 100 tol (it is far smaller: the solver propagates its fifth-order
    # solution, the estimate is the fourth-order one's). At tol = 1e-6 that is 1e-4 nats, which
    # the N(0, I) prior's per-point error (~7e-3 nats here: x_T scored against a mean off by
    # e^{-T/2} μ) would exceed: prior="exact" leaves only the ODE's error.
    result = likelihood_study(ANISOTROPIC, tolerances=(1e-4, 1e-6), prior="exact", device=device, **SMALL)
    loose, tight = rows_of(result, "pf-ode")
    for row in (loose, tight):
        assert abs(row["error"]) <= row["mean_abs_error"] <= 100 * row["tol"]
        assert row["probe_se"] == 0.0  # d = 2: the exact trace
        assert row["prior_mismatch"] is not None  # what N(0, I) would have cost, reported beside
    assert tight["mean_abs_error"] < loose["mean_abs_error"] and tight["nfe"] > loose["nfe"]


def test_hutchinson_is_unbiased_within_its_standard_error():
    # With the exact prior and tol = 1e-6 the ODE's error is < 1e-4 nats (above), far below the
    # probes' spread, so the gap to the exact NLL is probe noise: within 4 paired standard errors
    # (probability of failing < 1e-4 for a normal mean).
    result = likelihood_study(ANISOTROPIC, tolerances=(1e-6,), divergence="hutchinson", probes=4, prior="exact",
                              **SMALL)
    (row,) = rows_of(result, "pf-ode")
    assert result.meta["divergence"] == "hutchinson" and result.meta["probes"] == 4
    assert row["probe_se"] > 1e-3 and row["error_se"] >= row["probe_se"] / 2
    assert abs(row["error"]) <= 4 * row["error_se"]


def test_the_vlb_bounds_the_exact_nll_from_above():
    # E[VLB] >= E[-log p_chain(x0)] >= E[-log p0(x0)] (Jensen, then Gibbs' inequality), so the
    # estimated gap (VLB - exact -log p0, the same x0, one draw of x_i per step) can fall below 0
    # only by noise: error >= -4 error_se (probability < 4e-5 per row for a normal mean).
    result = likelihood_study(toys.ring(), tolerances=(1e-2,), ns=(10, 40), n_samples=400)
    for row in rows_of(result, "vlb"):
        assert row["error"] >= -4 * row["error_se"]
        assert row["mean_abs_error"] is None and row["prior_mismatch"] is None
    # n = 10 is far from the continuous limit: its gap is many standard errors above 0.
    coarse = [row for row in rows_of(result, "vlb") if row["n"] == 10]
    assert all(row["error"] > 4 * row["error_se"] for row in coarse)


def test_rows_hold_what_the_library_returns_for_the_same_data():
    result = likelihood_study(ANISOTROPIC, tolerances=(1e-3, 1e-4), ns=(30, 60), n_samples=50, seed=3)
    assert result.kind == "likelihood"
    assert [(row["estimator"], row["setting"]) for row in result.rows] == [
        ("exact", "-log p0 (closed form)"), ("pf-ode", "rtol=atol=0.001"), ("pf-ode", "rtol=atol=0.0001"),
        ("vlb", "n=30, σ²=β"), ("vlb", "n=60, σ²=β"), ("vlb", "n=30, σ²=β̃"), ("vlb", "n=60, σ²=β̃")]
    x0 = ANISOTROPIC.sample(50, 0.0, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = -ANISOTROPIC.log_prob(x0, 0.0)
    assert result.rows[0]["nats"] == pytest.approx(float(exact.mean()), rel=1e-12)
    assert result.rows[0]["bits_per_dim"] == pytest.approx(float(exact.mean()) / (2 * math.log(2)), rel=1e-12)
    pf_ode = log_likelihood(ANISOTROPIC, x0, rtol=1e-4, atol=1e-4)
    assert result.rows[2]["nats"] == pytest.approx(pf_ode.nats, rel=1e-12) and result.rows[2]["nfe"] == pf_ode.nfe
    # The same flow scored under the exact p_T: the N(0, I) row's error is that one's minus the
    # reported mismatch, log N(x_T; 0, I) - log p_T(x_T), exactly.
    exact_prior = log_likelihood(ANISOTROPIC, x0, rtol=1e-4, atol=1e-4, prior="exact")
    assert result.rows[2]["error"] == pytest.approx(float((-exact_prior.log_prob - exact).mean())
                                                    - result.rows[2]["prior_mismatch"], abs=1e-12)
    terms = vlb(EpsilonFromScore(ANISOTROPIC), x0, linear_schedule(60), variance="beta_tilde",
                generator=torch.Generator().manual_seed(4))
    row = result.rows[-1]
    assert (row["n"], row["nfe"], row["tol"]) == (60, 60, None)
    assert row["nats"] == pytest.approx(terms.nats, rel=1e-12)
    assert row["standard_error"] == pytest.approx(terms.standard_error, rel=1e-12)
    assert row["error"] == pytest.approx(terms.nats - float(exact.mean()), rel=1e-9)
    meta = result.meta
    assert (meta["dim"], meta["n_samples"], meta["score"], meta["prior"], meta["t_min"]) == (2, 50, "exact", "normal",
                                                                                           0.0)
    assert meta["exact_nats"] == result.rows[0]["nats"] and meta["tolerances"] == [1e-3, 1e-4]
    line = likelihood_reading(result)
    assert "PF-ODE NLL" in line and "rtol=atol=0.0001" in line and "VLB at n=60: σ²=β " in line
    assert StudyResult.from_dict(result.to_dict()).rows == result.rows


def test_a_network_score_is_measured_by_its_own_flow():
    # A fresh EpsilonMLP predicts ε = 0 exactly (zero output layer), so its score is 0, the flow is
    # dx/dt = -x/2 with divergence -d/2, and log p_{t_min}(x) = log N(x e^{-(T - t_min)/2}; 0, I)
    # - d (T - t_min)/2 in closed form; t_min defaults to 1e-5 for a network. Bound: 100 tol (above).
    score = EpsilonScore(EpsilonMLP(2, hidden=8, depth=1).double())
    result = likelihood_study(ANISOTROPIC, score, tolerances=(1e-6,), ns=(30,), n_samples=20)
    meta = result.meta
    assert meta["score"].startswith("EpsilonScore") and meta["t_min"] == 1e-5 and not meta["t_min_correction"]
    x0 = ANISOTROPIC.sample(20, 0.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    span = meta["T"] - meta["t_min"]
    x_T = x0 * math.exp(-span / 2)
    nll = 0.5 * (x_T ** 2).sum(1) + math.log(2 * math.pi) + span  # d = 2
    (row,) = rows_of(result, "pf-ode")
    assert row["nats"] == pytest.approx(float(nll.mean()), abs=100 * 1e-6)
    assert row["prior_mismatch"] is None  # a network has no closed-form p_T
    assert all(math.isfinite(row["nats"]) for row in result.rows)
    with pytest.raises(ValueError, match="prior='exact' needs a score with a closed-form p_T"):
        likelihood_study(ANISOTROPIC, score, prior="exact", **SMALL)


def test_a_toy_without_an_exact_score_has_no_exact_row():
    # moons can only be sampled; its data measured under the ring's exact score (any 2-D score).
    result = likelihood_study(toys.moons(), toys.ring().exact_score, tolerances=(1e-2,), ns=(30,), n_samples=20)
    assert [row["estimator"] for row in result.rows] == ["pf-ode", "vlb", "vlb"]
    assert all(row["error"] is None and row["error_se"] is None for row in result.rows)
    assert result.meta["exact_nats"] is None
    assert "exact" not in likelihood_reading(result)


@pytest.mark.parametrize("arguments, error, fragment", [
    ({"ns": ()}, ValueError, "at least 1"),
    ({"ns": (100, 10)}, ValueError, "strictly increasing"),
    ({"ns": (0,)}, ValueError, "positive ints"),
    ({"tolerances": ()}, ValueError, "at least one tolerance"),
    ({"tolerances": (0.0,)}, ValueError, "tolerances"),
    ({"tolerances": (1.0,)}, ValueError, "tolerances"),
    ({"tolerances": (1e-3, 1e-3)}, ValueError, "distinct"),
    ({"n_samples": 1}, ValueError, "n_samples"),
    ({"solver": "euler"}, ValueError, "solver"),
    ({"divergence": "trace"}, ValueError, "divergence"),
    ({"probes": 0}, ValueError, "probes"),
    ({"prior": "uniform"}, ValueError, "prior"),
    ({"t_min": -1.0}, ValueError, "t_min"),
    ({"seed": -1}, ValueError, "seed"),
    ({"dtype": torch.int64}, TypeError, "dtype"),
    ({"target": "ring"}, TypeError, "target must be"),
    ({"target": toys.moons()}, TypeError, "pass score="),
    ({"score": GaussianScore([0.0], [[1.0]])}, ValueError, "1-D but the target's data are 2-D"),
    ({"score": 3.0}, TypeError, "callable"),
])
def test_bad_arguments_are_refused_by_name(arguments, error, fragment):
    arguments = {"target": ANISOTROPIC, **arguments}
    with pytest.raises(error, match=fragment):
        likelihood_study(arguments.pop("target"), arguments.pop("score", None), **arguments)
