"""Batch norm, max-norm, weight EMA, label smoothing, warm-up, dedup and the augmentation hook:
each gradient checked where it has one, and each option shown to change what it should."""

import numpy as np
import pytest

from nnletters.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from nnletters.config import OptimConfig, ScheduleConfig, load_config
from nnletters.data import dedup_against, load_splits
from nnletters.nn import functional as F
from nnletters.nn.ema import EMA
from nnletters.nn.gradcheck import check_gradients, fix_dropout_masks
from nnletters.nn.layers import BatchNorm, Dense
from nnletters.nn.model import MLP
from nnletters.nn.optim import build_optimizer
from nnletters.nn.schedules import Schedule
from nnletters.run_folder import new_run_dir, train_run


def small_batch(n=8, d=12, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), rng.integers(0, c, n)


def bn_model(dtype=np.float32, activation="relu", dropout=0.0, seed=1):
    return MLP([12, 7, 5, 4], activation, "he", dropout, "cross_entropy",
               np.random.default_rng(seed), batch_norm=True, dtype=dtype)


# --------------------------------------------------------------------------- batch norm


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_batch_norm_backprop_matches_central_differences(activation, dropout):
    X, y = small_batch()
    model = bn_model(np.float64, activation, dropout)
    fix_dropout_masks(model, len(y), np.random.default_rng(2))
    results = check_gradients(model, X, y, weight_decay=0.01)
    names = [r["name"] for r in results]
    assert "model/1/gamma" in names and "model/3/beta" in names
    for r in results:
        assert r["passed"], r


def test_gradcheck_catches_a_wrong_batch_norm_backward():
    X, y = small_batch()
    model = bn_model(np.float64, "tanh")
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            # wrong: treats the batch mean and variance as constants
            layer.backward = lambda dout, layer=layer: (
                layer.dbeta.__setitem__(..., dout.sum(0)),
                layer.dgamma.__setitem__(..., (dout * layer.xhat).sum(0)),
                dout * layer.gamma * layer.inv_std)[-1]
    results = check_gradients(model, X, y)
    assert not next(r for r in results if r["name"] == "model/0/W")["passed"]


def test_batch_norm_normalises_in_training_and_uses_running_stats_in_eval():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 5)) * 3 + 7).astype(np.float32)
    bn = BatchNorm(5)
    out = bn.forward(x, train=True)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-3)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=0), rtol=1e-5)
    for _ in range(200):  # the running averages converge to the batch statistics
        train_out = bn.forward(x, train=True).copy()
    eval_out = bn.forward(x, train=False)
    # eval divides by the unbiased variance (n / (n - 1)), training by the batch's own
    np.testing.assert_allclose(eval_out, train_out * np.sqrt(63 / 64), atol=1e-3)
    assert not np.allclose(bn.forward(x[:1] + 5, train=False), 0.0)  # no batch needed


def test_batch_norm_layers_and_no_redundant_bias():
    model = bn_model()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "BatchNorm", "Activation", "Dense", "BatchNorm", "Activation",
                     "Dense"]
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    assert [d.b is None for d in dense] == [True, True, False]  # only the logits keep b
    assert model.n_decay == 12 * 7 + 7 * 5 + 5 * 4  # gamma and beta are not decayed
    assert "batch norm" in model.describe()


def test_batch_norm_state_survives_a_checkpoint(tmp_path):
    model = bn_model()
    X = np.random.default_rng(0).random((16, 12), dtype=np.float32)
    for _ in range(5):
        model.train_step(X, np.arange(16) % 4)
    state = model.state_dict()
    assert {"1/running_mean", "1/running_var", "1/gamma", "3/beta"} <= set(state)
    meta = {"classes": list("abcd"), "image_size": 3, "layer_sizes": [12, 7, 5, 4],
            "activation": "relu", "loss": "cross_entropy", "batch_norm": True}
    save_checkpoint(tmp_path / "m.npz", model, meta)
    again = model_from_checkpoint(load_checkpoint(tmp_path / "m.npz"))
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))


# --------------------------------------------------------------------------- max-norm


@pytest.mark.parametrize("name", ["sgd", "momentum", "adamw"])
def test_max_norm_caps_each_units_incoming_weights(name):
    model = MLP([6, 5, 3], "relu", "he", 0.0, "cross_entropy", np.random.default_rng(0))
    dense = model.dense_layers()
    dense[0].W[:, 0] = 0.01  # a short column: must stay exactly as the step leaves it
    free = MLP([6, 5, 3], "relu", "he", 0.0, "cross_entropy", np.random.default_rng(0))
    free.theta[:] = model.theta
    grad = np.random.default_rng(1).standard_normal(model.theta.size).astype(np.float32)
    for m, c in ((model, 1.0), (free, 0.0)):
        opt = build_optimizer(OptimConfig(name=name, lr=0.1, max_norm=c), m)
        m.grad[:] = grad
        opt.step(0.1)
    for W, W_free in zip(dense, free.dense_layers(), strict=True):
        norms, free_norms = np.linalg.norm(W.W, axis=0), np.linalg.norm(W_free.W, axis=0)
        assert np.all(norms <= 1.0 + 1e-5)
        long = free_norms > 1.0  # where the same step without the constraint goes further
        assert long.any()
        np.testing.assert_allclose(norms[long], 1.0, rtol=1e-5)  # projected onto the ball
        np.testing.assert_array_equal(W.W[:, ~long], W_free.W[:, ~long])
    assert np.linalg.norm(dense[0].W[:, 0]) < 1.0  # the short column was left as it was
    np.testing.assert_array_equal(model.theta[model.n_decay:], free.theta[free.n_decay:])


# --------------------------------------------------------------------------- EMA


def test_ema_follows_the_formula_and_swaps_in_and_out():
    model = MLP([4, 3, 2], "relu", "he", 0.0, "cross_entropy", np.random.default_rng(0))
    ema = EMA(model, decay=0.9)
    shadow = model.theta.astype(np.float64)
    rng = np.random.default_rng(1)
    for t in range(1, 4):
        model.theta += rng.standard_normal(model.theta.size).astype(np.float32)
        ema.update()
        d = min(0.9, (1 + t) / (10 + t))
        shadow = d * shadow + (1 - d) * model.theta
    np.testing.assert_allclose(ema.theta, shadow, rtol=1e-5, atol=1e-6)
    raw, average = model.theta.copy(), ema.theta.copy()
    assert not np.allclose(average, raw)  # the average is not the last iterate
    with ema.applied():
        np.testing.assert_array_equal(model.theta, average)
        first = model.params()[0].copy()  # the layers' views see the averaged weights
    np.testing.assert_array_equal(model.theta, raw)
    assert not np.array_equal(first, model.params()[0])
    other = EMA(model, decay=0.9)
    other.load_state_dict(ema.state_dict())
    np.testing.assert_array_equal(other.theta, ema.theta)
    assert other.updates == 3


def test_ema_averages_batch_norm_statistics():
    model = bn_model()
    ema = EMA(model, decay=0.5)
    X = np.random.default_rng(0).random((16, 12), dtype=np.float32) * 4
    model.forward(X, train=True)
    ema.update()
    layer = model.layers[1]
    d = min(0.5, 2 / 11)
    np.testing.assert_allclose(ema.buffers["1/running_mean"],
                               (1 - d) * layer.running_mean, rtol=1e-5)
    live, average = layer.running_mean.copy(), ema.buffers["1/running_mean"].copy()
    with ema.applied():
        np.testing.assert_array_equal(layer.running_mean, average)
    np.testing.assert_array_equal(layer.running_mean, live)


# --------------------------------------------------------------------------- in a run


def tiny_config(path, *extra):
    return load_config(None, [f"data.path={path}", "model.hidden=[32]", "optim.name=adam",
                              "optim.lr=0.01", "train.epochs=3", "train.batch_size=8",
                              "data.val_fraction=0.25", "data.test_fraction=0.25",
                              "train.early_stopping.enabled=false", *extra])


def train(cfg, out, log=lambda _m: None):
    return train_run(cfg, new_run_dir(cfg, out), log=log).summary


def weights(path):
    return load_checkpoint(path).model_state["0/W"]


def test_run_with_ema_saves_averaged_best_and_raw_last(letters_folder, tmp_path):
    lines = []
    train(tiny_config(letters_folder, "optim.ema=0.9"), tmp_path / "ema", lines.append)
    train(tiny_config(letters_folder), tmp_path / "raw")
    last, best = load_checkpoint(tmp_path / "ema/last.npz"), load_checkpoint(tmp_path /
                                                                             "ema/best.npz")
    # Same seed, same steps: the raw weights of the EMA run are those of the plain run.
    np.testing.assert_array_equal(last.model_state["0/W"], weights(tmp_path / "raw/last.npz"))
    assert int(last.ema_state["updates"]) == last.meta["epoch"] * 3  # 24 images, batch 8
    assert not best.ema_state  # best.npz holds the average as its model, nothing more
    if best.meta["epoch"] == last.meta["epoch"]:
        np.testing.assert_array_equal(best.model_state["0/W"],
                                      last.ema_state["theta"][:784 * 32].reshape(784, 32))
    assert not np.array_equal(best.model_state["0/W"], last.model_state["0/W"])
    assert any("EMA decay 0.9" in line for line in lines)


def test_augmentation_off_or_zero_trains_exactly_as_without(letters_folder, tmp_path):
    train(tiny_config(letters_folder, "model.dropout=0.2"), tmp_path / "plain")
    train(tiny_config(letters_folder, "model.dropout=0.2", "data.augment.enabled=true"),
          tmp_path / "zero")
    train(tiny_config(letters_folder, "model.dropout=0.2", "data.augment.rotate=20"),
          tmp_path / "off")
    lines = []
    train(tiny_config(letters_folder, "model.dropout=0.2", "data.augment.enabled=true",
                      "data.augment.rotate=20"), tmp_path / "on", lines.append)
    plain = weights(tmp_path / "plain/last.npz")
    np.testing.assert_array_equal(weights(tmp_path / "zero/last.npz"), plain)
    np.testing.assert_array_equal(weights(tmp_path / "off/last.npz"), plain)
    assert not np.array_equal(weights(tmp_path / "on/last.npz"), plain)
    assert "augmentation: rotate 20" in lines


def test_dedup_is_reported_in_the_log_and_summary(letters_folder, tmp_path):
    cfg = tiny_config(letters_folder, "data.dedup=true")
    plain = load_splits(tiny_config(letters_folder).data, cfg.seed)
    _, expected = dedup_against(plain.train, [plain.val, plain.test])
    assert expected > 0  # the fixture draws 12 images per letter from 15 variants
    lines = []
    summary = train(cfg, tmp_path / "run", lines.append)
    assert summary["n_deduped"] == expected
    assert summary["n_train"] == len(plain.train) - expected
    assert (f"dedup: dropped {expected} training image(s) pixel-identical to a validation "
            "or test image") in lines


# --------------------------------------------------------------------------- smoothing, warm-up


def test_label_smoothing_moves_the_target_off_one_hot():
    z = np.array([[2.0, 0.0, -1.0, 0.5]], dtype=np.float32)
    y = np.array([0])
    p = F.softmax(z)[0]
    eps, c = 0.2, 4
    target = np.full(c, eps / c)
    target[0] += 1 - eps
    loss, dlogits = F.softmax_cross_entropy(z.copy(), y, label_smoothing=eps)
    np.testing.assert_allclose(dlogits[0], p - target, atol=1e-6)
    assert loss == pytest.approx(-(target * np.log(p)).sum(), rel=1e-5)
    plain_loss, _ = F.softmax_cross_entropy(z.copy(), y)
    assert loss > plain_loss  # a confident right answer is penalised a little


def test_warm_up_ramps_then_the_schedule_starts_from_the_full_rate():
    s = Schedule(ScheduleConfig(name="cosine", warmup_epochs=4, min_lr=0.0), 1.0, 14)
    lrs = [s.lr(e) for e in range(14)]
    np.testing.assert_allclose(lrs[:5], [0.1, 0.325, 0.55, 0.775, 1.0])
    assert lrs[5] < 1.0 and lrs[-1] < 0.05
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
