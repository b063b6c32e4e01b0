"""Saliency maps: which pixels made the network give its answer (``nnletters predict
--explain``, and the mistakes' maps in ``nnletters report``).

Backpropagation stops at the first layer's weights during training. Carried one layer
further, the same chain rule gives the derivative of a class's score with respect to every
input pixel (``MLP.input_gradient``):

    d z_c / d x_i     red where raising pixel i raises the score of class c, blue where
                      lowering it does, white where the pixel does not matter

computed in float32 in evaluation mode (dropout off, batch norm with its running statistics)
with the weights that are evaluated (the weight average where the checkpoint holds one).
SmoothGrad (Smilkov et al., 2017) averages the map over copies of the image with Gaussian
noise added, seeded, which removes much of the pixel-to-pixel speckle of a single gradient.

Each image gets one PNG: the prepared input as the network saw it, the signed map of the
predicted class, its magnitude over the glyph, and with ``top_k`` >= 2 the runner-ups' maps
and the difference map of the first two ("what separates J from I").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnletters.errors import NNLettersError
from nnletters.fileio import make_dir, write_with
from nnletters.prediction import Model, load_model, prepare_files
from nnletters.report import _font, _line_height, _png, _text_block

F32 = NDArray[np.float32]
SMOOTHGRAD_NOISE = 0.15  # std of the added noise, as a share of the [0, 1] pixel range
MAX_MAPS = 4             # class maps drawn per image at most (top_k beyond this only lists)
PANEL = 168              # side of one panel in pixels, about
SCORES = ("logit", "log_prob")


# --------------------------------------------------------------------------- the maths


def saliency(network, X: F32, classes: NDArray[np.int64], score: str = "logit",
             smoothgrad: int = 0, rng: np.random.Generator | None = None,
             noise: float = SMOOTHGRAD_NOISE) -> F32:
    """The input gradient of each row's class score: X (N, D) float32 -> (N, D) float32.

    With ``smoothgrad`` = n > 0: the mean of the gradients at n noisy copies
    X + N(0, noise^2) of each row, drawn from ``rng`` (default: a Generator seeded with 0)."""
    X = np.asarray(X, dtype=np.float32)
    classes = np.asarray(classes, dtype=np.int64)
    if smoothgrad <= 0:
        return network.input_gradient(X, classes, score)
    rng = rng if rng is not None else np.random.default_rng(0)
    n, d = X.shape
    noisy = np.repeat(X, smoothgrad, axis=0)  # row r's copies are rows r*n .. r*n + n - 1
    noisy += rng.standard_normal(noisy.shape, dtype=np.float32) * np.float32(noise)
    grads = network.input_gradient(noisy, np.repeat(classes, smoothgrad), score)
    return grads.reshape(n, smoothgrad, d).mean(axis=1, dtype=np.float32)


def use_evaluated_weights(model: Model, ema_state: dict[str, np.ndarray]) -> None:
    """Put a checkpoint's weight average into ``model.network`` when it holds one (a last.npz
    of a run with optim.ema; best.npz already holds the averaged weights)."""
    from nnletters.nn.ema import buffer_refs

    theta = ema_state.get("theta")
    if theta is None or theta.shape != model.network.theta.shape:
        return
    model.network.theta[...] = theta
    for key, layer, name in buffer_refs(model.network):
        if key in ema_state:
            getattr(layer, name)[...] = ema_state[key]


def load_explained_model(target: str | Path | None) -> Model:
    """``prediction.load_model`` with the evaluated (weight-averaged) weights."""
    from nnletters.checkpoint import load_checkpoint

    model = load_model(target)
    use_evaluated_weights(model, load_checkpoint(model.path).ema_state)
    return model


# --------------------------------------------------------------------------- one image


@dataclass
class Explanation:
    """The maps of one image. x: (S*S,) float32 prepared input; classes: the explained
    classes' indices, most likely first; probs: their probabilities; maps: (K, S*S) float32
    input gradients of their scores."""

    x: F32
    classes: list[int]
    labels: list[str]
    probs: list[float]
    maps: F32
    title: str
    score: str = "logit"
    smoothgrad: int = 0
    light_on_dark: bool = True  # pixel 1 is ink (notMNIST), else 1 is white paper


def explain_rows(model: Model, X: F32, proba: F32, n_maps: int, score: str = "logit",
                 smoothgrad: int = 0, seed: int = 0,
                 titles: list[str] | None = None) -> list[Explanation]:
    """Maps of the ``n_maps`` most likely classes of every row of X (N, S*S) float32."""
    k = max(1, min(n_maps, MAX_MAPS, len(model.classes)))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]  # (N, k)
    return explanations(model.network, model.classes, X, proba, order, score, smoothgrad,
                        seed, titles, model.light_on_dark)


def explanations(network, class_names: list[str], X: F32, proba: F32,
                 classes: NDArray[np.int64], score: str = "logit", smoothgrad: int = 0,
                 seed: int = 0, titles: list[str] | None = None,
                 light_on_dark: bool = True) -> list[Explanation]:
    """Maps of the given classes (N, K) int64 of every row of X (N, S*S) float32; proba
    (N, C) float32 gives the probabilities shown."""
    rng = np.random.default_rng(seed)
    maps = np.stack([saliency(network, X, classes[:, j], score, smoothgrad, rng)
                     for j in range(classes.shape[1])], axis=1)  # (N, K, D)
    return [Explanation(X[i], [int(c) for c in classes[i]],
                        [class_names[c] for c in classes[i]],
                        [float(proba[i, c]) for c in classes[i]], maps[i],
                        titles[i] if titles else "", score, smoothgrad, light_on_dark)
            for i in range(X.shape[0])]


def explain_images(paths: list[str | Path], target: str | Path | None = None, top_k: int = 1,
                   out: str | Path = "explain", score: str = "logit", smoothgrad: int = 0,
                   seed: int = 0) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """``predict --explain``: predict each image and write its maps to OUT/<name>.png.

    Returns (results, errors) as ``predict_images`` does; each result gains
    ``explanation``, the path of its picture."""
    if score not in SCORES:
        raise NNLettersError(f"--score {score!r}: expected one of {', '.join(SCORES)}")
    model = load_explained_model(target)
    X, good, errors, notes = prepare_files(model, paths)
    if not good:
        return [], errors
    proba = model.probabilities(X)
    results = model.ranked(proba, good, top_k, notes)
    explained = explain_rows(model, X, proba, top_k, score, smoothgrad, seed,
                             titles=[str(p) for p in good])
    out_dir = make_dir(out)
    for result, path, item in zip(results, picture_paths(good, out_dir), explained,
                                  strict=True):
        data = explanation_png(item, model.image_size)
        write_with(path, lambda fh, data=data: fh.write(data))
        result["explanation"] = str(path)
    return results, errors


def picture_paths(images: list[Path], out_dir: Path) -> list[Path]:
    """OUT/<stem>.png per image; a name taken before gets -2, -3... (folders may repeat
    names)."""
    taken: set[str] = set()
    paths = []
    for image in images:
        stem, name, n = Path(image).stem, f"{Path(image).stem}.png", 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}.png"
        taken.add(name)
        paths.append(out_dir / name)
    return paths



# --------------------------------------------------------------------------- pictures


def explanation_png(item: Explanation, image_size: int) -> bytes:
    """One image's picture: a header, then the panels side by side."""
    from PIL import Image

    top = ", ".join(f"{label} {100 * p:.1f}%" for label, p in zip(item.labels, item.probs,
                                                                   strict=True))
    header = [f"{item.title}: {top}" if item.title else top, *legend_lines(item)]
    row = panel_row(item, image_size)
    head = _text_block(header, row.width, _font(13), pad=8)
    canvas = Image.new("RGB", (max(head.width, row.width), head.height + row.height), "white")
    canvas.paste(head, (0, 0))
    canvas.paste(row, (0, head.height))
    return _png(canvas)


def legend_lines(item: Explanation) -> list[str]:
    what = "d z / d x (z: the logit)" if item.score == "logit" else "d log p / d x"
    smooth = (f"SmoothGrad: mean over {item.smoothgrad} noisy copies (noise std "
              f"{SMOOTHGRAD_NOISE:g})" if item.smoothgrad else "plain gradient (no SmoothGrad)")
    scales = f"class maps share one colour scale, max |g| = {_peak(item.maps):.3g}"
    if len(item.classes) >= 2:
        scales += f"; the difference has its own, {_peak(item.maps[0] - item.maps[1]):.3g}"
    return [f"{what}, {smooth}; {polarity(item.light_on_dark)}",
            "red: raising the pixel raises the score, blue: lowering it does, white: no "
            "effect; " + scales]


def polarity(light_on_dark: bool) -> str:
    """What 'raising a pixel' means for a model's images."""
    return ("pixels: 1 is ink, so red means more ink there raises the score" if light_on_dark
            else "pixels: 1 is white paper, so red means less ink there raises the score")


def panels(item: Explanation, image_size: int) -> list[tuple[list[str], NDArray[np.uint8]]]:
    """(caption lines, (S, S, 3) uint8 RGB) of every panel of one explanation."""
    s = image_size
    first, peak = item.labels[0], _peak(item.maps)
    d = "d z" if item.score == "logit" else "d log p"
    out = [(["input as the network", "saw it"], grey_rgb(item.x, s)),
           ([f"{d}({first}) / d x", f"raises {first}: red"], signed_rgb(item.maps[0], peak, s)),
           ([f"|{d}({first}) / d x|", "over the glyph"], magnitude_rgb(item.maps[0], item.x, s))]
    for label, g in zip(item.labels[1:], item.maps[1:], strict=True):
        out.append(([f"{d}({label}) / d x", f"raises {label}: red"], signed_rgb(g, peak, s)))
    if len(item.labels) >= 2:
        second, diff = item.labels[1], item.maps[0] - item.maps[1]
        out.append(([f"{d}({first}) - {d}({second})", f"{first} rather than {second}"],
                     signed_rgb(diff, _peak(diff), s)))
    return out


def panel_row(item: Explanation, image_size: int) -> Any:
    """The panels of one explanation side by side, each captioned above (a PIL image)."""
    from PIL import Image, ImageDraw

    zoom = max(1, round(PANEL / image_size))
    side, gap, font = image_size * zoom, 10, _font(12)
    items = panels(item, image_size)
    line_h = _line_height(font)
    width = max(side, *(math.ceil(font.getlength(t)) for c, _ in items for t in c)) + gap
    row = Image.new("RGB", (len(items) * width + gap, 2 * line_h + side + 2 * gap), "white")
    draw = ImageDraw.Draw(row)
    for k, (caption, rgb) in enumerate(items):
        x0 = gap + k * width
        for j, text in enumerate(caption):
            draw.text((x0, gap // 2 + j * line_h), text, fill="black", font=font)
        big = rgb.repeat(zoom, axis=0).repeat(zoom, axis=1)
        row.paste(Image.fromarray(big, mode="RGB"), (x0, gap + 2 * line_h))
        draw.rectangle((x0 - 1, gap + 2 * line_h - 1, x0 + side, gap + 2 * line_h + side),
                       outline=(150, 150, 150))
    return row


def maps_grid_png(items: list[Explanation], image_size: int, header: list[str]) -> bytes:
    """Several explanations, one row each under its title, below ``header`` lines."""
    from PIL import Image

    rows = []
    for item in items:
        row = panel_row(item, image_size)
        rows += [_text_block([item.title], row.width, _font(13), pad=4), row]
    width = max((r.width for r in rows), default=480)
    head = _text_block(header, width, _font(15), pad=8)
    canvas = Image.new("RGB", (max(width, head.width), head.height + sum(r.height for r in rows)),
                       "white")
    y = 0
    for part in (head, *rows):
        canvas.paste(part, (0, y))
        y += part.height
    return _png(canvas)


# --------------------------------------------------------------------------- pixels


def _peak(g: F32) -> float:
    return float(np.abs(g).max()) if g.size else 0.0


def _lut(name: str) -> NDArray[np.uint8]:
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def signed_rgb(g: F32, peak: float, image_size: int) -> NDArray[np.uint8]:
    """(S*S,) map -> (S, S, 3) uint8, red-white-blue with white at 0 and full colour at
    +-``peak``."""
    signed = np.clip(np.asarray(g, np.float64) / (peak if peak > 0 else 1.0), -1.0, 1.0)
    index = np.rint((signed + 1.0) * 127.5).astype(np.intp)
    return _lut("RdBu_r")[index].reshape(image_size, image_size, 3)


def grey_rgb(x: F32, image_size: int) -> NDArray[np.uint8]:
    """(S*S,) in [0, 1] -> (S, S, 3) uint8 grey, 1 = white."""
    v = np.clip(np.rint(np.asarray(x, np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(v.reshape(image_size, image_size, 1), 3, axis=2)


def magnitude_rgb(g: F32, x: F32, image_size: int) -> NDArray[np.uint8]:
    """|g| as an orange-to-yellow glow over a dimmed grey copy of the glyph x: where a small
    change of the pixel moves the score most, whichever the direction."""
    m = np.abs(np.asarray(g, np.float64))
    m /= m.max() if m.max() > 0 else 1.0
    base = 40.0 + 150.0 * np.asarray(x, np.float64)  # glyph and background both stay visible
    heat = _lut("inferno")[np.rint(128 + 127 * m).astype(np.intp)].astype(np.float64)
    alpha = np.minimum(1.5 * m, 1.0)[:, None]  # the top third of |g| in full colour
    rgb = (1.0 - alpha) * base[:, None] + alpha * heat
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(image_size, image_size, 3)
