"""``sample(..., capture=True)``: the fixed-grid loop as one CUDA graph.

On the CPU: the refusals, the default left unchanged, and the pieces that need no GPU (the
cache's keys and bound, the keeping of tensors a capture reads). On CUDA (the ``gpu`` marker):
the captured run against the eager one. Every comparison is bit for bit (``torch.equal``, no
tolerance): a replay launches the kernels the eager loop launches, with the same arguments, and
draws the same Philox numbers from the same (seed, offset), so there is nothing to tolerate.
"""

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import CUDA, make_generator
from diffsde import METHODS, NonFiniteSampleError, TimeGrid, resolve_method, sample
from diffsde.samplers import capture_cache_info, clear_capture_cache
from diffsde.samplers.capture import _GraphCache, _KeepInputs, _method_key, _owner_key, check_generator_api
from diffsde.toys import ring

SCORE = ring().exact_score  # 8 modes in d = 2: a softmax and a matmul per evaluation
GRID = TimeGrid.uniform(5.0, 0.05, 40)
N = 256  # <= 2048 rows: the mixture keeps its per-time constants between calls (see test_kept_*)
GPU = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="CUDA is not available")]


# -- refusals and the default (CPU; the method and progress refusals also on CUDA) -------------


@pytest.mark.parametrize("method", ["torchsde-euler", "ode-RK45", "ode-dopri5"])
def test_capture_refuses_a_method_with_a_runner(device, method):
    with pytest.raises(ValueError, match=f"needs a fixed-grid method.*'{method}' integrates with an external runner"):
        sample(SCORE, method, grid=GRID, n_samples=4, generator=0, device=device, capture=True)


def test_capture_refuses_a_progress_bar(device):
    with pytest.raises(ValueError, match="progress=False"):
        sample(SCORE, "em", grid=GRID, n_samples=4, generator=0, device=device, progress=True, capture=True)


def test_capture_refuses_the_cpu():
    with pytest.raises(ValueError, match="capture=True needs a CUDA device.*on the CPU there is no per-launch cost"):
        sample(SCORE, "em", grid=GRID, n_samples=4, generator=0, device="cpu", capture=True)


def test_capture_must_be_a_bool(device):
    with pytest.raises(TypeError, match="capture must be a bool"):
        sample(SCORE, "em", grid=GRID, n_samples=4, generator=0, device=device, capture=1)


def test_capture_refuses_a_torch_without_generator_graphs():
    # A torch whose graphs have neither register_generator_state nor lazy registration (< 2.4).
    with pytest.raises(ValueError, match=r"torch >= 2\.4.*generator=None"):
        check_generator_api(object, object)
    check_generator_api(type("Graph", (), {"register_generator_state": None}), object)  # 2.4 and later
    check_generator_api(object, torch.Generator)  # lazy registration: graphsafe_get_state is there


@pytest.mark.parametrize("method", ["em", "ddpm", "pc"])
def test_capture_false_is_the_default(device, seed, method):
    plain = sample(SCORE, method, grid=GRID, n_samples=N, generator=make_generator(device, seed), device=device)
    stated = sample(SCORE, method, grid=GRID, n_samples=N, generator=make_generator(device, seed), device=device,
                    capture=False)
    assert torch.equal(plain, stated)


# -- the cache and the tensors a capture keeps (no GPU needed) -------------------------------------


def test_method_keys_are_stable_and_tell_options_apart():
    # A record rebuilt from the same name and options must hit the cache (steps are new partials
    # each time), and different options must not.
    for variant in METHODS.variants():
        sampler = resolve_method(variant)
        if sampler.runner is None:
            key = _method_key(sampler)
            assert key == _method_key(resolve_method(variant)), variant
            hash(key)
    assert _method_key(resolve_method("ddpm")) != _method_key(resolve_method("ddpm", variance="beta_tilde"))
    assert _method_key(resolve_method("pc")) != _method_key(resolve_method("pc", corrector_steps=2))


def test_owner_keys_take_a_bound_method_by_its_object():
    toy = ring()
    assert _owner_key(toy.score) == _owner_key(toy.score)  # a new bound method at each access
    assert _owner_key(toy.score) != _owner_key(ring().score)
    assert _owner_key(SCORE) == _owner_key(SCORE) != _owner_key(ring().exact_score)


def test_graph_cache_is_a_bounded_lru():
    cache = _GraphCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)  # drops "b"
    assert list(cache.entries) == ["a", "c"] and cache.get("b") is None
    assert (cache.captures, cache.hits) == (3, 1)


def test_keep_inputs_holds_what_was_made_before(device):
    before, other = torch.randn(4, 3, device=device), torch.randn(5, 3, device=device)
    keep = _KeepInputs(device.type)
    with keep:
        made = before * 2.0
        made = made + other[1:]  # a view of an outside tensor: its storage is kept
        torch.stack([made, made]).sum()
    addresses = {t.untyped_storage().data_ptr() for t in keep.kept.values()}
    assert addresses == {before.untyped_storage().data_ptr(), other.untyped_storage().data_ptr()}


# -- CUDA: captured against eager ------------------------------------------------------------------

METHODS_UNDER_TEST = ["em", "vp", "ddpm", "ode-heun", "pc"]


@pytest.fixture
def fresh_cache():
    clear_capture_cache()
    yield
    clear_capture_cache()


def _pair(method, seed, **kwargs):
    """(eager, captured) from two generators in the same state; also the generators."""
    eager_gen, captured_gen = make_generator("cuda", seed), make_generator("cuda", seed)
    eager = sample(SCORE, method, grid=GRID, n_samples=N, generator=eager_gen, device="cuda", **kwargs)
    captured = sample(SCORE, method, grid=GRID, n_samples=N, generator=captured_gen, device="cuda", capture=True,
                      **kwargs)
    return eager, captured, eager_gen, captured_gen


@pytest.mark.parametrize("method", METHODS_UNDER_TEST)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=GPU)])
def test_captured_equals_eager_with_a_generator(fresh_cache, seed, method, device):
    eager, captured, eager_gen, captured_gen = _pair(method, seed)
    assert torch.equal(eager, captured)
    assert torch.equal(eager_gen.get_state(), captured_gen.get_state())  # advanced alike
    info = capture_cache_info()
    # Second call: a replay (no new capture) from the generators' new state, equal again.
    again_eager = sample(SCORE, method, grid=GRID, n_samples=N, generator=eager_gen, device="cuda")
    again = sample(SCORE, method, grid=GRID, n_samples=N, generator=captured_gen, device="cuda", capture=True)
    assert capture_cache_info()["captures"] == info["captures"]
    assert capture_cache_info()["hits"] == info["hits"] + 1
    assert torch.equal(again_eager, again)
    assert not torch.equal(again, captured)  # new x_T and (for the stochastic methods) new noise


@pytest.mark.parametrize("method", METHODS_UNDER_TEST)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=GPU)])
def test_captured_equals_eager_with_the_default_generator(fresh_cache, seed, method, device):
    torch.cuda.manual_seed(seed)
    eager = sample(SCORE, method, grid=GRID, n_samples=N, device="cuda")
    after_eager = torch.cuda.get_rng_state()
    torch.cuda.manual_seed(seed)
    captured = sample(SCORE, method, grid=GRID, n_samples=N, device="cuda", capture=True)
    assert torch.equal(eager, captured)
    assert torch.equal(torch.cuda.get_rng_state(), after_eager)  # advanced as the eager run advanced it
    # Second call, from where both left the generator: a replay, equal to the eager run from there.
    again = sample(SCORE, method, grid=GRID, n_samples=N, device="cuda", capture=True)
    torch.cuda.set_rng_state(after_eager)
    again_eager = sample(SCORE, method, grid=GRID, n_samples=N, device="cuda")
    assert (capture_cache_info()["captures"], capture_cache_info()["hits"]) == (1, 1)
    assert torch.equal(again, again_eager)
    assert not torch.equal(again, captured)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=GPU)])
def test_captured_equals_eager_in_other_dtypes(fresh_cache, seed, dtype, device):
    # float16 is carried in float32 by the loop and seen by the score rounded: part of the key.
    eager, captured, _, _ = _pair("em", seed, dtype=dtype)
    assert captured.dtype == dtype and torch.equal(eager, captured)


def _cuda_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cuda").manual_seed(seed)


def test_capture_refuses_an_int_seed():
    # An int seed selects counter-based noise (reseeded per chunk and step on the host): a graph
    # cannot hold it, so capture asks for a torch.Generator instead of changing what the seed means.
    if not CUDA:
        pytest.skip("CUDA is not available")
    with pytest.raises(ValueError, match="capture=True replays noise from a torch.Generator"):
        sample(SCORE, "em", grid=GRID, n_samples=4, generator=0, device="cuda", capture=True)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=GPU)])
def test_a_new_generator_replays_the_same_graph(fresh_cache, seed, device):
    # The graph draws from its own generator, loaded from the caller's: a new generator seeded alike
    # replays the same graph. (An int seed selects counter-based noise, which capture refuses.)
    eager = sample(SCORE, "em", grid=GRID, n_samples=N, generator=_cuda_generator(seed), device="cuda")
    first = sample(SCORE, "em", grid=GRID, n_samples=N, generator=_cuda_generator(seed), device="cuda", capture=True)
    second = sample(SCORE, "em", grid=GRID, n_samples=N, generator=_cuda_generator(seed), device="cuda", capture=True)
    assert torch.equal(eager, first) and torch.equal(eager, second)
    assert (capture_cache_info()["captures"], capture_cache_info()["hits"]) == (1, 1)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=GPU)])
def test_captured_path_nfe_and_final_match_eager(fresh_cache, seed, device):
    options = dict(return_path=True, return_info=True, final="denoise", prior="tweedie")
    for _ in range(2):  # a capture, then a replay
        (x_e, path_e, info_e), (x_c, path_c, info_c), _, _ = _pair("ode-heun", seed, **options)
        assert torch.equal(x_e, x_c) and torch.equal(path_e, path_c)
        assert path_c.shape == (GRID.n + 2, N, 2)
        assert info_e["nfe"] == info_c["nfe"] == 2 * GRID.n + 2  # Heun's two per step, Tweedie's start and end
    assert capture_cache_info()["hits"] == 1


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=GPU)])
def test_a_new_shape_or_grid_is_a_new_capture(fresh_cache, seed, device):
    sample(SCORE, "em", grid=GRID, n_samples=N, generator=_cuda_generator(seed), device="cuda", capture=True)
    sample(SCORE, "em", grid=GRID, n_samples=N + 1, generator=_cuda_generator(seed), device="cuda", capture=True)
    sample(SCORE, "em", grid=TimeGrid.uniform(5.0, 0.05, 41), n_samples=N,
           generator=_cuda_generator(seed), device="cuda",
           capture=True)
    sample(SCORE, "ddpm", grid=GRID, n_samples=N, generator=_cuda_generator(seed), device="cuda", capture=True)
    assert (capture_cache_info()["captures"], capture_cache_info()["hits"]) == (4, 0)
    assert capture_cache_info()["graphs"] == 4 and capture_cache_info()["bytes"] > 0


class CachingScore:
    """The exact score of p_0 = N(μ, I), ``s(x, t) = e^{-t/2} μ - x`` (p_t = N(e^{-t/2} μ, I)), with
    its per-time shift cached on the device, as the mixtures cache their constants."""

    dim = 2

    def __init__(self):
        self.mean, self.cache = torch.tensor([1.0, -2.0]), {}

    def __call__(self, x, t):
        shift = self.cache.get(t)
        if shift is None:
            shift = self.cache[t] = (self.mean * torch.exp(torch.tensor(-t / 2))).to(x.device, x.dtype)
        return shift - x


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=GPU)])
def test_kept_tensors_outlive_the_scores_cache(fresh_cache, seed, device):
    # The eager run fills the cache; the capture reads those tensors; the cache then drops them
    # and their memory is handed out again (filled with NaN). The replay must still read the
    # constants, which the capture keeps alive.
    score = CachingScore()
    sample(score, "em", grid=GRID, n_samples=N, generator=_cuda_generator(seed), device="cuda")
    sample(score, "em", grid=GRID, n_samples=N, generator=_cuda_generator(seed), device="cuda", capture=True)
    score.cache.clear()
    junk = [torch.full((2,), float("nan"), device="cuda") for _ in range(4 * GRID.n)]
    replayed = sample(score, "em", grid=GRID, n_samples=N,
                      generator=_cuda_generator(seed + 1), device="cuda", capture=True)
    eager = sample(score, "em", grid=GRID, n_samples=N, generator=_cuda_generator(seed + 1), device="cuda")
    assert capture_cache_info()["hits"] == 1
    assert torch.equal(replayed, eager)
    del junk


def nan_below(t_bad, x, t):
    """The score of N(0, I) (s = -x) above forward time t_bad, NaN below it."""
    return -x if t >= t_bad else x * float("nan")


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=GPU)])
def test_a_non_finite_captured_run_names_its_step(fresh_cache, seed, device):
    score = functools.partial(nan_below, 1.0)
    bad = next(interval for interval in GRID.intervals() if interval.t_from < 1.0)
    for _ in range(2):  # at the capture, and at a replay
        with pytest.raises(NonFiniteSampleError, match=f"'em'.* at step {bad.index} of {GRID.n}"):
            sample(score, "em", grid=GRID, n_samples=N, dim=2,
                   generator=_cuda_generator(seed), device="cuda", capture=True)
    assert capture_cache_info()["hits"] == 1
    out = sample(score, "em", grid=GRID, n_samples=N, dim=2,
                 generator=_cuda_generator(seed), device="cuda", capture=True,
                 check_finite=False)
    assert torch.isnan(out).all()


SYNCING = """
from diffsde import TimeGrid, sample
def syncing(x, t):
    return -x * float(x.abs().max())  # a host read: not allowed inside a capture
try:
    sample(syncing, "em", grid=TimeGrid.uniform(5.0, 0.05, 40), n_samples=64, dim=2,
           generator=_cuda_generator(0), device="cuda",
           capture=True)
except RuntimeError as err:
    print(err)
"""


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=GPU)])
def test_a_score_that_syncs_cannot_be_captured(device, tmp_path):
    # In a child process: a failed capture may leave the CUDA context unusable (as PyTorch's own
    # tests of capture errors assume), which must not reach the other tests.
    done = subprocess.run([sys.executable, "-c", SYNCING], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert "capturing sampler 'em' as a CUDA graph failed" in done.stdout, done.stdout + done.stderr
    assert "capture=False" in done.stdout
