"""The numeric core: gradients against finite differences, optimiser steps against the
formulas written out by hand, schedules, dtypes."""

import math

import numpy as np
import pytest

from nnletters.config import OptimConfig, ScheduleConfig
from nnletters.nn import functional as F
from nnletters.nn.gradcheck import check_gradients, fix_dropout_masks
from nnletters.nn.model import MLP
from nnletters.nn.optim import build_optimizer
from nnletters.nn.schedules import Schedule


def small_batch(n=8, d=12, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), rng.integers(0, c, n)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("loss", ["cross_entropy", "quadratic"])
@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_backprop_matches_central_differences(activation, loss, dropout):
    X, y = small_batch()
    model = MLP([12, 7, 5, 4], activation, "xavier", dropout, loss, np.random.default_rng(1),
                dtype=np.float64)
    fix_dropout_masks(model, len(y), np.random.default_rng(2))
    results = check_gradients(model, X, y, weight_decay=0.01)
    assert len(results) == 6  # W and b of three Dense layers
    for r in results:
        assert r["passed"], r


def test_label_smoothing_gradient():
    X, y = small_batch()
    model = MLP([12, 6, 4], "relu", "he", 0.0, "cross_entropy", np.random.default_rng(3),
                label_smoothing=0.1, dtype=np.float64)
    assert all(r["passed"] for r in check_gradients(model, X, y))


def test_gradcheck_catches_a_wrong_derivative(monkeypatch):
    X, y = small_batch()
    model = MLP([12, 7, 4], "tanh", "xavier", 0.0, "cross_entropy", np.random.default_rng(1),
                dtype=np.float64)
    for layer in model.layers:
        if hasattr(layer, "f_backward"):
            layer.f_backward = lambda a, da: da * (1.0 - a)  # wrong: should be 1 - a^2
    results = check_gradients(model, X, y)
    assert not all(r["passed"] for r in results)
    assert not next(r for r in results if r["name"] == "model/0/W")["passed"]


def test_softmax_cross_entropy_value_and_stability():
    z = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    y = np.array([0, 2])
    loss, dlogits = F.softmax_cross_entropy(z.copy(), y)
    assert np.isfinite(loss)
    assert loss == pytest.approx((0.0 + math.log(3)) / 2, rel=1e-5)
    assert dlogits.dtype == np.float32
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=1e-6)


def test_float32_end_to_end():
    model = MLP([20, 16, 5], "relu", "he", 0.5, "cross_entropy", np.random.default_rng(0))
    X = np.random.default_rng(1).random((10, 20), dtype=np.float32)
    y = np.arange(10) % 5
    assert model.theta.dtype == np.float32
    assert all(p.dtype == np.float32 for p in model.params())
    assert model.forward(X, train=True).dtype == np.float32
    model.train_step(X, y)
    assert model.grad.dtype == np.float32
    assert model.predict_proba(X).dtype == np.float32


def test_parameters_are_views_of_the_flat_buffer():
    model = MLP([6, 5, 3], "relu", "he", 0.0, "cross_entropy", np.random.default_rng(0))
    assert model.theta.size == 6 * 5 + 5 + 5 * 3 + 3
    model.theta[:] = 0.5
    assert all(np.all(p == 0.5) for p in model.params())
    # weights first, then biases: weight decay must touch theta[:n_decay] only
    assert model.n_decay == 6 * 5 + 5 * 3


def _model_and_grad(seed=0):
    model = MLP([4, 3, 2], "relu", "he", 0.0, "cross_entropy", np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    grad = rng.standard_normal(model.theta.size).astype(np.float32)
    return model, grad


def _step(opt, model, grad, lr):
    model.grad[:] = grad
    opt.step(lr)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_dropout_keeps_1_minus_p_and_preserves_the_mean(p):
    from nnletters.nn.layers import Dropout

    layer = Dropout(p, np.random.default_rng(0))
    x = np.random.default_rng(1).random((256, 512), dtype=np.float32) + 0.5
    out = layer.forward(x, train=True)
    kept = out != 0
    assert out.dtype == np.float32 and abs(kept.mean() - (1 - p)) < 0.005
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-6)  # inverted scaling
    assert abs(out.mean() / x.mean() - 1) < 0.01
    dout = np.ones_like(x)
    assert np.array_equal(layer.backward(dout) != 0, kept)  # the same mask on the way back
    second = layer.forward(x, train=True).copy()
    assert not np.array_equal(second != 0, kept)  # a fresh mask every step
    assert layer.forward(x, train=False) is x  # evaluation: the identity


@pytest.mark.parametrize("kernels", ["numpy", "numba"])
@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_a_model_refuses_a_dropout_rate_outside_0_to_1(p, kernels):
    """p = 1 keeps no unit: the NumPy layer gave NaNs, the fused one zeros."""
    if kernels == "numba":
        pytest.importorskip("numba", reason="the 'fast' extra (numba) is not installed")
    with pytest.raises(ValueError, match=rf"dropout is a rate in \[0, 1\), not {p}"):
        MLP([4, 3, 2], dropout=p, rng=np.random.default_rng(0), kernels=kernels)


def test_sgd_with_weight_decay_on_weights_only():
    model, g = _model_and_grad()
    w0 = model.theta.copy()
    opt = build_optimizer(OptimConfig(name="sgd", lr=0.1, weight_decay=0.01), model)
    _step(opt, model, g, 0.1)
    expected = w0 - 0.1 * g
    nd = model.n_decay
    expected[:nd] -= 0.1 * 0.01 * w0[:nd]
    np.testing.assert_allclose(model.theta, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_two_steps(nesterov):
    model, g = _model_and_grad()
    w, v, mu, lr = model.theta.copy().astype(np.float64), 0.0, 0.9, 0.05
    opt = build_optimizer(OptimConfig(name="nesterov" if nesterov else "momentum",
                                      momentum=mu), model)
    for _ in range(2):
        _step(opt, model, g, lr)
        v = mu * v - lr * g
        w = w + (mu * v - lr * g if nesterov else v)
    np.testing.assert_allclose(model.theta, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_two_steps(name):
    model, g = _model_and_grad()
    b1, b2, eps, lr, wd = 0.9, 0.999, 1e-8, 0.01, 0.1
    w = model.theta.astype(np.float64)
    m = v = np.zeros_like(w)
    nd = model.n_decay
    opt = build_optimizer(OptimConfig(name=name, beta1=b1, beta2=b2, eps=eps,
                                      weight_decay=wd), model)
    for t in (1, 2):
        _step(opt, model, g, lr)
        grad = g.astype(np.float64).copy()
        if name == "adam":
            grad[:nd] += wd * w[:nd]
        else:
            w = w.copy()
            w[:nd] *= 1 - lr * wd
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_allclose(model.theta, w, rtol=1e-4, atol=1e-6)
    state = opt.state_dict()
    assert int(state["t"]) == 2 and state["m"].dtype == np.float32


def test_optimizer_state_round_trip():
    model, g = _model_and_grad()
    opt = build_optimizer(OptimConfig(name="adam"), model)
    _step(opt, model, g, 0.01)
    state = opt.state_dict()
    model2, _ = _model_and_grad()
    model2.theta[:] = model.theta
    opt2 = build_optimizer(OptimConfig(name="adam"), model2)
    opt2.load_state_dict(state)
    _step(opt, model, g, 0.01)
    _step(opt2, model2, g, 0.01)
    np.testing.assert_array_equal(model.theta, model2.theta)


@pytest.mark.parametrize("kernels", ["numpy", "numba"])
def test_batches_of_every_size_share_one_buffer_per_layer_and_tag(kernels):
    """Training batches, a validation batch of 64 and its last batch of 5 use the first rows
    of one array per buffer, and each gives what a model that never saw the others gives."""
    if kernels == "numba":
        pytest.importorskip("numba", reason="train.kernels: numba needs the 'fast' extra")
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 12), dtype=np.float32), rng.integers(0, 4, 64)

    def model():
        return MLP([12, 16, 8, 4], dropout=0.25, rng=np.random.default_rng(1), kernels=kernels)

    shared, fresh = model(), model()
    for n in (64, 5, 16):
        expected = model().forward(x[:n]).copy()
        assert np.array_equal(shared.forward(x[:n]), expected)
    shared.train_step(x[:16], y[:16])
    fresh.train_step(x[:16], y[:16])
    assert np.array_equal(shared.grad, fresh.grad)
    for layer in shared.layers:
        tags = [key[0] for key in layer._buffers]
        assert len(tags) == len(set(tags))  # one array per tag, whatever the batch sizes
        assert all(buf.shape[0] == (64 if key[0] == "z" else 16)  # dx, mask: training only
                   for key, buf in layer._buffers.items())


def test_ema_swap_exchanges_the_weights_and_back():
    from nnletters.nn.ema import BLOCK, EMA

    model = MLP([300, 500, 10], rng=np.random.default_rng(0))  # more than two blocks
    assert model.theta.size > 2 * BLOCK
    ema = EMA(model, 0.9)
    ema.theta[...] = np.random.default_rng(1).random(model.theta.size, dtype=np.float32)
    live, shadow = model.theta.copy(), ema.theta.copy()
    with ema.applied():
        assert np.array_equal(model.theta, shadow) and np.array_equal(ema.theta, live)
    assert np.array_equal(model.theta, live) and np.array_equal(ema.theta, shadow)


def test_schedules():
    def lrs(**kw):
        s = Schedule(ScheduleConfig(**kw), 1.0, 10)
        return [s.lr(e) for e in range(10)]

    assert lrs(name="constant") == [1.0] * 10
    assert lrs(name="step", step_size=3, gamma=0.5)[:7] == [1, 1, 1, .5, .5, .5, .25]
    assert lrs(name="exponential", gamma=0.5)[3] == 0.125
    cos = lrs(name="cosine", min_lr=0.0)
    assert cos[0] == 1.0 and cos[5] == pytest.approx(0.5) and cos[9] < 0.03
    warm = lrs(name="constant", warmup_epochs=2)
    assert warm[:3] == [0.1, 0.55, 1.0]


def test_plateau_schedule_decays_after_patience():
    s = Schedule(ScheduleConfig(name="plateau", patience=1, factor=0.5), 1.0, 10, mode="max")
    for metric in [0.5, 0.6, 0.6, 0.6]:
        s.observe(metric)
    assert s.lr(4) == 0.5
    s2 = Schedule(ScheduleConfig(name="plateau", patience=1, factor=0.5), 1.0, 10)
    s2.load_state_dict(s.state_dict())
    assert s2.lr(5) == 0.5


def test_small_model_overfits_32_samples():
    rng = np.random.default_rng(0)
    X = rng.random((32, 30), dtype=np.float32)
    y = np.arange(32) % 4
    model = MLP([30, 64, 4], "relu", "he", 0.0, "cross_entropy", rng)
    opt = build_optimizer(OptimConfig(name="adam", lr=0.01), model)
    for _ in range(200):
        loss, correct = model.train_step(X, y)
        opt.step(0.01)
    assert correct == 32 and loss < 0.05
