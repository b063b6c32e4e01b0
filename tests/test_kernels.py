"""The numba kernels (train.kernels: numba) against the NumPy reference: bit for bit.

Every kernel does the reference's float32 operations in the reference's order, so results are
compared with their bits (``same_bits``), not with a tolerance; that includes -0.0, NaN and
infinities. Nothing here is exempt: tanh and sigmoid, whose NumPy SIMD exp/tanh round
differently from numba's libm calls (up to 1 ulp, on a third of the inputs), keep NumPy's exp
and tanh, and the fused layer does the rest of the work around them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nnletters.cli import main
from nnletters.config import AugmentConfig, Config, ModelConfig, OptimConfig, TrainConfig
from nnletters.data.augment import Augmenter
from nnletters.nn.ema import EMA
from nnletters.nn.layers import Activation, Dropout
from nnletters.nn.model import MLP
from nnletters.nn.optim import build_optimizer
from nnletters.training import build, train_epoch

pytest.importorskip("numba", reason="train.kernels: numba needs the 'fast' extra (numba)")

from nnletters.nn import kernels  # noqa: E402
from nnletters.nn.fused import (  # noqa: E402
    FusedActivation,
    FusedDense,
    FusedStep,
    draw_uniform_bits,
    keep_threshold,
)

REPO = Path(__file__).resolve().parents[1]
ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid"]
OPTIMISERS = ["sgd", "momentum", "nesterov", "adam", "adamw"]
# Inputs where an elementwise kernel is most likely to part from NumPy.
SPECIAL = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 1e-40, -1e-40, 88.0, -88.0, 100.0,
                    -100.0, 3.4e38, -3.4e38, 1.0, -1.0], dtype=np.float32)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Identical float32 arrays, bit for bit (so -0.0 != 0.0, and NaN == the same NaN)."""
    assert a.dtype == b.dtype == np.float32
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def pre_activations(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """(n, width) float32: normal values, large ones, and the special values."""
    z = (rng.standard_normal((n, width)) * 4).astype(np.float32)
    z.flat[:SPECIAL.size] = SPECIAL
    z[1, :] *= np.float32(30.0)
    return z


# --------------------------------------------------------------------------- layer kernels


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_layer_kernels_match_numpy_bit_for_bit(activation, dropout):
    """Bias + activation + dropout forward, and dropout + derivative backward, against
    Dense's bias add, Activation and Dropout, on the same generator."""
    rng = np.random.default_rng(3)
    z = pre_activations(rng, 9, 40)
    b = rng.standard_normal(40).astype(np.float32)
    da = rng.standard_normal((9, 40)).astype(np.float32)
    da.flat[:SPECIAL.size] = SPECIAL[::-1]

    ref_layers = [Activation(activation)] + ([Dropout(dropout, np.random.default_rng(7))]
                                             if dropout else [])
    with np.errstate(all="ignore"):  # inf * 0 and friends, on purpose
        out_ref = z + b
        for layer in ref_layers:
            out_ref = layer.forward(out_ref, train=True)
        d_ref = da.copy()
        for layer in reversed(ref_layers):
            d_ref = layer.backward(d_ref)

    dense = FusedDense(40, 40, "he", rng)
    dense.b[...] = b
    fused = FusedActivation(activation, dense, dropout, np.random.default_rng(7))
    out = fused.forward(z.copy(), train=True)
    d = fused.backward(da.copy())

    assert same_bits(out, out_ref)
    assert same_bits(fused.a, ref_layers[0].a)
    assert same_bits(d, d_ref)


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.Philox])
@pytest.mark.parametrize("before", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [1, 4, 5, 6, 7, 360, 361, 131072])
def test_dropout_bits_are_the_uniforms_draws_and_leave_the_same_state(n, before,
                                                                     bit_generator):
    """The fused layer's 32-bit draws are those behind rng.random(float32), whatever half-word
    the generator keeps before and after (odd counts before and odd sizes), and the state
    left is NumPy's own, so every later draw of the run is unchanged."""
    ref, ours = (np.random.Generator(bit_generator(11)) for _ in range(2))
    for g in (ref, ours):
        g.random(before, dtype=np.float32)
    u = ref.random(n, dtype=np.float32)
    bits = draw_uniform_bits(ours, np.empty(n, dtype=np.uint32))
    assert np.array_equal((bits >> 8).astype(np.float32) / np.float32(1 << 24), u)
    state = [json.dumps(g.bit_generator.state, default=np.ndarray.tolist) for g in (ours, ref)]
    assert state[0] == state[1]
    assert np.array_equal(ours.random(9, dtype=np.float32), ref.random(9, dtype=np.float32))


@pytest.mark.parametrize("p", [1e-7, 0.1, 0.25, 0.3, 0.5, 0.9, 0.9999999])
def test_keep_threshold_is_where_dropout_starts_keeping(p):
    """floor(u + keep) with u = k / 2^24 is 0 below the threshold and 1 from it on."""
    keep = np.float32(1.0 - p)
    k = int(keep_threshold(keep))
    ks = np.arange(max(k - 64, 0), min(k + 64, 1 << 24))
    kept = np.floor(ks.astype(np.float32) / np.float32(1 << 24) + keep) >= 1
    assert np.array_equal(kept, ks >= k)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_model_matches_numpy_in_evaluation(activation):
    x = np.random.default_rng(1).random((5, 12), dtype=np.float32)
    ref = MLP([12, 10, 6, 3], activation, dropout=0.5, rng=np.random.default_rng(0))
    fused = MLP([12, 10, 6, 3], activation, dropout=0.5, rng=np.random.default_rng(0),
                kernels="numba")
    assert same_bits(fused.forward(x), ref.forward(x))
    assert same_bits(fused.predict_proba(x), ref.predict_proba(x))


AUGMENTS = {
    "recipe": dict(translate=0.04, rotate=8, shear=12, scale=0.08, elastic_alpha=1.0,
                   elastic_sigma=6, stroke=0.3),
    "wild affine": dict(translate=0.3, rotate=45, shear=45, scale=0.5),
    "elastic only": dict(elastic_alpha=3.0, elastic_sigma=4),
    "strokes only": dict(stroke=0.7),
    "strokes + affine": dict(rotate=20, stroke=0.5),
}


@pytest.mark.parametrize("fill", [0.0, 1.0])
@pytest.mark.parametrize("kind", list(AUGMENTS))
def test_augment_kernel_matches_numpy_bit_for_bit(kind, fill):
    """Affine + elastic + strokes: the same draws, and the same pixels from one pass."""
    cfg = AugmentConfig(enabled=True, **AUGMENTS[kind])
    x = np.random.default_rng(0).random((40, 16 * 16), dtype=np.float32)
    ref = Augmenter(cfg, 16, np.random.default_rng(1), fill)
    fused = Augmenter(cfg, 16, np.random.default_rng(1), fill, kernels="numba")
    for _ in range(3):
        expected = ref(x.copy()).copy()
        assert same_bits(fused(x.copy()), expected)
        assert not same_bits(expected, x)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_batch_norm_models_train_bit_for_bit(activation):
    """With batch norm the hidden Dense layers have no bias: the fused layer adds none."""
    x = np.random.default_rng(1).random((16, 12), dtype=np.float32)
    y = np.random.default_rng(2).integers(0, 3, 16)
    models = [MLP([12, 10, 6, 3], activation, dropout=0.2, rng=np.random.default_rng(0),
                  batch_norm=True, kernels=kind) for kind in ("numpy", "numba")]
    optimizers = [build_optimizer(OptimConfig(name="adam", lr=0.01), m, m.kernels)
                  for m in models]
    for _ in range(3):
        for model, optimizer in zip(models, optimizers, strict=True):
            model.train_step(x, y)
            optimizer.step(0.01)
    assert same_bits(models[1].theta, models[0].theta)
    assert same_bits(models[1].state_dict()["1/running_var"],
                     models[0].state_dict()["1/running_var"])


# --------------------------------------------------------------------------- optimiser kernels


def optimiser_pair(name: str, weight_decay: float, max_norm: float, ema: float, kind: str):
    model = MLP([12, 10, 6, 3], "relu", rng=np.random.default_rng(0), kernels=kind)
    optimizer = build_optimizer(OptimConfig(name=name, weight_decay=weight_decay,
                                            max_norm=max_norm), model, kind)
    average = EMA(model, ema, optimizer) if ema else None
    return model, optimizer, average


@pytest.mark.parametrize("ema", [0.0, 0.9])
@pytest.mark.parametrize("max_norm", [0.0, 0.5])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("name", OPTIMISERS)
def test_optimiser_kernels_match_numpy_bit_for_bit(name, weight_decay, max_norm, ema):
    """Steps with changing learning rates and gradients (with -0.0 among them): weights,
    optimiser state and the weight average (updated inside the fused pass) stay identical."""
    ref, ref_opt, ref_ema = optimiser_pair(name, weight_decay, max_norm, ema, "numpy")
    fused, fused_opt, fused_ema = optimiser_pair(name, weight_decay, max_norm, ema, "numba")
    assert isinstance(fused_opt, FusedStep) and not isinstance(ref_opt, FusedStep)
    rng = np.random.default_rng(5)
    for step in range(6):
        grad = rng.standard_normal(ref.grad.size).astype(np.float32)
        grad[::7] = -0.0
        ref.grad[...] = grad
        fused.grad[...] = grad
        lr = 0.3 / (step + 1)
        ref_opt.step(lr)
        if ref_ema:
            ref_ema.update()
        fused_opt.step(lr)
        if fused_ema:
            fused_ema.update()  # a no-op: the optimiser's pass did it
        assert same_bits(fused.theta, ref.theta), f"weights differ after step {step + 1}"
    for key, value in ref_opt.state_dict().items():
        other = fused_opt.state_dict()[key]
        assert np.array_equal(other, value) if value.ndim == 0 else same_bits(other, value), key
    if ema:
        assert fused_ema.fused and not ref_ema.fused
        assert same_bits(fused_ema.theta, ref_ema.theta)
        assert fused_ema.updates == ref_ema.updates == 6


# --------------------------------------------------------------------------- training


def small_config(activation: str, kind: str) -> Config:
    return Config(seed=4, model=ModelConfig(hidden=[24, 16], activation=activation,
                                            dropout=0.25, label_smoothing=0.1),
                  optim=OptimConfig(name="adamw", lr=0.01, weight_decay=0.01, ema=0.9),
                  train=TrainConfig(batch_size=16, kernels=kind))


def train_a_few_epochs(cfg: Config) -> tuple[MLP, object, EMA]:
    """build() as ``nnletters train`` does, then 3 epochs on random arrays with the weight
    average updated after every step (as the Trainer does)."""
    data = np.random.default_rng(9)
    X = data.random((100, 30), dtype=np.float32)
    y = data.integers(0, 5, 100)
    rng = np.random.default_rng(cfg.seed)
    model, optimizer, schedule = build(cfg, 30, 5, rng, log=lambda line: None)
    ema = EMA(model, cfg.optim.ema, optimizer)
    for epoch in range(3):
        train_epoch(model, optimizer, X, y, cfg.train.batch_size, rng, schedule.lr(epoch),
                    after_step=ema.update)
    return model, optimizer, ema


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_training_both_ways_gives_the_same_weights_bit_for_bit(activation):
    ref, ref_opt, ref_ema = train_a_few_epochs(small_config(activation, "numpy"))
    fused, fused_opt, fused_ema = train_a_few_epochs(small_config(activation, "numba"))
    assert any(isinstance(layer, FusedActivation) for layer in fused.layers)
    assert not any(isinstance(layer, FusedActivation) for layer in ref.layers)
    assert fused_ema.fused
    assert same_bits(fused.theta, ref.theta)
    assert same_bits(fused_opt.m, ref_opt.m) and same_bits(fused_opt.v, ref_opt.v)
    assert same_bits(fused_ema.theta, ref_ema.theta)
    assert not same_bits(ref.theta, ref_ema.theta)  # the average is not the weights


def test_auto_picks_numba_for_large_models_when_installed():
    assert kernels.resolve("auto", [784, 1024, 512, 10]) == "numba"   # 1.3M parameters
    assert kernels.resolve("auto", [784, 256, 26]) == "numpy"         # the quickstart's 208k
    assert kernels.resolve("numpy", [784, 1024, 512, 10]) == "numpy"
    assert kernels.resolve("numba", [4, 3]) == "numba"
    cfg = small_config("relu", "auto")
    for hidden, expected in (([24, 16], "numpy"), ([1024], "numba")):  # 1.3k, 810k weights
        cfg = replace(cfg, model=replace(cfg.model, hidden=hidden))
        model, optimizer, _ = build(cfg, 784, 5, np.random.default_rng(0), log=print)
        assert model.kernels == expected
        assert isinstance(optimizer, FusedStep) == (expected == "numba")


def test_cli_runs_both_ways_end_identical_and_predict_never_imports_numba(letters_folder,
                                                                          tmp_path):
    """The whole ``nnletters train`` (Trainer, EMA wiring, augmentation, checkpoints) on
    both paths."""
    config = tmp_path / "config.yaml"
    config.write_text(f"data: {{path: '{letters_folder}', val_fraction: 0.25, "
                      "test_fraction: 0.25, augment: {enabled: true, rotate: 10, "
                      "elastic_alpha: 1.0, stroke: 0.3}}\n"
                      "model: {hidden: [16], dropout: 0.2}\n"
                      "optim: {name: adamw, lr: 0.01, weight_decay: 0.001, ema: 0.9}\n"
                      "train: {epochs: 3, batch_size: 8}\n")
    arrays = {}
    for kind in ("numpy", "numba"):
        out = tmp_path / kind
        result = CliRunner().invoke(main, ["train", "--config", str(config), "--out", str(out),
                                           "--set", f"train.kernels={kind}"])
        assert result.exit_code == 0, result.output
        arrays[kind] = {}
        for name in ("last.npz", "best.npz"):
            with np.load(out / name, allow_pickle=False) as npz:
                arrays[kind][name] = {k: npz[k] for k in npz.files if k != "meta"}
    for name, ref in arrays["numpy"].items():
        fused = arrays["numba"][name]
        assert sorted(fused) == sorted(ref)
        for key, value in ref.items():
            assert np.array_equal(fused[key], value), f"{name}: {key}"

    image = next(letters_folder.glob("A/*.png"))
    code = ("import sys; from nnletters.cli import main\n"
            "try:\n"
            f"    main(['predict', '--checkpoint', {str(tmp_path / 'numba')!r}, {str(image)!r}])\n"
            "except SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('numba'))))")
    done = subprocess.run([sys.executable, "-c", "import json\n" + code], cwd=REPO,
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_bad_kernels_value_names_the_key(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("train: {kernels: cuda}\n")
    result = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert result.exit_code == 1
    assert "train.kernels" in result.stderr and "auto, numpy, numba" in result.stderr
    assert result.stderr.count("\n") == 1


def test_first_compile_says_so_and_later_runs_load_the_cache(tmp_path):
    """Two processes on an empty cache folder: the first compiles (and says so), the second
    loads every kernel from disk without a word."""
    code = ("from nnletters.nn import kernels\n"
            "kernels.prepare()\n"
            "names = [*kernels.SIGNATURES, *kernels.HELPERS]\n"
            "print('misses', sum(sum(getattr(kernels, n).stats.cache_misses.values())"
            " for n in names))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    outputs = [subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                              capture_output=True, text=True, check=True).stdout
               for _ in range(2)]
    assert outputs[0].startswith("compiling kernels (once)...\n")
    assert not outputs[0].endswith("misses 0\n")
    assert outputs[1] == "misses 0\n"
    assert any((tmp_path / "numba").rglob("*.nbc"))


def test_another_cpu_gets_its_own_compile_stamp(monkeypatch):
    """numba compiles again for another CPU sharing the cache folder; the stamp that decides
    whether to say "compiling kernels (once)" must follow, or that run would seem to hang."""
    llvm = pytest.importorskip("llvmlite.binding")
    from nnletters.nn import kernels

    here = kernels._stamp()
    assert here == kernels._stamp()
    monkeypatch.setattr(llvm, "get_host_cpu_name", lambda: "another-cpu")
    assert kernels._stamp() != here
    assert kernels._stamp().parent == here.parent


def test_dry_run_shows_the_reference_layers_of_a_large_model(letters_folder):
    """auto would pick numba for 800k parameters; a dry run trains nothing, so it neither
    compiles kernels nor shows the fused layers, but the model the NumPy code reads."""
    result = CliRunner().invoke(main, ["train", "--dry-run", "--set", f"data.path={letters_folder}",
                                       "--set", "model.hidden=[1024]",
                                       "--set", "model.dropout=0.2"])
    assert result.exit_code == 0, result.output
    assert "Dense (784 -> 1024)" in result.output and "Dropout (0.2)" in result.output
    assert "Fused" not in result.output
