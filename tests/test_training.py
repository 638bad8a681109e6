"""The ε-loss, the training loop and its configuration (checkpoints: tests/test_checkpoints.py)."""

import math

import numpy as np
import pytest
import torch

from conftest import make_generator
from diffsde.nets import EpsilonMLP
from diffsde.scores import EpsilonFromScore, GaussianScore
from diffsde.training import TrainConfig, TrainingDivergedError, eps_loss, load_checkpoint, train
from diffsde.training import _memory
from toy_training import FAST, fit_gaussian, gaussian_2d, relative_score_error

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=torch.float64)


def residual_cov(t: float) -> torch.Tensor:
    """Cov(ε | x_t) = I - σ² Σ_t^{-1}, σ² = 1 - e^{-t}, Σ_t = e^{-t} C + σ² I: the residual of the exact
    ε = E[ε | x_t] is N(0, this) and independent of x_t (ε and x_t are jointly Gaussian)."""
    var = -math.expm1(-t)
    eye = torch.eye(2, dtype=torch.float64)
    return eye - var * torch.linalg.inv(math.exp(-t) * COV + var * eye)


# -- the loss ------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0.05, 0.5, 2.0])
def test_eps_loss_of_the_exact_epsilon_is_the_irreducible_loss(device, t):
    gen = make_generator(device, 0)
    exact = EpsilonFromScore(GaussianScore(MEAN, COV))
    x0 = GaussianScore(MEAN, COV).sample(40000, generator=gen, device=device, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=gen, device=device, dtype=torch.float64)
    A = residual_cov(t)
    # Per sample the loss is ‖r‖², r ~ N(0, A): mean tr A, variance 2 tr A²; 5 standard errors.
    standard_error = math.sqrt(2 * float(torch.trace(A @ A)) / x0.shape[0])
    assert abs(float(eps_loss(exact, x0, t, noise)) - float(torch.trace(A))) < 5 * standard_error

    # A constant error c in ε adds ‖c‖² in expectation. With common (x0, ε) the difference per sample is
    # ‖c‖² - 2 rᵀc, of variance 4 cᵀAc.
    c = torch.tensor([0.05, -0.03], dtype=torch.float64, device=device)
    perturbed = eps_loss(lambda x, s: exact(x, s) + c, x0, t, noise)
    difference = float(perturbed - eps_loss(exact, x0, t, noise))
    standard_error = math.sqrt(4 * float(c.cpu() @ A @ c.cpu()) / x0.shape[0])
    assert abs(difference - float(c @ c)) < 5 * standard_error
    assert difference > 0


def test_eps_loss_with_per_sample_times(device):
    gen = make_generator(device, 1)
    exact = EpsilonFromScore(GaussianScore(MEAN, COV))
    x0 = GaussianScore(MEAN, COV).sample(40000, generator=gen, device=device, dtype=torch.float64)
    t = 0.01 + 4 * torch.rand(x0.shape[0], generator=gen, device=device, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=gen, device=device, dtype=torch.float64)
    covs = [residual_cov(float(s)) for s in t.cpu()[:4000]]  # a subsample for the closed form's mean
    expected = sum(float(torch.trace(A)) for A in covs) / len(covs)
    spread = torch.tensor([float(torch.trace(A)) for A in covs], dtype=torch.float64).std()
    # Error: the conditional loss noise (2 tr A² <= 4 per sample, over 40000) plus the closed form's
    # own subsampling error (std of tr A over 4000 times); 5 of each.
    tolerance = 5 * math.sqrt(4 / x0.shape[0]) + 5 * float(spread) / math.sqrt(len(covs))
    assert abs(float(eps_loss(exact, x0, t, noise)) - expected) < tolerance


def test_eps_loss_refuses_mismatched_noise():
    with pytest.raises(ValueError, match="noise"):
        eps_loss(EpsilonMLP(2), torch.zeros(4, 2), 0.5, torch.zeros(4, 3))


# -- training ------------------------------------------------------------------------------------

@pytest.mark.slow  # a 1500-step training run (shared with tests/test_recovery.py through fit_gaussian's cache)
def test_short_training_learns_most_of_the_learnable_loss(device):
    result = fit_gaussian(device.type, FAST)
    exact = EpsilonFromScore(gaussian_2d())
    gen = make_generator(device, 5)
    x0 = gaussian_2d().sample(20000, generator=gen, device=device, dtype=torch.float32)
    t = torch.exp(torch.empty(20000, device=device).uniform_(math.log(0.01), math.log(10.0), generator=gen))
    noise = torch.randn(x0.shape, generator=gen, device=device)
    with torch.no_grad():
        irreducible = eps_loss(exact, x0.double(), t.double(), noise.double())
        learned = eps_loss(result.ema_model, x0, t, noise)
        untrained = eps_loss(EpsilonMLP(2).to(device), x0, t, noise)  # predicts 0
    # With common (x0, t, ε), loss(model) - loss(exact) estimates E‖ε_θ - ε*‖², what is learnable.
    # The fit must remove 95% of it (measured: ~99.5%). Log-uniform t weighs small and large t alike.
    assert float(learned - irreducible) < 0.05 * float(untrained - irreducible)
    losses = result.losses
    assert losses.shape == (FAST.steps,) and bool(torch.isfinite(losses).all())
    # The fresh model predicts 0, so the first losses are ‖ε‖² ≈ d = 2; the grid's irreducible loss is ~0.45.
    assert float(losses[-150:].mean()) < 0.5 * float(losses[:10].mean())
    # The learned score itself, at mid-range times (measured 0.028 and 0.012).
    assert relative_score_error(result.score(), gaussian_2d(), 0.3, device=device.type) < 0.1
    assert relative_score_error(result.score(), gaussian_2d(), 1.0, device=device.type) < 0.05


@pytest.mark.parametrize("sampling", ["uniform", "grid"])
def test_times_come_from_the_configured_law(device, sampling):
    config = TrainConfig(steps=20, batch_size=256, time_sampling=sampling, t_min=0.01, T=5.0,
                         schedule="cosine", schedule_n=50)
    seen = []
    model = EpsilonMLP(2).to(device)
    model.register_forward_pre_hook(lambda module, args: seen.append(args[1].detach().double().cpu()))
    train(model, gaussian_2d(), config, device=device)
    times = torch.cat(seen)
    if sampling == "grid":
        grid = config.beta_schedule().exact_times[1:]
        assert bool(torch.isclose(times[:, None], grid[None, :], rtol=1e-6, atol=0).any(1).all())
        assert times.unique().numel() == 50  # 5120 draws from 50 points: all are hit (P(miss) < 1e-40)
    else:
        assert float(times.min()) >= 0.01 and float(times.max()) <= 5.0
        # U[0.01, 5] has mean 2.505 and std 1.44; 5120 draws: 5 standard errors = 0.1.
        assert abs(float(times.mean()) - 2.505) < 5 * 1.44 / math.sqrt(times.numel())


def test_learning_rate_schedule():
    config = TrainConfig(steps=100, warmup_steps=10, final_lr_fraction=0.1)
    assert config.lr_factor(0) == pytest.approx(0.1) and config.lr_factor(9) == pytest.approx(1.0)
    assert config.lr_factor(10) == pytest.approx(1.0) and config.lr_factor(100) == pytest.approx(0.1)
    assert config.lr_factor(55) == pytest.approx(0.55)  # halfway down the cosine


# -- divergence -----------------------------------------------------------------------------------

def break_at(model: EpsilonMLP, step: int, what: str) -> EpsilonMLP:
    """From optimizer step ``step`` on (one forward call per step), make the output NaN ("output") or
    leave it finite but make its gradient NaN ("gradient": the loss stays finite, the weights do not)."""
    calls = []

    def hook(module, inputs, output):
        calls.append(None)
        if len(calls) <= step:
            return None
        if what == "output":
            return output * math.nan
        output.register_hook(lambda grad: grad * math.nan)
        return None

    model.register_forward_hook(hook)
    return model


def test_a_diverging_run_stops_with_an_error_naming_the_step(device, tmp_path):
    # The reproduction: Adam at lr = 1e30 without clipping overflows within a few steps.
    config = TrainConfig(steps=60, batch_size=32, warmup_steps=0, lr=1e30, grad_clip=None)
    with pytest.raises(TrainingDivergedError, match=r"training diverged: the loss of step \d+ is (nan|inf)") as caught:
        train(EpsilonMLP(2, hidden=16).to(device), gaussian_2d(), config, device=device)
    assert isinstance(caught.value, RuntimeError)
    step = caught.value.step
    assert caught.value.losses.shape == (step + 1,)
    assert bool(torch.isfinite(caught.value.losses[:step]).all()) and not math.isfinite(caught.value.losses[step])


def test_divergence_keeps_the_last_finite_checkpoint(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "run.pt"
    config = TrainConfig(steps=40, batch_size=32, warmup_steps=2)
    with pytest.raises(TrainingDivergedError, match="the loss of step 12 is nan.*keeps the checkpoint of step 10"):
        train(break_at(EpsilonMLP(2, hidden=16), 12, "output"), gaussian_2d(), config, checkpoint_path=path,
              checkpoint_every=5)
    checkpoint = load_checkpoint(path)  # refuses non-finite weights: these are the finite ones of step 10
    assert checkpoint.step == 10 and bool(torch.isfinite(checkpoint.losses).all())


def test_non_finite_weights_after_a_finite_loss_are_never_checkpointed(tmp_path):
    # The last step's loss is finite but its gradient is NaN: only the weight check catches it, before
    # the final checkpoint would overwrite the finite one of step 3.
    torch.manual_seed(3)
    path = tmp_path / "run.pt"
    config = TrainConfig(steps=6, batch_size=32, warmup_steps=2)
    with pytest.raises(TrainingDivergedError, match=r"after step 5 the model weight '[\w.]+' \(\d+ of \d+ entries\) "
                                                    r"has NaN.*keeps the checkpoint of step 3") as caught:
        train(break_at(EpsilonMLP(2, hidden=16), 5, "gradient"), gaussian_2d(), config, checkpoint_path=path,
              checkpoint_every=3)
    assert caught.value.step == 5 and bool(torch.isfinite(caught.value.losses).all())
    assert load_checkpoint(path).step == 3


def test_training_a_model_too_large_for_the_device_fails_before_any_step(monkeypatch):
    # Weights, gradients, EMA and Adam's two moments: 5 copies of the weights must fit.
    model = CountingModel(2, hidden=16)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    monkeypatch.setattr(_memory, "device_memory_bytes", lambda device: 5 * weight_bytes - 1)
    CountingModel.calls = 0
    with pytest.raises(MemoryError, match=f"{weight_bytes:,} bytes of weights.* needs .*more than"):
        train(model, gaussian_2d(), TrainConfig(steps=3, batch_size=4, warmup_steps=0))
    assert CountingModel.calls == 0
    monkeypatch.setattr(_memory, "device_memory_bytes", lambda device: 5 * weight_bytes)
    train(model, gaussian_2d(), TrainConfig(steps=3, batch_size=4, warmup_steps=0))  # exactly enough


# -- bad inputs, all refused before any step ------------------------------------------------------

class CountingModel(EpsilonMLP):
    calls = 0

    def forward(self, x, t):
        type(self).calls += 1
        return super().forward(x, t)


@pytest.mark.parametrize("data, kwargs, error, fragment", [
    (torch.tensor([[0.0, 1.0], [math.nan, 0.0]]), {}, ValueError, "finite"),
    (torch.tensor([[0.0, 1.0], [math.inf, 0.0]]), {}, ValueError, "finite"),
    (torch.zeros(5, 3), {}, ValueError, "dim = 2"),
    (torch.zeros(0, 2), {}, ValueError, "N >= 1"),
    ([], {}, ValueError, "empty"),
    ([torch.zeros(4, 3)], {}, ValueError, "dim = 2"),
    ([torch.full((4, 2), math.nan)], {}, ValueError, "NaN"),
    (GaussianScore([0.0, 0.0, 0.0], torch.eye(3)), {}, ValueError, "dim = 2"),
    ("abc", {}, TypeError, "data"),
    (torch.zeros(5, 2), {"config": "fast"}, TypeError, "TrainConfig"),
    (torch.zeros(5, 2), {"checkpoint_every": 0}, ValueError, "checkpoint_every"),
    (torch.zeros(5, 2), {"checkpoint_every": 5}, ValueError, "checkpoint_path"),
    (torch.zeros(5, 2), {"resume": True}, ValueError, "checkpoint_path"),
    (torch.zeros(5, 2), {"checkpoint_path": "/nonexistent-dir/x.pt"}, ValueError, "does not exist"),
    (torch.zeros(5, 2), {"generator": 42}, ValueError, "generator"),
])
def test_bad_training_inputs_are_refused_before_any_step(data, kwargs, error, fragment):
    CountingModel.calls = 0
    model = CountingModel(2)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(error, match=fragment):
        train(model, data, **({"config": TrainConfig(steps=3, batch_size=4, warmup_steps=0)} | kwargs))
    assert CountingModel.calls == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"t_min": 0.0}, ValueError, r"t_min must be in \(0, T\)"),
    ({"t_min": -1e-3}, ValueError, "t_min"),
    ({"t_min": 11.0}, ValueError, "t_min"),
    ({"T": math.inf}, ValueError, r"T must be in \(0, inf\)"),
    ({"T": math.nan}, ValueError, "T must"),
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
    ({"batch_size": 2.0}, TypeError, "batch_size"),
    ({"steps": 0}, ValueError, "steps must be an int >= 1"),
    ({"lr": 0.0}, ValueError, r"lr must be in \(0, inf\)"),
    ({"lr": math.nan}, ValueError, "lr"),
    ({"warmup_steps": -1}, ValueError, "warmup_steps"),
    ({"ema_decay": 1.0}, ValueError, r"ema_decay must be in \[0, 1\)"),
    ({"grad_clip": 0.0}, ValueError, "grad_clip"),
    ({"final_lr_fraction": 2.0}, ValueError, "final_lr_fraction"),
    ({"time_sampling": "log"}, ValueError, "time_sampling"),
    ({"time_sampling": "grid", "schedule_n": 10}, ValueError, "n > 20"),
    ({"schedule": "quadratic"}, ValueError, "schedule"),
    ({"seed": -1}, ValueError, "seed"),
])
def test_bad_configs_are_refused(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        TrainConfig(**kwargs)


def test_config_fields_are_stored_as_python_numbers():
    # A numpy scalar would not load back from a checkpoint read with weights_only=True.
    config = TrainConfig(steps=np.int64(30), lr=np.float32(0.5), T=5)
    assert type(config.steps) is int and config.steps == 30
    assert type(config.lr) is float and config.lr == 0.5
    assert type(config.T) is float and config.T == 5.0
    assert config == TrainConfig(steps=30, lr=0.5, T=5.0)


def test_grid_schedules_are_the_named_schedules():
    from diffsde.schedules import SCHEDULES

    for name, make in SCHEDULES.items():
        config = TrainConfig(time_sampling="grid", schedule=name, schedule_n=50)
        assert torch.equal(config.beta_schedule().betas, make(50).betas)
