"""The ε-loss, the training loop, and checkpoints (atomic writes, checks, bit-for-bit resume)."""

import math
import os
from pathlib import Path

import pytest
import torch

import diffsde.training as training
from conftest import make_generator
from diffsde.nets import EpsilonMLP
from diffsde.scores import EpsilonFromScore, GaussianScore
from diffsde.training import (CheckpointError, TrainConfig, eps_loss, load_checkpoint, save_checkpoint, train)
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


# -- checkpoints ---------------------------------------------------------------------------------

SMALL = TrainConfig(steps=40, batch_size=64, warmup_steps=5, lr=3e-3)


class Interrupted(Exception):
    """Stands for a killed process."""


def data_for(kind: str, device):
    if kind == "tensor":
        return gaussian_2d().sample(500, generator=make_generator(device, 7), device=device)
    if kind == "distribution":
        return gaussian_2d()
    gen = torch.Generator().manual_seed(8)
    return [gaussian_2d().sample(32, generator=gen) for _ in range(7)]  # cycled, re-iterable


def fresh_model(device):
    torch.manual_seed(3)
    return EpsilonMLP(2, hidden=32).to(device)


@pytest.mark.parametrize("kind", ["tensor", "distribution", "iterable"])
def test_resumed_run_equals_uninterrupted_run(device, tmp_path, monkeypatch, kind):
    reference = train(fresh_model(device), data_for(kind, device), SMALL, device=device)

    path = tmp_path / "run.pt"
    real_save = training.save_checkpoint

    def save_then_die(where, state):
        real_save(where, state)
        if state.step == 15:
            raise Interrupted

    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        train(fresh_model(device), data_for(kind, device), SMALL, device=device, checkpoint_path=path,
              checkpoint_every=5)
    monkeypatch.undo()
    assert load_checkpoint(path).step == 15

    other = EpsilonMLP(2, hidden=32).to(device)  # different initial weights: all must come from the file
    resumed = train(other, data_for(kind, device), SMALL, device=device, checkpoint_path=path, resume=True)
    # The same generator state, optimizer moments and EMA at step 15 give the same arithmetic after it.
    assert torch.equal(resumed.losses, reference.losses)
    for got, want in ((resumed.model, reference.model), (resumed.ema_model, reference.ema_model)):
        for a, b in zip(got.state_dict().values(), want.state_dict().values()):
            assert torch.equal(a, b)
    final = load_checkpoint(path)
    assert final.step == SMALL.steps and torch.equal(final.losses, reference.losses)


def test_checkpoint_rebuilds_the_trained_model(tmp_path):
    path = tmp_path / "model.pt"
    result = train(fresh_model("cpu"), gaussian_2d(), SMALL, checkpoint_path=path, progress=True)
    checkpoint = load_checkpoint(path)
    assert checkpoint.config == SMALL and checkpoint.model_config == result.ema_model.config
    x = torch.randn(10, 2)
    assert torch.equal(checkpoint.build_model()(x, 0.3), result.ema_model(x, 0.3))
    assert torch.equal(checkpoint.build_model(ema=False)(x, 0.3), result.model(x, 0.3))


def test_existing_checkpoint_is_not_overwritten_without_resume(tmp_path):
    path = tmp_path / "run.pt"
    train(fresh_model("cpu"), gaussian_2d(), SMALL, checkpoint_path=path)
    with pytest.raises(FileExistsError, match="resume=True"):
        train(fresh_model("cpu"), gaussian_2d(), SMALL, checkpoint_path=path)
    with pytest.raises(FileNotFoundError):
        train(fresh_model("cpu"), gaussian_2d(), SMALL, checkpoint_path=tmp_path / "missing.pt", resume=True)


def checkpoint_state(tmp_path, steps=10):
    """A TrainState after a short run, and the path of its checkpoint."""
    path = tmp_path / "run.pt"
    config = TrainConfig(steps=steps, batch_size=32, warmup_steps=2)
    model = fresh_model("cpu")
    train(model, gaussian_2d(), config, checkpoint_path=path)
    state = training._new_state(model, config, torch.Generator())
    load_checkpoint(path).restore(state)
    return state, path


def test_a_crash_while_writing_leaves_the_old_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    state, path = checkpoint_state(tmp_path)
    before = path.read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.seek(0)
        handle.truncate(100)  # part of a file is on disk ...
        raise OSError("disk full")  # ... when the writer dies

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    state.step = 3  # something different to write
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, state)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path).step == 10
    assert sorted(os.listdir(tmp_path)) == ["run.pt"]


def rewrite(path: Path, edit) -> None:
    payload = torch.load(path, weights_only=True)
    edit(payload)
    payload["checksum"] = training._checksum(payload)
    torch.save(payload, path)


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated or corrupt"),
    (lambda p: p.write_bytes(b""), "truncated or corrupt"),
    (lambda p: p.write_bytes(b"not a checkpoint at all"), "truncated or corrupt"),
    (lambda p: torch.save({"weights": torch.zeros(3)}, p), "not a diffsde training checkpoint"),
    (lambda p: torch.save(Path("x"), p), "truncated or corrupt"),  # weights_only refuses arbitrary objects
    (lambda p: rewrite(p, lambda c: c.update(version=2)), "version 2"),
    (lambda p: rewrite(p, lambda c: c.pop("optimizer")), "'optimizer'"),
    (lambda p: rewrite(p, lambda c: c.update(model_config={**c["model_config"], "hidden": 16})), "shapes"),
    (lambda p: rewrite(p, lambda c: c.update(losses=c["losses"][:-1])), "losses"),
    (lambda p: rewrite(p, lambda c: c["train_config"].update(lr=-1.0)), "train_config"),
], ids=["truncated", "empty", "garbage", "foreign", "pickled-object", "version", "missing-key", "config-shape",
        "losses-length", "bad-config"])
def test_damaged_checkpoints_are_refused(tmp_path, damage, fragment):
    _, path = checkpoint_state(tmp_path)
    damage(path)
    with pytest.raises(CheckpointError, match=fragment):
        load_checkpoint(path)


def test_flipped_bytes_inside_the_weights_are_caught_by_the_checksum(tmp_path):
    state, path = checkpoint_state(tmp_path)
    data = bytearray(path.read_bytes())
    # Flip a byte inside a stored tensor's raw data (the zip stores it uncompressed): torch.load
    # itself does not notice and would return silently wrong values; only the checksum does.
    weights = state.model.output.weight.detach().numpy().tobytes()
    where = bytes(data).find(weights)
    assert where > 0
    data[where + len(weights) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not torch.equal(torch.load(path, weights_only=True)["model"]["output.weight"], state.model.output.weight)
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


@pytest.mark.parametrize("model, config, fragment", [
    (lambda: EpsilonMLP(2, hidden=16), TrainConfig(steps=10, batch_size=32, warmup_steps=2), "EpsilonMLP"),
    (lambda: EpsilonMLP(2, hidden=32), TrainConfig(steps=10, batch_size=32, warmup_steps=2, lr=1e-3), "lr"),
    (lambda: EpsilonMLP(2, hidden=32), TrainConfig(steps=20, batch_size=32, warmup_steps=2), "steps"),
], ids=["model", "lr", "steps"])
def test_resume_refuses_a_mismatched_model_or_config(tmp_path, model, config, fragment):
    _, path = checkpoint_state(tmp_path)
    with pytest.raises(CheckpointError, match=fragment):
        train(model(), gaussian_2d(), config, checkpoint_path=path, resume=True)
