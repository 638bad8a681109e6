"""Checkpoints: atomic writes, checked reads, bit-for-bit resume, models rebuilt from the registry."""

import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import diffsde.training.checkpoints as checkpoints
from conftest import make_generator
from diffsde.nets import EpsilonMLP
from diffsde.training import (MODELS, CheckpointError, TrainConfig, TrainState, build_model, load_checkpoint,
                              register_model, save_checkpoint, state_shapes, train)
from toy_training import gaussian_2d


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
    real_save = checkpoints.save_checkpoint

    def save_then_die(where, state):
        real_save(where, state)
        if state.step == 15:
            raise Interrupted

    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_die)
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
    state = TrainState.new(model, config, torch.Generator())
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
    payload["checksum"] = checkpoints._checksum(payload)
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


# -- files written before the training package (format version 1) --------------------------------

OLD_FILE = Path(__file__).parent / "data" / "checkpoint_v1.ckpt"
# tests/data/checkpoint_v1.ckpt was written by diffsde 0.1.0's single-module training.py: EpsilonMLP(2, hidden=8,
# depth=1, embed_dim=4) trained on N((1, -0.5), [[1.5, 0.4], [0.4, 0.3]]) with OLD_CONFIG, stopped after the
# checkpoint of step 3.
OLD_CONFIG = TrainConfig(steps=6, batch_size=16, warmup_steps=2, lr=3e-3, seed=11)


def old_data():
    from diffsde.scores import GaussianScore

    return GaussianScore([1.0, -0.5], [[1.5, 0.4], [0.4, 0.3]])


def test_a_checkpoint_written_by_the_old_module_loads_and_rebuilds(tmp_path):
    checkpoint = load_checkpoint(OLD_FILE)  # checksum, keys, types and shapes all checked
    assert checkpoint.step == 3 and checkpoint.config == OLD_CONFIG
    assert (checkpoint.model_class, checkpoint.model_config) == ("EpsilonMLP", {"dim": 2, "hidden": 8, "depth": 1,
                                                                               "embed_dim": 4})
    model = checkpoint.build_model()
    assert isinstance(model, EpsilonMLP) and not model.training
    assert all(torch.equal(a, checkpoint.ema_state[k]) for k, a in model.state_dict().items())


def test_resuming_an_old_checkpoint_equals_resuming_the_same_state_saved_anew(tmp_path):
    # Read the old file into a state, write it with today's writer, and resume from both: the two
    # continuations must agree bit for bit (the format and what it restores are unchanged).
    old_path, new_path = tmp_path / "old.pt", tmp_path / "new.pt"
    old_path.write_bytes(OLD_FILE.read_bytes())
    state = TrainState.new(EpsilonMLP(2, hidden=8, depth=1, embed_dim=4), OLD_CONFIG, torch.Generator())
    load_checkpoint(old_path).restore(state)
    save_checkpoint(new_path, state)
    runs = [train(EpsilonMLP(2, hidden=8, depth=1, embed_dim=4), old_data(), OLD_CONFIG, checkpoint_path=path,
                  resume=True) for path in (old_path, new_path)]
    assert torch.equal(runs[0].losses, runs[1].losses)
    assert torch.equal(runs[0].losses[:3], load_checkpoint(OLD_FILE).losses)
    assert bool(torch.isfinite(runs[0].losses).all())
    for a, b in zip(runs[0].ema_model.state_dict().values(), runs[1].ema_model.state_dict().values()):
        assert torch.equal(a, b)


# -- the model registry ----------------------------------------------------------------------------

class TinyNet(nn.Module):
    """A second model class: ε = W2 tanh(W1 [x, t]) — not an EpsilonMLP, with its own config."""

    def __init__(self, dim: int, width: int = 8):
        super().__init__()
        self.dim, self.width = dim, width
        self.hidden = nn.Linear(dim + 1, width)
        self.output = nn.Linear(width, dim)

    @property
    def config(self) -> dict:
        return {"dim": self.dim, "width": self.width}

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.output(torch.tanh(self.hidden(torch.cat([x, t[:, None]], dim=1))))


@pytest.fixture
def tiny_registered():
    register_model(TinyNet)
    yield TinyNet
    MODELS.pop("TinyNet")


def tiny_run(tmp_path, name="tiny.pt"):
    torch.manual_seed(4)
    path = tmp_path / name
    result = train(TinyNet(2, width=6), gaussian_2d(), TrainConfig(steps=8, batch_size=16, warmup_steps=2),
                   checkpoint_path=path)
    return result, path


def test_a_registered_model_class_is_rebuilt_from_its_checkpoint(tmp_path, tiny_registered):
    assert MODELS["TinyNet"] is TinyNet and MODELS["EpsilonMLP"] is EpsilonMLP
    result, path = tiny_run(tmp_path)
    checkpoint = load_checkpoint(path)
    assert (checkpoint.model_class, checkpoint.model_config) == ("TinyNet", {"dim": 2, "width": 6})
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    for ema, trained in ((True, result.ema_model), (False, result.model)):
        rebuilt = checkpoint.build_model(ema=ema)
        assert type(rebuilt) is TinyNet and not rebuilt.training
        assert torch.equal(rebuilt(x, 0.3), trained(x, 0.3))


def test_a_registered_model_checkpoint_with_wrong_shapes_is_refused(tmp_path, tiny_registered):
    _, path = tiny_run(tmp_path)
    rewrite(path, lambda c: c.update(model_config={"dim": 2, "width": 7}))
    with pytest.raises(CheckpointError, match="shapes"):
        load_checkpoint(path)
    rewrite(path, lambda c: c.update(model_config={"dim": 2, "depth": 7}))
    with pytest.raises(CheckpointError, match="invalid TinyNet config"):
        load_checkpoint(path)


def test_an_unregistered_model_class_trains_and_resumes_but_is_not_rebuilt(tmp_path):
    assert "TinyNet" not in MODELS
    _, path = tiny_run(tmp_path)  # training and checkpoints need no registry
    checkpoint = load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"TinyNet, which is not a registered.*\['EpsilonMLP'\].*register_model"):
        checkpoint.build_model()


def test_register_model_refuses_what_it_could_not_rebuild(tiny_registered):
    assert register_model(TinyNet) is TinyNet  # registering the same class again is harmless

    class NoConfig(nn.Module):
        pass

    with pytest.raises(TypeError, match="declares no `config`"):
        register_model(NoConfig)
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_model(TinyNet(2))
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_model(dict)

    class Clash(nn.Module):
        config = {}

    Clash.__name__ = "TinyNet"
    with pytest.raises(ValueError, match="another model class named 'TinyNet'"):
        register_model(Clash)
    assert MODELS["TinyNet"] is TinyNet


# -- non-finite weights, unsafe advice, impossible sizes -------------------------------------------

@pytest.mark.parametrize("entry, value", [("model", math.nan), ("ema", math.inf)])
def test_non_finite_weights_are_refused_on_load(tmp_path, entry, value):
    _, path = checkpoint_state(tmp_path)
    rewrite(path, lambda c: c[entry]["blocks.0.weight"].view(-1)[3:5].fill_(value))  # a valid checksum
    with pytest.raises(CheckpointError, match=rf"{entry} weight 'blocks.0.weight' \(2 of \d+ entries\) has NaN"):
        load_checkpoint(path)


def test_non_finite_weights_are_never_written(tmp_path):
    state, path = checkpoint_state(tmp_path)
    before = path.read_bytes()
    with torch.no_grad():
        state.ema_model.output.bias[0] = math.nan
    with pytest.raises(ValueError, match="ema weight 'output.bias'.*left as it was"):
        save_checkpoint(path, state)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["run.pt"]


def _pickle_protocol_2(path):
    import pickle

    path.write_bytes(pickle.dumps({"format": Path("x")}, protocol=2))


@pytest.mark.parametrize("damage", [
    lambda p: torch.save(Path("x"), p),  # a Python object: torch's message suggests weights_only=False
    lambda p: torch.save({"format": print}, p),  # a function
    lambda p: p.write_bytes(b"not a checkpoint at all"),
    lambda p: p.write_bytes(p.read_bytes()[:1000]),
    lambda p: p.write_bytes(b""),
    _pickle_protocol_2,
    lambda p: torch.save({"a": Path("x")}, p, _use_new_zipfile_serialization=False),
], ids=["object", "function", "garbage", "truncated", "empty", "plain-pickle", "legacy-format"])
def test_corrupt_checkpoint_messages_never_suggest_unsafe_loading(tmp_path, damage):
    _, path = checkpoint_state(tmp_path)
    damage(path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as caught:
        load_checkpoint(path)
    chain, error = [], caught.value
    while error is not None:  # what a traceback would print: the error and everything chained to it
        chain.append(str(error))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    text = "\n".join(chain)
    for unsafe in ("weights_only", "safe_globals", "trust"):
        assert unsafe not in text
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)  # one plain line


@pytest.mark.parametrize("hidden", [10**9, 10**10, 10**6])
def test_a_config_asking_for_a_huge_model_is_refused_before_allocating(tmp_path, monkeypatch, hidden):
    _, path = checkpoint_state(tmp_path)
    rewrite(path, lambda c: c.update(model_config={**c["model_config"], "hidden": hidden}))

    def no_allocation(*args, **kwargs):
        raise AssertionError("a layer was built")

    monkeypatch.setattr(nn.Linear, "__init__", no_allocation)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message
    # Depth 3, embed 32, d = 2: blocks (2h + h) + 2 (h^2 + h), time projections 3 * 32 h, output 2h + 2.
    count = 2 * hidden**2 + (3 + 2 + 3 * 32 + 2) * hidden + 2
    assert f"asks for EpsilonMLP weights of {count:,} parameters" in message and "stores" in message


def test_a_registered_class_is_sized_on_the_meta_device(tmp_path, tiny_registered):
    _, path = tiny_run(tmp_path)
    rewrite(path, lambda c: c.update(model_config={"dim": 2, "width": 10**12}))
    with pytest.raises(CheckpointError, match=f"asks for TinyNet weights of {(3 + 1) * 10**12 + 2 * (10**12 + 1):,} "
                                              f"parameters"):
        load_checkpoint(path)


@pytest.mark.parametrize("config", [{"dim": 2, "hidden": 8, "depth": 1, "embed_dim": 4}, {"dim": 3, "hidden": 16},
                                    {"dim": 1, "hidden": 5, "depth": 4, "embed_dim": 2}])
def test_state_shapes_are_those_of_the_built_model(config):
    built = {name: tuple(value.shape) for name, value in EpsilonMLP(**config).state_dict().items()}
    assert state_shapes(EpsilonMLP, config) == built
    assert state_shapes("EpsilonMLP", config) == built


def test_build_model_refuses_a_model_larger_than_memory_naming_its_size():
    with pytest.raises(MemoryError, match=r"EpsilonMLP\(dim=2, hidden=1000000\) with 2,000,10\d,\d{3},\d{3} "
                                          r"parameters needs 8 TB .*more than"):
        build_model(EpsilonMLP, {"dim": 2, "hidden": 10**6})
    torch.manual_seed(0)
    model = build_model("EpsilonMLP", {"dim": 2, "hidden": 8})
    torch.manual_seed(0)
    reference = EpsilonMLP(2, hidden=8)
    assert isinstance(model, EpsilonMLP) and model.config == reference.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


class ReadsAValue(TinyNet):
    """A constructor that reads a tensor's value, which the meta device cannot give."""

    def __init__(self, dim: int, width: int = 8):
        super().__init__(dim, width)
        self.gain = float(torch.ones(()).item())


def test_a_class_that_cannot_be_sized_on_the_meta_device_still_loads(tmp_path):
    register_model(ReadsAValue)
    try:
        torch.manual_seed(4)
        path = tmp_path / "reads.pt"
        train(ReadsAValue(2, width=6), gaussian_2d(), TrainConfig(steps=4, batch_size=16, warmup_steps=1),
              checkpoint_path=path)
        with pytest.raises(NotImplementedError, match="meta device"):
            state_shapes(ReadsAValue, {"dim": 2, "width": 6})
        assert type(load_checkpoint(path).build_model()) is ReadsAValue
        assert type(build_model(ReadsAValue, {"dim": 2, "width": 6})) is ReadsAValue
        rewrite(path, lambda c: c.update(model_config={"dim": 2, "width": 7}))
        with pytest.raises(CheckpointError, match="shapes"):
            load_checkpoint(path)
    finally:
        MODELS.pop("ReadsAValue")
