"""Optimisers over the model's flat parameter vector ``theta`` and gradient ``grad``.

Each optimiser owns its state (velocity; Adam's t, m, v), can hand it out as arrays and take
it back, and updates every parameter with a handful of in-place vector operations. The
learning rate is passed to ``step`` so that schedules stay outside. Weight decay is L2 on the
weights only (``theta[:n_decay]``), added to the gradient: g <- g + weight_decay * w; AdamW
decays the weights directly instead (decoupled), as Loshchilov & Hutter propose.

Formulas (g the gradient, lr the learning rate, mu the momentum):
    sgd:       w <- w - lr g
    momentum:  v <- mu v - lr g;  w <- w + v
    nesterov:  v <- mu v - lr g;  w <- w + mu v - lr g
    adam:      m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  t <- t + 1
               w <- w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

A max-norm constraint (Srivastava et al., 2014, with dropout) follows every step when
``max_norm`` c > 0: each unit's incoming weight vector (a column of a Dense layer's W) is
scaled back onto the ball ||w_j|| <= c whenever the step took it outside.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


class Optimizer:
    state_names: tuple[str, ...] = ()

    def __init__(self, model, weight_decay: float = 0.0, max_norm: float = 0.0) -> None:
        self.theta: F32 = model.theta
        self.grad: F32 = model.grad
        self.n_decay: int = model.n_decay
        self.weight_decay = weight_decay
        self.max_norm = max_norm
        self._unit_weights: list[F32] = [layer.W for layer in model.dense_layers()]
        for name in self.state_names:
            setattr(self, name, np.zeros_like(self.theta))
        # Room for wd * w, so that decaying the weights allocates nothing per step.
        self._decay_buf = np.empty(self.n_decay, dtype=np.float32) if weight_decay else None

    def add_weight_decay(self) -> None:
        """g <- g + weight_decay * w, on weights only: the gradient of 0.5 wd ||W||^2."""
        if self.weight_decay:
            w, g = self.theta[:self.n_decay], self.grad[:self.n_decay]
            g += np.multiply(w, np.float32(self.weight_decay), out=self._decay_buf)

    def apply_max_norm(self) -> None:
        """W[:, j] <- W[:, j] * c / max(||W[:, j]||, c): columns longer than c shrink to c."""
        if not self.max_norm:
            return
        c = self.theta.dtype.type(self.max_norm)
        for W in self._unit_weights:
            norms = np.sqrt(np.einsum("ij,ij->j", W, W))
            W *= c / np.maximum(norms, c)

    def step(self, lr: float) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).copy() for name in self.state_names}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name in self.state_names:
            src = np.asarray(state[name])
            dst = getattr(self, name)
            if src.shape != dst.shape:
                raise ValueError(f"optimiser state {name}: shape {src.shape}, "
                                 f"expected {dst.shape}")
            dst[...] = src


class SGD(Optimizer):
    def step(self, lr: float) -> None:
        self.add_weight_decay()
        self.grad *= np.float32(lr)  # the gradient buffer is rebuilt by the next backward pass
        self.theta -= self.grad
        self.apply_max_norm()


class Momentum(Optimizer):
    state_names = ("velocity",)

    def __init__(self, model, momentum: float = 0.9, weight_decay: float = 0.0,
                 nesterov: bool = False, max_norm: float = 0.0) -> None:
        super().__init__(model, weight_decay, max_norm)
        self.momentum, self.nesterov = momentum, nesterov

    def step(self, lr: float) -> None:
        self.add_weight_decay()
        v, g = self.velocity, self.grad
        v *= np.float32(self.momentum)
        g *= np.float32(lr)  # the gradient buffer is rebuilt by the next backward pass
        v -= g
        if self.nesterov:
            # w <- w + mu v - lr g: look ahead along the updated velocity.
            self.theta -= g
            v_scaled = np.multiply(v, np.float32(self.momentum), out=g)
            self.theta += v_scaled
        else:
            self.theta += v
        self.apply_max_norm()


class Adam(Optimizer):
    state_names = ("m", "v", "scratch")  # scratch: workspace, not saved

    def __init__(self, model, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False,
                 max_norm: float = 0.0) -> None:
        super().__init__(model, weight_decay, max_norm)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.decoupled = decoupled
        self.t = 0

    def step(self, lr: float) -> None:
        if self.decoupled:
            if self.weight_decay:  # AdamW: w <- w - lr wd w, outside the adaptive scaling
                self.theta[:self.n_decay] *= np.float32(1.0 - lr * self.weight_decay)
        else:
            self.add_weight_decay()
        self.t += 1
        b1, b2, g, s = np.float32(self.beta1), np.float32(self.beta2), self.grad, self.scratch
        self.m *= b1
        self.m += np.multiply(g, 1 - b1, out=s)
        np.multiply(g, g, out=s)
        s *= 1 - b2
        self.v *= b2
        self.v += s
        # s = sqrt(v / (1 - b2^t)) + eps, then s = m / s; w -= lr / (1 - b1^t) * s
        np.sqrt(self.v, out=s)
        s *= np.float32(1.0 / np.sqrt(1.0 - self.beta2 ** self.t))
        s += np.float32(self.eps)
        np.divide(self.m, s, out=s)
        s *= np.float32(lr / (1.0 - self.beta1 ** self.t))
        self.theta -= s
        self.apply_max_norm()

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"m": self.m.copy(), "v": self.v.copy(), "t": np.array(self.t, dtype=np.int64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name in ("m", "v"):
            src = np.asarray(state[name])
            if src.shape != self.theta.shape:
                raise ValueError(f"optimiser state {name}: shape {src.shape}, "
                                 f"expected {self.theta.shape}")
            getattr(self, name)[...] = src
        self.t = int(state["t"])


def build_optimizer(cfg, model) -> Optimizer:
    """An optimiser from an ``OptimConfig`` for ``model``."""
    if cfg.name == "sgd":
        return SGD(model, cfg.weight_decay, cfg.max_norm)
    if cfg.name in ("momentum", "nesterov"):
        return Momentum(model, cfg.momentum, cfg.weight_decay, nesterov=cfg.name == "nesterov",
                        max_norm=cfg.max_norm)
    if cfg.name in ("adam", "adamw"):
        return Adam(model, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay,
                    decoupled=cfg.name == "adamw", max_norm=cfg.max_norm)
    raise ValueError(f"unknown optimiser {cfg.name!r}")
