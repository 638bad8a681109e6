"""Method specs of the studies (diffsde.studies.methods), and the diffsde.experiments alias."""

import pytest

import diffsde.experiments
import diffsde.studies
from diffsde.studies import MethodSpec, resolve_method
from diffsde.samplers import resolve_method as registry_method
from diffsde.studies.methods import study_method, study_methods


def test_method_specs_resolve_to_the_registry_records():
    # The studies speak the registry's language: a spec resolves to the registry's record.
    assert MethodSpec is registry_method("em").__class__
    heun = resolve_method("ode-heun")
    assert (heun.label, heun.name, dict(heun.options)) == ("ode-heun", "ode", {"solver": "heun"})
    euler = resolve_method("torchsde-euler")
    assert (euler.label, euler.name, dict(euler.options)) == ("torchsde-euler", "torchsde", {"solver": "euler"})
    assert (resolve_method("vp").label, resolve_method("vp").name) == ("vp", "vp")
    pair = resolve_method(("pc", {"corrector_steps": 2, "step_size": 0.01}))
    assert pair.name == "pc" and pair.label == "pc(corrector_steps=2, step_size=0.01)"
    assert pair.options["corrector_steps"] == 2 and pair.options["step_size"] == 0.01
    assert pair.has_exact_law and not resolve_method("pc").has_exact_law
    assert not resolve_method("ode-RK45").has_exact_law and resolve_method("ode-heun").weak_order == 2.0
    # torchsde on a fixed grid is affine in its (injected) increments, so it has an exact law (issue 12).
    assert resolve_method("torchsde-euler").has_exact_law


@pytest.mark.parametrize("call, error, match", [
    (lambda: resolve_method("rk4"), ValueError, "unknown method 'rk4'"),
    (lambda: resolve_method("ode-rk99"), ValueError, "unknown method 'ode-rk99'"),
    (lambda: resolve_method(("ddpm", {"variance": "big"})), ValueError, "variance must be"),
    (lambda: resolve_method(("em", {"solver": "heun"})), TypeError, "unknown option 'solver'"),
    (lambda: resolve_method(3), TypeError, "a method spec must be"),
])
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_study_methods_are_the_records_the_samplers_declare():
    # One record per method, as the registry declares it: heun makes two score evaluations per
    # step and has weak order 2; adaptive RK45 has no fixed count and no exact law.
    specs = ["ode-heun", "ode-RK45", "torchsde-euler", "em", ("ddpm", {"variance": "beta"})]
    records = study_methods(specs)
    assert (records[0].weak_order, records[0].score_evals, records[0].has_exact_law) == (2.0, 2, True)
    assert records[1].score_evals is None and not records[1].has_exact_law
    assert records[4].label == "ddpm(variance=beta)" and records[4].score_evals == 1
    for spec, record in zip(specs, records):
        declared = registry_method(spec[0], **spec[1]) if isinstance(spec, tuple) else registry_method(spec)
        assert record.name == declared.name
        assert (record.weak_order, record.score_evals, record.has_exact_law) == \
               (declared.weak_order, declared.score_evals, declared.has_exact_law)
    assert study_method("em") == study_methods("em")[0]
    with pytest.raises(ValueError, match="distinct labels"):
        study_methods(["em", "em"])
    with pytest.raises(ValueError, match="methods is empty"):
        study_methods([])


# Every name imported from diffsde.experiments anywhere in the repository (tests, benchmarks,
# docs/examples, the CLI) when the studies moved to diffsde.studies.
EXPERIMENTS_NAMES = ["MethodSpec", "MonteCarlo", "StudyResult", "alpha_bar_limit", "compare_samplers",
                     "convergence_study", "error_budget", "fit_order", "order_fit", "resolve_method"]


@pytest.mark.parametrize("name", EXPERIMENTS_NAMES)
def test_experiments_is_an_alias_of_the_studies(name):
    assert getattr(diffsde.experiments, name) is getattr(diffsde.studies, name)
    assert name in diffsde.experiments.__all__
