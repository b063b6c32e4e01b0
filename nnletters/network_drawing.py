"""The network, drawn: ``network.png`` of ``nnletters report`` (and ``report --network-only``).

Small networks (every layer after the input at most ``MAX_UNITS`` wide and at most
``MAX_EDGES`` weights, as the teaching series' 289-20-26) are drawn unit by unit: the inputs as
the S x S pixel grid they are, every other unit a circle, every weight a line, red for positive
and blue for negative (as in weights.png), more opaque the larger |w| is against the layer's
largest. Bigger networks (784-1024-512-10) are drawn one block per layer, as Keras'
``plot_model`` does: width, activation, batch norm and dropout, parameter count and output
shape.

The weights drawn are the ones inference uses (``export.plain_layers``: batch norm folded
into the layer before it), so a line's colour and strength is the weight's real effect.
Figures use matplotlib's object API rendered by Agg (no pyplot, no window, no global backend).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnletters.export import OUTPUT_FUNCTIONS, PlainLayer, plain_layers
from nnletters.fileio import make_dir, write_with

F32 = NDArray[np.float32]
MAX_UNITS = 64  # widest layer (after the input) still drawn unit by unit
MAX_EDGES = 30_000  # and at most this many weights as lines (784-32-10 yes, 784-64-10 no)
DPI = 100
POSITIVE, NEGATIVE = np.array([0.80, 0.10, 0.10]), np.array([0.13, 0.35, 0.80])  # RdBu ends


@dataclass
class NetworkLayout:
    """What a drawing holds: ``style`` "units" (a node per unit, an edge per weight) or
    "blocks" (one block per layer); ``nodes`` counts input pixels and units (or blocks),
    ``edges`` the weight lines (or the arrows between blocks); ``size`` is (width, height)
    of the PNG in pixels."""

    style: str
    layer_sizes: list[int]
    nodes: int
    edges: int
    size: tuple[int, int]


def is_small(sizes: list[int]) -> bool:
    """Whether every unit and weight of a network of these layer sizes can be drawn."""
    edges = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return max(sizes[1:]) <= MAX_UNITS and edges <= MAX_EDGES


def network_png(network, classes: list[str], image_size: int, title: str = "",
                dpi: int = DPI) -> tuple[bytes, NetworkLayout]:
    """The drawing of an ``nn.model.MLP`` as PNG bytes, and its layout.

    ``classes`` name the output units; ``image_size`` S lays the S*S inputs out as a grid;
    ``dpi`` sets the pixels per inch (the layout is in inches)."""
    from matplotlib.figure import Figure

    sizes = list(network.sizes)
    small = is_small(sizes) and sizes[0] == image_size * image_size
    fig = Figure(dpi=DPI)
    if small:
        nodes, edges = _draw_units(fig, network, plain_layers(network), classes, image_size)
    else:
        nodes, edges = _draw_blocks(fig, network, classes, image_size)
    fig.suptitle(title or f"network {network.describe()}", fontsize=14, fontweight="bold")
    data = _palette_png(fig, dpi)
    width, height = (int(round(v)) for v in fig.get_size_inches() * dpi)
    return data, NetworkLayout("units" if small else "blocks", sizes, nodes, edges,
                               (width, height))


def _palette_png(fig, dpi: int) -> bytes:
    """The figure as a 64-colour PNG: thousands of translucent lines make a full-colour PNG
    four to five times larger, with no difference the eye sees."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    image = image.quantize(64, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


# --------------------------------------------------------------------------- unit by unit


def _draw_units(fig, network, layers: list[PlainLayer], classes: list[str],
                image_size: int) -> tuple[int, int]:
    """Pixel grid, unit columns and weight lines on one axis; returns (nodes, edges)."""
    from matplotlib.collections import LineCollection

    columns = _unit_columns(len(layers), image_size, network.sizes)
    ax = _band_axes(fig, x_max=columns[-1][0, 0] + 0.3)
    edges = 0
    for k, layer in enumerate(layers):  # weight lines below the nodes, strongest on top
        segments, colours = _weight_lines(columns[k], columns[k + 1], layer.W)
        ax.add_collection(LineCollection(segments, colors=colours, linewidths=0.7, zorder=1))
        edges += len(segments)
    _draw_pixel_grid(ax, columns[0], image_size, np.abs(layers[0].W).sum(axis=1))
    for k, column in enumerate(columns[1:], start=1):
        ax.scatter(column[:, 0], column[:, 1], s=_node_area(len(column)), c="white",
                   edgecolors="#333", linewidths=1.0, zorder=3)
        ax.text(column[0, 0], 1.05, _column_title(network, k, len(layers)), ha="center",
                va="bottom", fontsize=12)
    for name, (x, y) in zip(classes, columns[-1], strict=True):
        ax.text(x + 0.04, y, name, ha="left", va="center", fontsize=_label_size(len(classes)))
    ax.text(GRID / 2, 0.5 + GRID / 2 + 0.03, f"input: {image_size}x{image_size} = "
            f"{image_size * image_size} pixels", ha="center", va="bottom", fontsize=12)
    fig.text(0.5, 0.015, _edge_legend(layers, network.batch_norm), ha="center", va="bottom",
             fontsize=11)
    return sum(len(c) for c in columns), edges


def _band_axes(fig, x_max: float):
    """Axes in which x and y are to scale (pixels stay square), the figure sized to fit:
    data x in [-0.05, x_max], y in [-0.03, 1.15] (the unit-high band plus column titles)."""
    x0, y0, y1 = -0.05, -0.03, 1.15
    inches = UNIT_INCHES * np.array([x_max - x0, y1 - y0])
    margin_top, margin_bottom = 0.55, 0.55  # title above, legend below
    fig.set_size_inches(inches[0], inches[1] + margin_top + margin_bottom)
    height = inches[1] + margin_top + margin_bottom
    ax = fig.add_axes((0.0, margin_bottom / height, 1.0, inches[1] / height))
    ax.set_xlim(x0, x_max)
    ax.set_ylim(y0, y1)
    ax.axis("off")
    return ax


UNIT_INCHES = 5.5  # the band's height in inches: 26 output labels of 11 pt fit in it


def _unit_columns(n_layers: int, image_size: int, sizes: list[int]) -> list[F32]:
    """(x, y) of every node, column by column: column 0 holds the pixels row-major (top row
    first, as the image reads), column k the k-th layer's units top to bottom; all in a
    unit-high band, the pixel grid a square of side GRID at the left."""
    rows, cols = np.divmod(np.arange(image_size * image_size), image_size)
    step = GRID / image_size
    pixels = np.column_stack([(cols + 0.5) * step, 0.5 + GRID / 2 - (rows + 0.5) * step])
    columns = [pixels.astype(np.float32)]
    for k in range(1, n_layers + 1):
        n = sizes[k]
        y = 0.5 if n == 1 else 1.0 - np.arange(n) / (n - 1)
        x = GRID + COLUMN_GAP * k
        columns.append(np.column_stack([np.full(n, x), np.broadcast_to(y, (n,))])
                       .astype(np.float32))
    return columns


EDGES_OPAQUE = 8000  # up to this many lines in a layer are drawn at full strength
GRID = 0.8  # side of the pixel grid, in units of the band's height
COLUMN_GAP = 0.75  # from the grid's right edge to the first column, and between columns


def _weight_lines(src: F32, dst: F32, W: F32) -> tuple[F32, F32]:
    """One segment per weight W[i, j] from src[i] to dst[j], with RGBA colours: red for
    w > 0, blue for w < 0, alpha growing with |w| / max |w| (so zero weights vanish).
    Sorted weakest first, so that the strong lines are drawn over the faint ones."""
    i, j = np.indices(W.shape).reshape(2, -1)
    w = W.reshape(-1).astype(np.float64)
    order = np.argsort(np.abs(w), kind="stable")
    i, j, w = i[order], j[order], w[order]
    segments = np.stack([src[i], dst[j]], axis=1)
    strength = np.abs(w) / max(np.abs(w).max(), 1e-12)
    colours = np.empty((len(w), 4))
    colours[:, :3] = np.where(w[:, None] > 0, POSITIVE, NEGATIVE)
    # Fade the many small weights, keep the big; a dense layer's lines fainter still, so
    # that 50,000 of them do not merge into one purple block.
    colours[:, 3] = 0.85 * strength ** 1.5 * min(1.0, (EDGES_OPAQUE / len(w)) ** 0.5)
    return segments, colours


def _draw_pixel_grid(ax, pixels: F32, image_size: int, total: F32) -> None:
    """The inputs as the image they are: one square per pixel, darker the larger the pixel's
    total |w| into the next layer (where the network looks)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    side = GRID / image_size
    squares = [Rectangle((x - side / 2, y - side / 2), side, side) for x, y in pixels]
    shade = 0.97 - 0.75 * total / max(float(total.max()), 1e-12)
    ax.add_collection(PatchCollection(squares, facecolor=np.repeat(shade[:, None], 3, axis=1),
                                      edgecolor="#999", linewidth=0.4, zorder=3))


def _node_area(n: int) -> float:
    return float(np.clip(6000 / n ** 1.3, 14, 160))


def _label_size(n: int) -> float:
    return float(np.clip(330 / n, 6, 12))


def _column_title(network, k: int, n_layers: int) -> str:
    width = network.sizes[k]
    if k == n_layers:
        return f"output: {width} {OUTPUT_FUNCTIONS[network.loss_name].replace('_', ' ')}"
    extras = [network.activation] + (["batch norm"] * network.batch_norm) + (
        [f"dropout {network.dropout:g}"] if network.dropout else [])
    return f"hidden {k}: {width}\n" + ", ".join(extras)


def _edge_legend(layers: list[PlainLayer], batch_norm: bool) -> str:
    peaks = ", ".join(f"{np.abs(layer.W).max():.3g}" for layer in layers)
    text = (f"each line a weight: red positive, blue negative, opacity |w| / the layer's "
            f"largest |w| ({peaks}); a pixel's shade: its total |w|")
    return text + ("; batch norm folded into the weights before it" if batch_norm else "")


# --------------------------------------------------------------------------- block per layer


def _draw_blocks(fig, network, classes: list[str], image_size: int) -> tuple[int, int]:
    """One box per layer, top to bottom, arrows between; returns (blocks, arrows)."""
    blocks = _block_texts(network, classes, image_size)
    height = 1.3 + 1.35 * len(blocks)
    fig.set_size_inches(8.0, height)
    ax = fig.add_axes((0.0, 0.3 / height, 1.0, 1.0 - 0.9 / height))
    ax.set_xlim(0, 8)
    ax.set_ylim(-1.35 * len(blocks) + 0.2, 0.2)
    ax.axis("off")
    for k, (head, body, shape) in enumerate(blocks):
        _block(ax, -1.35 * k, head, body, shape, last=k == len(blocks) - 1)
    fig.text(0.5, 0.012, _parameter_total(network), ha="center", va="bottom", fontsize=11)
    return len(blocks), len(blocks) - 1


def _parameter_total(network) -> str:
    trained = int(network.theta.size)
    kept = sum(getattr(layer, name).size for layer in network.layers
               for name in layer.buffer_names)
    return f"{trained:,} trained parameters" + (
        f" (and {kept:,} batch-norm running statistics)" if kept else "")


def _block_texts(network, classes: list[str], image_size: int) -> list[tuple[str, str, str]]:
    """(heading, detail line, output shape) per block: input, each dense layer, output."""
    sizes, n_dense = network.sizes, len(network.sizes) - 1
    names = "".join(classes) if all(len(c) == 1 for c in classes) else ", ".join(classes)
    blocks = [("input", f"{image_size}x{image_size} image, flattened", f"(N, {sizes[0]})")]
    for k in range(1, n_dense + 1):
        fan_in, width = sizes[k - 1], sizes[k]
        last = k == n_dense
        bn = network.batch_norm and not last
        params = fan_in * width + (2 * width if bn else width)  # W, then b or gamma & beta
        what = ([OUTPUT_FUNCTIONS[network.loss_name].replace("_", " ")
                 + f" over the {width} classes {names}"]
                if last else [network.activation] + ["batch norm"] * bn
                + ([f"dropout {network.dropout:g}"] if network.dropout else []))
        head = f"dense {k}: {width} units" + (" (output)" if last else "")
        blocks.append((head, f"{', '.join(what)};  {params:,} parameters", f"(N, {width})"))
    return blocks


def _block(ax, y: float, head: str, body: str, shape: str, last: bool) -> None:
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    colour = "#e8f0fb" if head.startswith("input") else "#fdf1e4" if last else "#eef6ea"
    ax.add_patch(FancyBboxPatch((0.4, y - 0.9), 7.2, 0.9,
                                boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=colour, edgecolor="#555", linewidth=1.2))
    ax.text(0.6, y - 0.3, head, fontsize=13, fontweight="bold", va="center")
    ax.text(0.6, y - 0.66, body, fontsize=11, va="center")
    ax.text(7.4, y - 0.3, f"output {shape}", fontsize=11, va="center", ha="right",
            family="monospace")
    if not last:
        ax.add_patch(FancyArrowPatch((4.0, y - 0.92), (4.0, y - 1.33), arrowstyle="-|>",
                                     mutation_scale=16, color="#555", linewidth=1.2))


# --------------------------------------------------------------------------- entry point


def write_network(target: str | Path | None = None, out: str | Path | None = None,
                  dpi: int = DPI) -> tuple[Path, NetworkLayout]:
    """``nnletters report --network-only``: network.png of a run or checkpoint in ``out``
    (default RUN_DIR/report/)."""
    from nnletters.prediction import load_model

    model = load_model(target)
    folder = make_dir(Path(out) if out is not None else model.path.parent / "report")
    data, layout = network_png(model.network, model.classes, model.image_size,
                               network_title(model.meta, model.network), dpi)
    path = folder / "network.png"
    write_with(path, lambda fh: fh.write(data))
    return path, layout


def network_title(meta: dict[str, Any], network) -> str:
    name = meta.get("name") or ""
    return f"{name + ': ' if name else ''}{network.describe()}"
