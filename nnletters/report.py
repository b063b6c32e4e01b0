"""Pictures of a run, and one self-contained page that shows them all.

    RUN_DIR/report/
        network.png     the network itself: every unit and weight of a small one, a block per
                        layer of a big one (nnletters/network_drawing.py)
        curves.png      train and validation loss and accuracy per epoch, the learning rate
                        on its own axis, the best epoch marked
        confusion.png   the test confusion matrix, coloured by the fraction of each true class,
                        with the counts written in
        mistakes.png    misclassified test images (up to 100), most confident first,
                        each captioned ``true -> predicted (p)``
        mistake_maps.png  the saliency maps of the most confident mistakes: what made the
                        network say the predicted letter rather than the true one
        weights.png     the first layer's weights, one image-shaped tile per hidden unit
        diagnostics.png per-layer gradient and weight norms and dead or saturated units per
                        epoch (runs whose metrics hold them: train.diagnostics)
        report.html     the config, summary figures, per-class table and the pictures,
                        images embedded as data: URIs (no network, one file to send around)

Charts are drawn with matplotlib's object API (``Figure`` rendered by Agg, never pyplot), so
nothing opens a window and no global backend is switched; image grids are composed with
Pillow. Every picture is rendered to PNG bytes first, then written atomically, and the same
bytes are embedded in the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnletters.errors import DataError
from nnletters.fileio import make_dir, write_text, write_with

F32 = NDArray[np.float32]
# diagnostics.png only for runs whose metrics hold the diagnostics (all since they exist).
PICTURES = ("network.png", "curves.png", "confusion.png", "mistakes.png", "mistake_maps.png",
            "weights.png", "diagnostics.png")
MAX_MISTAKES = 100
MAX_TILES = 256
MAX_MISTAKE_MAPS = 8
GRAD_FLOOR = 1e-30  # diagnostics.png draws a gradient norm of exactly 0 here (log axis)
DPI = 100  # matplotlib figures: inches * DPI = pixels, so 100 keeps them legible at 100%


# --------------------------------------------------------------------------- inputs


@dataclass
class RunResults:
    """Everything the pictures need, computed once from a run folder.

    X: (N, S*S) float32 images evaluated; y: (N,) int64 true labels in the model's class
    order; proba: (N, C) float32 model outputs; first_W: (S*S, H) float32 first Dense layer.
    """

    run_dir: Path
    checkpoint: Path
    meta: dict[str, Any]
    classes: list[str]
    image_size: int
    X: F32
    y: NDArray[np.int64]
    proba: F32
    evaluation: dict[str, Any]  # nnletters.evaluation.evaluate's result on (X, y)
    paths: list[str]
    source: str  # what X came from: "test split of <data>" or the --data path
    first_W: F32
    history: list[dict[str, Any]]
    summary: dict[str, Any] | None  # summary.json, None for a run that did not finish
    config_text: str
    network: Any = None  # the nn.model.MLP evaluated (for the mistakes' saliency maps)


def resolve_run(target: str | Path | None, runs_dir: str | Path = "runs") -> tuple[Path, Path]:
    """(run folder, checkpoint) from a run folder, a checkpoint file or None (latest run)."""
    from nnletters.checkpoint import resolve_checkpoint

    ckpt_path = resolve_checkpoint(target, runs_dir)
    return ckpt_path.parent, ckpt_path


def load_results(target: str | Path | None = None, data_path: str | Path | None = None, *,
                 runs_dir: str | Path = "runs", progress: bool = False) -> RunResults:
    """Rebuild the model from the run's best.npz and evaluate it on the run's own test split
    (re-created from its config.yaml and seed) or, with ``data_path``, on all of that data."""
    from nnletters.checkpoint import load_checkpoint, model_from_checkpoint
    from nnletters.data.preparation import Look
    from nnletters.evaluation import align_classes, evaluate, evaluation_data
    from nnletters.metrics import read_history

    run_dir, ckpt_path = resolve_run(target, runs_dir)
    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt)
    ds, source = evaluation_data(ckpt_path, ckpt.image_size, data_path, progress,
                                 look=Look.of(ckpt.meta))
    y = align_classes(ds.classes, ckpt.classes, ds.y, source)
    first_W = model.dense_layers()[0].W
    if first_W.shape[0] != ckpt.image_size ** 2:
        raise DataError(f"{ckpt_path}: first layer takes {first_W.shape[0]} inputs, not "
                        f"{ckpt.image_size}x{ckpt.image_size} pixels")
    summary_path = run_dir / "summary.json"
    config_path = run_dir / "config.yaml"
    return RunResults(
        run_dir=run_dir, checkpoint=ckpt_path, meta=ckpt.meta, classes=ckpt.classes,
        image_size=ckpt.image_size, X=ds.X, y=y, proba=model.predict_proba(ds.X),
        evaluation=evaluate(model, ds.X, y, ckpt.classes), paths=list(ds.paths),
        source=source, first_W=first_W.copy(), history=read_history(run_dir),
        summary=json.loads(summary_path.read_text("utf-8")) if summary_path.exists() else None,
        config_text=config_path.read_text("utf-8") if config_path.exists() else "",
        network=model)


# --------------------------------------------------------------------------- curves


def curves_png(history: list[dict[str, Any]], best_epoch: int | None = None,
               monitor: str = "val_accuracy", loss_name: str = "cross_entropy",
               title: str = "") -> bytes:
    """Loss, accuracy and learning rate per epoch, side by side, the best epoch marked."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(15, 4.6), dpi=DPI, layout="constrained")
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    style = {"marker": "o", "markersize": 3, "linewidth": 1.6}
    for ax, key, scale in ((ax_loss, "loss", 1), (ax_acc, "accuracy", 100)):
        for split, colour in (("train", "tab:blue"), ("val", "tab:orange")):
            values = [r.get(f"{split}_{key}") for r in history]
            if any(v is None for v in values):
                continue  # no validation set in this run
            ax.plot(epochs, [scale * v for v in values], color=colour,
                    label="validation" if split == "val" else "train", **style)
    ax_lr.plot(epochs, [r["lr"] for r in history], color="tab:green", **style)
    if epochs and max(r["lr"] for r in history) > 10 * min(r["lr"] for r in history) > 0:
        ax_lr.set_yscale("log")  # decays over decades read better on a log axis
    _mark_best(history, best_epoch, monitor, ax_loss, ax_acc, ax_lr)
    labels = (f"{loss_name.replace('_', '-')} loss", "accuracy (%)", "learning rate")
    for ax, name, ylabel in zip((ax_loss, ax_acc, ax_lr), ("Loss", "Accuracy", "Learning rate"),
                                labels, strict=True):
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        if ax is not ax_lr:
            ax.legend(loc="best")
    if title:
        fig.suptitle(title)
    return _figure_png(fig)


def _mark_best(history: list[dict[str, Any]], best_epoch: int | None, monitor: str,
               ax_loss: Any, ax_acc: Any, ax_lr: Any) -> None:
    """A dashed line at the best epoch on every panel and a star on the monitored value."""
    row = next((r for r in history if r["epoch"] == best_epoch), None)
    if row is None:
        return
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.axvline(best_epoch, color="0.35", linestyle="--", linewidth=1,
                   label=f"best epoch ({best_epoch})")
    ax, scale = (ax_loss, 1) if monitor.endswith("loss") else (ax_acc, 100)
    if row.get(monitor) is not None:
        ax.plot([best_epoch], [scale * row[monitor]], marker="*", markersize=14,
                color="crimson", linestyle="none", label=f"best {monitor.replace('_', ' ')}")


def diagnostics_png(history: list[dict[str, Any]], title: str = "") -> bytes | None:
    """Per-layer diagnostics per epoch (nnletters.diagnostics): gradient norm (log axis),
    weight norm, and the share of dead ReLU units or saturated outputs; None without them."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    layers = sorted({int(k.split("/")[1]) for r in history for k in r
                     if k.startswith("grad_norm/")})
    if not layers:
        return None
    fig = Figure(figsize=(15, 4.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (("grad_norm", "Gradient norm ||dL/dW|| (validation batch)", 1),
              ("weight_norm", "Weight norm ||W||", 1),
              ("dead", "Dead ReLU units, saturated outputs", 100))
    for ax, (key, name, scale) in zip(axes, panels, strict=True):
        floor = GRAD_FLOOR if key == "grad_norm" else -math.inf
        for i in layers:
            label = f"layer {i}" + (" (output)" if i == layers[-1] else "")
            for kind in ((key,) if key != "dead" else ("dead", "saturated")):
                points = [(r["epoch"], max(scale * r[f"{kind}/{i}"], floor)) for r in history
                          if r.get(f"{kind}/{i}") is not None]
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", markersize=3,
                            label=f"{label} {kind}" if key == "dead" else label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(loc="best", fontsize="small")
    _log_axis(axes[0])  # gradients span decades, and a vanished one is the point
    axes[2].set_ylabel("% of units (dead) or of outputs (saturated)")
    axes[2].set_ylim(bottom=0)
    if title:
        fig.suptitle(title)
    return _figure_png(fig)


def _log_axis(ax: Any) -> None:
    """A log y axis at least two decades tall, so that rounding noise in a constant figure
    (a gradient stuck at 5e-13) does not look like a trend."""
    ax.set_yscale("log")
    ys = [y for line in ax.lines for y in line.get_ydata()]
    lo, hi = min(ys), max(ys)
    if hi < 100 * lo:
        mid = math.sqrt(lo * hi)
        ax.set_ylim(mid / 10, mid * 10)


# --------------------------------------------------------------------------- confusion


def confusion_png(confusion: NDArray[np.int64], classes: list[str], title: str = "") -> bytes:
    """Heatmap of a (C, C) confusion matrix (rows true, columns predicted).

    Up to FULL_MATRIX_CLASSES classes: the colour is the fraction of each true class, the
    number the count. With more, a full matrix is mostly a bright diagonal and pale specks, so
    the diagonal is masked (errors only, colour on a log scale of counts) and a second panel
    ranks the classes by accuracy."""
    from matplotlib.figure import Figure

    counts = np.asarray(confusion, dtype=np.int64)
    n = len(classes)
    if n <= FULL_MATRIX_CLASSES:
        side = max(6.0, 0.55 * n + 2.5)
        fig = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
        _fraction_heatmap(fig, fig.subplots(), counts, classes)
    else:
        side = min(16.0, 0.42 * n + 2.5)
        fig = Figure(figsize=(side + 6.5, side), dpi=DPI, layout="constrained")
        ax_err, ax_acc = fig.subplots(1, 2, width_ratios=[side, 5.0])
        _error_heatmap(fig, ax_err, counts, classes)
        _accuracy_bars(ax_acc, counts, classes)
    fig.suptitle(title or "Confusion matrix")
    return _figure_png(fig)


FULL_MATRIX_CLASSES = 12


def _fraction_heatmap(fig: Any, ax: Any, counts: NDArray[np.int64], classes: list[str]) -> None:
    n = len(classes)
    fraction = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    _label_axes(ax, classes)
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=10,
                        color="white" if fraction[i, j] > 0.55 else "black")


def _error_heatmap(fig: Any, ax: Any, counts: NDArray[np.int64], classes: list[str]) -> None:
    """Off-diagonal counts only, log colour, so that the few big confusions stand out."""
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter

    errors = counts.astype(np.float64)
    np.fill_diagonal(errors, np.nan)
    errors[errors == 0] = np.nan
    top = max(2.0, float(np.nanmax(errors)) if np.isfinite(errors).any() else 2.0)
    image = ax.imshow(errors, cmap="Reds", norm=LogNorm(vmin=0.6, vmax=top))
    bar = fig.colorbar(image, ax=ax, shrink=0.8, label="mistakes (log scale; diagonal hidden)")
    plain = FuncFormatter(lambda v, _pos: f"{v:g}" if v >= 1 else "")
    bar.ax.yaxis.set_major_formatter(plain)
    bar.ax.yaxis.set_minor_formatter(plain)
    _label_axes(ax, classes)
    for i, j in zip(*np.nonzero(np.isfinite(errors)), strict=True):
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                color="white" if errors[i, j] > top ** 0.6 else "black")
    ax.set_title("Mistakes: true class (rows) read as another (columns)")


def _accuracy_bars(ax: Any, counts: NDArray[np.int64], classes: list[str]) -> None:
    """Per-class accuracy (recall), worst first; classes absent from the data are left out."""
    support = counts.sum(axis=1)
    present = np.flatnonzero(support)
    accuracy = np.diag(counts)[present] / support[present]
    order = np.argsort(accuracy, kind="stable")
    ax.barh(range(len(order)), 100 * accuracy[order], color="steelblue")
    ax.set_yticks(range(len(order)), labels=[classes[present[k]] for k in order])
    ax.invert_yaxis()
    ax.set_xlim(max(0.0, 100 * float(accuracy.min()) - 5), 100)
    ax.set_xlabel("accuracy of the class (%)")
    ax.set_title("Per class, worst first")
    ax.grid(True, axis="x", alpha=0.3)


def _label_axes(ax: Any, classes: list[str]) -> None:
    n = len(classes)
    ax.set_xticks(range(n), labels=classes)
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(top=False, bottom=True)


def _figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


# --------------------------------------------------------------------------- image grids


def _font(size: int) -> Any:
    """Pillow's bundled scalable font (10.1+), or its small bitmap font on older Pillow."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow 10.0 has no size argument
        return ImageFont.load_default()


def _to_pixels(images: F32, image_size: int, scale: int) -> list[Any]:
    """(K, S*S) float32 in [0, 1] -> K grayscale PIL images, S*scale pixels square."""
    from PIL import Image

    arr = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    arr = arr.reshape(-1, image_size, image_size)
    if scale > 1:  # nearest neighbour: each pixel stays a crisp square
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    return [Image.fromarray(a, mode="L") for a in arr]


def _text_block(lines: list[str], width: int, font: Any, pad: int = 10) -> Any:
    """A white strip holding ``lines`` of black text, at least ``width`` pixels wide."""
    from PIL import Image, ImageDraw

    line_h = _line_height(font)
    text_w = max((math.ceil(font.getlength(s)) for s in lines), default=0)
    strip = Image.new("RGB", (max(width, text_w + 2 * pad), pad * 2 + line_h * len(lines)),
                      "white")
    draw = ImageDraw.Draw(strip)
    for k, line in enumerate(lines):
        draw.text((pad, pad + k * line_h), line, fill="black", font=font)
    return strip


def _line_height(font: Any) -> int:
    top, bottom = font.getbbox("Ag->(0.9)")[1::2]
    return int(bottom - top) + 6


def _stack(header: Any, body: Any | None) -> Any:
    """``header`` above ``body`` on one white canvas, both left-aligned."""
    from PIL import Image

    if body is None:
        return header
    canvas = Image.new("RGB", (max(header.width, body.width), header.height + body.height),
                       "white")
    canvas.paste(header, (0, 0))
    canvas.paste(body, (0, header.height))
    return canvas


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")  # optimize=True costs seconds on noisy weight tiles
    return buf.getvalue()


def _scale_for(image_size: int, target: int) -> int:
    """Integer zoom that brings an image_size-pixel image near ``target`` pixels."""
    return max(1, round(target / image_size))


def rank_mistakes(y: NDArray[np.int64], proba: F32) -> NDArray[np.int64]:
    """Indices of misclassified rows, most confident (highest predicted probability) first.

    y: (N,) int64 true labels; proba: (N, C) float32. Ties keep data order (stable sort)."""
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    confidence = proba[wrong, pred[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")]


def mistakes_header(n_wrong: int, n_total: int, n_shown: int,
                    what: str = "test images") -> list[str]:
    """The lines above the mistakes grid (the whole picture when there is no mistake)."""
    if n_wrong == 0:
        return [f"No mistakes: all {n_total:,} {what} are classified correctly."]
    more = f"the {n_shown} most confident shown" if n_wrong > n_shown else "all shown"
    return [f"{n_wrong:,} of {n_total:,} {what} misclassified ({more}), most confident first",
            "caption: true -> predicted (probability the model gave its answer)"]


def mistakes_png(X: F32, y: NDArray[np.int64], proba: F32, classes: list[str],
                 image_size: int, limit: int = MAX_MISTAKES, columns: int = 10,
                 what: str = "test images") -> bytes:
    """Grid of up to ``limit`` misclassified images, each captioned ``true -> predicted (p)``;
    when there is no mistake, one line saying so.

    X: (N, S*S) float32 in [0, 1]; y: (N,) int64; proba: (N, C) float32."""
    from PIL import Image, ImageDraw

    order = rank_mistakes(y, proba)
    shown = order[:limit]
    header_lines = mistakes_header(len(order), len(y), len(shown), what)
    font, head_font = _font(13), _font(15)
    if len(order) == 0:
        return _png(_text_block(header_lines, 480, head_font, pad=16))
    pred = proba.argmax(axis=1)
    captions = [f"{classes[y[i]]} -> {classes[pred[i]]} ({proba[i, pred[i]]:.2f})"
                for i in shown]
    scale = _scale_for(image_size, 72)
    tiles = _to_pixels(X[shown], image_size, scale)
    side = image_size * scale
    cell_w = max(side, max(math.ceil(font.getlength(c)) for c in captions)) + 12
    cell_h = side + _line_height(font) + 10
    cols = min(columns, len(shown))
    rows = math.ceil(len(shown) / cols)
    grid = Image.new("RGB", (cols * cell_w + 8, rows * cell_h + 8), "white")
    draw = ImageDraw.Draw(grid)
    for k, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        x0, y0 = 4 + (k % cols) * cell_w, 4 + (k // cols) * cell_h
        x_img = x0 + (cell_w - side) // 2
        grid.paste(tile, (x_img, y0 + 2))
        # a thin frame, so that light-background images stand apart from the page
        draw.rectangle((x_img - 1, y0 + 1, x_img + side, y0 + 2 + side), outline=(150, 150, 150))
        text_w = font.getlength(caption)
        draw.text((x0 + (cell_w - text_w) / 2, y0 + side + 6), caption, fill="black", font=font)
    return _png(_stack(_text_block(header_lines, grid.width, head_font), grid))


def weight_tiles(W: F32, image_size: int, limit: int = MAX_TILES) -> NDArray[np.uint8]:
    """Columns 1..limit of W (S*S, H) float32 as RGB tiles (K, S, S, 3) uint8.

    Each tile is divided by its own largest |w|, so zero is always the white middle of the
    red-blue map (red positive, blue negative) and small and large units read equally well."""
    from matplotlib import colormaps

    shown = W[:, :limit].T.astype(np.float64)  # (K, S*S)
    peak = np.abs(shown).max(axis=1, keepdims=True)
    signed = shown / np.where(peak > 0, peak, 1.0)  # in [-1, 1]
    lut = (colormaps["RdBu_r"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    index = np.rint((signed + 1.0) * 127.5).astype(np.intp)
    return lut[index].reshape(-1, image_size, image_size, 3)


def weights_png(W: F32, image_size: int, limit: int = MAX_TILES,
                unit_names: list[str] | None = None) -> bytes:
    """Mosaic of the first layer's weights W (S*S, H) float32: one SxS tile per unit (up to
    ``limit``, 16 to a row), labelled with ``unit_names`` when the first layer is the output."""
    from PIL import Image, ImageDraw

    n_units = W.shape[1]
    tiles = weight_tiles(W, image_size, limit)
    scale = _scale_for(image_size, 56)
    side, gap = image_size * scale, 3
    cols = min(16, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    font = _font(12)
    label_h = _line_height(font) if unit_names else 0
    grid = Image.new("RGB", (cols * (side + gap) + gap, rows * (side + gap + label_h) + gap),
                     (120, 120, 120))
    draw = ImageDraw.Draw(grid)
    for k, tile in enumerate(tiles):
        rgb = tile.repeat(scale, axis=0).repeat(scale, axis=1)
        x0 = gap + (k % cols) * (side + gap)
        y0 = gap + (k // cols) * (side + gap + label_h)
        grid.paste(Image.fromarray(rgb, mode="RGB"), (x0, y0))
        if unit_names:
            name = unit_names[k]
            draw.text((x0 + (side - font.getlength(name)) / 2, y0 + side), name, fill="white",
                      font=font)
    what = "output units (one per class)" if unit_names else "hidden units"
    count = f"all {n_units}" if len(tiles) == n_units else f"units 1-{len(tiles)} of {n_units}"
    header = _text_block([f"First layer weights: {count} {what}; each tile holds one unit's "
                          f"{image_size * image_size} input weights laid out as the "
                          f"{image_size}x{image_size} image",
                          "red: positive weight, blue: negative, white: zero; "
                          "each tile scaled to its own largest |w|"],
                         grid.width, _font(15))
    return _png(_stack(header, grid))


# --------------------------------------------------------------------------- the page


def report_html(res: RunResults, pictures: dict[str, bytes]) -> str:
    """One self-contained page: summary, per-class table, pictures (as data: URIs), config."""
    ev = res.evaluation
    name = res.meta.get("name") or res.run_dir.name
    sections = [
        f"<h1>nnletters report: {_e(name)}</h1>",
        f"<p>run folder <code>{_e(res.run_dir)}</code>, weights <code>{_e(res.checkpoint.name)}"
        f"</code> (epoch {_e(res.meta.get('epoch', '?'))}); model "
        f"{_e('-'.join(map(str, res.meta['layer_sizes'])))} {_e(res.meta['activation'])}; "
        f"written {datetime.now():%Y-%m-%d %H:%M}</p>",
        "<h2>Summary</h2>", _summary_table(res.summary),
        f"<h2>Evaluation on the {_e(res.source)}</h2>",
        f"<p>accuracy <b>{_pct(ev['accuracy'])}</b>, loss {ev['loss']:.4f}, "
        f"{ev['n']:,} images; the pictures below use these images.</p>",
    ]
    captions = {
        "network.png": "The network: each line a weight (red positive, blue negative, "
                       "stronger the larger |w|), the inputs as the image grid they are; or, "
                       "for a big network, one block per layer.",
        "curves.png": "Learning curves: loss and accuracy per epoch on the training and "
                      "validation sets, and the learning rate; the dashed line is the best "
                      "epoch, whose weights the run keeps.",
        "confusion.png": "Confusion matrix: rows are true classes, columns predictions; the "
                         "colour is the fraction of the true class, the number the count "
                         f"(with more than {FULL_MATRIX_CLASSES} classes: mistakes only, and "
                         "each class's accuracy, worst first).",
        "mistakes.png": " ".join(mistakes_header(
            len(rank_mistakes(res.y, res.proba)), len(res.y), MAX_MISTAKES, "images")),
        "mistake_maps.png": "Saliency maps of the most confident mistakes: the gradient of "
                            "the predicted and the true letter's score with respect to the "
                            "pixels, and their difference (red: more ink there raises it).",
        "weights.png": "First-layer weights: each tile is one unit's weights over the image.",
        "diagnostics.png": "Per-layer diagnostics on a fixed validation batch: the weights' "
                           "gradient norm (exactly 0 is drawn at 1e-30), their norm, and "
                           "the share of ReLU units never "
                           "active on the batch (dead) or of sigmoid/tanh outputs beyond "
                           "0.99 of their range (saturated).",
    }
    for file in pictures:
        data = base64.b64encode(pictures[file]).decode("ascii")
        figure = (f'<figure id="{file}"><figcaption><b>{file}</b>: {_e(captions[file])}'
                  f'</figcaption><img src="data:image/png;base64,{data}" alt="{file}">'
                  "</figure>")
        if file == "network.png":  # first, under the heading: what was trained, then how well
            sections.insert(2, figure)
        else:
            sections.append(figure)
    sections.append("<h2>Per class</h2>" + _per_class_table(ev))
    sections.append(_mistake_list(res))
    sections.append("<h2>Config</h2><pre>" + _e(res.config_text or "(no config.yaml)")
                    + "</pre>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>nnletters report: {_e(name)}</title><style>{_CSS}</style></head>"
            "<body>\n" + "\n".join(sections) + "\n</body></html>\n")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1500px;margin:2em auto;padding:0 1em;"
        "color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "td,th{border:1px solid #ccc;padding:.25em .7em;text-align:right}"
        "th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}"
        "figure{margin:2em 0}img{max-width:100%;border:1px solid #ddd}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto}code{background:#f2f2f2}")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _summary_table(summary: dict[str, Any] | None) -> str:
    """The figures of summary.json, formatted (accuracies as percentages)."""
    if summary is None:
        return "<p>No summary.json: the run did not finish (the pictures use its best.npz).</p>"
    monitor = summary.get("monitor", "")
    best = summary.get("best_metric")
    best_text = "n/a" if best is None else (_pct(best) if "accuracy" in monitor
                                            else f"{best:.4f}")
    rows = [
        ("test accuracy", _pct(summary.get("test_accuracy"))),
        ("test loss", "n/a" if summary.get("test_loss") is None
         else f"{summary['test_loss']:.4f}"),
        ("best epoch", f"{summary.get('best_epoch')} of {summary.get('epochs_run')} run"
         + (" (stopped early)" if summary.get("stopped_early") else "")),
        (f"best {monitor.replace('_', ' ')}", best_text),
        ("images train / val / test", f"{summary.get('n_train', 0):,} / "
         f"{summary.get('n_val', 0):,} / {summary.get('n_test', 0):,}"),
        ("classes", " ".join(summary.get("classes", []))),
        ("unreadable files skipped", summary.get("skipped", 0)),
        ("training time", f"{summary.get('train_seconds', 0):.1f} s"),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _per_class_table(ev: dict[str, Any]) -> str:
    head = ("<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
            "<th>support</th></tr>")
    rows = "".join(f"<tr><td>{_e(c)}</td><td>{s['precision']:.4f}</td><td>{s['recall']:.4f}"
                   f"</td><td>{s['f1']:.4f}</td><td>{s['support']}</td></tr>"
                   for c, s in ev["per_class"].items())
    return f'<table class="per-class">{head}{rows}</table>'


def _mistake_list(res: RunResults, limit: int = 30) -> str:
    """The files behind the most confident mistakes, for a closer look at the data."""
    order = rank_mistakes(res.y, res.proba)[:limit]
    if len(order) == 0:
        return ""
    pred = res.proba.argmax(axis=1)
    items = "".join(f"<li><code>{_e(res.paths[i])}</code>: {_e(res.classes[res.y[i]])} -&gt; "
                    f"{_e(res.classes[pred[i]])} ({res.proba[i, pred[i]]:.2f})</li>"
                    for i in order)
    return (f"<details><summary>Files of the {len(order)} most confident mistakes</summary>"
            f"<ol>{items}</ol></details>")


# --------------------------------------------------------------------------- entry points


def render_pictures(res: RunResults) -> dict[str, bytes]:
    """The PNGs of a run (diagnostics.png when its metrics hold them), as bytes keyed by
    file name."""
    from nnletters.network_drawing import network_png, network_title

    summary = res.summary or {}
    monitor = summary.get("monitor") or res.meta.get("monitor", "val_accuracy")
    best_epoch = summary.get("best_epoch") or res.meta.get("best_epoch")
    best = summary.get("best_metric", res.meta.get("best_metric"))
    name = res.meta.get("name") or res.run_dir.name
    title = f"{name}: best epoch {best_epoch}"
    if best is not None:
        title += f", {monitor.replace('_', ' ')} " + (
            f"{100 * best:.2f}%" if "accuracy" in monitor else f"{best:.4f}")
    ev = res.evaluation
    what = "test images" if res.source.startswith("test split") else "images"
    is_output = res.first_W.shape[1] == len(res.classes) and len(res.meta["layer_sizes"]) == 2
    pictures = {
        "network.png": network_png(res.network, res.classes, res.image_size,
                                   network_title(res.meta, res.network))[0],
        "curves.png": curves_png(res.history, best_epoch, monitor,
                                 res.meta.get("loss", "cross_entropy"), title),
        "confusion.png": confusion_png(
            np.array(ev["confusion"]), res.classes,
            f"Confusion on the {res.source}: accuracy {100 * ev['accuracy']:.2f}% "
            f"of {ev['n']:,}"),
        "mistakes.png": mistakes_png(res.X, res.y, res.proba, res.classes, res.image_size,
                                     what=what),
        "mistake_maps.png": mistake_maps_png(res),
        "weights.png": weights_png(res.first_W, res.image_size,
                                   unit_names=res.classes if is_output else None),
    }
    diagnostics = diagnostics_png(res.history, title)
    if diagnostics is not None:
        pictures["diagnostics.png"] = diagnostics
    return pictures


def mistake_maps_png(res: RunResults, limit: int = MAX_MISTAKE_MAPS) -> bytes:
    """The saliency maps (``nnletters.explain``) of the ``limit`` most confident mistakes:
    predicted letter, true letter, and predicted minus true."""
    from nnletters.explain import explanations, maps_grid_png, polarity

    shown = rank_mistakes(res.y, res.proba)[:limit]
    if len(shown) == 0 or res.network is None:
        return _png(_text_block(["No mistakes, so no maps of them."], 480, _font(15), pad=16))
    pred = res.proba.argmax(axis=1)
    titles = [f"{res.paths[i] if i < len(res.paths) else i}: true {res.classes[res.y[i]]}, "
              f"predicted {res.classes[pred[i]]} ({res.proba[i, pred[i]]:.2f})" for i in shown]
    light_on_dark = bool(res.meta.get("light_on_dark", True))
    items = explanations(res.network, res.classes, res.X[shown], res.proba[shown],
                         np.stack([pred[shown], res.y[shown]], axis=1), titles=titles,
                         light_on_dark=light_on_dark)
    return maps_grid_png(items, res.image_size, [
        f"Saliency maps of the {len(shown)} most confident mistakes: the gradient of the "
        "predicted and the true letter's logit with respect to each pixel",
        "red: raising the pixel raises the score, blue: lowering it does "
        f"({polarity(light_on_dark)}); the last map is predicted minus true"])


def write_report(target: str | Path | None = None, data_path: str | Path | None = None,
                 out: str | Path | None = None, *, runs_dir: str | Path = "runs",
                 progress: bool = False) -> dict[str, Path]:
    """``nnletters report``: the four pictures and report.html in ``out`` (default
    RUN_DIR/report/). Returns {file name: path written}."""
    res = load_results(target, data_path, runs_dir=runs_dir, progress=progress)
    out_dir = Path(out) if out is not None else res.run_dir / "report"
    make_dir(out_dir, "report folder")
    pictures = render_pictures(res)
    written: dict[str, Path] = {}
    for file, data in pictures.items():
        written[file] = out_dir / file
        write_with(written[file], lambda fh, data=data: fh.write(data))
    written["report.html"] = out_dir / "report.html"
    write_text(written["report.html"], report_html(res, pictures))
    return written



# --------------------------------------------------------------------------- comparing runs


def compare_png(runs: list[tuple[str, list[dict[str, Any]]]]) -> bytes:
    """Validation loss and accuracy of several runs overlaid: ``runs`` is (label, history)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(15, 5.2 + 0.25 * len(runs)), dpi=DPI, layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for label, history in runs:
        rows = [r for r in history if r.get("val_loss") is not None]
        epochs = [r["epoch"] for r in rows]
        line = ax_loss.plot(epochs, [r["val_loss"] for r in rows], marker="o", markersize=3,
                            label=label)[0]
        ax_acc.plot(epochs, [100 * r["val_accuracy"] for r in rows], marker="o", markersize=3,
                    color=line.get_color(), label=label)
    for ax, title, ylabel in ((ax_loss, "Validation loss", "loss"),
                              (ax_acc, "Validation accuracy", "accuracy (%)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    # below the panels, one run a line: labels carry config values and would hide curves
    fig.legend(handles=ax_loss.get_lines(), loc="outside lower center", fontsize=10)
    return _figure_png(fig)


def config_differences(configs: list[dict[str, Any]],
                       ignore: tuple[str, ...] = ("name", "data.cache", "data.cache_dir",
                                                  "data.workers")) -> list[str]:
    """Dotted keys whose values differ between the given (nested) configs, in file order."""
    flat = [_flatten(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [k for k in keys if k not in ignore and len({json.dumps(f.get(k)) for f in flat}) > 1]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def write_compare(targets: list[str | Path], out: str | Path | None = None) -> Path:
    """``nnletters report --compare``: compare.png of the runs' validation curves, each
    labelled with its folder and the config values that differ between the runs, and
    compare.html with it and a table of each run's final figures. Both go to ``out``
    (default: a ``compare`` folder beside the first run). -> the PNG's path."""
    if len(targets) < 2:
        raise DataError("--compare needs at least two run folders")
    runs = [_compare_inputs(target) for target in targets]
    differing = config_differences([c for _, _, c, _ in runs])[:4]
    labelled = []
    for run_dir, history, config, _ in runs:
        flat = _flatten(config)
        extra = ", ".join(f"{k}={json.dumps(flat.get(k))}" for k in differing)
        labelled.append((f"{run_dir.name}" + (f" ({extra})" if extra else ""), history))
    out_dir = Path(out) if out is not None else runs[0][0].parent / "compare"
    make_dir(out_dir, "report folder")
    data = compare_png(labelled)
    write_with(out_dir / "compare.png", lambda fh: fh.write(data))
    write_text(out_dir / "compare.html", _compare_html(runs, differing, data))
    return out_dir / "compare.png"


def _compare_inputs(target: str | Path) -> tuple[Path, list, dict[str, Any], dict | None]:
    """(run folder, metrics rows, config, summary or None) of one run to compare."""
    import yaml

    from nnletters.metrics import read_history

    run_dir, _ = resolve_run(target)
    history = read_history(run_dir)
    if not any(r.get("val_loss") is not None for r in history):
        raise DataError(f"{run_dir}: no validation rows in metrics.jsonl to compare")
    config_path = run_dir / "config.yaml"
    config = (yaml.safe_load(config_path.read_text("utf-8")) or {}) \
        if config_path.exists() else {}
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text("utf-8")) if summary_path.exists() else None
    return run_dir, history, config, summary


def _compare_html(runs: list, differing: list[str], png: bytes) -> str:
    """The compare page: one row of final figures per run, then the curves."""
    head = ["run", *differing, "test accuracy", "best epoch", "epochs run",
            "best val accuracy", "training time"]
    rows = []
    for run_dir, history, config, summary in runs:
        flat, s = _flatten(config), summary or {}
        best_val = max((r["val_accuracy"] for r in history
                        if r.get("val_accuracy") is not None), default=None)
        cells = [run_dir.name, *(json.dumps(flat.get(k)) for k in differing),
                 _pct(s.get("test_accuracy")), s.get("best_epoch", "n/a"),
                 s.get("epochs_run", len(history)), _pct(best_val),
                 f"{s['train_seconds']:.1f} s" if "train_seconds" in s else "n/a"]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    table = ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
             + "".join(rows) + "</table>")
    image = base64.b64encode(png).decode("ascii")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>nnletters: {len(runs)} runs compared</title><style>{_CSS}</style></head>"
            f"<body>\n<h1>{len(runs)} runs compared</h1>\n{table}\n"
            f'<figure><img src="data:image/png;base64,{image}" alt="compare.png"></figure>'
            "\n</body></html>\n")
